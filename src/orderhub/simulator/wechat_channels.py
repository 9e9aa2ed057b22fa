"""视频号小店 / 微信小店 server end: order payloads, access tokens, order and decode APIs, encrypted pushes.

Shapes follow FORMATS.md §5b and the fixtures; docs/channels/wechat_channels.md lists the [U] details.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request, Response

from orderhub.simulator import model as m
from orderhub.simulator import shipments, wechat_crypto
from orderhub.simulator.pii import Vault, mask_name
from orderhub.simulator.pusher import WEBHOOK_PATHS, Push

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

CHANNEL = "wechat_channels"
_STATUS = {m.UNPAID: 10, m.PAID: 20, m.SHIPPED: 30, m.COMPLETED: 100, m.CANCELLED: 200, m.CLOSED: 250}
AFTERSALE_EVENT = "channels_ec_aftersale_update"
EVENTS = {
    m.CREATE: "channels_ec_order_new", m.PAY: "channels_ec_order_pay", m.CANCEL: "channels_ec_order_cancel",
    m.CLOSE: "channels_ec_order_cancel", m.SHIP: "channels_ec_order_deliver", m.COMPLETE: "channels_ec_order_confirm",
    m.ADDRESS_CHANGE: "channels_ec_order_ext_info_update",  # [U] which event an address change sends
    m.REFUND_CREATE: AFTERSALE_EVENT, m.REFUND_SUCCESS: AFTERSALE_EVENT,
}
_AFTERSALE_STATUS = {m.REFUND_CREATE: "MERCHANT_PROCESSING", m.REFUND_SUCCESS: "MERCHANT_REFUND_SUCCESS"}
_DELIVERY_IDS = {"shunfeng": "SF", "zhongtong": "ZTO", "yuantong": "YTO", "yunda": "YD", "jd": "JD",
                 "shentong": "STO", "ems": "EMS", "debangkuaidi": "DBL"}  # [U]
TOKEN_TTL = 7200
TOKEN_OVERLAP = 300  # an earlier token stays valid 5 minutes after a new one is issued
MAX_RANGE = 7 * 86400
PAGE_MAX = 100


# ---------------------------------------------------------------- payload (channels/ec/order/get `order`)

def _mask_phone(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:]


def _hash_code(o: m.SimOrder) -> str:
    """address_info.hash_code: changes whenever the receiver or the address does."""
    c, a = o.customer, o.address
    text = f"{c.name}|{c.phone}|{a.region.district_code}|{a.street}|{a.detail}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _address(o: m.SimOrder, masked: bool) -> dict[str, Any]:
    c, a = o.customer, o.address
    return {
        "user_name": mask_name(c.name) if masked else c.name, "postal_code": "",
        "province_name": a.region.province, "city_name": a.region.city, "county_name": a.region.district,
        "detail_info": f"{a.road}**号" if masked else a.detail,
        "tel_number": _mask_phone(c.phone) if masked else c.phone, "house_number": "",
        "use_tel_number": 0, "hash_code": _hash_code(o),
    }


def _product(line: m.SimLine) -> dict[str, Any]:
    sku = line.sku
    return {
        "product_id": sku.wechat_product_id, "sku_id": sku.wechat_sku_id, "title": sku.product_name,
        "sku_cnt": line.qty, "sale_price": line.unit_price, "market_price": sku.price + 1000,
        "real_price": line.paid, "estimate_price": line.paid, "is_change_price": False, "change_price": 0,
        "is_discounted": line.discount > 0, "merchant_discounted_price": line.discount_shop,
        # The simulator's platform coupons stand in as the non-merchant discount [U].
        "finder_discounted_price": line.discount_platform, "sku_code": sku.code, "out_product_id": sku.spu,
        "out_sku_id": sku.code, "thumb_img": f"https://example.invalid/img/{sku.code}.jpg",
        "on_aftersale_sku_cnt": line.qty if line.refund == m.REFUNDING else 0,
        "finish_aftersale_sku_cnt": line.qty if line.refund == m.REFUNDED else 0,
        "sku_attrs": [{"attr_key": k, "attr_value": v} for k, v in sku.specs],
    }


def _price_info(o: m.SimOrder) -> dict[str, Any]:
    discount = o.discount_shop + o.discount_platform
    return {
        "product_price": o.goods, "order_price": o.paid, "freight": o.post_amount, "discounted_price": discount,
        "is_discounted": discount > 0, "original_order_price": o.goods + o.post_amount,
        "estimate_product_price": o.goods - discount, "change_down_price": 0, "change_freight": 0,
        "is_change_freight": False, "merchant_discounted_price": o.discount_shop,
        "finder_discounted_price": o.discount_platform, "merchant_receieve_price": o.paid + o.discount_platform,
    }


def _deliveries(o: m.SimOrder) -> list[dict[str, Any]]:
    if o.shipment is None:
        return []
    s = o.shipment
    return [{  # [U] field names from integrator code
        "waybill_id": s.tracking_no, "delivery_id": _DELIVERY_IDS.get(s.carrier_code, s.carrier_code.upper()),
        "delivery_name": s.carrier_name, "delivery_time": o.ship_time, "deliver_type": 1,
        "product_infos": [{"product_id": line.sku.wechat_product_id, "sku_id": line.sku.wechat_sku_id,
                           "product_cnt": line.qty} for line in o.lines if line.refund != m.REFUNDED],
    }]


def _order(o: m.SimOrder, masked: bool) -> dict[str, Any]:
    c = o.customer
    refunding = any(line.refund == m.REFUNDING for line in o.lines)
    aftersales = [] if not o.refund_id else [
        {"aftersale_order_id": o.refund_id, "status": "MERCHANT_PROCESSING" if refunding else "MERCHANT_REFUND_SUCCESS"}]
    return {
        "order_id": o.original_id, "status": _STATUS[o.status], "create_time": o.create_time,
        "update_time": o.update_time, "openid": c.wechat_openid, "unionid": c.wechat_unionid, "is_present": False,
        "order_detail": {
            "product_infos": [_product(line) for line in o.lines],
            "price_info": _price_info(o),
            "pay_info": {
                "prepay_id": f"wx{o.original_id}", "prepay_time": o.create_time, "pay_time": o.pay_time,
                "transaction_id": f"4200{o.original_id[-24:]:0>24}" if o.pay_time else "", "payment_method": 1,
            },
            "delivery_info": {"address_info": _address(o, masked), "delivery_product_info": _deliveries(o),
                              "ship_done_time": o.ship_time, "deliver_method": 0},
            "ext_info": {"customer_notes": o.buyer_message, "merchant_notes": "", "order_scene": 2,
                         "finder_id": "", "live_id": ""},
            "settle_info": {"predict_commission_fee": o.paid * 5 // 100,
                            "commission_fee": o.paid * 5 // 100 if o.status == m.COMPLETED else 0},
        },
        "aftersale_detail": {"aftersale_order_list": aftersales, "on_aftersale_order_cnt": int(refunding)},
    }


def render(o: m.SimOrder) -> dict[str, Any]:
    """The order as order/get returns it with encode_sensitive_info=true (receiver masked)."""
    return _order(o, masked=True)


def render_plain(o: m.SimOrder) -> dict[str, Any]:
    """The order with encode_sensitive_info=false: the receiver in plaintext."""
    return _order(o, masked=False)


def remember_pii(vault: Vault, o: m.SimOrder) -> None:
    """Nothing to register: the decode API reads the receiver from the order itself."""
    return None


# ---------------------------------------------------------------- pushes

def original_id(shop: dict[str, Any]) -> str:
    """The shop's original id (gh_…), which messages carry as ToUserName."""
    return shop["extra"].get("original_id") or "gh_" + hashlib.md5(shop["app_key"].encode()).hexdigest()[:12]


def push_message(shop: dict[str, Any], o: m.SimOrder, kind: str) -> dict[str, Any] | None:
    """The plaintext JSON message the platform sends for event `kind` (None: no message)."""
    event = EVENTS.get(kind)
    if event is None:
        return None
    message: dict[str, Any] = {"ToUserName": original_id(shop), "FromUserName": o.customer.wechat_openid,
                               "CreateTime": o.update_time, "MsgType": "event", "Event": event}
    if event == AFTERSALE_EVENT:
        message["finder_shop_aftersale_status_update"] = {
            "status": _AFTERSALE_STATUS[kind], "after_sale_order_id": o.refund_id, "order_id": o.original_id}
        return message
    info: dict[str, Any] = {"order_id": int(o.original_id)}
    if kind == m.PAY:
        info["pay_time"] = o.pay_time
    elif kind in (m.CANCEL, m.CLOSE):
        info["cancel_type"] = 1 if kind == m.CANCEL else 2  # [U] 1 用户取消, 2 超时取消
    elif kind == m.SHIP:
        info["finish_delivery"] = 1  # [U]
    elif kind == m.COMPLETE:
        info["confirm_type"] = 1  # [U] 1 用户确认收货, 2 超时自动确认
    message["order_info"] = info
    return message


def build_push(shop: dict[str, Any], o: m.SimOrder, kind: str, msg_seq: str) -> Push | None:
    message = push_message(shop, o, kind)
    if message is None:
        return None
    extra = shop["extra"]
    token, appid = extra["token"], shop["app_key"]
    timestamp, nonce = str(o.update_time), msg_seq[-10:]
    random16 = hashlib.sha256(f"{appid}:{o.original_id}:{msg_seq}".encode()).digest()[:16]
    encrypted = wechat_crypto.encrypt(extra["encoding_aes_key"], appid, orjson.dumps(message), random16)
    query = urlencode({
        "signature": wechat_crypto.signature(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce,
        "encrypt_type": "aes", "msg_signature": wechat_crypto.signature(token, timestamp, nonce, encrypted),
    })
    body = orjson.dumps({"ToUserName": message["ToUserName"], "Encrypt": encrypted})
    return Push(CHANNEL, o.original_id, message["Event"], f"{WEBHOOK_PATHS[CHANNEL]}?{query}",
                {"Content-Type": "application/json"}, body, o.update_time)


# ---------------------------------------------------------------- open API endpoints

def _json(data: dict[str, Any]) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def make_router(sim: Simulator) -> APIRouter:
    router = APIRouter()
    expiry: dict[str, int] = {}  # access tokens issued here -> when they expire (simulated time)

    def error(code: int, message: str) -> Response:
        return _json({"errcode": code, "errmsg": f"{message} rid: {sim.log_id()}"})

    def authorised_shop(request: Request) -> tuple[str | None, Response | None]:
        token = request.query_params.get("access_token", "")
        if not token:
            return None, error(41001, "access_token missing")
        shop_id, until = sim.token_shop(CHANNEL, token), expiry.get(token)
        if until is not None and (shop_id is None or sim.clock.now() >= until):
            return None, error(42001, "access_token expired")
        if shop_id is None:
            return None, error(40001, "invalid credential, access_token is invalid or not latest")
        return shop_id, None

    async def json_body(request: Request) -> dict[str, Any] | None:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    def own_order(body: dict[str, Any], shop_id: str) -> m.SimOrder | None:
        order_id = body.get("order_id")
        if isinstance(order_id, bool) or not isinstance(order_id, (str, int)):
            return None
        order = sim.get(CHANNEL, str(order_id))
        return order if order is not None and order.shop_id == shop_id else None

    @router.get("/cgi-bin/token")
    async def token(request: Request) -> Response:
        q = request.query_params
        if q.get("grant_type") != "client_credential":
            return error(40002, "invalid grant_type")
        shop = sim.shop_by_app_key(CHANNEL, q.get("appid", ""))
        if shop is None:
            return error(40013, "invalid appid")
        if not hmac.compare_digest(q.get("secret", "").encode(), shop["app_secret"].encode()):
            return error(40125, "invalid appsecret")
        now = sim.clock.now()
        for issued, until in list(expiry.items()):
            if until <= now - 86400:
                del expiry[issued]  # long dead: forget it (it then reads as unknown, 40001)
            elif sim.token_shop(CHANNEL, issued) == shop["shop_id"]:
                expiry[issued] = min(until, now + TOKEN_OVERLAP)
        value, _ = sim.issue_token(CHANNEL, shop["shop_id"])
        expiry[value] = now + TOKEN_TTL
        return _json({"access_token": value, "expires_in": TOKEN_TTL})

    @router.post("/channels/ec/order/get")
    async def order_get(request: Request) -> Response:
        shop_id, refused = authorised_shop(request)
        if refused is not None:
            return refused
        body = await json_body(request)
        if body is None:
            return error(47001, "data format error")
        order = own_order(body, shop_id)
        if order is None:
            return error(100002, "Not exist")  # [U] code
        payload = sim.payload(order) if body.get("encode_sensitive_info") is True else orjson.dumps(render_plain(order))
        return Response(b'{"errcode":0,"errmsg":"ok","order":' + payload + b"}", media_type="application/json")

    @router.post("/channels/ec/order/list/get")
    async def order_list(request: Request) -> Response:
        shop_id, refused = authorised_shop(request)
        if refused is not None:
            return refused
        body = await json_body(request)
        if body is None:
            return error(47001, "data format error")
        return _list(sim, shop_id, body, error)

    @router.post("/channels/ec/order/sensitiveinfo/decode")
    async def decode(request: Request) -> Response:
        shop_id, refused = authorised_shop(request)
        if refused is not None:
            return refused
        body = await json_body(request)
        if body is None:
            return error(47001, "data format error")
        order = own_order(body, shop_id)
        if order is None:
            return error(100002, "Not exist")  # [U] code
        if not order.pay_time:
            return error(101100, "订单状态错误，不允许执行此操作")  # paid orders only; [U] code
        plain = _address(order, masked=False)
        address = {k: plain[k] for k in ("user_name", "postal_code", "province_name", "city_name", "county_name",
                                         "detail_info", "tel_number", "house_number")}
        address |= {"national_code": "", "virtual_order_tel_number": ""}
        return _json({"errcode": 0, "errmsg": "ok", "address_info": address})

    @router.post("/channels/ec/product/stock/update")
    async def stock_update(request: Request) -> Response:
        """diff_type 1 增加, 2 减少, 3 设置 the sku's stock by num (>= 0)."""
        shop_id, refused = authorised_shop(request)
        if refused is not None:
            return refused
        body = await json_body(request)
        if body is None:
            return error(47001, "data format error")
        product_id, sku_id, diff_type, num = (body.get(k) for k in ("product_id", "sku_id", "diff_type", "num"))
        if diff_type not in (1, 2, 3) or isinstance(num, bool) or not isinstance(num, int) or num < 0:
            return error(40097, "invalid request body: diff_type 1/2/3, num >= 0")
        if sim.listing(CHANNEL, str(sku_id), str(product_id)) is None:
            return error(10020101, "product or sku not exist")  # [U] code
        current = sim.channel_stock(CHANNEL, shop_id, str(sku_id))
        now = {1: current + num, 2: current - num, 3: num}[diff_type]
        if now < 0:
            return error(10020102, "stock not enough")  # [U] code
        sim.set_channel_stock(CHANNEL, shop_id, str(sku_id), now, via="/channels/ec/product/stock/update")
        return _json({"errcode": 0, "errmsg": "ok"})

    @router.post("/channels/ec/order/delivery/send")
    async def delivery_send(request: Request) -> Response:
        shop_id, refused = authorised_shop(request)
        if refused is not None:
            return refused
        body = await json_body(request)
        if body is None:
            return error(47001, "data format error")
        return _delivery_send(sim, shop_id, body, error)

    return router


def _range(body: dict[str, Any], name: str) -> tuple[int, int] | None | str:
    value = body.get(name)
    if value is None:
        return None
    try:
        start, end = int(value["start_time"]), int(value["end_time"])
    except (KeyError, TypeError, ValueError):
        return f"{name} needs integer start_time and end_time"
    if end < start or end - start > MAX_RANGE:
        return f"{name}: end_time must follow start_time by at most 7 days"
    return start, end


def _list(sim: Simulator, shop_id: str, body: dict[str, Any], error: Any) -> Response:
    updated, created = _range(body, "update_time_range"), _range(body, "create_time_range")
    for problem in (updated, created):
        if isinstance(problem, str):
            return error(40097, f"invalid request body: {problem}")
    if updated is None and created is None:
        return error(40097, "invalid request body: create_time_range or update_time_range is required")
    try:
        size = int(body.get("page_size", 10))
        offset = int(body.get("next_key") or 0)
    except (TypeError, ValueError):
        return error(40097, "invalid request body: page_size / next_key")
    if not 1 <= size <= PAGE_MAX or offset < 0:
        return error(40097, "invalid request body: page_size must be 1-100")
    status = body.get("status")
    states = {k for k, code in _STATUS.items() if code == status} if status is not None else None
    if isinstance(updated, tuple) and isinstance(created, tuple):
        _, hits = sim.search(CHANNEL, shop_id, *updated, 0, 10**9, states=states)
        hits = [o for o in hits if created[0] <= o.create_time <= created[1]]
        total, page = len(hits), hits[offset:offset + size]
    elif isinstance(updated, tuple):
        total, page = sim.search(CHANNEL, shop_id, *updated, offset, size, states=states)
    else:
        assert isinstance(created, tuple)
        total, page = sim.search(CHANNEL, shop_id, *created, offset, size, states=states, by_create=True)
    more = offset + len(page) < total
    return _json({"errcode": 0, "errmsg": "ok", "order_id_list": [o.original_id for o in page],
                  "next_key": str(offset + len(page)) if more else "", "has_more": more})


# Refusals of order/delivery/send [U: codes and words].
_DELIVERY_REFUSALS = {
    shipments.UNKNOWN: (100002, "Not exist"), shipments.CANCELLED: (101100, "订单状态错误，不允许执行此操作"),
    shipments.UNPAID: (101100, "订单状态错误，不允许执行此操作"), shipments.ALREADY: (108004, "订单已发货"),
    shipments.BAD_WAYBILL: (108005, "waybill_id invalid 快递单号不合法"),
    shipments.BAD_CARRIER: (108006, "delivery_id invalid 快递公司不合法"), shipments.BAD_LINES: (108007, "product_infos invalid"),
}


def _delivery_send(sim: Simulator, shop_id: str, body: dict[str, Any], error: Any) -> Response:
    """order/delivery/send with deliver_type 1 (自寄快递): each delivery_list entry is a parcel of the
    products (product_id, sku_id, product_cnt) it lists."""
    order_id, deliveries = str(body.get("order_id") or ""), body.get("delivery_list")
    if not order_id or not isinstance(deliveries, list) or not deliveries or not all(isinstance(d, dict) for d in deliveries):
        return error(40097, "invalid request body: order_id and delivery_list are required")
    order = sim.get(CHANNEL, order_id)
    product_of = {line.line_id: line.sku.wechat_product_id for line in order.lines} if order is not None else {}
    carriers = {code: carrier for carrier, code in _DELIVERY_IDS.items()}
    for delivery in deliveries:
        products = delivery.get("product_infos")
        if delivery.get("deliver_type") != 1 or not isinstance(products, list) or not products \
                or not all(isinstance(p, dict) for p in products):
            return error(40097, "invalid request body: deliver_type 1 with product_infos")
        line_ids = [str(p.get("sku_id")) for p in products]  # a 视频号 order holds each SKU once
        if any(product_of.get(str(p.get("sku_id")), str(p.get("product_id"))) != str(p.get("product_id")) for p in products):
            return error(*_DELIVERY_REFUSALS[shipments.BAD_LINES])
        code = str(delivery.get("delivery_id") or "")
        outcome = shipments.ship(sim, CHANNEL, shop_id, order_id, carrier=carriers.get(code), platform_carrier=code,
                                 waybill_no=str(delivery.get("waybill_id") or ""), line_ids=line_ids,
                                 via="/channels/ec/order/delivery/send")
        if outcome.result != shipments.SHIPPED:
            return error(*_DELIVERY_REFUSALS[outcome.result])
    return _json({"errcode": 0, "errmsg": "ok"})
