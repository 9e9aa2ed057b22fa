"""Reads and writes of fulfillment: packages at the WMS, freeze instructions, and the parts of an order they change.

Lock order, the same in every fulfillment transaction (and after the order rows processing and
the audit lock first): orders by id, then their fulfillments, then the outbox rows of their WMS
orders, then reservations and stock (inventory_repo). PostgreSQL takes row locks; SQLite's
BEGIN IMMEDIATE already excludes every other writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from orderhub.adapters.db.tables import freeze_instructions, fulfillments, inbox, order_events, orders, outbox
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.fulfillment import PackageStatus, parse_code

_CHUNK = 500
_f = fulfillments.c
_i = freeze_instructions.c
ORDER_COLUMNS = (
    orders.c.id, orders.c.channel, orders.c.shop_id, orders.c.original_id, orders.c.status, orders.c.version, orders.c.holds,
    orders.c.priority, orders.c.carrier, orders.c.warehouse, orders.c.merge_group, orders.c.address, orders.c.buyer,
    orders.c.buyer_message, orders.c.seller_remark, orders.c.shipment, orders.c.pii, orders.c.audit_state, orders.c.pii_sealed,
)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _locked(conn: sa.Connection, query: sa.Select, lock: bool) -> sa.Select:
    return query.with_for_update() if lock and conn.dialect.name == "postgresql" else query


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# -- orders ---------------------------------------------------------------------------------------


def lock_orders(conn: sa.Connection, ids: Iterable[str]) -> dict[str, Any]:
    """The orders (the columns fulfillment reads), locked in id order."""
    found: dict[str, Any] = {}
    for chunk in _chunks(sorted(set(ids))):
        query = sa.select(*ORDER_COLUMNS).where(orders.c.id.in_(chunk)).order_by(orders.c.id)
        found.update({row.id: row for row in conn.execute(_locked(conn, query, True))})
    return found


def order_statuses(conn: sa.Connection, ids: Iterable[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(set(ids))):
        found.update(dict(conn.execute(sa.select(orders.c.id, orders.c.status).where(orders.c.id.in_(chunk))).all()))
    return found


def inbox_behind(conn: sa.Connection, received_by: datetime) -> bool:
    """Is any platform message that arrived by `received_by` still unprocessed? (A message already being
    retried after a failed fetch does not count: it may wait minutes for its platform.)"""
    query = sa.select(inbox.c.id).where(inbox.c.status != "done", inbox.c.attempts == 0, inbox.c.received_at <= received_by).limit(1)
    return conn.execute(query).first() is not None


def group_members(conn: sa.Connection, group: str) -> list[str]:
    """Orders merged under `group` (合单), the group's own order included."""
    query = sa.select(orders.c.id).where(sa.or_(orders.c.merge_group == group, orders.c.id == group)).order_by(orders.c.id)
    return list(conn.execute(query).scalars())


def save_order(conn: sa.Connection, row: Any, values: Mapping[str, Any], now: datetime, *, actor: str, kind: str, reason: str,
               data: dict[str, Any] | None = None, log_status: bool = True) -> None:
    """Change an order (version + 1) and log the change; `row` is a locked row from lock_orders.
    `log_status=False`: a status put back within the same transaction is not a move worth logging."""
    if values:
        conn.execute(sa.update(orders).where(orders.c.id == row.id).values(**values, version=orders.c.version + 1, modified_at=now))
    moved = log_status and "status" in values
    event(conn, row.id, now, actor=actor, kind=kind, reason=reason, data=data,
          from_status=row.status if moved else None, to_status=values.get("status") if moved else None)


def event(conn: sa.Connection, order_id: str, now: datetime, *, actor: str, kind: str, reason: str, data: dict[str, Any] | None = None,
          from_status: str | None = None, to_status: str | None = None) -> None:
    conn.execute(order_events.insert().values(order_id=order_id, at=now, actor=actor, kind=kind, from_status=from_status,
                                              to_status=to_status, reason=reason, data=data))


# -- packages -------------------------------------------------------------------------------------


def packages(conn: sa.Connection, order_ids: Iterable[str], *, lock: bool = False) -> list[Any]:
    out: list[Any] = []
    for chunk in _chunks(sorted(set(order_ids))):
        query = sa.select(fulfillments).where(_f.order_id.in_(chunk)).order_by(_f.order_id, _f.package_no)
        out.extend(conn.execute(_locked(conn, query, lock)))
    return out


def packages_by_code(conn: sa.Connection, code: str, *, lock: bool = False) -> list[Any]:
    """The packages travelling under one WMS order code (several orders when merged); [] for a code
    that is not ours. The code names its anchor order, so no scan of the table is needed."""
    try:
        anchor, package_no, _ = parse_code(code)
    except ValueError:
        return []
    query = sa.select(fulfillments).where(_f.order_id.in_(_members([anchor])), _f.package_no == package_no, _f.wms_order_no == code)
    return list(conn.execute(_locked(conn, query.order_by(_f.order_id), lock)))


def lock_for_codes(conn: sa.Connection, codes: Iterable[str]) -> None:
    """Lock, in id order, every order travelling under these WMS order codes. A transaction applying many
    WMS callbacks takes all its order locks first, as one callback does (orders, then stock): locked one
    callback at a time, an order locked after an earlier callback's stock row deadlocks with a transaction
    that holds that order and wants the same stock."""
    anchors = set()
    for code in codes:
        try:
            anchors.add(parse_code(code)[0])
        except ValueError:
            continue
    ids: set[str] = set()
    for chunk in _chunks(sorted(anchors)):
        ids.update(conn.execute(_members(chunk)).scalars())
    lock_orders(conn, ids)


def _members(anchors: list[str]) -> sa.Select:
    """The orders travelling under these codes' anchors: each anchor, and the orders merged into its group."""
    return sa.select(orders.c.id).where(sa.or_(orders.c.id.in_(anchors), orders.c.merge_group.in_(anchors)))


def locked_by_code(conn: sa.Connection, wms: str, code: str, *, orders_locked: bool = False) -> tuple[dict[str, Any], list[Any]]:
    """The orders (locked first) and the packages (locked next) of a WMS order code sent to `wms`.
    `orders_locked`: the transaction holds the code's orders already (lock_for_codes): the packages are
    locked at once, one query fewer."""
    first = packages_by_code(conn, code, lock=orders_locked)
    if not first or first[0].wms != wms:
        raise OrderHubError(ErrorCode.NOT_FOUND, f"no package {code!r} was sent to WMS {wms}", "order_code")
    orders = lock_orders(conn, {p.order_id for p in first})
    return orders, first if orders_locked else packages_by_code(conn, code, lock=True)


def upsert_packages(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write packages as queued; a package sent again (re-queued) overwrites its cancelled row."""
    if not rows:
        return
    statement = _insert(conn, fulfillments)
    fresh = {name: getattr(statement.excluded, name) for name in (
        "warehouse", "wms", "wms_order_no", "status", "carrier", "priority", "queued_at", "updated_at")}
    fresh.update(waybill_no=None, accepted_at=None, packed_at=None, shipped_at=None)
    conn.execute(statement.on_conflict_do_update(index_elements=[_f.order_id, _f.package_no], set_=fresh), list(rows))


def move(conn: sa.Connection, keys: Iterable[tuple[str, int]], to: PackageStatus, sources: Iterable[PackageStatus], now: datetime,
         **values: Any) -> int:
    """Conditional UPDATE: only packages still in one of `sources` move (a stale or repeated event moves none)."""
    keys = sorted(set(keys))
    if not keys:
        return 0
    allowed = [s.value for s in sources]
    moved = 0
    for chunk in _chunks(keys):
        condition = sa.tuple_(_f.order_id, _f.package_no).in_(chunk)
        result = conn.execute(sa.update(fulfillments).where(condition, _f.status.in_(allowed)).values(status=to.value, updated_at=now, **values))
        moved += result.rowcount
    return moved


def set_values(conn: sa.Connection, key: tuple[str, int], now: datetime, **values: Any) -> None:
    conn.execute(sa.update(fulfillments).where(_f.order_id == key[0], _f.package_no == key[1]).values(updated_at=now, **values))


def outbox_states(conn: sa.Connection, keys: Iterable[str], *, lock: bool = False) -> dict[str, str]:
    """idempotency key -> status of those outbox rows. Locked, a pending row cannot be claimed by a relay
    (its claim skips locked rows) until this transaction ends: what is decided here about "not sent yet" holds."""
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(set(keys))):
        query = sa.select(outbox.c.idempotency_key, outbox.c.status).where(outbox.c.idempotency_key.in_(chunk)).order_by(outbox.c.id)
        found.update({k: s for k, s in conn.execute(_locked(conn, query, lock))})
    return found


# -- freeze instructions --------------------------------------------------------------------------


def insert_instruction(conn: sa.Connection, values: Mapping[str, Any]) -> int:
    return int(conn.execute(freeze_instructions.insert().values(**values).returning(_i.id)).scalar_one())


def instructions_of(conn: sa.Connection, order_id: str, *, lock: bool = False) -> list[Any]:
    return list(conn.execute(_locked(conn, sa.select(freeze_instructions).where(_i.order_id == order_id).order_by(_i.id), lock)))


def instruction(conn: sa.Connection, instruction_id: int, *, lock: bool = False) -> Any:
    query = sa.select(freeze_instructions).where(_i.id == instruction_id)
    return conn.execute(_locked(conn, query, lock)).first()


def update_instruction(conn: sa.Connection, instruction_id: int, expected: Iterable[str], **values: Any) -> bool:
    """Conditional on the outcome still being one of `expected`: a late or repeated answer changes nothing."""
    result = conn.execute(sa.update(freeze_instructions).where(_i.id == instruction_id, _i.outcome.in_(list(expected))).values(**values))
    return result.rowcount == 1


def add_to_detail(conn: sa.Connection, instruction_id: int, **values: Any) -> None:
    """Set keys of an instruction's detail, its outcome as it is (the caller holds the order's lock)."""
    row = instruction(conn, instruction_id)
    update_instruction(conn, instruction_id, [row.outcome], detail={**(row.detail or {}), **values})


def mark_sent(conn: sa.Connection, instruction_id: int, at: datetime) -> None:
    """When the instruction first went to the WMS (kept whichever answer path settles it)."""
    conn.execute(sa.update(freeze_instructions).where(_i.id == instruction_id, _i.sent_at.is_(None)).values(sent_at=at))


def list_instructions(conn: sa.Connection, *, outcome: str | None = None, order_id: str | None = None, limit: int = 50,
                      before_id: int | None = None) -> list[dict[str, Any]]:
    """Newest first; keyset pagination on id."""
    query = sa.select(freeze_instructions)
    if outcome:
        query = query.where(_i.outcome == outcome)
    if order_id:
        query = query.where(_i.order_id == order_id)
    if before_id is not None:
        query = query.where(_i.id < before_id)
    return [{str(k): v for k, v in row.items()} for row in conn.execute(query.order_by(_i.id.desc()).limit(limit)).mappings()]


def unanswered(conn: sa.Connection, outcomes: Iterable[str], before: datetime, limit: int = 100) -> list[Any]:
    """Instructions still waiting for the WMS that were written before `before` (for the reconciling sweep)."""
    query = sa.select(freeze_instructions).where(_i.outcome.in_(list(outcomes)), _i.requested_at < before).order_by(_i.id).limit(limit)
    return list(conn.execute(query))


def outbox_responses(conn: sa.Connection, order_id: str, kinds: Iterable[str]) -> list[Any]:
    """The sent outbox messages of these kinds for an order, with what the receiver answered."""
    query = (
        sa.select(outbox.c.kind, outbox.c.payload, outbox.c.response, outbox.c.sent_at)
        .where(outbox.c.order_id == order_id, outbox.c.kind.in_(list(kinds)), outbox.c.status == "sent").order_by(outbox.c.id)
    )
    return list(conn.execute(query))
