"""The inbox: raw platform traffic written with group commit, then claimed by workers."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import wakeups
from orderhub.adapters.db.tables import inbox

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    channel: str
    shop_id: str | None
    kind: str
    body: bytes
    meta: dict[str, Any] | None
    attempts: int
    received_at: datetime
    # the lease this claim set: the batch's write is conditional on it, so a row another worker took over
    # after the lease expired is written by one of the two only (adapters/db/orders_repo.py `LeaseLost`)
    lease_until: datetime | None = None


class InboxWriter:
    """Durably appends inbox rows; many concurrent callers share one commit.

    One thread owns the write connection. Callers enqueue a row and await a future that
    completes once the transaction holding that row has committed, so the platform is only
    acknowledged for what is on disk. Under load a single commit carries hundreds of rows.
    """

    def __init__(self, engine: sa.Engine, max_batch: int = 2000, on_commit: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._on_commit = on_commit
        self._thread: threading.Thread | None = None
        self.commits = 0
        self.rows_written = 0
        # received_at of every row handed in and not yet committed, oldest first (rows commit in
        # the order they came: one writer thread, FIFO); deque appends and pops are thread-safe
        self._unwritten: deque[datetime] = deque()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    async def append(self, channel: str, shop_id: str | None, kind: str, body: bytes, meta: dict[str, Any] | None = None) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        row = {
            "channel": channel,
            "shop_id": shop_id,
            "kind": kind,
            "received_at": datetime.now(UTC),
            "body": body,
            "meta": meta,
            "status": "pending",
            "attempts": 0,
        }
        self._unwritten.append(row["received_at"])
        self._queue.put((row, future, loop))
        await future

    def oldest_unwritten(self) -> datetime | None:
        """When the oldest message this process accepted but has not committed yet arrived (the
        label gate must not miss a cancel that is on its way to disk)."""
        try:
            return self._unwritten[0]
        except IndexError:
            return None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[dict[str, Any], asyncio.Future[None], asyncio.AbstractEventLoop]]) -> None:
        error: BaseException | None = None
        try:
            with self._engine.begin() as conn:
                conn.execute(inbox.insert(), [row for row, _, _ in batch])
                wakeups.notify(conn, wakeups.INBOX)  # the workers of other processes (PostgreSQL)
            self.commits += 1
            self.rows_written += len(batch)
        except Exception as exc:  # the database is unreachable or full: callers answer 503
            log.error("inbox write of %d rows failed: %s", len(batch), exc)
            error = exc
        for _ in batch:  # committed, or refused (the platforms retry): no longer on the way
            self._unwritten.popleft()
        for _, future, loop in batch:
            loop.call_soon_threadsafe(_resolve, future, error)
        if error is None and self._on_commit is not None:
            self._on_commit()


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def append_rows(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert inbox rows inside the caller's transaction (pull pages, file imports); returns their ids."""
    now = datetime.now(UTC)
    for row in rows:
        row.setdefault("received_at", now)
        row.setdefault("status", "pending")
        row.setdefault("attempts", 0)
        row.setdefault("meta", None)
    if not rows:
        return []
    return list(conn.execute(inbox.insert().returning(inbox.c.id, sort_by_parameter_order=True), rows).scalars())


def claim(engine: sa.Engine, limit: int, lease: timedelta = timedelta(minutes=2), ids: list[int] | None = None) -> list[InboxRow]:
    """Take up to `limit` due rows for this worker; an expired lease (a crashed worker) is taken over."""
    now = datetime.now(UTC)
    due = sa.or_(
        sa.and_(inbox.c.status == "pending", sa.or_(inbox.c.next_attempt_at.is_(None), inbox.c.next_attempt_at <= now)),
        sa.and_(inbox.c.status == "processing", inbox.c.lease_until < now),
    )
    candidates = sa.select(inbox.c.id).where(due).order_by(inbox.c.id).limit(limit)
    if ids is not None:
        candidates = candidates.where(inbox.c.id.in_(ids))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        claimed = conn.execute(
            sa.update(inbox)
            .where(inbox.c.id.in_(candidates.scalar_subquery()))
            .values(status="processing", lease_until=now + lease)
            .returning(
                inbox.c.id, inbox.c.channel, inbox.c.shop_id, inbox.c.kind, inbox.c.body,
                inbox.c.meta, inbox.c.attempts, inbox.c.received_at, inbox.c.lease_until,
            )
        ).all()
    rows = [InboxRow(*row) for row in claimed]
    rows.sort(key=lambda row: row.id)
    return rows


def backlog(engine: sa.Engine) -> int:
    with engine.connect().execution_options(readonly=True) as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(inbox).where(inbox.c.status.in_(("pending", "processing")))
        ).scalar_one()


def insert_keyed(engine: sa.Engine, rows: list[dict[str, Any]], lease: timedelta = timedelta(minutes=2)) -> list[InboxRow]:
    """Scaled mode: a broker batch becomes inbox rows, already leased to the caller, which processes
    them next. A row whose broker_key is there already (a redelivery after a crash between commit
    and ack) is skipped: it is done, or its lease expires and any worker's sweep takes it."""
    if not rows:
        return []
    now = datetime.now(UTC)
    values = [{**row, "status": "processing", "attempts": 0, "lease_until": now + lease} for row in rows]
    with engine.begin() as conn:
        insert = _insert_for(conn)(inbox).on_conflict_do_nothing(index_elements=[inbox.c.broker_key])
        inserted = conn.execute(insert.returning(inbox.c.id, inbox.c.broker_key), values).all()
    ids = {key: row_id for row_id, key in inserted}
    # one row per key: the same message twice in one batch (a redelivery beside the original) is one row
    return [
        InboxRow(ids.pop(row["broker_key"]), row["channel"], row["shop_id"], row["kind"], row["body"], row.get("meta"), 0, row["received_at"],
                 now + lease)
        for row in rows if row["broker_key"] in ids
    ]


def _insert_for(conn: sa.Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def still_leased(engine: sa.Engine, rows: list[InboxRow]) -> list[InboxRow]:
    """Those of `rows` whose lease is still the one this worker's claim set (no other worker took them over)."""
    if not rows:
        return []
    with engine.connect() as conn:
        current = dict(conn.execute(sa.select(inbox.c.id, inbox.c.lease_until).where(inbox.c.id.in_([r.id for r in rows]),
                                                                                   inbox.c.status == "processing")).all())
    return [r for r in rows if r.id in current and current[r.id] == r.lease_until]
