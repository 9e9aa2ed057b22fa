"""Batch reads and writes of canonical orders: one statement per table per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from orderhub.adapters.db import audit_repo, inventory_repo
from orderhub.adapters.db.tables import (
    customer_channels,
    customer_identities,
    customers,
    inbox,
    order_events,
    order_lines,
    orders,
    quarantine,
)
from orderhub.domain.merge import Change, Event, StoredOrder, address_dict
from orderhub.domain.pii import RESOLVED_KEYS
from orderhub.domain.status import Status

_CHUNK = 500


class ConcurrentUpdate(Exception):
    """Another writer changed an order this batch read; the batch is retried from the start."""


class LeaseLost(Exception):
    """An inbox row of the batch is no longer this worker's (its lease expired and another worker claimed it):
    nothing of the batch is written; the rows still leased are processed again without it."""


def load_stored(conn: sa.Connection, ids: Iterable[str]) -> dict[str, StoredOrder]:
    ids = list(ids)
    columns = (
        orders.c.id, orders.c.status, orders.c.updated_at, orders.c.content_hash, orders.c.version,
        orders.c.holds, orders.c.address, orders.c.buyer_message, orders.c.seller_remark, orders.c.paid,
        orders.c.snapshot_at, orders.c.pii, orders.c.phone_hash, orders.c.customer_id,
    )
    found: dict[str, Any] = {}
    refunds: dict[str, list[str]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for row in conn.execute(sa.select(*columns).where(orders.c.id.in_(chunk))):
            found[row.id] = row
        line_query = (
            sa.select(order_lines.c.order_id, order_lines.c.refund_status)
            .where(order_lines.c.order_id.in_(chunk))
            .order_by(order_lines.c.order_id, order_lines.c.line_no)
        )
        for order_id, refund in conn.execute(line_query):
            refunds.setdefault(order_id, []).append(refund)
    return {
        row.id: StoredOrder(
            id=row.id,
            status=Status(row.status),
            updated_at=row.updated_at,
            content_hash=row.content_hash,
            version=row.version,
            holds=tuple(row.holds or ()),
            address=row.address,
            line_refunds=tuple(refunds.get(row.id, ())),
            buyer_message=row.buyer_message,
            seller_remark=row.seller_remark,
            paid=row.paid,
            snapshot_at=row.snapshot_at,
            pii=row.pii or {},
            phone_hash=row.phone_hash,
            customer_id=row.customer_id,
        )
        for row in found.values()
    }


def load_identities(conn: sa.Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(channel, buyer id) -> customer id for the identities that exist."""
    keys = list(keys)
    found: dict[tuple[str, str], str] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        condition = sa.tuple_(customer_identities.c.channel, customer_identities.c.buyer_id).in_(chunk)
        for channel, buyer_id, cid in conn.execute(
            sa.select(customer_identities.c.channel, customer_identities.c.buyer_id, customer_identities.c.customer_id).where(condition)
        ):
            found[(channel, buyer_id)] = cid
    return found


@dataclass(slots=True)
class WritePlan:
    """Everything one processing batch writes, applied in a single transaction."""

    creates: list[tuple[Change, str | None]] = field(default_factory=list)  # (change, customer id)
    updates: list[tuple[Change, int, str | None]] = field(default_factory=list)  # (change, expected version, customer id)
    touches: list[dict[str, Any]] = field(default_factory=list)  # same content, newer platform time or snapshot
    snapshot_at: dict[str, datetime] = field(default_factory=dict)  # order id -> when its snapshot was read
    events: list[tuple[str, Event]] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    identities: dict[tuple[str, str], str] = field(default_factory=dict)
    customer_channels: dict[tuple[str, str], datetime] = field(default_factory=dict)  # (customer, channel) -> first order
    # order id -> pii_sealed, phone_hash, phone_last4_hash, pii_state (set after the order rows)
    pii: dict[str, dict[str, Any]] = field(default_factory=dict)
    merges: dict[str, str] = field(default_factory=dict)  # customer id -> the customer it folds into
    # audit (services/audit.py): orders to (re-)audit, and stock to put back or ship from
    audit: set[str] = field(default_factory=set)
    release: dict[str, str] = field(default_factory=dict)  # order id -> actor (cancelled / closed)
    consume: dict[str, str] = field(default_factory=dict)  # order id -> actor (shipped outside OrderHub)
    # fulfillment (services/fulfillment.py): changes of orders that may be at the WMS, decided in the write
    wms_changes: dict[str, Any] = field(default_factory=dict)  # order id -> fulfillment.PlatformChange
    wms_only: set[str] = field(default_factory=set)  # in `audit` only so that the hand-over runs; never re-audited for it
    intercept: Callable[[sa.Connection, dict[str, Any], datetime, datetime], set[str]] | None = None
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    inbox_done: list[dict[str, Any]] = field(default_factory=list)
    inbox_retry: list[dict[str, Any]] = field(default_factory=list)


def order_row(change: Change, customer_id: str | None, version: int, now: datetime, snapshot_at: datetime | None) -> dict[str, Any]:
    order = change.order
    a = order.amounts
    b = order.buyer
    return {
        "id": order.id,
        "channel": order.channel,
        "shop_id": order.shop_id,
        "original_id": order.original_id,
        "status": (change.status or order.status).value,
        "platform_status": order.platform_status,
        "created_at": order.created_at,
        "paid_at": order.paid_at,
        "updated_at": order.updated_at,
        "currency": order.currency,
        "goods": a.goods,
        "discount": a.discount,
        "discount_shop": a.discount_shop,
        "discount_platform": a.discount_platform,
        "shipping": a.shipping,
        "paid": a.paid,
        "customer_id": customer_id,
        "buyer": {"platform_buyer_id": b.platform_buyer_id, "name": b.name, "phone": b.phone, "level": b.level},
        "address": address_dict(order),
        "buyer_message": order.buyer_message or None,
        "seller_remark": order.seller_remark or None,
        "holds": list(change.holds),
        "shipment": {"carrier": order.shipment.carrier, "waybill_no": order.shipment.waybill_no} if order.shipment else None,
        "pii": {k: v for k, v in order.pii.items() if k not in RESOLVED_KEYS},
        "content_hash": change.content_hash,
        "snapshot_at": snapshot_at,
        "version": version,
        "raw": orjson.dumps(order.raw).decode(),
        "modified_at": now,
    }


def line_rows(change: Change) -> list[dict[str, Any]]:
    order_id = change.order.id
    return [
        {
            "order_id": order_id,
            "line_no": index,
            "sku": line.sku,
            "platform_sku_id": line.platform_sku_id,
            "platform_line_id": line.platform_line_id,
            "title": line.title,
            "qty": line.qty,
            "unit_price": line.unit_price,
            "paid": line.paid,
            "gift": line.gift,
            "refund_status": line.refund_status,
        }
        for index, line in enumerate(change.order.lines)
    ]


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def write_plan(conn: sa.Connection, plan: WritePlan, now: datetime) -> None:
    _finish_inbox(conn, plan, now)
    if plan.creates:
        rows = []
        for change, customer_id in plan.creates:
            row = order_row(change, customer_id, 1, now, plan.snapshot_at.get(change.order.id))
            row.update(ingested_at=now, tags=[], priority=0, audit_state="pending" if change.order.id in plan.audit else None)
            rows.append(row)
        conn.execute(orders.insert(), rows)
        conn.execute(order_lines.insert(), [line for change, _ in plan.creates for line in line_rows(change)])
    if plan.updates:
        _update_orders(conn, plan.updates, now, plan.snapshot_at)
    if plan.touches:
        conn.execute(
            sa.update(orders).where(orders.c.id == sa.bindparam("b_id")).values(
                updated_at=sa.bindparam("b_updated_at"), raw=sa.bindparam("b_raw"), snapshot_at=sa.bindparam("b_snapshot_at")
            ),
            plan.touches,
        )
    if plan.events:
        conn.execute(
            order_events.insert(),
            [
                {
                    "order_id": order_id, "at": now, "actor": e.actor, "kind": e.kind,
                    "from_status": e.from_status, "to_status": e.to_status, "reason": e.reason, "data": e.data,
                }
                for order_id, e in plan.events
            ],
        )
    if plan.pii:
        conn.execute(
            sa.update(orders).where(orders.c.id == sa.bindparam("b_id")).values(
                pii_sealed=sa.bindparam("b_sealed"), phone_hash=sa.bindparam("b_phone_hash"),
                phone_last4_hash=sa.bindparam("b_last4_hash"), pii_state=sa.bindparam("b_state"),
            ),
            [{"b_id": oid, **{f"b_{k}": v for k, v in values.items()}} for oid, values in plan.pii.items()],
        )
    if plan.audit or plan.release or plan.consume:
        _hand_over_to_audit(conn, plan, now)
    if plan.identities:
        stmt = _insert(conn, customer_identities).on_conflict_do_nothing()
        conn.execute(stmt, [{"channel": c, "buyer_id": b, "customer_id": cid} for (c, b), cid in plan.identities.items()])
    if plan.customer_channels:
        stmt = _insert(conn, customer_channels).on_conflict_do_nothing()
        conn.execute(stmt, [{"customer_id": cid, "channel": ch, "first_order_at": at} for (cid, ch), at in plan.customer_channels.items()])
    if plan.customers:
        stmt = _insert(conn, customers)
        stmt = stmt.on_conflict_do_update(
            index_elements=[customers.c.id],
            set_={
                "name": sa.func.coalesce(stmt.excluded.name, customers.c.name),
                "phone": sa.func.coalesce(stmt.excluded.phone, customers.c.phone),
                "level": sa.func.coalesce(stmt.excluded.level, customers.c.level),
                "order_count": customers.c.order_count + stmt.excluded.order_count,
                "last_order_at": sa.func.coalesce(stmt.excluded.last_order_at, customers.c.last_order_at),
            },
        )
        conn.execute(stmt, list(plan.customers.values()))
    for gone, keep in plan.merges.items():
        merge_customers(conn, gone, keep)
    if plan.quarantined:
        for row in plan.quarantined:
            row.setdefault("created_at", now)
            row.setdefault("status", "open")
        conn.execute(quarantine.insert(), plan.quarantined)


def _finish_inbox(conn: sa.Connection, plan: WritePlan, now: datetime) -> None:
    """The batch's inbox rows done (or due again), first: each only while it still carries the lease the
    batch's claim set, so of two workers holding one row (a lease expired mid-batch) one writes the batch."""
    mine = sa.and_(inbox.c.id == sa.bindparam("b_id"), inbox.c.status == "processing",
                   inbox.c.lease_until.is_not_distinct_from(sa.bindparam("b_lease", type_=inbox.c.lease_until.type)))
    for rows, values in (
        (plan.inbox_done, {"status": "done", "outcome": sa.bindparam("b_outcome"), "processed_at": now, "lease_until": None, "error": None}),
        (plan.inbox_retry, {"status": "pending", "attempts": sa.bindparam("b_attempts"), "next_attempt_at": sa.bindparam("b_next"),
                            "error": sa.bindparam("b_error"), "lease_until": None}),
    ):
        if rows:
            written = conn.execute(sa.update(inbox).where(mine).values(**values), [{"b_lease": None, **row} for row in rows]).rowcount
            if written != len(rows):
                raise LeaseLost(f"{len(rows) - written} of {len(rows)} inbox rows were taken over by another worker")


def _hand_over_to_audit(conn: sa.Connection, plan: WritePlan, now: datetime) -> None:
    """In the same transaction as the platform's change: orders that became paid (or changed what
    the audit looks at) wait for audit; a cancelled order's stock goes back at once, and orders
    held out of stock for those SKUs are audited again; an order shipped outside OrderHub uses its stock up.
    Orders whose packages the WMS has are fulfillment's (plan.intercept): their change became a freeze
    instruction, and they keep their stock and are not re-audited."""
    if plan.wms_changes and plan.intercept is not None:
        # the batch's oldest message: a change arrived no earlier than that, so its measured delay never flatters
        rows = [row["b_id"] for row in plan.inbox_done][:_CHUNK]
        arrived = conn.execute(sa.select(sa.func.min(inbox.c.received_at)).where(inbox.c.id.in_(rows))).scalar_one() if rows else None
        at_wms = plan.intercept(conn, plan.wms_changes, arrived or now, now)
        plan.audit.difference_update(at_wms | plan.wms_only)
        for order_id in at_wms:
            plan.release.pop(order_id, None)
    updated = [change.order.id for change, _, _ in plan.updates if change.order.id in plan.audit]
    if updated:
        audit_repo.set_audit_state(conn, updated, audit_repo.AuditState.PENDING)
    for actors, release in ((plan.release, True), (plan.consume, False)):
        by_actor: dict[str, list[str]] = {}
        for order_id, actor in actors.items():
            by_actor.setdefault(actor, []).append(order_id)
        for actor, ids in sorted(by_actor.items()):
            if release:
                freed = inventory_repo.active_reservations(conn, ids)
                inventory_repo.release(conn, ids, actor=actor, reason="订单取消/关闭 order cancelled or closed", now=now)
                audit_repo.requeue_short(conn, {r["sku"] for rs in freed.values() for r in rs})
            else:
                inventory_repo.consume(conn, ids, actor=actor, now=now)
            audit_repo.set_audit_state(conn, ids, None)


def merge_customers(conn: sa.Connection, gone: str, keep: str) -> None:
    """Fold customer `gone` into `keep`: identities, orders and channels move, counts add up."""
    if gone == keep:
        return
    old = conn.execute(sa.select(customers).where(customers.c.id == gone)).mappings().first()
    conn.execute(sa.update(customer_identities).where(customer_identities.c.customer_id == gone).values(customer_id=keep))
    conn.execute(sa.update(orders).where(orders.c.customer_id == gone).values(customer_id=keep))
    moved = conn.execute(sa.select(customer_channels.c.channel, customer_channels.c.first_order_at).where(customer_channels.c.customer_id == gone)).all()
    if moved:
        conn.execute(_insert(conn, customer_channels).on_conflict_do_nothing(),
                     [{"customer_id": keep, "channel": ch, "first_order_at": at} for ch, at in moved])
        conn.execute(sa.delete(customer_channels).where(customer_channels.c.customer_id == gone))
    if old is not None:
        conn.execute(sa.update(customers).where(customers.c.id == keep).values(
            order_count=customers.c.order_count + old["order_count"],
            first_seen_at=sa.case((customers.c.first_seen_at > old["first_seen_at"], old["first_seen_at"]), else_=customers.c.first_seen_at),
        ))
        conn.execute(sa.delete(customers).where(customers.c.id == gone))


def merge_shipment(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The platform's snapshot names the parcel; what OrderHub knows of it stays: the logistics status
    tracking wrote, a split order's waybills, the carrier code fulfillment shipped with (the platform
    may call the same parcel 中通快递 where OrderHub says ZTO). A different waybill from the platform
    (re-shipped outside OrderHub) replaces the parcel's carrier and number."""
    if not ours or not theirs:
        return ours or theirs
    known = {ours.get("waybill_no")} | {w.get("waybill_no") for w in ours.get("waybills") or ()}
    if theirs.get("waybill_no") in known:
        return ours
    return {**ours, **theirs}


def _stored_shipments(conn: sa.Connection, ids: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        found.update(conn.execute(sa.select(orders.c.id, orders.c.shipment).where(orders.c.id.in_(chunk), orders.c.shipment.is_not(None))).all())
    return found


def _update_orders(
    conn: sa.Connection, updates: Sequence[tuple[Change, int, str | None]], now: datetime, snapshot_at: dict[str, datetime]
) -> None:
    # Columns other stages own (audit, the PII step) are not overwritten by a platform snapshot.
    mutable = [c for c in orders.c if c.name not in (
        "id", "channel", "original_id", "ingested_at", "warehouse", "priority", "tags", "rule_version",
        "pii_sealed", "phone_hash", "phone_last4_hash", "pii_state",
        "audit_state", "audited_at", "carrier", "gifts", "decisions", "released_holds", "merge_group",
    )]
    values = {c.name: sa.bindparam(f"b_{c.name}") for c in mutable}
    stmt = sa.update(orders).where(orders.c.id == sa.bindparam("b_id"), orders.c.version == sa.bindparam("b_expected")).values(values)
    params = []
    ours = _stored_shipments(conn, [change.order.id for change, _, _ in updates])
    for change, expected, customer_id in updates:
        row = order_row(change, customer_id, expected + 1, now, snapshot_at.get(change.order.id))
        row["shipment"] = merge_shipment(ours.get(row["id"]), row["shipment"])
        bound = {f"b_{name}": row[name] for name in values}
        bound["b_id"] = row["id"]
        bound["b_expected"] = expected
        params.append(bound)
    result = conn.execute(stmt, params)
    if result.rowcount != len(params):
        raise ConcurrentUpdate(f"{len(params) - result.rowcount} of {len(params)} orders changed underneath this batch")
    ids = [change.order.id for change, _, _ in updates]
    for start in range(0, len(ids), _CHUNK):
        conn.execute(sa.delete(order_lines).where(order_lines.c.order_id.in_(ids[start : start + _CHUNK])))
    conn.execute(order_lines.insert(), [line for change, _, _ in updates for line in line_rows(change)])
