"""Reads and writes of the audit stage: which orders wait for audit, what it needs to know about
them (lines resolved to merchant SKUs, catalogue facts, the customer), and what it decided."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db.tables import customer_channels, customers, order_events, order_lines, orders, sku_mappings, skus
from orderhub.domain.audit import AuditLine, AuditOrder
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.merge import Event
from orderhub.domain.order import RefundStatus

_CHUNK = 500

# Statuses an audit may (re)decide: nothing has gone to the warehouse yet.
AUDITABLE = ("paid", "on_hold", "ready")


class AuditState:
    PENDING = "pending"  # needs (re-)auditing
    DONE = "done"
    SHORT = "short"  # held out of stock: audited again as soon as one of its SKUs gets stock


@dataclass(slots=True)
class AuditRow:
    """One order as the audit stage reads it: the rules' view plus what the write needs."""

    order: AuditOrder
    status: str
    version: int
    holds: list[dict[str, Any]]
    released: frozenset[str]
    shop_id: str
    customer_id: str | None
    address: dict[str, Any]
    merge_group: str | None
    tags: list[str]


def pending_ids(conn: sa.Connection, limit: int) -> list[str]:
    """Oldest paid first: when stock is short, the buyer who paid first gets it."""
    query = (
        sa.select(orders.c.id).where(orders.c.audit_state == AuditState.PENDING)
        .order_by(orders.c.paid_at, orders.c.id).limit(limit)
    )
    return list(conn.execute(query).scalars())


def lock_versions(conn: sa.Connection, ids: Sequence[str]) -> dict[str, tuple[int, str, str | None]]:
    """id -> (version, status, audit_state), row-locked on PostgreSQL until the transaction ends
    (SQLite's BEGIN IMMEDIATE already excludes every other writer), so what the audit decided
    cannot be overtaken by a platform update before it is written. Rows another auditor holds
    are skipped, not waited for."""
    found: dict[str, tuple[int, str, str | None]] = {}
    for start in range(0, len(ids), _CHUNK):
        query = sa.select(orders.c.id, orders.c.version, orders.c.status, orders.c.audit_state).where(orders.c.id.in_(ids[start : start + _CHUNK]))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        found.update({row.id: (row.version, row.status, row.audit_state) for row in conn.execute(query)})
    return found


def load_audit_rows(conn: sa.Connection, ids: Sequence[str]) -> list[AuditRow]:
    columns = (
        orders.c.id, orders.c.channel, orders.c.shop_id, orders.c.status, orders.c.version, orders.c.created_at, orders.c.paid_at,
        orders.c.goods, orders.c.discount, orders.c.shipping, orders.c.paid, orders.c.address, orders.c.buyer, orders.c.buyer_message,
        orders.c.seller_remark, orders.c.holds, orders.c.released_holds, orders.c.customer_id, orders.c.merge_group, orders.c.tags,
        orders.c.pii,
    )
    rows: list[Any] = []
    lines: dict[str, list[Any]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows.extend(conn.execute(sa.select(*columns).where(orders.c.id.in_(chunk))))
        for line in conn.execute(
            sa.select(order_lines).where(order_lines.c.order_id.in_(chunk)).order_by(order_lines.c.order_id, order_lines.c.line_no)
        ):
            lines.setdefault(line.order_id, []).append(line)
    all_lines = [line for group in lines.values() for line in group]
    catalogue = _catalogue(conn, {line.sku for line in all_lines if line.sku})
    mapped = _mappings(conn, {(row.channel, key) for row in rows for line in lines.get(row.id, ()) for key in (line.platform_sku_id, line.sku) if key})
    customer_info = _customers(conn, {row.customer_id for row in rows if row.customer_id})
    out = []
    for row in rows:
        audit_lines = tuple(_audit_line(row.channel, line, catalogue, mapped) for line in lines.get(row.id, ()))
        address = row.address or {}
        buyer = row.buyer or {}
        channels, count = customer_info.get(row.customer_id, ((), 0))
        order = AuditOrder(
            id=row.id, channel=row.channel, shop_id=row.shop_id, created_at=row.created_at, paid_at=row.paid_at,
            goods=row.goods, discount=row.discount, shipping=row.shipping, paid=row.paid,
            province=address.get("province"), city=address.get("city"), district=address.get("district"),
            # a platform that sends the street only encrypted (有赞) still sent one: it is not missing
            address_detail=address.get("detail") or ("***" if (row.pii or {}).get("address_detail") else None),
            buyer_level=buyer.get("level"),
            buyer_message=row.buyer_message, seller_remark=row.seller_remark, lines=audit_lines,
            customer_channels=channels, customer_order_count=count,
        )
        out.append(AuditRow(
            order, row.status, row.version, list(row.holds or []), frozenset(row.released_holds or ()), row.shop_id,
            row.customer_id, address, row.merge_group, list(row.tags or []),
        ))
    return out


def _audit_line(channel: str, line: Any, catalogue: Mapping[str, Any], mapped: Mapping[tuple[str, str], str]) -> AuditLine:
    # The merchant code on the line first (商家编码), then the channel's SKU id, then the line's
    # code as an alias some shops give their listings; anything else is unmapped, never guessed.
    sku = line.sku if line.sku in catalogue else None
    if sku is None:
        for key in (line.platform_sku_id, line.sku):
            if key and (channel, key) in mapped:
                sku = mapped[(channel, key)]
                break
    facts = catalogue.get(sku) if sku else None
    return AuditLine(
        line_no=line.line_no, sku=sku, title=line.title, qty=line.qty, unit_price=line.unit_price, paid=line.paid, gift=line.gift,
        category=facts.category if facts else None, cost=facts.cost if facts else None,
        weight_g=facts.weight_g if facts else 0, presale=bool(facts.presale) if facts else False,
        refunding=line.refund_status != RefundStatus.NONE,
    )


def _catalogue(conn: sa.Connection, codes: set[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    codes_list = sorted(codes)
    for start in range(0, len(codes_list), _CHUNK):
        query = sa.select(skus.c.code, skus.c.category, skus.c.cost, skus.c.weight_g, skus.c.presale).where(skus.c.code.in_(codes_list[start : start + _CHUNK]))
        found.update({row.code: row for row in conn.execute(query)})
    return found


def _mappings(conn: sa.Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    keys_list = sorted(keys)
    for start in range(0, len(keys_list), _CHUNK):
        condition = sa.tuple_(sku_mappings.c.channel, sku_mappings.c.platform_sku_id).in_(keys_list[start : start + _CHUNK])
        for channel, platform_sku_id, sku in conn.execute(sa.select(sku_mappings.c.channel, sku_mappings.c.platform_sku_id, sku_mappings.c.sku).where(condition)):
            found[(channel, platform_sku_id)] = sku
    return found


def _customers(conn: sa.Connection, ids: set[str]) -> dict[str, tuple[tuple[str, ...], int]]:
    if not ids:
        return {}
    channels: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    id_list = sorted(ids)
    for start in range(0, len(id_list), _CHUNK):
        chunk = id_list[start : start + _CHUNK]
        for cid, channel in conn.execute(sa.select(customer_channels.c.customer_id, customer_channels.c.channel).where(customer_channels.c.customer_id.in_(chunk))):
            channels.setdefault(cid, []).append(channel)
        counts.update(dict(conn.execute(sa.select(customers.c.id, customers.c.order_count).where(customers.c.id.in_(chunk))).all()))
    return {cid: (tuple(sorted(channels.get(cid, ()))), counts.get(cid, 0)) for cid in ids}


def merge_candidates(conn: sa.Connection, pairs: Iterable[tuple[str, str]], since: datetime) -> list[Any]:
    """Ready orders of these (shop, customer) pairs created since `since`: partners for 合单."""
    pairs = sorted(set(pairs))
    found: list[Any] = []
    for start in range(0, len(pairs), _CHUNK):
        condition = sa.tuple_(orders.c.shop_id, orders.c.customer_id).in_(pairs[start : start + _CHUNK])
        query = sa.select(
            orders.c.id, orders.c.shop_id, orders.c.customer_id, orders.c.address, orders.c.warehouse, orders.c.merge_group,
            orders.c.created_at, orders.c.tags,
        ).where(condition, orders.c.status == "ready", orders.c.created_at >= since)
        found.extend(conn.execute(query))
    return found


@dataclass(slots=True)
class AuditWrite:
    """What one audit decided for one order."""

    id: str
    expected_version: int
    values: dict[str, Any]  # orders columns to set
    event: Event | None


def write_audits(conn: sa.Connection, writes: Sequence[AuditWrite], now: datetime) -> int:
    """Writes decisions; the rows were locked by `lock_versions`, so the version check only fails
    if the caller broke that protocol (then the whole transaction rolls back)."""
    if not writes:
        return 0
    names = sorted({name for w in writes for name in w.values})
    groups: dict[tuple[str, ...], list[AuditWrite]] = {}
    for w in writes:
        groups.setdefault(tuple(name for name in names if name in w.values), []).append(w)
    for keys, group in groups.items():
        stmt = (
            sa.update(orders)
            .where(orders.c.id == sa.bindparam("b_id"), orders.c.version == sa.bindparam("b_expected"))
            .values({**{name: sa.bindparam(f"b_{name}") for name in keys}, "version": orders.c.version + 1, "modified_at": now})
        )
        params = [{"b_id": w.id, "b_expected": w.expected_version, **{f"b_{name}": w.values[name] for name in keys}} for w in group]
        result = conn.execute(stmt, params)
        if result.rowcount != len(params):
            raise RuntimeError(f"{len(params) - result.rowcount} audited orders changed while locked")
    events = [
        {"order_id": w.id, "at": now, "actor": w.event.actor, "kind": w.event.kind, "from_status": w.event.from_status,
         "to_status": w.event.to_status, "reason": w.event.reason, "data": w.event.data}
        for w in writes if w.event is not None
    ]
    if events:
        conn.execute(order_events.insert(), events)
    return len(writes)


def set_audit_state(conn: sa.Connection, ids: Iterable[str], state: str | None) -> None:
    ids = sorted(set(ids))
    for start in range(0, len(ids), _CHUNK):
        conn.execute(sa.update(orders).where(orders.c.id.in_(ids[start : start + _CHUNK])).values(audit_state=state))


def requeue_short(conn: sa.Connection, sku_codes: Iterable[str]) -> int:
    """Orders held out of stock that need one of these SKUs are audited again."""
    codes = sorted(set(sku_codes))
    if not codes:
        return 0
    total = 0
    for start in range(0, len(codes), _CHUNK):
        wanted = sa.select(order_lines.c.order_id).where(order_lines.c.sku.in_(codes[start : start + _CHUNK]))
        result = conn.execute(
            sa.update(orders).where(orders.c.audit_state == AuditState.SHORT, orders.c.id.in_(wanted)).values(audit_state=AuditState.PENDING)
        )
        total += result.rowcount
    return total


def requeue_all_short(conn: sa.Connection) -> int:
    return conn.execute(sa.update(orders).where(orders.c.audit_state == AuditState.SHORT).values(audit_state=AuditState.PENDING)).rowcount


def recent_audit_ids(conn: sa.Connection, days: float, limit: int, now: datetime) -> list[str]:
    """Orders paid in the last `days` (newest first), for back-tests."""
    query = (
        sa.select(orders.c.id).where(orders.c.paid_at >= now - timedelta(days=days))
        .order_by(orders.c.paid_at.desc(), orders.c.id.desc()).limit(limit)
    )
    return list(conn.execute(query).scalars())


def join_merge_group(conn: sa.Connection, order_id: str, group: str | None, now: datetime, *, actor: str, reason: str | None = None) -> bool:
    """Put a ready order into a merge group (or take it out with None). Skips an order another
    transaction holds: 合单 saves a parcel, it is never worth a lock wait."""
    query = sa.select(orders.c.id, orders.c.merge_group).where(orders.c.id == order_id, orders.c.status == "ready")
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = conn.execute(query).first()
    if row is None or row.merge_group == group:
        return False
    conn.execute(sa.update(orders).where(orders.c.id == order_id).values(merge_group=group, version=orders.c.version + 1, modified_at=now))
    text = reason or (f"合单 merged into {group}" if group else "取消合单 unmerged")
    conn.execute(order_events.insert().values(
        order_id=order_id, at=now, actor=actor, kind="merged" if group else "unmerged", reason=text, data={"merge_group": group, "previous": row.merge_group},
    ))
    return True


def audit_order_from_body(conn: sa.Connection, body: dict[str, Any]) -> AuditOrder:
    """An order given in the API's own shape (DESIGN.md §3: amounts, address, customer, lines),
    for a dry run of an order that is not stored; catalogue facts come from the SKU table."""
    try:
        amounts = body.get("amounts") or {}
        address = body.get("address") or {}
        raw_lines = body.get("lines") or []
        if not raw_lines:
            raise ValueError("lines: at least one line")
        catalogue = _catalogue(conn, {str(line["sku"]) for line in raw_lines if line.get("sku")})
        lines = []
        for index, line in enumerate(raw_lines):
            qty = int(line.get("qty", 1))
            unit_price = int(line.get("unit_price", 0))
            fake = {
                "line_no": index, "sku": line.get("sku"), "platform_sku_id": line.get("platform_sku_id"), "title": line.get("title", ""),
                "qty": qty, "unit_price": unit_price, "paid": int(line.get("paid", unit_price * qty)), "gift": bool(line.get("gift", False)),
                "refund_status": line.get("refund_status", RefundStatus.NONE),
            }
            lines.append(_audit_line(body.get("channel", "manual"), _Obj(fake), catalogue, {}))
        goods = int(amounts.get("goods", sum(line.unit_price * line.qty for line in lines)))
        discount, shipping = int(amounts.get("discount", 0)), int(amounts.get("shipping", 0))
        paid_at = datetime.fromisoformat(body["paid_at"]) if body.get("paid_at") else None
        created_at = datetime.fromisoformat(body["created_at"]) if body.get("created_at") else (paid_at or datetime.now().astimezone())
        if created_at.tzinfo is None or (paid_at is not None and paid_at.tzinfo is None):
            raise ValueError("times need a time zone, e.g. 2025-03-18T10:12:41+08:00")
        return AuditOrder(
            id=str(body.get("id") or "dry-run"), channel=str(body.get("channel", "manual")), shop_id=str(body.get("shop_id", "")),
            created_at=created_at, paid_at=paid_at, goods=goods, discount=discount, shipping=shipping,
            paid=int(amounts.get("paid", goods - discount + shipping)),
            province=address.get("province"), city=address.get("city"), district=address.get("district"), address_detail=address.get("detail"),
            buyer_level=(body.get("customer") or {}).get("level"), buyer_message=body.get("buyer_message"), seller_remark=body.get("seller_remark"),
            lines=tuple(lines), customer_channels=tuple((body.get("customer") or {}).get("channels") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise OrderHubError(ErrorCode.INVALID_REQUEST, f"not an order body: {exc}", "order") from None


class _Obj:
    """Attribute access over a mapping, so a body line reads like an order_lines row."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)
