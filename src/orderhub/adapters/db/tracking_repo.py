"""Reads and writes of logistics tracking: parcels, their carrier events (stored once), tickets, and
the parts of an order tracking changes (shipment.logistics_status, tags, the event log)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from orderhub.adapters.db.tables import order_events, orders, parcels, tickets, tracking_events
from orderhub.domain.logistics import FINAL, ParcelState, Scan

OPEN, CLOSED = "open", "closed"
_EVENT_KEY = (tracking_events.c.waybill_no, tracking_events.c.at, tracking_events.c.carrier_code, tracking_events.c.description)
# Parcels the stall rules look at: not finished, and a refusal only goes back to the sender.
_NOT_CHECKED = tuple(s.value for s in FINAL) + (ParcelState.REJECTED.value,)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _locked(conn: sa.Connection, query: sa.Select) -> sa.Select:
    # PostgreSQL row locks; SQLite's BEGIN IMMEDIATE already excludes every other writer.
    return query.with_for_update() if conn.dialect.name == "postgresql" else query


# -- parcels ------------------------------------------------------------------------------------

def ensure_parcel(conn: sa.Connection, waybill_no: str, carrier: str, now: datetime) -> None:
    """A parcel row for a waybill a carrier reports (it may arrive before the order ships in OrderHub)."""
    conn.execute(_insert(conn, parcels).values(
        waybill_no=waybill_no, carrier=carrier[:32], state=ParcelState.NONE.value, updated_at=now,
    ).on_conflict_do_nothing(index_elements=[parcels.c.waybill_no]))  # fmt: skip


def parcel(conn: sa.Connection, waybill_no: str, *, lock: bool = False) -> Any:
    query = sa.select(parcels).where(parcels.c.waybill_no == waybill_no)
    return conn.execute(_locked(conn, query) if lock else query).first()


def order_parcels(conn: sa.Connection, order_id: str, *, lock: bool = False) -> list[Any]:
    query = sa.select(parcels).where(parcels.c.order_id == order_id).order_by(parcels.c.package_no, parcels.c.waybill_no)
    return list(conn.execute(_locked(conn, query) if lock else query))


def update_parcel(conn: sa.Connection, waybill_no: str, values: dict[str, Any]) -> None:
    conn.execute(sa.update(parcels).where(parcels.c.waybill_no == waybill_no).values(**values))


def register(conn: sa.Connection, *, waybill_no: str, carrier: str, order_id: str, package_no: int, shipped_at: datetime, now: datetime) -> Any:
    """Insert the parcel, or link one whose scans arrived first; returns the row."""
    statement = _insert(conn, parcels).values(
        waybill_no=waybill_no, carrier=carrier, order_id=order_id, package_no=package_no, state=ParcelState.NONE.value,
        shipped_at=shipped_at, updated_at=now,
    )
    conn.execute(statement.on_conflict_do_update(
        index_elements=[parcels.c.waybill_no],
        set_={"carrier": carrier, "order_id": order_id, "package_no": package_no, "shipped_at": shipped_at, "updated_at": now},
    ))  # fmt: skip
    return parcel(conn, waybill_no)


def insert_scans(conn: sa.Connection, waybill_no: str, carrier: str, scans: Sequence[Scan], source: str, now: datetime) -> list[Scan]:
    """Store the scans not stored yet and return them; the caller holds the parcel's lock, so the
    look-up is exact, and the UNIQUE key makes a concurrent duplicate a no-op all the same."""
    stored = {(r.at, r.carrier_code, r.description) for r in conn.execute(
        sa.select(tracking_events.c.at, tracking_events.c.carrier_code, tracking_events.c.description)
        .where(tracking_events.c.waybill_no == waybill_no)
    )}  # fmt: skip
    new: list[Scan] = []
    seen = set(stored)
    for scan in scans:
        key = (scan.at, scan.carrier_code, scan.description)
        if key not in seen:
            seen.add(key)
            new.append(scan)
    if new:
        conn.execute(_insert(conn, tracking_events).on_conflict_do_nothing(index_elements=list(_EVENT_KEY)), [
            {"waybill_no": waybill_no, "carrier": carrier, "at": s.at, "state": s.state.value, "carrier_code": s.carrier_code,
             "description": s.description, "location": s.location, "source": source, "received_at": now}
            for s in new
        ])  # fmt: skip
    return new


def due_for_poll(conn: sa.Connection, cutoff: datetime, limit: int) -> list[Any]:
    """Registered, unfinished parcels nobody has heard of since `cutoff`: no carrier event received,
    no poll, and shipped before it. Longest silent first."""
    last_received = (
        sa.select(sa.func.max(tracking_events.c.received_at)).where(tracking_events.c.waybill_no == parcels.c.waybill_no)
        .scalar_subquery()
    )
    query = (
        sa.select(parcels.c.waybill_no, parcels.c.carrier)
        .where(parcels.c.order_id.is_not(None), parcels.c.shipped_at <= cutoff, parcels.c.state.not_in([s.value for s in FINAL]))
        .where(sa.or_(parcels.c.polled_at.is_(None), parcels.c.polled_at <= cutoff))
        .where(sa.or_(last_received.is_(None), last_received <= cutoff))
        .order_by(sa.func.coalesce(parcels.c.polled_at, parcels.c.shipped_at), parcels.c.waybill_no)
        .limit(limit)
    )
    return list(conn.execute(query))


def mark_polled(conn: sa.Connection, waybills: Iterable[str], now: datetime) -> None:
    waybills = list(waybills)
    if waybills:
        conn.execute(sa.update(parcels).where(parcels.c.waybill_no.in_(waybills)).values(polled_at=now))


def stall_candidates(conn: sa.Connection) -> list[Any]:
    """Shipped parcels still on their way, with the order's province."""
    query = (
        sa.select(parcels, orders.c.address)
        .join(orders, orders.c.id == parcels.c.order_id)
        .where(parcels.c.shipped_at.is_not(None), parcels.c.state.not_in(_NOT_CHECKED))
        .order_by(parcels.c.order_id, parcels.c.waybill_no)
    )
    return list(conn.execute(query))


def track(conn: sa.Connection, waybills: Sequence[str]) -> list[Any]:
    if not waybills:
        return []
    query = (
        sa.select(tracking_events).where(tracking_events.c.waybill_no.in_(list(waybills)))
        .order_by(tracking_events.c.at.desc(), tracking_events.c.id.desc())
    )
    return list(conn.execute(query))


# -- orders -------------------------------------------------------------------------------------

def lock_order(conn: sa.Connection, order_id: str) -> Any:
    query = sa.select(orders.c.id, orders.c.status, orders.c.shipment, orders.c.tags, orders.c.carrier).where(orders.c.id == order_id)
    return conn.execute(_locked(conn, query)).first()


def order_shipment(conn: sa.Connection, order_id: str) -> Any:
    return conn.execute(sa.select(orders.c.id, orders.c.status, orders.c.shipment, orders.c.tags).where(orders.c.id == order_id)).first()


def save_order(conn: sa.Connection, order: Any, values: dict[str, Any], events: Sequence[dict[str, Any]], now: datetime) -> None:
    """One order change (tracking never moves the order's own status) and its event-log rows."""
    if values:
        conn.execute(sa.update(orders).where(orders.c.id == order.id).values(**values, version=orders.c.version + 1, modified_at=now))
    if events:
        conn.execute(order_events.insert(), [
            {"order_id": order.id, "at": now, "from_status": order.status, "to_status": order.status, **event} for event in events
        ])  # fmt: skip


# -- tickets ------------------------------------------------------------------------------------

def order_tickets(conn: sa.Connection, order_id: str) -> list[Any]:
    return list(conn.execute(sa.select(tickets).where(tickets.c.order_id == order_id).order_by(tickets.c.id)))


def insert_ticket(conn: sa.Connection, order_id: str, kind: str, detail: dict[str, Any], now: datetime) -> int:
    return conn.execute(
        tickets.insert().values(order_id=order_id, kind=kind, status=OPEN, detail=detail, created_at=now).returning(tickets.c.id)
    ).scalar_one()


def close_tickets(conn: sa.Connection, ids: Sequence[int], by: str, now: datetime, note: str) -> None:
    for row in conn.execute(sa.select(tickets.c.id, tickets.c.detail).where(tickets.c.id.in_(list(ids)))):
        conn.execute(sa.update(tickets).where(tickets.c.id == row.id, tickets.c.status == OPEN).values(
            status=CLOSED, closed_at=now, closed_by=by, detail={**(row.detail or {}), "closed_reason": note},
        ))  # fmt: skip


def ticket(conn: sa.Connection, ticket_id: int) -> Any:
    return conn.execute(sa.select(tickets).where(tickets.c.id == ticket_id)).first()


def list_tickets(conn: sa.Connection, *, status: str | None, kind: str | None, order_id: str | None, limit: int, before_id: int | None) -> list[Any]:
    query = sa.select(tickets).order_by(tickets.c.id.desc()).limit(limit)
    for column, value in ((tickets.c.status, status), (tickets.c.kind, kind), (tickets.c.order_id, order_id)):
        if value:
            query = query.where(column == value)
    if before_id is not None:
        query = query.where(tickets.c.id < before_id)
    return list(conn.execute(query))
