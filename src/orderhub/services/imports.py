"""File import (POS, distributors, exports): a file becomes inbox rows, then normal processing,
followed as an import job (services/jobs.py) until the pipeline has done every row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from orderhub.adapters.channels.file_import import ColumnMapping, group_orders, mask_file_order, read_table
from orderhub.adapters.db import audit_log_repo, jobs_repo
from orderhub.adapters.db.inbox import append_rows
from orderhub.adapters.db.tables import import_mappings, imports
from orderhub.domain.access import SYSTEM, Actor
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.services.buyer_pii import BuyerPii
from orderhub.services.jobs import IMPORT

_ORDERS_PER_ROW = 200


def save_mapping(engine: sa.Engine, name: str, data: dict[str, Any], actor: Actor = SYSTEM) -> ColumnMapping:
    mapping = ColumnMapping.from_dict({**data, "name": name})  # validates
    now = datetime.now(UTC)
    with engine.begin() as conn:
        before = conn.execute(sa.select(import_mappings.c.mapping).where(import_mappings.c.name == name)).scalar_one_or_none()
        audit_log_repo.record(conn, actor, "import_mapping.save", "import_mapping", name, before=before, after=mapping.to_dict(), at=now)
        updated = conn.execute(
            sa.update(import_mappings).where(import_mappings.c.name == name).values(mapping=mapping.to_dict(), updated_at=now)
        ).rowcount
        if not updated:
            conn.execute(import_mappings.insert().values(name=name, mapping=mapping.to_dict(), updated_at=now))
    return mapping


def load_mapping(conn: sa.Connection, name: str) -> ColumnMapping:
    data = conn.execute(sa.select(import_mappings.c.mapping).where(import_mappings.c.name == name)).scalar_one_or_none()
    if data is None:
        raise OrderHubError(ErrorCode.UNKNOWN_MAPPING, f"no saved column mapping named {name!r}", "mapping")
    return ColumnMapping.from_dict(data)


def mapping_names(engine: sa.Engine) -> list[str]:
    with engine.connect().execution_options(readonly=True) as conn:
        return list(conn.execute(sa.select(import_mappings.c.name).order_by(import_mappings.c.name)).scalars())


def import_file(
    engine: sa.Engine, data: bytes, filename: str, mapping_name: str, channel: str, shop_id: str, pii: BuyerPii | None = None,
    actor: Actor = SYSTEM,
) -> dict[str, Any]:
    """Validate the whole file first (a bad cell rejects the file, naming every bad row), then enqueue,
    with the import job that follows the rows through the pipeline (`job_id`).

    Buyer names, phones and addresses in files are plaintext: they are sealed and hashed (so the
    buyer is recognised across channels and found by phone last 4), then masked, before anything
    is written — the inbox and quarantine never hold them.
    """
    with engine.connect().execution_options(readonly=True) as conn:
        mapping = load_mapping(conn, mapping_name)
    rows = read_table(data, filename, mapping)
    orders = []
    for order in group_orders(rows, mapping, channel, shop_id):
        if pii is not None:
            order["pii"] = pii.seal_plaintext(_plain_buyer(order))
        orders.append(mask_file_order(order))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        import_id = conn.execute(
            imports.insert().values(filename=filename, channel=channel, mapping_name=mapping_name, rows=len(rows), orders=len(orders), created_at=now)
            .returning(imports.c.id)
        ).scalar_one()
        chunks = [orders[i : i + _ORDERS_PER_ROW] for i in range(0, len(orders), _ORDERS_PER_ROW)]
        inbox_ids = append_rows(conn, [
            {"channel": channel, "shop_id": shop_id, "kind": "file", "body": orjson.dumps({"orders": chunk}),
             "meta": {"import_id": import_id, "filename": filename, "orders": len(chunk)}}
            for chunk in chunks
        ])
        report = {"import_id": import_id, "filename": filename, "rows": len(rows), "orders": len(orders), "inbox_ids": inbox_ids}
        job_id = jobs_repo.insert(conn, kind=IMPORT, created_by=actor.name, params=report, total=len(inbox_ids), now=now)
    return {**report, "job_id": job_id}


def _plain_buyer(order: dict[str, Any]) -> dict[str, str | None]:
    """The first non-empty receiver name/phone/address among the order's rows."""
    def first(column: str) -> str | None:
        return next((row[column] for row in order.get("rows", []) if row.get(column)), None)

    return {"name": first("receiver_name"), "phone": first("receiver_phone"), "address_detail": first("address")}
