"""有赞 (Youzan cloud) server end: trade payloads, access tokens, endpoints and pushes."""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request, Response

from orderhub.simulator import model as m
from orderhub.simulator import pii, shipments
from orderhub.simulator.amounts import cst, parse_cst, yuan
from orderhub.simulator.pusher import WEBHOOK_PATHS, Push

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

CHANNEL = "youzan"
_STATUS = {
    m.UNPAID: ("WAIT_BUYER_PAY", "待付款"), m.PAID: ("WAIT_SELLER_SEND_GOODS", "待发货"),
    m.SHIPPED: ("WAIT_BUYER_CONFIRM_GOODS", "已发货"), m.COMPLETED: ("TRADE_SUCCESS", "已完成"),
    m.CANCELLED: ("TRADE_CLOSED", "已关闭"), m.CLOSED: ("TRADE_CLOSED", "已关闭"),
}
TYPES = {m.CREATE: "trade_TradeCreate", m.PAY: "trade_TradePaid", m.SHIP: "trade_TradeSellerShip",
         m.COMPLETE: "trade_TradeSuccess", m.CLOSE: "trade_TradeClose", m.CANCEL: "trade_TradeClose",
         m.REFUND_CREATE: "trade_refund_BuyerCreated", m.REFUND_SUCCESS: "trade_refund_RefundSuccess"}
_PAY_TYPES = {1: (10, "WEIXIN_DAIXIAO"), 2: (2, "ALIPAY")}  # [U] beyond the fixture's WEIXIN_DAIXIAO


def _refund_state(o: m.SimOrder) -> int:
    """order_info.refund_state: 0 none, 1/2 partial refunding/refunded, 11/12 full [U]."""
    states = {line.refund for line in o.lines} - {m.NO_REFUND}
    if not states:
        return 0
    base = 10 if o.refund_full else 0
    return base + (1 if m.REFUNDING in states else 2)


def _close_type(o: m.SimOrder) -> int:
    if o.status == m.CLOSED:
        return 1  # 过期关闭
    if o.status == m.CANCELLED:
        return 2 if o.refund_full else 4  # 退款关闭 / 买家取消 [U]
    return 0


def _uuid(seed: int) -> str:
    return str(uuid.UUID(int=seed % (1 << 128), version=4))


def remember_pii(vault: pii.Vault, o: m.SimOrder) -> None:
    c, a = o.customer, o.address
    vault.remember(pii.youzan(c.phone), c.phone)
    vault.remember(pii.youzan(c.name), c.name)
    vault.remember(pii.youzan(a.street + a.detail), a.street + a.detail)


def render(o: m.SimOrder) -> dict[str, Any]:
    """The trade as youzan.trade.get `data` (also one trades.sold.get `full_order_info_list[]`)."""
    c, a = o.customer, o.address
    status, status_str = _STATUS[o.status]
    pay_type, pay_type_str = _PAY_TYPES[o.pay_type]
    kdt = int(o.shop_id)
    full = {
        "order_info": {
            "tid": o.original_id, "status": status, "status_str": status_str, "type": 0,
            "created": cst(o.create_time), "pay_time": cst(o.pay_time), "update_time": cst(o.update_time),
            "expired_time": cst(o.create_time + 3600), "consign_time": cst(o.ship_time), "confirm_time": "",
            "success_time": cst(o.finish_time), "pay_type": pay_type, "pay_type_str": pay_type_str,
            "team_type": 0, "close_type": _close_type(o), "refund_state": _refund_state(o), "express_type": 0,
            "shop_name": o.shop_name, "node_kdt_id": kdt, "root_kdt_id": kdt, "is_retail_order": False,
            "offline_id": 0, "order_tags": {}, "order_extra": {},
        },
        "orders": [{
            "oid": line.line_id, "item_id": int(line.sku.youzan_item_id), "sku_id": int(line.sku.youzan_sku_id),
            "outer_item_id": line.sku.spu, "outer_sku_id": line.sku.code, "title": line.sku.product_name,
            "num": line.qty, "price": yuan(line.unit_price), "total_fee": yuan(line.goods),
            "payment": yuan(line.paid), "item_type": 0, "is_present": line.gift, "buyer_messages": "",
            "goods_cost_price": "0.00", "pic_path": f"https://example.invalid/img/{line.sku.code}.jpg",
            "sku_properties_name": orjson.dumps([{"k": k, "v": v} for k, v in line.sku.specs]).decode(),
        } for line in o.lines],
        "pay_info": {
            "total_fee": yuan(o.goods), "post_fee": yuan(o.post_amount), "payment": yuan(o.paid),
            "outer_transactions": [o.payment_no] if o.pay_time else [],
            "transaction": [f"yz{o.original_id[1:]}"] if o.pay_time else [], "phase_payments": [],
        },
        "address_info": {
            "receiver_name": pii.youzan(c.name), "receiver_tel": pii.youzan(c.phone),
            "delivery_province": a.region.province, "delivery_city": a.region.city,
            "delivery_district": a.region.district, "delivery_address": pii.youzan(a.street + a.detail),
            "delivery_postal_code": "", "self_fetch_info": "",
            "address_extra": orjson.dumps({"areaCode": a.region.district_code}).decode(),
            "delivery_start_time": "", "delivery_end_time": "",
        },
        "buyer_info": {
            "yz_open_id": c.youzan_open_id, "buyer_phone": pii.youzan(c.phone), "fans_type": 1, "fans_id": 0,
            "fans_nickname": pii.youzan(c.name), "outer_user_id": "o" + c.youzan_open_id[2:],
        },
        "remark_info": {"buyer_message": o.buyer_message},
        "child_info": {"child_orders": []},
        "source_info": {"is_offline_order": False, "order_mark": "", "book_key": _uuid(o.extra["book_key"]),
                        "biz_source": ""},
    }
    return {"full_order_info": full, "order_promotion": _promotion(o), "refund_order": _refunds(o),
            "delivery_order": _deliveries(o)}


def _promotion(o: m.SimOrder) -> dict[str, Any]:
    if not o.discount_shop:
        return {}
    return {"order": [{"promotion_type": "coupon", "promotion_title": "店铺优惠券", "discount_fee": yuan(o.discount_shop)}],
            "item": [], "adjust_fee": "0.00"}  # [U] shape


def _refunds(o: m.SimOrder) -> list[dict[str, Any]]:
    lines = [line for line in o.lines if line.refund != m.NO_REFUND]
    if not lines:
        return []
    done = all(line.refund == m.REFUNDED for line in lines)
    return [{"refund_id": o.refund_id, "oids": [line.line_id for line in lines], "refund_fee": yuan(m.refund_amount(o)),
             "refund_state": "SUCCESS" if done else "WAIT_SELLER_AGREE", "modified": cst(lines[0].refund_time)}]  # [U]


def _deliveries(o: m.SimOrder) -> list[dict[str, Any]]:
    if o.shipment is None:
        return []
    s = o.shipment
    return [{"express_state": 1, "express_type": 0, "oids": [{"oid": line.line_id} for line in o.lines],
             "dists": [{"express_info": {"express_name": s.carrier_name, "express_no": s.tracking_no}}]}]  # [U]


# ---------------------------------------------------------------- pushes

def _msg(o: m.SimOrder, kind: str) -> str:
    payload: dict[str, Any] = {"tid": o.original_id, "status": _STATUS[o.status][0], "update_time": cst(o.update_time)}
    if kind in (m.REFUND_CREATE, m.REFUND_SUCCESS):
        payload["refund_id"] = o.refund_id
        payload["oids"] = ",".join(line.line_id for line in o.lines if line.refund != m.NO_REFUND)
    return quote(orjson.dumps(payload).decode(), safe="")


def sign_push(client_id: str, body: bytes, client_secret: str) -> str:
    return hashlib.md5(client_id.encode() + body + client_secret.encode()).hexdigest()


def build_push(shop: dict[str, Any], o: m.SimOrder, kind: str, msg_seq: str) -> Push | None:
    event_type = TYPES.get(kind)
    if event_type is None:
        return None
    client_id, secret = shop["app_key"], shop["app_secret"]
    msg = _msg(o, kind)
    fields = {
        "client_id": client_id, "id": o.original_id, "kdt_id": int(o.shop_id), "kdt_name": o.shop_name, "mode": 1,
        "msg": msg, "msg_id": _uuid(o.extra["msg_uuid_salt"] * 1_000_003 + int(msg_seq)),
        "root_kdt_id": int(o.shop_id), "sendCount": 0,
        "sign": hashlib.md5((client_id + msg + secret).encode()).hexdigest(),  # legacy in-body sign
        "status": _STATUS[o.status][0], "test": False, "type": event_type, "version": o.update_time,
    }

    def signed(send_count: int) -> tuple[dict[str, str], bytes]:
        body = orjson.dumps({**fields, "sendCount": send_count})
        headers = {"Content-Type": "application/json", "Client-Id": client_id, "Event-Type": event_type,
                   "Event-Sign": sign_push(client_id, body, secret)}
        return headers, body

    headers, body = signed(0)
    return Push(CHANNEL, o.original_id, event_type, WEBHOOK_PATHS[CHANNEL], headers, body, o.update_time, signed)


# ---------------------------------------------------------------- open API endpoints

def _ok(data: bytes) -> Response:
    return Response(b'{"success":true,"code":200,"message":"successful","data":' + data + b"}",
                    media_type="application/json")


def _error(code: int, message: str) -> Response:
    return Response(orjson.dumps({"success": False, "code": code, "message": message}), media_type="application/json")


def make_router(sim: Simulator) -> APIRouter:
    router = APIRouter()

    @router.post("/auth/token")
    async def token(request: Request) -> Response:
        try:
            req = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(4000, "请求体不是合法 JSON")
        shop = sim.shop_by_app_key(CHANNEL, str(req.get("client_id", "")))
        if shop is None or req.get("client_secret") != shop["app_secret"]:
            return _error(4001, "client_id 或 client_secret 错误")  # [U] code
        if req.get("authorize_type") != "silent" or str(req.get("grant_id", "")) != shop["shop_id"]:
            return _error(4002, "grant_id 无效或未授权")  # [U] code
        access_token, _ = sim.issue_token(CHANNEL, shop["shop_id"])
        expires_ms = (sim.clock.now() + 7 * 86400) * 1000
        return _ok(orjson.dumps({"access_token": access_token, "expires": expires_ms, "scope": "trade item user"}))

    @router.post("/api/{api}/{version}")
    async def call(api: str, version: str, request: Request) -> Response:
        shop_id = sim.token_shop(CHANNEL, request.query_params.get("access_token", ""))
        if shop_id is None:
            return _error(4203, "access_token不存在")
        try:
            body = await request.body()
            params = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            return _error(4000, "请求体不是合法 JSON")
        if api == "youzan.trade.get":
            order = sim.get(CHANNEL, str(params.get("tid", "")))
            if order is None or order.shop_id != shop_id:
                return _error(101305, "订单不存在")  # [U] code
            return _ok(sim.payload(order))
        if api == "youzan.trades.sold.get":
            return _sold_get(sim, shop_id, params)
        if api == "youzan.item.quantity.update":
            return _quantity_update(sim, shop_id, params)
        if api == "youzan.logistics.online.confirm":
            return _online_confirm(sim, shop_id, params)
        return _error(4004, f"api {api}/{version} 不存在")  # [U] code

    return router


def _sold_get(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    try:
        page_no, page_size = int(params.get("page_no", 1)), int(params.get("page_size", 20))
        start = parse_cst(params["start_update"]) if params.get("start_update") else 0
        end = parse_cst(params["end_update"]) if params.get("end_update") else 2**62
    except (TypeError, ValueError):
        return _error(4000, "参数错误：page_no/page_size 为整数，时间格式 yyyy-MM-dd HH:mm:ss")
    if page_no < 1 or not 1 <= page_size <= 100:
        return _error(4000, "参数错误：page_no 从 1 开始，page_size 取值 1-100")
    status = params.get("status")
    states = {k for k, (name, _) in _STATUS.items() if name == status} if status else None
    total, orders = sim.search(CHANNEL, shop_id, start, end, (page_no - 1) * page_size, page_size, states=states)
    head = b'{"total_results":' + str(total).encode() + b',"full_order_info_list":['
    return _ok(head + b",".join(sim.payload(o) for o in orders) + b"]}")


def _quantity_update(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    """youzan.item.quantity.update: item_id + sku_id get quantity; type 0 (default) full, 1 incremental."""
    item_id, sku_id, quantity, kind = params.get("item_id"), params.get("sku_id"), params.get("quantity"), params.get("type", 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (item_id, sku_id, quantity)) or kind not in (0, 1):
        return _error(4000, "参数错误：item_id/sku_id/quantity 为整数，type 为 0（全量）或 1（增量）")
    if sim.listing(CHANNEL, str(sku_id), str(item_id)) is None:
        return _error(141500101, "商品或规格不存在")  # [U] code
    now = quantity if kind == 0 else sim.channel_stock(CHANNEL, shop_id, str(sku_id)) + quantity
    if now < 0:
        return _error(4000, "参数错误：库存不能小于0")
    sim.set_channel_stock(CHANNEL, shop_id, str(sku_id), now, via="youzan.item.quantity.update")
    return _ok(b'{"is_success":true}')


# out_stype (物流公司编号, youzan.logistics.express.get) -> the simulator's carrier [U: every number].
_EXPRESS = {"7": "shunfeng", "3": "zhongtong", "2": "yuantong", "4": "yunda", "1": "shentong", "11": "ems",
            "138": "jd", "146": "debangkuaidi"}
_CONFIRM_REFUSALS = {  # [U] codes and words
    shipments.UNKNOWN: (101305, "订单不存在"), shipments.CANCELLED: (101306, "订单已关闭，不能发货"),
    shipments.UNPAID: (101307, "订单未付款，不能发货"), shipments.ALREADY: (101308, "订单已发货，请勿重复发货"),
    shipments.BAD_WAYBILL: (101309, "快递单号格式不正确"), shipments.BAD_CARRIER: (101310, "物流公司编号不存在"),
    shipments.BAD_LINES: (101311, "交易明细编号不属于该订单"),
}


def _online_confirm(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    """youzan.logistics.online.confirm: tid with out_stype / out_sid; oids (comma-separated) ship part of it."""
    tid, out_sid, out_stype = str(params.get("tid") or ""), str(params.get("out_sid") or ""), str(params.get("out_stype") or "")
    if not tid or (str(params.get("is_no_express") or "0") != "1" and not (out_sid and out_stype)):
        return _error(4000, "参数错误：tid 必填，需要物流时 out_stype 与 out_sid 必填")
    oids = [oid for oid in str(params.get("oids") or "").split(",") if oid]
    outcome = shipments.ship(sim, CHANNEL, shop_id, tid, carrier=_EXPRESS.get(out_stype), platform_carrier=out_stype,
                             waybill_no=out_sid, line_ids=oids or None, via="youzan.logistics.online.confirm")
    if outcome.result != shipments.SHIPPED:
        return _error(*_CONFIRM_REFUSALS[outcome.result])
    return _ok(b'{"is_success":true}')
