"""淘宝/天猫 trade (taobao.trade.fullinfo.get / trades.sold.increment.get item) -> canonical order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from orderhub.adapters.channels.base import checked_order
from orderhub.domain.errors import ErrorCode, NormalizationError
from orderhub.domain.money import yuan_to_fen
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

CHANNEL = "taobao"
SHANGHAI = ZoneInfo("Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# Trade `status` (FORMATS.md §2; TOP Order domain doc) -> OrderHub status. Part-shipped counts
# as shipped (a parcel is on its way: OrderHub must not ship the rest twice). PAID_FORBID_CONSIGN
# (paid, held by the platform, e.g. a group buy still forming) is paid: the hold is the
# platform's, shipping it is refused there.
STATUS_MAP: dict[str, Status] = {
    "TRADE_NO_CREATE_PAY": Status.PENDING_PAYMENT,
    "WAIT_BUYER_PAY": Status.PENDING_PAYMENT,
    "PAY_PENDING": Status.PENDING_PAYMENT,
    "WAIT_PRE_AUTH_CONFIRM": Status.PENDING_PAYMENT,
    "WAIT_SELLER_SEND_GOODS": Status.PAID,
    "PAID_FORBID_CONSIGN": Status.PAID,
    "SELLER_CONSIGNED_PART": Status.SHIPPED,
    "WAIT_BUYER_CONFIRM_GOODS": Status.SHIPPED,
    "TRADE_BUYER_SIGNED": Status.DELIVERED,
    "TRADE_FINISHED": Status.COMPLETED,
    "TRADE_CLOSED": Status.CANCELLED,  # 付款以后用户退款成功，交易自动关闭
    "TRADE_CLOSED_BY_TAOBAO": Status.CLOSED,  # 付款以前，卖家或买家主动关闭交易
}

# orders.order[].refund_status; NO_REFUND (no refund at all) is not in the TOP doc's list [U].
REFUND_STATUS_MAP: dict[str, str] = {
    "": RefundStatus.NONE,
    "NO_REFUND": RefundStatus.NONE,
    "WAIT_SELLER_AGREE": RefundStatus.REFUNDING,
    "WAIT_BUYER_RETURN_GOODS": RefundStatus.REFUNDING,
    "WAIT_SELLER_CONFIRM_GOODS": RefundStatus.REFUNDING,
    "SELLER_REFUSE_BUYER": RefundStatus.NONE,
    "CLOSED": RefundStatus.NONE,
    "SUCCESS": RefundStatus.REFUNDED,
}

# receiver_* arrive masked ("张**", "*******0000") [U]; a value framed like a TOP ciphertext
# (~…~, $…$, #…#, no mask stars) is kept in `pii` instead of being shown.
_CIPHER_MARKS = ("~", "$", "#")
_PII_FIELDS = (("name", "receiver_name"), ("phone", "receiver_mobile"), ("address_detail", "receiver_address"))


def normalize_taobao_trade(raw: dict[str, Any], shop_id: str) -> NormalizedOrder:
    """One trade (the `trade` object, or the whole fullinfo reply) -> canonical order."""
    if isinstance(raw, dict) and isinstance(raw.get("trade_fullinfo_get_response"), dict):
        raw = raw["trade_fullinfo_get_response"].get("trade")
    if not isinstance(raw, dict):
        raise NormalizationError(ErrorCode.INVALID_FIELD, "trade is not a JSON object", "trade")
    return checked_order(lambda: _build(raw, shop_id), "unexpected trade shape", "trade")


def _build(raw: dict[str, Any], shop_id: str) -> NormalizedOrder:
    original_id = _id(_require(raw, "tid"), "tid")
    created_at = cst_time(_require(raw, "created"), "created")
    if created_at is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "created is empty", "created")
    orders = _order_list(raw)
    lines = _lines(raw, orders)
    pii = {"oaid": raw["oaid"]} if isinstance(raw.get("oaid"), str) and raw["oaid"] else {}
    masked = {}
    for key, name in _PII_FIELDS:
        value = raw.get(name)
        if not isinstance(value, str) or not value:
            continue
        if _is_ciphertext(value):
            pii[key] = value
        else:
            masked[key] = value
    return NormalizedOrder(
        channel=CHANNEL,
        shop_id=shop_id,
        original_id=original_id,
        status=_status(raw),
        platform_status={"status": raw.get("status"), "type": raw.get("type")},
        created_at=created_at,
        paid_at=cst_time(raw.get("pay_time"), "pay_time"),
        updated_at=cst_time(raw.get("modified"), "modified") or created_at,
        amounts=_amounts(raw, lines),
        lines=lines,
        address=Address(
            province=raw.get("receiver_state") or None,
            city=raw.get("receiver_city") or None,
            district=raw.get("receiver_district") or None,
            detail=masked.get("address_detail"),
        ),
        buyer=Buyer(
            platform_buyer_id=raw.get("buyer_open_uid") or None,
            name=masked.get("name"),
            phone=masked.get("phone") or _masked_phone(raw.get("receiver_phone")),
        ),
        buyer_message=raw.get("buyer_message") or None,
        seller_remark=raw.get("seller_memo") or None,
        shipment=_shipment(orders),
        pii=pii,
        raw=raw,
    )


def _status(raw: dict[str, Any]) -> Status:
    status = raw.get("status")
    if not isinstance(status, str) or status not in STATUS_MAP:
        raise NormalizationError(ErrorCode.UNKNOWN_STATUS, f"unknown trade status {status!r}", "status")
    return STATUS_MAP[status]


def _order_list(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """`orders` comes wrapped as {"order": [...]} (TOP's list convention); a bare list is accepted."""
    orders = _require(raw, "orders")
    if isinstance(orders, dict):
        orders = orders.get("order")
    if not isinstance(orders, list) or not orders:
        raise NormalizationError(ErrorCode.MISSING_FIELD, "orders.order is empty", "orders.order")
    for index, item in enumerate(orders):
        if not isinstance(item, dict):
            raise NormalizationError(ErrorCode.INVALID_FIELD, f"orders.order[{index}] is not an object", f"orders.order[{index}]")
    return orders


def _lines(raw: dict[str, Any], orders: list[dict[str, Any]]) -> tuple[Line, ...]:
    drafts = []
    for index, item in enumerate(orders):
        path = f"orders.order[{index}]"
        qty = _int(_require(item, "num", path), f"{path}.num")
        price = _fen(_require(item, "price", path), f"{path}.price")
        divided = item.get("divide_order_fee")
        paid = _fen(divided, f"{path}.divide_order_fee") if divided not in (None, "") else None
        refund = item.get("refund_status") or ""
        if refund not in REFUND_STATUS_MAP:
            raise NormalizationError(ErrorCode.UNKNOWN_STATUS, f"{path}.refund_status {refund!r} is unknown", f"{path}.refund_status")
        drafts.append((item, qty, price, paid, REFUND_STATUS_MAP[refund]))
    if any(paid is None for _, _, _, paid, _ in drafts):
        # No divide_order_fee (older trades): split paid - shipping by each line's payable total.
        weights = [_line_total(item, qty, price, f"orders.order[{i}]") for i, (item, qty, price, _, _) in enumerate(drafts)]
        shares = allocate_line_paid(weights, _paid_without_shipping(raw))
    else:
        shares = [paid for _, _, _, paid, _ in drafts]
    lines = []
    for (item, qty, price, _, refund), paid in zip(drafts, shares, strict=True):
        sku_id, oid = item.get("sku_id"), item.get("oid")
        lines.append(
            Line(
                sku=item.get("outer_sku_id") or item.get("outer_iid") or None,
                title=str(item.get("title") or ""),
                qty=qty,
                unit_price=price,
                paid=paid,
                gift=price == 0,  # [U] TOP has no gift flag on a sub-order; 0.00 lines are 赠品
                platform_sku_id=str(sku_id) if sku_id not in (None, "", 0) else None,
                platform_line_id=str(oid) if oid not in (None, "") else None,
                refund_status=refund,
            )
        )
    return tuple(lines)


def _line_total(item: dict[str, Any], qty: int, price: int, path: str) -> int:
    total = item.get("total_fee")
    return _fen(total, f"{path}.total_fee") if total not in (None, "") else price * qty


def _paid_without_shipping(raw: dict[str, Any]) -> int:
    return _fen(_require(raw, "payment"), "payment") - _fen(raw.get("post_fee") or "0", "post_fee")


def _amounts(raw: dict[str, Any], lines: tuple[Line, ...]) -> Amounts:
    goods = sum(line.unit_price * line.qty for line in lines)
    shipping = _fen(raw.get("post_fee") or "0", "post_fee")
    paid = _fen(_require(raw, "payment"), "payment")
    discount = goods + shipping - paid
    if discount < 0:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH, f"payment {paid} exceeds goods {goods} + post_fee {shipping}", "payment"
        )
    lines_paid = sum(line.paid for line in lines)
    if lines_paid != paid - shipping:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"sub-orders' divide_order_fee adds up to {lines_paid}, payment - post_fee is {paid - shipping}",
            "orders.order.divide_order_fee",
        )
    discount_shop, discount_platform = _discount_split(raw, discount)
    return Amounts(goods, discount, shipping, paid, discount_shop, discount_platform)


def _discount_split(raw: dict[str, Any], discount: int) -> tuple[int | None, int | None]:
    """Platform-borne part from the sub-orders' platform_subsidy_fee [U: semantics undocumented];
    without that field the split is unknown (both None), not zero."""
    subsidies = [item.get("platform_subsidy_fee") for item in _order_list(raw)]
    if all(value in (None, "") for value in subsidies):
        return None, None
    platform = sum(_fen(v, f"orders.order[{i}].platform_subsidy_fee") for i, v in enumerate(subsidies) if v not in (None, ""))
    if platform > discount:
        raise NormalizationError(
            ErrorCode.AMOUNTS_MISMATCH,
            f"platform_subsidy_fee adds up to {platform}, more than the whole discount {discount}",
            "orders.order.platform_subsidy_fee",
        )
    return discount - platform, platform


def _shipment(orders: list[dict[str, Any]]) -> Shipment | None:
    for item in orders:
        if item.get("invoice_no"):
            return Shipment(carrier=item.get("logistics_company") or None, waybill_no=str(item["invoice_no"]))
    return None


def _is_ciphertext(value: str) -> bool:
    return len(value) > 8 and value[0] in _CIPHER_MARKS and value[-1] == value[0] and "*" not in value


def _masked_phone(value: Any) -> str | None:
    return value if isinstance(value, str) and value and not _is_ciphertext(value) else None


# -- field access that fails with a code and a field path ----------------------------------


def _require(obj: dict[str, Any], key: str, path: str | None = None) -> Any:
    full = f"{path}.{key}" if path else key
    if obj.get(key) is None:
        raise NormalizationError(ErrorCode.MISSING_FIELD, f"{full} is missing", full)
    return obj[key]


def _id(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path}: {value!r} is not an id", path)
    return str(value).strip()


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path}: {value!r} is not an integer", path)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise NormalizationError(ErrorCode.INVALID_FIELD, f"{path}: {value!r} is not an integer", path)


def _fen(value: Any, path: str) -> int:
    """TOP money: a decimal string in yuan ("133.70") -> integer fen; negative is refused."""
    if not isinstance(value, str):
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path}: {value!r} is not a yuan string", path)
    fen = yuan_to_fen(value, path)
    if fen < 0:
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{path} is negative ({value})", path)
    return fen


def cst_time(value: Any, path: str) -> datetime | None:
    """"yyyy-MM-dd HH:mm:ss" in GMT+8 -> aware UTC datetime; "" or None -> None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: {value!r} is not a time string", path)
    try:
        local = datetime.strptime(value.strip(), TIME_FORMAT)
    except ValueError:
        raise NormalizationError(ErrorCode.INVALID_TIME, f"{path}: {value!r} is not yyyy-MM-dd HH:mm:ss", path) from None
    return local.replace(tzinfo=SHANGHAI).astimezone(UTC)
