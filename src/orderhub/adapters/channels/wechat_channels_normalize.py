"""视频号小店 / 微信小店 order (channels/ec/order/get `order`) -> canonical order.

Field meanings: docs/channels/wechat_channels.md; every [U] choice is marked where it is made.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from orderhub.adapters.channels.base import checked_order
from orderhub.domain.errors import ErrorCode, NormalizationError
from orderhub.domain.order import (
    Address,
    Amounts,
    Buyer,
    Line,
    NormalizedOrder,
    RefundStatus,
    Shipment,
    allocate_line_paid,
)
from orderhub.domain.status import Status

CHANNEL = "wechat_channels"

# order.status -> OrderHub status (FORMATS.md §5b). 12 礼物待收下, 13 凑单买凑团中 and 17 支付成功待核销
# are paid but not yet to be shipped; like 有赞 WAIT_CONFIRM they read "paid". 21 部分发货 counts as
# shipped, as 抖店 101 does: a parcel is on its way and must not be sent twice. 200 is a paid order
# cancelled after every item went through after-sale; 250 is one cancelled or timed out unpaid.
STATUS_MAP: dict[int, Status] = {
    10: Status.PENDING_PAYMENT,
    12: Status.PAID,
    13: Status.PAID,
    17: Status.PAID,
    20: Status.PAID,
    21: Status.SHIPPED,
    30: Status.SHIPPED,
    100: Status.COMPLETED,
    200: Status.CANCELLED,
    250: Status.CLOSED,
}
# The decode API serves paid orders only ("本接口仅适用于已付款的订单").
UNPAID_STATUSES = frozenset({10, 250})

# What NormalizedOrder.pii holds for this channel. The order payload carries no ciphertext, only
# masked text; the plaintext comes from channels/ec/order/sensitiveinfo/decode by order id. So pii
# only says that the decode API applies, plus the platform's address hash_code, which changes with
# the address and so makes OrderHub decode again after an address change.
PII_DECODE = {"decode": "sensitiveinfo"}
PII_ADDRESS_HASH = "address_hash"


def normalize_wechat_channels_order(raw: dict[str, Any], fallback_shop_id: str) -> NormalizedOrder:
    """One `order` object of channels/ec/order/get -> canonical order. The payload names no shop:
    the shop is the one whose token fetched it."""
    if not isinstance(raw, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "order is not a JSON object", "order")
    return checked_order(lambda: _build(raw, fallback_shop_id), "unexpected order shape", "order")


def _build(raw: dict[str, Any], shop_id: str) -> NormalizedOrder:
    original_id = _require(raw, "order_id", "order_id")
    if isinstance(original_id, bool) or not isinstance(original_id, (str, int)) or not str(original_id).strip():
        raise NormalizationError(ErrorCode.MISSING_FIELD, "order_id is empty", "order_id")
    status_code = _require(raw, "status", "status")
    created_at = _time(_require(raw, "create_time", "create_time"), "create_time")
    if created_at is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "create_time is unset", "create_time")
    updated_at = _time(raw.get("update_time"), "update_time") or created_at

    detail = _object(raw, "order_detail", "order_detail")
    pay_info = detail.get("pay_info") if isinstance(detail.get("pay_info"), dict) else {}
    paid_at = _time(pay_info.get("pay_time"), "order_detail.pay_info.pay_time")
    products = _require(detail, "product_infos", "order_detail.product_infos")
    if not isinstance(products, list) or not products:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "product_infos is empty", "order_detail.product_infos")
    amounts = _amounts(_object(detail, "price_info", "order_detail.price_info"))
    lines = _lines(products, amounts.paid - amounts.shipping)

    delivery = detail.get("delivery_info") if isinstance(detail.get("delivery_info"), dict) else {}
    address = delivery.get("address_info") if isinstance(delivery.get("address_info"), dict) else {}
    ext = detail.get("ext_info") if isinstance(detail.get("ext_info"), dict) else {}
    return NormalizedOrder(
        channel=CHANNEL,
        shop_id=shop_id,
        original_id=str(original_id).strip(),
        status=_status(status_code),
        platform_status={"status": status_code},
        created_at=created_at,
        paid_at=paid_at,
        updated_at=updated_at,
        amounts=amounts,
        lines=lines,
        address=Address(
            province=address.get("province_name") or None,
            city=address.get("city_name") or None,
            district=address.get("county_name") or None,
            detail=_masked(address.get("detail_info")),
        ),
        # unionid first: one buyer has one unionid across every app of the merchant's WeChat open
        # platform account (shop, mini program, official account), where the openid differs per app.
        # It is empty until the shop is bound to an open platform account; then the openid is used.
        buyer=Buyer(
            platform_buyer_id=raw.get("unionid") or raw.get("openid") or None,
            name=_masked(address.get("user_name")),
            phone=_masked(address.get("tel_number")),
        ),
        buyer_message=ext.get("customer_notes") or None,
        seller_remark=ext.get("merchant_notes") or None,
        shipment=_shipment(delivery),
        pii=_pii(status_code, address),
        raw=raw,
    )


def _status(code: Any) -> Status:
    try:
        return STATUS_MAP[code]
    except (KeyError, TypeError):
        raise NormalizationError(ErrorCode.UNKNOWN_STATUS, f"unknown status {code!r}", "status") from None


def _amounts(price: dict[str, Any]) -> Amounts:
    """goods = product_price, shipping = freight, paid = order_price (用户实付); the discount is what
    makes them add up. The shop's part is merchant_discounted_price plus its price cut
    change_down_price [U: whether discounted_price includes the cut]; the rest (finder and platform
    coupons) counts as the platform's. If the parts do not fit the total, no split is given."""
    base = "order_detail.price_info"
    goods = _fen(_require(price, "product_price", f"{base}.product_price"), f"{base}.product_price")
    shipping = _fen(price.get("freight", 0), f"{base}.freight")
    paid = _fen(_require(price, "order_price", f"{base}.order_price"), f"{base}.order_price")
    discount = goods + shipping - paid
    if discount < 0:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH, f"order_price {paid} exceeds product_price {goods} + freight {shipping}", f"{base}.order_price"
        )
    shop_part = _fen(price.get("merchant_discounted_price", 0), f"{base}.merchant_discounted_price")
    shop_part += _fen(price.get("change_down_price", 0), f"{base}.change_down_price")
    if shop_part > discount:
        return Amounts(goods=goods, discount=discount, shipping=shipping, paid=paid)
    return Amounts(goods, discount, shipping, paid, discount_shop=shop_part, discount_platform=discount - shop_part)


def _lines(products: list[Any], paid_without_shipping: int) -> tuple[Line, ...]:
    """One line per product_infos entry. A line's paid is its real_price (实付); where those do not
    add up to the order's paid amount, paid is spread over the lines by value instead."""
    lines = [_line(item, index) for index, item in enumerate(products)]
    real_prices = [_real_price(item, index) for index, item in enumerate(products)]
    if None in real_prices or sum(p for p in real_prices if p is not None) != paid_without_shipping:
        real_prices = allocate_line_paid([line.unit_price * line.qty for line in lines], paid_without_shipping)
    return tuple(replace(line, paid=paid) for line, paid in zip(lines, real_prices, strict=True))


def _line(item: Any, index: int) -> Line:
    path = f"order_detail.product_infos[{index}]"
    if not isinstance(item, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path} is not an object", path)
    qty = _require(item, "sku_cnt", f"{path}.sku_cnt")
    if isinstance(qty, bool) or not isinstance(qty, int):
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path}.sku_cnt {qty!r} is not an integer", f"{path}.sku_cnt")
    price = _fen(_require(item, "sale_price", f"{path}.sale_price"), f"{path}.sale_price")
    sku_id = item.get("sku_id")
    sku_id = str(sku_id) if sku_id not in (None, "", 0) else None
    return Line(
        sku=item.get("out_sku_id") or item.get("sku_code") or None,
        title=str(item.get("title") or ""),
        qty=qty,
        unit_price=price,
        paid=0,  # set from real_price by _lines
        # [U] No per-line gift flag is documented; a line sold at 0 is read as a gift.
        gift=price == 0,
        platform_sku_id=sku_id,
        platform_line_id=sku_id,  # one line per SKU in an order
        refund_status=_refund_status(item),
    )


def _real_price(item: dict[str, Any], index: int) -> int | None:
    value = item.get("real_price")
    return None if value is None else _fen(value, f"order_detail.product_infos[{index}].real_price")


def _refund_status(item: dict[str, Any]) -> str:
    """Units under after-sale now read as refunding; otherwise units done with it as refunded
    [U: a finished after-sale may also be a rejected one; the per-unit counts do not say]."""
    if _count(item.get("on_aftersale_sku_cnt")) > 0:
        return RefundStatus.REFUNDING
    if _count(item.get("finish_aftersale_sku_cnt")) > 0:
        return RefundStatus.REFUNDED
    return RefundStatus.NONE


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _shipment(delivery: dict[str, Any]) -> Shipment | None:
    """First parcel of delivery_product_info [U: field names from integrator code]."""
    parcels = delivery.get("delivery_product_info")
    for parcel in parcels if isinstance(parcels, list) else []:
        if isinstance(parcel, dict) and parcel.get("waybill_id"):
            carrier = parcel.get("delivery_name") or parcel.get("delivery_id")
            return Shipment(carrier=str(carrier) if carrier else None, waybill_no=str(parcel["waybill_id"]))
    return None


def _pii(status_code: Any, address: dict[str, Any]) -> dict[str, str]:
    if status_code in UNPAID_STATUSES or not address:
        return {}
    hash_code = address.get("hash_code")
    return {**PII_DECODE, PII_ADDRESS_HASH: hash_code} if isinstance(hash_code, str) and hash_code else dict(PII_DECODE)


def _masked(value: Any) -> str | None:
    """The platform's masked text; text without a mask star could be plaintext, so it is dropped."""
    return value if isinstance(value, str) and "*" in value else None


# -- field access that fails with a code and a field path, never a bare KeyError ------------


def _require(obj: dict[str, Any], key: str, path: str) -> Any:
    if key not in obj or obj[key] is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, f"{path} is missing", path)
    return obj[key]


def _object(obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = _require(obj, key, path)
    if not isinstance(value, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path} is not an object", path)
    return value


def _fen(value: Any, path: str) -> int:
    """Money is integer fen on this platform; anything else is refused rather than guessed."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path}: {value!r} is not integer fen", path)
    if value < 0:
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path} is negative", path)
    return value


def unix_seconds(value: Any, path: str) -> datetime | None:
    """Unix seconds -> aware UTC datetime; 0 (unset) -> None."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: {value!r} is not unix seconds", path)
    if value == 0:
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: {value} is out of range", path) from None


def _time(value: Any, path: str) -> datetime | None:
    return None if value is None else unix_seconds(value, path)
