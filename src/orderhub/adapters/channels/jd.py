"""京东 JD POP orders: JOS router signing, pulling/fetching orders, and normalising them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson

from orderhub.adapters.channels.base import ShopConfig, checked_order
from orderhub.adapters.channels.http_common import backoff, gather_bounded, raise_for_http_status, retrying
from orderhub.domain.errors import ErrorCode, FetchError, NormalizationError
from orderhub.domain.money import yuan_to_fen
from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder, Shipment, allocate_line_paid
from orderhub.domain.status import Status

SHANGHAI = ZoneInfo("Asia/Shanghai")
JD_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# JD writes these where a time has not happened yet (orderEndTime, paymentConfirmTime).
UNSET_TIMES = frozenset({"", "0001-01-01 00:00:00", "1970-01-01 00:00:00"})

SEARCH_METHOD = "jingdong.pop.order.search"
GET_METHOD = "jingdong.pop.order.get"
PAGE_SIZE = 100
FETCH_CONCURRENCY = 16

# JD orderState -> the status it implies (TRADE_CANCELED is decided by paymentConfirmTime).
STATUS_MAP: dict[str, Status] = {
    "WAIT_SELLER_STOCK_OUT": Status.PAID,
    "WAIT_SELLER_DELIVERY": Status.PAID,
    "LOCKED": Status.PAID,
    "POP_ORDER_PAUSE": Status.PAID,
    "PAUSE": Status.PAID,
    "WAIT_SEND_CODE": Status.PAID,
    "WAIT_GOODS_RECEIVE_CONFIRM": Status.SHIPPED,
    "SEND_TO_DISTRIBUTION_CENER": Status.SHIPPED,  # sic: JD's spelling
    "DISTRIBUTION_CENTER_RECEIVED": Status.SHIPPED,
    "RECEIPTS_CONFIRM": Status.DELIVERED,
    "FINISHED_L": Status.COMPLETED,
    "TRADE_CANCELED": Status.CANCELLED,  # or CLOSED when never paid, see _status()
}
ORDER_STATES = ",".join(STATUS_MAP)

OPTIONAL_FIELDS = ",".join(
    [
        "orderId", "venderId", "orderType", "payType", "orderTotalPrice", "orderSellerPrice", "orderPayment",
        "freightPrice", "sellerDiscount", "balanceUsed", "orderState", "orderStateRemark", "deliveryType",
        "invoiceInfo", "invoiceCode", "orderRemark", "venderRemark", "orderStartTime", "orderEndTime", "modified",
        "paymentConfirmTime", "consigneeInfo", "itemInfoList", "couponDetailList", "pin", "realPin", "open_id",
        "open_id_buyer", "returnOrder", "waybill", "logisticsId", "directParentOrderId", "parentOrderId",
        "orderSource", "storeOrder", "idSopShipmenttype",
    ]
)

# Router error codes. The simulator follows docs/wire-protocols.md ("19" invalid signature, "7" rate
# limit); real JOS uses "12" invalid signature, "19" invalid access_token, "2" call limit, "67"/"66"
# backend unavailable. Both readings are covered: every auth/signature code is final, limits retry.
NON_RETRYABLE_CODES = frozenset({"11", "12", "18", "19", "14", "15"})
RETRYABLE_CODES = frozenset({"2", "7", "66", "67"})
_RETRY_WORDS = ("limit", "频率", "限流", "繁忙", "busy", "timeout", "超时", "unavailable", "不可用")
_AUTH_WORDS = ("sign", "签名", "token", "授权", "auth")


# ---------------------------------------------------------------------------------------------
# Signing and transport


def jos_sign(params: Mapping[str, str], app_secret: str) -> str:
    """UPPER(md5_hex(secret + k1v1k2v2... (sorted by key, `sign` excluded) + secret)), UTF-8."""
    body = "".join(f"{key}{params[key]}" for key in sorted(params) if key != "sign")
    return hashlib.md5(f"{app_secret}{body}{app_secret}".encode()).hexdigest().upper()


def param_json(params: Mapping[str, Any]) -> str:
    """360buy_param_json: keys sorted, no spaces, non-ASCII kept as UTF-8 (JOS: '按照字母先后顺序排序')."""
    return orjson.dumps(dict(params), option=orjson.OPT_SORT_KEYS).decode()


def format_jd_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("JD times must be time-zone aware")
    return moment.astimezone(SHANGHAI).strftime(JD_TIME_FORMAT)


def build_form(method: str, params: Mapping[str, Any], shop: ShopConfig, now: datetime) -> dict[str, str]:
    """The signed form fields of one router call."""
    form = {
        "method": method,
        "app_key": shop.app_key,
        "access_token": str(shop.extra.get("access_token", "")),
        "timestamp": format_jd_time(now),
        "v": "2.0",
        "format": "json",
        "360buy_param_json": param_json(params),
    }
    form["sign"] = jos_sign(form, shop.app_secret)
    return form


class JdChannel:
    """Pull channel over the JOS router (JD has no push we rely on; see FORMATS.md §3)."""

    channel = "jd"

    def __init__(
        self,
        *,
        attempts: int = 3,
        wait_min: float = 0.05,
        wait_max: float = 0.5,
        concurrency: int = FETCH_CONCURRENCY,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._attempts = attempts
        self._wait = backoff(wait_min, wait_max)
        self._concurrency = concurrency
        self._clock = clock or (lambda: datetime.now(SHANGHAI))

    async def call(self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One router call, retried quickly on retryable failures; returns the `<method>_responce` node."""
        return await retrying(self._attempts, self._wait)(self._call_once, http, shop, method, params)

    async def _call_once(self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        url = shop.api_base_url.rstrip("/") + "/routerjson"
        form = build_form(method, params, shop, self._clock())
        try:
            response = await http.post(url, data=form)
        except httpx.TransportError as exc:
            raise FetchError(f"jd {method}: transport error {exc!r}", retryable=True) from exc
        raise_for_http_status(f"jd {method}", response)
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            # A gateway/proxy page rather than JOS's JSON: most likely transient.
            raise FetchError(f"jd {method}: response is not JSON", retryable=True) from exc
        if not isinstance(body, dict):
            raise FetchError(f"jd {method}: response is not a JSON object", retryable=False)
        if "error_response" in body:
            raise _router_error(method, body["error_response"])
        node = body.get(method.replace(".", "_") + "_responce")
        if not isinstance(node, dict):
            raise FetchError(f"jd {method}: response has no {method.replace('.', '_')}_responce", retryable=False)
        return node

    async def pull_window(self, http: httpx.AsyncClient, shop: ShopConfig, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every order modified in [start, end), all pages (JD's end_date is inclusive; duplicates are harmless)."""
        seen: dict[str, dict[str, Any]] = {}
        page = 1
        while True:
            params = {
                "start_date": format_jd_time(start),
                "end_date": format_jd_time(end),
                "order_state": ORDER_STATES,
                "optional_fields": OPTIONAL_FIELDS,
                "page": str(page),
                "page_size": str(PAGE_SIZE),
                "dateType": 0,  # 0 = by modified time (wire-protocols.md)
            }
            node = await self.call(http, shop, SEARCH_METHOD, params)
            result = node.get("searchorderinfo_result")
            if not isinstance(result, dict):
                raise FetchError(f"jd {SEARCH_METHOD}: no searchorderinfo_result", retryable=False)
            _check_api_result(SEARCH_METHOD, result)
            orders = result.get("orderInfoList") or []
            for order in orders:
                # An order modified while we page can appear on two pages; keep the later copy.
                seen[str(order.get("orderId"))] = order
            try:
                total = int(result.get("orderTotal") or 0)
            except (TypeError, ValueError):
                raise FetchError(f"jd {SEARCH_METHOD}: orderTotal {result.get('orderTotal')!r}", retryable=False) from None
            if not orders or page * PAGE_SIZE >= total:
                return list(seen.values())
            page += 1

    async def fetch_orders(self, http: httpx.AsyncClient, shop: ShopConfig, original_ids: list[str]) -> dict[str, dict[str, Any]]:
        """jingdong.pop.order.get per id, at most `concurrency` calls in flight."""

        async def one(order_id: str) -> dict[str, Any] | None:
            params = {"order_id": order_id, "optional_fields": OPTIONAL_FIELDS, "order_state": ORDER_STATES}
            node = await self.call(http, shop, GET_METHOD, params)
            detail = node.get("orderDetailInfo")
            if not isinstance(detail, dict):
                raise FetchError(f"jd {GET_METHOD}: no orderDetailInfo", retryable=False)
            if _is_not_found(detail):
                return None
            _check_api_result(GET_METHOD, detail)
            info = detail.get("orderInfo")
            return info if isinstance(info, dict) and info else None

        return await gather_bounded(original_ids, one, self._concurrency, wait_for_all=False)

    def normalize(self, raw: dict[str, Any], shop: ShopConfig) -> NormalizedOrder:
        return checked_order(lambda: _normalize(raw, shop), "jd order is malformed")


def _router_error(method: str, error: Any) -> FetchError:
    if not isinstance(error, dict):
        return FetchError(f"jd {method}: error_response {error!r}", retryable=False)
    code = str(error.get("code", ""))
    text = f"{error.get('en_desc', '')} {error.get('zh_desc', '')}".strip()
    message = f"jd {method}: error {code} {text}"
    lowered = text.lower()
    if code in NON_RETRYABLE_CODES or any(word in lowered for word in _AUTH_WORDS):
        return FetchError(message, retryable=False)
    if code in RETRYABLE_CODES or any(word in lowered for word in _RETRY_WORDS):
        return FetchError(message, retryable=True)
    return FetchError(message, retryable=False)


def _check_api_result(method: str, node: dict[str, Any]) -> None:
    api = node.get("apiResult")
    if isinstance(api, dict) and api.get("success") is False:
        text = f"{api.get('englishErrCode', '')} {api.get('chineseErrCode', '')}".strip()
        retryable = any(word in text.lower() for word in _RETRY_WORDS)
        raise FetchError(f"jd {method}: apiResult {api.get('code', '')} {text}", retryable=retryable)


def _is_not_found(detail: dict[str, Any]) -> bool:
    api = detail.get("apiResult")
    if not isinstance(api, dict) or api.get("success") is not False:
        return False
    text = f"{api.get('englishErrCode', '')} {api.get('chineseErrCode', '')}".lower()
    return "不存在" in text or "not exist" in text or "not found" in text


# ---------------------------------------------------------------------------------------------
# Normalisation


def _text(data: Mapping[str, Any], key: str, field: str | None = None) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{field or key} is not a scalar", field or key)
    return str(value).strip()


def _required(data: Mapping[str, Any], key: str, field: str | None = None) -> str:
    value = _text(data, key, field)
    if not value:
        raise NormalizationError(ErrorCode.MISSING_FIELD, f"{field or key} is missing", field or key)
    return value


def _money(data: Mapping[str, Any], key: str, field: str | None = None, *, required: bool = True) -> int | None:
    value = _text(data, key, field)
    if not value:
        if required:
            raise NormalizationError(ErrorCode.MISSING_FIELD, f"{field or key} is missing", field or key)
        return None
    return yuan_to_fen(value, field or key)


def parse_jd_time(value: str, field: str) -> datetime | None:
    """'yyyy-MM-dd HH:mm:ss' in Beijing time -> aware datetime; JD's 'not yet' values -> None."""
    if value in UNSET_TIMES:
        return None
    try:
        return datetime.strptime(value, JD_TIME_FORMAT).replace(tzinfo=SHANGHAI)
    except ValueError:
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{field}: {value!r} is not yyyy-MM-dd HH:mm:ss", field) from None


def _status(state: str, paid_at: datetime | None) -> Status:
    if state not in STATUS_MAP:
        raise NormalizationError(ErrorCode.UNKNOWN_STATUS, f"unknown JD orderState {state!r}", "orderState")
    if state == "TRADE_CANCELED" and paid_at is None:
        return Status.CLOSED
    return STATUS_MAP[state]


def _lines(items: Any) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    if not isinstance(items, list) or not items:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "itemInfoList is empty", "itemInfoList")
    prices: list[tuple[int, int]] = []
    for index, item in enumerate(items):
        field = f"itemInfoList[{index}]"
        if not isinstance(item, dict):
            raise NormalizationError(ErrorCode.INVALID_FIELD, f"{field} is not an object", field)
        unit = _money(item, "jdPrice", f"{field}.jdPrice")
        qty_text = _required(item, "itemTotal", f"{field}.itemTotal")
        if not qty_text.isdigit() or int(qty_text) <= 0:
            message = f"{field}.itemTotal {qty_text!r} is not a positive integer"
            raise NormalizationError(ErrorCode.INVALID_FIELD, message, f"{field}.itemTotal")
        prices.append((unit or 0, int(qty_text)))
    return items, prices


def _normalize(raw: dict[str, Any], shop: ShopConfig) -> NormalizedOrder:
    if not isinstance(raw, dict):
        raise NormalizationError(ErrorCode.MALFORMED_ENVELOPE, "jd order is not an object")
    original_id = _required(raw, "orderId")
    state = _required(raw, "orderState")
    created_at = parse_jd_time(_required(raw, "orderStartTime"), "orderStartTime")
    if created_at is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "orderStartTime is unset", "orderStartTime")
    paid_at = parse_jd_time(_text(raw, "paymentConfirmTime"), "paymentConfirmTime")
    updated_at = parse_jd_time(_required(raw, "modified"), "modified") or created_at

    items, prices = _lines(raw.get("itemInfoList"))
    goods = sum(unit * qty for unit, qty in prices)
    total_price = _money(raw, "orderTotalPrice")
    if goods != total_price:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH, f"items add up to {goods} fen, orderTotalPrice is {total_price}", "orderTotalPrice"
        )

    coupons = raw.get("couponDetailList") or []
    if not isinstance(coupons, list):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "couponDetailList is not a list", "couponDetailList")
    discount = sum(
        _money(coupon, "couponPrice", f"couponDetailList[{i}].couponPrice") or 0 for i, coupon in enumerate(coupons)
    )
    discount_shop = _money(raw, "sellerDiscount", required=False)
    discount_platform = None
    if discount_shop is not None:
        discount_platform = discount - discount_shop
        if discount_platform < 0:
            raise NormalizationError(
                ErrorCode.AMOUNTS_MISMATCH,
                f"sellerDiscount {discount_shop} exceeds the coupons' total {discount}",
                "sellerDiscount",
            )
    shipping = _money(raw, "freightPrice") or 0
    # balanceUsed is a way of paying (JD account balance), not a reduction: it counts as paid.
    paid = (_money(raw, "orderPayment") or 0) + (_money(raw, "balanceUsed", required=False) or 0)
    if paid != goods - discount + shipping:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"orderPayment+balanceUsed {paid} != goods {goods} - coupons {discount} + freight {shipping}",
            "amounts.paid",
        )

    line_paid = allocate_line_paid([unit * qty for unit, qty in prices], paid - shipping)
    lines = tuple(
        Line(
            sku=_text(item, "outerSkuId") or None,
            title=_text(item, "skuName"),
            qty=qty,
            unit_price=unit,
            paid=share,
            gift=unit == 0,
            platform_sku_id=_text(item, "skuId") or None,
        )
        for item, (unit, qty), share in zip(items, prices, line_paid, strict=True)
    )

    consignee = raw.get("consigneeInfo") or {}
    if not isinstance(consignee, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "consigneeInfo is not an object", "consigneeInfo")
    waybill = _text(raw, "waybill")
    return NormalizedOrder(
        channel="jd",
        shop_id=shop.shop_id,
        original_id=original_id,
        status=_status(state, paid_at),
        platform_status={"orderState": state},
        created_at=created_at,
        paid_at=paid_at,
        updated_at=updated_at,
        amounts=Amounts(goods, discount, shipping, paid, discount_shop, discount_platform),
        lines=lines,
        address=Address(
            province=_text(consignee, "province") or None,
            city=_text(consignee, "city") or None,
            district=_text(consignee, "county") or None,
            detail=_text(consignee, "fullAddress") or None,
        ),
        buyer=Buyer(
            platform_buyer_id=_text(raw, "open_id_buyer") or _text(raw, "pin") or None,
            name=_text(consignee, "fullname") or None,
            phone=_text(consignee, "mobile") or _text(consignee, "telephone") or None,
        ),
        buyer_message=_text(raw, "orderRemark") or None,
        seller_remark=_text(raw, "venderRemark") or None,
        # JD joins several parcels with "|" (and "," within a carrier); kept verbatim, raw has the rest.
        shipment=Shipment(carrier=_text(raw, "logisticsId") or None, waybill_no=waybill) if waybill else None,
        pii={},
        raw=raw,
    )
