"""拼多多 channel: PMC signing and frames, the message client, router signing, errors, pulls, decrypt, normalisation."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tenacity import wait_none
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.http_common import BadToken
from orderhub.adapters.channels.pdd import PddChannel, build_form, pmc_base_url, sign_request
from orderhub.adapters.channels.pdd_normalize import SHIPPING_STATUS, yuan_to_fen
from orderhub.adapters.channels.pdd_pmc import (
    OFFICIAL_URL,
    PmcClient,
    PmcMessage,
    ack_frame,
    connection_path,
    heartbeat_frame,
    read_frame,
)
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, NormalizationError
from orderhub.domain.order import RefundStatus, Shipment
from orderhub.domain.status import Status

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"
VECTOR = json.loads((FIXTURES / "SIGNATURES.json").read_text(encoding="utf-8"))["pdd websocket connect"]
ORDER_REPLY = json.loads((FIXTURES / "pdd_order_information.json").read_text(encoding="utf-8"))
MESSAGE_BODY = (FIXTURES / "pdd_ws_trade_confirmed.json").read_bytes()
CLIENT_ID = VECTOR["client_id"]
CLIENT_SECRET = VECTOR["client_secret (fake)"]
NOW = 1742263962  # 2025-03-18 10:12:42 +08:00

SHOP = ShopConfig(
    channel="pdd",
    shop_id="100000001",
    name="拼多多测试店",
    app_key=CLIENT_ID,
    app_secret=CLIENT_SECRET,
    api_base_url="http://sim.test/pdd",
    extra={"access_token": "fake-pdd-access-token-0001"},
)


def order() -> dict[str, Any]:
    return copy.deepcopy(ORDER_REPLY["order_info_get_response"]["order_info"])


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def cst_text(seconds: int) -> str:
    return datetime.fromtimestamp(seconds + 8 * 3600, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def channel(**kwargs: Any) -> PddChannel:
    return PddChannel(clock=lambda: NOW, retry_wait=wait_none(), **kwargs)


def error(code: int, msg: str, sub_msg: str = "") -> dict[str, Any]:
    return {"error_response": {"error_code": code, "error_msg": msg, "sub_code": str(code),
                               "sub_msg": sub_msg or msg, "request_id": "REQ1"}}


class FakeRouter:
    """The platform's /api/router: records each call's form; replies by `answer(form)`."""

    def __init__(self, answer: Callable[[dict[str, str]], Any]) -> None:
        self.answer = answer
        self.forms: list[dict[str, str]] = []
        self.requests: list[httpx.Request] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        self.requests.append(request)
        self.forms.append(form)
        reply = self.answer(form)
        if isinstance(reply, httpx.Response):
            return reply
        return httpx.Response(200, content=orjson.dumps(reply))

    def types(self) -> list[str]:
        return [form["type"] for form in self.forms]


async def call(router: FakeRouter, work: Callable[[httpx.AsyncClient], Any]) -> Any:
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.handler)) as http:
        return await work(http)


# -- PMC: connect signature and frames -------------------------------------------------------------


def test_pmc_connect_url_reproduces_the_signatures_vector():
    assert OFFICIAL_URL + connection_path(CLIENT_ID, CLIENT_SECRET, 1742263962000) == VECTOR["url"]


def test_pmc_connect_path_reproduces_the_php_sdk_test_vector():
    # FORMATS.md §4: ("app", "secret", 1700000000000), recomputed from whalesky-labs/pdd-sdk-php.
    assert connection_path("app", "secret", 1700000000000).endswith("/OTgxODMwNDI2NWZiN2NiNzA2NzIxOTI0ZjJlMDMxMjE%3D")


def test_pmc_signature_is_base64_of_the_lower_case_md5_hex_text():
    hex_text = hashlib.md5(f"{CLIENT_ID}1742263962000{CLIENT_SECRET}".encode()).hexdigest()
    encoded = base64.b64encode(hex_text.encode()).decode().replace("=", "%3D")
    assert connection_path(CLIENT_ID, CLIENT_SECRET, 1742263962000) == f"/message/{CLIENT_ID}/1742263962000/{encoded}"


def test_a_one_byte_change_of_the_connect_input_changes_the_signature():
    good = connection_path(CLIENT_ID, CLIENT_SECRET, 1742263962000).rsplit("/", 1)[1]
    assert connection_path(CLIENT_ID, CLIENT_SECRET, 1742263962001).rsplit("/", 1)[1] != good
    assert connection_path(CLIENT_ID, CLIENT_SECRET + "x", 1742263962000).rsplit("/", 1)[1] != good


def test_a_common_frame_is_read_with_its_int64_id_exact_and_its_bytes_kept():
    message = read_frame(MESSAGE_BODY)
    assert message is not None
    assert message.id == 9007199254740993  # above 2**53: a float would round it
    assert (message.type, message.mall_id, message.send_time) == ("pdd_trade_TradeConfirmed", 900001, 1742263962123)
    assert message.shop_id == "900001"
    assert message.body == MESSAGE_BODY


def test_the_ack_echoes_id_send_time_type_and_mall_id_exactly():
    message = read_frame(MESSAGE_BODY)
    ack = ack_frame(message, 1742263963000)
    assert ack == ('{"id":9007199254740993,"commandType":"Ack","time":1742263963000,'
                   '"sendTime":1742263962123,"type":"pdd_trade_TradeConfirmed","mallID":900001}')


def test_heartbeat_frame_and_control_frames_from_the_server_are_not_messages():
    assert json.loads(heartbeat_frame(1742263962000)) == {"id": 1742263962000, "commandType": "HeartBeat",
                                                          "time": 1742263962000}
    assert read_frame(b'{"commandType":"HeartBeat","time":1}') is None
    assert read_frame(b'{"commandType":"Ack","id":5}') is None
    with pytest.raises(ValueError):
        read_frame(b"not json")


def test_pmc_base_url_comes_from_extra_or_beside_the_api_base():
    assert pmc_base_url(SHOP) == "ws://sim.test/pdd"
    assert pmc_base_url(dataclasses.replace(SHOP, api_base_url="https://api.example.test/pdd")) == "wss://api.example.test/pdd"
    assert pmc_base_url(dataclasses.replace(SHOP, api_base_url="https://gw-api.pinduoduo.com")) == OFFICIAL_URL
    assert pmc_base_url(dataclasses.replace(SHOP, extra={"pmc_url": "ws://127.0.0.1:1/x/"})) == "ws://127.0.0.1:1/x"


# -- PMC client against a fake socket ------------------------------------------------------------------


class FakeSocket:
    """One fake PMC connection: hands out queued frames, records what the client sends."""

    def __init__(self, frames: list[bytes] = (), *, close_after: bool = False) -> None:
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        for frame in frames:
            self.incoming.put_nowait(frame)
        if close_after:
            self.incoming.put_nowait(None)
        self.sent: list[dict[str, Any]] = []
        self.url = ""

    async def __aenter__(self) -> FakeSocket:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def recv(self, decode: bool | None = None) -> bytes:
        frame = await self.incoming.get()
        if frame is None:
            raise ConnectionClosedError(Close(1012, "service restart"), None)
        return frame

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def acks(self) -> list[int]:
        return [frame["id"] for frame in self.sent if frame["commandType"] == "Ack"]


def common(message_id: int, tid: str = "250318-123456789012345") -> bytes:
    content = json.dumps({"mall_id": 100000001, "tid": tid})
    return orjson.dumps({"id": message_id, "commandType": "Common", "sendTime": NOW * 1000,
                         "message": {"type": "pdd_trade_TradeConfirmed", "mallID": 100000001, "content": content}})


class Connector:
    def __init__(self, *sockets: FakeSocket) -> None:
        self.sockets = list(sockets)
        self.urls: list[str] = []

    def __call__(self, url: str, **options: Any) -> FakeSocket:
        self.urls.append(url)
        socket = self.sockets.pop(0) if len(self.sockets) > 1 else self.sockets[0]
        socket.url = url
        return socket


async def run_until(client: PmcClient, done: Callable[[], bool], timeout: float = 5.0) -> None:
    task = asyncio.create_task(client.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def pmc(keep: Callable[[PmcMessage], Any], connector: Connector, states: list | None = None, **options: Any) -> PmcClient:
    report = (lambda state, detail: states.append((state, detail))) if states is not None else (lambda *a: None)
    options.setdefault("heartbeat_s", 3600)
    return PmcClient("ws://sim.test/pdd", CLIENT_ID, CLIENT_SECRET, keep, report, clock=lambda: NOW,
                     backoff_min_s=0.001, backoff_max_s=0.002, jitter=lambda: 0.0, connect=connector, **options)


async def test_messages_are_kept_concurrently_and_each_is_acked_after_its_keep_returned():
    socket = FakeSocket([common(1000 + i) for i in range(40)])
    running, peak, kept = [0], [0], []

    async def keep(message: PmcMessage) -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.05)
        kept.append(message.id)
        assert message.id not in socket.acks()  # not acknowledged before it is kept
        running[0] -= 1

    started = asyncio.get_running_loop().time()
    await run_until(pmc(keep, Connector(socket)), lambda: len(socket.acks()) == 40)
    assert sorted(socket.acks()) == sorted(kept) == list(range(1000, 1040))
    assert peak[0] > 10  # one slow commit does not hold up the others
    assert asyncio.get_running_loop().time() - started < 1.5


async def test_at_most_max_in_flight_keeps_run_at_once():
    socket = FakeSocket([common(i) for i in range(1, 31)])
    running, peak = [0], [0]

    async def keep(message: PmcMessage) -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.01)
        running[0] -= 1

    await run_until(pmc(keep, Connector(socket), max_in_flight=4), lambda: len(socket.acks()) == 30)
    assert peak[0] == 4


async def test_a_message_whose_keep_raised_is_not_acknowledged():
    socket = FakeSocket([common(1), common(2), common(3)])

    async def keep(message: PmcMessage) -> None:
        if message.id == 2:
            raise RuntimeError("inbox unavailable")

    await run_until(pmc(keep, Connector(socket)), lambda: len(socket.acks()) == 2)
    await asyncio.sleep(0.02)
    assert sorted(socket.acks()) == [1, 3]


async def test_the_client_reconnects_with_a_fresh_signature_and_reports_each_state():
    first, second = FakeSocket(close_after=True), FakeSocket([common(2)])
    connector, states, times = Connector(first, second), [], iter(range(NOW, NOW + 100))
    client = pmc(lambda m: asyncio.sleep(0), connector, states)
    client._clock = lambda: next(times)  # each connect reads the clock anew
    await run_until(client, lambda: second.acks() == [2])
    assert [s for s, _ in states[:5]] == ["connecting", "connected", "disconnected", "connecting", "connected"]
    assert states[2][1] == "connection closed: 1012 service restart"
    assert connector.urls[0] != connector.urls[1]
    assert all(url.startswith(f"ws://sim.test/pdd/message/{CLIENT_ID}/") for url in connector.urls)
    assert states[-1] == ("disconnected", "stopped")


async def test_a_refused_handshake_is_retried_with_growing_waits():
    attempts: list[str] = []

    def refuse(url: str, **options: Any) -> FakeSocket:
        attempts.append(url)
        raise OSError("connection refused")

    states: list = []
    client = PmcClient("ws://sim.test/pdd", CLIENT_ID, CLIENT_SECRET, lambda m: asyncio.sleep(0),
                       lambda s, d: states.append((s, d)), connect=refuse, jitter=lambda: 1.0,
                       backoff_min_s=0.001, backoff_max_s=0.004)
    assert [client._delay(n) for n in (1, 2, 3, 4, 5)] == [0.001, 0.002, 0.004, 0.004, 0.004]
    await run_until(client, lambda: len(attempts) >= 4)
    assert ("disconnected", "OSError: connection refused") in states


async def test_heartbeats_go_out_on_the_writer():
    socket = FakeSocket()
    await run_until(pmc(lambda m: asyncio.sleep(0), Connector(socket), heartbeat_s=0.01),
                    lambda: sum(f["commandType"] == "HeartBeat" for f in socket.sent) >= 2)


async def test_run_keeps_each_message_under_its_mall_with_the_frame_bytes_and_reports_the_connection():
    socket = FakeSocket([MESSAGE_BODY])
    kept: list[tuple] = []
    states: list[tuple] = []

    class Sink:
        async def keep(self, channel: str, shop_id: str | None, body: bytes, meta: dict) -> None:
            kept.append((channel, shop_id, body, meta))

        def connection(self, channel: str, app_key: str, state: str, detail: str | None = None) -> None:
            states.append((channel, app_key, state))

    connector = Connector(socket)
    ch = channel(pmc_options={"connect": connector, "heartbeat_s": 3600})
    task = asyncio.create_task(ch.run(None, [SHOP], Sink()))  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        while not socket.acks():
            await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kept == [("pdd", "900001", MESSAGE_BODY, {"app_key": CLIENT_ID, "message_id": 9007199254740993})]
    assert socket.acks() == [9007199254740993]
    assert ("pdd", CLIENT_ID, "connected") in states
    assert connector.urls[0].startswith(f"ws://sim.test/pdd/message/{CLIENT_ID}/{NOW * 1000}/")


# -- parse_push ---------------------------------------------------------------------------------------


def test_a_trade_message_names_its_order_mall_kind_and_time():
    (message,) = channel().parse_push(MESSAGE_BODY)
    assert (message.shop_id, message.original_id, message.kind) == ("900001", "250318-123456789012345",
                                                                     "pdd_trade_TradeConfirmed")
    assert message.event_time == utc(1742263962.123)  # sendTime: a trade message has no `modified`
    assert message.raw["id"] == 9007199254740993


def test_a_refund_message_takes_its_time_from_content_modified():
    content = json.dumps({"mall_id": 1, "tid": "250318-1", "refund_id": 7, "refund_fee": 990, "modified": 1742263000000})
    body = json.dumps({"id": 1, "commandType": "Common", "sendTime": 1742263999000,
                       "message": {"type": "pdd_refund_RefundCreated", "mallID": 1, "content": content}}).encode()
    (message,) = channel().parse_push(body)
    assert message.event_time == utc(1742263000) and message.kind == "pdd_refund_RefundCreated"


def test_a_message_without_an_order_is_skipped_and_an_unreadable_one_is_an_envelope_error():
    goods = json.dumps({"id": 1, "commandType": "Common", "sendTime": 1,
                        "message": {"type": "pdd_goods_GoodsChanged", "mallID": 1, "content": '{"goods_id":5}'}})
    assert channel().parse_push(goods.encode()) == []
    for body in (b"nope", b"[]", b'{"id":1}', b'{"message":{"type":"x","mallID":1,"content":"{bad"}}',
                 b'{"message":{"mallID":1,"content":"{\\"tid\\":\\"1\\"}"}}'):
        with pytest.raises(EnvelopeError) as info:
            channel().parse_push(body)
        assert info.value.code is ErrorCode.MALFORMED_ENVELOPE


# -- router signing and requests ------------------------------------------------------------------------


def test_router_sign_reproduces_the_worked_vector():
    form = build_form("pdd.order.information.get", {"order_sn": "250318-123456789012345"}, SHOP,
                      "fake-pdd-access-token-0001", NOW)
    expected = ("fake-pdd-client-secretaccess_tokenfake-pdd-access-token-0001client_idfakeclientid0001"
                "data_typeJSONorder_sn250318-123456789012345timestamp1742263962typepdd.order.information.get"
                "versionV1fake-pdd-client-secret")
    assert hashlib.md5(expected.encode()).hexdigest().upper() == "261A0206D895CDE2CB9F7584421D85BC"
    assert form["sign"] == "261A0206D895CDE2CB9F7584421D85BC"  # docs/channels/pdd.md, worked vector


def test_a_one_byte_change_of_a_signed_field_changes_the_router_sign():
    form = build_form("pdd.order.information.get", {"order_sn": "250318-123456789012345"}, SHOP, "t", NOW)
    changed = dict(form, order_sn="250318-123456789012346")
    assert sign_request(changed, CLIENT_SECRET) != form["sign"]


async def test_an_order_is_fetched_with_a_signed_form_post_to_the_router():
    router = FakeRouter(lambda form: ORDER_REPLY)
    found = await call(router, lambda http: channel().fetch_orders(http, SHOP, ["250318-123456789012345"]))
    assert found == {"250318-123456789012345": order()}
    (request,) = router.requests
    assert (request.method, request.url.path) == ("POST", "/pdd/api/router")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = router.forms[0]
    assert {k: v for k, v in form.items() if k != "sign"} == {
        "type": "pdd.order.information.get", "client_id": CLIENT_ID, "access_token": "fake-pdd-access-token-0001",
        "timestamp": str(NOW), "data_type": "JSON", "version": "V1", "order_sn": "250318-123456789012345",
    }
    assert form["sign"] == sign_request(form, CLIENT_SECRET)


async def test_fetches_run_concurrently_and_an_unknown_order_is_simply_absent():
    in_flight, peak = [0], [0]

    async def handler(request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await asyncio.sleep(0.01)
        in_flight[0] -= 1
        if form["order_sn"] == "missing":
            return httpx.Response(200, content=orjson.dumps(error(10000, "参数错误", "订单不存在")))
        info = dict(order(), order_sn=form["order_sn"])
        return httpx.Response(200, content=orjson.dumps({"order_info_get_response": {"order_info": info}}))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        found = await channel().fetch_orders(http, SHOP, [f"s{i}" for i in range(30)] + ["missing"])
    assert set(found) == {f"s{i}" for i in range(30)}
    assert 1 < peak[0] <= 16


# -- errors, tokens, retries ----------------------------------------------------------------------------


async def test_an_expired_token_is_refreshed_with_the_refresh_token_and_the_call_retried():
    shop = dataclasses.replace(SHOP, extra={**SHOP.extra, "refresh_token": "rt-1"})

    def answer(form: dict[str, str]) -> Any:
        if form["type"] == "pdd.pop.auth.token.refresh":
            assert form["refresh_token"] == "rt-1" and "access_token" not in form
            return {"pop_auth_token_refresh_response": {"access_token": "fresh", "expires_in": 86400,
                                                        "refresh_token": "rt-2"}}
        if form["access_token"] != "fresh":
            return error(10019, "access_token已过期")
        return ORDER_REPLY

    router = FakeRouter(answer)
    ch = channel()
    found = await call(router, lambda http: ch.fetch_orders(http, shop, ["250318-123456789012345"]))
    assert list(found) == ["250318-123456789012345"]
    assert router.types() == ["pdd.order.information.get", "pdd.pop.auth.token.refresh", "pdd.order.information.get"]
    assert ch._refresh_tokens[(CLIENT_ID, "100000001")] == "rt-2"  # the rotated one is used next time


async def test_without_a_refresh_token_an_expired_token_means_the_shop_must_be_re_authorised():
    router = FakeRouter(lambda form: error(10019, "access_token已过期"))
    with pytest.raises(FetchError) as info:
        await call(router, lambda http: channel().fetch_orders(http, SHOP, ["1"]))
    assert info.value.retryable is False and "re-authorised" in info.value.message
    assert router.types() == ["pdd.order.information.get"]


async def test_a_refused_refresh_token_also_means_re_authorisation():
    shop = dataclasses.replace(SHOP, extra={**SHOP.extra, "refresh_token": "dead"})
    router = FakeRouter(lambda form: error(10000, "参数错误", "refresh_token 不存在或已过期")
                        if form["type"] == "pdd.pop.auth.token.refresh" else error(10019, "access_token已过期"))
    with pytest.raises(FetchError) as info:
        await call(router, lambda http: channel().fetch_orders(http, shop, ["1"]))
    assert info.value.retryable is False and "re-authorised" in info.value.message


async def test_a_token_refused_again_after_a_refresh_is_worth_retrying_later():
    shop = dataclasses.replace(SHOP, extra={**SHOP.extra, "refresh_token": "rt"})
    router = FakeRouter(lambda form: {"pop_auth_token_refresh_response": {"access_token": "x", "expires_in": 60}}
                        if form["type"] == "pdd.pop.auth.token.refresh" else error(10019, "access_token已过期"))
    with pytest.raises(FetchError) as info:
        await call(router, lambda http: channel(attempts=1).fetch_orders(http, shop, ["1"]))
    assert info.value.retryable is True and not isinstance(info.value, BadToken)


@pytest.mark.parametrize(
    ("reply", "retryable"),
    [
        (error(20004, "签名验证失败"), False),
        (error(52101, "当前接口请求过于频繁"), True),  # [U] code; the words decide as well
        (error(99999, "服务繁忙，请稍后重试"), True),
        (error(10000, "参数错误", "page_size 取值 1-100"), False),
        (httpx.Response(429, content=b"too many"), True),
        (httpx.Response(503, content=b"down"), True),
        (httpx.Response(200, content=b"<html>gateway</html>"), True),
        (httpx.Response(400, content=b"bad"), False),
    ],
)
async def test_router_failures_become_fetch_errors_retryable_or_not(reply, retryable):
    router = FakeRouter(lambda form: reply)
    with pytest.raises(FetchError) as info:
        await call(router, lambda http: channel(attempts=2).fetch_orders(http, SHOP, ["1"]))
    assert info.value.retryable is retryable
    assert len(router.forms) == (2 if retryable else 1)  # retried once more only when worth it


async def test_a_transport_failure_is_retryable():
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with httpx.AsyncClient(transport=httpx.MockTransport(broken)) as http:
        with pytest.raises(FetchError) as info:
            await channel(attempts=1).fetch_orders(http, SHOP, ["1"])
    assert info.value.retryable is True


# -- pull_window -----------------------------------------------------------------------------------------


async def test_pull_window_splits_into_30_minute_spans_pages_with_has_next_and_keeps_start_inclusive_end_exclusive():
    start, end = NOW - 4500, NOW  # 75 minutes: three spans
    updated = {"in-first": start, "in-middle": start + 2000, "at-end": end, "in-last": end - 1, "twice": start + 1800}

    def answer(form: dict[str, str]) -> Any:
        lo, hi, page = int(form["start_updated_at"]), int(form["end_updated_at"]), int(form["page"])
        hits = [dict(order(), order_sn=sn, updated_at=cst_text(t)) for sn, t in updated.items() if lo <= t <= hi]
        chunk = hits[page - 1:page]
        return {"order_sn_increment_get_response": {"has_next": page < len(hits), "order_sn_list": chunk}}

    router = FakeRouter(answer)
    orders = await call(router, lambda http: channel(page_size=1).pull_window(http, SHOP, utc(start), utc(end)))
    assert sorted(o["order_sn"] for o in orders) == ["in-first", "in-last", "in-middle", "twice"]
    spans = {(int(f["start_updated_at"]), int(f["end_updated_at"])) for f in router.forms}
    assert spans == {(start, start + 1800), (start + 1800, start + 3600), (start + 3600, end)}
    assert all(hi - lo <= 1800 for lo, hi in spans)
    first = router.forms[0]
    assert {k: first[k] for k in ("type", "is_lucky_flag", "order_status", "refund_status", "page_size", "use_has_next")} == {
        "type": "pdd.order.number.list.increment.get", "is_lucky_flag": "0", "order_status": "5",
        "refund_status": "5", "page_size": "1", "use_has_next": "true"}
    assert max(int(f["page"]) for f in router.forms) == 2


# -- decrypt -----------------------------------------------------------------------------------------------


async def test_decrypt_batches_at_most_100_items_and_leaves_out_refused_ones():
    orders = [(f"sn{i}", {"phone": f"$p{i}$0$$", "name": f"~n{i}~0~~", "address_detail": f"~a{i}~0~~"}) for i in range(60)]

    def answer(form: dict[str, str]) -> Any:
        items = json.loads(form["data_list"])
        assert form["type"] == "pdd.open.decrypt.batch" and len(items) <= 100
        out = []
        for item in items:
            refused = item["data_tag"] == "sn7"
            out.append({**item, "decrypted_data": "" if refused else "plain:" + item["encrypted_data"],
                        "error_code": 10005 if refused else 0, "error_msg": "", "data_type": 6})
        return {"open_decrypt_batch_response": {"data_decrypt_list": out}}

    router = FakeRouter(answer)
    plain = await call(router, lambda http: channel().decrypt(http, SHOP, orders, ("phone", "name")))
    assert len(router.forms) == 2  # 120 ciphertexts
    assert "sn7" not in plain
    assert plain["sn3"] == {"phone": "plain:$p3$0$$", "name": "plain:~n3~0~~"}
    assert len(plain) == 59


# -- normalisation -------------------------------------------------------------------------------------------


def test_fixture_order_becomes_the_expected_canonical_order():
    result = channel().normalize(order(), SHOP)
    assert (result.channel, result.shop_id, result.original_id) == ("pdd", "100000001", "250318-123456789012345")
    assert result.status is Status.PAID
    assert result.platform_status == {"order_status": 1, "refund_status": 1, "confirm_status": 1, "group_status": 1,
                                      "after_sales_status": 0}
    assert result.created_at == datetime.fromisoformat("2025-03-18T10:12:00+08:00")
    assert result.paid_at == datetime.fromisoformat("2025-03-18T10:12:41+08:00")
    assert result.updated_at == datetime.fromisoformat("2025-03-18T10:12:45+08:00")
    assert result.updated_at.tzinfo is UTC
    a = result.amounts
    assert (a.goods, a.discount, a.shipping, a.paid, a.discount_shop, a.discount_platform) == (14970, 1600, 0, 13370, 1000, 600)
    tee, bag = result.lines
    assert (tee.sku, tee.title, tee.qty, tee.unit_price, tee.gift) == ("TS-TEE01-WH-L", "测试纯棉T恤", 2, 5990, False)
    assert (tee.platform_sku_id, tee.platform_line_id, tee.refund_status) == ("1100000000001", "1100000000001", RefundStatus.NONE)
    assert (bag.sku, bag.qty, bag.unit_price) == ("TS-BAG02-BE", 1, 2990)
    assert tee.paid + bag.paid == 13370 and (tee.paid, bag.paid) == (10700, 2670)  # paid shared by goods value
    assert (result.address.province, result.address.city, result.address.district, result.address.detail) == (
        "浙江省", "杭州市", "西湖区", "测试路*号")
    assert (result.buyer.platform_buyer_id, result.buyer.name, result.buyer.phone) == (None, "张*", "1*********0")
    assert result.buyer_message == "请尽快发货" and result.seller_remark is None
    assert result.shipment is None
    assert result.pii == {"phone": "$FAKEidx$FAKEcGhvbmUtY2lwaGVy$0$$", "name": "~FAKEbmFtZS1jaXBoZXI=~FAKEidx~0~~",
                          "address_detail": "~FAKEYWRkci1jaXBoZXI=~FAKEidx~0~~"}
    assert result.raw == order()


def test_a_shipped_order_carries_its_waybill():
    raw = dict(order(), order_status=2, tracking_number="SF1234567890123", logistics_id=44, shipping_time="2025-03-19 09:00:00")
    result = channel().normalize(raw, SHOP)
    assert result.status is Status.SHIPPED
    assert result.shipment == Shipment(carrier="44", waybill_no="SF1234567890123")


def test_a_seller_price_change_and_postage_and_capital_free_discount_add_up():
    raw = dict(order(), goods_amount=139.7, discount_amount=18.5, seller_discount=10.0, platform_discount=6.0,
               capital_free_discount=2.5, postage=8.0, pay_amount=129.2)
    a = channel().normalize(raw, SHOP).amounts
    assert (a.goods, a.discount, a.shipping, a.paid) == (14970, 1000 + 1850, 800, 12920)
    assert (a.discount_shop, a.discount_platform) == (1000 + 1000, 600 + 250)


def test_a_gift_from_gift_list_is_a_zero_price_line():
    gift = {"goods_id": "9", "sku_id": "99", "goods_name": "赠品小样", "goods_spec": "", "goods_price": 0.0,
            "goods_count": 1, "outer_id": "GIFT-1", "outer_goods_id": "", "goods_img": ""}
    result = channel().normalize(dict(order(), gift_list=[gift]), SHOP)
    assert result.lines[-1].gift and result.lines[-1].unit_price == 0 and result.lines[-1].paid == 0
    assert result.lines[-1].sku == "GIFT-1"


@pytest.mark.parametrize(
    ("order_status", "refund_status", "confirm_status", "group_status", "pay_time", "expected"),
    [
        (1, 1, 1, 1, "2025-03-18 10:12:41", Status.PAID),
        (2, 1, 1, 1, "2025-03-18 10:12:41", Status.SHIPPED),
        (3, 1, 1, 1, "2025-03-18 10:12:41", Status.COMPLETED),
        (1, 2, 1, 1, "2025-03-18 10:12:41", Status.PAID),  # after-sales open: still to ship, the platform says
        (1, 4, 1, 1, "2025-03-18 10:12:41", Status.PAID),  # a partial refund leaves the deal standing
        (2, 3, 1, 1, "2025-03-18 10:12:41", Status.SHIPPED),
        (1, 4, 2, 1, "2025-03-18 10:12:41", Status.CANCELLED),
        (1, 1, 2, 1, "", Status.CLOSED),
        (1, 4, 1, 2, "2025-03-18 10:12:41", Status.CANCELLED),  # 团失败
        (1, 1, 0, 0, "2025-03-18 10:12:41", Status.PENDING_PAYMENT),  # 拼团中: not a deal yet
        (1, 1, 0, 1, "", Status.PENDING_PAYMENT),
    ],
)
def test_status_table(order_status, refund_status, confirm_status, group_status, pay_time, expected):
    raw = dict(order(), order_status=order_status, refund_status=refund_status, confirm_status=confirm_status,
               group_status=group_status, pay_time=pay_time)
    assert channel().normalize(raw, SHOP).status is expected


def test_the_shipping_status_table_covers_exactly_the_documented_codes():
    assert SHIPPING_STATUS == {1: Status.PAID, 2: Status.SHIPPED, 3: Status.COMPLETED}


def test_a_refunded_cancellation_marks_every_line_refunded():
    result = channel().normalize(dict(order(), refund_status=4, confirm_status=2, after_sales_status=10), SHOP)
    assert {line.refund_status for line in result.lines} == {RefundStatus.REFUNDED}


@pytest.mark.parametrize(("name", "value"), [("order_status", 4), ("order_status", 5), ("refund_status", 0),
                                             ("confirm_status", 3), ("group_status", 7), ("order_status", "x")])
def test_an_unknown_status_code_is_refused(name, value):
    with pytest.raises(NormalizationError) as info:
        channel().normalize(dict(order(), **{name: value}), SHOP)
    assert info.value.code is ErrorCode.UNKNOWN_STATUS and info.value.field == name


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"pay_amount": 133.6}, "pay_amount"),
        ({"discount_amount": 15.0}, "discount_amount"),
        ({"goods_amount": 150.0, "pay_amount": 134.0}, "goods_amount"),
    ],
)
def test_amounts_that_do_not_add_up_are_refused(changes, field):
    with pytest.raises(NormalizationError) as info:
        channel().normalize(dict(order(), **changes), SHOP)
    assert info.value.code is ErrorCode.AMOUNTS_MISMATCH and info.value.field == field


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"created_time": "2025/03/18"}, ErrorCode.INVALID_TIME, "created_time"),
        ({"created_time": ""}, ErrorCode.MISSING_FIELD, "created_time"),
        ({"pay_amount": None}, ErrorCode.MISSING_FIELD, "pay_amount"),
        ({"pay_amount": -1.0}, ErrorCode.INVALID_AMOUNT, "pay_amount"),
        ({"item_list": []}, ErrorCode.MISSING_FIELD, "item_list"),
        ({"order_sn": ""}, ErrorCode.MISSING_FIELD, "order_sn"),
    ],
)
def test_malformed_orders_are_refused_with_a_code_and_field(changes, code, field):
    with pytest.raises(NormalizationError) as info:
        channel().normalize(dict(order(), **changes), SHOP)
    assert (info.value.code, info.value.field) == (code, field)


def test_unset_times_are_none_and_ids_may_come_as_numbers():
    raw = order()
    raw["pay_time"] = ""
    raw["confirm_status"] = 0
    raw["item_list"][0]["sku_id"] = 1100000000001
    result = channel().normalize(raw, SHOP)
    assert result.paid_at is None and result.lines[0].platform_sku_id == "1100000000001"


# -- money ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fen"),
    [(59.9, 5990), (133.7, 13370), (0.1 + 0.2, 30), (188.0, 18800), (0, 0), (0.125, 13), (0.005, 1),
     (1.005, 100), ("29.90", 2990), (1e7 + 0.07, 1000000007)],
)
def test_yuan_doubles_become_exact_fen(value, fen):
    # 0.125 and 0.005 round half away from zero; 1.005 is stored just below 1.005, so 100 fen.
    assert yuan_to_fen(value, "x") == fen


@pytest.mark.parametrize("value", [True, None, "abc", float("nan"), float("inf"), [1]])
def test_non_amounts_are_refused(value):
    with pytest.raises(NormalizationError) as info:
        yuan_to_fen(value, "x")
    assert info.value.code is ErrorCode.INVALID_AMOUNT


@given(st.integers(min_value=0, max_value=10**11))
def test_any_fen_amount_sent_as_a_yuan_double_comes_back_unchanged(fen):
    assert yuan_to_fen(fen / 100, "x") == fen
    assert yuan_to_fen(orjson.loads(orjson.dumps(fen / 100)), "x") == fen
