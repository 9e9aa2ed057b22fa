"""The dashboard's figures and the one-box order search, on both databases, from orders written by the repository."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from factories import make_order
from orderhub.adapters.db import dashboard_queries, queries
from orderhub.adapters.db.orders_repo import WritePlan, write_plan
from orderhub.adapters.db.tables import fulfillments, order_events, parcels
from orderhub.domain.merge import apply_snapshot, content_hash
from orderhub.domain.status import Status

DAY = date(2025, 3, 18)
START = datetime(2025, 3, 17, 16, 0, tzinfo=UTC)  # 2025-03-18 00:00 in Asia/Shanghai
SLA = timedelta(hours=48)



def store(engine: sa.Engine, *specs: tuple[str, str, Status, float, float | None, tuple[str, ...]]) -> None:
    """(original id, channel, status, paid at hours after START, shipped after payment in hours, hold codes)."""
    plan = WritePlan()
    shipped: list[dict[str, object]] = []
    for oid, channel, status, paid_h, ship_h, holds in specs:
        paid = START + timedelta(hours=paid_h)
        internal = status in (Status.READY, Status.PICKING, Status.ON_HOLD)  # OrderHub's own: the platform says paid
        order = make_order(oid, channel=channel, status=Status.PAID if internal else status, created_at=paid - timedelta(seconds=41), paid_at=paid,
                           updated_at=paid + timedelta(hours=1))
        change = replace(apply_snapshot(None, order, "platform:test"), holds=tuple({"code": c, "reason": "test"} for c in holds),
                         status=status, content_hash=content_hash(order))
        plan.creates.append((change, None))
        if ship_h is not None:
            shipped.append({"order_id": order.id, "at": paid + timedelta(hours=ship_h), "actor": "wms:main", "kind": "status",
                            "from_status": "picking", "to_status": "shipped"})
    with engine.begin() as conn:
        write_plan(conn, plan, START)
        if shipped:
            conn.execute(order_events.insert(), shipped)


def test_the_day_is_counted_by_channel_and_shanghai_hour_with_the_funnel_and_exceptions(engine: sa.Engine) -> None:
    store(engine,
          ("D1", "douyin", Status.SHIPPED, 0.5, 3, ()), ("D2", "douyin", Status.DELIVERED, 0.7, 60, ()),
          ("D3", "douyin", Status.READY, 9.2, None, ()), ("T1", "taobao", Status.PICKING, 9.9, None, ()),
          ("T2", "taobao", Status.ON_HOLD, 23.5, None, ("risk_review",)), ("T3", "taobao", Status.CANCELLED, 23.6, None, ()),
          ("Y1", "douyin", Status.SHIPPED, -1, 2, ()),  # paid the day before (23:00 Shanghai): not today's
          ("N1", "douyin", Status.PAID, 24.5, None, ("remote_area",)))  # the next day
    with engine.connect() as conn:
        summary = dashboard_queries.day_summary(conn, DAY, START + timedelta(hours=80), SLA)
    assert summary["channels"] == ["douyin", "taobao"]
    assert sorted(summary["heatmap"]) == [[0, 0, 2], [0, 9, 1], [1, 9, 1], [1, 23, 2]]
    assert summary["funnel"] == [{"stage": "paid", "count": 6}, {"stage": "audited", "count": 4}, {"stage": "at_wms", "count": 3},
                                 {"stage": "shipped", "count": 2}, {"stage": "delivered", "count": 1}]
    assert summary["totals"]["orders"] == 6 and summary["totals"]["cancelled"] == 1
    assert summary["totals"]["amount_fen"] == 6 * 13470
    assert {e["code"]: e["count"] for e in summary["exceptions"]} == {"risk_review": 1, "remote_area": 1}
    # due at hour 80: D1 on time, D2 late (60 h), D3 and T1 overdue; T2 paid at 23.5 h is not due until 71.5 h — it is
    # overdue too; T3 cancelled is not due.  on time 1 of 5
    assert summary["on_time_ship_rate"] == 0.2


def test_nothing_due_yet_gives_no_rate_rather_than_zero(engine: sa.Engine) -> None:
    store(engine, ("D1", "douyin", Status.READY, 1, None, ()))
    with engine.connect() as conn:
        summary = dashboard_queries.day_summary(conn, DAY, START + timedelta(hours=2), SLA)
    assert summary["on_time_ship_rate"] is None and summary["funnel"][0] == {"stage": "paid", "count": 1}
    with engine.connect() as conn:
        empty = dashboard_queries.day_summary(conn, DAY - timedelta(days=3), START, SLA)
    assert empty["channels"] == [] and empty["heatmap"] == [] and empty["totals"]["orders"] == 0


def test_one_search_box_finds_an_order_by_platform_number_internal_id_or_waybill(engine: sa.Engine) -> None:
    store(engine, ("S1", "douyin", Status.SHIPPED, 1, 2, ()), ("S2", "douyin", Status.PICKING, 1, None, ()),
          ("S3", "taobao", Status.READY, 1, None, ()))
    s1, s2 = make_order("S1", channel="douyin"), make_order("S2", channel="douyin")
    with engine.begin() as conn:
        conn.execute(parcels.insert(), {"waybill_no": "ZT1001", "carrier": "ZTO", "order_id": s1.id, "package_no": 1, "state": "in_transit",
                                        "updated_at": START})
        conn.execute(fulfillments.insert(), {"order_id": s2.id, "package_no": 1, "warehouse": "WH-EAST", "wms": "main", "status": "packed",
                                             "waybill_no": "SF2002", "queued_at": START, "updated_at": START})

    def found(**filters: str) -> list[str]:
        with engine.connect() as conn:
            items, _ = queries.list_orders(conn, queries.OrderFilters(**filters), 50, None)
        return sorted(o["original_id"] for o in items)

    assert found(q="S1") == ["S1"]
    assert found(q=s2.id.upper()) == ["S2"]  # ids are matched case-insensitively
    assert found(q=" ZT1001 ") == ["S1"]  # a tracked parcel
    assert found(q="SF2002") == ["S2"]  # a package the WMS packed, not yet tracked
    assert found(waybill_no="SF2002") == ["S2"]
    assert found(q="ZT1001", channel="taobao") == []  # the other filters still apply
    assert found(q="nothing") == []
