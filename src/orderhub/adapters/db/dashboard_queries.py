"""Read side of the 工作台 dashboard: one day's orders by channel and hour, the funnel, exceptions, on-time shipping.

Each figure is computed one way for everyone (DESIGN.md §4.9): the day is a calendar day in
Asia/Shanghai, an order belongs to the day it was paid, and it shipped on time when its first
`shipped` event came within the shipping SLA of its payment. The day's figures are bounded by
the indexed `paid_at` range of the day, so their cost follows the day's volume, not the table's
size; the exceptions are every hold open now, whatever day its order was paid.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db.queries import SHANGHAI, hold_counts
from orderhub.adapters.db.tables import order_events, orders
from orderhub.domain.status import Status

# The paid -> delivered funnel: an order counts in every stage it has reached. Cancelled and
# closed orders count as paid only (they left the funnel); on_hold orders have not passed audit.
FUNNEL: tuple[tuple[str, frozenset[str]], ...] = (
    ("paid", frozenset()),  # every paid order of the day
    ("audited", frozenset({Status.READY, Status.PICKING, Status.SHIPPED, Status.DELIVERED, Status.COMPLETED})),
    ("at_wms", frozenset({Status.PICKING, Status.SHIPPED, Status.DELIVERED, Status.COMPLETED})),
    ("shipped", frozenset({Status.SHIPPED, Status.DELIVERED, Status.COMPLETED})),
    ("delivered", frozenset({Status.DELIVERED, Status.COMPLETED})),
)
_GONE = (Status.CANCELLED.value, Status.CLOSED.value)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), SHANGHAI)
    return start, start + timedelta(days=1)


def day_summary(conn: sa.Connection, day: date, now: datetime, ship_sla: timedelta) -> dict[str, Any]:
    start, end = day_bounds(day)
    in_day = sa.and_(orders.c.paid_at >= start, orders.c.paid_at < end)
    hours = [sa.func.sum(sa.case((sa.and_(orders.c.paid_at >= start + timedelta(hours=h), orders.c.paid_at < start + timedelta(hours=h + 1)), 1),
                                 else_=0)) for h in range(24)]
    # one pass over the day: per channel and status, the orders, their amount and the orders per hour
    cells = conn.execute(
        sa.select(orders.c.channel, orders.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(orders.c.paid), 0), *hours)
        .where(in_day).group_by(orders.c.channel, orders.c.status)
    ).all()
    channels = sorted({row[0] for row in cells})
    per_hour: dict[tuple[int, int], int] = {}
    statuses: dict[str, int] = {}
    for row in cells:
        statuses[row[1]] = statuses.get(row[1], 0) + row[2]
        for h in range(24):
            if row[4 + h]:
                key = (channels.index(row[0]), h)
                per_hour[key] = per_hour.get(key, 0) + int(row[4 + h])
    heatmap = [[i, h, n] for (i, h), n in sorted(per_hour.items())]
    paid = sum(statuses.values())
    funnel = [{"stage": stage, "count": paid if not reached else sum(n for s, n in statuses.items() if s in reached)}
              for stage, reached in FUNNEL]
    return {
        "day": day.isoformat(),
        "generated_at": now.astimezone(SHANGHAI).isoformat(),
        "channels": channels,
        "heatmap": heatmap,
        "funnel": funnel,
        "exceptions": [{"code": code, "count": n} for code, n in hold_counts(conn).items()],
        "on_time_ship_rate": _on_time_rate(conn, in_day, now, ship_sla),
        "ship_sla_hours": ship_sla.total_seconds() / 3600,
        "totals": {
            "orders": paid,
            "amount_fen": int(sum(row[3] for row in cells)),
            "cancelled": sum(n for s, n in statuses.items() if s in _GONE),
            "by_status": dict(sorted(statuses.items())),
        },
    }


def _on_time_rate(conn: sa.Connection, in_day: sa.ColumnElement[bool], now: datetime, sla: timedelta) -> float | None:
    """Shipped within the SLA / (shipped + past the SLA and not shipped); None while nothing is due yet.
    Orders cancelled or closed before they shipped are not due."""
    # one pass over the day's orders, each one's first shipped event looked up by its order's index
    # (a join with the shipped events grouped per order read the day's orders twice and every shipped event)
    first_shipped = (
        sa.select(sa.func.min(order_events.c.at))
        .where(order_events.c.order_id == orders.c.id, order_events.c.to_status == Status.SHIPPED.value)
        .correlate(orders).scalar_subquery()
    )
    rows = conn.execute(sa.select(orders.c.paid_at, orders.c.status, first_shipped.label("shipped_at")).where(in_day)).all()
    on_time = due = 0
    for paid_at, status, shipped_at in rows:
        if shipped_at is not None:
            due += 1
            on_time += shipped_at - paid_at <= sla
        elif status not in _GONE and now - paid_at > sla:
            due += 1
    return round(on_time / due, 4) if due else None
