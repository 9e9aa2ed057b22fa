"""Read side: orders, events, customers and quarantine as the API shows them."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa

from orderhub.adapters.db.tables import (
    HELD_SQL, customer_channels, customers, fulfillments, order_events, order_lines, orders, parcels, quarantine, reservations,
)
from orderhub.domain.errors import ErrorCode, OrderHubError

SHANGHAI = ZoneInfo("Asia/Shanghai")
HELD = sa.text(HELD_SQL)  # orders with a hold, as the partial index ix_orders_held has it


def plain(row: Any) -> dict[str, Any]:
    """A result row as a dict with plain str keys (SQLAlchemy's keys are a str subclass orjson refuses)."""
    return {str(key): value for key, value in row.items()}


def local(value: datetime | None) -> str | None:
    """Times are stored UTC and shown in Asia/Shanghai."""
    return value.astimezone(SHANGHAI).isoformat() if value else None


@dataclass(frozen=True, slots=True)
class OrderFilters:
    channel: str | None = None
    shop_id: str | None = None
    status: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    paid_from: datetime | None = None
    paid_to: datetime | None = None
    hold: str | None = None
    q: str | None = None
    phone_last4_hash: str | None = None  # keyed hash of the buyer phone's last 4 digits
    held: bool = False  # only orders with at least one hold (the exception queue)
    waybill_no: str | None = None


def encode_cursor(created_at: datetime, order_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([created_at.isoformat(), order_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, order_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        parsed = datetime.fromisoformat(created)
        if parsed.tzinfo is None:
            raise ValueError("naive time in cursor")
        return parsed, str(order_id)
    except Exception:
        raise OrderHubError(ErrorCode.INVALID_CURSOR, "cursor is not one this API issued", "cursor") from None


def list_orders(conn: sa.Connection, filters: OrderFilters, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    query = sa.select(orders).order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit + 1)
    f = filters
    for column, value in ((orders.c.channel, f.channel), (orders.c.shop_id, f.shop_id), (orders.c.status, f.status)):
        if value:
            query = query.where(column == value)
    if f.created_from:
        query = query.where(orders.c.created_at >= f.created_from)
    if f.created_to:
        query = query.where(orders.c.created_at < f.created_to)
    if f.paid_from:
        query = query.where(orders.c.paid_at >= f.paid_from)
    if f.paid_to:
        query = query.where(orders.c.paid_at < f.paid_to)
    if f.hold:
        # holds is a small JSON array; a text match on the code is portable and exact enough
        # because codes are quoted identifiers ("code": "risk_review").
        query = query.where(sa.cast(orders.c.holds, sa.Text).like(f'%"{f.hold}"%'))
    if f.phone_last4_hash:
        query = query.where(orders.c.phone_last4_hash == f.phone_last4_hash)
    if f.held:
        query = query.where(HELD)
    if f.q:
        # one search box: the platform's order number, OrderHub's id, or a waybill number
        term = f.q.strip()
        # a union of indexed lookups, not an OR across columns (which PostgreSQL answers with a scan)
        query = query.where(orders.c.id.in_(sa.union(
            sa.select(orders.c.id).where(orders.c.original_id == term), sa.select(orders.c.id).where(orders.c.id == term.lower()),
            *_by_waybill(term).selects)))
    if f.waybill_no:
        query = query.where(orders.c.id.in_(_by_waybill(f.waybill_no.strip())))
    if cursor:
        created, last_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(orders.c.created_at < created, sa.and_(orders.c.created_at == created, orders.c.id < last_id))
        )
    rows = conn.execute(query).mappings().all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return _with_details(conn, rows), next_cursor


def _by_waybill(waybill_no: str) -> sa.CompoundSelect[Any]:
    """Orders with a parcel of this number: tracked parcels, and packages the WMS shipped."""
    return sa.union(sa.select(parcels.c.order_id).where(parcels.c.waybill_no == waybill_no),
                    sa.select(fulfillments.c.order_id).where(fulfillments.c.waybill_no == waybill_no))


def get_order(conn: sa.Connection, order_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().first()
    if row is None:
        return None
    return _with_details(conn, [row])[0]


def _with_details(conn: sa.Connection, rows: list[Any]) -> list[dict[str, Any]]:
    ids = [row["id"] for row in rows]
    lines: dict[str, list[dict[str, Any]]] = {}
    if ids:
        for line in conn.execute(
            sa.select(order_lines).where(order_lines.c.order_id.in_(ids)).order_by(order_lines.c.order_id, order_lines.c.line_no)
        ).mappings():
            lines.setdefault(line["order_id"], []).append({
                "sku": line["sku"], "platform_sku_id": line["platform_sku_id"], "platform_line_id": line["platform_line_id"],
                "title": line["title"], "qty": line["qty"], "unit_price": line["unit_price"], "paid": line["paid"],
                "gift": line["gift"], "refund_status": line["refund_status"],
            })
    customer_ids = {row["customer_id"] for row in rows if row["customer_id"]}
    known: dict[str, dict[str, Any]] = {}
    if customer_ids:
        known = {c["id"]: dict(c) for c in conn.execute(sa.select(customers).where(customers.c.id.in_(customer_ids))).mappings()}
        for cid, chs in _channels_of(conn, customer_ids).items():
            known[cid]["channels"] = chs
    packages = _packages_of(conn, ids) if ids else {}
    return [{**_order_json(row, lines.get(row["id"], []), known.get(row["customer_id"])), "packages": packages.get(row["id"], [])} for row in rows]


def _packages_of(conn: sa.Connection, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Order id -> its packages: what is reserved (or shipped) from which warehouse, line by line."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    query = (
        sa.select(reservations).where(reservations.c.order_id.in_(ids), reservations.c.status != "released")
        .order_by(reservations.c.order_id, reservations.c.package_no, reservations.c.line_no)
    )
    for r in conn.execute(query).mappings():
        package = out.setdefault(r["order_id"], {}).setdefault(
            r["package_no"], {"package_no": r["package_no"], "warehouse": r["warehouse"], "lines": []})
        package["lines"].append({"line_no": r["line_no"], "sku": r["sku"], "qty": r["qty"], "gift": r["gift"], "status": r["status"]})
    return {oid: [p[k] for k in sorted(p)] for oid, p in out.items()}


def hold_counts(conn: sa.Connection) -> dict[str, int]:
    """Orders per hold code, over every order that has a hold."""
    counts: dict[str, int] = {}
    for (holds,) in conn.execute(sa.select(orders.c.holds).where(HELD)):
        for code in {h["code"] for h in holds or []}:
            counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _channels_of(conn: sa.Connection, customer_ids: set[str] | list[str]) -> dict[str, list[str]]:
    """Customer id -> the channels they bought on, in the order they first bought there."""
    out: dict[str, list[str]] = {}
    query = (
        sa.select(customer_channels.c.customer_id, customer_channels.c.channel)
        .where(customer_channels.c.customer_id.in_(list(customer_ids)))
        .order_by(customer_channels.c.customer_id, customer_channels.c.first_order_at, customer_channels.c.channel)
    )
    for cid, channel in conn.execute(query):
        out.setdefault(cid, []).append(channel)
    return out


def _order_json(row: Any, lines: list[dict[str, Any]], customer: Any) -> dict[str, Any]:
    buyer = row["buyer"] or {}
    return {
        "id": row["id"],
        "channel": row["channel"],
        "shop_id": row["shop_id"],
        "original_id": row["original_id"],
        "status": row["status"],
        "platform_status": row["platform_status"],
        "created_at": local(row["created_at"]),
        "paid_at": local(row["paid_at"]),
        "updated_at": local(row["updated_at"]),
        "currency": row["currency"],
        "amounts": {
            "goods": row["goods"], "discount": row["discount"], "discount_shop": row["discount_shop"],
            "discount_platform": row["discount_platform"], "shipping": row["shipping"], "paid": row["paid"],
        },
        "customer": {
            "id": row["customer_id"],
            "name": buyer.get("name"),
            "phone": buyer.get("phone"),
            "level": buyer.get("level") or (customer["level"] if customer else None),
            "channels": (customer.get("channels") if customer else None) or [row["channel"]],
        },
        "address": row["address"],
        "buyer_message": row["buyer_message"],
        "seller_remark": row["seller_remark"],
        "lines": lines,
        "warehouse": row["warehouse"],
        "priority": row["priority"],
        "holds": row["holds"],
        "tags": row["tags"],
        "shipment": row["shipment"],
        "rule_version": row["rule_version"],
        "carrier": row["carrier"],
        "gifts": row["gifts"] or [],
        "merge_group": row["merge_group"],
        "audit": {"state": row["audit_state"], "at": local(row["audited_at"]), "decisions": row["decisions"], "released_holds": row["released_holds"] or []},
        "version": row["version"],
    }


def order_events_of(conn: sa.Connection, order_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(order_events).where(order_events.c.order_id == order_id).order_by(order_events.c.id)
    ).mappings()
    return [
        {
            "id": r["id"], "at": local(r["at"]), "actor": r["actor"], "kind": r["kind"],
            "from": r["from_status"], "to": r["to_status"], "reason": r["reason"], "data": r["data"],
        }
        for r in rows
    ]


def get_customer(conn: sa.Connection, customer_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(customers).where(customers.c.id == customer_id)).mappings().first()
    if row is None:
        return None
    return {
        "id": row["id"], "name": row["name"], "phone": row["phone"], "level": row["level"],
        "channels": _channels_of(conn, [customer_id]).get(customer_id, []), "order_count": row["order_count"],
        "first_seen_at": local(row["first_seen_at"]), "last_order_at": local(row["last_order_at"]),
    }


def list_quarantine(conn: sa.Connection, status: str | None, channel: str | None, limit: int, after_id: int | None) -> list[dict[str, Any]]:
    query = sa.select(
        quarantine.c.id, quarantine.c.inbox_id, quarantine.c.channel, quarantine.c.shop_id, quarantine.c.original_id,
        quarantine.c.item_kind, quarantine.c.code, quarantine.c.message, quarantine.c.field, quarantine.c.created_at,
        quarantine.c.status, quarantine.c.replayed_at, quarantine.c.replay_inbox_id, sa.func.length(quarantine.c.payload).label("size"),
    ).order_by(quarantine.c.id.desc()).limit(limit)
    if status:
        query = query.where(quarantine.c.status == status)
    if channel:
        query = query.where(quarantine.c.channel == channel)
    if after_id:
        query = query.where(quarantine.c.id < after_id)
    return [
        {**plain(r), "created_at": local(r["created_at"]), "replayed_at": local(r["replayed_at"])}
        for r in conn.execute(query).mappings()
    ]
