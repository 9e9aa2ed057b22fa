"""Degradation switches: non-core work deferred at the peak so the core (intake, processing, audit,
reservations, WMS pushes, freezes) keeps its capacity.

Each switch is off by default. The lag watcher (one per fleet: a singleton duty) turns the
switches in `auto` mode on when unprocessed messages pass the threshold and off again below half
of it; ops can flip any switch by hand (`manual` mode: the watcher leaves it alone until it is
given back with mode `auto`). Every change is in the audit log. Readers cache the table for two
seconds, so a flip reaches every process within that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import audit_log_repo
from orderhub.adapters.db.tables import switches as switches_table
from orderhub.domain.access import SYSTEM, Actor
from orderhub.domain.errors import ErrorCode, OrderHubError

log = logging.getLogger(__name__)

# name -> what turning it on defers (shown in the console and `orderhub switches`)
SWITCHES: dict[str, str] = {
    "defer_notifications": "Buyer and CS notifications wait in the outbox (sent when switched off); warehouse freeze alerts still go.",
    "defer_backtests": "Rule back-tests are refused with 503 `deferred`; dry runs on one order still work.",
    "defer_analytics": "The dashboard is served from a 60 s cache instead of 5 s.",
    "defer_tracking_polls": "Polling carriers for parcels without pushes waits; pushes are still taken.",
}
AUTO, MANUAL = "auto", "manual"
WATCHER = "lag-watcher"


class Switches:
    def __init__(self, engine: sa.Engine, *, ttl_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[str, dict[str, Any]] = {}
        self._read_at = float("-inf")

    def is_on(self, name: str) -> bool:
        if self.clock() - self._read_at > self.ttl_s:
            try:
                self._cache = {row["name"]: row for row in self._read()}
                self._read_at = self.clock()
            except Exception:  # the database is away: keep the last known state
                log.debug("switches unreadable; using the last known state", exc_info=True)
        row = self._cache.get(name)
        return bool(row and row["on"])

    def require_off(self, name: str) -> None:
        if self.is_on(name):
            raise OrderHubError(ErrorCode.DEFERRED, f"{name} is on: {SWITCHES[name]} Try again once the peak has passed.", name)

    def list(self) -> list[dict[str, Any]]:
        stored = {row["name"]: row for row in self._read()}
        listed = []
        for name, text in SWITCHES.items():
            row = stored.get(name, {})
            listed.append({"name": name, "description": text, "on": bool(row.get("on", False)), "mode": row.get("mode", AUTO),
                           "reason": row.get("reason"), "set_by": row.get("set_by"), "set_at": row.get("set_at")})
        return listed

    def set(self, name: str, on: bool, *, mode: str = MANUAL, actor: Actor = SYSTEM, reason: str | None = None) -> dict[str, Any]:
        if name not in SWITCHES:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"no switch named {name!r}; known: {', '.join(SWITCHES)}", "name")
        if mode not in (AUTO, MANUAL):
            raise OrderHubError(ErrorCode.INVALID_REQUEST, "mode must be auto or manual", "mode")
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            self._write(conn, name, on, mode, actor.name, reason, now)
            audit_log_repo.record(conn, actor, "switch.set", "switch", name, after={"on": on, "mode": mode, "reason": reason}, at=now)
        self._read_at = float("-inf")
        return next(s for s in self.list() if s["name"] == name)

    def auto(self, on: bool, reason: str) -> list[str]:
        """The lag watcher: flip every switch not held by hand; returns those it changed."""
        now = datetime.now(UTC)
        changed = []
        with self.engine.begin() as conn:
            stored = {row["name"]: row for row in conn.execute(sa.select(switches_table)).mappings()}
            for name in SWITCHES:
                row = stored.get(name)
                if row is not None and (row["mode"] == MANUAL or bool(row["on"]) == on):
                    continue
                if row is None and not on:
                    continue
                self._write(conn, name, on, AUTO, WATCHER, reason, now)
                changed.append(name)
            if changed:
                audit_log_repo.record(conn, Actor(WATCHER), "switch.auto", "switch", ",".join(changed), after={"on": on, "reason": reason}, at=now)
        self._read_at = float("-inf")
        return changed

    def _read(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(switches_table)).mappings()]

    @staticmethod
    def _write(conn: sa.Connection, name: str, on: bool, mode: str, by: str, reason: str | None, now: datetime) -> None:
        values = {"on": on, "mode": mode, "reason": reason, "set_by": by, "set_at": now}
        if not conn.execute(sa.update(switches_table).where(switches_table.c.name == name).values(**values)).rowcount:
            conn.execute(switches_table.insert().values(name=name, **values))


class LagWatcher:
    def __init__(self, switches: Switches, lag: Callable[[], Awaitable[int]], threshold: int) -> None:
        self.switches = switches
        self.lag = lag
        self.threshold = threshold
        self.last_lag: int | None = None
        self.max_lag = 0

    async def check(self) -> list[str]:
        lag = await self.lag()
        self.last_lag = lag
        self.max_lag = max(self.max_lag, lag)
        if lag > self.threshold:
            changed = await asyncio.to_thread(self.switches.auto, True, f"lag {lag} > {self.threshold}")
        elif lag < self.threshold / 2:
            changed = await asyncio.to_thread(self.switches.auto, False, f"lag {lag} < {self.threshold // 2}")
        else:
            changed = []
        if changed:
            log.warning("lag %d: switches %s turned %s", lag, ", ".join(changed), "on" if lag > self.threshold else "off")
        return changed

    async def run_forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                # a client library may turn our cancellation into its own error (redis-py does): stop anyway
                if _cancelling():
                    raise asyncio.CancelledError from None
                log.exception("lag check failed")
            await asyncio.sleep(interval_s)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
