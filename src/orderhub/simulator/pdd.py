"""拼多多 (Pinduoduo) server end: order payloads, PII ciphertexts, the signed open-API router, PMC messages.

Written independently of OrderHub's client adapter (no shared signing, framing or crypto code);
both ends are checked against the fixture vectors. The PMC WebSocket endpoint is in pdd_pmc.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request, Response

from orderhub.simulator import model as m
from orderhub.simulator import pdd_pmc, shipments
from orderhub.simulator.amounts import cst
from orderhub.simulator.pii import Vault
from orderhub.simulator.pusher import Push

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

CHANNEL = "pdd"

# SimOrder state -> (order_status 发货状态, confirm_status 成交状态, group_status 成团状态). A cancelled
# deal (buyer cancel or full refund, always before shipping here) reads 已取消 [U: see docs/channels/pdd.md].
_STATES = {
    m.UNPAID: (1, 0, 0), m.PAID: (1, 1, 1), m.SHIPPED: (2, 1, 1), m.COMPLETED: (3, 1, 1),
    m.CANCELLED: (1, 2, 1), m.CLOSED: (1, 2, 1),
}
# PDD logistics company ids (pdd.logistics.companies.get) for the scenario carriers [U: invented].
_LOGISTICS_IDS = {"shunfeng": 44, "zhongtong": 115, "yuantong": 85, "yunda": 121, "jd": 120,
                  "shentong": 1, "ems": 118, "debangkuaidi": 131}  # [U] the last three
# Message types by event; no message for CREATE (sellers do not see unpaid orders) or CLOSE.
# A paid order is cancelled through a refund the seller agrees to (仅退款), hence CANCEL's type.
MESSAGE_TYPES = {
    m.PAY: "pdd_trade_TradeConfirmed", m.SHIP: "pdd_trade_TradeSellerShip", m.COMPLETE: "pdd_trade_TradeSuccess",
    m.ADDRESS_CHANGE: "pdd_trade_TradeLogisticsAddressChanged", m.REFUND_CREATE: "pdd_refund_RefundCreated",
    m.REFUND_SUCCESS: "pdd_refund_RefundAgreeAgreement", m.CANCEL: "pdd_refund_RefundAgreeAgreement",
}
_REFUND_KINDS = (m.REFUND_CREATE, m.REFUND_SUCCESS, m.CANCEL)


# ---------------------------------------------------------------- PII shapes

def _digest64(tag: str, mall_id: str, text: str, size: int) -> str:
    return base64.b64encode(hashlib.sha256(f"{tag}:{mall_id}:{text}".encode()).digest()[:size]).decode()


@lru_cache(maxsize=16384)
def phone_cipher(mall_id: str, phone: str) -> str:
    """Phone ciphertext `$<index>$<base64>$0$$`; the index part is stable per number (search index)."""
    return f"${_digest64('pdd-idx', mall_id, phone, 9)}${_digest64('pdd-ct', mall_id, phone, 33)}$0$$"


@lru_cache(maxsize=16384)
def text_cipher(mall_id: str, text: str) -> str:
    """Name / address ciphertext `~<base64>~<index>~0~~`."""
    return f"~{_digest64('pdd-ct', mall_id, text, 33)}~{_digest64('pdd-idx', mall_id, text, 9)}~0~~"


def mask_name(name: str) -> str:
    """"林*坤" for three characters, "张*" for two: first and (from three on) last kept."""
    if len(name) <= 2:
        return name[:1] + "*" * (len(name) - 1)
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_phone(phone: str) -> str:
    """"1*********5": first and last digit kept."""
    return phone[:1] + "*" * (len(phone) - 2) + phone[-1:]


def _full_address(o: m.SimOrder) -> str:
    r, a = o.address.region, o.address
    return f"{r.province}{r.city}{r.district}{a.street}{a.detail}"


def order_ciphers(o: m.SimOrder) -> dict[str, tuple[str, int]]:
    """Ciphertext -> (plaintext, decrypt data_type) for the order as it is now.

    data_type: 5 收件人, 6 收件人手机号, 7 收件人完整地址, 8 收件人详细地址 (the official Java SDK's list).
    """
    c = o.customer
    return {
        phone_cipher(o.shop_id, c.phone): (c.phone, 6),
        text_cipher(o.shop_id, c.name): (c.name, 5),
        text_cipher(o.shop_id, o.address.detail): (o.address.detail, 8),
        text_cipher(o.shop_id, _full_address(o)): (_full_address(o), 7),
    }


def remember_pii(vault: Vault, o: m.SimOrder) -> None:
    for cipher, (plain, _) in order_ciphers(o).items():
        vault.remember(cipher, plain)


# ---------------------------------------------------------------- payload (order_info)

def _amount(fen: int) -> float:
    """PDD's money: a JSON double in yuan (13370 -> 133.7)."""
    return fen / 100


def _refund_codes(o: m.SimOrder) -> tuple[int, int]:
    """(refund_status, after_sales_status): 1/0 none, 2/2 buyer asked (待商家处理), 4/10 退款成功."""
    refunds = {line.refund for line in o.lines} - {m.NO_REFUND}
    if m.REFUNDING in refunds:
        return 2, 2
    if refunds:
        return 4, 10
    return 1, 0


def _item(line: m.SimLine) -> dict[str, Any]:
    sku = line.sku
    return {
        "goods_id": sku.pdd_goods_id, "sku_id": sku.pdd_sku_id, "goods_name": sku.product_name,
        "goods_spec": ",".join(value for _, value in sku.specs), "goods_price": _amount(line.unit_price),
        "goods_count": line.qty, "outer_id": sku.code, "outer_goods_id": sku.spu,
        "goods_img": f"https://example.invalid/img/{sku.code}.jpg",
    }


def render(o: m.SimOrder) -> dict[str, Any]:
    """The order as `order_info_get_response.order_info` / one `order_sn_list[]` entry (fixture shape)."""
    c, a = o.customer, o.address
    r = a.region
    order_status, confirm_status, group_status = _STATES[o.status]
    refund_status, after_sales_status = _refund_codes(o)
    s = o.shipment
    discount = o.discount_shop + o.discount_platform
    return {
        "order_sn": o.original_id, "order_status": order_status, "refund_status": refund_status,
        "after_sales_status": after_sales_status, "confirm_status": confirm_status, "group_status": group_status,
        "trade_type": 0, "is_lucky_flag": 1, "is_pre_sale": 0, "is_stock_out": 0,
        "created_time": cst(o.create_time), "pay_time": cst(o.pay_time), "confirm_time": cst(o.pay_time),
        "updated_at": cst(o.update_time), "last_ship_time": cst(o.pay_time + 48 * 3600) if o.pay_time else "",
        "shipping_time": cst(o.ship_time), "receive_time": cst(o.finish_time),
        "goods_amount": _amount(o.goods), "discount_amount": _amount(discount),
        "seller_discount": _amount(o.discount_shop), "platform_discount": _amount(o.discount_platform),
        "capital_free_discount": 0.0, "postage": _amount(o.post_amount), "pay_amount": _amount(o.paid),
        "order_change_amount": 0.0, "pay_type": "WEIXIN" if o.pay_type == 1 else "ALIPAY", "pay_no": o.payment_no,
        "inner_transaction_id": "", "buyer_memo": o.buyer_message, "remark": "", "remark_tag": 0, "remark_tag_name": "",
        "country": "中国", "country_id": 0, "province": r.province, "province_id": int(r.province_code),
        "city": r.city, "city_id": int(r.city_code), "town": r.district, "town_id": int(r.district_code),
        "receiver_name": text_cipher(o.shop_id, c.name), "receiver_name_mask": mask_name(c.name),
        "receiver_phone": phone_cipher(o.shop_id, c.phone), "receiver_phone_mask": mask_phone(c.phone),
        "receiver_address": text_cipher(o.shop_id, a.detail), "receiver_address_mask": f"{a.road}*号",
        "address": text_cipher(o.shop_id, _full_address(o)),
        "address_mask": f"{r.province}{r.city}{r.district}{a.road}*号",
        "tracking_number": s.tracking_no if s else "", "logistics_id": _LOGISTICS_IDS.get(s.carrier_code, 0) if s else 0,
        "shipping_type": 0, "invoice_status": 0, "risk_control_status": 0, "free_sf": 0, "return_freight_payer": 0,
        "self_contained": 0, "support_nationwide_warranty": 0, "duoduo_wholesale": 0, "only_support_replace": 0,
        "delivery_one_day": 0, "home_delivery_type": 0, "stock_out_handle_status": -1,
        "cat_id_1": 0, "cat_id_2": 0, "cat_id_3": 0, "cat_id_4": 0,
        "item_list": [_item(line) for line in o.lines if not line.gift],
        "order_tag_list": [{"name": "free_sf", "value": 0}, {"name": "self_contained", "value": 0}],
        # 赠品 are listed apart, in the item shape with price 0 [U: gift_list item fields].
        "gift_list": [_item(line) for line in o.lines if line.gift],
        "card_info_list": [], "promotion_detail_list": [], "service_fee_detail": [], "resend_delivery_list": [],
    }


# ---------------------------------------------------------------- PMC messages

def message_content(shop: dict[str, Any], o: m.SimOrder, kind: str) -> dict[str, Any]:
    """`message.content` (sent as a JSON string): trade {mall_id, tid}; refund adds the refund fields (fen, ms)."""
    content: dict[str, Any] = {"mall_id": int(shop["shop_id"]), "tid": o.original_id}
    if kind in _REFUND_KINDS:
        refund_id = o.refund_id or str(int.from_bytes(hashlib.sha256(o.original_id.encode()).digest()[:7], "big"))
        fee = m.refund_amount(o) if o.refund_id else o.paid
        content |= {"refund_id": int(refund_id), "refund_fee": fee, "bill_type": 1, "modified": o.update_time * 1000}
    return content


def build_push(shop: dict[str, Any], o: m.SimOrder, kind: str, msg_seq: str) -> Push | None:
    """The PMC message for an event: `{type, mallID, content}`; the endpoint frames it with id and sendTime."""
    message_type = MESSAGE_TYPES.get(kind)
    if message_type is None:
        return None
    content = orjson.dumps(message_content(shop, o, kind)).decode()
    body = orjson.dumps({"type": message_type, "mallID": int(shop["shop_id"]), "content": content})
    return Push(CHANNEL, o.original_id, message_type, "", {}, body, o.update_time,
                stream_key=shop["app_key"], message_id=int(msg_seq))


# ---------------------------------------------------------------- open API router

CODE_PARAMETER = 10000  # 参数错误 [U: code]
CODE_TOKEN = 10019  # access_token已过期 [C3]
CODE_SIGN = 20004  # 签名验证失败 [C3]
CODE_DECRYPT_REFUSED = 10005  # per-item refusal in data_decrypt_list [U: code and text]
TOKEN_LIFETIME_S = 86_400


def router_sign(client_secret: str, fields: dict[str, str]) -> str:
    """The router's check value: md5 over secret, sorted key+value pairs (no sign), secret; hex, upper case."""
    joined = "".join(key + fields[key] for key in sorted(fields) if key != "sign")
    return hashlib.md5((client_secret + joined + client_secret).encode("utf-8")).hexdigest().upper()


def refresh_token_for(shop: dict[str, Any]) -> str:
    """The refresh token the simulator accepts for a shop (stable, so a config can carry it)."""
    return "pddrt" + hashlib.sha256(f"{shop['app_secret']}:{shop['shop_id']}".encode()).hexdigest()[:27]


def _error(sim: Simulator, code: int, msg: str, sub_msg: str = "") -> Response:
    body = {"error_response": {"error_msg": msg, "sub_msg": sub_msg or msg, "sub_code": str(code),
                               "error_code": code, "request_id": sim.log_id()}}
    return Response(orjson.dumps(body), media_type="application/json")


def _ok(sim: Simulator, name: str, inner: bytes) -> Response:
    """`{"<name>": {<inner>, "request_id": ...}}` with `inner` the node's members as JSON bytes."""
    request_id = orjson.dumps(sim.log_id())
    return Response(b'{"' + name.encode() + b'":{' + inner + b',"request_id":' + request_id + b"}}",
                    media_type="application/json")


def _mall_shop(sim: Simulator, client_id: str, token: str) -> str | None:
    """The mall the token was issued for, if that mall authorised this app."""
    mall = sim.token_shop(CHANNEL, token)
    if mall is None:
        return None
    authorised = any(s["channel"] == CHANNEL and s["shop_id"] == mall and s["app_key"] == client_id for s in sim.shops)
    return mall if authorised else None


def make_router(sim: Simulator) -> APIRouter:
    router = APIRouter()

    @router.post("/api/router")
    async def api_router(request: Request) -> Response:
        fields = dict(request.query_params)
        fields.update(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        shop = sim.shop_by_app_key(CHANNEL, fields.get("client_id", ""))
        if shop is None:
            return _error(sim, CODE_PARAMETER, "参数错误", "client_id 不存在")
        if not hmac.compare_digest(router_sign(shop["app_secret"], fields), fields.get("sign", "").upper()):
            return _error(sim, CODE_SIGN, "签名验证失败")
        method = fields.get("type", "")
        if method == "pdd.pop.auth.token.refresh":
            return _refresh(sim, shop, fields)
        mall = _mall_shop(sim, shop["app_key"], fields.get("access_token", ""))
        if mall is None:
            return _error(sim, CODE_TOKEN, "access_token已过期")
        if method == "pdd.order.information.get":
            order = sim.get(CHANNEL, fields.get("order_sn", ""))
            if order is None or order.shop_id != mall or not order.visible:
                return _error(sim, CODE_PARAMETER, "参数错误", "订单不存在")
            return _ok(sim, "order_info_get_response", b'"order_info":' + sim.payload(order))
        if method == "pdd.order.number.list.increment.get":
            return _increment(sim, mall, fields)
        if method == "pdd.open.decrypt.batch":
            return _decrypt(sim, mall, fields)
        if method == "pdd.goods.quantity.update":
            return _quantity_update(sim, mall, fields)
        if method == "pdd.logistics.online.send":
            return _online_send(sim, mall, fields)
        return _error(sim, CODE_PARAMETER, "参数错误", f"type {method} 不存在")

    pdd_pmc.add_message_endpoint(router, sim)
    return router


_ORDER_STATUS_FILTER = {1: {m.PAID, m.CANCELLED, m.CLOSED, m.UNPAID}, 2: {m.SHIPPED}, 3: {m.COMPLETED}}


def _increment(sim: Simulator, mall: str, fields: dict[str, str]) -> Response:
    try:
        start, end = int(fields["start_updated_at"]), int(fields["end_updated_at"])
        page, page_size = int(fields.get("page", "1")), int(fields.get("page_size", "100"))
        order_status, refund_status = int(fields.get("order_status", "5")), int(fields.get("refund_status", "5"))
        lucky = int(fields.get("is_lucky_flag", "0"))
    except (KeyError, ValueError):
        return _error(sim, CODE_PARAMETER, "参数错误", "start_updated_at/end_updated_at/page/page_size 必须为整数")
    if not 0 <= end - start <= 1800:
        return _error(sim, CODE_PARAMETER, "参数错误", "查询时间跨度不能超过30分钟")
    if page < 1 or not 1 <= page_size <= 100:
        return _error(sim, CODE_PARAMETER, "参数错误", "page 从 1 开始，page_size 取值 1-100")
    if order_status not in (1, 2, 3, 5) or refund_status not in (1, 2, 3, 4, 5) or lucky not in (0, 1, 2):
        return _error(sim, CODE_PARAMETER, "参数错误", "order_status/refund_status/is_lucky_flag 取值不合法")
    _, hits = sim.search(CHANNEL, mall, start, end, 0, 1 << 30,
                         states=_ORDER_STATUS_FILTER.get(order_status))
    if refund_status != 5:
        hits = [o for o in hits if _refund_codes(o)[0] == refund_status]
    if lucky == 2:  # every simulated order is an ordinary (non-lottery) one
        hits = []
    offset = (page - 1) * page_size
    chunk = hits[offset:offset + page_size]
    has_next = offset + len(chunk) < len(hits)
    head = b'"has_next":' + (b"true" if has_next else b"false")
    if fields.get("use_has_next") != "true":  # with use_has_next the total is left out
        head += b',"total_count":' + str(len(hits)).encode()
    return _ok(sim, "order_sn_increment_get_response",
               head + b',"order_sn_list":[' + b",".join(sim.payload(o) for o in chunk) + b"]")


def _decrypt(sim: Simulator, mall: str, fields: dict[str, str]) -> Response:
    try:
        items = orjson.loads(fields.get("data_list", ""))
    except orjson.JSONDecodeError:
        return _error(sim, CODE_PARAMETER, "参数错误", "data_list 不是合法 JSON")
    if not isinstance(items, list) or not 1 <= len(items) <= 100 or not all(isinstance(i, dict) for i in items):
        return _error(sim, CODE_PARAMETER, "参数错误", "data_list 为 1-100 个 {data_tag, encrypted_data}")
    out = []
    for item in items:
        tag, cipher = str(item.get("data_tag", "")), str(item.get("encrypted_data", ""))
        order = sim.get(CHANNEL, tag)
        # Only the ciphertexts of the calling mall's own (visible) order named by data_tag decrypt.
        known = order_ciphers(order) if order is not None and order.shop_id == mall and order.visible else {}
        plain, data_type = known.get(cipher, (None, 0))
        if plain is None or sim.decrypt(cipher) != plain:
            out.append({"data_tag": tag, "encrypted_data": cipher, "decrypted_data": "", "data_type": 0,
                        "error_code": CODE_DECRYPT_REFUSED, "error_msg": "无权解密该数据",
                        "virtual_number_type": 0, "virtual_identify_number": ""})
            continue
        out.append({"data_tag": tag, "encrypted_data": cipher, "decrypted_data": plain, "data_type": data_type,
                    "error_code": 0, "error_msg": "", "virtual_number_type": 0, "virtual_identify_number": ""})
    return _ok(sim, "open_decrypt_batch_response", b'"data_decrypt_list":' + orjson.dumps(out))


def _refresh(sim: Simulator, shop: dict[str, Any], fields: dict[str, str]) -> Response:
    given = fields.get("refresh_token", "")
    owner = next((s for s in sim.shops if s["channel"] == CHANNEL and s["app_key"] == shop["app_key"]
                  and hmac.compare_digest(refresh_token_for(s), given)), None)
    if owner is None:
        return _error(sim, CODE_PARAMETER, "参数错误", "refresh_token 不存在或已过期")
    token, _ = sim.issue_token(CHANNEL, owner["shop_id"])
    now = sim.clock.now()
    data = {"access_token": token, "expires_at": now + TOKEN_LIFETIME_S, "expires_in": TOKEN_LIFETIME_S,
            "owner_id": owner["shop_id"], "owner_name": owner["name"], "refresh_token": given,
            "refresh_token_expires_at": now + 30 * TOKEN_LIFETIME_S, "refresh_token_expires_in": 30 * TOKEN_LIFETIME_S,
            "scope": ["pdd.order.information.get", "pdd.order.number.list.increment.get", "pdd.open.decrypt.batch"]}
    return _ok(sim, "pop_auth_token_refresh_response", orjson.dumps(data)[1:-1])


def _quantity_update(sim: Simulator, mall: str, fields: dict[str, str]) -> Response:
    """pdd.goods.quantity.update: goods_id + sku_id get quantity; update_type 1 (default) full, 2 incremental."""
    goods_id, sku_id, kind = fields.get("goods_id", ""), fields.get("sku_id", ""), fields.get("update_type", "1")
    try:
        quantity = int(fields["quantity"])
    except (KeyError, ValueError):
        return _error(sim, CODE_PARAMETER, "参数错误", "quantity 必填且为整数")
    if kind not in ("1", "2") or (kind == "1" and quantity < 0):
        return _error(sim, CODE_PARAMETER, "参数错误", "全量更新时 quantity 须为非负整数，update_type 为 1 或 2")
    if not sku_id or sim.listing(CHANNEL, sku_id, goods_id) is None:
        return _error(sim, CODE_PARAMETER, "参数错误", "商品或sku不存在")  # [U] code
    now = quantity if kind == "1" else sim.channel_stock(CHANNEL, mall, sku_id) + quantity
    if now < 0:
        return _error(sim, CODE_PARAMETER, "参数错误", "增量更新后库存不能小于0")
    sim.set_channel_stock(CHANNEL, mall, sku_id, now, via="pdd.goods.quantity.update")
    return _ok(sim, "goods_quantity_update_response", b'"is_success":true')


# Refusals of pdd.logistics.online.send (error_code 10000 参数错误 with these sub messages [U]).
_SEND_REFUSALS = {
    shipments.UNKNOWN: "订单不存在", shipments.CANCELLED: "订单已取消，不能发货", shipments.UNPAID: "订单未支付，不能发货",
    shipments.ALREADY: "订单已发货，不能重复发货", shipments.BAD_WAYBILL: "快递单号不合法",
    shipments.BAD_CARRIER: "快递公司不存在",
}


def _online_send(sim: Simulator, mall: str, fields: dict[str, str]) -> Response:
    """pdd.logistics.online.send: the whole order ships with one tracking_number (logistics_id: PDD's carrier number)."""
    order_sn, tracking = fields.get("order_sn", ""), fields.get("tracking_number", "")
    logistics_id = fields.get("logistics_id", "")
    by_id = {str(number): carrier for carrier, number in _LOGISTICS_IDS.items()}
    outcome = shipments.ship(sim, CHANNEL, mall, order_sn, carrier=by_id.get(logistics_id), platform_carrier=logistics_id,
                             waybill_no=tracking, line_ids=None, via="pdd.logistics.online.send")
    if outcome.result != shipments.SHIPPED:
        return _error(sim, CODE_PARAMETER, "参数错误", _SEND_REFUSALS[outcome.result])
    return _ok(sim, "logistics_online_send_response", b'"is_success":true')
