"""快手小店 (Kuaishou shop) server end: order payloads, the signed open-API gateway, token refresh.

快手 can push order messages, but OrderHub pulls 快手 orders (open.order.cursor.list by update
time, open.order.detail by number), so no push is built here. Wire details and the unconfirmed
[U] choices: docs/channels/kuaishou.md.
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

from orderhub.demo.catalogue import CATEGORY_CIDS, skus
from orderhub.simulator import model as m
from orderhub.simulator import shipments
from orderhub.simulator.amounts import end_of_day_cst
from orderhub.simulator.pii import Vault
from orderhub.simulator.pusher import Push

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

CHANNEL = "kuaishou"

# orderBaseInfo.status [U]: 10 待付款, 30 已付款, 40 已发货, 50 已收货 (not simulated), 70 交易成功,
# 80 交易关闭 (cancelled after payment, or closed unpaid).
_STATUS = {m.UNPAID: 10, m.PAID: 30, m.SHIPPED: 40, m.COMPLETED: 70, m.CANCELLED: 80, m.CLOSED: 80}
# orderRefundList[].refundStatus [U]: 10 买家仅退款申请, 60 退款成功.
_REFUND_STATUS = {m.REFUNDING: 10, m.REFUNDED: 60}
# 快手 expressCode (物流公司编号, doc id 401927) of the simulated carriers.
_EXPRESS_CODE = {"shunfeng": 4, "zhongtong": 9, "yuantong": 6, "yunda": 11, "jd": 14,
                 "shentong": 2, "ems": 1, "debangkuaidi": 13}  # [U] the last three
# orderViewStatus: 1 全部, 2 待付款, 3 待发货, 4 待收货(已发货), 5 已收货, 6 交易成功, 7 已关闭.
_VIEW_STATES: dict[int, set[str] | None] = {
    1: None, 2: {m.UNPAID}, 3: {m.PAID}, 4: {m.SHIPPED}, 5: set(), 6: {m.COMPLETED}, 7: {m.CANCELLED, m.CLOSED},
}
_PAY_CHANNEL = {1: "微信支付", 2: "支付宝"}

MAX_PAGE_SIZE = 50  # 每页请求数量 最多一页50条
MAX_SPAN_MS = 7 * 86_400_000  # 时间范围不大于7天
MAX_AGE_MS = 90 * 86_400_000  # 只能查询最近90天
NO_MORE = "nomore"
_ACCESS_TOKEN_TTL, _REFRESH_TOKEN_TTL = 172_800, 15_552_000  # 48 hours, 180 days

# Gateway failures (result, message). 28/24 follow an integrator SDK's code mapping, 3000xx the
# platform's 返回码 page, 1002001xx the OAuth error table; the rest are this simulator's own [U].
APP_INVALID = (100200101, "unauthorized_client: app 非法或不存在")
SIGN_INVALID = (28, "签名校验失败，请检查签名参数与signSecret")
TOKEN_INVALID = (24, "鉴权失败，access_token已过期或不存在")
PARAM_INVALID = (33, "参数错误")
METHOD_UNKNOWN = (35, "不存在的API方法")
ORDER_NOT_FOUND = (36, "订单不存在")
ITEM_NOT_FOUND = (37, "商品或SKU不存在")
STOCK_NOT_ENOUGH = (38, "减少的库存不能大于当前库存")
END_BEFORE_BEGIN = (300003, "ENDTIME MUST AFTER BEGINTIME 结束时间要晚于开始时间")
SPAN_TOO_LONG = (300004, "SEARCH TIME RANGE EXPAND 7 DAYS 查询范围不能大于7天")
TOO_OLD = (300005, "CAN NOT SEARCH BEFORE 90 DAYS 只能查询最近90天内的订单")


# ---------------------------------------------------------------- payload (one orderList entry)

@lru_cache(maxsize=16384)
def ciphertext(kind: str, plaintext: str) -> str:
    """A 快手-style ciphertext of buyer PII (the real format is not documented here [U])."""
    digest = hashlib.sha256(f"ks-{kind}:{plaintext}".encode()).digest()[:30]
    return f"#ks#{base64.b64encode(digest).decode()}#1#"


def _mask_name(name: str) -> str:
    return name[:1] + "*" * (len(name) - 1)


def _mask_mobile(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:]


def _mask_address(detail: str) -> str:
    """Digits starred out, as in the desensitised addresses 快手 returns ("幸福路**号*栋***室")."""
    return "".join("*" if ch.isdigit() else ch for ch in detail)


def _ms(seconds: int) -> int:
    return seconds * 1000


def remember_pii(vault: Vault, o: m.SimOrder) -> None:
    c, a = o.customer, o.address
    vault.remember(ciphertext("name", c.name), c.name)
    vault.remember(ciphertext("mobile", c.phone), c.phone)
    vault.remember(ciphertext("address", a.detail), a.detail)


def render(o: m.SimOrder) -> dict[str, Any]:
    """The order as one `data.orderList[]` entry (and as open.order.detail's `data`)."""
    if len(o.lines) != 1:
        raise ValueError(f"快手 orders carry one item; order {o.original_id} has {len(o.lines)}")
    line = o.lines[0]
    return {
        "orderBaseInfo": _base_info(o, line),
        "orderItemInfo": _item_info(line),
        "orderRefundList": _refunds(o, line),
        "orderLogisticsInfo": _logistics(o),
        "orderAddress": _address(o),
        "orderDeliveryInfo": _delivery(o, line),
        "orderNote": {"sellerNote": [], "orderNoteInfo": []},
        "subOrderInfo": [],
    }


def _base_info(o: m.SimOrder, line: m.SimLine) -> dict[str, Any]:
    c = o.customer
    promise = _ms(end_of_day_cst(o.pay_time, 2)) if o.pay_time else 0
    return {
        "oid": int(o.original_id), "status": _STATUS[o.status],
        "createTime": _ms(o.create_time), "payTime": _ms(o.pay_time), "updateTime": _ms(o.update_time),
        "sendTime": _ms(o.ship_time), "recvTime": _ms(o.finish_time), "refundTime": _ms(line.refund_time),
        "totalFee": o.paid, "expressFee": o.post_amount, "discountFee": o.discount_shop + o.discount_platform,
        "buyerOpenId": c.kuaishou_open_id, "buyerNick": f"快手用户{c.index:05d}", "buyerImage": "",
        "sellerOpenId": f"f{o.shop_id}seller", "sellerNick": o.shop_name,
        "orderSellerRoleInfo": {"roleId": int(o.shop_id), "roleName": o.shop_name, "roleType": 1},
        "remark": o.buyer_message, "payType": o.pay_type, "payChannel": _PAY_CHANNEL.get(o.pay_type, "其他") if o.pay_time else "",
        "cpsType": 1, "activityType": 0, "allActivityType": [], "orderLabels": [], "preSale": 0, "coType": 0,
        "commentStatus": 0, "riskCode": 0, "disableDeliveryReasonCode": [], "multiplePiecesNo": 0,
        "remindShipmentSign": 0, "remindShipmentTime": 0, "theDayOfDeliverGoodsTime": 2,
        "promiseTimeStampOfDelivery": promise, "validPromiseShipmentTimeStamp": promise,
        "sellerDelayPromiseTimeStamp": 0, "priorityDelivery": False, "enableSplitDeliveryOrder": False,
        "governmentDiscount": 0, "payChannelDiscount": 0, "allowanceExpressFee": 0,
        "tradeInPayAfterPromoAmount": 0, "channel": "",
    }


def _item_info(line: m.SimLine) -> dict[str, Any]:
    sku = line.sku
    return {
        "orderItemId": int(line.line_id), "itemId": int(sku.kuaishou_item_id),
        "relItemId": int(sku.spu.removeprefix("SPU-")), "skuId": int(sku.kuaishou_sku_id),
        "relSkuId": int(sku.code.removeprefix("SKU-")), "skuNick": sku.code,
        "skuDesc": ";".join(f"{axis}:{value}" for axis, value in sku.specs), "itemTitle": sku.product_name,
        "itemLinkUrl": f"https://example.invalid/ks/item/{sku.kuaishou_item_id}",
        "itemPicUrl": f"https://example.invalid/img/{sku.code}.jpg",
        "num": line.qty, "originalPrice": line.unit_price, "price": line.unit_price, "discountFee": line.discount,
        "itemType": 1, "goodsCode": "", "warehouseCode": "",
        "itemExtra": {
            "brandName": "", "energyLevel": "", "productNo": "",
            "categoryInfo": {"itemCid": CATEGORY_CIDS[sku.category][2], "categoryName": sku.category,
                             "govCategory": "", "govCategoryCode": ""},
        },
    }


def _refunds(o: m.SimOrder, line: m.SimLine) -> list[dict[str, Any]]:
    if line.refund == m.NO_REFUND:
        return []
    return [{"refundId": int(o.refund_id), "refundStatus": _REFUND_STATUS[line.refund], "handlingWay": 1,
             "specialRefundType": 0}]


def _logistics(o: m.SimOrder) -> list[dict[str, Any]]:
    s = o.shipment
    if s is None:
        return []
    return [{"logisticsId": int(o.original_id[-12:]), "expressNo": s.tracking_no, "expressCode": _EXPRESS_CODE[s.carrier_code]}]


def _address(o: m.SimOrder) -> dict[str, Any]:
    c, a = o.customer, o.address
    r = a.region
    return {
        "encryptedConsignee": ciphertext("name", c.name), "desensitiseConsignee": _mask_name(c.name),
        "encryptedMobile": ciphertext("mobile", c.phone), "desensitiseMobile": _mask_mobile(c.phone),
        "provinceCode": int(r.province_code.ljust(6, "0")), "province": r.province,
        "cityCode": int(r.city_code), "city": r.city, "districtCode": int(r.district_code), "district": r.district,
        "townCode": int(a.street_code), "town": a.street,
        "encryptedAddress": ciphertext("address", a.detail), "desensitiseAddress": _mask_address(a.detail),
    }


def _delivery(o: m.SimOrder, line: m.SimLine) -> dict[str, Any]:
    shipped = o.shipment is not None
    return {
        "splitDeliveryOrder": False, "mergeDeliveryType": 0, "deliveryNum": line.qty if shipped else 0,
        "enableAppendPackage": False, "totalPackageNum": 1 if shipped else 0, "openAddressId": "",
        "maxPackageNum": 1, "deliveryStatus": 40 if shipped else 0, "packageNum": 1 if shipped else 0,
    }


def build_push(shop: dict[str, Any], o: m.SimOrder, kind: str, msg_seq: str) -> Push | None:
    return None  # OrderHub pulls 快手 orders


# ---------------------------------------------------------------- the open-API gateway

def expected_sign(fields: dict[str, str], sign_secret: str, sign_method: str) -> str:
    """What the gateway computes: the signed parameters that were sent, sorted, as k=v&...,
    '&signSecret=' appended; MD5 hex or base64 HMAC-SHA256 keyed with the signSecret."""
    signed = ("access_token", "appkey", "method", "param", "signMethod", "timestamp", "version")
    pairs = [f"{name}={fields[name]}" for name in sorted(signed) if name in fields]
    plain = "&".join([*pairs, f"signSecret={sign_secret}"]).encode()
    if sign_method == "MD5":
        return hashlib.md5(plain).hexdigest()
    return base64.b64encode(hmac.digest(sign_secret.encode(), plain, "sha256")).decode()


def _reply(sim: Simulator, data: bytes) -> Response:
    head = b'{"result":1,"msg":"success","requestId":"' + sim.log_id().encode() + b'","data":'
    return Response(head + data + b"}", media_type="application/json")


def _fail(sim: Simulator, failure: tuple[int, str], detail: str = "") -> Response:
    code, message = failure
    text = f"{message}: {detail}" if detail else message
    body = {"result": code, "msg": message, "error_msg": text, "requestId": sim.log_id()}
    return Response(orjson.dumps(body), media_type="application/json")


def make_router(sim: Simulator) -> APIRouter:
    router = APIRouter()
    # refresh token -> shop id; a shop's configured extra.refresh_token is valid from the start.
    refresh_tokens: dict[str, str] = {
        shop["extra"]["refresh_token"]: shop["shop_id"]
        for shop in sim.shops
        if shop["channel"] == CHANNEL and shop.get("extra", {}).get("refresh_token")
    }

    @router.api_route("/open/{api_path:path}", methods=["GET", "POST"])
    async def gateway(api_path: str, request: Request) -> Response:
        fields = dict(request.query_params)
        if request.method == "POST":  # form body: 请求Content-type仅支持application/x-www-form-urlencoded
            fields.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        return _gateway(sim, f"open/{api_path}", fields)

    @router.post("/oauth2/refresh_token")
    async def refresh_token(request: Request) -> Response:
        fields = dict(request.query_params)
        fields.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        return _refresh(sim, refresh_tokens, fields)

    return router


def _gateway(sim: Simulator, path: str, fields: dict[str, str]) -> Response:
    shop = sim.shop_by_app_key(CHANNEL, fields.get("appkey", ""))
    if shop is None:
        return _fail(sim, APP_INVALID)
    method = fields.get("method", "")
    if method.replace(".", "/") != path:
        return _fail(sim, PARAM_INVALID, "method 与请求路径不符")
    sign_method = fields.get("signMethod", "MD5")
    if sign_method not in ("MD5", "HMAC_SHA256"):
        return _fail(sim, PARAM_INVALID, "signMethod 仅支持 MD5 与 HMAC_SHA256")
    expected = expected_sign(fields, str(shop.get("extra", {}).get("sign_secret", "")), sign_method)
    sent = fields.get("sign", "")
    if sign_method == "MD5":
        expected, sent = expected.lower(), sent.lower()
    if not hmac.compare_digest(expected.encode(), sent.encode()):
        return _fail(sim, SIGN_INVALID)
    shop_id = sim.token_shop(CHANNEL, fields.get("access_token", ""))
    if shop_id is None or shop_id != shop["shop_id"]:
        return _fail(sim, TOKEN_INVALID)
    try:
        params = orjson.loads(fields.get("param") or "{}")
    except orjson.JSONDecodeError:
        return _fail(sim, PARAM_INVALID, "param 不是合法 JSON")
    if not isinstance(params, dict):
        return _fail(sim, PARAM_INVALID, "param 须为 JSON 对象")
    if method == "open.order.cursor.list":
        return _cursor_list(sim, shop_id, params)
    if method == "open.order.detail":
        return _detail(sim, shop_id, params)
    if method == "open.item.get":
        return _item(sim, shop_id, params)
    if method == "open.item.sku.stock.update":
        return _sku_stock_update(sim, shop_id, params)
    if method in ("open.seller.order.goods.deliver", "open.seller.order.goods.logistics.append"):
        return _deliver(sim, shop_id, method, params)
    return _fail(sim, METHOD_UNKNOWN, method)


def _cursor_list(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    try:
        view = int(params.get("orderViewStatus", 1))
        size = int(params.get("pageSize", 10))
        sort = int(params.get("sort", 1))
        query_type = int(params.get("queryType", 1))
        begin, end = int(params["beginTime"]), int(params["endTime"])
        offset = _offset(str(params.get("cursor") or ""))
    except (KeyError, TypeError, ValueError):
        return _fail(sim, PARAM_INVALID, "beginTime/endTime 必填（毫秒），pageSize/sort/queryType 为整数，cursor 须为上一页返回值")
    if view not in _VIEW_STATES or not 1 <= size <= MAX_PAGE_SIZE or sort not in (1, 2) or query_type not in (1, 2):
        return _fail(sim, PARAM_INVALID, f"orderViewStatus 1-7，pageSize 1-{MAX_PAGE_SIZE}，sort/queryType 1 或 2")
    if end <= begin:
        return _fail(sim, END_BEFORE_BEGIN)
    if end - begin > MAX_SPAN_MS:
        return _fail(sim, SPAN_TOO_LONG)
    if begin < _ms(sim.clock.now()) - MAX_AGE_MS:
        return _fail(sim, TOO_OLD)
    # The store keeps unix seconds; both millisecond bounds are inclusive.
    total, page = sim.search(
        CHANNEL, shop_id, -(-begin // 1000), end // 1000, offset, size,
        states=_VIEW_STATES[view], by_create=query_type == 1, descending=sort == 1,
    )
    following = offset + len(page)
    cursor = NO_MORE if following >= total else _cursor(following)
    head = orjson.dumps({"cursor": cursor, "pageSize": size, "beginTime": begin, "endTime": end})[:-1]
    return _reply(sim, head + b',"orderList":[' + b",".join(sim.payload(o) for o in page) + b"]}")


def _cursor(offset: int) -> str:
    """An opaque cursor (the platform's are opaque strings; this one encodes a list position)."""
    return base64.urlsafe_b64encode(f"ks:{offset}".encode()).decode().rstrip("=")


def _offset(cursor: str) -> int:
    if cursor in ("", "0"):
        return 0
    if cursor == NO_MORE:
        raise ValueError("the listing has ended")
    decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    prefix, _, number = decoded.partition(":")
    if prefix != "ks" or not number.isdigit():
        raise ValueError(f"unknown cursor {cursor!r}")
    return int(number)


def _detail(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    oid = params.get("oid")
    if isinstance(oid, bool) or not isinstance(oid, (int, str)) or not str(oid).isdigit():
        return _fail(sim, PARAM_INVALID, "oid 须为订单号（整数）")
    order = sim.get(CHANNEL, str(oid))
    if order is None or order.shop_id != shop_id or not order.visible:
        return _fail(sim, ORDER_NOT_FOUND, str(oid))
    return _reply(sim, sim.payload(order))


# ---------------------------------------------------------------- items and stock

def _item(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    """open.item.get: the item's SKUs with their stock (skuList[].kwaiSkuId / skuStock [U])."""
    item_id = str(params.get("kwaiItemId", ""))
    sku_ids = [s.kuaishou_sku_id for s in skus() if s.kuaishou_item_id == item_id]
    if not sku_ids:
        return _fail(sim, ITEM_NOT_FOUND, item_id)
    sku_list = [{"kwaiSkuId": int(sku_id), "skuStock": sim.channel_stock(CHANNEL, shop_id, sku_id)} for sku_id in sku_ids]
    return _reply(sim, orjson.dumps({"kwaiItemId": int(item_id), "skuList": sku_list}))


def _sku_stock_update(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    """open.item.sku.stock.update: increments only, skuChangeStock > 0 with changeType 1 增加 / 2 减少."""
    item_id, sku_id = params.get("kwaiItemId"), params.get("skuId")
    change, kind = params.get("skuChangeStock"), params.get("changeType")
    if isinstance(change, bool) or not isinstance(change, int) or not 0 < change < 9_999_999 or kind not in (1, 2):
        return _fail(sim, PARAM_INVALID, "skuChangeStock 为 1-9999998 的整数，changeType 为 1（增加）或 2（减少）")
    if sim.listing(CHANNEL, str(sku_id), str(item_id)) is None:
        return _fail(sim, ITEM_NOT_FOUND, f"{item_id}/{sku_id}")
    now = sim.channel_stock(CHANNEL, shop_id, str(sku_id)) + (change if kind == 1 else -change)
    if now < 0:
        return _fail(sim, STOCK_NOT_ENOUGH)
    sim.set_channel_stock(CHANNEL, shop_id, str(sku_id), now, via="open.item.sku.stock.update")
    return _reply(sim, b"{}")


# ---------------------------------------------------------------- OAuth2 token refresh

def _oauth_fail(code: int, error: str, message: str) -> Response:
    return Response(orjson.dumps({"result": code, "error": error, "error_msg": message}), media_type="application/json")


def _refresh(sim: Simulator, refresh_tokens: dict[str, str], fields: dict[str, str]) -> Response:
    """POST /oauth2/refresh_token (grant_type, refresh_token, app_id, app_secret); the refresh token
    is single-use: a new one comes back with the new access token."""
    shop = sim.shop_by_app_key(CHANNEL, fields.get("app_id", ""))
    if shop is None or not hmac.compare_digest(fields.get("app_secret", "").encode(), shop["app_secret"].encode()):
        return _oauth_fail(100200101, "unauthorized_client", "app 非法：app_id 或 app_secret 不正确")
    if fields.get("grant_type") != "refresh_token":
        return _oauth_fail(100200104, "unsupported_grant_type", "grant_type 必须是 refresh_token")
    presented = fields.get("refresh_token", "")
    if refresh_tokens.get(presented) != shop["shop_id"]:
        return _oauth_fail(100200102, "access_denied", "invalid refresh_token 或 refreshToken.discarded")
    del refresh_tokens[presented]
    token, refresh = sim.issue_token(CHANNEL, shop["shop_id"])
    refresh_tokens[refresh] = shop["shop_id"]
    body = {
        "result": 1, "access_token": token, "expires_in": _ACCESS_TOKEN_TTL, "refresh_token": refresh,
        "refresh_token_expires_in": _REFRESH_TOKEN_TTL, "scopes": ["merchant_order", "user_info"],
    }
    return Response(orjson.dumps(body), media_type="application/json")


# ---------------------------------------------------------------- shipping

_DELIVER_REFUSALS = {  # [U] codes and words
    shipments.UNKNOWN: ORDER_NOT_FOUND, shipments.CANCELLED: (40, "订单已关闭，不能发货"),
    shipments.UNPAID: (41, "订单未付款，不能发货"), shipments.ALREADY: (42, "订单已发货，不能重复发货"),
    shipments.BAD_WAYBILL: (43, "快递单号不合法"), shipments.BAD_CARRIER: (44, "快递公司编码不存在"),
    shipments.NOT_SHIPPED: (45, "订单未发货，不能追加包裹"),
}


def _deliver(sim: Simulator, shop_id: str, method: str, params: dict[str, Any]) -> Response:
    """goods.deliver ships the whole order (orderId); goods.logistics.append adds a parcel to a shipped
    one (oid). The same expressNo told again is answered as success (幂等, since 2024-11-25)."""
    append = method.endswith(".append")
    order_id, code, number = params.get("oid" if append else "orderId"), params.get("expressCode"), params.get("expressNo")
    if isinstance(order_id, bool) or not str(order_id or "").isdigit() or isinstance(code, bool) or not isinstance(code, int):
        return _fail(sim, PARAM_INVALID, f"{'oid' if append else 'orderId'} 与 expressCode 为整数，expressNo 必填")
    carriers = {number: carrier for carrier, number in _EXPRESS_CODE.items()}
    outcome = shipments.ship(sim, CHANNEL, shop_id, str(order_id), carrier=carriers.get(code), platform_carrier=code,
                             waybill_no=str(number or ""), line_ids=None, via=method, append=append)
    order = outcome.order
    repeated = outcome.result == shipments.ALREADY and order is not None and any(
        p["waybill_no"] == str(number) for p in order.extra.get("packages", []))
    if outcome.result != shipments.SHIPPED and not repeated:
        return _fail(sim, _DELIVER_REFUSALS[outcome.result])
    return _reply(sim, b"{}")
