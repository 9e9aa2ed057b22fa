"""Engine creation: SQLite (WAL, durable commits) for the embedded mode, PostgreSQL for scale."""

from __future__ import annotations

from pathlib import Path

import orjson
import sqlalchemy as sa
from sqlalchemy import event


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
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=8,
            max_overflow=8,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
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
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Writers take the write lock up front so they queue on busy_timeout instead of failing;
    # read-only work (the console, the API) asks for readonly=True and never blocks writers.
    if conn.get_execution_options().get("readonly"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_deadlock(exc: BaseException) -> bool:
    """PostgreSQL aborted one of two transactions waiting on each other; running it again is safe."""
    return isinstance(exc, sa.exc.DBAPIError) and getattr(getattr(exc, "orig", None), "sqlstate", None) == "40P01"
