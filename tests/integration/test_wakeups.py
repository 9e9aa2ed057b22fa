"""Wake-ups across processes on PostgreSQL (adapters/db/wakeups.py): a commit that wrote inbox or outbox
rows wakes the workers and relays of the other processes at once, a rollback wakes nobody, and a
listener that lost its connection comes back by itself and wakes everything once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from orderhub.adapters.db import migrate, outbox_repo, wakeups
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.inbox import InboxWriter
from orderhub.bootstrap import Runtime
from orderhub.config import FulfillmentSettings, Settings, WmsEndpointSettings


class Heard:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self._changed = threading.Condition()

    def __call__(self, channel: str, payload: str) -> None:
        with self._changed:
            self.items.append((channel, payload))
            self._changed.notify_all()

    def wait_for(self, item: tuple[str, str], timeout: float = 10.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: item in self.items, timeout), f"{item} not heard; heard {self.items}"


@pytest.fixture
def engines(postgres_url: str) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    """Two engines on one database: as two processes would hold them."""
    migrate.upgrade(postgres_url)
    one, other = create_engine(postgres_url), create_engine(postgres_url)
    yield one, other
    one.dispose()
    other.dispose()


def _enqueue(conn: sa.Connection, kind: str, key: str) -> None:
    outbox_repo.enqueue(conn, kind=kind, endpoint="main", payload={}, idempotency_key=key, now=datetime.now(UTC))


def test_a_commit_wakes_the_other_process_once_per_kind_and_a_rollback_wakes_nobody(engines: tuple[sa.Engine, sa.Engine]) -> None:
    writer, listening = engines
    heard = Heard()
    listener = wakeups.Listener(listening, (wakeups.OUTBOX, wakeups.INBOX), heard)
    listener.start()
    try:
        assert listener.connected.wait(10)
        with writer.connect() as conn:
            with conn.begin() as tx:
                _enqueue(conn, "wms.order", "k-rolled-back")
                tx.rollback()
            with conn.begin():
                _enqueue(conn, "wms.freeze", "k1")
                _enqueue(conn, "wms.freeze", "k2")
                _enqueue(conn, "wms.order", "k3")
                _enqueue(conn, "wms.order", "k3")  # the same key again: no row, no wake-up
        heard.wait_for((wakeups.OUTBOX, "wms.order"))
        time.sleep(0.3)  # anything else on its way arrives meanwhile
        print(f"heard {heard.items}")
        assert heard.items == [(wakeups.OUTBOX, "wms.freeze"), (wakeups.OUTBOX, "wms.order")]
        # the listener's own engine writing: this process woke itself already
        with listening.begin() as conn:
            _enqueue(conn, "wms.expedite", "k4")
        with writer.begin() as conn:
            _enqueue(conn, "wms.cancel", "k5")
        heard.wait_for((wakeups.OUTBOX, "wms.cancel"))
        assert (wakeups.OUTBOX, "wms.expedite") not in heard.items
    finally:
        listener.stop()


def test_a_listener_whose_connection_is_killed_reconnects_and_wakes_everything(engines: tuple[sa.Engine, sa.Engine], postgres_url: str) -> None:
    writer, listening = engines
    heard = Heard()
    listener = wakeups.Listener(listening, (wakeups.OUTBOX, wakeups.INBOX), heard, retry_s=0.2)
    listener.start()
    try:
        assert listener.connected.wait(10)
        killed = listener.backend_pid
        admin = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(admin, autocommit=True) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", (killed,)).fetchone() == (True,)
        heard.wait_for((wakeups.OUTBOX, wakeups.RECONNECTED))
        heard.wait_for((wakeups.INBOX, wakeups.RECONNECTED))
        assert listener.reconnects == 1 and listener.backend_pid != killed
        with writer.begin() as conn:
            _enqueue(conn, "wms.freeze", "after")
        heard.wait_for((wakeups.OUTBOX, "wms.freeze"))
        print(f"killed backend {killed}; listening again as {listener.backend_pid}; heard {heard.items}")
    finally:
        listener.stop()


async def test_a_worker_process_is_woken_by_the_inbox_and_the_freezes_another_process_writes(postgres_url: str, tmp_path: Path) -> None:
    """An API node (here: another engine and inbox writer) stores a platform message and a CS freeze; the
    worker's loop and freeze lane are woken by them, not by their next poll."""
    wms = WmsEndpointSettings(name="main", base_url="http://127.0.0.1:9/wms", app_key="k", app_secret="s")
    settings = Settings(database_url=postgres_url, data_dir=tmp_path, pull_interval_s=3600, fulfillment=FulfillmentSettings(wms=[wms]))
    worker = Runtime(settings)
    woken: list[tuple[str, str]] = []
    lane_wakes: list[float] = []
    real_woken, real_lane = worker._woken, worker.fulfillment.wake_lane  # type: ignore[union-attr]

    def spy(channel: str, payload: str) -> None:
        woken.append((channel, payload))
        real_woken(channel, payload)

    def lane() -> None:
        lane_wakes.append(time.monotonic())
        real_lane()

    worker._woken = spy  # type: ignore[method-assign]
    worker.fulfillment.wake_lane = lane  # type: ignore[union-attr, method-assign]
    await worker.start(workers=True, streams=False)
    api = create_engine(postgres_url)
    inbox_writer = InboxWriter(api)
    inbox_writer.start()
    try:
        assert await asyncio.to_thread(worker._listener.connected.wait, 10)  # type: ignore[union-attr]
        await inbox_writer.append("douyin", "S1", "push", b'{"not": "a real push"}')
        with api.begin() as conn:
            _enqueue(conn, "wms.freeze", "cs-freeze")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not {(wakeups.INBOX, ""), (wakeups.OUTBOX, "wms.freeze")} <= set(woken):
            await asyncio.sleep(0.02)
        print(f"worker woken by {woken}; freeze lane woken {len(lane_wakes)} times")
        assert (wakeups.INBOX, "") in woken and (wakeups.OUTBOX, "wms.freeze") in woken
        assert lane_wakes
    finally:
        inbox_writer.stop()
        api.dispose()
        await worker.stop()
