"""The simulated 淘宝/天猫: trades in the fixture's shape, the signed TOP router, OAID decrypt, TMC frames."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from orderhub.demo.shops import DEMO_SHOPS, demo_shop
from orderhub.simulator import Simulator, create_app
from orderhub.simulator import model as m
from orderhub.simulator import taobao, taobao_tmc
from orderhub.simulator.amounts import cst, parse_cst
from orderhub.simulator.clock import FixedClock

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"
FIXTURE_TRADE = json.loads((FIXTURES / "taobao_trade_fullinfo.json").read_text(encoding="utf-8"))[
    "trade_fullinfo_get_response"]["trade"]
FIXTURE_MESSAGE = json.loads((FIXTURES / "taobao_tmc_trade_buyer_pay.json").read_text(encoding="utf-8"))
HANDSHAKE = json.loads((FIXTURES / "SIGNATURES.json").read_text(encoding="utf-8"))["taobao TMC websocket handshake"]
TMCPY_ACK = b"\x02\x01\x04\x00\x01\x00\x00\x00\x05\x00$\x00\x00\x0032e88d28-20b1-40dd-8e2d-abec197277fe\x00\x00"
NOW = 1742263920 + 30 * 86400
SHOP = demo_shop("taobao")
OTHER_SHOP = {**SHOP, "shop_id": "2200000002", "name": "天猫二店", "extra": {"access_token": "fake-taobao-session-0002"}}


@pytest.fixture(scope="module")
def sim() -> Simulator:
    simulator = Simulator(seed=11, clock=FixedClock(NOW), shops=[*DEMO_SHOPS, OTHER_SHOP])
    simulator.generate(300, ["taobao"])
    return simulator


def orders(sim: Simulator) -> list[m.SimOrder]:
    return sim.orders("taobao")


def kind_of(value) -> str:
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


# -- payload shape -----------------------------------------------------------------------------------


def test_every_fixture_field_is_rendered_with_the_fixtures_type(sim):
    for order in orders(sim)[:50]:
        trade = sim.render(order)
        for key, value in FIXTURE_TRADE.items():
            assert key in trade, key
            if key != "orders":
                assert kind_of(trade[key]) == kind_of(value), key
        fixture_line = FIXTURE_TRADE["orders"]["order"][0]
        for line in trade["orders"]["order"]:
            for key, value in fixture_line.items():
                assert key in line and kind_of(line[key]) == kind_of(value), key


def test_amounts_add_up_the_way_taobao_states_them(sim):
    def fen(text: str) -> int:
        whole, cents = text.split(".")
        return int(whole) * 100 + int(cents)

    for order in orders(sim):
        trade = sim.render(order)
        lines = trade["orders"]["order"]
        assert fen(trade["total_fee"]) == sum(fen(x["price"]) * x["num"] for x in lines)
        assert fen(trade["payment"]) == order.paid
        assert sum(fen(x["divide_order_fee"]) for x in lines) == fen(trade["payment"]) - fen(trade["post_fee"])
        for x in lines:
            assert fen(x["divide_order_fee"]) == fen(x["total_fee"]) - fen(x["part_mjz_discount"])
            assert fen(x["platform_subsidy_fee"]) <= fen(x["part_mjz_discount"])
        if len(lines) == 1:  # a one-line trade's sub-order payment is the trade's
            assert lines[0]["payment"] == trade["payment"]


def test_statuses_times_and_ids_follow_the_order(sim):
    expected = {m.UNPAID: "WAIT_BUYER_PAY", m.PAID: "WAIT_SELLER_SEND_GOODS", m.SHIPPED: "WAIT_BUYER_CONFIRM_GOODS",
                m.COMPLETED: "TRADE_FINISHED", m.CANCELLED: "TRADE_CLOSED", m.CLOSED: "TRADE_CLOSED_BY_TAOBAO"}
    seen = set()
    for order in orders(sim):
        trade = sim.render(order)
        seen.add(order.status)
        assert trade["status"] == expected[order.status]
        assert trade["tid"] == int(order.original_id) and parse_cst(trade["modified"]) == order.update_time
        assert trade["buyer_open_uid"] == order.customer.taobao_open_uid
        for line, x in zip(order.lines, trade["orders"]["order"], strict=True):
            assert (x["oid"], x["num_iid"], x["sku_id"], x["outer_sku_id"]) == (
                int(line.line_id), int(line.sku.taobao_num_iid), line.sku.taobao_sku_id, line.sku.code)
    assert {m.PAID, m.SHIPPED, m.COMPLETED, m.CLOSED} <= seen


def test_receivers_are_masked_and_the_oaid_decrypts_in_the_vault(sim):
    for order in orders(sim)[:50]:
        trade = sim.render(order)
        c = order.customer
        assert c.name not in json.dumps(trade, ensure_ascii=False) and c.phone not in json.dumps(trade)
        assert trade["receiver_name"] == c.name[0] + "**" and trade["receiver_mobile"].endswith(c.phone[-4:])
        plain = json.loads(sim.decrypt(trade["oaid"]))
        assert (plain["name"], plain["mobile"], plain["address_detail"]) == (c.name, c.phone, order.address.detail)
        assert len(trade["oaid"]) == len(FIXTURE_TRADE["oaid"])


# -- TMC messages --------------------------------------------------------------------------------------


def test_each_event_becomes_a_tmc_message_on_the_apps_stream():
    sim = Simulator(seed=5, clock=FixedClock(NOW))
    result = sim.generate(200, ["taobao"])
    topics = set()
    for push in result.pushes:
        body = json.loads(push.body)
        assert set(body) == set(FIXTURE_MESSAGE)
        assert (push.path, push.headers, push.stream_key, push.message_id) == ("", {}, SHOP["app_key"], body["id"])
        assert body["user_id"] == int(SHOP["shop_id"]) and body["topic"] == push.kind
        content = json.loads(body["content"])
        assert content["tid"] == int(push.order_id) and parse_cst(content["modified"]) <= push.send_at
        assert "*" in content["buyer_nick"]
        topics.add(push.kind)
    assert {"taobao_trade_TradeCreate", "taobao_trade_TradeBuyerPay", "taobao_trade_TradeSellerShip",
            "taobao_trade_TradeSuccess"} <= topics


# -- the TOP router --------------------------------------------------------------------------------------


def signed(params: dict[str, str], secret: str = SHOP["app_secret"], method: str = "md5") -> dict[str, str]:
    """Independent md5 signing (FORMATS.md §2): UPPER(md5(secret + sorted k+v + secret))."""
    form = {"app_key": SHOP["app_key"], "timestamp": cst(NOW), "format": "json", "v": "2.0", "sign_method": method,
            "session": SHOP["extra"]["access_token"], **params}
    text = "".join(k + form[k] for k in sorted(form))
    form["sign"] = hashlib.md5((secret + text + secret).encode()).hexdigest().upper()
    return form


@pytest.fixture
async def top(sim):
    transport = httpx.ASGITransport(app=create_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as http:
        async def call(form: dict[str, str]) -> dict:
            response = await http.post("/taobao/router/rest", data=form)
            assert response.status_code == 200
            return orjson.loads(response.content)
        yield call


async def test_fullinfo_returns_the_trade_with_only_the_asked_fields(top, sim):
    order = orders(sim)[0]
    reply = await top(signed({"method": "taobao.trade.fullinfo.get", "tid": order.original_id, "fields": "tid,status,orders"}))
    trade = reply["trade_fullinfo_get_response"]["trade"]
    assert set(trade) == {"tid", "status", "orders"} and trade["tid"] == int(order.original_id)


async def test_a_one_byte_change_after_signing_is_refused_with_code_25(top, sim):
    form = signed({"method": "taobao.trade.fullinfo.get", "tid": orders(sim)[0].original_id, "fields": "tid"})
    form["tid"] = form["tid"][:-1] + chr(ord(form["tid"][-1]) ^ 1)
    reply = await top(form)
    assert reply["error_response"]["code"] == 25 and reply["error_response"]["msg"] == "Invalid signature"


async def test_a_wrong_secret_is_refused_with_code_25(top, sim):
    reply = await top(signed({"method": "taobao.trade.fullinfo.get", "tid": "1", "fields": "tid"}, secret="nope"))
    assert reply["error_response"]["code"] == 25


async def test_hmac_signatures_are_accepted_too(top, sim):
    import hmac as hmac_lib

    order = orders(sim)[0]
    for method, digest in (("hmac", "md5"), ("hmac-sha256", "sha256")):
        form = {"method": "taobao.trade.fullinfo.get", "tid": order.original_id, "fields": "tid", "app_key": SHOP["app_key"],
                "timestamp": cst(NOW), "format": "json", "v": "2.0", "sign_method": method,
                "session": SHOP["extra"]["access_token"]}
        text = "".join(k + form[k] for k in sorted(form))
        form["sign"] = hmac_lib.new(SHOP["app_secret"].encode(), text.encode(), digest).hexdigest().upper()
        reply = await top(form)
        assert reply["trade_fullinfo_get_response"]["trade"]["tid"] == int(order.original_id), method


async def test_an_unknown_or_missing_session_is_refused_with_26_or_27(top, sim):
    reply = await top(signed({"method": "taobao.trade.fullinfo.get", "tid": "1", "fields": "tid", "session": "stale"}))
    assert reply["error_response"]["code"] == 27 and reply["error_response"]["sub_code"] == "invalid-sessionkey"
    form = signed({"method": "taobao.trade.fullinfo.get", "tid": "1", "fields": "tid"})
    del form["session"]
    text = "".join(k + form[k] for k in sorted(form) if k != "sign")
    form["sign"] = hashlib.md5((SHOP["app_secret"] + text + SHOP["app_secret"]).encode()).hexdigest().upper()
    assert (await top(form))["error_response"]["code"] == 26


async def test_another_shops_trade_is_not_found(top, sim):
    form = signed({"method": "taobao.trade.fullinfo.get", "tid": orders(sim)[0].original_id, "fields": "tid",
                   "session": OTHER_SHOP["extra"]["access_token"]})
    assert (await top(form))["error_response"]["sub_code"] == "isv.trade-not-exist"


async def test_increment_pages_newest_first_and_refuses_spans_over_a_day(top, sim):
    first, last = min(o.update_time for o in orders(sim)), max(o.update_time for o in orders(sim))
    start = max(first, last - 86400)
    base = {"method": "taobao.trades.sold.increment.get", "start_modified": cst(start), "end_modified": cst(last),
            "fields": "tid,modified", "page_size": "100"}
    reply = (await top(signed({**base, "page_no": "1"})))["trades_sold_increment_get_response"]
    modified = [parse_cst(t["modified"]) for t in reply["trades"]["trade"]]
    assert modified == sorted(modified, reverse=True) and reply["total_results"] > 0
    with_next = (await top(signed({**base, "page_no": "1", "use_has_next": "true"})))["trades_sold_increment_get_response"]
    assert "total_results" not in with_next and with_next["has_next"] == (reply["total_results"] > 100)
    too_long = await top(signed({**base, "start_modified": cst(last - 86401), "page_no": "1"}))
    assert too_long["error_response"]["code"] == 41
    too_big = await top(signed({**base, "page_no": "1", "page_size": "101"}))
    assert too_big["error_response"]["code"] == 41


async def test_oaid_decrypt_answers_the_shop_and_refuses_anyone_else(top, sim):
    order = orders(sim)[0]
    trade = sim.render(order)
    query = json.dumps([{"oaid": trade["oaid"], "tid": order.original_id, "scene": "1005"}])
    reply = await top(signed({"method": "taobao.top.oaid.decrypt", "query_list": query}))
    [receiver] = reply["top_oaid_decrypt_response"]["receiver_list"]["receiver"]
    assert (receiver["name"], receiver["mobile"], receiver["tid"], receiver["matched"]) == (
        order.customer.name, order.customer.phone, order.original_id, True)
    assert "shop_id" not in receiver
    other = await top(signed({"method": "taobao.top.oaid.decrypt", "query_list": query,
                              "session": OTHER_SHOP["extra"]["access_token"]}))
    assert other["error_response"]["sub_code"] == "isv.oaid-decrypt-forbidden"
    stale = await top(signed({"method": "taobao.top.oaid.decrypt", "query_list": query, "session": "stale"}))
    assert stale["error_response"]["code"] == 27
    too_many = json.dumps([{"oaid": trade["oaid"], "tid": order.original_id}] * 21)
    assert (await top(signed({"method": "taobao.top.oaid.decrypt", "query_list": too_many})))["error_response"]["code"] == 41


async def test_a_refresh_token_buys_a_new_session_after_revocation(top, sim):
    sim.revoke_tokens("taobao")
    try:
        form = signed({"method": "taobao.top.auth.token.refresh", "refresh_token": taobao.refresh_token_for(SHOP)})
        result = json.loads((await top(form))["top_auth_token_refresh_response"]["token_result"])
        assert sim.token_shop("taobao", result["access_token"]) == SHOP["shop_id"] and result["expires_in"] > 0
        bad = await top(signed({"method": "taobao.top.auth.token.refresh", "refresh_token": "nope"}))
        assert bad["error_response"]["sub_code"] == "isv.refresh-token-invalid"
    finally:
        for shop in (SHOP, OTHER_SHOP):  # the module's simulator is shared: restore the sessions
            sim._tokens[("taobao", shop["extra"]["access_token"])] = shop["shop_id"]


# -- TMC frames and the endpoint -------------------------------------------------------------------------


def connect_bytes(secret: str = SHOP["app_secret"], timestamp: str = str(HANDSHAKE["timestamp(ms)"])) -> bytes:
    fields = {"app_key": SHOP["app_key"], "group_name": "default", "timestamp": timestamp}
    fields["sign"] = hashlib.md5((secret + "".join(k + fields[k] for k in sorted(fields)) + secret).encode()).hexdigest().upper()
    fields["sdk"] = "test"
    return taobao_tmc.build_frame(taobao_tmc.T_CONNECT, flag=1,
                                  fields=[(k, taobao_tmc.V_STRING, v) for k, v in fields.items()])


def test_the_server_codec_reproduces_the_tmcpy_connect_ack():
    assert taobao_tmc.connect_ack("32e88d28-20b1-40dd-8e2d-abec197277fe") == TMCPY_ACK
    ack = taobao_tmc.parse_frame(TMCPY_ACK)
    assert (ack.version, ack.kind, ack.flag, ack.token) == (2, 1, 1, "32e88d28-20b1-40dd-8e2d-abec197277fe")


def test_the_handshake_check_accepts_the_fixture_vector_and_refuses_a_one_byte_change(sim):
    frame = taobao_tmc.parse_frame(connect_bytes())
    assert frame.fields["sign"] == HANDSHAKE["sign = upper(md5(secret + sorted(k+v) + secret))"]
    shop, _ = taobao_tmc.check_handshake(sim, frame)
    assert shop is not None and shop["app_key"] == SHOP["app_key"]
    frame.fields["timestamp"] = frame.fields["timestamp"][:-1] + "1"  # signed input changed, sign kept
    assert taobao_tmc.check_handshake(sim, frame) == (None, "invalid sign")


def test_a_data_frame_carries_the_message_with_typed_values():
    frame = taobao_tmc.parse_frame(taobao_tmc.data_frame(json.dumps(FIXTURE_MESSAGE, ensure_ascii=False).encode()))
    assert frame.kind == taobao_tmc.T_SEND and frame.fields["__kind"] == taobao_tmc.KIND_DATA
    assert frame.fields["id"] == FIXTURE_MESSAGE["id"] and frame.fields["user_id"] == FIXTURE_MESSAGE["user_id"]
    assert frame.fields["pub_time"] == parse_cst(FIXTURE_MESSAGE["pub_time"]) * 1000
    assert frame.fields["content"] == FIXTURE_MESSAGE["content"]


def test_the_tmc_endpoint_hands_out_messages_until_confirmed():
    sim = Simulator(seed=2, clock=FixedClock(NOW))
    pushes = sim.generate(3, ["taobao"]).pushes
    for push in pushes:
        sim.streams.publish("taobao", push.stream_key, push.message_id, push.body, push.order_id, push.kind)
    ids = {p.message_id for p in pushes}
    with TestClient(create_app(sim)) as client, client.websocket_connect("/taobao/tmc") as ws:
        ws.send_bytes(connect_bytes())
        ack = taobao_tmc.parse_frame(ws.receive_bytes())
        assert ack.kind == taobao_tmc.T_CONNECT_ACK and ack.status is None and ack.token
        got = set()
        while got != ids:
            frame = taobao_tmc.parse_frame(ws.receive_bytes())
            got.add(frame.fields["id"])
        for message_id in ids:
            ws.send_bytes(taobao_tmc.build_frame(taobao_tmc.T_SEND, token=ack.token, fields=[
                ("__kind", taobao_tmc.V_BYTE, taobao_tmc.KIND_CONFIRM), ("id", taobao_tmc.V_INT64, message_id)]))
        ws.send_bytes(taobao_tmc.build_frame(taobao_tmc.T_SEND, token=ack.token, fields=[
            ("__kind", taobao_tmc.V_BYTE, taobao_tmc.KIND_PULL)]))
        for _ in range(200):
            if sim.streams.backlog("taobao", SHOP["app_key"]) == 0:
                break
            time.sleep(0.01)
        assert sim.streams.backlog("taobao", SHOP["app_key"]) == 0
        sim.faults.set("taobao", "drop", 5)  # the platform drops its connections: this one closes
        with pytest.raises(WebSocketDisconnect):
            ws.receive_bytes()


def test_a_bad_handshake_gets_a_refusal_ack_and_the_socket_closes():
    sim = Simulator(seed=2, clock=FixedClock(NOW))
    with TestClient(create_app(sim)) as client, client.websocket_connect("/taobao/tmc") as ws:
        ws.send_bytes(connect_bytes(secret="wrong"))
        ack = taobao_tmc.parse_frame(ws.receive_bytes())
        assert (ack.kind, ack.status, ack.token) == (taobao_tmc.T_CONNECT_ACK, taobao_tmc.REFUSED_STATUS, None)
        assert ack.phrase == "invalid sign"
        with pytest.raises(WebSocketDisconnect):
            ws.receive_bytes()


def test_while_down_the_tmc_endpoint_refuses_the_upgrade():
    sim = Simulator(seed=2, clock=FixedClock(NOW))
    sim.faults.set("taobao", "down", 30)
    with TestClient(create_app(sim)) as client, pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/taobao/tmc"):
            pass
