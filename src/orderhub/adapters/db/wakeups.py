"""Wake-ups across processes on PostgreSQL: LISTEN/NOTIFY.

In one process a commit wakes the relay or the workers through an in-memory event. With several
processes on one PostgreSQL database (API nodes and `orderhub worker` nodes) a row written by one
process must wake another: a transaction that writes inbox or outbox rows also says NOTIFY, which
PostgreSQL delivers only when (and if) that transaction commits, and every listening process wakes
at once instead of at its next poll. A missed notification costs latency, never a message: every
loop still polls (0.5 s), and a listener that lost its connection wakes everything once it is back.
SQLite is one process: nothing to do there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
import sqlalchemy as sa

log = logging.getLogger(__name__)

INBOX = "orderhub_inbox"  # payload: empty
OUTBOX = "orderhub_outbox"  # payload: the kind of a message written
RECONNECTED = "*"  # what the callback gets after a reconnect: notifications may have been missed


def notify(conn: sa.Connection, channel: str, payload: str = "") -> None:
    """Wake the listeners of `channel` when this connection's transaction commits (PostgreSQL; no-op elsewhere).
    Said once per transaction and payload (PostgreSQL folds repeats within a transaction anyway)."""
    if conn.dialect.name != "postgresql":
        return
    transaction = conn.get_transaction()
    key = f"orderhub.notified.{channel}"
    said = conn.info.get(key)
    if said is None or said[0] is not transaction:
        said = (transaction, set())
        conn.info[key] = said
    if payload in said[1]:
        return
    said[1].add(payload)
    conn.execute(sa.select(sa.func.pg_notify(channel, payload)))


class Listener:
    """One thread, one connection LISTENing on `channels`; calls `on_notify(channel, payload)` for each
    notification of another process (from that thread: the callback must be thread-safe and quick), and
    `on_notify(channel, RECONNECTED)` for every channel after a reconnect. What `engine`'s own connections
    said is left out: this process has woken itself already."""

    def __init__(self, engine: sa.Engine, channels: tuple[str, ...], on_notify: Callable[[str, str], None],
                 *, retry_s: float = 1.0) -> None:
        self._engine = engine
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._own: set[int] = set()  # backend pids of the engine's connections (a reused pid costs a poll, no message)
        sa.event.listen(engine, "checkout", self._checked_out)
        self._channels = channels
        self._on_notify = on_notify
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.backend_pid: int | None = None  # the listening connection's, while connected
        self.reconnects = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="orderhub-listener", daemon=True)
            self._thread.start()

    def _checked_out(self, dbapi_connection: object, record: object, proxy: object) -> None:
        pid = getattr(getattr(dbapi_connection, "info", None), "backend_pid", None)
        if pid is not None:
            self._own.add(pid)

    def stop(self) -> None:
        if sa.event.contains(self._engine, "checkout", self._checked_out):
            sa.event.remove(self._engine, "checkout", self._checked_out)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5,
                                     application_name="orderhub-listener") as conn:
                    for channel in self._channels:
                        conn.execute(f"LISTEN {channel}")
                    self.backend_pid = conn.info.backend_pid
                    self.connected.set()
                    if not first:
                        self.reconnects += 1
                        for channel in self._channels:
                            self._deliver(channel, RECONNECTED)
                    first = False
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=1.0):
                            if n.pid not in self._own:
                                self._deliver(n.channel, n.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                if not self._stop.is_set():
                    log.warning("wake-up listener lost its connection (%s); reconnecting in %.0f s", exc, self._retry_s)
                    self._stop.wait(self._retry_s)
        self.connected.clear()

    def _deliver(self, channel: str, payload: str) -> None:
        try:
            self._on_notify(channel, payload)
        except Exception:  # a failing callback must not end the listening
            log.exception("wake-up callback failed for %s", channel)
