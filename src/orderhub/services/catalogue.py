"""The merchant's catalogue (warehouses, SKUs, channel SKU mappings, opening stock): seeded for the demo, upserted by code."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import inventory_repo
from orderhub.adapters.db.tables import sku_mappings, skus, stock, warehouses


def upsert_catalogue(engine: sa.Engine, warehouse_rows: Iterable[dict[str, Any]], sku_rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
    warehouse_rows, sku_rows = list(warehouse_rows), list(sku_rows)
    with engine.begin() as conn:
        for table, key, rows in ((warehouses, "code", warehouse_rows), (skus, "code", sku_rows)):
            existing = set(conn.execute(sa.select(table.c[key])).scalars())
            new = [row for row in rows if row[key] not in existing]
            if new:
                conn.execute(table.insert(), new)
    return len(warehouse_rows), len(sku_rows)


def upsert_sku_mappings(engine: sa.Engine, rows: Iterable[dict[str, Any]]) -> int:
    """Channel SKU ids -> merchant SKUs; existing mappings are kept as they are."""
    rows = list(rows)
    with engine.begin() as conn:
        existing = {tuple(row) for row in conn.execute(sa.select(sku_mappings.c.channel, sku_mappings.c.platform_sku_id))}
        new = [row for row in rows if (row["channel"], row["platform_sku_id"]) not in existing]
        if new:
            conn.execute(sku_mappings.insert(), new)
    return len(new)


def seed_stock(engine: sa.Engine, counts: Iterable[tuple[str, str, int]], *, actor: str, reason: str) -> bool:
    """Opening stock for an installation that has none yet (the demo); False if stock exists."""
    with engine.begin() as conn:
        if conn.execute(sa.select(stock.c.sku).limit(1)).first() is not None:
            return False
        inventory_repo.sync_on_hand(conn, counts, actor=actor, reason=reason, now=datetime.now(UTC))
        return True
