"""Retention: the high-churn operational rows are deleted once their work is long done, so a year of peaks
does not grow the database without bound.

What goes, each after its own number of days (settings `retention`; 0 keeps the rows for ever):

| rows | when | what keeps their meaning |
|---|---|---|
| inbox rows `done` | processed more than `inbox_days` ago | the order holds the platform's snapshot (`orders.raw`); quarantined items keep their own copy |
| outbox rows `sent`, not notifications | sent more than `outbox_days` ago | the order's event log says what happened (shipped, frozen, written back) |
| outbox notification rows `sent` | sent more than `notifications_days` ago | they are the order page's "what did we tell the buyer": kept longer |
| jobs `done` / `failed` | finished more than `jobs_days` ago | the audit log has who started them |

Never deleted here: pending, leased or dead rows (a dead letter waits for a person), quarantine items,
orders, their events and the audit log. Rows go in chunks of `chunk` per statement, each its own short
transaction, so intake and processing never wait long behind the sweep. One process of the fleet runs
it (embedded: `orderhub serve`; scaled: the singleton duties), or `orderhub prune` by hand.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db.tables import inbox, jobs, outbox
from orderhub.config import RetentionSettings

log = logging.getLogger(__name__)

NOTIFY = "notify.%"


def _targets(settings: RetentionSettings, now: datetime) -> list[tuple[str, sa.Table, Any]]:
    """(name, table, condition) of each kind of row past its days."""
    def before(days: float) -> datetime:
        return now - timedelta(days=days)

    found: list[tuple[str, sa.Table, Any]] = []
    if settings.inbox_days > 0:
        found.append(("inbox", inbox, sa.and_(inbox.c.status == "done", inbox.c.processed_at < before(settings.inbox_days))))
    sent = outbox.c.status == "sent"
    if settings.outbox_days > 0:
        cutoff = before(settings.outbox_days)
        # next_attempt_at <= sent_at: the range keeps the sweep on ix_outbox_status_next_attempt_at
        found.append(("outbox", outbox, sa.and_(sent, outbox.c.next_attempt_at < cutoff, outbox.c.sent_at < cutoff, ~outbox.c.kind.like(NOTIFY))))
    if settings.notifications_days > 0:
        cutoff = before(settings.notifications_days)
        found.append(("notifications", outbox, sa.and_(sent, outbox.c.next_attempt_at < cutoff, outbox.c.sent_at < cutoff,
                                                       outbox.c.kind.like(NOTIFY))))
    if settings.jobs_days > 0:
        found.append(("jobs", jobs, sa.and_(jobs.c.state.in_(("done", "failed")), jobs.c.finished_at < before(settings.jobs_days))))
    return found


def prune(engine: sa.Engine, settings: RetentionSettings, now: datetime | None = None, *, dry_run: bool = False) -> dict[str, int]:
    """Delete what is past its days; returns how many rows of each kind went (or would go, with dry_run)."""
    now = now or datetime.now(UTC)
    counts: dict[str, int] = {}
    for name, table, condition in _targets(settings, now):
        if dry_run:
            with engine.connect() as conn:
                counts[name] = int(conn.execute(sa.select(sa.func.count()).select_from(table).where(condition)).scalar_one())
            continue
        total = 0
        while True:
            chunk = sa.select(table.c.id).where(condition).limit(settings.chunk).scalar_subquery()
            with engine.begin() as conn:
                deleted = conn.execute(sa.delete(table).where(table.c.id.in_(chunk))).rowcount
            total += deleted
            if deleted < settings.chunk:
                break
        counts[name] = total
    return counts


async def run_forever(engine: sa.Engine, settings: RetentionSettings) -> None:
    """Prune every `interval_s`, the first time a minute after start (not in the middle of a restart's catch-up)."""
    await asyncio.sleep(min(60.0, settings.interval_s))
    while True:
        try:
            counts = await asyncio.to_thread(prune, engine, settings)
            if any(counts.values()):
                log.info("retention deleted %s", ", ".join(f"{n} {name} rows" for name, n in counts.items() if n))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the retention sweep failed; trying again in %.0f s", settings.interval_s)
        await asyncio.sleep(settings.interval_s)
