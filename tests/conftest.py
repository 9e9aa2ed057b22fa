"""Shared fixtures: both databases, started if needed; under CI=true an unreachable service fails the run."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orderhub.adapters.db import migrate
from orderhub.adapters.db.engine import create_engine

FIXTURES = Path(__file__).parent / "fixtures" / "platforms"
PG_ADMIN = os.environ.get("ORDERHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a test that cannot reach its service fails the run)")
    pytest.skip(reason)


def _postgres_reachable() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _start_postgres() -> None:
    clusters = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") and clusters.is_dir():
        for version in sorted(p.name for p in clusters.iterdir()):
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    if not _postgres_reachable():
        _start_postgres()
        if not _postgres_reachable():
            _unavailable(f"PostgreSQL is not reachable at {PG_ADMIN}")
    return PG_ADMIN


def create_pg_database(admin: str) -> str:
    name = f"orderhub_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def drop_pg_database(admin: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind: a SQLite file, and a PostgreSQL database created and dropped."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'orderhub.db'}"
        return
    admin = request.getfixturevalue("postgres_admin")
    url = create_pg_database(admin)
    try:
        yield url
    finally:
        drop_pg_database(admin, url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Any]:
    """An engine on `database_url` with the schema migrated to head (a module may define its own `engine`)."""
    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh PostgreSQL database only (tests of PostgreSQL's own locking)."""
    url = create_pg_database(postgres_admin)
    try:
        yield url
    finally:
        drop_pg_database(postgres_admin, url)


# -- brokers of scaled mode (NATS JetStream, Redis Streams): the machine's shared services ---------

NATS_URL = os.environ.get("ORDERHUB_TEST_NATS", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("ORDERHUB_TEST_REDIS", "redis://127.0.0.1:6379")
_START_BROKER = {
    "nats": ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/nats-server", "--",
             "-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server", "-l", "/var/log/nats-server.log"],
    "redis": ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
              "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"],
}


def _port_open(url: str) -> bool:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return True
    except OSError:
        return False


def _broker(kind: str, url: str) -> str:
    if not _port_open(url):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(_START_BROKER[kind], capture_output=True, timeout=30)
        for _ in range(50):
            if _port_open(url):
                break
            time.sleep(0.1)
        else:
            _unavailable(f"{kind} is not reachable at {url}")
    return url


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (tests isolate themselves by key)."""
    return _broker("redis", REDIS_URL)


@pytest.fixture(params=["nats", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """The machine's NATS JetStream and Redis, each in turn (tests isolate themselves by prefix)."""
    return _broker(request.param, NATS_URL if request.param == "nats" else REDIS_URL)
