"""Leases of scaled mode: broker partitions and singleton duties, held by one live worker each.

A lease is a row with an owner and an expiry; taking one is a conditional UPDATE (free, expired or
already ours), so two workers can never both believe they hold it past its expiry. Workers also
heartbeat into `workers`, so each knows the fleet's size and takes its fair share of partitions.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db.tables import worker_leases, workers


def heartbeat(engine: sa.Engine, worker_id: str, host: str, pid: int, started_at: datetime, now: datetime, stats: dict[str, Any]) -> None:
    with engine.begin() as conn:
        updated = conn.execute(sa.update(workers).where(workers.c.id == worker_id).values(seen_at=now, stats=stats)).rowcount
        if not updated:
            conn.execute(workers.insert().values(id=worker_id, host=host, pid=pid, started_at=started_at, seen_at=now, stats=stats))


def live_workers(engine: sa.Engine, now: datetime, ttl: timedelta) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(workers).where(workers.c.seen_at >= now - ttl).order_by(workers.c.id)).mappings()
        return [dict(r) for r in rows]


def forget_worker(engine: sa.Engine, worker_id: str) -> None:
    """A worker stopping cleanly: its leases are free at once, not after their expiry."""
    with engine.begin() as conn:
        conn.execute(sa.update(worker_leases).where(worker_leases.c.owner == worker_id).values(owner=None, lease_until=None))
        conn.execute(sa.delete(workers).where(workers.c.id == worker_id))


def ensure(engine: sa.Engine, names: list[str]) -> None:
    with engine.begin() as conn:
        present = set(conn.execute(sa.select(worker_leases.c.name).where(worker_leases.c.name.in_(names))).scalars())
        missing = [{"name": n, "owner": None, "lease_until": None} for n in names if n not in present]
        if missing:
            try:
                with conn.begin_nested():
                    conn.execute(worker_leases.insert(), missing)
            except sa.exc.IntegrityError:  # another worker created them first
                pass


def acquire(engine: sa.Engine, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
    """Take (or keep) the lease if it is free, expired or ours."""
    with engine.begin() as conn:
        taken = conn.execute(
            sa.update(worker_leases)
            .where(worker_leases.c.name == name)
            .where(sa.or_(worker_leases.c.owner.is_(None), worker_leases.c.owner == owner, worker_leases.c.lease_until < now))
            .values(owner=owner, lease_until=now + ttl)
        ).rowcount
    return bool(taken)


def renew(engine: sa.Engine, names: list[str], owner: str, now: datetime, ttl: timedelta) -> set[str]:
    """Extend the leases still ours; returns those (a lease lost to expiry is not renewed)."""
    if not names:
        return set()
    with engine.begin() as conn:
        conn.execute(
            sa.update(worker_leases)
            .where(worker_leases.c.name.in_(names), worker_leases.c.owner == owner, worker_leases.c.lease_until >= now)
            .values(lease_until=now + ttl)
        )
        return set(conn.execute(
            sa.select(worker_leases.c.name)
            .where(worker_leases.c.name.in_(names), worker_leases.c.owner == owner, worker_leases.c.lease_until > now)
        ).scalars())


def release(engine: sa.Engine, names: list[str], owner: str) -> None:
    if names:
        with engine.begin() as conn:
            conn.execute(
                sa.update(worker_leases).where(worker_leases.c.name.in_(names), worker_leases.c.owner == owner).values(owner=None, lease_until=None)
            )


def holders(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(worker_leases).order_by(worker_leases.c.name)).mappings()]
