"""抖店 (Douyin shop) server end: order payloads, request signatures, endpoints and pushes."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request, Response

from orderhub.demo.catalogue import CATEGORY_CIDS
from orderhub.simulator import model as m
from orderhub.simulator import pii, shipments
from orderhub.simulator.amounts import end_of_day_cst
from orderhub.simulator.pusher import WEBHOOK_PATHS, Push

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

CHANNEL = "douyin"
_STATUS = {
    m.UNPAID: (1, "待支付"), m.PAID: (2, "备货中"), m.SHIPPED: (3, "已发货"),
    m.COMPLETED: (5, "已完成"), m.CANCELLED: (4, "已取消"), m.CLOSED: (4, "已取消"),
}
_REFUNDED_BEFORE_SHIP = (21, "发货前退款完结")
_AFTER_SALE = {
    m.NO_REFUND: {"after_sale_status": 0, "after_sale_type": 0, "refund_status": 0},
    m.REFUNDING: {"after_sale_status": 6, "after_sale_type": 2, "refund_status": 1},
    m.REFUNDED: {"after_sale_status": 12, "after_sale_type": 2, "refund_status": 3},
}
TAGS = {m.CREATE: "100", m.PAY: "101", m.SHIP: "102", m.COMPLETE: "103", m.ADDRESS_CHANGE: "105",
        m.CANCEL: "106", m.CLOSE: "106", m.REFUND_CREATE: "200", m.REFUND_SUCCESS: "206"}


# ---------------------------------------------------------------- payload (order.orderDetail)

def _post_addr(o: m.SimOrder, masked: bool) -> dict[str, Any]:
    a = o.address
    r = a.region
    out: dict[str, Any] = {
        "province": {"name": r.province, "id": r.province_code},
        "city": {"name": r.city, "id": r.city_code},
        "town": {"name": r.district, "id": r.district_code},
        "street": {"name": a.street, "id": a.street_code},
    }
    if masked:
        out["detail"] = a.road + "***"
    else:
        out["encrypt_detail"] = pii.douyin_text(a.detail)
    return out


def _status(o: m.SimOrder) -> tuple[int, str, int, str]:
    code, desc = _STATUS[o.status]
    main, main_desc = code, desc
    if o.status == m.CANCELLED and o.refund_full:
        main, main_desc = _REFUNDED_BEFORE_SHIP
    return code, desc, main, main_desc


def remember_pii(vault: pii.Vault, o: m.SimOrder) -> None:
    c, a = o.customer, o.address
    vault.remember(pii.douyin_phone(c.phone), c.phone)
    vault.remember(pii.douyin_text(c.name), c.name)
    vault.remember(pii.douyin_text(a.detail), a.detail)


def render(o: m.SimOrder) -> dict[str, Any]:
    """The order as `data.shop_order_detail` / one `shop_order_list[]` entry."""
    c = o.customer
    tel = pii.douyin_phone(c.phone)
    receiver = pii.douyin_text(c.name)
    post_addr = _post_addr(o, masked=False)
    mask_addr = _post_addr(o, masked=True)
    mask_name, mask_tel = pii.mask_name(c.name), pii.mask_phone_douyin(c.phone)
    status, status_desc, main, main_desc = _status(o)
    exp_ship = end_of_day_cst(o.pay_time, 2) if o.pay_time else 0
    has_gift = any(line.gift for line in o.lines)
    common = {
        "biz": 2, "biz_desc": "小店", "order_type": 0, "order_type_desc": "普通订单",
        "trade_type": 0, "trade_type_desc": "普通",
    }
    sku_list = []
    for line in o.lines:
        sku = line.sku
        s_status, s_desc, s_main, s_main_desc = status, status_desc, main, main_desc
        if line.refund == m.REFUNDED:
            s_status, s_desc = 4, "已取消"
            s_main, s_main_desc = _REFUNDED_BEFORE_SHIP
        first, second, third = CATEGORY_CIDS[sku.category]
        sku_list.append({
            "order_id": line.line_id, "parent_order_id": o.original_id, "order_level": 3, **common,
            "order_status": s_status, "order_status_desc": s_desc, "main_status": s_main, "main_status_desc": s_main_desc,
            "pay_time": o.pay_time, "order_expire_time": 1800, "finish_time": o.finish_time,
            "create_time": o.create_time, "update_time": o.update_time, "cancel_reason": o.cancel_reason,
            "b_type": 2, "b_type_desc": "抖音", "sub_b_type": 1, "sub_b_type_desc": "app内-原生",
            "author_id": 0, "author_name": "", "theme_type": "0", "theme_type_desc": "其他", "room_id": 0,
            "c_biz": 8, "c_biz_desc": "小店自卖", "pay_type": o.pay_type, "channel_payment_no": o.payment_no,
            "order_amount": line.goods, "pay_amount": line.paid, "post_amount": 0, "post_insurance_amount": 0,
            "modify_amount": 0, "modify_post_amount": 0, "promotion_amount": line.discount,
            "promotion_shop_amount": line.discount_shop, "promotion_platform_amount": line.discount_platform,
            "shop_cost_amount": line.discount_shop, "platform_cost_amount": line.discount_platform,
            "promotion_talent_amount": 0, "promotion_pay_amount": 0, "code": sku.code,
            "encrypt_post_tel": tel, "encrypt_post_receiver": receiver, "post_addr": post_addr,
            "exp_ship_time": exp_ship, "ship_time": o.ship_time, "logistics_receipt_time": 0,
            "confirm_receipt_time": o.finish_time, "goods_type": 0,
            "product_id": int(sku.douyin_product_id), "product_id_str": sku.douyin_product_id,
            "sku_id": int(sku.douyin_sku_id), "spec": [{"name": k, "value": v} for k, v in sku.specs],
            "first_cid": first, "second_cid": second, "third_cid": third, "fourth_cid": 0,
            "out_sku_id": sku.code, "supplier_id": "", "out_product_id": sku.spu,
            "inventory_list": [{"warehouse_id": "", "out_warehouse_id": "", "inventory_type": 1,
                                "inventory_type_desc": "普通库存", "count": line.qty, "warehouse_type": 0}],
            "reduce_stock_type": 1, "reduce_stock_type_desc": "下单减库存",
            "origin_amount": line.unit_price, "has_tax": False, "item_num": line.qty, "sum_amount": line.goods,
            "source_platform": "", "product_pic": f"https://example.invalid/img/{sku.code}.jpg", "is_comment": 0,
            "product_name": sku.product_name, "pre_sale_type": 0, "after_sale_info": dict(_AFTER_SALE[line.refund]),
            "receive_type": 1, "need_serial_number": False, "ad_env_type": "", "sku_order_tag_ui": [],
            "appointment_ship_time": 0,
            "given_product_type": "FREE" if line.gift else ("MASTER" if has_gift else ""),
            "mask_post_receiver": mask_name, "mask_post_tel": mask_tel, "mask_post_addr": mask_addr, "tax_amount": 0,
        })
    promo_shop, promo_platform = o.discount_shop, o.discount_platform
    promo = promo_shop + promo_platform
    return {
        "shop_id": int(o.shop_id), "shop_name": o.shop_name, "open_id": "", "order_id": o.original_id,
        "order_level": 2, **common,
        "order_status": status, "order_status_desc": status_desc, "main_status": main, "main_status_desc": main_desc,
        "pay_time": o.pay_time, "order_expire_time": 1800, "finish_time": o.finish_time,
        "create_time": o.create_time, "update_time": o.update_time, "cancel_reason": o.cancel_reason,
        "buyer_words": o.buyer_message, "seller_words": "", "b_type": 2, "b_type_desc": "抖音",
        "sub_b_type": 1, "sub_b_type_desc": "app内-原生", "app_id": 0, "pay_type": o.pay_type,
        "channel_payment_no": o.payment_no, "order_amount": o.goods, "pay_amount": o.paid,
        "post_amount": o.post_amount, "post_insurance_amount": 0, "modify_amount": 0, "modify_post_amount": 0,
        "promotion_amount": promo, "promotion_shop_amount": promo_shop, "promotion_platform_amount": promo_platform,
        "shop_cost_amount": promo_shop, "platform_cost_amount": promo_platform, "promotion_talent_amount": 0,
        "promotion_pay_amount": 0, "post_tel": "", "encrypt_post_tel": tel, "post_receiver": "",
        "encrypt_post_receiver": receiver, "post_addr": post_addr, "exp_ship_time": exp_ship,
        "ship_time": o.ship_time, "logistics_info": _logistics(o), "sku_order_list": sku_list,
        "seller_remark_stars": 0, "order_phase_list": [], "doudian_open_id": c.douyin_open_id,
        "serial_number_list": [], "promotion_redpack_amount": 0, "promotion_redpack_platform_amount": 0,
        "promotion_redpack_talent_amount": 0, "appointment_ship_time": 0, "shop_order_tag_ui": [],
        "total_promotion_amount": promo, "post_origin_amount": o.post_amount, "post_promotion_amount": 0,
        "user_tag_ui": [], "author_cost_amount": 0, "only_platform_cost_amount": promo_platform,
        "promise_info": "", "mask_post_receiver": mask_name, "mask_post_tel": mask_tel, "mask_post_addr": mask_addr,
        "packing_amount": 0, "tax_amount": 0, "address_tag_ui": [],
    }


def _logistics(o: m.SimOrder) -> list[dict[str, Any]]:
    if o.shipment is None:
        return []
    s = o.shipment
    return [{
        "tracking_no": s.tracking_no, "company": s.carrier_code, "company_name": s.carrier_name,
        "ship_time": o.ship_time, "delivery_id": "",
        "product_info": [{
            "product_name": line.sku.product_name, "price": line.unit_price, "outer_sku_id": line.sku.code,
            "sku_id": int(line.sku.douyin_sku_id), "sku_specs": [{"name": k, "value": v} for k, v in line.sku.specs],
            "product_count": line.qty, "product_id": int(line.sku.douyin_product_id), "sku_order_id": line.line_id,
            "product_id_str": line.sku.douyin_product_id,
        } for line in o.lines if line.refund != m.REFUNDED],
    }]


# ---------------------------------------------------------------- pushes

def push_data(o: m.SimOrder, kind: str) -> dict[str, Any]:
    """The `data` object of the push for event `kind` (serialised as a JSON string in the body)."""
    status = _STATUS[o.status][0]
    head: dict[str, Any] = {"p_id": int(o.original_id), "s_ids": [int(x.line_id) for x in o.lines], "shop_id": int(o.shop_id)}
    if kind == m.CREATE:
        return {**head, "order_status": 1, "order_type": 0, "biz": 2, "create_time": o.create_time}
    if kind == m.PAY:
        return {**head, "order_status": 105, "order_type": 0, "pay_type": o.pay_type, "pay_time": o.pay_time,
                "pay_amount": o.paid, "biz": 2}
    if kind in (m.CANCEL, m.CLOSE):
        return {**head, "order_status": 4, "order_type": 0, "cancel_time": o.cancel_time,
                "cancel_reason": o.cancel_reason, "biz": 2}
    if kind in (m.REFUND_CREATE, m.REFUND_SUCCESS):
        refunded = [x for x in o.lines if x.refund != m.NO_REFUND]
        return {**head, "s_ids": [int(x.line_id) for x in refunded], "order_status": status,
                "aftersale_id": int(o.refund_id), "aftersale_type": 2,
                "refund_amount": m.refund_amount(o), "biz": 2, "update_time": o.update_time}
    return {**head, "order_status": status, "order_type": 0, "biz": 2, "update_time": o.update_time}


def sign_push(app_key: str, body: bytes, app_secret: str) -> str:
    return hashlib.md5(app_key.encode() + body + app_secret.encode()).hexdigest()


def build_push(shop: dict[str, Any], o: m.SimOrder, kind: str, msg_id: str) -> Push | None:
    tag = TAGS.get(kind)
    if tag is None:
        return None
    data = orjson.dumps(push_data(o, kind)).decode()
    body = orjson.dumps([{"tag": tag, "msg_id": msg_id, "data": data}])
    headers = {"Content-Type": "application/json", "app-id": shop["app_key"],
               "event-sign": sign_push(shop["app_key"], body, shop["app_secret"])}
    return Push(CHANNEL, o.original_id, tag, WEBHOOK_PATHS[CHANNEL], headers, body, o.update_time)


# ---------------------------------------------------------------- open API endpoints

def request_sign(app_secret: str, app_key: str, method: str, param_json: str, timestamp: str, v: str, sign_method: str) -> str:
    msg = f"{app_secret}app_key{app_key}method{method}param_json{param_json}timestamp{timestamp}v{v}{app_secret}"
    if sign_method == "hmac-sha256":
        return hmac.new(app_secret.encode(), msg.encode(), hashlib.sha256).hexdigest()
    return hashlib.md5(msg.encode()).hexdigest()


_ENVELOPE_HEAD = b'{"code":10000,"msg":"success","sub_code":"","sub_msg":"","log_id":"'


def _ok(sim: Simulator, data: bytes) -> Response:
    return Response(_ENVELOPE_HEAD + sim.log_id().encode() + b'","data":' + data + b"}", media_type="application/json")


def _error(sim: Simulator, code: int, msg: str, sub_code: str, sub_msg: str) -> Response:
    body = {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg, "log_id": sim.log_id(), "data": {}}
    return Response(orjson.dumps(body), media_type="application/json")


def make_router(sim: Simulator) -> APIRouter:
    router = APIRouter()
    pack_replies: dict[str, bytes] = {}  # logisticsAddMultiPack request_id -> its first successful reply

    @router.post("/{method_path:path}")
    async def call(method_path: str, request: Request) -> Response:
        q = request.query_params
        app_key = q.get("app_key", "")
        method = q.get("method", "")
        param_json = q.get("param_json")
        if param_json is None:
            param_json = (await request.body()).decode()
        shop = sim.shop_by_app_key(CHANNEL, app_key)
        if shop is None:
            return _error(sim, 30001, "Authentication failed", "isv.app-key-invalid", "app_key 不存在")
        if method.replace(".", "/") != method_path:
            return _error(sim, 40004, "参数错误", "isv.parameter-invalid:method", "method 与请求路径不符")
        sign_method = q.get("sign_method", "md5")
        expected = request_sign(shop["app_secret"], app_key, method, param_json, q.get("timestamp", ""),
                                q.get("v", ""), sign_method)
        if q.get("v") != "2" or not hmac.compare_digest(expected, q.get("sign", "").lower()):
            return _error(sim, 30001, "签名错误", "isv.signature-invalid", "签名校验失败，请检查签名算法与参数")
        try:
            params = orjson.loads(param_json) if param_json else {}
        except orjson.JSONDecodeError:
            return _error(sim, 40004, "参数错误", "isv.parameter-invalid:param_json", "param_json 不是合法 JSON")
        if method == "token.create":
            return _token_create(sim, shop, params)
        shop_id = sim.token_shop(CHANNEL, q.get("access_token", ""))
        if shop_id is None or shop_id != shop["shop_id"]:
            return _error(sim, 30002, "access_token 不合法", "isv.access-token-invalid", "access_token 已过期或不存在")
        if method == "order.orderDetail":
            order = sim.get(CHANNEL, str(params.get("shop_order_id", "")))
            if order is None or order.shop_id != shop_id:
                return _error(sim, 50002, "业务处理失败", "isv.business-failed:order-not-found", "订单不存在")
            return _ok(sim, b'{"shop_order_detail":' + sim.payload(order) + b"}")
        if method == "order.searchList":
            return _search(sim, shop_id, params)
        if method == "order.batchDecrypt":
            return _batch_decrypt(sim, shop_id, params)
        if method == "sku.syncStock":
            return _sync_stock(sim, shop_id, params)
        if method in ("order.logisticsAdd", "order.logisticsAddMultiPack"):
            return _logistics_add(sim, shop_id, method, params, pack_replies)
        return _error(sim, 40004, "参数错误", "isv.method-not-found", f"不支持的方法 {method}")

    return router


def _token_create(sim: Simulator, shop: dict[str, Any], params: dict[str, Any]) -> Response:
    if params.get("grant_type") != "authorization_self" or str(params.get("shop_id", "")) != shop["shop_id"]:
        return _error(sim, 30002, "授权失败", "isv.grant-invalid", "grant_type 或 shop_id 不正确")
    token, refresh = sim.issue_token(CHANNEL, shop["shop_id"])
    data = {"access_token": token, "expires_in": 604800, "refresh_token": refresh,
            "shop_id": shop["shop_id"], "shop_name": shop["name"]}
    return _ok(sim, orjson.dumps(data))


def _search(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    try:
        page, size = int(params.get("page", 0)), int(params.get("size", 20))
        start = int(params.get("update_time_start", 0))
        end = int(params.get("update_time_end", 2**62))
    except (TypeError, ValueError):
        return _error(sim, 40004, "参数错误", "isv.parameter-invalid", "page/size/update_time 必须为整数")
    if page < 0 or not 1 <= size <= 100:
        return _error(sim, 40004, "参数错误", "isv.parameter-invalid:size", "size 取值 1-100，page 从 0 开始")
    desc = params.get("order_asc") is False
    total, orders = sim.search(CHANNEL, shop_id, start, end, page * size, size, descending=desc)
    head = orjson.dumps({"page": page, "size": size, "total": total})[:-1]
    return _ok(sim, head + b',"shop_order_list":[' + b",".join(sim.payload(o) for o in orders) + b"]}")


_DECRYPT_BATCH = 50  # cipher_infos per call [U: the documented limit as integrators quote it]


def _batch_decrypt(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    """order.batchDecrypt: each cipher decrypted only for the shop whose order it belongs to."""
    infos = params.get("cipher_infos")
    if not isinstance(infos, list) or not 1 <= len(infos) <= _DECRYPT_BATCH:
        return _error(sim, 40004, "参数错误", "isv.parameter-invalid:cipher_infos", f"cipher_infos 为 1-{_DECRYPT_BATCH} 条")
    out = []
    for info in infos:
        auth_id = str(info.get("auth_id", "")) if isinstance(info, dict) else ""
        cipher = str(info.get("cipher_text", "")) if isinstance(info, dict) else ""
        order = sim.get(CHANNEL, auth_id)
        plain = sim.decrypt(cipher) if order is not None and order.shop_id == shop_id else None
        if plain is None or not _belongs(order, cipher):
            out.append({"auth_id": auth_id, "cipher_text": cipher, "decrypt_text": "", "err_no": 300008,
                        "err_msg": "无权限解密该密文", "is_virtual_tel": False, "phone_no_a": "", "phone_no_b": ""})
            continue
        out.append({"auth_id": auth_id, "cipher_text": cipher, "decrypt_text": plain, "err_no": 0, "err_msg": "",
                    "is_virtual_tel": False, "phone_no_a": "", "phone_no_b": ""})
    return _ok(sim, orjson.dumps({"decrypt_infos": out, "custom_err": {"err_code": 0, "err_msg": ""}}))


def _belongs(order: m.SimOrder | None, cipher: str) -> bool:
    """A cipher is decrypted only together with the order it came with (auth_id)."""
    if order is None:
        return False
    c, a = order.customer, order.address
    return cipher in (pii.douyin_phone(c.phone), pii.douyin_text(c.name), pii.douyin_text(a.detail))


def _sync_stock(sim: Simulator, shop_id: str, params: dict[str, Any]) -> Response:
    """sku.syncStock, full updates only: product_id + sku_id (int64) get stock_num (>= 0)."""
    product_id, sku_id, stock_num = params.get("product_id"), params.get("sku_id"), params.get("stock_num")
    if params.get("incremental") not in (None, False):
        # incremental=true needs idempotent_id on the platform; OrderHub always sends full counts
        return _error(sim, 40004, "参数错误", "isv.parameter-invalid:incremental", "模拟器仅支持全量更新 incremental=false")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (product_id, sku_id, stock_num)) or stock_num < 0:
        return _error(sim, 40004, "参数错误", "isv.parameter-invalid", "product_id/sku_id 为整数，stock_num 为非负整数")
    if sim.listing(CHANNEL, str(sku_id), str(product_id)) is None:
        return _error(sim, 50002, "业务处理失败", "isv.business-failed:sku-not-found", "商品或规格不存在")
    sim.set_channel_stock(CHANNEL, shop_id, str(sku_id), stock_num, via="sku.syncStock")
    return _ok(sim, b"{}")


# ---------------------------------------------------------------- ship (order.logisticsAdd / logisticsAddMultiPack)

# Refusals as 抖店 words them (its error table, as copied in sevencat/ecommerce_sdk).
_SHIP_REFUSALS = {
    shipments.UNKNOWN: (50002, "isv.business-failed:60033", "订单不存在，请仔细检查后重试。"),
    shipments.CANCELLED: (50002, "isv.business-failed:60021", "订单已取消，禁止发货。"),
    shipments.UNPAID: (50002, "isv.business-failed:60137", "订单未支付，禁止发货。"),
    shipments.ALREADY: (50002, "isv.business-failed:60110", "订单已发货，不允许再次执行发货。"),
    shipments.BAD_WAYBILL: (40004, "isv.parameter-invalid:60017", "物流单号不符合规则"),
    shipments.BAD_CARRIER: (50002, "isv.business-failed:60018", "暂不支持该物流公司或物流商已失效，请检查。"),
    shipments.BAD_LINES: (50002, "isv.business-failed:60102", "60102:商品单不存在，请仔细检查后重试"),
}


def _logistics_add(sim: Simulator, shop_id: str, method: str, params: dict[str, Any], replies: dict[str, bytes]) -> Response:
    """logisticsAdd ships the whole order; logisticsAddMultiPack ships the sku orders each pack lists,
    and a repeated request_id gets the first call's reply without shipping again."""
    order_id = str(params.get("order_id") or "")
    request_id = str(params.get("request_id") or "")
    if method == "order.logisticsAdd":
        packs: Any = [{"company_code": params.get("company_code"), "logistics_code": params.get("logistics_code")}]
    else:
        if not request_id:
            return _error(sim, 40002, "缺少必选参数", "isv.missing-parameter:50050", "发货请求id不能为空，请检查requestId")
        if request_id in replies:
            return _ok(sim, replies[request_id])
        packs = params.get("pack_list")
    if not order_id or not isinstance(packs, list) or not packs or not all(isinstance(p, dict) for p in packs):
        return _error(sim, 40004, "非法的参数", "isv.parameter-invalid:50049", "订单号或包裹信息为空或格式错误")
    out = []
    for pack in packs:
        line_ids = None
        if "shipped_order_info" in pack:
            infos = pack["shipped_order_info"]
            if not isinstance(infos, list) or not infos or not all(isinstance(i, dict) for i in infos):
                return _error(sim, 50002, "业务处理失败", "isv.business-failed:60036", "发货信息为空。")
            line_ids = [str(i.get("shipped_order_id", "")) for i in infos]
        code, waybill = str(pack.get("company_code") or ""), str(pack.get("logistics_code") or "")
        if not code:
            return _error(sim, 40002, "缺少必选参数", "isv.missing-parameter:60011", "物流公司编码不允许为空。")
        outcome = shipments.ship(sim, CHANNEL, shop_id, order_id, carrier=code if code in shipments.CARRIER_NAMES else None,
                                 platform_carrier=code, waybill_no=waybill, line_ids=line_ids, via=method)
        if outcome.result != shipments.SHIPPED:
            err, sub_code, sub_msg = _SHIP_REFUSALS[outcome.result]
            return _error(sim, err, "业务处理失败" if err == 50002 else "非法的参数", sub_code, sub_msg)
        out.append({"shipped_order_info": pack.get("shipped_order_info") or [], "logistics_code": waybill,
                    "pack_id": f"{order_id}{len(out) + 1:02d}"})
    data = orjson.dumps({"pack_list": out}) if method == "order.logisticsAddMultiPack" else b"{}"
    if request_id:
        replies[request_id] = data
    return _ok(sim, data)
