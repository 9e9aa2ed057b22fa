"""视频号小店 channel: encrypted push auth, URL check, push parsing, token-authorised API, decode, normalization.

Encrypted inputs are the worked vector of docs/channels/wechat_channels.md, two published vectors,
or made with the simulator's sending end (written separately from the adapter's receiving end).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tenacity import wait_none

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.wechat_channels import WechatChannelsChannel
from orderhub.adapters.channels.wechat_crypto import MessageCryptoError, aes_key, decrypt_message
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, NormalizationError, SignatureError
from orderhub.domain.order import RefundStatus, Shipment
from orderhub.domain.status import Status
from orderhub.simulator import wechat_crypto as platform_crypto

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"
PLAIN_EVENT = (FIXTURES / "wechat_channels_event_order_pay.plain.json").read_bytes()
ORDER_REPLY = json.loads((FIXTURES / "wechat_channels_order_get.json").read_text(encoding="utf-8"))
NOW = 1742263962
APPID, TOKEN = "wxfakechannels0001", "fakewechattoken01"
AES_KEY_TEXT = "b3JkZXJodWItZGVtby13ZWNoYXQtY2hhbm5lbHMtayE"
ORDER_ID = "3700000000000000001"

# The worked vector (docs/channels/wechat_channels.md): the fixture's plaintext event, encrypted
# for the demo shop with the 16-byte prefix b"orderhub-vector1".
VECTOR_TIMESTAMP, VECTOR_NONCE = "1742263962", "1320562453"
VECTOR_ENCRYPT = (
    "Ze0JDedwbjOny1Y+TNX+TXW/P46+RDP695DjqE3BdPxhricKp9nngT1Ey95t0JjmPR7AiaEscFDV/ZXJPVlWTiccJ6xm19HXKm0pwv0jkDZaBkCCdce"
    "PCMBDzRfl1a0u7uEas3DPU3LScS33LtM606dFXXyCWXj8sLZzkpihybMMGm889XRqF/85wJLtI3UTNnhCd/+B5tLCmQ3+3FpcJi94nm6EZ6t3D/Mlk"
    "pmteWh2gDYWkgM0tiIIETGT9eV3NSCU5bVrab/RDRPBTbrMYuzpYp6OWEVNrtkPwpw6mudZG01O96x05iuwDRXlciMyD5Ow55IDmWcrff2miu6BAhR"
    "omM8CbBbuhQdAwvCtUyCh2yO0t5/L5fslfrOuH+5z/MSkbP6xJYv/LGB0Nllz6bwsFwW3PhBwIiVQ27Yw5Fw="
)
VECTOR_MSG_SIGNATURE = "40366d3ac3ca040f992b1a411a875916aa2141f9"
VECTOR_SIGNATURE = "8fe91fc1752a0cd951269abc42ba9cf15e3a0a1c"

SHOP = ShopConfig(
    channel="wechat_channels",
    shop_id=APPID,
    name="测试视频号小店",
    app_key=APPID,
    app_secret="fake-wechat-app-secret",
    api_base_url="http://sim.test/wechat_channels",
    extra={"token": TOKEN, "encoding_aes_key": AES_KEY_TEXT},
)


class Shops:
    """A shop directory that can list its shops, as ShopRegistry does."""

    def __init__(self, *shops: ShopConfig) -> None:
        self._shops = shops

    def all(self) -> list[ShopConfig]:
        return list(self._shops)

    def by_shop(self, channel: str, shop_id: str) -> ShopConfig | None:
        return next((s for s in self._shops if s.channel == channel and s.shop_id == shop_id), None)

    def by_app_key(self, channel: str, app_key: str) -> list[ShopConfig]:
        return [s for s in self._shops if s.channel == channel and s.app_key == app_key]


def channel(clock=lambda: NOW) -> WechatChannelsChannel:
    return WechatChannelsChannel(clock=clock, retry_wait=wait_none())


def order() -> dict:
    return copy.deepcopy(ORDER_REPLY["order"])


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def vector_push() -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps({"ToUserName": "gh_FAKE000000001", "Encrypt": VECTOR_ENCRYPT})
    query = {"signature": VECTOR_SIGNATURE, "timestamp": VECTOR_TIMESTAMP, "nonce": VECTOR_NONCE,
             "encrypt_type": "aes", "msg_signature": VECTOR_MSG_SIGNATURE}
    return body, query


def signed_push(message: bytes, *, appid: str = APPID, key: str = AES_KEY_TEXT, token: str = TOKEN) -> tuple[bytes, dict[str, str]]:
    encrypted = platform_crypto.encrypt(key, appid, message, b"0123456789abcdef")
    query = {"timestamp": "1742263962", "nonce": "77", "encrypt_type": "aes",
             "msg_signature": platform_crypto.signature(token, "1742263962", "77", encrypted)}
    return orjson.dumps({"ToUserName": "gh_x", "Encrypt": encrypted}), query


def authenticate(body: bytes, query: dict[str, str], *shops: ShopConfig):
    return channel().authenticate({"Content-Type": "application/json"}, body, Shops(*(shops or (SHOP,))), query)


def rejected(body: bytes, query: dict[str, str], *shops: ShopConfig) -> SignatureError:
    with pytest.raises(SignatureError) as err:
        authenticate(body, query, *shops)
    return err.value


# -- the message crypto ---------------------------------------------------------------------------


def test_worked_vector_decrypts_to_the_fixture_event_for_the_demo_appid():
    assert decrypt_message(aes_key(AES_KEY_TEXT), VECTOR_ENCRYPT) == (PLAIN_EVENT, APPID)


def test_published_wechatpy_vector_decrypts():
    # wechatpy/wechatpy tests/test_crypto.py (a WeCom callback; the same WXBizMsgCrypt scheme).
    key = aes_key("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR")
    echo = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
    assert decrypt_message(key, echo) == (b"5927782489442352469", "wx49f0ab532d5d035a")


@settings(max_examples=60, deadline=None)
@given(message=st.binary(max_size=300), appid=st.text(min_size=1, max_size=40), prefix=st.binary(min_size=16, max_size=16))
def test_whatever_the_platform_encrypts_decrypts_back(message, appid, prefix):
    encrypted = platform_crypto.encrypt(AES_KEY_TEXT, appid, message, prefix)
    assert decrypt_message(aes_key(AES_KEY_TEXT), encrypted) == (message, appid)


@pytest.mark.parametrize(
    "encrypted",
    ["not base64!", "", "QUJD", VECTOR_ENCRYPT[:64]],
    ids=["not-base64", "empty", "not-whole-blocks", "truncated"],
)
def test_malformed_encrypt_texts_are_refused(encrypted):
    with pytest.raises(MessageCryptoError):
        decrypt_message(aes_key(AES_KEY_TEXT), encrypted)


def test_a_wrong_key_fails_on_the_padding_check():
    other = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY"
    with pytest.raises(MessageCryptoError):
        decrypt_message(aes_key(other), VECTOR_ENCRYPT)


@pytest.mark.parametrize("key", ["short", "b3JkZXJodWItZGVtby13ZWNoYXQtY2hhbm5lbHMtay!"], ids=["length", "alphabet"])
def test_malformed_encoding_aes_keys_are_refused(key):
    with pytest.raises(MessageCryptoError):
        aes_key(key)


# -- push authentication ----------------------------------------------------------------------------


def test_worked_vector_push_authenticates_and_keeps_the_plaintext_with_its_shop():
    auth = authenticate(*vector_push())
    assert (auth.app_key, auth.shop_id) == (APPID, APPID)
    kept = orjson.loads(auth.body)
    assert (kept["appid"], kept["shop_id"]) == (APPID, APPID)
    assert kept["message"] == json.loads(PLAIN_EVENT)
    assert PLAIN_EVENT in auth.body  # the platform's bytes, kept verbatim


def test_worked_vector_push_yields_the_paid_order_at_its_create_time():
    (message,) = channel().parse_push(authenticate(*vector_push()).body)
    assert (message.shop_id, message.original_id, message.kind) == (APPID, ORDER_ID, "channels_ec_order_pay")
    assert message.event_time == at(1742263962)
    assert message.raw["order_info"]["pay_time"] == 1742263961


def test_a_one_byte_change_of_the_encrypt_text_in_the_body_is_rejected():
    body, query = vector_push()
    index = body.index(b"Ze0J")
    tampered = body[:index] + b"Y" + body[index + 1:]
    assert rejected(tampered, query).code is ErrorCode.SIGNATURE_INVALID


def test_a_one_character_change_of_the_msg_signature_is_rejected():
    body, query = vector_push()
    sig = query["msg_signature"]
    query["msg_signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert rejected(body, query).code is ErrorCode.SIGNATURE_INVALID


@pytest.mark.parametrize("name", ["timestamp", "nonce"])
def test_a_changed_timestamp_or_nonce_is_rejected(name):
    body, query = vector_push()
    query[name] = query[name] + "1"
    assert rejected(body, query).code is ErrorCode.SIGNATURE_INVALID


def test_a_changed_encrypt_text_signed_with_the_token_still_fails_to_decrypt():
    # Someone holding the token but not the EncodingAESKey can sign but not encrypt.
    sealed = bytearray(orjson.loads(vector_push()[0])["Encrypt"].encode())
    sealed[-30] = ord("A") if sealed[-30] != ord("A") else ord("B")
    encrypted = sealed.decode()
    query = {"timestamp": "1", "nonce": "2", "msg_signature": platform_crypto.signature(TOKEN, "1", "2", encrypted)}
    err = rejected(orjson.dumps({"Encrypt": encrypted}), query)
    assert (err.code, err.field) == (ErrorCode.SIGNATURE_INVALID, "Encrypt")


def test_a_message_encrypted_for_another_appid_is_rejected():
    body, query = signed_push(PLAIN_EVENT, appid="wxsomeoneelse0001")
    assert rejected(body, query).code is ErrorCode.SIGNATURE_INVALID


def test_to_user_name_is_not_signed_and_not_trusted():
    body, query = vector_push()
    auth = authenticate(body.replace(b"gh_FAKE000000001", b"gh_OTHER00000001"), query)
    assert auth.shop_id == APPID  # the shop comes from the key and the appid inside the ciphertext


def test_the_shop_whose_token_and_key_match_is_chosen_among_several():
    other_key = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY"
    other = dataclasses.replace(SHOP, shop_id="wxother", app_key="wxother", extra={"token": "t2", "encoding_aes_key": other_key})
    same_token = dataclasses.replace(other, shop_id="wxsametoken", app_key="wxsametoken", extra={**other.extra, "token": TOKEN})
    auth = authenticate(*vector_push(), other, same_token, SHOP)
    assert auth.shop_id == APPID


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda body, q: (body, {k: v for k, v in q.items() if k != "msg_signature"}), "msg_signature"),
        (lambda body, q: (body, {k: v for k, v in q.items() if k != "nonce"}), "timestamp"),
        (lambda body, q: (b'{"ToUserName":"gh_x"}', q), "Encrypt"),
        (lambda body, q: (b"not json", q), "Encrypt"),
    ],
    ids=["no-msg-signature", "no-nonce", "no-encrypt", "not-json"],
)
def test_pushes_missing_a_signed_part_are_rejected_as_missing(change, field):
    err = rejected(*change(*vector_push()))
    assert (err.code, err.field) == (ErrorCode.SIGNATURE_MISSING, field)


def test_plain_mode_pushes_are_refused():
    body, query = vector_push()
    assert rejected(body, {**query, "encrypt_type": "raw"}).code is ErrorCode.SIGNATURE_INVALID


def test_a_push_with_no_configured_shop_is_rejected_as_unknown_shop():
    unconfigured = dataclasses.replace(SHOP, extra={})
    assert rejected(*vector_push(), unconfigured).code is ErrorCode.UNKNOWN_SHOP


def test_a_directory_that_cannot_list_shops_is_a_programming_error():
    class LookupOnly:
        def by_shop(self, channel, shop_id):
            return SHOP

        def by_app_key(self, channel, app_key):
            return [SHOP]

    with pytest.raises(TypeError):
        channel().authenticate({}, *vector_push()[:1], LookupOnly(), vector_push()[1])


def test_a_signed_message_that_is_not_json_is_kept_as_text_and_quarantined():
    # wechatpy/wechatpy tests/test_crypto.py: an XML callback, signed and encrypted for wx49f0ab532d5d035a.
    encrypted = (
        "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6y"
        "dJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/T"
        "ywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5"
        "t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0="
    )
    shop = dataclasses.replace(SHOP, shop_id="wx49f0ab532d5d035a", app_key="wx49f0ab532d5d035a",
                               extra={"token": "123456", "encoding_aes_key": "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"})
    query = {"msg_signature": "74d92dfeb87ba7c714f89d98870ae5eb62dff26d", "timestamp": "1411525903", "nonce": "461056294"}
    auth = authenticate(orjson.dumps({"Encrypt": encrypted}), query, shop)
    assert "<Content><![CDATA[test]]></Content>" in orjson.loads(auth.body)["message_text"]
    with pytest.raises(EnvelopeError):
        channel().parse_push(auth.body)


# -- the callback URL check ---------------------------------------------------------------------------


def test_plain_url_check_echoes_echostr_for_the_documented_example():
    # developers.weixin.qq.com/doc/store/API/basics/message_push.html, 发起验证 (Token "AAAAA").
    shop = dataclasses.replace(SHOP, extra={"token": "AAAAA", "encoding_aes_key": AES_KEY_TEXT})
    query = {"signature": "f464b24fc39322e44b38aa78f5edd27bd1441696", "echostr": "4375120948345356249",
             "timestamp": "1714036504", "nonce": "1514711492"}
    assert channel().verify_url(query, Shops(shop)) == b"4375120948345356249"


@pytest.mark.parametrize("mangle", [lambda e: e, lambda e: e.replace("+", " ")], ids=["as-sent", "plus-decoded-as-space"])
def test_safe_mode_url_check_answers_the_decrypted_echostr(mangle):
    # wechatpy/wechatpy tests/test_crypto.py test_check_signature_should_ok.
    shop = dataclasses.replace(SHOP, shop_id="wx49f0ab532d5d035a", app_key="wx49f0ab532d5d035a",
                               extra={"token": "123456", "encoding_aes_key": "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"})
    echo = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
    query = {"msg_signature": "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96", "timestamp": "1411443780",
             "nonce": "437374425", "echostr": mangle(echo)}
    assert channel().verify_url(query, Shops(shop)) == b"5927782489442352469"
    with pytest.raises(SignatureError) as err:
        channel().verify_url({**query, "nonce": "437374424"}, Shops(shop))  # the vector's "should fail" case
    assert err.value.code is ErrorCode.SIGNATURE_INVALID


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"signature": "0" * 40, "echostr": "e", "timestamp": "1", "nonce": "2"}, ErrorCode.SIGNATURE_INVALID),
        ({"echostr": "e", "timestamp": "1", "nonce": "2"}, ErrorCode.SIGNATURE_MISSING),
        ({"signature": "0" * 40, "timestamp": "1", "nonce": "2"}, ErrorCode.SIGNATURE_MISSING),
    ],
    ids=["wrong-signature", "no-signature", "no-echostr"],
)
def test_bad_url_checks_are_refused(query, code):
    with pytest.raises(SignatureError) as err:
        channel().verify_url(query, Shops(SHOP))
    assert err.value.code is code


# -- push parsing -------------------------------------------------------------------------------------


def kept(message: dict) -> bytes:
    return orjson.dumps({"appid": APPID, "shop_id": APPID, "message": message})


def test_an_after_sale_event_names_its_order_in_the_status_update():
    message = {"ToUserName": "gh_x", "FromUserName": "o1", "CreateTime": 1742270000, "MsgType": "event",
               "Event": "channels_ec_aftersale_update",
               "finder_shop_aftersale_status_update": {"status": "MERCHANT_PROCESSING", "after_sale_order_id": "200", "order_id": ORDER_ID}}
    (parsed,) = channel().parse_push(kept(message))
    assert (parsed.original_id, parsed.kind, parsed.event_time) == (ORDER_ID, "channels_ec_aftersale_update", at(1742270000))


def test_events_that_name_no_order_yield_nothing():
    message = {"ToUserName": "gh_x", "CreateTime": 1742270000, "MsgType": "event", "Event": "product_spu_update",
               "ProductSpuUpdate": {"product_id": "1", "status": 5}}
    assert channel().parse_push(kept(message)) == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        orjson.dumps({"message": {"Event": "channels_ec_order_pay"}}),
        orjson.dumps({"shop_id": APPID, "message_text": "<xml/>"}),
        kept({"MsgType": "event", "order_info": {"order_id": 1}}),
        kept({"Event": "channels_ec_order_pay", "CreateTime": "soon", "order_info": {"order_id": 1}}),
        kept({"Event": "channels_ec_order_pay", "order_info": {"order_id": ""}}),
    ],
    ids=["not-json", "no-shop", "not-a-json-message", "no-event", "bad-create-time", "empty-order-id"],
)
def test_kept_bodies_that_are_not_a_readable_message_are_refused(body):
    with pytest.raises(EnvelopeError):
        channel().parse_push(body)


# -- normalization ------------------------------------------------------------------------------------


def test_fixture_order_becomes_the_expected_canonical_order():
    o = channel().normalize(order(), SHOP)

    assert (o.channel, o.shop_id, o.original_id) == ("wechat_channels", APPID, ORDER_ID)
    assert o.status is Status.PAID
    assert o.platform_status == {"status": 20}
    assert (o.created_at, o.paid_at, o.updated_at) == (at(1742263920), at(1742263961), at(1742263961))
    a = o.amounts
    assert (a.goods, a.discount, a.shipping, a.paid) == (14970, 1600, 0, 13370)
    assert (a.discount_shop, a.discount_platform) == (1600, 0)
    tee, bag = o.lines
    assert (tee.sku, tee.title, tee.qty, tee.unit_price, tee.paid) == ("TS-TEE01-WH-L", "测试纯棉T恤", 2, 5990, 10699)
    assert (tee.platform_sku_id, tee.platform_line_id) == ("20000000000001", "20000000000001")
    assert (tee.gift, tee.refund_status) == (False, RefundStatus.NONE)
    assert (bag.sku, bag.qty, bag.unit_price, bag.paid) == ("TS-BAG02-BE", 1, 2990, 2671)
    assert (o.address.province, o.address.city, o.address.district, o.address.detail) == ("浙江省", "杭州市", "西湖区", "测试路**号")
    assert (o.buyer.platform_buyer_id, o.buyer.name, o.buyer.phone) == ("oFAKEunionid001", "张*", "138****0000")
    assert (o.buyer_message, o.seller_remark, o.shipment) == ("请尽快发货", None, None)
    assert o.pii == {"decode": "sensitiveinfo", "address_hash": "FAKEaddresshash0001"}
    assert o.raw == ORDER_REPLY["order"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(10, Status.PENDING_PAYMENT), (12, Status.PAID), (13, Status.PAID), (17, Status.PAID), (20, Status.PAID),
     (21, Status.SHIPPED), (30, Status.SHIPPED), (100, Status.COMPLETED), (200, Status.CANCELLED), (250, Status.CLOSED)],
)
def test_status_mapping_cell_by_cell(status, expected):
    raw = order()
    raw["status"] = status
    assert channel().normalize(raw, SHOP).status is expected


@pytest.mark.parametrize("status", [11, "20", None])
def test_unknown_status_is_rejected_with_unknown_status(status):
    raw = order()
    raw["status"] = status
    with pytest.raises(NormalizationError) as err:
        channel().normalize(raw, SHOP)
    assert err.value.code in (ErrorCode.UNKNOWN_STATUS, ErrorCode.MISSING_FIELD)
    assert err.value.field == "status"


@pytest.mark.parametrize("status", [10, 250])
def test_unpaid_orders_carry_no_decode_marker(status):
    raw = order()
    raw["status"] = status
    assert channel().normalize(raw, SHOP).pii == {}


def test_the_openid_is_the_buyer_id_when_there_is_no_unionid():
    raw = order()
    raw["unionid"] = ""
    assert channel().normalize(raw, SHOP).buyer.platform_buyer_id == "oFAKEchannelsOpenid001"


def test_a_receiver_without_mask_stars_is_not_kept():
    raw = order()
    raw["order_detail"]["delivery_info"]["address_info"] |= {"user_name": "张三", "tel_number": "13800000000", "detail_info": "测试路88号"}
    o = channel().normalize(raw, SHOP)
    assert (o.buyer.name, o.buyer.phone, o.address.detail) == (None, None, None)


def test_a_non_merchant_discount_is_the_platform_share():
    raw = order()
    price = raw["order_detail"]["price_info"]
    price |= {"order_price": 12870, "discounted_price": 2100, "finder_discounted_price": 500}
    raw["order_detail"]["product_infos"][0]["real_price"] = 10199
    a = channel().normalize(raw, SHOP).amounts
    assert (a.discount, a.discount_shop, a.discount_platform, a.paid) == (2100, 1600, 500, 12870)


def test_merchant_parts_larger_than_the_discount_give_no_split():
    raw = order()
    raw["order_detail"]["price_info"]["merchant_discounted_price"] = 9999
    a = channel().normalize(raw, SHOP).amounts
    assert (a.discount, a.discount_shop, a.discount_platform) == (1600, None, None)


def test_line_paid_is_spread_by_value_when_real_prices_do_not_add_up():
    raw = order()
    for product in raw["order_detail"]["product_infos"]:
        del product["real_price"]
    tee, bag = channel().normalize(raw, SHOP).lines
    assert (tee.paid, bag.paid) == (10700, 2670)  # 13370 split 11980 : 2990, largest remainder


@pytest.mark.parametrize(
    ("counts", "expected"),
    [((0, 0), RefundStatus.NONE), ((1, 0), RefundStatus.REFUNDING), ((0, 2), RefundStatus.REFUNDED), ((1, 1), RefundStatus.REFUNDING)],
)
def test_line_refund_status_follows_the_after_sale_counts(counts, expected):
    raw = order()
    product = raw["order_detail"]["product_infos"][0]
    product["on_aftersale_sku_cnt"], product["finish_aftersale_sku_cnt"] = counts
    assert channel().normalize(raw, SHOP).lines[0].refund_status == expected


def test_the_first_parcel_is_the_shipment():
    raw = order()
    raw["status"] = 30
    raw["order_detail"]["delivery_info"]["delivery_product_info"] = [
        {"waybill_id": "ZT0001", "delivery_id": "ZTO", "delivery_name": "中通快递", "delivery_time": 1742300000}]
    assert channel().normalize(raw, SHOP).shipment == Shipment("中通快递", "ZT0001")


PRICE, FIRST_LINE = "order_detail.price_info", "order_detail.product_infos[0]"


@pytest.mark.parametrize(
    ("mangle", "code", "field"),
    [
        (lambda r: r["order_detail"]["price_info"].update(order_price=20000), ErrorCode.AMOUNTS_MISMATCH, f"{PRICE}.order_price"),
        (lambda r: r["order_detail"]["price_info"].update(product_price="149.70"), ErrorCode.INVALID_AMOUNT, f"{PRICE}.product_price"),
        (lambda r: r["order_detail"]["product_infos"][0].update(sale_price=6000), ErrorCode.AMOUNTS_MISMATCH, "amounts.goods"),
        (lambda r: r.update(create_time="2025-03-18"), ErrorCode.INVALID_TIME, "create_time"),
        (lambda r: r.pop("order_id"), ErrorCode.MISSING_FIELD, "order_id"),
        (lambda r: r["order_detail"].pop("price_info"), ErrorCode.MISSING_FIELD, "order_detail.price_info"),
        (lambda r: r["order_detail"].update(product_infos=[]), ErrorCode.MISSING_FIELD, "order_detail.product_infos"),
        (lambda r: r["order_detail"]["product_infos"][0].update(sku_cnt="2"), ErrorCode.INVALID_FIELD, f"{FIRST_LINE}.sku_cnt"),
    ],
    ids=["paid-above-total", "yuan-string", "lines-vs-goods", "time-string", "no-order-id", "no-price-info", "no-lines", "qty-string"],
)
def test_bad_payloads_fail_with_a_code_and_field(mangle, code, field):
    raw = order()
    mangle(raw)
    with pytest.raises(NormalizationError) as err:
        channel().normalize(raw, SHOP)
    assert (err.value.code, err.value.field) == (code, field)


# -- the open API over a mock transport ---------------------------------------------------------------


class FakeWechat:
    def __init__(
        self, *, replies: list | None = None, token_ttl_s: int = 7200, lists: list[dict] | None = None, token_reply: dict | None = None
    ) -> None:
        self.requests: list[httpx.Request] = []
        self.token_reply = token_reply
        self.replies = list(replies or [])
        self.lists = list(lists or [])
        self.token_ttl_s = token_ttl_s
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self.decoded = {"errcode": 0, "errmsg": "ok", "address_info": {
            "user_name": "张三", "tel_number": "13800000000", "detail_info": "测试路88号", "house_number": "3栋502室",
            "province_name": "浙江省", "city_name": "杭州市", "county_name": "西湖区", "postal_code": "", "national_code": ""}}

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/cgi-bin/token"):
            if self.token_reply is not None:
                return httpx.Response(200, json=self.token_reply)
            self.tokens_issued += 1
            token = f"token-{self.tokens_issued}"
            self.valid_tokens.add(token)
            return httpx.Response(200, json={"access_token": token, "expires_in": self.token_ttl_s})
        if self.replies:
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply if isinstance(reply, httpx.Response) else httpx.Response(200, json=reply)
        if dict(parse_qsl(request.url.query.decode())).get("access_token") not in self.valid_tokens:
            return httpx.Response(200, json={"errcode": 42001, "errmsg": "access_token expired"})
        if request.url.path.endswith("/order/list/get"):
            return httpx.Response(200, json=self.lists.pop(0))
        if request.url.path.endswith("/sensitiveinfo/decode"):
            return httpx.Response(200, json=self.decoded)
        reply = copy.deepcopy(ORDER_REPLY)
        reply["order"]["order_id"] = json.loads(request.content)["order_id"]
        return httpx.Response(200, json=reply)


def run(fake: FakeWechat, coro_factory, ch: WechatChannelsChannel | None = None):
    ch = ch or channel()

    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
            return await coro_factory(ch, http)

    return asyncio.run(main())


def test_order_get_asks_for_the_masked_order_with_a_fetched_token():
    fake = FakeWechat()
    orders = run(fake, lambda ch, http: ch.fetch_orders(http, SHOP, [ORDER_ID]))
    token_request, get_request = fake.requests
    assert token_request.method == "GET" and token_request.url.path == "/wechat_channels/cgi-bin/token"
    assert dict(parse_qsl(token_request.url.query.decode())) == {
        "grant_type": "client_credential", "appid": APPID, "secret": "fake-wechat-app-secret"}
    assert get_request.url.path == "/wechat_channels/channels/ec/order/get"
    assert dict(parse_qsl(get_request.url.query.decode())) == {"access_token": "token-1"}
    assert json.loads(get_request.content) == {"order_id": ORDER_ID, "encode_sensitive_info": True}
    assert channel().normalize(orders[ORDER_ID], SHOP).original_id == ORDER_ID


def test_the_token_is_cached_and_renewed_five_minutes_before_it_expires():
    fake = FakeWechat()
    clock = [NOW]
    ch = channel(clock=lambda: clock[0])

    async def scenario(ch, http):
        await ch.fetch_orders(http, SHOP, [ORDER_ID])
        clock[0] = NOW + 7200 - 301
        await ch.fetch_orders(http, SHOP, [ORDER_ID])
        clock[0] = NOW + 7200 - 299
        await ch.fetch_orders(http, SHOP, [ORDER_ID])

    run(fake, scenario, ch)
    assert fake.tokens_issued == 2


@pytest.mark.parametrize("code", [40001, 40014, 42001])
def test_a_refused_token_is_replaced_once_and_the_call_repeated(code):
    fake = FakeWechat()

    async def scenario(ch, http):
        await ch.fetch_orders(http, SHOP, [ORDER_ID])
        fake.replies.append({"errcode": code, "errmsg": "access_token invalid"})
        return await ch.fetch_orders(http, SHOP, [ORDER_ID])

    assert ORDER_ID in run(fake, scenario)
    assert fake.tokens_issued == 2
    assert dict(parse_qsl(fake.requests[-1].url.query.decode()))["access_token"] == "token-2"


def test_a_token_refused_twice_is_a_permanent_failure():
    bad = {"errcode": 42001, "errmsg": "access_token expired"}
    fake = FakeWechat(replies=[bad, bad])
    with pytest.raises(FetchError) as err:
        run(fake, lambda ch, http: ch.fetch_orders(http, SHOP, [ORDER_ID]))
    assert err.value.retryable is False


@pytest.mark.parametrize("code", [40013, 40125, 40001])
def test_wrong_app_credentials_at_the_token_endpoint_are_not_retried(code):
    fake = FakeWechat(token_reply={"errcode": code, "errmsg": "invalid appid or appsecret"})
    with pytest.raises(FetchError) as err:
        run(fake, lambda ch, http: ch.fetch_orders(http, SHOP, [ORDER_ID]))
    assert err.value.retryable is False
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "failure",
    [{"errcode": -1, "errmsg": "system error"}, {"errcode": 45009, "errmsg": "reach max api daily quota limit"},
     httpx.Response(503), httpx.Response(429), httpx.ReadTimeout("slow")],
    ids=["system-busy", "quota", "http-503", "http-429", "timeout"],
)
def test_transient_failures_are_retried_then_raised_as_retryable(failure):
    fake = FakeWechat(replies=[failure, failure, failure])
    with pytest.raises(FetchError) as err:
        run(fake, lambda ch, http: ch.fetch_orders(http, SHOP, [ORDER_ID]))
    assert err.value.retryable is True
    assert fake.paths().count("/wechat_channels/channels/ec/order/get") == 3


def test_a_transient_failure_followed_by_success_returns_the_order():
    fake = FakeWechat(replies=[{"errcode": -1, "errmsg": "system error"}])
    assert ORDER_ID in run(fake, lambda ch, http: ch.fetch_orders(http, SHOP, [ORDER_ID]))


def test_unknown_orders_are_left_out_of_the_result():
    fake = FakeWechat(replies=[{"errcode": 100002, "errmsg": "Not exist"}])
    assert run(fake, lambda ch, http: ch.fetch_orders(http, SHOP, ["404"])) == {}


def test_other_business_errors_are_permanent():
    fake = FakeWechat(replies=[{"errcode": 48001, "errmsg": "api unauthorized"}])
    with pytest.raises(FetchError) as err:
        run(fake, lambda ch, http: ch.fetch_orders(http, SHOP, [ORDER_ID]))
    assert err.value.retryable is False


def list_page(ids: list[str], next_key: str, has_more: bool) -> dict:
    return {"errcode": 0, "errmsg": "ok", "order_id_list": ids, "next_key": next_key, "has_more": has_more}


def test_pull_window_pages_with_next_key_then_fetches_each_order():
    fake = FakeWechat(lists=[list_page(["1", "2"], "k1", True), list_page(["3"], "k2", False)])
    start, end = at(1742263900), at(1742263970)
    found = run(fake, lambda ch, http: ch.pull_window(http, SHOP, start, end))
    assert sorted(o["order_id"] for o in found) == ["1", "2", "3"]
    bodies = [json.loads(r.content) for r in fake.requests if r.url.path.endswith("/order/list/get")]
    assert bodies == [
        {"update_time_range": {"start_time": 1742263900, "end_time": 1742263970}, "page_size": 100, "next_key": ""},
        {"update_time_range": {"start_time": 1742263900, "end_time": 1742263970}, "page_size": 100, "next_key": "k1"},
    ]


def test_pull_window_splits_long_windows_into_seven_day_queries_and_keeps_end_exclusive():
    fake = FakeWechat(lists=[list_page(["1"], "", False), list_page(["2"], "", False)])
    start, end = at(1742263900), at(1742263900 + 8 * 86400)
    run(fake, lambda ch, http: ch.pull_window(http, SHOP, start, end))
    ranges = [json.loads(r.content)["update_time_range"] for r in fake.requests if r.url.path.endswith("/order/list/get")]
    assert ranges == [{"start_time": 1742263900, "end_time": 1742263900 + 7 * 86400},
                      {"start_time": 1742263900 + 7 * 86400, "end_time": 1742263900 + 8 * 86400}]
    # The fixture order was updated at 1742263961: inside; a window ending at that second is not.
    fake = FakeWechat(lists=[list_page(["1"], "", False)])
    assert run(fake, lambda ch, http: ch.pull_window(http, SHOP, at(1742263900), at(1742263961))) == []


def test_has_more_without_a_new_next_key_is_refused():
    fake = FakeWechat(lists=[list_page(["1"], "", True)])
    with pytest.raises(FetchError) as err:
        run(fake, lambda ch, http: ch.pull_window(http, SHOP, at(1742263900), at(1742263970)))
    assert err.value.retryable is False


def test_decrypt_decodes_marked_orders_and_returns_only_the_asked_fields():
    fake = FakeWechat()
    orders = [(ORDER_ID, {"decode": "sensitiveinfo"}), ("999", {})]
    plain = run(fake, lambda ch, http: ch.decrypt(http, SHOP, orders, ("phone", "address_detail")))
    assert plain == {ORDER_ID: {"phone": "13800000000", "address_detail": "测试路88号3栋502室"}}
    (call,) = [r for r in fake.requests if r.url.path.endswith("/sensitiveinfo/decode")]
    assert call.url.path == "/wechat_channels/channels/ec/order/sensitiveinfo/decode"
    assert json.loads(call.content) == {"order_id": ORDER_ID}


def test_decrypt_leaves_out_masked_values_and_refused_orders():
    fake = FakeWechat()
    fake.decoded["address_info"]["tel_number"] = "138****0000"  # a virtual number: still masked
    plain = run(fake, lambda ch, http: ch.decrypt(http, SHOP, [(ORDER_ID, {"decode": "sensitiveinfo"})], ("phone", "name")))
    assert plain == {ORDER_ID: {"name": "张三"}}
    fake = FakeWechat(replies=[{"errcode": 101100, "errmsg": "订单状态错误"}])
    assert run(fake, lambda ch, http: ch.decrypt(http, SHOP, [(ORDER_ID, {"decode": "sensitiveinfo"})], ("phone",))) == {}
