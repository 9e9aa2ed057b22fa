"""京东 JOS (JD POP) server end: order payloads, router signatures and order.search/order.get.

JD has no push here: OrderHub sees JD orders only by pulling `jingdong.pop.order.search`.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request, Response

from orderhub.simulator import model as m
from orderhub.simulator import pii, shipments
from orderhub.simulator.amounts import cst, parse_cst, yuan

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

CHANNEL = "jd"
UNSET_TIME = "0001-01-01 00:00:00"
_STATE = {
    m.UNPAID: ("WAIT_SELLER_STOCK_OUT", "等待出库"),  # never shown: JD lists paid orders only
    m.PAID: ("WAIT_SELLER_STOCK_OUT", "等待出库"), m.SHIPPED: ("WAIT_GOODS_RECEIVE_CONFIRM", "等待确认收货"),
    m.COMPLETED: ("FINISHED_L", "完成"), m.CANCELLED: ("TRADE_CANCELED", "取消"), m.CLOSED: ("TRADE_CANCELED", "取消"),
}
PLATFORM_COUPON, SHOP_COUPON = "41-京东券优惠", "100-店铺优惠"


def remember_pii(vault: pii.Vault, o: m.SimOrder) -> None:
    """JD payloads carry masks only here; there is nothing to decrypt."""


def render(o: m.SimOrder) -> dict[str, Any]:
    """The order as one `orderInfoList[]` entry (and order.get's `orderInfo`)."""
    c, a = o.customer, o.address
    r = a.region
    state, remark = _STATE[o.status]
    coupons = []
    if o.discount_platform:
        coupons.append({"orderId": o.original_id, "skuId": "", "couponType": PLATFORM_COUPON,
                        "couponPrice": yuan(o.discount_platform)})
    if o.discount_shop:
        coupons.append({"orderId": o.original_id, "skuId": "", "couponType": SHOP_COUPON,
                        "couponPrice": yuan(o.discount_shop)})
    goods = o.goods
    ended = o.finish_time or (o.cancel_time if o.status in (m.CANCELLED, m.CLOSED) else 0)
    s = o.shipment
    return {
        "orderId": o.original_id, "venderId": o.shop_id, "orderType": "22", "payType": "4-在线支付",
        "orderTotalPrice": yuan(goods), "orderSellerPrice": yuan(goods - o.discount_shop),
        "orderPayment": yuan(o.paid - o.balance_used), "freightPrice": yuan(o.post_amount),
        "sellerDiscount": yuan(o.discount_shop), "balanceUsed": yuan(o.balance_used),
        "orderState": state, "orderStateRemark": remark, "deliveryType": "任意时间",
        "invoiceInfo": "不需要开具发票", "invoiceCode": "", "orderRemark": o.buyer_message, "venderRemark": "",
        "orderStartTime": cst(o.create_time), "orderEndTime": cst(ended) if ended else UNSET_TIME,
        "modified": cst(o.update_time), "paymentConfirmTime": cst(o.pay_time) if o.pay_time else UNSET_TIME,
        "consigneeInfo": {
            "fullname": pii.mask_name(c.name, stars=2), "telephone": "", "mobile": pii.mask_phone_jd(c.phone),
            "fullAddress": f"{r.jd_short_province}{r.city}{r.district}{a.street}{a.road}**号",
            "province": r.jd_short_province, "city": r.city, "county": r.district, "town": a.street,
            "provinceId": r.jd_province_id, "cityId": str(1000 + int(r.city_code) % 997),
            "countyId": str(3000 + int(r.district_code) % 991), "townId": "0",
        },
        "itemInfoList": [{
            "skuId": line.sku.jd_sku_id, "outerSkuId": line.sku.code, "skuName": line.sku.title,
            "jdPrice": yuan(line.unit_price), "giftPoint": "0", "wareId": line.sku.jd_ware_id,
            "itemTotal": str(line.qty), "productNo": "", "serviceName": "", "newStoreId": "0",
        } for line in o.lines],
        "couponDetailList": coupons,
        "pin": c.jd_pin, "open_id_buyer": "JDOB" + c.jd_pin[3:], "returnOrder": "0",
        "waybill": s.tracking_no if s else "", "logisticsId": s.jd_logistics_id if s else "",
        "orderSource": "移动端订单", "storeOrder": "", "idSopShipmenttype": "", "directParentOrderId": "",
        "parentOrderId": "0",
    }


# ---------------------------------------------------------------- router

def request_sign(app_secret: str, fields: dict[str, str]) -> str:
    text = "".join(k + v for k, v in sorted(fields.items()) if k != "sign")
    return hashlib.md5((app_secret + text + app_secret).encode()).hexdigest().upper()


def _error(code: str, zh: str, en: str) -> Response:
    return Response(orjson.dumps({"error_response": {"code": code, "zh_desc": zh, "en_desc": en}}),
                    media_type="application/json")


_API_OK = b'"apiResult":{"success":true,"code":"0","chineseErrCode":"\xe6\x88\x90\xe5\x8a\x9f","englishErrCode":"success","numberCode":10100000}'


def make_router(sim: Simulator) -> APIRouter:
    router = APIRouter()

    @router.post("/routerjson")
    async def routerjson(request: Request) -> Response:
        fields = dict(request.query_params)
        fields.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        shop = sim.shop_by_app_key(CHANNEL, fields.get("app_key", ""))
        if shop is None:
            return _error("14", "无效的app_key", "Invalid app_key")
        if "sign" not in fields:
            return _error("11", "缺少签名参数", "Missing Signature")
        if not hmac.compare_digest(request_sign(shop["app_secret"], fields), fields["sign"].upper()):
            return _error("12", "无效签名", "Invalid signature")  # JOS code table
        shop_id = sim.token_shop(CHANNEL, fields.get("access_token", ""))
        if shop_id is None or shop_id != shop["shop_id"]:
            return _error("19", "token已过期或者不存在，请重新授权访问", "Invalid access_token")  # JOS code table
        try:
            params = orjson.loads(fields.get("360buy_param_json") or "{}")
        except orjson.JSONDecodeError:
            return _error("67", "360buy_param_json 不是合法 JSON", "Invalid 360buy_param_json")  # [U]
        method = fields.get("method", "")
        if method == "jingdong.pop.order.search":
            return _search(sim, shop_id, params)
        if method == "jingdong.pop.order.get":
            return _get(sim, shop_id, params)
        if method == "jingdong.stock.write.updateSkuStock":
            return _update_sku_stock(sim, shop_id, params)
        if method == "jingdong.pop.order.shipment":
            return _shipment(sim, shop_id, params)
        return _error("15", "不存在的方法名", "Invalid Method")

    return router


def _search(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    try:
        page, page_size = int(params.get("page", 1)), int(params.get("page_size", 20))
        start = parse_cst(params["start_date"]) if params.get("start_date") else 0
        end = parse_cst(params["end_date"]) if params.get("end_date") else 2**62
    except (TypeError, ValueError):
        return _error("66", "参数错误：page/page_size 为整数，时间格式 yyyy-MM-dd HH:mm:ss", "Invalid parameter")
    if page < 1 or not 1 <= page_size <= 100:
        return _error("66", "参数错误：page 从 1 开始，page_size 取值 1-100", "Invalid parameter")
    wanted = {s for s in str(params.get("order_state", "")).split(",") if s}
    states = {k for k, (name, _) in _STATE.items() if name in wanted} if wanted else None
    by_create = str(params.get("dateType", "0")) == "1"  # [U] 1 = by order start time
    total, orders = sim.search(CHANNEL, shop_id, start, end, (page - 1) * page_size, page_size,
                               states=states, by_create=by_create, descending=str(params.get("sortType", "0")) == "1")
    body = (b'{"jingdong_pop_order_search_responce":{"code":"0","searchorderinfo_result":{' + _API_OK
            + b',"orderInfoList":[' + b",".join(sim.payload(o) for o in orders)
            + b'],"orderTotal":' + str(total).encode() + b"}}}")
    return Response(body, media_type="application/json")


def _get(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    order = sim.get(CHANNEL, str(params.get("order_id", "")))
    if order is None or order.shop_id != shop_id or not order.visible:
        missing = {"jingdong_pop_order_get_responce": {"code": "0", "orderDetailInfo": {
            "apiResult": {"success": False, "code": "100", "chineseErrCode": "订单不存在",
                          "englishErrCode": "order not found", "numberCode": 10100100}, "orderInfo": None}}}  # [U]
        return Response(orjson.dumps(missing), media_type="application/json")
    body = (b'{"jingdong_pop_order_get_responce":{"code":"0","orderDetailInfo":{' + _API_OK
            + b',"orderInfo":' + sim.payload(order) + b"}}}")
    return Response(body, media_type="application/json")


def _update_sku_stock(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    """jingdong.stock.write.updateSkuStock: skuId gets stockNum (full count); storeId is not simulated."""
    sku_id, stock_num = params.get("skuId"), params.get("stockNum")
    node: dict[str, Any] = {"code": "0", "success": True}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (sku_id, stock_num)) or stock_num < 0:
        node = {"code": "0", "success": False, "errorCode": "66", "errorMessage": "参数错误：skuId 与 stockNum 为整数，stockNum >= 0"}  # [U]
    elif sim.listing(CHANNEL, str(sku_id)) is None:
        node = {"code": "0", "success": False, "errorCode": "100", "errorMessage": "sku不存在"}  # [U]
    else:
        sim.set_channel_stock(CHANNEL, shop_id, str(sku_id), stock_num, via="jingdong.stock.write.updateSkuStock")
    return Response(orjson.dumps({"jingdong_stock_write_updateSkuStock_responce": node}), media_type="application/json")


# logiCoprId (the seller's carriers in 京麦「我的配送」) -> the simulator's carrier; JD ids as an
# integrator's code lists them (467 and 465 confirmed by a second one), 3046 德邦 [U].
_CARRIERS = {"467": "shunfeng", "1499": "zhongtong", "463": "yuantong", "1327": "yunda", "470": "shentong",
             "465": "ems", "2087": "jd", "3046": "debangkuaidi"}
# Refusals inside sopjosshipment_result (errorCode and words this simulator's own [U]).
_SHIPMENT_REFUSALS = {
    shipments.UNKNOWN: ("10100100", "订单不存在", "order not exist"),
    shipments.CANCELLED: ("10100101", "订单已取消，不能出库", "order canceled"),
    shipments.UNPAID: ("10100102", "订单未付款，不能出库", "order not paid"),
    shipments.ALREADY: ("10100103", "订单已出库", "order already out of storage"),
    shipments.BAD_WAYBILL: ("10100104", "运单号不合法", "invalid logiNo"),
    shipments.BAD_CARRIER: ("10100105", "承运商不存在或未签约", "invalid logiCoprId"),
}


def _shipment(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    """jingdong.pop.order.shipment (SOP 出库发货): the whole order leaves with one waybill."""
    order_id, copr, logi_no = str(params.get("orderId", "")), str(params.get("logiCoprId", "")), str(params.get("logiNo", ""))
    outcome = shipments.ship(sim, CHANNEL, shop_id, order_id, carrier=_CARRIERS.get(copr), platform_carrier=copr,
                             waybill_no=logi_no, line_ids=None, via="jingdong.pop.order.shipment", jd_logistics_id=copr)
    result: dict[str, Any] = {"success": True, "errorCode": "0", "chineseErrCode": "成功", "englishErrCode": "success"}
    if outcome.result != shipments.SHIPPED:
        code, zh, en = _SHIPMENT_REFUSALS[outcome.result]
        result = {"success": False, "errorCode": code, "chineseErrCode": zh, "englishErrCode": en}
    body = {"jingdong_pop_order_shipment_responce": {"code": "0", "sopjosshipment_result": result}}
    return Response(orjson.dumps(body), media_type="application/json")
