"""Orders from CSV/XLSX files (POS, distributors, platform exports) with a saved column mapping.

Pure parsing, no database: `read_table` -> `group_orders` -> one raw file order per order
number (JSON, kept in the inbox like any platform payload) -> `FileChannel.normalize`.
The order's channel is the code given at import ("pos", or "jd" for a JD export), so an order
imported from a file gets the same internal id as the same order pulled from the platform.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from orderhub.adapters.channels.base import ShopConfig, checked_order
from orderhub.adapters.channels.file_mapping import (
    CANONICAL_FIELDS,
    ID_FIELDS,
    REQUIRED_FIELDS,
    ColumnMapping,
    FileImportError,
)
from orderhub.adapters.channels.file_table import read_table
from orderhub.domain.errors import ErrorCode, NormalizationError
from orderhub.domain.money import yuan_to_fen
from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder, allocate_line_paid
from orderhub.domain.pii import RESOLVED_KEYS
from orderhub.domain.status import PLATFORM_IMPLIED, Status

__all__ = [
    "CANONICAL_FIELDS",
    "ID_FIELDS",
    "REQUIRED_FIELDS",
    "ColumnMapping",
    "FileChannel",
    "FileImportError",
    "group_orders",
    "mask_file_order",
    "read_table",
]

_ROW_REQUIRED = ("order_no", "qty", "unit_price")  # created_at: once per order is enough
_TRUTHY = frozenset({"1", "是", "true", "y", "yes", "赠品", "赠"})
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d", "%Y%m%d%H%M%S")
_PII_FIELDS = ("receiver_name", "receiver_phone", "address")


def group_orders(
    rows: list[dict[str, str]], mapping: ColumnMapping, channel: str | None = None, shop_id: str | None = None
) -> list[dict[str, Any]]:
    """Rows (from read_table; item i is spreadsheet row i + 2) -> one raw file order per order number.

    Orders come out in first-seen order; `channel` defaults to the mapping's, `shop_id` to none
    (then every row must name its shop). Every row lacking a required value is reported at once.
    """
    channel = channel or mapping.channel
    errors: list[dict[str, Any]] = []
    orders: dict[str, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        row_number = index + 2
        values = {f: str(row.get(h, "") or "").strip() for f, h in mapping.columns.items()}
        values = {f: v for f, v in values.items() if v}
        if not values:
            continue
        missing = [f for f in _ROW_REQUIRED if f not in values]
        for f in missing:
            errors.append(_missing(row_number, mapping.columns[f], "不能为空", "value required"))
        if missing:
            continue
        order = orders.get(values["order_no"])
        if order is None:
            order = orders[values["order_no"]] = {
                "channel": channel,
                "shop_id": values.get("shop_id") or shop_id,
                "original_id": values["order_no"],
                "rows": [],
                "source_rows": [],
                "mapping": mapping.to_dict(),  # normalising later (a replay) uses the mapping of the import
            }
        order["rows"].append(values)
        order["source_rows"].append(row_number)
    for order in orders.values():
        first, number = order["source_rows"][0], order["original_id"]
        if not any("created_at" in r for r in order["rows"]):
            header = mapping.columns["created_at"]
            errors.append(_missing(first, header, f"订单 {number} 没有下单时间", f"order {number} has no {header}"))
        if not order["shop_id"]:
            header = mapping.columns.get("shop_id", "shop_id")
            errors.append(_missing(first, header, f"订单 {number} 没有店铺", f"order {number} has no shop id"))
    if errors:
        errors.sort(key=lambda e: e["row"])
        raise FileImportError.from_rows(ErrorCode.MISSING_FIELD, errors)
    return list(orders.values())


def _missing(row: int, column: str, zh: str, en: str) -> dict[str, Any]:
    message = f"第{row}行 {column}: {zh} / row {row}, column {column}: {en}"
    return {"row": row, "column": column, "code": ErrorCode.MISSING_FIELD.value, "message": message}


# ---- masking: files carry plaintext PII; nothing downstream may keep it -------------------------


def mask_name(name: str | None) -> str | None:
    name = (name or "").strip()
    return f"{name[0]}*" if name else None


def mask_phone(phone: str | None) -> str | None:
    text = (phone or "").strip()
    if not text:
        return None
    if re.fullmatch(r"\d{3}\*{4}\d{4}", text):
        return text
    digits = re.sub(r"\D", "", text)
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return f"{digits[:3]}****{digits[-4:]}" if len(digits) >= 7 else "****"


def mask_detail(detail: str | None, area: Iterable[str | None] = ()) -> str | None:
    """Address detail cut after the district: at most 2 characters of the rest, then ***."""
    text = (detail or "").strip()
    if not text:
        return None
    if text.endswith("***") and len(text) <= 5:
        return text  # already masked
    for part in area:
        if part and text.startswith(part):
            text = text[len(part):]
    return f"{text[:2]}***"


def mask_file_order(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a raw file order with receiver name/phone/address masked in every row."""
    masked = copy.deepcopy(dict(raw))
    for row in masked.get("rows", []):
        if "receiver_name" in row:
            row["receiver_name"] = mask_name(row["receiver_name"]) or ""
        if "receiver_phone" in row:
            row["receiver_phone"] = mask_phone(row["receiver_phone"]) or ""
        if "address" in row:
            row["address"] = mask_detail(row["address"], (row.get("province"), row.get("city"), row.get("district"))) or ""
    return masked


# ---- normalisation ---------------------------------------------------------------------------


class _Order:
    """Field access over one raw file order, with errors that name the spreadsheet row."""

    def __init__(self, raw: Mapping[str, Any], mapping: ColumnMapping) -> None:
        self.rows: list[dict[str, str]] = raw["rows"]
        self.numbers: list[int | None] = list(raw.get("source_rows") or [None] * len(self.rows))
        self.mapping = mapping

    def where(self, index: int, field: str) -> str:
        number = self.numbers[index] if index < len(self.numbers) else None
        header = self.mapping.columns.get(field, field)
        return f"第{number}行 {header}" if number else header

    def first(self, field: str) -> tuple[int, str] | None:
        for index, row in enumerate(self.rows):
            if row.get(field):
                return index, row[field]
        return None

    def money(self, index: int, field: str, value: str) -> int:
        cleaned = re.sub(r"[¥￥,，\s]|元$", "", value)
        try:
            fen = yuan_to_fen(cleaned, field)
        except NormalizationError:
            raise NormalizationError(
                ErrorCode.INVALID_AMOUNT, f"{self.where(index, field)}: 金额无效 / invalid amount {value!r}", f"rows[{index}].{field}"
            ) from None
        if fen < 0:
            raise NormalizationError(
                ErrorCode.INVALID_AMOUNT, f"{self.where(index, field)}: 金额为负 / negative amount {value!r}", f"rows[{index}].{field}"
            )
        return fen

    def order_money(self, field: str) -> int | None:
        found = self.first(field)
        return None if found is None else self.money(found[0], field, found[1])

    def time(self, field: str) -> datetime | None:
        found = self.first(field)
        if found is None:
            return None
        index, value = found
        parsed = parse_file_time(value, self.mapping)
        if parsed is None:
            raise NormalizationError(
                ErrorCode.INVALID_TIME, f"{self.where(index, field)}: 无法识别的时间 / unrecognised time {value!r}", f"rows[{index}].{field}"
            )
        return parsed

    def qty(self, index: int) -> int:
        value = self.rows[index]["qty"]
        try:
            number = Decimal(value.replace(",", ""))
        except InvalidOperation:
            number = Decimal(0)
        if not number.is_finite() or number <= 0 or number != number.to_integral_value():
            raise NormalizationError(
                ErrorCode.INVALID_FIELD,
                f"{self.where(index, 'qty')}: 数量必须是正整数 / qty must be a positive integer, got {value!r}",
                f"rows[{index}].qty",
            )
        return int(number)


def parse_file_time(value: str, mapping: ColumnMapping) -> datetime | None:
    """The mapping's format, else ISO 8601, else common Chinese spreadsheet forms; naive = mapping zone."""
    text = value.strip()
    parsed: datetime | None = None
    formats = ((mapping.time_format,) if mapping.time_format else ()) + _TIME_FORMATS
    for fmt in formats:
        try:
            parsed = datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=mapping.zone)


def _status(order: _Order) -> tuple[Status, dict[str, Any]]:
    found = order.first("status")
    if found is None:
        return Status(order.mapping.default_status), {}
    index, value = found
    canonical = order.mapping.status_values.get(value)
    if canonical is None and value.lower() in {s.value for s in PLATFORM_IMPLIED}:
        canonical = value.lower()  # the file already speaks OrderHub's statuses
    if canonical is None:
        raise NormalizationError(
            ErrorCode.UNKNOWN_STATUS,
            f"{order.where(index, 'status')}: 未知状态 {value!r}，请在映射的状态值中添加 / "
            f"unknown status value {value!r}; add it to the mapping's status values",
            f"rows[{index}].status",
        )
    return Status(canonical), {"status": value}


def _amounts(order: _Order, goods: int) -> Amounts:
    discount = order.order_money("discount")
    shipping = order.order_money("shipping") or 0
    paid = order.order_money("paid")
    if paid is None:
        paid = goods - (discount or 0) + shipping
    elif discount is None:
        discount = goods + shipping - paid
        if discount < 0:
            raise NormalizationError(
                ErrorCode.AMOUNTS_MISMATCH,
                f"实付 {paid} 大于 商品 {goods} + 运费 {shipping} / paid {paid} exceeds goods {goods} + shipping {shipping}",
                "amounts.paid",
            )
    return Amounts(goods=goods, discount=discount or 0, shipping=shipping, paid=paid)


class FileChannel:
    """Normaliser for raw file orders; the order's channel is the code given at import."""

    channel = "file"

    def __init__(self, mapping: ColumnMapping | None = None) -> None:
        self._mapping = mapping  # used only for raw orders that do not carry their mapping

    def normalize(self, raw: dict[str, Any], shop: ShopConfig) -> NormalizedOrder:
        if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list) or not raw["rows"]:
            raise NormalizationError(ErrorCode.MALFORMED_ENVELOPE, "not a raw file order (rows missing)", "rows")
        mapping = self._mapping_of(raw)
        order = _Order(raw, mapping)
        return checked_order(lambda: self._normalize(raw, order, shop), "file order is malformed")

    def _mapping_of(self, raw: Mapping[str, Any]) -> ColumnMapping:
        if raw.get("mapping"):
            try:
                return ColumnMapping.from_dict(raw["mapping"])
            except FileImportError as exc:
                raise NormalizationError(ErrorCode.UNKNOWN_MAPPING, exc.message, "mapping") from None
        if self._mapping is None:
            raise NormalizationError(ErrorCode.UNKNOWN_MAPPING, "file order carries no column mapping", "mapping")
        return self._mapping

    def _normalize(self, raw: dict[str, Any], order: _Order, shop: ShopConfig) -> NormalizedOrder:
        rows = order.rows
        if not raw.get("channel"):
            raise NormalizationError(ErrorCode.MISSING_FIELD, "file order has no channel code", "channel")
        lines_spec = []
        for index, row in enumerate(rows):
            gift = row.get("gift", "").strip().lower() in _TRUTHY
            unit = 0 if gift else order.money(index, "unit_price", row["unit_price"])
            lines_spec.append((index, unit, order.qty(index), gift))
        goods = sum(unit * qty for _, unit, qty, _ in lines_spec)
        amounts = _amounts(order, goods)
        if all(row.get("line_paid") for row in rows):
            shares = [order.money(index, "line_paid", rows[index]["line_paid"]) for index, *_ in lines_spec]
        else:
            shares = allocate_line_paid([unit * qty for _, unit, qty, _ in lines_spec], amounts.paid - amounts.shipping)
        lines = tuple(
            Line(
                sku=rows[index].get("sku") or None,
                title=rows[index].get("title") or rows[index].get("sku") or "",
                qty=qty,
                unit_price=unit,
                paid=share,
                gift=gift,
            )
            for (index, unit, qty, gift), share in zip(lines_spec, shares, strict=True)
        )

        status, platform_status = _status(order)
        created_at = order.time("created_at")
        if created_at is None:
            raise NormalizationError(ErrorCode.MISSING_FIELD, "下单时间为空 / created_at is missing", "created_at")
        paid_at = order.time("paid_at")
        updated_at = order.time("updated_at") or max(t for t in (created_at, paid_at) if t is not None)
        first = rows[0]

        def given(field: str) -> str | None:
            found = order.first(field)
            return found[1] if found else None

        province, city, district = given("province"), given("city"), given("district")
        return NormalizedOrder(
            channel=str(raw.get("channel") or ""),
            shop_id=str(raw.get("shop_id") or shop.shop_id),
            original_id=str(raw.get("original_id") or first.get("order_no") or ""),
            status=status,
            platform_status=platform_status,
            created_at=created_at,
            paid_at=paid_at,
            updated_at=updated_at,
            amounts=amounts,
            lines=lines,
            address=Address(province, city, district, mask_detail(given("address"), (province, city, district))),
            buyer=Buyer(
                platform_buyer_id=given("buyer_id"),
                name=mask_name(given("receiver_name")),
                phone=mask_phone(given("receiver_phone")),
            ),
            buyer_message=given("buyer_message"),
            seller_remark=given("seller_remark"),
            # sealed and hashed by the import (services/imports.py); never plaintext
            pii={k: v for k, v in (raw.get("pii") or {}).items() if k in RESOLVED_KEYS and isinstance(v, str)},
            raw=mask_file_order(raw),
        )
