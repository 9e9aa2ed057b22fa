"""The simulated 视频号小店: payloads shaped like the fixture, encrypted pushes, tokens, order and decode APIs.

Pushes are checked here by decrypting them by hand (hashlib + cryptography), independently of both
the simulator's sending end and OrderHub's receiving end.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from fastapi.testclient import TestClient

from orderhub.demo.shops import DEMO_SHOPS, demo_shop
from orderhub.simulator import Simulator, create_app
from orderhub.simulator import model as m
from orderhub.simulator import wechat_channels as wx
from orderhub.simulator import wechat_crypto
from orderhub.simulator.clock import FixedClock

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"
PLAIN_EVENT = (FIXTURES / "wechat_channels_event_order_pay.plain.json").read_bytes()
FIXTURE_ORDER = json.loads((FIXTURES / "wechat_channels_order_get.json").read_text(encoding="utf-8"))["order"]
NOW = 1742263920 + 30 * 86400
SHOP = demo_shop("wechat_channels")
TOKEN, KEY_TEXT, APPID = SHOP["extra"]["token"], SHOP["extra"]["encoding_aes_key"], SHOP["app_key"]
SECOND = {"channel": "wechat_channels", "shop_id": "wxfakechannels0002", "name": "第二家视频号小店",
          "app_key": "wxfakechannels0002", "app_secret": "second-secret",
          "extra": {"token": "secondtoken", "encoding_aes_key": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY"}}
BASE = "/wechat_channels"


def open_by_hand(key_text: str, encrypted: str) -> tuple[bytes, bytes]:
    key = base64.b64decode(key_text + "=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
    plain = plain[: -plain[-1]]
    size = int.from_bytes(plain[16:20], "big")
    return plain[20 : 20 + size], plain[20 + size :]


def sha1_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


@pytest.fixture(scope="module")
def world():
    sim = Simulator(seed=5, clock=FixedClock(NOW), shops=[*DEMO_SHOPS, SECOND])
    generated = sim.generate(300, channels=["wechat_channels"])
    with TestClient(create_app(sim)) as client:
        yield sim, client, generated


def token_for(client: TestClient, shop: dict = SHOP) -> str:
    reply = client.get(f"{BASE}/cgi-bin/token", params={"grant_type": "client_credential", "appid": shop["app_key"],
                                                         "secret": shop["app_secret"]}).json()
    assert reply["expires_in"] == 7200
    return reply["access_token"]


def call(client: TestClient, path: str, body: dict, token: str | None) -> dict:
    params = {"access_token": token} if token is not None else {}
    return client.post(f"{BASE}/channels/ec/order/{path}", params=params, json=body).json()


# ------------------------------------------------------------------ crypto vectors


def test_the_worked_vector_is_reproduced():
    encrypted = wechat_crypto.encrypt(KEY_TEXT, APPID, PLAIN_EVENT, b"orderhub-vector1")
    assert encrypted == (
        "Ze0JDedwbjOny1Y+TNX+TXW/P46+RDP695DjqE3BdPxhricKp9nngT1Ey95t0JjmPR7AiaEscFDV/ZXJPVlWTiccJ6xm19HXKm0pwv0jkDZaBkCCdce"
        "PCMBDzRfl1a0u7uEas3DPU3LScS33LtM606dFXXyCWXj8sLZzkpihybMMGm889XRqF/85wJLtI3UTNnhCd/+B5tLCmQ3+3FpcJi94nm6EZ6t3D/Mlk"
        "pmteWh2gDYWkgM0tiIIETGT9eV3NSCU5bVrab/RDRPBTbrMYuzpYp6OWEVNrtkPwpw6mudZG01O96x05iuwDRXlciMyD5Ow55IDmWcrff2miu6BAhR"
        "omM8CbBbuhQdAwvCtUyCh2yO0t5/L5fslfrOuH+5z/MSkbP6xJYv/LGB0Nllz6bwsFwW3PhBwIiVQ27Yw5Fw="
    )
    assert wechat_crypto.signature(TOKEN, "1742263962", "1320562453") == "8fe91fc1752a0cd951269abc42ba9cf15e3a0a1c"
    assert wechat_crypto.signature(TOKEN, "1742263962", "1320562453", encrypted) == "40366d3ac3ca040f992b1a411a875916aa2141f9"


def test_the_published_wechatpy_encryption_vector_is_reproduced():
    # wechatpy/wechatpy tests/test_crypto.py test_encrypt_message (random prefix "1234567890123456").
    reply = ("<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n"
             "<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUserName>\n"
             "<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>")
    encrypted = wechat_crypto.encrypt("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", "wx49f0ab532d5d035a",
                                      reply.encode(), b"1234567890123456")
    assert encrypted.startswith("9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk")
    assert encrypted.endswith("WeK2XeFYFMNMpatF9XiKzHo3")
    assert wechat_crypto.signature("123456", "1411525903", "461056294", encrypted) == "407518b7649e86ef23978113f92d27afa9296533"


def test_the_documented_plain_url_check_signature_is_reproduced():
    # developers.weixin.qq.com/doc/store/API/basics/message_push.html (Token "AAAAA").
    assert wechat_crypto.signature("AAAAA", "1714036504", "1514711492") == "f464b24fc39322e44b38aa78f5edd27bd1441696"


@pytest.mark.parametrize("size", [0, 1, 11, 12, 43, 44, 100])
def test_padding_always_fills_whole_32_byte_blocks_with_1_to_32_bytes(size):
    padded = wechat_crypto.pkcs7_32(b"x" * size)
    assert len(padded) % 32 == 0 and 1 <= padded[-1] <= 32 and padded[-padded[-1]:] == bytes([padded[-1]]) * padded[-1]


# ------------------------------------------------------------------ payloads


def shape(value):
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def test_the_rendered_order_has_the_fixtures_fields_and_types(world):
    sim, _, generated = world
    paid = next(o for o in generated.orders if o.status == m.PAID and not o.shipment)
    assert shape(sim.render(paid)) == shape(FIXTURE_ORDER)


def test_payload_amounts_add_up_and_the_receiver_is_masked(world):
    sim, _, generated = world
    for o in generated.orders:
        order = sim.render(o)
        price, products = order["order_detail"]["price_info"], order["order_detail"]["product_infos"]
        assert price["product_price"] == sum(p["sale_price"] * p["sku_cnt"] for p in products)
        assert price["order_price"] == price["product_price"] - price["discounted_price"] + price["freight"]
        assert sum(p["real_price"] for p in products) == price["order_price"] - price["freight"]
        address = order["order_detail"]["delivery_info"]["address_info"]
        assert "*" in address["user_name"] and "****" in address["tel_number"] and "**" in address["detail_info"]
        assert o.customer.phone not in orjson.dumps(order).decode()


def test_statuses_follow_the_order(world):
    sim, _, generated = world
    expected = {m.UNPAID: 10, m.PAID: 20, m.SHIPPED: 30, m.COMPLETED: 100, m.CANCELLED: 200, m.CLOSED: 250}
    assert {sim.render(o)["status"] for o in generated.orders} <= set(expected.values())
    assert all(sim.render(o)["status"] == expected[o.status] for o in generated.orders)


# ------------------------------------------------------------------ pushes


def test_every_push_is_signed_and_encrypted_for_the_shop(world):
    _, _, generated = world
    assert generated.pushes
    for push in generated.pushes:
        url = urlsplit(push.path)
        query = dict(parse_qsl(url.query))
        assert url.path == "/api/v1/webhooks/wechat_channels" and push.headers == {"Content-Type": "application/json"}
        assert query["encrypt_type"] == "aes"
        assert query["signature"] == sha1_sorted(TOKEN, query["timestamp"], query["nonce"])
        body = orjson.loads(push.body)
        assert set(body) == {"ToUserName", "Encrypt"}
        assert query["msg_signature"] == sha1_sorted(TOKEN, query["timestamp"], query["nonce"], body["Encrypt"])
        message, appid = open_by_hand(KEY_TEXT, body["Encrypt"])
        assert appid == APPID.encode()
        event = orjson.loads(message)
        assert event["Event"] == push.kind and event["ToUserName"] == body["ToUserName"]
        held = event.get("order_info") or event["finder_shop_aftersale_status_update"]
        assert str(held["order_id"]) == push.order_id


def test_events_are_named_as_the_platform_names_them():
    sim = Simulator(seed=9, clock=FixedClock(NOW))
    order = sim.generate(1, channels=["wechat_channels"]).orders[0]
    names = {kind: wx.push_message(SHOP, order, kind)["Event"] for kind in wx.EVENTS}
    assert names[m.CREATE] == "channels_ec_order_new" and names[m.PAY] == "channels_ec_order_pay"
    assert names[m.SHIP] == "channels_ec_order_deliver" and names[m.COMPLETE] == "channels_ec_order_confirm"
    assert names[m.CANCEL] == names[m.CLOSE] == "channels_ec_order_cancel"
    assert names[m.REFUND_CREATE] == names[m.REFUND_SUCCESS] == "channels_ec_aftersale_update"
    paid = wx.push_message(SHOP, order, m.PAY)
    assert set(paid) == set(json.loads(PLAIN_EVENT)) and paid["order_info"]["pay_time"] == order.pay_time


# ------------------------------------------------------------------ tokens


@pytest.mark.parametrize(
    ("params", "code"),
    [({"grant_type": "password", "appid": APPID, "secret": SHOP["app_secret"]}, 40002),
     ({"grant_type": "client_credential", "appid": "wxnobody", "secret": SHOP["app_secret"]}, 40013),
     ({"grant_type": "client_credential", "appid": APPID, "secret": "wrong"}, 40125)],
    ids=["grant-type", "appid", "secret"],
)
def test_the_token_endpoint_refuses_bad_credentials(world, params, code):
    _, client, _ = world
    assert client.get(f"{BASE}/cgi-bin/token", params=params).json()["errcode"] == code


def test_tokens_expire_after_7200_seconds_and_unknown_ones_are_invalid():
    sim = Simulator(seed=1, clock=FixedClock(NOW))
    order = sim.generate(1, channels=["wechat_channels"]).orders[0]
    with TestClient(create_app(sim)) as client:
        token = token_for(client)
        assert call(client, "get", {"order_id": order.original_id}, token)["errcode"] == 0
        sim.clock.advance(7200)
        assert call(client, "get", {"order_id": order.original_id}, token)["errcode"] == 42001
        assert call(client, "get", {"order_id": order.original_id}, "made-up")["errcode"] == 40001
        assert call(client, "get", {"order_id": order.original_id}, None)["errcode"] == 41001


def test_a_new_token_leaves_the_old_one_five_minutes_and_revoking_expires_all():
    sim = Simulator(seed=1, clock=FixedClock(NOW))
    order = sim.generate(1, channels=["wechat_channels"]).orders[0]
    with TestClient(create_app(sim)) as client:
        old = token_for(client)
        new = token_for(client)
        sim.clock.advance(299)
        assert call(client, "get", {"order_id": order.original_id}, old)["errcode"] == 0
        sim.clock.advance(1)
        assert call(client, "get", {"order_id": order.original_id}, old)["errcode"] == 42001
        assert call(client, "get", {"order_id": order.original_id}, new)["errcode"] == 0
        assert client.post("/_sim/tokens/wechat_channels/revoke").json()["revoked"] >= 1
        assert call(client, "get", {"order_id": order.original_id}, new)["errcode"] == 42001


# ------------------------------------------------------------------ order and decode APIs


def test_order_get_is_masked_unless_told_otherwise(world):
    sim, client, generated = world
    o = generated.orders[0]
    token = token_for(client)
    masked = call(client, "get", {"order_id": o.original_id, "encode_sensitive_info": True}, token)
    assert masked["errcode"] == 0 and masked["order"] == sim.render(o)
    plain = call(client, "get", {"order_id": o.original_id}, token)["order"]
    address = plain["order_detail"]["delivery_info"]["address_info"]
    assert (address["user_name"], address["tel_number"], address["detail_info"]) == (o.customer.name, o.customer.phone, o.address.detail)


def test_unknown_orders_and_other_shops_orders_do_not_exist(world):
    _, client, generated = world
    assert call(client, "get", {"order_id": "1"}, token_for(client))["errcode"] == 100002
    other = token_for(client, SECOND)
    assert call(client, "get", {"order_id": generated.orders[0].original_id}, other)["errcode"] == 100002
    assert call(client, "sensitiveinfo/decode", {"order_id": generated.orders[0].original_id}, other)["errcode"] == 100002


def test_the_list_pages_through_a_window_by_next_key(world):
    sim, client, generated = world
    token = token_for(client)
    start = min(o.update_time for o in generated.orders)
    end = start + 7 * 86400
    expected = {o.original_id for o in generated.orders if start <= o.update_time <= end}
    seen, next_key, pages = [], "", 0
    while True:
        reply = call(client, "list/get", {"update_time_range": {"start_time": start, "end_time": end},
                                          "page_size": 100, "next_key": next_key}, token)
        assert reply["errcode"] == 0
        seen += reply["order_id_list"]
        pages += 1
        if not reply["has_more"]:
            break
        next_key = reply["next_key"]
    assert sorted(seen) == sorted(expected) and pages > 1


@pytest.mark.parametrize(
    "body",
    [{"page_size": 10},
     {"update_time_range": {"start_time": 0, "end_time": 7 * 86400 + 1}},
     {"update_time_range": {"start_time": 0, "end_time": 10}, "page_size": 101},
     {"update_time_range": {"start_time": "a", "end_time": 10}}],
    ids=["no-range", "over-7-days", "page-too-big", "bad-time"],
)
def test_the_list_refuses_bad_requests(world, body):
    _, client, _ = world
    assert call(client, "list/get", body, token_for(client))["errcode"] == 40097


def test_decode_gives_the_receiver_of_paid_orders_only(world):
    _, client, generated = world
    token = token_for(client)
    paid = next(o for o in generated.orders if o.pay_time)
    reply = call(client, "sensitiveinfo/decode", {"order_id": paid.original_id}, token)
    assert reply["errcode"] == 0
    address = reply["address_info"]
    receiver = (address["user_name"], address["tel_number"], address["detail_info"])
    assert receiver == (paid.customer.name, paid.customer.phone, paid.address.detail)
    unpaid = next(o for o in generated.orders if not o.pay_time)
    assert call(client, "sensitiveinfo/decode", {"order_id": unpaid.original_id}, token)["errcode"] == 101100
    assert call(client, "sensitiveinfo/decode", {"order_id": paid.original_id}, "made-up")["errcode"] == 40001


def test_an_outage_answers_every_call_with_503(world):
    sim, client, generated = world
    sim.faults.set("wechat_channels", "down", 60)
    try:
        response = client.post(f"{BASE}/channels/ec/order/get", params={"access_token": "x"}, json={"order_id": "1"})
        assert response.status_code == 503
    finally:
        sim.faults.clear("wechat_channels")
