"""Engine creation: SQLite (WAL, durable commits) for the embedded mode, PostgreSQL for scale."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event


log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30  # how long a SQLite writer waits for the write lock before it fails
WARN_AFTER_S = 5  # a writer waiting this long for its turn logs who holds it


def _json_serializer(value: object) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        database = sa.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            json_serializer=_json_serializer,
            json_deserializer=orjson.loads,
            connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=8,
            max_overflow=8,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        _WriterTurn(engine)
        return engine
    return sa.create_engine(
        url,
        json_serializer=_json_serializer,
        json_deserializer=orjson.loads,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN is
    # deferred, and a deferred read-then-write transaction fails with SQLITE_BUSY under
    # concurrency instead of waiting for the lock).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets the console read while workers write; synchronous=FULL makes every commit
    # durable before the platform is acknowledged (group commit amortises the fsync).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class _WriterTurn:
    """SQLite has one writer at a time. Writers of this process take turns on a lock here, so the
    next one starts the moment the last commits; left to SQLite's busy handler, a waiting writer
    sleeps in growing steps (up to 100 ms) and a one-row write could wait 500 ms behind a 5 ms one
    (the cancel -> freeze latency). Another process (the CLI beside the server) still meets the
    busy handler. Read-only work (the console, the API) asks for readonly=True: a plain BEGIN,
    no turn, never blocking writers (WAL)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._lock = threading.Lock()
        self._holder: int | None = None  # id() of the DBAPI connection whose turn it is
        self._holder_thread: int | None = None  # for the log, should a writer ever wait too long
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback
        dialect.do_commit = lambda connection: self._end(commit, connection)  # type: ignore[method-assign]
        dialect.do_rollback = lambda connection: self._end(rollback, connection)  # type: ignore[method-assign]
        event.listen(engine, "begin", self._begin)
        # a connection discarded or returned mid-transaction (an error, a kill) gives its turn back too
        event.listen(engine, "checkin", lambda dbapi_connection, _record: self._give_back(dbapi_connection))
        event.listen(engine, "invalidate", lambda dbapi_connection, _record, _exc: self._give_back(dbapi_connection))

    def _begin(self, conn: sa.Connection) -> None:
        if conn.get_execution_options().get("readonly"):
            conn.exec_driver_sql("BEGIN")
            return
        if self._holder_thread == threading.get_ident():
            # This thread has the turn already (a second connection inside its own transaction):
            # waiting could only end with the timeout, every other writer stalled until then.
            log.error("a second SQLite write transaction in the thread that holds the turn:\n%s", "".join(traceback.format_stack()))
            raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, RuntimeError("a second write transaction in one thread"))
        # Writers take the write lock up front (BEGIN IMMEDIATE): a deferred read-then-write
        # transaction fails with SQLITE_BUSY under concurrency instead of waiting.
        if not self._lock.acquire(timeout=WARN_AFTER_S):
            # a turn is normally a few ms: say early who holds it, while it still does
            log.warning("waiting %s s for the SQLite write turn; the writer holding it:\n%s", WARN_AFTER_S, self._holder_stack())
            if not self._lock.acquire(timeout=BUSY_TIMEOUT_S - WARN_AFTER_S):  # as SQLite's own busy timeout would
                log.error("no SQLite write turn within %s s; the writer holding it:\n%s", BUSY_TIMEOUT_S, self._holder_stack())
                raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, TimeoutError("database is locked (writer turn)"))
        self._holder = id(conn.connection.dbapi_connection)
        self._holder_thread = threading.get_ident()
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self._release()
            raise

    def _end(self, finish: Any, connection: Any) -> None:
        try:
            finish(connection)
        finally:
            # SQLAlchemy passes its pool's proxy here; the turn was taken by the DBAPI connection inside
            self._give_back(getattr(connection, "dbapi_connection", connection))

    def _give_back(self, dbapi_connection: Any) -> None:
        if dbapi_connection is not None and self._holder == id(dbapi_connection):
            self._release()

    def _holder_stack(self) -> str:
        frame = sys._current_frames().get(self._holder_thread or -1)
        return "".join(traceback.format_stack(frame)) if frame is not None else "(the holding thread has ended)"

    def _release(self) -> None:
        self._holder = self._holder_thread = None
        self._lock.release()


def is_deadlock(exc: BaseException) -> bool:
    """PostgreSQL aborted one of two transactions waiting on each other; running it again is safe."""
    return isinstance(exc, sa.exc.DBAPIError) and getattr(getattr(exc, "orig", None), "sqlstate", None) == "40P01"
