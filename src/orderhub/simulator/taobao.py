"""淘宝/天猫 (TOP) server end: trade payloads, the signed router, OAID decrypt and TMC messages."""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request, Response, WebSocket

from orderhub.simulator import model as m
from orderhub.simulator import shipments, taobao_tmc
from orderhub.simulator.amounts import cst, parse_cst, yuan
from orderhub.simulator.pii import Vault
from orderhub.simulator.pusher import Push

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

CHANNEL = "taobao"
TRADE_PUBLISHER = "12497914"  # pub_app_key of trade messages, as in the TMC fixture
_STATUS = {
    m.UNPAID: "WAIT_BUYER_PAY", m.PAID: "WAIT_SELLER_SEND_GOODS", m.SHIPPED: "WAIT_BUYER_CONFIRM_GOODS",
    m.COMPLETED: "TRADE_FINISHED", m.CANCELLED: "TRADE_CLOSED", m.CLOSED: "TRADE_CLOSED_BY_TAOBAO",
}
_REFUND = {m.NO_REFUND: "NO_REFUND", m.REFUNDING: "WAIT_SELLER_AGREE", m.REFUNDED: "SUCCESS"}
TOPICS = {
    m.CREATE: "taobao_trade_TradeCreate", m.PAY: "taobao_trade_TradeBuyerPay",
    m.SHIP: "taobao_trade_TradeSellerShip", m.COMPLETE: "taobao_trade_TradeSuccess",
    m.CLOSE: "taobao_trade_TradeClose", m.CANCEL: "taobao_trade_TradeClose",
    m.ADDRESS_CHANGE: "taobao_trade_TradeLogisticsAddressChanged",
    m.REFUND_CREATE: "taobao_refund_RefundCreated", m.REFUND_SUCCESS: "taobao_refund_RefundSuccess",
}
MAX_DECRYPT = 20
MAX_SPAN_S = 86400
SESSION_LIFETIME_S = 86400


# ---------------------------------------------------------------- buyer PII (masks and OAID)

def mask_name(name: str) -> str:
    return name[:1] + "**"


def mask_mobile(phone: str) -> str:
    return "*" * (len(phone) - 4) + phone[-4:]


def mask_nick(open_uid: str, index: int) -> str:
    return f"{open_uid[3:4].lower() or 't'}**{index % 10}"


@lru_cache(maxsize=8192)
def _oaid(shop_id: str, name: str, phone: str, place: str, detail: str) -> str:
    digest = hashlib.sha256(f"oaid|{shop_id}|{name}|{phone}|{place}|{detail}".encode()).digest()
    return "1" + base64.b32encode(digest).decode().rstrip("=")[:47]


def oaid(o: m.SimOrder) -> str:
    """Open Addressee ID: stable per (seller, receiver, address) — the same buyer at the same
    address gets the same OAID on every order of the shop, as sellers use it to merge parcels."""
    r = o.address.region
    return _oaid(o.shop_id, o.customer.name, o.customer.phone, f"{r.province}{r.city}{r.district}", o.address.detail)


def remember_pii(vault: Vault, o: m.SimOrder) -> None:
    a, c = o.address, o.customer
    receiver = {
        "shop_id": o.shop_id, "name": c.name, "mobile": c.phone, "phone": "", "state": a.region.province,
        "city": a.region.city, "district": a.region.district, "town": a.street, "address_detail": a.detail,
        "country": "",
    }
    vault.remember(oaid(o), orjson.dumps(receiver).decode())


# ---------------------------------------------------------------- payload (taobao.trade.fullinfo.get)

def _end_time(o: m.SimOrder) -> int:
    if o.status == m.COMPLETED:
        return o.finish_time
    if o.status in (m.CANCELLED, m.CLOSED):
        return o.cancel_time
    return 0


def _order(o: m.SimOrder, line: m.SimLine, status: str) -> dict[str, Any]:
    sku, s = line.sku, o.shipment
    shipped = s is not None and line.refund != m.REFUNDED
    return {
        "oid": int(line.line_id), "num_iid": int(sku.taobao_num_iid), "sku_id": sku.taobao_sku_id,
        "outer_iid": sku.spu, "outer_sku_id": sku.code, "title": sku.product_name,
        "sku_properties_name": ";".join(f"{k}:{v}" for k, v in sku.specs),
        "price": yuan(line.unit_price), "num": line.qty, "total_fee": yuan(line.goods), "discount_fee": "0.00",
        "adjust_fee": "0.00",
        # a one-line trade's sub-order payment equals the trade's (shipping included), per the TOP doc
        "payment": yuan(o.paid if len(o.lines) == 1 else line.paid),
        "divide_order_fee": yuan(line.paid), "part_mjz_discount": yuan(line.discount),
        "platform_subsidy_fee": yuan(line.discount_platform),
        "status": "TRADE_CLOSED" if line.refund == m.REFUNDED else status,
        "refund_status": _REFUND[line.refund], "refund_id": o.refund_id if line.refund != m.NO_REFUND else "",
        "pic_path": f"https://example.invalid/img/{sku.code}.jpg", "seller_type": "B",
        "cid": 50000000 + int(sku.spu.removeprefix("SPU-")), "buyer_rate": False, "seller_rate": False,
        "is_daixiao": False, "shipping_type": "express",
        "end_time": cst(line.refund_time if line.refund == m.REFUNDED else _end_time(o)),
        "consign_time": cst(o.ship_time) if shipped else "",
        "logistics_company": s.carrier_name if shipped else "", "invoice_no": s.tracking_no if shipped else "",
    }


def render(o: m.SimOrder) -> dict[str, Any]:
    """The trade as `trade_fullinfo_get_response.trade` (all fields; the router drops unasked ones)."""
    c, a = o.customer, o.address
    status = _STATUS[o.status]
    first = o.lines[0]
    return {
        "tid": int(o.original_id), "status": status, "type": "fixed", "trade_from": "WAP,WAP",
        "title": o.shop_name, "seller_nick": o.shop_name, "buyer_nick": mask_nick(c.taobao_open_uid, c.index),
        "buyer_open_uid": c.taobao_open_uid, "created": cst(o.create_time), "pay_time": cst(o.pay_time),
        "modified": cst(o.update_time), "end_time": cst(_end_time(o)), "consign_time": cst(o.ship_time),
        "total_fee": yuan(o.goods), "discount_fee": "0.00", "adjust_fee": "0.00", "post_fee": yuan(o.post_amount),
        "payment": yuan(o.paid), "received_payment": yuan(o.paid) if o.status == m.COMPLETED else "0.00",
        "commission_fee": "0.00", "point_fee": 0, "real_point_fee": 0, "buyer_obtain_point_fee": 0,
        "alipay_no": o.payment_no if o.pay_time else "", "shipping_type": "express",
        "num": sum(line.qty for line in o.lines), "num_iid": int(first.sku.taobao_num_iid),
        "price": yuan(first.unit_price),
        "receiver_name": mask_name(c.name), "receiver_mobile": mask_mobile(c.phone), "receiver_phone": "",
        "receiver_state": a.region.province, "receiver_city": a.region.city, "receiver_district": a.region.district,
        "receiver_town": a.street, "receiver_address": f"{a.road}**号", "receiver_zip": "000000",
        "receiver_country": "", "oaid": oaid(o), "seller_flag": 0,
        "has_buyer_message": bool(o.buyer_message), "buyer_message": o.buyer_message, "seller_memo": "",
        "buyer_rate": False, "seller_rate": False, "is_part_consign": False,
        "orders": {"order": [_order(o, line, status) for line in o.lines]},
    }


# ---------------------------------------------------------------- TMC messages

def message_content(o: m.SimOrder, kind: str) -> dict[str, Any]:
    """The `content` of the TMC message for event `kind` (sent as a JSON string)."""
    c = o.customer
    head = {"buyer_nick": mask_nick(c.taobao_open_uid, c.index), "seller_nick": o.shop_name}
    if kind in (m.REFUND_CREATE, m.REFUND_SUCCESS):
        refunded = [line for line in o.lines if line.refund != m.NO_REFUND]
        return {**head, "refund_id": int(o.refund_id), "tid": int(o.original_id), "oid": int(refunded[0].line_id),
                "refund_fee": yuan(m.refund_amount(o)), "refund_phase": "aftersale" if o.ship_time else "onsale",
                "bill_type": "refund_bill", "modified": cst(o.update_time)}
    return {**head, "payment": yuan(o.paid), "oid": int(o.original_id), "tid": int(o.original_id),
            "type": "guarantee_trade", "status": _STATUS[o.status], "modified": cst(o.update_time)}


def build_push(shop: dict[str, Any], o: m.SimOrder, kind: str, msg_seq: str) -> Push | None:
    topic = TOPICS.get(kind)
    if topic is None:
        return None
    message_id = int(msg_seq)
    body = orjson.dumps({
        "id": message_id, "topic": topic, "pub_app_key": TRADE_PUBLISHER, "pub_time": cst(o.update_time),
        "user_id": int(shop["shop_id"]), "user_nick": shop["name"],
        "content": orjson.dumps(message_content(o, kind)).decode(),
    })
    return Push(CHANNEL, o.original_id, topic, "", {}, body, o.update_time,
                stream_key=shop["app_key"], message_id=message_id)


# ---------------------------------------------------------------- TOP router

def request_sign(params: dict[str, str], app_secret: str, sign_method: str) -> str | None:
    joined = "".join(name + params[name] for name in sorted(params) if name != "sign")
    secret = app_secret.encode("utf-8")
    if sign_method == "md5":
        return hashlib.md5(secret + joined.encode("utf-8") + secret).hexdigest().upper()
    if sign_method == "hmac":
        return hmac.new(secret, joined.encode("utf-8"), "md5").hexdigest().upper()
    if sign_method == "hmac-sha256":
        return hmac.new(secret, joined.encode("utf-8"), "sha256").hexdigest().upper()
    return None


def refresh_token_for(shop: dict[str, Any]) -> str:
    """The refresh token the simulator accepts for a shop (derived, so nothing has to be stored)."""
    mac = hmac.new(shop["app_secret"].encode(), f"refresh|{shop['shop_id']}".encode(), "sha256").hexdigest()
    return f"{shop['shop_id']}.{mac[:32]}"


class TopError(Exception):
    def __init__(self, code: int, msg: str, sub_code: str = "", sub_msg: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.sub_code, self.sub_msg = code, msg, sub_code, sub_msg


def _error_body(sim: Simulator, err: TopError) -> Response:
    body: dict[str, Any] = {"code": err.code, "msg": err.msg}
    if err.sub_code:
        body |= {"sub_code": err.sub_code, "sub_msg": err.sub_msg}
    body["request_id"] = sim.log_id()
    return Response(orjson.dumps({"error_response": body}), media_type="application/json")


def _ok(sim: Simulator, key: str, inner: bytes) -> Response:
    request_id = orjson.dumps(sim.log_id())
    return Response(b'{"' + key.encode() + b'":{' + inner + b',"request_id":' + request_id + b"}}",
                    media_type="application/json")


def make_router(sim: Simulator) -> APIRouter:
    router = APIRouter()

    @router.post("/router/rest")
    async def rest(request: Request) -> Response:
        params = dict(request.query_params)
        params.update(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        try:
            shop = _authenticate(sim, params)
            return _dispatch(sim, shop, params)
        except TopError as err:
            return _error_body(sim, err)

    @router.websocket("/tmc")
    async def tmc(websocket: WebSocket) -> None:
        await taobao_tmc.serve(sim, websocket)

    return router


def _authenticate(sim: Simulator, params: dict[str, str]) -> dict[str, Any]:
    """The shop the call acts for, after the checks TOP makes in its order (codes 21-34)."""
    if not params.get("app_key"):
        raise TopError(28, "Missing app key")
    app_shop = sim.shop_by_app_key(CHANNEL, params["app_key"])
    if app_shop is None:
        raise TopError(29, "Invalid app Key")
    if not params.get("method"):
        raise TopError(21, "Missing method")
    if not params.get("timestamp"):
        raise TopError(30, "Missing timestamp")
    try:
        parse_cst(params["timestamp"])
    except ValueError:
        raise TopError(31, "Invalid timestamp") from None
    if params.get("v") != "2.0":
        raise TopError(34, "Unsupported version")
    if not params.get("sign"):
        raise TopError(24, "Missing signature")
    expected = request_sign(params, app_shop["app_secret"], params.get("sign_method", "md5"))
    if expected is None or not hmac.compare_digest(expected, params["sign"].upper()):
        raise TopError(25, "Invalid signature")
    if params["method"] == "taobao.top.auth.token.refresh":
        return app_shop
    if not params.get("session"):
        raise TopError(26, "Missing session")
    shop_id = sim.token_shop(CHANNEL, params["session"])
    shop = next((s for s in sim.shops if s["channel"] == CHANNEL and s["shop_id"] == shop_id
                 and s["app_key"] == params["app_key"]), None)
    if shop is None:
        raise TopError(27, "Invalid session", "invalid-sessionkey", "SessionKey非法")
    return shop


def _dispatch(sim: Simulator, shop: dict[str, Any], params: dict[str, str]) -> Response:
    method = params["method"]
    if method == "taobao.trade.fullinfo.get":
        return _fullinfo(sim, shop, params)
    if method == "taobao.trades.sold.increment.get":
        return _increment(sim, shop, params)
    if method == "taobao.top.oaid.decrypt":
        return _decrypt(sim, shop, params)
    if method == "taobao.top.auth.token.refresh":
        return _refresh(sim, shop, params)
    if method == "taobao.item.quantity.update":
        return _quantity_update(sim, shop, params)
    if method == "taobao.logistics.offline.send":
        return _offline_send(sim, shop, params)
    raise TopError(22, "Invalid method")


def _fields(params: dict[str, str]) -> set[str]:
    fields = {f.strip() for f in params.get("fields", "").split(",") if f.strip()}
    if not fields:
        raise TopError(40, "Missing required arguments:fields")
    return fields


def _trade_json(sim: Simulator, o: m.SimOrder, fields: set[str]) -> bytes:
    trade = orjson.loads(sim.payload(o))
    return orjson.dumps({key: value for key, value in trade.items() if key in fields})


def _fullinfo(sim: Simulator, shop: dict[str, Any], params: dict[str, str]) -> Response:
    fields = _fields(params)
    order = sim.get(CHANNEL, params.get("tid", ""))
    if order is None or order.shop_id != shop["shop_id"]:
        raise TopError(15, "Remote service error", "isv.trade-not-exist", "交易不存在")
    return _ok(sim, "trade_fullinfo_get_response", b'"trade":' + _trade_json(sim, order, fields))


def _increment(sim: Simulator, shop: dict[str, Any], params: dict[str, str]) -> Response:
    fields = _fields(params)
    try:
        start, end = parse_cst(params["start_modified"]), parse_cst(params["end_modified"])
        page_no, page_size = int(params.get("page_no", "1")), int(params.get("page_size", "40"))
    except (KeyError, ValueError):
        raise TopError(41, "Invalid arguments", "isv.invalid-parameter", "start_modified/end_modified/page 参数不合法") from None
    if end < start or end - start > MAX_SPAN_S:
        raise TopError(41, "Invalid arguments", "isv.invalid-parameter:time-span", "修改时间跨度不能大于一天")
    if page_no < 1 or not 1 <= page_size <= 100:
        raise TopError(41, "Invalid arguments", "isv.invalid-parameter:page", "page_no 从 1 开始，page_size 取值 1-100")
    total, orders = sim.search(CHANNEL, shop["shop_id"], start, end, (page_no - 1) * page_size, page_size, descending=True)
    has_next = page_no * page_size < total
    head: dict[str, Any] = {"has_next": has_next}
    if params.get("use_has_next") != "true":  # with use_has_next the count is left out (TOP doc)
        head["total_results"] = total
    inner = orjson.dumps(head)[1:-1]
    if orders:  # TOP leaves empty lists out
        inner += b',"trades":{"trade":[' + b",".join(_trade_json(sim, o, fields) for o in orders) + b"]}"
    return _ok(sim, "trades_sold_increment_get_response", inner)


def _decrypt(sim: Simulator, shop: dict[str, Any], params: dict[str, str]) -> Response:
    try:
        queries = orjson.loads(params.get("query_list", ""))
    except orjson.JSONDecodeError:
        raise TopError(41, "Invalid arguments", "isv.invalid-parameter:query_list", "query_list 不是合法 JSON") from None
    if not isinstance(queries, list) or not queries or len(queries) > MAX_DECRYPT:
        raise TopError(41, "Invalid arguments", "isv.invalid-parameter:query_list", f"query_list 为 1-{MAX_DECRYPT} 个")
    receivers = []
    for query in queries:
        if not isinstance(query, dict):
            raise TopError(41, "Invalid arguments", "isv.invalid-parameter:query_list", "query_list 元素须为对象")
        oaid_value, tid = str(query.get("oaid", "")), str(query.get("tid", ""))
        order = sim.get(CHANNEL, tid)
        plain = sim.decrypt(oaid_value)
        receiver = orjson.loads(plain) if plain else {}
        owner = receiver.pop("shop_id", None)
        # Only the seller the receiver gave their address to may read it, for one of its own trades.
        if order is None or order.shop_id != shop["shop_id"] or owner != shop["shop_id"]:
            raise TopError(15, "Remote service error", "isv.oaid-decrypt-forbidden", "无权解密该OAID")
        receivers.append({"oaid": oaid_value, "tid": tid, **receiver, "matched": oaid_value == oaid(order)})
    return _ok(sim, "top_oaid_decrypt_response", b'"receiver_list":{"receiver":' + orjson.dumps(receivers) + b"}")


def _refresh(sim: Simulator, shop: dict[str, Any], params: dict[str, str]) -> Response:
    given = params.get("refresh_token", "")
    owner = next((s for s in sim.shops if s["channel"] == CHANNEL and s["app_key"] == shop["app_key"]
                  and hmac.compare_digest(refresh_token_for(s), given)), None)
    if owner is None:
        raise TopError(15, "Remote service error", "isv.refresh-token-invalid", "refresh_token 无效或已过期")
    session, _ = sim.issue_token(CHANNEL, owner["shop_id"])
    result = {
        "access_token": session, "refresh_token": given, "expires_in": SESSION_LIFETIME_S,
        "re_expires_in": 30 * SESSION_LIFETIME_S, "token_type": "Bearer", "taobao_user_id": owner["shop_id"],
        "taobao_user_nick": owner["name"], "expire_time": (sim.clock.now() + SESSION_LIFETIME_S) * 1000,
    }
    return _ok(sim, "top_auth_token_refresh_response", b'"token_result":' + orjson.dumps(orjson.dumps(result).decode()))


def _quantity_update(sim: Simulator, shop: dict[str, Any], params: dict[str, str]) -> Response:
    """taobao.item.quantity.update: num_iid + sku_id get quantity; type 1 (default) full, 2 incremental."""
    num_iid, sku_id, kind = params.get("num_iid", ""), params.get("sku_id", ""), params.get("type", "1")
    try:
        quantity = int(params["quantity"])
    except (KeyError, ValueError):
        raise TopError(40, "Missing required arguments:quantity") from None
    if kind not in ("1", "2") or (kind == "1" and quantity < 0):
        raise TopError(41, "Invalid arguments", "isv.invalid-parameter:quantity", "全量更新时 quantity 须为非负整数，type 为 1 或 2")
    if not sku_id or sim.listing(CHANNEL, sku_id, num_iid) is None:
        raise TopError(15, "Remote service error", "isv.item-not-exist", "商品或SKU不存在")
    now = quantity if kind == "1" else sim.channel_stock(CHANNEL, shop["shop_id"], sku_id) + quantity
    if now < 0:
        raise TopError(15, "Remote service error", "isv.item-quantity-invalid", "增量更新后库存不能小于0")
    sim.set_channel_stock(CHANNEL, shop["shop_id"], sku_id, now, via="taobao.item.quantity.update")
    item = {"num_iid": int(num_iid), "num": now, "modified": cst(sim.clock.now()),
            "skus": {"sku": [{"sku_id": int(sku_id), "quantity": now, "modified": cst(sim.clock.now())}]}}
    return _ok(sim, "item_quantity_update_response", b'"item":' + orjson.dumps(item))


# taobao.logistics.offline.send company_code (taobao.logistics.companies.get) -> the simulator's
# carrier [U: DBKD and JD as integrators use them]; refusals as sub codes of this simulator's own [U].
_COMPANIES = {"SF": "shunfeng", "ZTO": "zhongtong", "YTO": "yuantong", "YUNDA": "yunda", "STO": "shentong",
              "EMS": "ems", "JD": "jd", "DBKD": "debangkuaidi"}
_SEND_REFUSALS = {
    shipments.UNKNOWN: ("isv.trade-not-exist", "交易不存在"),
    shipments.CANCELLED: ("isv.logistics-offline-service-error:B01", "交易已关闭，不能发货"),
    shipments.UNPAID: ("isv.logistics-offline-service-error:B02", "买家未付款，不能发货"),
    shipments.ALREADY: ("isv.logistics-offline-service-error:B04", "订单已发货，不能重复发货"),
    shipments.BAD_WAYBILL: ("isv.logistics-offline-service-error:S01", "运单号不符合规则"),
    shipments.BAD_CARRIER: ("isv.logistics-offline-service-error:B27", "物流公司不存在"),
    shipments.BAD_LINES: ("isv.logistics-offline-service-error:B05", "子订单不属于该交易"),
}


def _offline_send(sim: Simulator, shop: dict[str, Any], params: dict[str, str]) -> Response:
    """taobao.logistics.offline.send: tid (every sub-order), or sub_tid (comma-separated oids) with is_split=1."""
    tid, out_sid, company = params.get("tid", ""), params.get("out_sid", ""), params.get("company_code", "")
    if not tid or not out_sid or not company:
        raise TopError(40, "Missing required arguments:tid,out_sid,company_code")
    sub_tid = [oid for oid in params.get("sub_tid", "").split(",") if oid]
    if sub_tid and params.get("is_split") != "1":
        raise TopError(41, "Invalid arguments", "isv.invalid-parameter:is_split", "拆单发货时 is_split 须为 1")
    outcome = shipments.ship(sim, CHANNEL, shop["shop_id"], tid, carrier=_COMPANIES.get(company), platform_carrier=company,
                             waybill_no=out_sid, line_ids=sub_tid or None, via="taobao.logistics.offline.send")
    if outcome.result != shipments.SHIPPED:
        raise TopError(15, "Remote service error", *_SEND_REFUSALS[outcome.result])
    return _ok(sim, "logistics_offline_send_response", b'"shipping":{"is_success":true}')
