"""The simulator's channel-neutral order state and how platform events change it.

Each platform module renders a `SimOrder` into its own payload shape; this module only knows
what happened to the order (paid, cancelled, shipped, refunded ...) and when.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orderhub.demo.catalogue import Customer, Region, Sku

# Channel-neutral order states; each platform module maps them to its own status codes.
UNPAID, PAID, SHIPPED, COMPLETED, CANCELLED, CLOSED = "unpaid", "paid", "shipped", "completed", "cancelled", "closed"

# Event kinds a timeline is made of.
CREATE, PAY, CLOSE, CANCEL = "create", "pay", "close", "cancel"
ADDRESS_CHANGE, REFUND_CREATE, REFUND_SUCCESS, SHIP, COMPLETE = (
    "address_change", "refund_create", "refund_success", "ship", "complete")

NO_REFUND, REFUNDING, REFUNDED = "", "refunding", "refunded"


@dataclass(slots=True)
class Address:
    region: Region
    street: str
    street_code: str
    road: str
    detail: str


@dataclass(slots=True)
class SimLine:
    line_id: str  # the platform's line id (抖店 sku order id, 有赞 oid; JD has none)
    sku: Sku
    qty: int
    unit_price: int  # fen; 0 for a gift
    gift: bool = False
    discount_shop: int = 0  # this line's share of the shop coupons
    discount_platform: int = 0  # this line's share of the platform coupons
    refund: str = NO_REFUND
    refund_time: int = 0

    @property
    def goods(self) -> int:
        return self.unit_price * self.qty

    @property
    def discount(self) -> int:
        return self.discount_shop + self.discount_platform

    @property
    def paid(self) -> int:
        return self.goods - self.discount


@dataclass(slots=True)
class Shipment:
    carrier_code: str
    carrier_name: str
    tracking_no: str
    jd_logistics_id: str


@dataclass(slots=True)
class SimOrder:
    channel: str
    shop_id: str
    shop_name: str
    original_id: str
    customer: Customer
    address: Address
    lines: list[SimLine]
    post_amount: int = 0
    balance_used: int = 0  # JD only: paid from the buyer's JD balance
    buyer_message: str = ""
    pay_type: int = 1
    payment_no: str = ""
    status: str = UNPAID
    create_time: int = 0
    pay_time: int = 0
    ship_time: int = 0
    finish_time: int = 0
    cancel_time: int = 0
    update_time: int = 0
    cancel_reason: str = ""
    shipment: Shipment | None = None
    refund_id: str = ""
    refund_full: bool = False
    scenarios: list[str] = field(default_factory=list)
    history: list[tuple[int, str]] = field(default_factory=list)
    rev: int = 0  # bumps on every change (invalidates cached payloads)
    extra: dict[str, Any] = field(default_factory=dict)  # per-channel stable random bits

    @property
    def goods(self) -> int:
        return sum(line.goods for line in self.lines)

    @property
    def discount_shop(self) -> int:
        return sum(line.discount_shop for line in self.lines)

    @property
    def discount_platform(self) -> int:
        return sum(line.discount_platform for line in self.lines)

    @property
    def paid(self) -> int:
        """What the buyer pays: goods − discounts + shipping (before any balance use)."""
        return self.goods - self.discount_shop - self.discount_platform + self.post_amount

    @property
    def visible(self) -> bool:
        """JD and 拼多多 show sellers an order only once it is paid; the others from creation."""
        return self.channel not in ("jd", "pdd") or self.pay_time > 0


@dataclass(slots=True)
class PlannedEvent:
    at: int  # unix seconds (simulated time)
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)


def apply_event(order: SimOrder, event: PlannedEvent) -> int:
    """Apply one platform event to `order`; returns the order's new update time.

    The update time is strictly increasing per order, so "newer wins" on the OrderHub side
    always has a clear answer even when two events fall in the same second.
    """
    t = event.at
    kind = event.kind
    if kind == CREATE:
        order.create_time = t
        order.status = UNPAID
    elif kind == PAY:
        order.pay_time = t
        order.status = PAID
    elif kind == CLOSE:
        order.status = CLOSED
        order.cancel_time = t
        order.cancel_reason = "超时未支付"
    elif kind == CANCEL:
        order.status = CANCELLED
        order.cancel_time = t
        order.cancel_reason = event.payload.get("reason", "不想要了")
    elif kind == ADDRESS_CHANGE:
        order.address = event.payload["address"]
    elif kind == REFUND_CREATE:
        order.refund_id = event.payload["refund_id"]
        order.refund_full = event.payload["full"]
        for i in event.payload["lines"]:
            order.lines[i].refund = REFUNDING
            order.lines[i].refund_time = t
    elif kind == REFUND_SUCCESS:
        for line in order.lines:
            if line.refund == REFUNDING:
                line.refund = REFUNDED
                line.refund_time = t
        if order.refund_full:
            order.status = CANCELLED
            order.cancel_time = t
            order.cancel_reason = "全额退款"
    elif kind == SHIP:
        order.status = SHIPPED
        order.ship_time = t
        order.shipment = event.payload["shipment"]
    elif kind == COMPLETE:
        order.status = COMPLETED
        order.finish_time = t
    else:
        raise ValueError(f"unknown event kind {kind!r}")
    order.update_time = max(t, order.update_time + 1)
    order.history.append((order.update_time, kind))
    order.rev += 1
    return order.update_time


def refund_amount(order: SimOrder) -> int:
    """What the pending/finished refund gives back: the refunded lines' paid amounts."""
    amount = sum(line.paid for line in order.lines if line.refund != NO_REFUND)
    if order.refund_full:
        amount += order.post_amount
    return amount
