"""Quarantine: authenticated input that could not be processed, kept with its reason and replayable."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import audit_log_repo
from orderhub.adapters.db.inbox import InboxRow
from orderhub.adapters.db.queries import plain
from orderhub.adapters.db.tables import inbox, quarantine
from orderhub.domain.access import SYSTEM, Actor
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.services.processing import Processor


async def replay(processor: Processor, quarantine_id: int, actor: Actor = SYSTEM) -> dict[str, Any]:
    """Run one quarantined item through the pipeline again (after a fix) and report the result."""
    row = await asyncio.to_thread(_requeue, processor.engine, quarantine_id, actor)
    result = await processor.process([row])
    new = await asyncio.to_thread(_quarantined_from, processor.engine, row.id)
    return {
        "quarantine_id": quarantine_id,
        "replay_inbox_id": row.id,
        "result": "quarantined" if new else ("retrying" if result.retried else "processed"),
        "outcomes": dict(result.outcomes),
        "new_quarantine": new,
    }


def _requeue(engine: sa.Engine, quarantine_id: int, actor: Actor) -> InboxRow:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        q = conn.execute(sa.select(quarantine).where(quarantine.c.id == quarantine_id)).mappings().first()
        if q is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"quarantine item {quarantine_id} does not exist", "id")
        if q["status"] == "replayed":
            raise OrderHubError(ErrorCode.CONFLICT, f"quarantine item {quarantine_id} was already replayed", "id")
        meta = {"item_kind": q["item_kind"], "source": q["channel"], "quarantine_id": q["id"]}
        # Claimed by this call right away, so a background worker does not take it too.
        new_id = conn.execute(
            inbox.insert().values(
                channel=q["channel"], shop_id=q["shop_id"], kind="replay", received_at=now, body=q["payload"],
                meta=meta, status="processing", attempts=0,
            ).returning(inbox.c.id)
        ).scalar_one()
        conn.execute(
            sa.update(quarantine).where(quarantine.c.id == quarantine_id).values(status="replayed", replayed_at=now, replay_inbox_id=new_id)
        )
        audit_log_repo.record(conn, actor, "quarantine.replay", "quarantine", quarantine_id, before={"status": q["status"]},
                              after={"status": "replayed", "replay_inbox_id": new_id}, at=now)
    return InboxRow(new_id, q["channel"], q["shop_id"], "replay", q["payload"], meta, 0, now)


def _quarantined_from(engine: sa.Engine, inbox_id: int) -> list[dict[str, Any]]:
    with engine.connect().execution_options(readonly=True) as conn:
        rows = conn.execute(
            sa.select(quarantine.c.id, quarantine.c.code, quarantine.c.message, quarantine.c.field).where(quarantine.c.inbox_id == inbox_id)
        ).mappings()
        return [plain(r) for r in rows]
