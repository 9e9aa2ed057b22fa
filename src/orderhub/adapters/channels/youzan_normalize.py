"""有赞 Youzan trade (youzan.trade.get `data` / trades.sold.get list item) -> canonical order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from orderhub.adapters.channels.base import checked_order
from orderhub.domain.errors import ErrorCode, NormalizationError
from orderhub.domain.money import yuan_to_fen
from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder, RefundStatus, Shipment
from orderhub.domain.status import Status

CHANNEL = "youzan"

# Youzan times are Beijing wall-clock strings. China has kept UTC+8 without DST since 1991,
# so a fixed offset is exact for every order and needs no tz database.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# TRADE_CLOSED depends on whether the buyer had paid; see _status().
STATUS_MAP: dict[str, Status] = {
    "WAIT_BUYER_PAY": Status.PENDING_PAYMENT,
    "TRADE_PAID": Status.PAID,
    "WAIT_CONFIRM": Status.PAID,  # 待成团 / 待接单: paid, not yet fulfilable
    "WAIT_SELLER_SEND_GOODS": Status.PAID,
    "WAIT_BUYER_CONFIRM_GOODS": Status.SHIPPED,
    "TRADE_SUCCESS": Status.COMPLETED,
}
CLOSED_STATUS = "TRADE_CLOSED"

# Line refund state [U: the per-line field and its values are not in our sources]. Youzan's
# order-level refund enum appears as names (NO_REFUND, PARTIAL_REFUNDING, FULL_REFUNDED, ...)
# in integrator code; a number is read as 0 none, 1/11 refunding, 2/12/21 refunded.
REFUNDING_CODES = frozenset({1, 11})
REFUNDED_CODES = frozenset({2, 12, 21})


def normalize_youzan_trade(raw: dict[str, Any], fallback_shop_id: str) -> NormalizedOrder:
    """One Youzan trade (`{"full_order_info": {...}, "refund_order": [...], ...}`) -> canonical order."""
    if not isinstance(raw, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "trade is not a JSON object", "trade")
    return checked_order(lambda: _build(raw, fallback_shop_id), "unexpected trade shape", "full_order_info")


def _build(raw: dict[str, Any], fallback_shop_id: str) -> NormalizedOrder:
    full = _object(raw, "full_order_info", "full_order_info")
    info = _object(full, "order_info", "full_order_info.order_info")
    base = "full_order_info.order_info"
    tid = _require(info, "tid", f"{base}.tid")
    if not isinstance(tid, (str, int)) or isinstance(tid, bool) or not str(tid).strip():
        raise NormalizationError(ErrorCode.MISSING_FIELD, "tid is empty", f"{base}.tid")
    created_at = _time(_require(info, "created", f"{base}.created"), f"{base}.created")
    if created_at is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "created is empty", f"{base}.created")
    paid_at = _time(info.get("pay_time"), f"{base}.pay_time")
    updated_at = _time(info.get("update_time"), f"{base}.update_time") or created_at

    items = _require(full, "orders", "full_order_info.orders")
    if not isinstance(items, list) or not items:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "orders is empty", "full_order_info.orders")
    lines = tuple(_line(item, index) for index, item in enumerate(items))

    pay_info = _object(full, "pay_info", "full_order_info.pay_info")
    shipping = _fen(_require(pay_info, "post_fee", "full_order_info.pay_info.post_fee"), "full_order_info.pay_info.post_fee")
    paid = _fen(_require(pay_info, "payment", "full_order_info.pay_info.payment"), "full_order_info.pay_info.payment")
    goods = sum(line.unit_price * line.qty for line in lines)
    discount = goods + shipping - paid
    if discount < 0:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH, f"payment {paid} exceeds goods {goods} + post_fee {shipping}", "pay_info.payment"
        )
    lines_paid = sum(line.paid for line in lines)
    if lines_paid != paid - shipping:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"orders[].payment adds up to {lines_paid}, payment - post_fee is {paid - shipping}",
            "full_order_info.orders.payment",
        )

    node_kdt_id = info.get("node_kdt_id")
    platform_status = {"status": info.get("status")}
    if "refund_state" in info:
        platform_status["refund_state"] = info["refund_state"]
    address = full.get("address_info") if isinstance(full.get("address_info"), dict) else {}
    buyer = full.get("buyer_info") if isinstance(full.get("buyer_info"), dict) else {}
    remark = full.get("remark_info") if isinstance(full.get("remark_info"), dict) else {}
    return NormalizedOrder(
        channel=CHANNEL,
        shop_id=str(node_kdt_id) if node_kdt_id not in (None, "", 0) else fallback_shop_id,
        original_id=str(tid).strip(),
        status=_status(info, paid_at),
        platform_status=platform_status,
        created_at=created_at,
        paid_at=paid_at,
        updated_at=updated_at,
        # Youzan gives only the totals, not who funded the reduction.
        amounts=Amounts(goods=goods, discount=discount, shipping=shipping, paid=paid),
        lines=lines,
        address=Address(
            province=address.get("delivery_province") or None,
            city=address.get("delivery_city") or None,
            district=address.get("delivery_district") or None,
            detail=None,  # delivery_address is ciphertext only; no masked copy is given
        ),
        # Only ciphertext is given for the receiver, so there is no masked name/phone to show.
        buyer=Buyer(platform_buyer_id=buyer.get("yz_open_id") or None),
        buyer_message=remark.get("buyer_message") or None,
        seller_remark=remark.get("trade_memo") or None,
        shipment=_shipment(raw),
        pii=_pii(address),
        raw=raw,
    )


def _status(info: dict[str, Any], paid_at: datetime | None) -> Status:
    status = _require(info, "status", "full_order_info.order_info.status")
    if status == CLOSED_STATUS:
        return Status.CANCELLED if paid_at is not None else Status.CLOSED
    try:
        return STATUS_MAP[status]
    except (KeyError, TypeError):
        raise NormalizationError(
            ErrorCode.UNKNOWN_STATUS, f"unknown status {status!r}", "full_order_info.order_info.status"
        ) from None


def _line(item: Any, index: int) -> Line:
    path = f"full_order_info.orders[{index}]"
    if not isinstance(item, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path} is not an object", path)
    gift = bool(item.get("is_present"))
    qty = _require(item, "num", f"{path}.num")
    if isinstance(qty, bool) or not isinstance(qty, int):
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path}.num {qty!r} is not an integer", f"{path}.num")
    price = _fen(_require(item, "price", f"{path}.price"), f"{path}.price")
    sku_id, oid = item.get("sku_id"), item.get("oid")
    return Line(
        sku=item.get("outer_sku_id") or item.get("outer_item_id") or None,
        title=str(item.get("title") or ""),
        qty=qty,
        unit_price=0 if gift else price,
        paid=_fen(_require(item, "payment", f"{path}.payment"), f"{path}.payment"),
        gift=gift,
        platform_sku_id=str(sku_id) if sku_id not in (None, "", 0) else None,
        platform_line_id=str(oid) if oid not in (None, "") else None,
        refund_status=_refund_status(item.get("refund_state")),
    )


def _refund_status(value: Any) -> str:
    if isinstance(value, str):
        name = value.upper()
        if name.endswith("REFUNDING"):
            return RefundStatus.REFUNDING
        if name.endswith("REFUNDED"):
            return RefundStatus.REFUNDED
        return RefundStatus.NONE
    if isinstance(value, int) and not isinstance(value, bool):
        if value in REFUNDING_CODES:
            return RefundStatus.REFUNDING
        if value in REFUNDED_CODES:
            return RefundStatus.REFUNDED
    return RefundStatus.NONE


def _pii(address: dict[str, Any]) -> dict[str, str]:
    candidates = {
        "name": address.get("receiver_name"),
        "phone": address.get("receiver_tel"),
        "address_detail": address.get("delivery_address"),
    }
    return {key: value for key, value in candidates.items() if isinstance(value, str) and value}


def _shipment(raw: dict[str, Any]) -> Shipment | None:
    """First parcel of delivery_order[].dists[].express_info [U: shape from integrator samples]."""
    deliveries = raw.get("delivery_order")
    if not isinstance(deliveries, list):
        return None
    for delivery in deliveries:
        dists = delivery.get("dists") if isinstance(delivery, dict) else None
        for dist in dists if isinstance(dists, list) else []:
            express = dist.get("express_info") if isinstance(dist, dict) else None
            if isinstance(express, dict) and express.get("express_no"):
                carrier = express.get("express_name") or express.get("express_id")
                return Shipment(carrier=str(carrier) if carrier else None, waybill_no=str(express["express_no"]))
    return None


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
    fen = yuan_to_fen(value, path)
    if fen < 0:
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path} is negative", path)
    return fen


def beijing_time(value: Any, path: str) -> datetime | None:
    """"yyyy-MM-dd HH:mm:ss" Beijing time -> aware UTC datetime; "" -> None."""
    if value == "":
        return None
    if not isinstance(value, str):
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: {value!r} is not a time string", path)
    try:
        return datetime.strptime(value.strip(), TIME_FORMAT).replace(tzinfo=SHANGHAI).astimezone(UTC)
    except ValueError:
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: {value!r} is not yyyy-MM-dd HH:mm:ss", path) from None


def _time(value: Any, path: str) -> datetime | None:
    return None if value is None else beijing_time(value, path)
