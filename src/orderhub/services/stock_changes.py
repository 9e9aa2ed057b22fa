"""Stock changes a person makes (receive / write off, safety stock), from the API and the CLI: one
transaction with the ledger row, the re-audit of orders held 缺货 and the audit-log entry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import audit_log_repo, audit_repo, inventory_repo
from orderhub.adapters.db.tables import stock
from orderhub.domain.access import Actor, as_actor


def _levels(conn: sa.Connection, sku: str, warehouse: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(stock.c.on_hand, stock.c.reserved, stock.c.safety)
                       .where(stock.c.sku == sku, stock.c.warehouse == warehouse)).mappings().first()
    return dict(row) if row else None


def adjust_stock(engine: sa.Engine, actor: Actor | str, sku: str, warehouse: str, delta: int, reason: str) -> int:
    """Receive (+) or write off (−); returns how many held orders will be audited again."""
    who = as_actor(actor)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        before = _levels(conn, sku, warehouse)
        inventory_repo.adjust(conn, sku, warehouse, delta, actor=who.name, reason=reason, now=now)
        requeued = audit_repo.requeue_short(conn, [sku]) if delta > 0 else 0
        audit_log_repo.record(conn, who, "stock.adjust", "stock", f"{sku}@{warehouse}", before=before,
                              after={**(_levels(conn, sku, warehouse) or {}), "delta": delta, "reason": reason}, at=now)
    return requeued


def set_safety_stock(engine: sa.Engine, actor: Actor | str, sku: str, warehouse: str, safety: int) -> None:
    who = as_actor(actor)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        before = _levels(conn, sku, warehouse)
        inventory_repo.set_safety(conn, sku, warehouse, safety, actor=who.name, now=now)
        audit_log_repo.record(conn, who, "stock.safety", "stock", f"{sku}@{warehouse}", before=before, after=_levels(conn, sku, warehouse), at=now)
