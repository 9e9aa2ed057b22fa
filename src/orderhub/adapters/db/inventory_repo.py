"""Stock in the database: reserve, release and consume atomically, WMS counts, the ledger, the invariant.

Never oversell, on SQLite and PostgreSQL alike (docs/inventory.md):
- `reserved` only grows through a conditional UPDATE (`... WHERE available >= q`) whose rowcount is
  checked, so the check and the write are one atomic step on both backends;
- stock rows are always touched in one global order, sorted by (sku, warehouse), and a transaction
  that also touches reservation rows locks those first (by order id, then id): two transactions
  can wait for each other but never in a cycle, so there are no deadlocks;
- the CHECK constraint (reserved <= on_hand) is the last guard if code ever gets this wrong.
Every movement writes a `stock_ledger` row in the same transaction (who, why, which order).
"""

from __future__ import annotations

import base64
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from orderhub.adapters.db.tables import reservations, stock, stock_ledger
from orderhub.adapters.db.types import UtcDateTime
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.inventory import Pick

log = logging.getLogger(__name__)

_CHUNK = 500
Key = tuple[str, str]  # (sku, warehouse)

ACTIVE, RELEASED, CONSUMED = "active", "released", "consumed"

_available = stock.c.on_hand - stock.c.reserved - stock.c.safety
_row = (stock.c.sku == sa.bindparam("b_sku"), stock.c.warehouse == sa.bindparam("b_wh"))
_q = sa.bindparam("q", type_=sa.BigInteger)
_now = sa.bindparam("b_now", type_=UtcDateTime)

# The conditional UPDATE: the stock is checked and taken in one statement, so two writers cannot
# both see the same units free. rowcount 0 means the row lacked the stock (or does not exist).
_RESERVE = sa.update(stock).where(*_row, _available >= _q).values(reserved=stock.c.reserved + _q, updated_at=_now)
# Giving back what active reservations hold; `reserved >= q` holds unless the invariant is broken.
_UNRESERVE = sa.update(stock).where(*_row, stock.c.reserved >= _q).values(reserved=stock.c.reserved - _q, updated_at=_now)
_CONSUME = sa.update(stock).where(*_row, stock.c.reserved >= _q).values(
    on_hand=stock.c.on_hand - _q, reserved=stock.c.reserved - _q, updated_at=_now
)
_SET_ON_HAND = sa.update(stock).where(*_row).values(on_hand=sa.bindparam("b_on_hand", type_=sa.BigInteger), updated_at=_now)


class StockConflict(Exception):
    """The stock moved underneath (another transaction took it): re-read and allocate again."""

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        self.rows = rows
        super().__init__("not enough stock left in " + ", ".join(f"{sku}@{warehouse}" for sku, warehouse in rows))


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _ledger(at: datetime, key: Key, kind: str, actor: str, *, on_hand: int = 0, reserved: int = 0,
            order_id: str | None = None, reason: str | None = None) -> dict[str, Any]:
    return {"at": at, "sku": key[0], "warehouse": key[1], "kind": kind, "on_hand_delta": on_hand, "reserved_delta": reserved,
            "order_id": order_id, "actor": actor, "reason": reason}


# -- reading ------------------------------------------------------------------------------------


def load_available(conn: sa.Connection, skus: Iterable[str]) -> dict[Key, int]:
    """(sku, warehouse) -> on_hand - reserved - safety; may be <= 0. SKUs without stock rows are absent."""
    out: dict[Key, int] = {}
    for chunk in _chunks(sorted(set(skus))):
        query = sa.select(stock.c.sku, stock.c.warehouse, _available).where(stock.c.sku.in_(chunk))
        out.update({(sku, warehouse): int(available) for sku, warehouse, available in conn.execute(query)})
    return out


def active_reservations(conn: sa.Connection, order_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    r = reservations.c
    for chunk in _chunks(sorted(set(order_ids))):
        query = (
            sa.select(r.order_id, r.line_no, r.sku, r.warehouse, r.qty, r.package_no, r.gift)
            .where(r.order_id.in_(chunk), r.status == ACTIVE).order_by(r.order_id, r.id)
        )
        for row in conn.execute(query).mappings():
            item = {str(k): v for k, v in row.items()}
            out.setdefault(item.pop("order_id"), []).append(item)
    return out


def sellable(conn: sa.Connection, skus: Iterable[str] | None = None) -> dict[str, int]:
    """sku -> units a channel may sell: Σ over warehouses of max(0, available). Asked-for SKUs
    without stock rows are 0 (so a push tells the channel they are sold out)."""
    positive = sa.func.sum(sa.case((_available > 0, _available), else_=0))
    query = sa.select(stock.c.sku, positive).group_by(stock.c.sku)
    if skus is None:
        return {sku: int(total or 0) for sku, total in conn.execute(query.order_by(stock.c.sku))}
    wanted = sorted(set(skus))
    out = dict.fromkeys(wanted, 0)
    for chunk in _chunks(wanted):
        out.update({sku: int(total or 0) for sku, total in conn.execute(query.where(stock.c.sku.in_(chunk)))})
    return out


def _encode_cursor(sku: str, warehouse: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([sku, warehouse])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> Key:
    try:
        sku, warehouse = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(sku, str) or not isinstance(warehouse, str):
            raise ValueError("cursor holds no stock key")
        return sku, warehouse
    except Exception:
        raise OrderHubError(ErrorCode.INVALID_CURSOR, "cursor is not one this API issued", "cursor") from None


def list_stock(
    conn: sa.Connection, *, sku: str | None = None, warehouse: str | None = None, limit: int = 50, cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Stock rows by (sku, warehouse), keyset-paginated; `sku` is a prefix."""
    s = stock.c
    query = sa.select(s.sku, s.warehouse, s.on_hand, s.reserved, s.safety, _available.label("available"), s.updated_at)
    if sku:
        # substr, not LIKE: SQLite's LIKE ignores case, and both backends must answer the same.
        query = query.where(s.sku >= sku, sa.func.substr(s.sku, 1, len(sku)) == sku)
    if warehouse:
        query = query.where(s.warehouse == warehouse)
    if cursor:
        after_sku, after_wh = _decode_cursor(cursor)
        query = query.where(sa.or_(s.sku > after_sku, sa.and_(s.sku == after_sku, s.warehouse > after_wh)))
    rows = [{str(k): v for k, v in row.items()} for row in conn.execute(query.order_by(s.sku, s.warehouse).limit(limit + 1)).mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1]["sku"], rows[-1]["warehouse"])
    return rows, next_cursor


def ledger(conn: sa.Connection, sku: str, *, warehouse: str | None = None, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
    """A SKU's movements, newest first; page on with `before_id` = the last id seen."""
    query = sa.select(stock_ledger).where(stock_ledger.c.sku == sku)
    if warehouse:
        query = query.where(stock_ledger.c.warehouse == warehouse)
    if before_id is not None:
        query = query.where(stock_ledger.c.id < before_id)
    query = query.order_by(stock_ledger.c.id.desc()).limit(limit)
    return [{str(k): v for k, v in row.items()} for row in conn.execute(query).mappings()]


def check_invariant(conn: sa.Connection) -> list[dict[str, Any]]:
    """Rows where reserved != Σ active reservations (also reservations without a stock row,
    reported with reserved None). [] when healthy."""
    r = reservations.c
    active = (
        sa.select(r.sku, r.warehouse, sa.func.sum(r.qty).label("active"))
        .where(r.status == ACTIVE).group_by(r.sku, r.warehouse).subquery()
    )
    joined = sa.and_(active.c.sku == stock.c.sku, active.c.warehouse == stock.c.warehouse)
    held = sa.func.coalesce(active.c.active, 0)
    drifted = (
        sa.select(stock.c.sku, stock.c.warehouse, stock.c.reserved, held.label("active"))
        .select_from(stock.outerjoin(active, joined)).where(stock.c.reserved != held)
    )
    orphaned = (
        sa.select(active.c.sku, active.c.warehouse, sa.null().label("reserved"), active.c.active)
        .select_from(active.outerjoin(stock, joined)).where(stock.c.sku.is_(None))
    )
    rows = conn.execute(sa.union_all(drifted, orphaned)).mappings().all()
    return sorted(({"sku": x["sku"], "warehouse": x["warehouse"], "reserved": x["reserved"], "active": int(x["active"])} for x in rows),
                  key=lambda x: (x["sku"], x["warehouse"]))


# -- reserving, releasing, consuming ------------------------------------------------------------


def reserve(
    conn: sa.Connection, picks_by_order: Mapping[str, Sequence[Pick]], *, actor: str, now: datetime, reason: str | None = None,
) -> None:
    """Reserve every pick of every order, all or nothing, in the caller's transaction.

    The batch's quantities are added up per (sku, warehouse): one conditional UPDATE per stock
    row, however many orders share it. Raises StockConflict (having changed nothing) if any row
    lacks the stock by now."""
    totals: dict[Key, int] = defaultdict(int)
    per_order: dict[tuple[str, str, str], int] = defaultdict(int)
    rows: list[dict[str, Any]] = []
    for order_id, picks in picks_by_order.items():
        for p in picks:
            if p.qty <= 0:
                raise ValueError(f"order {order_id} line {p.line_no}: quantity {p.qty} is not positive")
            totals[(p.sku, p.warehouse)] += p.qty
            per_order[(order_id, p.sku, p.warehouse)] += p.qty
            rows.append({"order_id": order_id, "line_no": p.line_no, "sku": p.sku, "warehouse": p.warehouse, "qty": p.qty,
                         "package_no": p.package_no, "gift": p.gift, "status": ACTIVE, "created_at": now})
    if not rows:
        return
    # Sorted by (sku, warehouse): the global lock order that keeps concurrent reservations deadlock-free.
    params = [{"b_sku": sku, "b_wh": wh, "q": totals[(sku, wh)], "b_now": now} for sku, wh in sorted(totals)]
    _take(conn, params)
    conn.execute(sa.insert(reservations), rows)
    conn.execute(sa.insert(stock_ledger), [
        _ledger(now, (sku, wh), "reserve", actor, reserved=qty, order_id=oid, reason=reason) for (oid, sku, wh), qty in per_order.items()
    ])


def _take(conn: sa.Connection, params: list[dict[str, Any]]) -> None:
    # All rows in one pipelined executemany; a savepoint lets a failure be undone here, so a
    # StockConflict leaves the caller's transaction exactly as it was.
    attempt = conn.begin_nested()
    try:
        done = conn.execute(_RESERVE, params).rowcount
    except BaseException:
        attempt.rollback()
        raise
    if done == len(params):
        attempt.commit()
        return
    attempt.rollback()
    # The rare path: find which rows are short, row by row (same sorted order), then undo that too.
    probe = conn.begin_nested()
    try:
        short = [(p["b_sku"], p["b_wh"]) for p in params if conn.execute(_RESERVE, p).rowcount != 1]
    finally:
        probe.rollback()
    raise StockConflict(short or [(p["b_sku"], p["b_wh"]) for p in params])


def release(conn: sa.Connection, order_ids: Iterable[str], *, actor: str, reason: str, now: datetime) -> int:
    """Cancel/close/re-audit: every active reservation of these orders is released. Returns the units released."""
    return _close(conn, order_ids, RELEASED, "release", _UNRESERVE, actor=actor, reason=reason, now=now)


def consume(conn: sa.Connection, order_ids: Iterable[str], *, actor: str, now: datetime, package_no: int | None = None) -> int:
    """Shipment: active reservations become consumed, and the units leave on_hand. With
    `package_no`, only that package of a split order shipped. Returns the units consumed."""
    reason = "发货 shipped" if package_no is None else f"发货 shipped: package {package_no}"
    return _close(conn, order_ids, CONSUMED, "consume", _CONSUME, actor=actor, reason=reason, now=now, package_no=package_no)


def _close(
    conn: sa.Connection, order_ids: Iterable[str], status: str, kind: str, statement: sa.Update, *,
    actor: str, reason: str, now: datetime, package_no: int | None = None,
) -> int:
    r = reservations.c
    held: list[Any] = []
    for chunk in _chunks(sorted(set(order_ids))):
        query = sa.select(r.id, r.order_id, r.sku, r.warehouse, r.qty).where(r.order_id.in_(chunk), r.status == ACTIVE)
        if package_no is not None:
            query = query.where(r.package_no == package_no)
        # Row locks on the reservations first, in (order id, id) order, before any stock row: a
        # second release/consume of the same order waits here and then finds nothing active,
        # so units are never given back twice. (SQLite: BEGIN IMMEDIATE already serialises writers.)
        held.extend(conn.execute(query.order_by(r.order_id, r.id).with_for_update()).all())
    if not held:
        return 0
    for chunk in _chunks([row.id for row in held]):
        conn.execute(sa.update(reservations).where(r.id.in_(chunk)).values(status=status, closed_at=now))
    totals: dict[Key, int] = defaultdict(int)
    per_order: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in held:
        totals[(row.sku, row.warehouse)] += row.qty
        per_order[(row.order_id, row.sku, row.warehouse)] += row.qty
    params = [{"b_sku": sku, "b_wh": wh, "q": totals[(sku, wh)], "b_now": now} for sku, wh in sorted(totals)]  # the global order
    if conn.execute(statement, params).rowcount != len(params):
        raise RuntimeError(f"stock invariant broken (reserved below its active reservations) in {sorted(totals)}; see check_invariant")
    on_hand = -1 if kind == "consume" else 0
    conn.execute(sa.insert(stock_ledger), [
        _ledger(now, (sku, wh), kind, actor, on_hand=on_hand * qty, reserved=-qty, order_id=oid, reason=reason)
        for (oid, sku, wh), qty in per_order.items()
    ])
    return sum(totals.values())


# -- on hand: WMS counts, receipts, write-offs, safety stock ------------------------------------


def _lock_rows(conn: sa.Connection, keys: Sequence[Key], now: datetime) -> dict[Key, tuple[int, int, int]]:
    """Create missing rows empty (a concurrent writer may create them too: ON CONFLICT DO NOTHING),
    then lock all of them in (sku, warehouse) order. Returns key -> (on_hand, reserved, safety)."""
    s = stock.c
    existing: set[Key] = set()
    for chunk in _chunks(keys):
        existing.update((sku, wh) for sku, wh in conn.execute(sa.select(s.sku, s.warehouse).where(sa.tuple_(s.sku, s.warehouse).in_(chunk))))
    missing = [k for k in keys if k not in existing]
    if missing:
        conn.execute(_insert(conn, stock).on_conflict_do_nothing(), [
            {"sku": sku, "warehouse": wh, "on_hand": 0, "reserved": 0, "safety": 0, "updated_at": now} for sku, wh in missing
        ])
    found: dict[Key, tuple[int, int, int]] = {}
    for chunk in _chunks(keys):
        query = (
            sa.select(s.sku, s.warehouse, s.on_hand, s.reserved, s.safety)
            .where(sa.tuple_(s.sku, s.warehouse).in_(chunk)).order_by(s.sku, s.warehouse).with_for_update()
        )
        found.update({(row.sku, row.warehouse): (row.on_hand, row.reserved, row.safety) for row in conn.execute(query)})
    return found


def sync_on_hand(conn: sa.Connection, counts: Iterable[tuple[str, str, int]], *, actor: str, reason: str, now: datetime) -> list[Key]:
    """Take the WMS's absolute on-hand counts. Rows it names that do not exist are created.

    A count below what is reserved cannot be stored (the CHECK): on_hand stays at the reserved
    quantity, the ledger says how many units the WMS is short and a warning is logged — someone
    has to look at the shelf. Returns the rows whose available went up (orders held out of stock
    for them are worth auditing again)."""
    wanted: dict[Key, int] = {}
    for sku, warehouse, count in counts:
        if count < 0:
            raise ValueError(f"{sku}@{warehouse}: a stock count cannot be negative ({count})")
        wanted[(sku, warehouse)] = int(count)  # a later count of the same row wins
    keys = sorted(wanted)
    if not keys:
        return []
    current = _lock_rows(conn, keys, now)
    updates, entries, went_up = [], [], []
    for key in keys:
        on_hand, reserved, _ = current[key]
        count = wanted[key]
        note = reason
        if count < reserved:
            note = f"{reason}；WMS 盘点 {count} < 已占用 {reserved}"
            log.warning("stock sync: WMS counts %s of %s@%s but %s are reserved; on hand kept at %s", count, key[0], key[1], reserved, reserved)
        target = max(count, reserved)
        if target == on_hand:
            continue
        updates.append({"b_sku": key[0], "b_wh": key[1], "b_on_hand": target, "b_now": now})
        entries.append(_ledger(now, key, "sync", actor, on_hand=target - on_hand, reason=note))
        if target > on_hand:
            went_up.append(key)
    if updates:
        conn.execute(_SET_ON_HAND, updates)  # under the row locks taken above
        conn.execute(sa.insert(stock_ledger), entries)
    return went_up


def adjust(conn: sa.Connection, sku: str, warehouse: str, delta: int, *, actor: str, reason: str, now: datetime) -> None:
    """Goods received (+) or written off (-). A write-off may not take on_hand below what is reserved."""
    if delta == 0:
        return
    key = (sku, warehouse)
    if delta > 0:
        stmt = _insert(conn, stock).values(sku=sku, warehouse=warehouse, on_hand=delta, reserved=0, safety=0, updated_at=now)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[stock.c.sku, stock.c.warehouse], set_={"on_hand": stock.c.on_hand + stmt.excluded.on_hand, "updated_at": now},
        ))
        kind = "receive"
    else:
        # Conditional UPDATE: the check against reserved and the write are one statement.
        done = conn.execute(
            sa.update(stock).where(stock.c.sku == sku, stock.c.warehouse == warehouse, stock.c.on_hand + delta >= stock.c.reserved)
            .values(on_hand=stock.c.on_hand + delta, updated_at=now)
        ).rowcount
        if done != 1:
            row = conn.execute(sa.select(stock.c.on_hand, stock.c.reserved).where(stock.c.sku == sku, stock.c.warehouse == warehouse)).first()
            held = f"库存 {row.on_hand}，已占用 {row.reserved}" if row else "无库存记录"
            raise OrderHubError(ErrorCode.INSUFFICIENT_STOCK, f"{sku}@{warehouse}: {held}，不能减少 {-delta} 件", "delta")
        kind = "adjust"
    conn.execute(sa.insert(stock_ledger), [_ledger(now, key, kind, actor, on_hand=delta, reason=reason)])


def set_safety(conn: sa.Connection, sku: str, warehouse: str, safety: int, *, actor: str, now: datetime) -> None:
    """Units kept back from sale (buffer against count errors); the row is created if needed."""
    if safety < 0:
        raise ValueError(f"{sku}@{warehouse}: safety stock cannot be negative ({safety})")
    key = (sku, warehouse)
    old = _lock_rows(conn, [key], now)[key][2]
    if old == safety:
        return
    conn.execute(sa.update(stock).where(stock.c.sku == sku, stock.c.warehouse == warehouse).values(safety=safety, updated_at=now))
    conn.execute(sa.insert(stock_ledger), [_ledger(now, key, "safety", actor, reason=f"安全库存 {old} → {safety}")])
