"""The merchant's catalogue (warehouses, SKUs): seeded for the demo, upserted by code."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db.tables import skus, warehouses


def upsert_catalogue(engine: sa.Engine, warehouse_rows: Iterable[dict[str, Any]], sku_rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
    warehouse_rows, sku_rows = list(warehouse_rows), list(sku_rows)
    with engine.begin() as conn:
        for table, key, rows in ((warehouses, "code", warehouse_rows), (skus, "code", sku_rows)):
            existing = set(conn.execute(sa.select(table.c[key])).scalars())
            new = [row for row in rows if row[key] not in existing]
            if new:
                conn.execute(table.insert(), new)
    return len(warehouse_rows), len(sku_rows)
