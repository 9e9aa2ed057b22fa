"""淘宝/天猫 channel: TMC frames and handshake, message parsing, signed TOP calls, errors, normalization."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from tenacity import wait_none

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.taobao import TaobaoChannel, tmc_url, top_sign
from orderhub.adapters.channels.taobao_normalize import REFUND_STATUS_MAP, STATUS_MAP
from orderhub.adapters.channels.taobao_tmc import (
    CONNECT,
    CONNECT_ACK,
    SEND,
    TmcClient,
    TmcFrame,
    TmcMessage,
    TmcProtocolError,
    confirm_frame,
    connect_frame,
    data_message,
    decode_frame,
    encode_frame,
    handshake_sign,
    reconnect_delay,
)
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, NormalizationError
from orderhub.domain.order import RefundStatus, Shipment
from orderhub.domain.status import Status

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"
HANDSHAKE = json.loads((FIXTURES / "SIGNATURES.json").read_text(encoding="utf-8"))["taobao TMC websocket handshake"]
FULLINFO = json.loads((FIXTURES / "taobao_trade_fullinfo.json").read_text(encoding="utf-8"))
TMC_MESSAGE = (FIXTURES / "taobao_tmc_trade_buyer_pay.json").read_bytes()
APP_KEY, APP_SECRET = HANDSHAKE["app_key"], HANDSHAKE["app_secret (fake)"]
NOW = 1742263962  # 2025-03-18 10:12:42 +08:00
# tmcpy tests/test_messageio.py: a connect ack (protocol 2, type 1, flag 1, a 36-character token).
TMCPY_ACK = b"\x02\x01\x04\x00\x01\x00\x00\x00\x05\x00$\x00\x00\x0032e88d28-20b1-40dd-8e2d-abec197277fe\x00\x00"

SHOP = ShopConfig(
    channel="taobao", shop_id="2200000001", name="测试旗舰店", app_key=APP_KEY, app_secret=APP_SECRET,
    api_base_url="http://sim.test/taobao", extra={"access_token": "session-1", "group_name": "default"},
)


def trade() -> dict:
    return copy.deepcopy(FULLINFO["trade_fullinfo_get_response"]["trade"])


def cst(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00")


def channel(**kwargs) -> TaobaoChannel:
    return TaobaoChannel(clock=lambda: NOW, retry_wait=wait_none(), **kwargs)


# -- TMC handshake and frames -------------------------------------------------------------------


def test_the_handshake_sign_reproduces_the_fixture_vector():
    assert handshake_sign(APP_KEY, APP_SECRET, HANDSHAKE["group_name"], HANDSHAKE["timestamp(ms)"]) == (
        HANDSHAKE["sign = upper(md5(secret + sorted(k+v) + secret))"]
    )


@pytest.mark.parametrize("field", ["app_key", "group_name", "timestamp"])
def test_a_one_byte_change_of_a_signed_handshake_field_changes_the_sign(field):
    values = {"app_key": APP_KEY, "group_name": HANDSHAKE["group_name"], "timestamp": str(HANDSHAKE["timestamp(ms)"])}
    values[field] = values[field][:-1] + chr(ord(values[field][-1]) ^ 1)
    assert handshake_sign(values["app_key"], APP_SECRET, values["group_name"], values["timestamp"]) != (
        HANDSHAKE["sign = upper(md5(secret + sorted(k+v) + secret))"]
    )


def test_the_connect_frame_carries_the_signed_handshake_fields():
    frame = decode_frame(encode_frame(connect_frame(APP_KEY, APP_SECRET, "default", HANDSHAKE["timestamp(ms)"])))
    assert frame.message_type == CONNECT and frame.protocol_version == 2
    assert frame.content["app_key"] == APP_KEY and frame.content["group_name"] == "default"
    assert frame.content["timestamp"] == str(HANDSHAKE["timestamp(ms)"])
    assert frame.content["sign"] == HANDSHAKE["sign = upper(md5(secret + sorted(k+v) + secret))"]


def test_the_tmcpy_connect_ack_vector_decodes_and_encodes_byte_for_byte():
    ack = decode_frame(TMCPY_ACK)
    assert (ack.protocol_version, ack.message_type, ack.flag) == (2, CONNECT_ACK, 1)
    assert ack.token == "32e88d28-20b1-40dd-8e2d-abec197277fe"
    assert encode_frame(TmcFrame(CONNECT_ACK, flag=1, token=ack.token)) == TMCPY_ACK


def test_a_confirm_frame_is_send_type_with_token_kind_2_and_the_id_as_a_long():
    data = encode_frame(confirm_frame(9000000000000000001, "tok"))
    expected = (
        b"\x02\x02" + b"\x05\x00" + struct.pack("<I", 3) + b"tok"
        + b"\x01\x00" + struct.pack("<I", 6) + b"__kind" + b"\x02\x02"
        + b"\x01\x00" + struct.pack("<I", 2) + b"id" + b"\x05" + struct.pack("<q", 9000000000000000001)
        + b"\x00\x00"
    )
    assert data == expected


def _data_frame_bytes() -> bytes:
    def text(s: str) -> bytes:
        raw = s.encode()
        return struct.pack("<I", len(raw)) + raw

    def custom(name: str, vtype: int, payload: bytes) -> bytes:
        return b"\x01\x00" + text(name) + bytes([vtype]) + payload

    pub_ms = int(cst("2025-03-18 10:12:42").timestamp() * 1000)
    message = json.loads(TMC_MESSAGE)
    return (
        b"\x02\x02" + custom("__kind", 2, b"\x03") + custom("id", 5, struct.pack("<q", message["id"]))
        + custom("topic", 1, text(message["topic"])) + custom("pub_app_key", 1, text(message["pub_app_key"]))
        + custom("pub_time", 6, struct.pack("<q", pub_ms)) + custom("user_id", 5, struct.pack("<q", message["user_id"]))
        + custom("user_nick", 1, text(message["user_nick"])) + custom("content", 1, text(message["content"]))
        + b"\x00\x00"
    )


def test_a_data_frame_becomes_the_tmc_message_of_the_fixture():
    message = data_message(decode_frame(_data_frame_bytes()))
    assert message is not None
    assert json.loads(message.body()) == json.loads(TMC_MESSAGE)


def test_frames_other_than_data_are_not_messages():
    assert data_message(TmcFrame(CONNECT_ACK, token="t")) is None
    assert data_message(TmcFrame(SEND, {"__kind": 1})) is None


@pytest.mark.parametrize("cut", [1, 3, 10, 40])
def test_a_truncated_frame_is_a_protocol_error(cut):
    with pytest.raises(TmcProtocolError):
        decode_frame(_data_frame_bytes()[:-cut])


def test_trailing_bytes_after_the_headers_are_a_protocol_error():
    with pytest.raises(TmcProtocolError):
        decode_frame(TMCPY_ACK + b"\x00")


def test_reconnect_delays_grow_exponentially_with_jitter_and_stay_capped():
    import random

    rng = random.Random(1)
    delays = [reconnect_delay(n, rng, 0.5, 30.0) for n in range(12)]
    for n, delay in enumerate(delays):
        step = min(30.0, 0.5 * 2**n)
        assert step / 2 <= delay <= step
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not lockstep


def test_the_tmc_url_follows_the_api_base_url_unless_given():
    assert tmc_url(SHOP) == "ws://sim.test/taobao/tmc"
    assert tmc_url(dataclasses.replace(SHOP, api_base_url="https://127.0.0.1:9100/taobao")) == "wss://127.0.0.1:9100/taobao/tmc"
    assert tmc_url(dataclasses.replace(SHOP, api_base_url="https://eco.taobao.com")) == "ws://mc.api.taobao.com/"
    assert tmc_url(dataclasses.replace(SHOP, extra={"tmc_url": "ws://elsewhere/"})) == "ws://elsewhere/"


# -- keep, then confirm (the connection's inner loop, with a fake socket) ----------------------


class FakeSocket:
    """Yields data frames; records what the client sends; ends once `expect` confirms went out."""

    def __init__(self, frames: list[bytes], expect: int) -> None:
        self.frames = frames
        self.sent: list[TmcFrame] = []
        self.expect = expect
        self.done = asyncio.Event()

    async def send(self, data: bytes) -> None:
        self.sent.append(decode_frame(data))
        if len([f for f in self.sent if f.content.get("__kind") == 2]) >= self.expect:
            self.done.set()

    def __aiter__(self):
        return self._frames()

    async def _frames(self):
        for frame in self.frames:
            yield frame
        await asyncio.wait_for(self.done.wait(), 5)


def _frame_for(message_id: int) -> bytes:
    return encode_frame(TmcFrame(SEND, {"id": message_id, "topic": "taobao_trade_TradeBuyerPay", "user_id": 1, "content": "{}"}))


async def test_keeps_run_concurrently_and_only_kept_messages_are_confirmed_after_their_keep():
    in_flight, most, kept = 0, 0, []
    release = asyncio.Event()

    async def deliver(message: TmcMessage) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 20:
            release.set()
        await release.wait()  # nobody finishes until all twenty are being kept at once
        in_flight -= 1
        if message.id == 13:
            raise RuntimeError("database unavailable")
        kept.append(message.id)

    socket = FakeSocket([_frame_for(i) for i in range(20)], expect=19)
    client = TmcClient("ws://unused", APP_KEY, APP_SECRET)
    await client._serve(socket, "tok", deliver)

    confirmed = [f.content["id"] for f in socket.sent if f.content.get("__kind") == 2]
    assert most == 20
    assert sorted(confirmed) == sorted(kept) == [i for i in range(20) if i != 13]
    assert all(f.token == "tok" for f in socket.sent)


async def test_in_flight_keeps_are_bounded():
    in_flight, most = 0, 0

    async def deliver(message: TmcMessage) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1

    from orderhub.adapters.channels.taobao_tmc import TmcSettings

    socket = FakeSocket([_frame_for(i) for i in range(50)], expect=50)
    client = TmcClient("ws://unused", APP_KEY, APP_SECRET, settings=TmcSettings(max_in_flight=8))
    await client._serve(socket, "tok", deliver)
    assert most == 8


# -- messages (parse_push) -----------------------------------------------------------------------


def test_the_fixture_message_names_the_trade_the_shop_and_the_publish_time():
    [message] = channel().parse_push(TMC_MESSAGE)
    assert message.shop_id == "2200000000001"
    assert message.original_id == "4012345678901234560"
    assert message.kind == "taobao_trade_TradeBuyerPay"
    assert message.event_time == cst("2025-03-18 10:12:42")  # no `modified` in this content: pub_time
    assert message.raw == json.loads(TMC_MESSAGE)


def test_the_content_modified_time_wins_over_the_publish_time():
    body = json.loads(TMC_MESSAGE)
    body["content"] = json.dumps({"tid": 1, "modified": "2025-03-18 10:12:45"})
    [message] = channel().parse_push(json.dumps(body).encode())
    assert message.event_time == cst("2025-03-18 10:12:45")
    assert message.event_time.tzinfo is not None


def test_a_message_about_no_trade_is_skipped():
    body = json.loads(TMC_MESSAGE)
    body["topic"], body["content"] = "taobao_item_ItemUpshelf", json.dumps({"num_iid": 1})
    assert channel().parse_push(json.dumps(body).encode()) == []


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"user_id": 1, "content": "{}"}', b'{"topic": "t", "content": "{}"}',
     b'{"topic": "t", "user_id": 1, "content": "{not json"}', b'{"topic": "t", "user_id": 1, "content": 5}',
     b'{"topic": "t", "user_id": 1, "content": "{\\"tid\\": 1, \\"modified\\": \\"18/03/2025\\"}"}'],
)
def test_an_unreadable_message_is_an_envelope_error(body):
    with pytest.raises(EnvelopeError) as info:
        channel().parse_push(body)
    assert info.value.code is ErrorCode.MALFORMED_ENVELOPE


# -- normalization of the fixture ------------------------------------------------------------------


def test_the_fixture_trade_becomes_the_expected_canonical_order():
    order = channel().normalize(trade(), SHOP)

    assert (order.channel, order.shop_id, order.original_id) == ("taobao", "2200000001", "4012345678901234560")
    assert order.status is Status.PAID
    assert order.platform_status == {"status": "WAIT_SELLER_SEND_GOODS", "type": "fixed"}
    assert order.created_at == cst("2025-03-18 10:12:00") and order.created_at.tzinfo is UTC
    assert order.paid_at == cst("2025-03-18 10:12:41")
    assert order.updated_at == cst("2025-03-18 10:12:45")
    # 59.90 x 2 + 29.90 = 149.70 of goods; 5.00 item discount + 11.00 order-level (8.73 + 2.27); paid 133.70
    assert (order.amounts.goods, order.amounts.discount, order.amounts.shipping, order.amounts.paid) == (14970, 1600, 0, 13370)
    assert (order.amounts.discount_shop, order.amounts.discount_platform) == (None, None)  # no platform_subsidy_fee
    first, second = order.lines
    assert (first.sku, first.title, first.qty, first.unit_price, first.paid) == ("TS-TEE01-WH-L", "测试纯棉T恤", 2, 5990, 10607)
    assert (first.platform_sku_id, first.platform_line_id, first.refund_status) == ("5000000000001", "4012345678901234561", RefundStatus.NONE)
    assert (second.sku, second.qty, second.unit_price, second.paid, second.gift) == ("TS-BAG02-BE", 1, 2990, 2763, False)
    assert order.buyer.platform_buyer_id == "AAFAKEopenUid0001"
    assert (order.buyer.name, order.buyer.phone) == ("张**", "*******0000")
    assert (order.address.province, order.address.city, order.address.district, order.address.detail) == (
        "浙江省", "杭州市", "西湖区", "测试路**号")
    assert order.pii == {"oaid": "1FAKEoaid000000000000000000000000000000000000001"}
    assert order.shipment is None
    assert order.raw["tid"] == 4012345678901234560


def test_the_whole_fullinfo_reply_is_accepted_too():
    assert channel().normalize(copy.deepcopy(FULLINFO), SHOP).original_id == "4012345678901234560"


def test_receiver_ciphertexts_go_to_pii_and_are_never_shown():
    raw = trade()
    raw["receiver_mobile"], raw["receiver_name"] = "$138$AbCdEfGhIjKlMn==$1$$", "~QWxpY2VCb2JDYXJvbA==~1~~"
    order = channel().normalize(raw, SHOP)
    assert order.pii == {"oaid": raw["oaid"], "phone": raw["receiver_mobile"], "name": raw["receiver_name"]}
    assert order.buyer.phone is None and order.buyer.name is None


def test_platform_subsidies_split_the_discount_between_shop_and_platform():
    raw = trade()
    raw["orders"]["order"][0]["platform_subsidy_fee"] = "3.00"
    raw["orders"]["order"][1]["platform_subsidy_fee"] = "1.00"
    assert (channel().normalize(raw, SHOP).amounts.discount_shop, channel().normalize(raw, SHOP).amounts.discount_platform) == (1200, 400)


def test_post_fee_and_shipment_are_read():
    raw = trade()
    raw["post_fee"], raw["payment"] = "8.00", "141.70"
    raw["status"] = "WAIT_BUYER_CONFIRM_GOODS"
    raw["orders"]["order"][0] |= {"logistics_company": "顺丰速运", "invoice_no": "SF1234567890123"}
    order = channel().normalize(raw, SHOP)
    assert (order.amounts.shipping, order.amounts.paid, order.amounts.discount) == (800, 14170, 1600)
    assert order.shipment == Shipment(carrier="顺丰速运", waybill_no="SF1234567890123")
    assert order.status is Status.SHIPPED


def test_without_divide_order_fee_paid_is_split_by_the_lines_totals():
    raw = trade()
    for item in raw["orders"]["order"]:
        del item["divide_order_fee"]
    order = channel().normalize(raw, SHOP)
    # 133.70 over line totals 114.80 : 29.90
    assert [line.paid for line in order.lines] == [10607, 2763]


def test_lines_that_do_not_add_up_to_the_payment_are_refused():
    raw = trade()
    raw["orders"]["order"][1]["divide_order_fee"] = "27.64"
    with pytest.raises(NormalizationError) as info:
        channel().normalize(raw, SHOP)
    assert info.value.code is ErrorCode.AMOUNTS_MISMATCH


def test_a_payment_above_goods_plus_postage_is_refused():
    raw = trade()
    raw["payment"] = "150.00"
    with pytest.raises(NormalizationError) as info:
        channel().normalize(raw, SHOP)
    assert info.value.code is ErrorCode.AMOUNTS_MISMATCH


@pytest.mark.parametrize("field,value,code", [
    ("payment", "133.705", ErrorCode.INVALID_AMOUNT),
    ("payment", 133.7, ErrorCode.INVALID_AMOUNT),
    ("created", "2025/03/18", ErrorCode.INVALID_TIME),
    ("tid", None, ErrorCode.MISSING_FIELD),
    ("orders", {"order": []}, ErrorCode.MISSING_FIELD),
])
def test_malformed_fields_are_refused_with_a_code(field, value, code):
    raw = trade()
    raw[field] = value
    with pytest.raises(NormalizationError) as info:
        channel().normalize(raw, SHOP)
    assert info.value.code is code


# -- status table -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status,expected", [
    ("TRADE_NO_CREATE_PAY", Status.PENDING_PAYMENT), ("WAIT_BUYER_PAY", Status.PENDING_PAYMENT),
    ("PAY_PENDING", Status.PENDING_PAYMENT), ("WAIT_PRE_AUTH_CONFIRM", Status.PENDING_PAYMENT),
    ("WAIT_SELLER_SEND_GOODS", Status.PAID), ("PAID_FORBID_CONSIGN", Status.PAID),
    ("SELLER_CONSIGNED_PART", Status.SHIPPED), ("WAIT_BUYER_CONFIRM_GOODS", Status.SHIPPED),
    ("TRADE_BUYER_SIGNED", Status.DELIVERED), ("TRADE_FINISHED", Status.COMPLETED),
    ("TRADE_CLOSED", Status.CANCELLED), ("TRADE_CLOSED_BY_TAOBAO", Status.CLOSED),
])
def test_each_trade_status_maps_to_its_canonical_status(status, expected):
    raw = trade()
    raw["status"] = status
    assert STATUS_MAP[status] is expected
    assert channel().normalize(raw, SHOP).status is expected


def test_the_status_table_covers_every_documented_trade_status():
    documented = {"TRADE_NO_CREATE_PAY", "WAIT_BUYER_PAY", "SELLER_CONSIGNED_PART", "WAIT_SELLER_SEND_GOODS",
                  "WAIT_BUYER_CONFIRM_GOODS", "TRADE_BUYER_SIGNED", "TRADE_FINISHED", "TRADE_CLOSED",
                  "TRADE_CLOSED_BY_TAOBAO", "PAY_PENDING", "WAIT_PRE_AUTH_CONFIRM", "PAID_FORBID_CONSIGN"}
    assert set(STATUS_MAP) == documented


@pytest.mark.parametrize("status", ["ALL_WAIT_PAY", "TRADE_SOMETHING_NEW", "", None])
def test_an_unknown_trade_status_is_refused(status):
    raw = trade()
    raw["status"] = status
    with pytest.raises(NormalizationError) as info:
        channel().normalize(raw, SHOP)
    assert info.value.code is ErrorCode.UNKNOWN_STATUS


@pytest.mark.parametrize("refund,expected", list(REFUND_STATUS_MAP.items()))
def test_each_line_refund_status_maps(refund, expected):
    raw = trade()
    raw["orders"]["order"][0]["refund_status"] = refund
    assert channel().normalize(raw, SHOP).lines[0].refund_status == expected


def test_an_unknown_refund_status_is_refused():
    raw = trade()
    raw["orders"]["order"][0]["refund_status"] = "SOMETHING_ELSE"
    with pytest.raises(NormalizationError) as info:
        channel().normalize(raw, SHOP)
    assert info.value.code is ErrorCode.UNKNOWN_STATUS


# -- TOP signing -----------------------------------------------------------------------------------

TOP_VECTOR = {
    "method": "taobao.trade.fullinfo.get", "app_key": APP_KEY, "session": "fake-taobao-session-0001",
    "timestamp": "2025-03-18 10:12:42", "format": "json", "v": "2.0", "sign_method": "md5",
    "tid": "4012345678901234560", "fields": "tid,status,payment",
}


@pytest.mark.parametrize("method,expected", [
    ("md5", "A349D5F678BF8A6F5053D70CDAE1E718"),
    ("hmac", "73EFEEE43FF3864E05394686F7F0EC91"),
    ("hmac-sha256", "1133200F2BF846576F9F102F0907C6254AD6B1A59EDF3A2F422E2804367F7362"),
])
def test_the_top_sign_matches_the_documented_vector(method, expected):
    assert top_sign({**TOP_VECTOR, "sign_method": method}, APP_SECRET, method) == expected


def test_the_sign_ignores_an_existing_sign_field_and_any_one_byte_change_alters_it():
    base = top_sign(TOP_VECTOR, APP_SECRET)
    assert top_sign({**TOP_VECTOR, "sign": "anything"}, APP_SECRET) == base
    for key, value in TOP_VECTOR.items():
        changed = value[:-1] + chr(ord(value[-1]) ^ 1)
        assert top_sign({**TOP_VECTOR, key: changed}, APP_SECRET) != base, key


# -- TOP calls over a mock transport ---------------------------------------------------------------


class Platform:
    """A scripted TOP router: answers each request with the next reply for its method."""

    def __init__(self, **replies) -> None:
        self.replies = {method.replace("_", "."): list(r) for method, r in replies.items()}
        self.requests: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode()))
        self.requests.append(form)
        queue = self.replies[form["method"]]
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, int):
            return httpx.Response(reply)
        return httpx.Response(200, content=orjson.dumps(reply(form) if callable(reply) else reply))


def client(platform: Platform) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(platform))


def error(code: int, msg: str = "", sub_code: str = "") -> dict:
    return {"error_response": {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": "", "request_id": "r1"}}


async def test_fetch_posts_a_signed_form_to_the_router_and_returns_the_trade():
    platform = Platform(taobao_trade_fullinfo_get=[FULLINFO])
    async with client(platform) as http:
        found = await channel().fetch_orders(http, SHOP, ["4012345678901234560"])
    assert found["4012345678901234560"]["tid"] == 4012345678901234560
    [form] = platform.requests
    assert form["method"] == "taobao.trade.fullinfo.get" and form["tid"] == "4012345678901234560"
    assert (form["app_key"], form["session"], form["format"], form["v"], form["sign_method"]) == (
        APP_KEY, "session-1", "json", "2.0", "md5")
    assert form["timestamp"] == "2025-03-18 10:12:42"  # GMT+8
    assert form["sign"] == top_sign(form, APP_SECRET)
    assert "oaid" in form["fields"].split(",") and "orders" in form["fields"].split(",")


async def test_an_unknown_trade_is_left_out():
    platform = Platform(taobao_trade_fullinfo_get=[error(15, "Remote service error", "isv.trade-not-exist")])
    async with client(platform) as http:
        assert await channel().fetch_orders(http, SHOP, ["1"]) == {}


async def test_an_invalid_signature_is_final():
    platform = Platform(taobao_trade_fullinfo_get=[error(25, "Invalid signature")])
    async with client(platform) as http:
        with pytest.raises(FetchError) as info:
            await channel().fetch_orders(http, SHOP, ["1"])
    assert info.value.retryable is False and "25" in info.value.message
    assert len(platform.requests) == 1


@pytest.mark.parametrize("reply", [
    error(7, "App Call Limited", "accesscontrol.limited-by-app-access-count"),
    error(15, "Remote service error", "isp.top-remote-connection-timeout"),
    error(15, "Remote service error", "isv.trade-service-unavailable"),
    error(10, "Service Currently Unavailable"),
    503, 429,
])
async def test_limits_and_platform_faults_are_retried(reply):
    platform = Platform(taobao_trade_fullinfo_get=[reply, FULLINFO])
    async with client(platform) as http:
        found = await channel().fetch_orders(http, SHOP, ["4012345678901234560"])
    assert set(found) == {"4012345678901234560"} and len(platform.requests) == 2


async def test_persistent_limits_end_as_a_retryable_fetch_error():
    platform = Platform(taobao_trade_fullinfo_get=[error(7, "App Call Limited")])
    async with client(platform) as http:
        with pytest.raises(FetchError) as info:
            await channel(attempts=3).fetch_orders(http, SHOP, ["1"])
    assert info.value.retryable is True and len(platform.requests) == 3


async def test_a_refused_session_without_refresh_token_asks_for_re_authorisation():
    platform = Platform(taobao_trade_fullinfo_get=[error(27, "Invalid session", "invalid-sessionkey")])
    async with client(platform) as http:
        with pytest.raises(FetchError) as info:
            await channel().fetch_orders(http, SHOP, ["1"])
    assert info.value.retryable is False and "re-authorised" in info.value.message


async def test_a_refused_session_is_refreshed_once_and_the_call_repeated():
    token_result = json.dumps({"access_token": "session-2", "refresh_token": "refresh-2", "expires_in": 86400})
    platform = Platform(
        taobao_trade_fullinfo_get=[error(27, "Invalid session", "invalid-sessionkey"), FULLINFO],
        taobao_top_auth_token_refresh=[{"top_auth_token_refresh_response": {"token_result": token_result}}],
    )
    shop = dataclasses.replace(SHOP, extra={**SHOP.extra, "refresh_token": "refresh-1"})
    tb = channel()
    async with client(platform) as http:
        assert set(await tb.fetch_orders(http, shop, ["4012345678901234560"])) == {"4012345678901234560"}
        await tb.fetch_orders(http, shop, ["4012345678901234560"])
    methods = [(r["method"], r.get("session"), r.get("refresh_token")) for r in platform.requests]
    assert methods == [
        ("taobao.trade.fullinfo.get", "session-1", None),
        ("taobao.top.auth.token.refresh", None, "refresh-1"),
        ("taobao.trade.fullinfo.get", "session-2", None),
        ("taobao.trade.fullinfo.get", "session-2", None),  # the new session is kept
    ]


# -- pull window -------------------------------------------------------------------------------------


def _trade_modified(tid: int, modified: str) -> dict:
    return {**trade(), "tid": tid, "modified": modified}


async def test_pull_reads_pages_from_the_last_back_and_keeps_the_half_open_window():
    # 150 trades modified 24 s apart from 10:00:00 to 10:59:36, newest first (TOP's order)
    times = [cst("2025-03-18 10:00:00") + timedelta(seconds=24 * (149 - n)) for n in range(150)]
    newest_first = [_trade_modified(100 + n, t.astimezone(cst("2025-03-18 00:00:00").tzinfo).strftime("%Y-%m-%d %H:%M:%S"))
                    for n, t in enumerate(times)]

    def page(form):
        if form["page_size"] == "1":
            return {"trades_sold_increment_get_response": {"total_results": 150, "has_next": True}}
        no, size = int(form["page_no"]), int(form["page_size"])
        chunk = newest_first[(no - 1) * size : no * size]
        return {"trades_sold_increment_get_response": {"total_results": 150, "trades": {"trade": chunk}}}

    platform = Platform(taobao_trades_sold_increment_get=[page])
    start, end = cst("2025-03-18 10:00:00"), cst("2025-03-18 10:59:00")
    async with client(platform) as http:
        trades = await channel().pull_window(http, SHOP, start, end)
    assert [r["page_no"] for r in platform.requests] == ["1", "2", "1"]
    assert all(r["use_has_next"] == "false" for r in platform.requests)
    assert platform.requests[0]["start_modified"] == "2025-03-18 10:00:00"
    assert platform.requests[0]["end_modified"] == "2025-03-18 10:59:00"
    # 10:59:00 is the (exclusive) end: the trade modified at exactly 10:59:00 (and later ones) is out
    assert sorted(t["tid"] for t in trades) == [100 + n for n, t in enumerate(times) if t < end]
    assert len(trades) == 148  # 10:00:00 + 24 s x 0..147


async def test_pull_splits_a_window_longer_than_a_day():
    platform = Platform(taobao_trades_sold_increment_get=[{"trades_sold_increment_get_response": {"total_results": 0}}])
    start = cst("2025-03-15 00:00:00")
    async with client(platform) as http:
        assert await channel().pull_window(http, SHOP, start, start + timedelta(days=2, hours=1)) == []
    spans = [(r["start_modified"], r["end_modified"]) for r in platform.requests]
    assert spans == [("2025-03-15 00:00:00", "2025-03-16 00:00:00"), ("2025-03-16 00:00:00", "2025-03-17 00:00:00"),
                     ("2025-03-17 00:00:00", "2025-03-17 01:00:00")]


# -- OAID decrypt ------------------------------------------------------------------------------------


async def test_decrypt_sends_oaid_tid_and_scene_in_batches_of_twenty_and_returns_the_asked_fields():
    def answer(form):
        queries = json.loads(form["query_list"])
        receivers = [{"oaid": q["oaid"], "tid": q["tid"], "name": f"name{q['tid']}", "mobile": f"1380000{q['tid']}",
                      "address_detail": "幸福路1号"} for q in queries]
        return {"top_oaid_decrypt_response": {"receiver_list": {"receiver": receivers}}}

    platform = Platform(taobao_top_oaid_decrypt=[answer])
    orders = [(str(1000 + n), {"oaid": f"oaid-{n}"}) for n in range(45)] + [("9", {})]  # one without an oaid
    async with client(platform) as http:
        plain = await channel().decrypt(http, SHOP, orders, ("phone",))
    sizes = sorted(len(json.loads(r["query_list"])) for r in platform.requests)
    assert sizes == [5, 20, 20]
    first = json.loads(platform.requests[0]["query_list"])[0]
    assert set(first) == {"oaid", "tid", "scene"} and first["scene"] == "1005"
    assert plain["1000"] == {"phone": "13800001000"} and len(plain) == 45


async def test_a_refused_decrypt_is_a_final_fetch_error():
    platform = Platform(taobao_top_oaid_decrypt=[error(15, "Remote service error", "isv.oaid-decrypt-forbidden")])
    async with client(platform) as http:
        with pytest.raises(FetchError) as info:
            await channel().decrypt(http, SHOP, [("1", {"oaid": "x"})], ("phone",))
    assert info.value.retryable is False
