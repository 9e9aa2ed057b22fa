"""The simulated 拼多多: payloads in the fixture's shape, PMC messages, the signed router, decrypt, the PMC socket."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from orderhub.demo.shops import DEMO_SHOPS, demo_shop
from orderhub.simulator import Simulator
from orderhub.simulator import model as m
from orderhub.simulator import pdd, pdd_pmc
from orderhub.simulator.app import create_app
from orderhub.simulator.clock import FixedClock

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"
FIXTURE_ORDER = json.loads((FIXTURES / "pdd_order_information.json").read_text(encoding="utf-8"))[
    "order_info_get_response"]["order_info"]
VECTOR = json.loads((FIXTURES / "SIGNATURES.json").read_text(encoding="utf-8"))["pdd websocket connect"]
NOW = 1742263920 + 30 * 86400
SHOP = demo_shop("pdd")
OTHER_MALL = {"channel": "pdd", "shop_id": "100000002", "name": "拼多多二号店", "app_key": "fakeclientid0002",
              "app_secret": "another-fake-secret", "extra": {"access_token": "fake-pdd-access-token-0002"}}


def sign(secret: str, fields: dict[str, str]) -> str:
    """Independent router signature (FORMATS.md / docs/channels/pdd.md)."""
    text = secret + "".join(k + fields[k] for k in sorted(fields)) + secret
    return hashlib.md5(text.encode()).hexdigest().upper()


def form(method: str, shop: dict[str, Any] = SHOP, token: str | None = None, **params: Any) -> dict[str, str]:
    fields = {"type": method, "client_id": shop["app_key"], "timestamp": str(NOW), "data_type": "JSON", "version": "V1",
              **{k: str(v) for k, v in params.items()}}
    fields["access_token"] = token if token is not None else shop["extra"]["access_token"]
    fields["sign"] = sign(shop["app_secret"], fields)
    return fields


def ws_path(client_id: str = SHOP["app_key"], secret: str = SHOP["app_secret"], timestamp: int | None = None) -> str:
    timestamp = timestamp if timestamp is not None else int(time.time() * 1000)
    digest = hashlib.md5(f"{client_id}{timestamp}{secret}".encode()).hexdigest()
    return f"/pdd/message/{client_id}/{timestamp}/{quote(base64.b64encode(digest.encode()).decode(), safe='')}"


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=5, clock=FixedClock(NOW), shops=[*DEMO_SHOPS, OTHER_MALL])


@pytest.fixture
def client(sim: Simulator):
    with TestClient(create_app(sim)) as test_client:
        yield test_client


def orders(sim: Simulator, n: int = 60) -> list[m.SimOrder]:
    return sim.generate(n, ["pdd"]).orders


def post(client: TestClient, fields: dict[str, str]) -> dict[str, Any]:
    response = client.post("/pdd/api/router", data=fields)
    assert response.status_code == 200
    return response.json()


# -- payloads ----------------------------------------------------------------------------------------


def kind_of(value: Any) -> type:
    return float if isinstance(value, float) else type(value)


def test_rendered_orders_have_the_fixture_fields_with_the_fixture_types(sim):
    item_types = {key: kind_of(value) for key, value in FIXTURE_ORDER["item_list"][0].items()}
    for order in orders(sim):
        payload = sim.render(order)
        assert set(payload) == set(FIXTURE_ORDER)
        for key, value in FIXTURE_ORDER.items():
            assert kind_of(payload[key]) is kind_of(value), key
        for item in payload["item_list"] + payload["gift_list"]:
            assert {key: kind_of(value) for key, value in item.items()} == item_types


def test_amounts_are_yuan_doubles_that_add_up_like_the_platforms(sim):
    for order in orders(sim, 200):
        p = sim.render(order)
        fen = {key: round(p[key] * 100) for key in ("goods_amount", "discount_amount", "seller_discount",
                                                  "platform_discount", "postage", "pay_amount")}
        assert fen["goods_amount"] - fen["discount_amount"] + fen["postage"] == fen["pay_amount"] == order.paid
        assert fen["discount_amount"] == fen["seller_discount"] + fen["platform_discount"]
        items = sum(round(i["goods_price"] * 100) * i["goods_count"] for i in p["item_list"])
        assert items == fen["goods_amount"] == order.goods
        assert {i["sku_id"] for i in p["item_list"] + p["gift_list"]} == {line.sku.pdd_sku_id for line in order.lines}


def test_statuses_and_times_follow_the_order(sim):
    seen = set()
    for order in orders(sim, 300):
        p = sim.render(order)
        seen.add(order.status)
        expected = {m.PAID: (1, 1), m.SHIPPED: (2, 1), m.COMPLETED: (3, 1), m.CANCELLED: (1, 2)}[order.status]
        assert (p["order_status"], p["confirm_status"]) == expected
        assert p["pay_time"] and p["updated_at"] == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(order.update_time + 8 * 3600))
        if order.status == m.SHIPPED:
            assert p["tracking_number"] == order.shipment.tracking_no and p["shipping_time"]
    assert {m.PAID, m.SHIPPED, m.COMPLETED, m.CANCELLED} <= seen  # pdd orders are all paid: never CLOSED


def test_pii_is_ciphertext_in_the_platform_shapes_with_masks_and_the_vault_knows_the_plaintext(sim):
    for order in orders(sim, 20):
        p, c = sim.render(order), order.customer
        assert re.fullmatch(r"\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+\$0\$\$", p["receiver_phone"])
        for key in ("receiver_name", "receiver_address", "address"):
            assert re.fullmatch(r"~[A-Za-z0-9+/=]+~[A-Za-z0-9+/=]+~0~~", p[key])
        assert c.phone not in json.dumps(p, ensure_ascii=False) and c.name not in json.dumps(p, ensure_ascii=False)
        assert p["receiver_phone_mask"] == c.phone[0] + "*" * 9 + c.phone[-1]
        assert p["receiver_name_mask"][0] == c.name[0] and "*" in p["receiver_name_mask"]
        assert sim.decrypt(p["receiver_phone"]) == c.phone
        assert sim.decrypt(p["receiver_name"]) == c.name
        assert sim.decrypt(p["receiver_address"]) == order.address.detail


def test_masks_match_the_documented_examples():
    assert pdd.mask_name("林志坤") == "林*坤" and pdd.mask_name("张三") == "张*"
    assert pdd.mask_phone("13800000005") == "1*********5"


# -- PMC messages -----------------------------------------------------------------------------------------


def test_each_paid_event_gives_one_pmc_message_and_creation_gives_none(sim):
    result = sim.generate(100, ["pdd"])
    assert result.pushes
    for push in result.pushes:
        body = json.loads(push.body)
        content = json.loads(body["content"])
        assert (push.stream_key, push.path, push.headers) == (SHOP["app_key"], "", {})
        assert push.kind == body["type"] in set(pdd.MESSAGE_TYPES.values())
        assert body["mallID"] == content["mall_id"] == int(SHOP["shop_id"])
        assert content["tid"] == push.order_id
        if body["type"].startswith("pdd_refund_"):
            assert {"refund_id", "refund_fee", "modified"} <= set(content)
    order = result.orders[0]
    assert pdd.build_push(SHOP, order, m.CREATE, "7400000000000000001") is None
    push = pdd.build_push(SHOP, order, m.PAY, "7400000000000000001")
    assert push.message_id == 7400000000000000001 and push.send_at == order.update_time
    assert push.kind == "pdd_trade_TradeConfirmed"


# -- router ----------------------------------------------------------------------------------------------------


def test_a_signed_call_returns_the_order_and_a_one_byte_change_is_refused(sim, client):
    order = orders(sim, 5)[0]
    reply = post(client, form("pdd.order.information.get", order_sn=order.original_id))
    assert reply["order_info_get_response"]["order_info"] == sim.render(order)
    assert reply["order_info_get_response"]["request_id"]
    tampered = form("pdd.order.information.get", order_sn=order.original_id)
    tampered["order_sn"] = order.original_id[:-1] + ("0" if order.original_id[-1] != "0" else "1")
    error = post(client, tampered)["error_response"]
    assert (error["error_code"], error["error_msg"]) == (20004, "签名验证失败")
    assert set(error) == {"error_code", "error_msg", "sub_code", "sub_msg", "request_id"}


def test_the_router_refuses_bad_tokens_strangers_and_unknown_orders(sim, client):
    order = orders(sim, 5)[0]
    assert post(client, form("pdd.order.information.get", token="nope", order_sn=order.original_id))[
        "error_response"]["error_code"] == 10019
    # another mall's token, signed correctly by its own app, does not see this mall's orders
    reply = post(client, form("pdd.order.information.get", shop=OTHER_MALL, order_sn=order.original_id))
    assert reply["error_response"]["sub_msg"] == "订单不存在"
    assert post(client, form("pdd.order.information.get", order_sn="250101-000"))["error_response"]["sub_msg"] == "订单不存在"
    stranger = dict(form("pdd.order.information.get", order_sn=order.original_id), client_id="unknown")
    assert post(client, stranger)["error_response"]["error_code"] == 10000
    sim.revoke_tokens("pdd")
    assert post(client, form("pdd.order.information.get", order_sn=order.original_id))["error_response"]["error_code"] == 10019


def test_an_unpaid_order_is_not_visible_to_the_seller(sim, client):
    plan = sim.plan("pdd")
    sim.apply(plan.order, plan.events[0])  # created, not paid
    reply = post(client, form("pdd.order.information.get", order_sn=plan.order.original_id))
    assert reply["error_response"]["sub_msg"] == "订单不存在"


def test_the_increment_api_pages_with_has_next_and_refuses_spans_over_30_minutes(sim, client):
    generated = sim.generate(150, ["pdd"], mix={"spread_s": 600}).orders
    start = min(o.update_time for o in generated)
    found, page = [], 1
    while True:
        reply = post(client, form("pdd.order.number.list.increment.get", is_lucky_flag=0, order_status=5,
                                  refund_status=5, start_updated_at=start, end_updated_at=start + 1800,
                                  page=page, page_size=40, use_has_next="true"))["order_sn_increment_get_response"]
        assert "total_count" not in reply
        found += [o["order_sn"] for o in reply["order_sn_list"]]
        if not reply["has_next"]:
            break
        page += 1
    in_span = {o.original_id for o in generated if start <= o.update_time <= start + 1800}
    assert sorted(found) == sorted(in_span) and page > 1
    too_long = post(client, form("pdd.order.number.list.increment.get", start_updated_at=start,
                                 end_updated_at=start + 1801, page=1, page_size=10))
    assert too_long["error_response"]["error_code"] == 10000
    too_big = post(client, form("pdd.order.number.list.increment.get", start_updated_at=start,
                                end_updated_at=start + 60, page=1, page_size=101))
    assert "page_size" in too_big["error_response"]["sub_msg"]
    shipped = post(client, form("pdd.order.number.list.increment.get", order_status=2, start_updated_at=start,
                                end_updated_at=start + 1800, page=1, page_size=100))["order_sn_increment_get_response"]
    assert all(o["order_status"] == 2 for o in shipped["order_sn_list"]) and "total_count" in shipped


def test_decrypt_answers_the_malls_own_ciphertexts_and_refuses_others(sim, client):
    order = orders(sim, 5)[0]
    p = sim.render(order)
    items = [{"data_tag": order.original_id, "encrypted_data": p[key]}
             for key in ("receiver_phone", "receiver_name", "receiver_address", "address")]
    reply = post(client, form("pdd.open.decrypt.batch", data_list=json.dumps(items)))
    results = reply["open_decrypt_batch_response"]["data_decrypt_list"]
    assert [(r["decrypted_data"], r["data_type"], r["error_code"]) for r in results] == [
        (order.customer.phone, 6, 0), (order.customer.name, 5, 0), (order.address.detail, 8, 0),
        (sim.decrypt(p["address"]), 7, 0)]
    other = post(client, form("pdd.open.decrypt.batch", shop=OTHER_MALL, data_list=json.dumps(items[:1])))
    (refused,) = other["open_decrypt_batch_response"]["data_decrypt_list"]
    assert refused["decrypted_data"] == "" and refused["error_code"] != 0
    wrong_tag = [{"data_tag": orders(sim, 3)[1].original_id, "encrypted_data": p["receiver_phone"]}]
    (refused,) = post(client, form("pdd.open.decrypt.batch", data_list=json.dumps(wrong_tag)))[
        "open_decrypt_batch_response"]["data_decrypt_list"]
    assert refused["error_code"] != 0
    assert post(client, form("pdd.open.decrypt.batch", token="nope", data_list=json.dumps(items)))[
        "error_response"]["error_code"] == 10019
    too_many = post(client, form("pdd.open.decrypt.batch", data_list=json.dumps(items * 26)))
    assert too_many["error_response"]["error_code"] == 10000


def test_a_refresh_token_brings_a_new_access_token_after_a_revoke(sim, client):
    order = orders(sim, 3)[0]
    sim.revoke_tokens("pdd")
    fields = form("pdd.pop.auth.token.refresh", refresh_token=pdd.refresh_token_for(SHOP))
    del fields["access_token"]
    fields["sign"] = sign(SHOP["app_secret"], {k: v for k, v in fields.items() if k != "sign"})
    refreshed = post(client, fields)["pop_auth_token_refresh_response"]
    assert refreshed["owner_id"] == SHOP["shop_id"] and refreshed["expires_in"] > 0
    reply = post(client, form("pdd.order.information.get", token=refreshed["access_token"], order_sn=order.original_id))
    assert reply["order_info_get_response"]["order_info"]["order_sn"] == order.original_id
    bad = form("pdd.pop.auth.token.refresh", refresh_token="pddrt-wrong")
    assert post(client, bad)["error_response"]["error_code"] == 10000


# -- PMC socket -------------------------------------------------------------------------------------------------


def test_the_connect_signature_reproduces_the_signatures_vector():
    client_id, timestamp, encoded = VECTOR["url"].rsplit("/", 3)[1:]
    assert pdd_pmc.expected_signature(client_id, timestamp, VECTOR["client_secret (fake)"]) == unquote(encoded)


def publish(sim: Simulator, n: int) -> list[int]:
    pushes = sim.generate(n, ["pdd"]).pushes
    for push in pushes:
        sim.streams.publish("pdd", push.stream_key, push.message_id, push.body, push.order_id, push.kind)
    return sorted({push.message_id for push in pushes})


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_signed_connection_gets_common_frames_and_each_ack_confirms_its_message(sim, client):
    ids = publish(sim, 5)
    with client.websocket_connect(ws_path()) as ws:
        frames = [json.loads(ws.receive_text()) for _ in ids]
        assert sorted(f["id"] for f in frames) == ids
        for frame in frames:
            assert frame["commandType"] == "Common" and isinstance(frame["sendTime"], int)
            assert set(frame["message"]) == {"type", "mallID", "content"}
            ws.send_text(json.dumps({"id": frame["id"], "commandType": "Ack", "time": 1, "sendTime": frame["sendTime"],
                                     "type": frame["message"]["type"], "mallID": frame["message"]["mallID"]}))
        ws.send_text(json.dumps({"id": 1, "commandType": "HeartBeat", "time": 1}))
        assert json.loads(ws.receive_text())["commandType"] == "HeartBeat"
        wait_for(lambda: sim.streams.backlog("pdd", SHOP["app_key"]) == 0)


def test_unacknowledged_messages_go_out_again_on_the_next_connection(sim, client):
    ids = publish(sim, 3)
    with client.websocket_connect(ws_path()) as ws:
        [ws.receive_text() for _ in ids]  # received, never acknowledged
    with client.websocket_connect(ws_path()) as ws:
        again = sorted(json.loads(ws.receive_text())["id"] for _ in ids)
    assert again == ids


@pytest.mark.parametrize(
    "path",
    [
        ws_path(secret=SHOP["app_secret"] + "x"),  # wrong secret
        ws_path(timestamp=int(time.time() * 1000) - 10 * 60 * 1000),  # stale, though correctly signed
        ws_path(client_id="unknown"),
    ],
    ids=["wrong_secret", "stale", "unknown_client"],  # stable ids: the paths carry the time (parallel runs collect alike)
)
def test_bad_or_stale_handshakes_are_refused(client, path):
    with pytest.raises(WebSocketDenialResponse) as info:
        with client.websocket_connect(path):
            pass
    assert info.value.status_code == 401


def test_a_one_byte_change_of_the_signed_timestamp_is_refused(client):
    good = ws_path()
    prefix, timestamp, encoded = good.rsplit("/", 2)
    changed = f"{prefix}/{int(timestamp) + 1}/{encoded}"
    with pytest.raises(WebSocketDenialResponse) as info:
        with client.websocket_connect(changed):
            pass
    assert info.value.status_code == 401


def test_down_refuses_connections_and_drop_closes_open_ones(sim, client):
    with client.websocket_connect(ws_path()) as ws:
        sim.faults.set("pdd", "drop", 5)
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()
    with client.websocket_connect(ws_path()):  # drop only ends the connections open at the time
        pass
    sim.faults.set("pdd", "down", 5)
    with pytest.raises(WebSocketDenialResponse) as info:
        with client.websocket_connect(ws_path()):
            pass
    assert info.value.status_code == 503
