"""快手小店 Kuaishou order (open.order.cursor.list item / open.order.detail data) -> canonical order.

Field names, money (integer fen) and times (unix milliseconds) follow the integrators' models of
the official Java SDK views; the meaning of several fields is unconfirmed and each such choice is
in the tables below (docs/channels/kuaishou.md lists the [U] items and the sources).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from orderhub.adapters.channels.base import checked_order
from orderhub.domain.errors import ErrorCode, NormalizationError
from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder, RefundStatus, Shipment
from orderhub.domain.status import Status

CHANNEL = "kuaishou"

# orderBaseInfo.status -> OrderHub status [U: codes as integrators use them; no official table found].
# 80 (交易关闭) depends on whether the buyer had paid; see _status().
STATUS_MAP: dict[int, Status] = {
    10: Status.PENDING_PAYMENT,  # 待付款
    30: Status.PAID,  # 已付款 (待发货)
    40: Status.SHIPPED,  # 已发货
    50: Status.DELIVERED,  # 已收货
    70: Status.COMPLETED,  # 交易成功
}
CLOSED_STATUS = 80  # 交易关闭: cancelled when paid, closed when never paid

# orderRefundList[].refundStatus -> line refund status [U]. 70 退款失败 / 80 退款关闭 mean no refund.
REFUND_STATUS_MAP: dict[int, str] = {
    10: RefundStatus.REFUNDING,  # 买家仅退款申请
    11: RefundStatus.REFUNDING,  # 买家退货退款申请
    20: RefundStatus.REFUNDING,  # 平台介入
    21: RefundStatus.REFUNDING,
    22: RefundStatus.REFUNDING,
    30: RefundStatus.REFUNDING,  # 商品回寄待买家更新
    40: RefundStatus.REFUNDING,  # 商品回寄待卖家确认
    50: RefundStatus.REFUNDING,  # 退款执行中
    60: RefundStatus.REFUNDED,  # 退款成功
    70: RefundStatus.NONE,  # 退款失败
    80: RefundStatus.NONE,  # 退款关闭
}

# Where the money sits [U]: totalFee is what the buyer paid including expressFee; discountFee
# is every discount of the order (the shop/platform split is only in open.seller.order.fee.detail,
# which is not called, so the split is left unknown); originalPrice is the unit list price.
PAID_FIELD, SHIPPING_FIELD, DISCOUNT_FIELD = "totalFee", "expressFee", "discountFee"
UNIT_PRICE_FIELD, QTY_FIELD = "originalPrice", "num"
# The merchant's SKU code (商家编码) is skuNick; relSkuId is the merchant's numeric id for the SKU.
MERCHANT_CODE_FIELD = "skuNick"

# Buyer PII: ciphertexts kept for a later decrypt, masks ("desensitise*") shown.
PII_FIELDS = {"phone": "encryptedMobile", "name": "encryptedConsignee", "address_detail": "encryptedAddress"}


def normalize_kuaishou_order(raw: dict[str, Any], shop_id: str) -> NormalizedOrder:
    """One 快手 order (a `data.orderList[]` entry, or `data` of open.order.detail) -> canonical order."""
    if not isinstance(raw, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "kuaishou order is not a JSON object", "order")
    return checked_order(lambda: _build(raw, shop_id), "unexpected kuaishou order shape", "order")


def _build(raw: dict[str, Any], shop_id: str) -> NormalizedOrder:
    base = _object(raw, "orderBaseInfo")
    item = _object(raw, "orderItemInfo")
    original_id = _id(_require(base, "oid", "orderBaseInfo.oid"), "orderBaseInfo.oid")
    created_at = unix_ms(_require(base, "createTime", "orderBaseInfo.createTime"), "orderBaseInfo.createTime")
    if created_at is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "orderBaseInfo.createTime is unset", "orderBaseInfo.createTime")
    paid_at = unix_ms(base.get("payTime", 0), "orderBaseInfo.payTime")
    updated_at = unix_ms(base.get("updateTime", 0), "orderBaseInfo.updateTime") or created_at
    code = _int(_require(base, "status", "orderBaseInfo.status"), "orderBaseInfo.status", ErrorCode.UNKNOWN_STATUS)

    qty, unit = _quantity_and_unit_price(item)
    amounts = _amounts(base, goods=unit * qty)
    line = _line(item, qty, unit, amounts.paid - amounts.shipping, _refund_status(raw))
    address = raw.get("orderAddress") or {}
    if not isinstance(address, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "orderAddress is not an object", "orderAddress")
    return NormalizedOrder(
        channel=CHANNEL,
        shop_id=shop_id,
        original_id=original_id,
        status=_status(code, paid_at),
        platform_status={"status": code},
        created_at=created_at,
        paid_at=paid_at,
        updated_at=updated_at,
        amounts=amounts,
        lines=(line,),
        address=Address(
            province=_text(address.get("province")),
            city=_text(address.get("city")),
            district=_text(address.get("district")),
            detail=_text(address.get("desensitiseAddress")),
        ),
        buyer=Buyer(
            platform_buyer_id=_text(base.get("buyerOpenId")),
            name=_text(address.get("desensitiseConsignee")),
            phone=_text(address.get("desensitiseMobile")),
        ),
        buyer_message=_text(base.get("remark")),
        seller_remark=_seller_remark(raw.get("orderNote")),
        shipment=_shipment(raw.get("orderLogisticsInfo")),
        pii={key: value for key, field in PII_FIELDS.items() if (value := _text(address.get(field)))},
        raw=raw,
    )


def _status(code: int, paid_at: datetime | None) -> Status:
    if code == CLOSED_STATUS:
        return Status.CANCELLED if paid_at is not None else Status.CLOSED
    try:
        return STATUS_MAP[code]
    except KeyError:
        raise NormalizationError(ErrorCode.UNKNOWN_STATUS, f"unknown kuaishou status {code}", "orderBaseInfo.status") from None


def _quantity_and_unit_price(item: dict[str, Any]) -> tuple[int, int]:
    qty = _int(_require(item, QTY_FIELD, f"orderItemInfo.{QTY_FIELD}"), f"orderItemInfo.{QTY_FIELD}")
    if qty <= 0:
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"orderItemInfo.{QTY_FIELD} is {qty}", f"orderItemInfo.{QTY_FIELD}")
    unit = _money(_require(item, UNIT_PRICE_FIELD, f"orderItemInfo.{UNIT_PRICE_FIELD}"), f"orderItemInfo.{UNIT_PRICE_FIELD}")
    return qty, unit


def _amounts(base: dict[str, Any], goods: int) -> Amounts:
    shipping = _money(_require(base, SHIPPING_FIELD, f"orderBaseInfo.{SHIPPING_FIELD}"), f"orderBaseInfo.{SHIPPING_FIELD}")
    discount = _money(_require(base, DISCOUNT_FIELD, f"orderBaseInfo.{DISCOUNT_FIELD}"), f"orderBaseInfo.{DISCOUNT_FIELD}")
    paid = _money(_require(base, PAID_FIELD, f"orderBaseInfo.{PAID_FIELD}"), f"orderBaseInfo.{PAID_FIELD}")
    if goods - discount + shipping != paid:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"originalPrice x num {goods} - discountFee {discount} + expressFee {shipping} != totalFee {paid}",
            f"orderBaseInfo.{PAID_FIELD}",
        )
    return Amounts(goods=goods, discount=discount, shipping=shipping, paid=paid)


def _line(item: dict[str, Any], qty: int, unit: int, paid: int, refund: str) -> Line:
    """The order's only line: it carries everything the buyer paid but shipping."""
    sku_id, line_id = item.get("skuId"), item.get("orderItemId")
    return Line(
        sku=_text(item.get(MERCHANT_CODE_FIELD)),
        title=_text(item.get("itemTitle")) or "",
        qty=qty,
        unit_price=unit,
        paid=paid,
        platform_sku_id=str(sku_id) if sku_id not in (None, "", 0) else None,
        platform_line_id=str(line_id) if line_id not in (None, "", 0) else None,
        refund_status=refund,
    )


def _refund_status(raw: dict[str, Any]) -> str:
    """The latest refund's state (the list carries only the newest refund of the order)."""
    refunds = raw.get("orderRefundList") or []
    if not isinstance(refunds, list):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "orderRefundList is not a list", "orderRefundList")
    if not refunds:
        return RefundStatus.NONE
    latest = refunds[0]
    if not isinstance(latest, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "orderRefundList[0] is not an object", "orderRefundList[0]")
    code = _int(_require(latest, "refundStatus", "orderRefundList[0].refundStatus"), "orderRefundList[0].refundStatus",
                ErrorCode.UNKNOWN_STATUS)
    try:
        return REFUND_STATUS_MAP[code]
    except KeyError:
        raise NormalizationError(
            ErrorCode.UNKNOWN_STATUS, f"unknown kuaishou refundStatus {code}", "orderRefundList[0].refundStatus"
        ) from None


def _shipment(logistics: Any) -> Shipment | None:
    if not isinstance(logistics, list) or not logistics or not isinstance(logistics[0], dict):
        return None
    first = logistics[0]
    waybill = _text(first.get("expressNo"))
    if waybill is None:
        return None
    code = first.get("expressCode")
    # expressCode is 快手's own courier number (4 顺丰速运, 9 中通快递 ...), kept verbatim.
    return Shipment(carrier=str(code) if code not in (None, "", 0) else None, waybill_no=waybill)


def _seller_remark(note: Any) -> str | None:
    if not isinstance(note, dict):
        return None
    entries = note.get("orderNoteInfo") or []
    texts = [_text(entry.get("note")) for entry in entries if isinstance(entry, dict)]
    return next((text for text in reversed(texts) if text), None)


# -- field access that fails with a code and a field path ------------------------------------


def _object(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, f"{key} is missing", key)
    if not isinstance(value, dict):
        # 快手 orders carry exactly one item; a list here is a payload shape nobody has seen.
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{key} is not an object", key)
    return value


def _require(obj: dict[str, Any], key: str, path: str) -> Any:
    if obj.get(key) is None:
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
    """快手 money is integer fen; a decimal (yuan) value is refused rather than guessed."""
    amount = _int(value, path, ErrorCode.INVALID_AMOUNT)
    if amount < 0:
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path} is negative ({amount})", path)
    return amount


def _id(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path}: {value!r} is not an order number", path)
    return str(value).strip()


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    return text or None


def unix_ms(value: Any, path: str) -> datetime | None:
    """Unix milliseconds -> aware UTC datetime; 0 (快手's "not yet") -> None."""
    millis = _int(value, path, ErrorCode.INVALID_TIME)
    if millis == 0:
        return None
    if millis < 0:
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: negative time {millis}", path)
    try:
        return datetime.fromtimestamp(millis // 1000, tz=UTC).replace(microsecond=millis % 1000 * 1000)
    except (OverflowError, OSError, ValueError):
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: {millis} is out of range", path) from None
