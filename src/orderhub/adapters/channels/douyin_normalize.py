"""抖店 Douyin shop order (order.orderDetail / order.searchList item) -> canonical order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from orderhub.adapters.channels.base import checked_order
from orderhub.domain.errors import ErrorCode, NormalizationError
from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder, RefundStatus, Shipment
from orderhub.domain.status import Status

CHANNEL = "douyin"

# order_status -> OrderHub status. 4 (cancelled) depends on whether the buyer had paid; see
# _status(). 105 已支付 and 2 备货中 are both "paid, not shipped"; 101 部分发货 counts as shipped
# because a parcel is already on its way and OrderHub must not send the rest a second time.
STATUS_MAP: dict[int, Status] = {
    1: Status.PENDING_PAYMENT,
    105: Status.PAID,
    2: Status.PAID,
    101: Status.SHIPPED,
    3: Status.SHIPPED,
    5: Status.COMPLETED,
}
CANCELLED_STATUS = 4

# after_sale_info.refund_status: 1 待退款, 2 退款中, 3 退款成功; 0 无需退款 and 4 退款失败 mean none.
REFUND_STATUS_MAP: dict[int, str] = {1: RefundStatus.REFUNDING, 2: RefundStatus.REFUNDING, 3: RefundStatus.REFUNDED}

GIFT_PRODUCT_TYPE = "FREE"


def normalize_douyin_order(raw: dict[str, Any], fallback_shop_id: str) -> NormalizedOrder:
    """One Douyin shop order (`data.shop_order_detail` or a `shop_order_list` item) -> canonical order."""
    if not isinstance(raw, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "shop order is not a JSON object", "shop_order")
    return checked_order(lambda: _build(raw, fallback_shop_id), "unexpected shop order shape", "shop_order")


def _build(raw: dict[str, Any], fallback_shop_id: str) -> NormalizedOrder:
    original_id = _text(_require(raw, "order_id", "order_id"), "order_id")
    created_at = _time(_require(raw, "create_time", "create_time"), "create_time")
    if created_at is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "create_time is unset", "create_time")
    paid_at = _time(raw.get("pay_time"), "pay_time")
    updated_at = _time(raw.get("update_time"), "update_time") or created_at

    sku_orders = _require(raw, "sku_order_list", "sku_order_list")
    if not isinstance(sku_orders, list) or not sku_orders:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "sku_order_list is empty", "sku_order_list")
    lines = tuple(_line(item, index) for index, item in enumerate(sku_orders))

    amounts = _amounts(raw, lines)
    shop_id = raw.get("shop_id")
    return NormalizedOrder(
        channel=CHANNEL,
        shop_id=str(shop_id) if shop_id not in (None, "", 0) else fallback_shop_id,
        original_id=original_id,
        status=_status(raw, paid_at),
        platform_status={"order_status": raw.get("order_status"), "main_status": raw.get("main_status")},
        created_at=created_at,
        paid_at=paid_at,
        updated_at=updated_at,
        amounts=amounts,
        lines=lines,
        address=_address(raw),
        buyer=Buyer(
            platform_buyer_id=raw.get("doudian_open_id") or None,
            name=raw.get("mask_post_receiver") or None,
            phone=raw.get("mask_post_tel") or None,
        ),
        buyer_message=raw.get("buyer_words") or None,
        seller_remark=raw.get("seller_words") or None,
        shipment=_shipment(raw),
        pii=_pii(raw),
        raw=raw,
    )


def _status(raw: dict[str, Any], paid_at: datetime | None) -> Status:
    code = _int(_require(raw, "order_status", "order_status"), "order_status", ErrorCode.UNKNOWN_STATUS)
    if code == CANCELLED_STATUS:
        return Status.CANCELLED if paid_at is not None else Status.CLOSED
    try:
        return STATUS_MAP[code]
    except KeyError:
        raise NormalizationError(ErrorCode.UNKNOWN_STATUS, f"unknown order_status {code}", "order_status") from None


def _line(item: Any, index: int) -> Line:
    path = f"sku_order_list[{index}]"
    if not isinstance(item, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path} is not an object", path)
    gift = item.get("given_product_type") == GIFT_PRODUCT_TYPE
    qty = _money(_require(item, "item_num", f"{path}.item_num"), f"{path}.item_num")
    origin = _money(_require(item, "origin_amount", f"{path}.origin_amount"), f"{path}.origin_amount")
    pay = _money(_require(item, "pay_amount", f"{path}.pay_amount"), f"{path}.pay_amount")
    post = _money(item.get("post_amount", 0), f"{path}.post_amount")
    after_sale = item.get("after_sale_info") or {}
    refund_code = after_sale.get("refund_status") if isinstance(after_sale, dict) else None
    sku_id = item.get("sku_id")
    line_id = item.get("order_id")
    return Line(
        sku=item.get("code") or item.get("out_sku_id") or None,
        title=str(item.get("product_name") or ""),
        qty=qty,
        unit_price=0 if gift else origin,
        paid=pay - post,
        gift=gift,
        platform_sku_id=str(sku_id) if sku_id not in (None, "", 0) else None,
        platform_line_id=str(line_id) if line_id not in (None, "") else None,
        refund_status=REFUND_STATUS_MAP.get(refund_code, RefundStatus.NONE),
    )


def _amounts(raw: dict[str, Any], lines: tuple[Line, ...]) -> Amounts:
    goods = sum(line.unit_price * line.qty for line in lines)
    shipping = _money(_require(raw, "post_amount", "post_amount"), "post_amount")
    paid = _money(_require(raw, "pay_amount", "pay_amount"), "pay_amount")
    discount = goods + shipping - paid
    if discount < 0:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"pay_amount {paid} exceeds goods {goods} + post_amount {shipping}",
            "pay_amount",
        )
    promotion = _money(_require(raw, "promotion_amount", "promotion_amount"), "promotion_amount")
    promotion_shop = _money(_require(raw, "promotion_shop_amount", "promotion_shop_amount"), "promotion_shop_amount")
    promotion_platform = _money(
        _require(raw, "promotion_platform_amount", "promotion_platform_amount"), "promotion_platform_amount"
    )
    # Newer fields; older payloads leave them out, which means no talent/payment subsidy.
    promotion_talent = _money(raw.get("promotion_talent_amount", 0), "promotion_talent_amount")
    promotion_pay = _money(raw.get("promotion_pay_amount", 0), "promotion_pay_amount")
    if promotion != promotion_shop + promotion_platform + promotion_talent:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"promotion_amount {promotion} != shop {promotion_shop} + platform {promotion_platform}"
            f" + talent {promotion_talent}",
            "promotion_amount",
        )
    # Talent (达人) and payment-channel subsidies are paid back to the merchant in settlement,
    # so like platform coupons they are not borne by the merchant. Everything else in the
    # derived discount - shop coupons and the merchant's own price changes - is.
    discount_platform = promotion_platform + promotion_talent + promotion_pay
    discount_shop = discount - discount_platform
    if discount_shop < 0:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"platform-borne discount {discount_platform} exceeds the whole discount {discount}",
            "amounts.discount_platform",
        )
    lines_paid = sum(line.paid for line in lines)
    if lines_paid != paid - shipping:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"sku pay_amount (less sku post_amount) adds up to {lines_paid}, pay_amount - post_amount is {paid - shipping}",
            "sku_order_list.pay_amount",
        )
    return Amounts(
        goods=goods,
        discount=discount,
        shipping=shipping,
        paid=paid,
        discount_shop=discount_shop,
        discount_platform=discount_platform,
    )


def _address(raw: dict[str, Any]) -> Address:
    masked = raw.get("mask_post_addr")
    source = masked if isinstance(masked, dict) else raw.get("post_addr")
    if not isinstance(source, dict):
        return Address(province=None, city=None, district=None, detail=None)
    return Address(
        province=_area_name(source, "province"),
        city=_area_name(source, "city"),
        district=_area_name(source, "town"),  # 抖店 calls the 区县 level "town"
        # Only the masked address carries a displayable detail; post_addr.detail is plaintext or empty.
        detail=(source.get("detail") or None) if source is masked else None,
    )


def _area_name(addr: dict[str, Any], key: str) -> str | None:
    area = addr.get(key)
    return (area.get("name") or None) if isinstance(area, dict) else None


def _pii(raw: dict[str, Any]) -> dict[str, str]:
    post_addr = raw.get("post_addr")
    candidates = {
        "phone": raw.get("encrypt_post_tel"),
        "name": raw.get("encrypt_post_receiver"),
        "address_detail": post_addr.get("encrypt_detail") if isinstance(post_addr, dict) else None,
    }
    return {key: value for key, value in candidates.items() if isinstance(value, str) and value}


def _shipment(raw: dict[str, Any]) -> Shipment | None:
    logistics = raw.get("logistics_info")
    if not isinstance(logistics, list) or not logistics or not isinstance(logistics[0], dict):
        return None
    first = logistics[0]
    return Shipment(
        carrier=first.get("company_name") or first.get("company") or None,
        waybill_no=first.get("tracking_no") or None,
    )


# -- field access that fails with a code and a field path, never a bare KeyError ------------


def _require(obj: dict[str, Any], key: str, path: str) -> Any:
    if key not in obj or obj[key] is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, f"{path} is missing", path)
    return obj[key]


def _int(value: Any, path: str, code: ErrorCode = ErrorCode.INVALID_FIELD) -> int:
    if isinstance(value, bool):
        raise NormalizationError(code, f"{path}: {value!r} is not an integer", path)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise NormalizationError(code, f"{path}: {value!r} is not an integer", path)


def _money(value: Any, path: str) -> int:
    amount = _int(value, path, ErrorCode.INVALID_AMOUNT)
    if amount < 0:
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path} is negative ({amount})", path)
    return amount


def _text(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path}: {value!r} is not an id", path)
    text = str(value).strip()
    if not text:
        raise NormalizationError(ErrorCode.MISSING_FIELD, f"{path} is empty", path)
    return text


def unix_seconds(value: Any, path: str) -> datetime | None:
    """Unix seconds -> aware UTC datetime; 0 (抖店's "unset") -> None."""
    seconds = _int(value, path, ErrorCode.INVALID_TIME)
    if seconds == 0:
        return None
    if seconds < 0:
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: negative time {seconds}", path)
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: {seconds} is out of range", path) from None


def _time(value: Any, path: str) -> datetime | None:
    return None if value is None else unix_seconds(value, path)
