"""The canonical order: what every channel adapter produces (DESIGN.md §3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orderhub.domain.errors import ErrorCode, NormalizationError
from orderhub.domain.ids import order_id
from orderhub.domain.money import allocate_largest_remainder
from orderhub.domain.status import PLATFORM_IMPLIED, Status


MAX_ID_LENGTH = 64  # order numbers, shop ids and SKU codes (the database columns' width)


class RefundStatus:
    NONE = "none"
    REFUNDING = "refunding"
    REFUNDED = "refunded"


@dataclass(frozen=True, slots=True)
class Amounts:
    """All integer fen. `paid = goods - discount + shipping` always holds (checked)."""

    goods: int
    discount: int
    shipping: int
    paid: int
    discount_shop: int | None = None
    discount_platform: int | None = None

    def check(self) -> None:
        for name in ("goods", "discount", "shipping", "paid"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"amounts.{name} must be integer fen", f"amounts.{name}")
            if value < 0:
                raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"amounts.{name} is negative ({value})", f"amounts.{name}")
        if self.paid != self.goods - self.discount + self.shipping:
            raise NormalizationError(
                ErrorCode.AMOUNTS_MISMATCH,
                f"paid {self.paid} != goods {self.goods} - discount {self.discount} + shipping {self.shipping}",
                "amounts.paid",
            )
        if self.discount_shop is not None and self.discount_platform is not None:
            if self.discount_shop < 0 or self.discount_platform < 0:
                raise NormalizationError(ErrorCode.AMOUNTS_MISMATCH, "discount parts are negative", "amounts.discount")
            if self.discount_shop + self.discount_platform != self.discount:
                raise NormalizationError(
                    ErrorCode.AMOUNTS_MISMATCH,
                    f"discount_shop {self.discount_shop} + discount_platform {self.discount_platform} != discount {self.discount}",
                    "amounts.discount",
                )


@dataclass(frozen=True, slots=True)
class Line:
    sku: str | None  # merchant SKU code (商家编码) where the platform gives one
    title: str
    qty: int
    unit_price: int  # fen; 0 for gift lines
    paid: int  # fen; this line's share of paid - shipping
    gift: bool = False
    platform_sku_id: str | None = None
    platform_line_id: str | None = None  # the platform's sub-order id (Douyin sku order, Taobao oid)
    refund_status: str = RefundStatus.NONE


@dataclass(frozen=True, slots=True)
class Address:
    """Masked/display address. Detail is the platform's masked text, never plaintext."""

    province: str | None
    city: str | None
    district: str | None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Buyer:
    platform_buyer_id: str | None  # open id / buyer uid / pin on this channel
    name: str | None = None  # masked, e.g. 张*
    phone: str | None = None  # masked, e.g. 138****0000
    level: str | None = None


@dataclass(frozen=True, slots=True)
class Shipment:
    carrier: str | None
    waybill_no: str | None


@dataclass(frozen=True, slots=True)
class NormalizedOrder:
    """One platform order as a channel adapter understood it at one point in time."""

    channel: str
    shop_id: str
    original_id: str
    status: Status
    platform_status: dict[str, Any]
    created_at: datetime
    paid_at: datetime | None
    updated_at: datetime
    amounts: Amounts
    lines: tuple[Line, ...]
    address: Address
    buyer: Buyer
    currency: str = "CNY"
    buyer_message: str | None = None
    seller_remark: str | None = None
    shipment: Shipment | None = None
    # Platform ciphertexts of buyer PII (decrypted only when needed, by a later stage).
    pii: dict[str, str] = field(default_factory=dict)
    # The platform's own payload, kept verbatim for audit and replay.
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return order_id(self.channel, self.original_id)

    def check(self) -> None:
        """Invariants every adapter's output must satisfy; violations go to quarantine."""
        if not self.original_id:
            raise NormalizationError(ErrorCode.MISSING_FIELD, "order number is empty", "original_id")
        # Identifiers must fit their columns: a value the database refuses would fail the whole batch.
        for name, value, limit in (("original_id", self.original_id, MAX_ID_LENGTH), ("shop_id", self.shop_id, MAX_ID_LENGTH), ("channel", self.channel, 32)):
            if len(value) > limit:
                raise NormalizationError(ErrorCode.INVALID_FIELD, f"{name} is longer than {limit} characters", name)
        for index, line in enumerate(self.lines):
            for name in ("sku", "platform_sku_id", "platform_line_id"):
                value = getattr(line, name)
                if value is not None and len(value) > MAX_ID_LENGTH:
                    raise NormalizationError(ErrorCode.INVALID_FIELD, f"lines[{index}].{name} is too long", f"lines[{index}].{name}")
        if self.status not in PLATFORM_IMPLIED:
            raise NormalizationError(ErrorCode.UNKNOWN_STATUS, f"adapter produced {self.status}", "status")
        for name in ("created_at", "updated_at", "paid_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise NormalizationError(ErrorCode.INVALID_TIME, f"{name} has no time zone", name)
        if not self.lines:
            raise NormalizationError(ErrorCode.MISSING_FIELD, "order has no lines", "lines")
        self.amounts.check()
        goods = 0
        for index, line in enumerate(self.lines):
            if line.qty <= 0:
                raise NormalizationError(ErrorCode.INVALID_FIELD, f"line {index} qty {line.qty}", f"lines[{index}].qty")
            if line.gift and line.unit_price != 0:
                raise NormalizationError(ErrorCode.INVALID_FIELD, f"gift line {index} has a price", f"lines[{index}].unit_price")
            goods += line.unit_price * line.qty
        if goods != self.amounts.goods:
            raise NormalizationError(
                ErrorCode.AMOUNTS_MISMATCH, f"lines add up to {goods}, goods is {self.amounts.goods}", "amounts.goods"
            )
        lines_paid = sum(line.paid for line in self.lines)
        if lines_paid != self.amounts.paid - self.amounts.shipping:
            raise NormalizationError(
                ErrorCode.AMOUNTS_MISMATCH,
                f"line paid adds up to {lines_paid}, paid - shipping is {self.amounts.paid - self.amounts.shipping}",
                "lines.paid",
            )


def allocate_line_paid(lines_goods: list[int], paid_without_shipping: int) -> list[int]:
    """Per-line paid where a channel gives none: by goods value, largest remainder."""
    return allocate_largest_remainder(paid_without_shipping, lines_goods)
