"""The order state machine, declared as a transition table."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    ON_HOLD = "on_hold"
    READY = "ready"
    PICKING = "picking"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    CLOSED = "closed"


S = Status

# Which status may follow which. Platform snapshots may skip states we never saw (a pull
# after an outage finds an order already shipped), so forward jumps are allowed; moving
# backwards, or cancelling what has shipped, is not.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.PENDING_PAYMENT: frozenset({S.PAID, S.CANCELLED, S.CLOSED, S.SHIPPED, S.DELIVERED, S.COMPLETED}),
    S.PAID: frozenset({S.ON_HOLD, S.READY, S.CANCELLED, S.SHIPPED, S.DELIVERED, S.COMPLETED}),
    S.ON_HOLD: frozenset({S.PAID, S.READY, S.CANCELLED, S.SHIPPED, S.DELIVERED, S.COMPLETED}),
    S.READY: frozenset({S.PICKING, S.ON_HOLD, S.CANCELLED, S.SHIPPED, S.DELIVERED, S.COMPLETED}),
    S.PICKING: frozenset({S.SHIPPED, S.ON_HOLD, S.CANCELLED, S.DELIVERED, S.COMPLETED}),
    S.SHIPPED: frozenset({S.DELIVERED, S.COMPLETED}),
    S.DELIVERED: frozenset({S.COMPLETED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.CLOSED: frozenset(),
}

# Statuses only OrderHub's own processing reaches; to a platform they all still read "paid".
INTERNAL_REFINEMENTS_OF_PAID: frozenset[Status] = frozenset({S.ON_HOLD, S.READY, S.PICKING})

# What a platform can tell us; anything else from an adapter is a bug.
PLATFORM_IMPLIED: frozenset[Status] = frozenset(
    {S.PENDING_PAYMENT, S.PAID, S.CANCELLED, S.CLOSED, S.SHIPPED, S.DELIVERED, S.COMPLETED}
)

LABELS_ZH: dict[Status, str] = {
    S.PENDING_PAYMENT: "待付款",
    S.PAID: "已付款",
    S.ON_HOLD: "异常/挂起",
    S.READY: "待发货",
    S.PICKING: "配货中",
    S.SHIPPED: "已发货",
    S.DELIVERED: "已签收",
    S.COMPLETED: "已完成",
    S.CANCELLED: "已取消",
    S.CLOSED: "已关闭",
}


def can_transition(current: Status, target: Status) -> bool:
    return target in TRANSITIONS[current]


def platform_view(status: Status) -> Status:
    """The status a platform would report for an OrderHub status."""
    return S.PAID if status in INTERNAL_REFINEMENTS_OF_PAID else status
