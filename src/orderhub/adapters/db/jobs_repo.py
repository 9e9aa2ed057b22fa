"""The jobs table (long operations): a job's row, its throttled progress, heartbeat and end; and
how far an import's inbox rows have come through the pipeline.

Every change to a running job is a conditional UPDATE `WHERE state = 'running'`: a job given up
as abandoned is never brought back by a late write from a process that was only slow.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db.queries import plain
from orderhub.adapters.db.tables import inbox, jobs, quarantine

RUNNING, DONE, FAILED = "running", "done", "failed"
_IN_CHUNK = 500  # ids per IN (…): far below every backend's bind-parameter limit


def insert(conn: sa.Connection, *, kind: str, created_by: str, params: dict[str, Any] | None, now: datetime,
           total: int | None = None) -> int:
    return conn.execute(
        jobs.insert().values(kind=kind, state=RUNNING, done=0, total=total, params=params, created_by=created_by[:64],
                             created_at=now, updated_at=now).returning(jobs.c.id)
    ).scalar_one()


def get(conn: sa.Connection, job_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
    return plain(row) if row is not None else None


def _running(job_id: int) -> sa.Update:
    return sa.update(jobs).where(jobs.c.id == job_id, jobs.c.state == RUNNING)


def set_progress(conn: sa.Connection, job_id: int, done: int, total: int | None, now: datetime) -> bool:
    """False when the job is no longer running (given up meanwhile)."""
    return conn.execute(_running(job_id).values(done=done, total=total, updated_at=now)).rowcount == 1


def beat(conn: sa.Connection, job_ids: Iterable[int], now: datetime) -> None:
    """The heartbeat of this process's running jobs: they are alive, whatever their progress."""
    ids = sorted(job_ids)
    for start in range(0, len(ids), _IN_CHUNK):
        conn.execute(sa.update(jobs).where(jobs.c.id.in_(ids[start : start + _IN_CHUNK]), jobs.c.state == RUNNING)
                     .values(updated_at=now))


def finish(conn: sa.Connection, job_id: int, *, state: str, now: datetime, done: int, total: int | None,
           result: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> bool:
    """End a running job (done with its report, or failed with its error); False if it had ended already."""
    values = {"state": state, "done": done, "total": total, "result": result, "error": error, "updated_at": now, "finished_at": now}
    return conn.execute(_running(job_id).values(**values)).rowcount == 1


def give_up(conn: sa.Connection, job_id: int, *, silent_since: datetime, error: dict[str, Any], now: datetime) -> bool:
    """Fail a running job whose process has not been heard of since `silent_since` (it is gone)."""
    statement = _running(job_id).where(jobs.c.updated_at < silent_since)
    return conn.execute(statement.values(state=FAILED, error=error, finished_at=now)).rowcount == 1


def import_progress(conn: sa.Connection, inbox_ids: list[int]) -> dict[str, int]:
    """How far an import's inbox rows are: rows done of all, and their orders processed, quarantined
    and stored (processed − quarantined: in the store as the file says, new, updated or identical).

    A file row holds up to 200 orders (`meta.orders`); a quarantined order is one quarantine row, a
    row that could not be read at all (item_kind body) quarantines all of its orders. A row that is
    gone counts as done: nothing is left to wait for."""
    orders_of: dict[int, int] = {}
    done_ids: set[int] = set()
    quarantined_of: dict[int, int] = {}
    for start in range(0, len(inbox_ids), _IN_CHUNK):
        chunk = inbox_ids[start : start + _IN_CHUNK]
        for row_id, status, meta in conn.execute(sa.select(inbox.c.id, inbox.c.status, inbox.c.meta).where(inbox.c.id.in_(chunk))):
            orders_of[row_id] = int((meta or {}).get("orders", 0))
            if status == DONE:
                done_ids.add(row_id)
        done_ids.update(set(chunk) - set(orders_of))
        counted = (sa.select(quarantine.c.inbox_id, quarantine.c.item_kind, sa.func.count())
                   .where(quarantine.c.inbox_id.in_(chunk)).group_by(quarantine.c.inbox_id, quarantine.c.item_kind))
        for row_id, item_kind, n in conn.execute(counted):
            whole = item_kind == "body"
            quarantined_of[row_id] = quarantined_of.get(row_id, 0) + (orders_of.get(row_id, 0) if whole else int(n))
    processed = sum(orders_of.get(i, 0) for i in done_ids)
    quarantined = sum(min(quarantined_of.get(i, 0), orders_of.get(i, 0)) for i in done_ids)
    return {"rows": len(inbox_ids), "rows_done": len(done_ids), "processed": processed, "stored": processed - quarantined,
            "quarantined": quarantined}
