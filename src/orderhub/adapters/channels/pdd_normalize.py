"""拼多多 order (pdd.order.information.get `order_info`, an increment `order_sn_list[]` item) -> canonical order."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

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

CHANNEL = "pdd"
SHANGHAI = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# order_status (发货状态) of an order that is a deal: 1 待发货, 2 已发货待签收, 3 已签收. 3 is read as
# COMPLETED: PDD sets it when the receipt is confirmed (receive_time, 确认收货), which ends the trade.
SHIPPING_STATUS: dict[int, Status] = {1: Status.PAID, 2: Status.SHIPPED, 3: Status.COMPLETED}
# confirm_status (成交状态): 0 未成交, 1 已成交, 2 已取消. group_status (成团状态): 0 拼团中, 1 已成团, 2 团失败.
CONFIRM_PENDING, CONFIRM_DONE, CONFIRM_CANCELLED = 0, 1, 2
GROUP_PENDING, GROUP_DONE, GROUP_FAILED = 0, 1, 2
# refund_status (售后状态): 1 无售后或售后关闭, 2 售后处理中, 3 退款中, 4 退款成功.
REFUND_NONE, REFUND_OPEN, REFUND_REFUNDING, REFUND_DONE = 1, 2, 3, 4
KNOWN_CONFIRM = frozenset({CONFIRM_PENDING, CONFIRM_DONE, CONFIRM_CANCELLED})
KNOWN_GROUP = frozenset({GROUP_PENDING, GROUP_DONE, GROUP_FAILED})
KNOWN_REFUND = frozenset({REFUND_NONE, REFUND_OPEN, REFUND_REFUNDING, REFUND_DONE})

_FEN = Decimal(100)
# Enough digits to hold a double's exact decimal value times 100 without rounding it first.
_EXACT = Context(prec=80)


def normalize_pdd_order(raw: dict[str, Any], shop_id: str) -> NormalizedOrder:
    """One PDD order -> canonical order. PDD orders name no mall, so `shop_id` is the shop's."""
    if not isinstance(raw, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "order is not a JSON object", "order_info")
    return checked_order(lambda: _build(raw, shop_id), "unexpected pdd order shape", "order_info")


def _build(raw: dict[str, Any], shop_id: str) -> NormalizedOrder:
    original_id = _text(_require(raw, "order_sn"), "order_sn")
    created_at = parse_pdd_time(_require(raw, "created_time"), "created_time")
    if created_at is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "created_time is unset", "created_time")
    paid_at = parse_pdd_time(raw.get("pay_time"), "pay_time")
    updated_at = parse_pdd_time(raw.get("updated_at"), "updated_at") or created_at

    items = _items(raw)
    status, refunded = _status(raw, paid_at)
    amounts = _amounts(raw, items)
    shares = allocate_line_paid([unit * qty for _, unit, qty, _ in items], amounts.paid - amounts.shipping)
    lines = tuple(
        _line(item, unit, qty, gift, share, refunded) for (item, unit, qty, gift), share in zip(items, shares, strict=True)
    )
    tracking = _optional_text(raw.get("tracking_number"))
    logistics_id = raw.get("logistics_id")
    return NormalizedOrder(
        channel=CHANNEL,
        shop_id=shop_id,
        original_id=original_id,
        status=status,
        platform_status={
            name: raw.get(name)
            for name in ("order_status", "refund_status", "confirm_status", "group_status", "after_sales_status")
        },
        created_at=created_at,
        paid_at=paid_at,
        updated_at=updated_at,
        amounts=amounts,
        lines=lines,
        address=Address(
            province=_optional_text(raw.get("province")),
            city=_optional_text(raw.get("city")),
            district=_optional_text(raw.get("town")),  # PDD calls the 区县 level "town"
            detail=_optional_text(raw.get("receiver_address_mask")),
        ),
        # PDD gives no buyer id at all; customers are matched on the phone number's hash later.
        buyer=Buyer(
            platform_buyer_id=None,
            name=_optional_text(raw.get("receiver_name_mask")),
            phone=_optional_text(raw.get("receiver_phone_mask")),
        ),
        buyer_message=_optional_text(raw.get("buyer_memo")),
        seller_remark=_optional_text(raw.get("remark")),
        # logistics_id is PDD's carrier number (pdd.logistics.companies.get), kept as the carrier.
        shipment=Shipment(carrier=str(logistics_id) if logistics_id else None, waybill_no=tracking) if tracking else None,
        pii=_pii(raw),
        raw=raw,
    )


# -- status --------------------------------------------------------------------------------------


def _status(raw: dict[str, Any], paid_at: datetime | None) -> tuple[Status, bool]:
    """The canonical status, and whether the whole order was refunded (its lines are then REFUNDED)."""
    shipping = _code(raw, "order_status", _require(raw, "order_status"), frozenset(SHIPPING_STATUS))
    refund = _code(raw, "refund_status", _require(raw, "refund_status"), KNOWN_REFUND)
    confirm = _code(raw, "confirm_status", _require(raw, "confirm_status"), KNOWN_CONFIRM)
    group = _code(raw, "group_status", raw.get("group_status", GROUP_DONE), KNOWN_GROUP)
    if confirm == CONFIRM_CANCELLED or group == GROUP_FAILED:
        # Cancelled deals and failed groups are refunded by the platform; never paid means closed.
        return (Status.CANCELLED if paid_at is not None else Status.CLOSED), refund == REFUND_DONE
    if confirm == CONFIRM_PENDING or group == GROUP_PENDING:
        # Not a deal yet (the group is still forming): the seller must not ship, as if unpaid.
        return Status.PENDING_PAYMENT, False
    return SHIPPING_STATUS[shipping], False


def _code(raw: dict[str, Any], name: str, value: Any, known: frozenset[int]) -> int:
    code = _int(value, name, ErrorCode.UNKNOWN_STATUS)
    if code not in known:
        raise NormalizationError(ErrorCode.UNKNOWN_STATUS, f"unknown {name} {code}", name)
    return code


# -- lines and money ---------------------------------------------------------------------------


def _items(raw: dict[str, Any]) -> list[tuple[dict[str, Any], int, int, bool]]:
    """(item, unit price fen, qty, gift) for item_list, then gift_list (赠品, price 0)."""
    item_list = _require(raw, "item_list")
    if not isinstance(item_list, list) or not item_list:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "item_list is empty", "item_list")
    gift_list = raw.get("gift_list") or []
    if not isinstance(gift_list, list):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "gift_list is not a list", "gift_list")
    out = []
    for list_name, entries, gift in (("item_list", item_list, False), ("gift_list", gift_list, True)):
        for index, item in enumerate(entries):
            path = f"{list_name}[{index}]"
            if not isinstance(item, dict):
                raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path} is not an object", path)
            qty = _int(_require(item, "goods_count", f"{path}.goods_count"), f"{path}.goods_count")
            unit = 0 if gift else yuan_to_fen(_require(item, "goods_price", f"{path}.goods_price"), f"{path}.goods_price")
            out.append((item, unit, qty, gift or unit == 0))
    return out


def _line(item: dict[str, Any], unit: int, qty: int, gift: bool, paid: int, refunded: bool) -> Line:
    sku_id = _optional_text(item.get("sku_id"))
    return Line(
        sku=_optional_text(item.get("outer_id")),
        title=str(item.get("goods_name") or ""),
        qty=qty,
        unit_price=unit,
        paid=paid,
        gift=gift,
        platform_sku_id=sku_id,
        platform_line_id=sku_id,  # PDD has no line id; an order holds each SKU once
        # PDD reports after-sales per order, not per line: only a refunded cancellation marks lines.
        refund_status=RefundStatus.REFUNDED if refunded else RefundStatus.NONE,
    )


def _amounts(raw: dict[str, Any], items: list[tuple[dict[str, Any], int, int, bool]]) -> Amounts:
    goods = sum(unit * qty for _, unit, qty, _ in items)
    goods_amount = _money(raw, "goods_amount")
    discount_amount = _money(raw, "discount_amount")
    seller = _money(raw, "seller_discount")
    platform = _money(raw, "platform_discount")
    capital_free = _money(raw, "capital_free_discount", required=False)
    postage = _money(raw, "postage")
    paid = _money(raw, "pay_amount")
    if discount_amount != seller + platform + capital_free:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"discount_amount {discount_amount} != seller {seller} + platform {platform} + capital_free {capital_free}",
            "discount_amount",
        )
    if goods_amount - discount_amount + postage != paid:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"pay_amount {paid} != goods_amount {goods_amount} - discount_amount {discount_amount} + postage {postage}",
            "pay_amount",
        )
    # goods_amount is price x count less the seller's price change (改价): that change is the shop's discount.
    price_change = goods - goods_amount
    if price_change < 0:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH, f"goods_amount {goods_amount} exceeds the items' {goods}", "goods_amount"
        )
    return Amounts(
        goods=goods,
        discount=price_change + discount_amount,
        shipping=postage,
        paid=paid,
        discount_shop=price_change + seller,
        # 团长免单 (capital_free_discount) is a platform campaign, like platform coupons.
        discount_platform=platform + capital_free,
    )


def yuan_to_fen(value: Any, path: str) -> int:
    """A PDD amount (a JSON double in yuan, e.g. 59.9) -> integer fen.

    The double's exact binary value times 100 is rounded half away from zero: 59.9 is stored as
    59.89999999999999857..., which is 5990 fen. Its shortest repr is never trusted, and an amount
    below zero is refused.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path}: {value!r} is not an amount", path)
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path}: {value!r} is not a number", path) from None
    if not amount.is_finite():
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path}: {value!r} is not finite", path)
    fen = int(_EXACT.multiply(amount, _FEN).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if fen < 0:
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path} is negative ({value!r})", path)
    return fen


def _money(raw: dict[str, Any], key: str, *, required: bool = True) -> int:
    if raw.get(key) is None:
        if required:
            raise NormalizationError(ErrorCode.MISSING_FIELD, f"{key} is missing", key)
        return 0
    return yuan_to_fen(raw[key], key)


# -- PII, times and field access ---------------------------------------------------------------


def _pii(raw: dict[str, Any]) -> dict[str, str]:
    candidates = {
        "phone": raw.get("receiver_phone"),
        "name": raw.get("receiver_name"),
        "address_detail": raw.get("receiver_address"),
    }
    return {key: value for key, value in candidates.items() if isinstance(value, str) and value}


def parse_pdd_time(value: Any, path: str) -> datetime | None:
    """"yyyy-MM-dd HH:mm:ss" in Beijing time -> aware UTC datetime; "" (PDD's "not yet") -> None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: {value!r} is not a time string", path)
    try:
        local = datetime.strptime(value.strip(), TIME_FORMAT).replace(tzinfo=SHANGHAI)
    except ValueError:
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: {value!r} is not yyyy-MM-dd HH:mm:ss", path) from None
    return local.astimezone(UTC)


def _require(obj: dict[str, Any], key: str, path: str | None = None) -> Any:
    if obj.get(key) is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, f"{path or key} is missing", path or key)
    return obj[key]


def _int(value: Any, path: str, code: ErrorCode = ErrorCode.INVALID_FIELD) -> int:
    if isinstance(value, bool):
        raise NormalizationError(code, f"{path}: {value!r} is not an integer", path)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise NormalizationError(code, f"{path}: {value!r} is not an integer", path)


def _text(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path}: {value!r} is not an id", path)
    text = str(value).strip()
    if not text:
        raise NormalizationError(ErrorCode.MISSING_FIELD, f"{path} is empty", path)
    return text


def _optional_text(value: Any) -> str | None:
    """goods_id / sku_id come as strings or as int64 numbers; either way a string id, "" as None."""
    if value is None or isinstance(value, (bool, dict, list)):
        return None
    text = str(value).strip()
    return text or None
