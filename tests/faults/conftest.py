"""Fault tests' own services (PostgreSQL, NATS JetStream, Redis) and the platform simulator, once
per test session; each test gets a fresh database on the private cluster and its own broker prefix.
Under CI=true a missing binary fails the run instead of skipping."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orderhub_stack import Simulator, Stack
from private_services import PrivateNats, PrivatePostgres, PrivateRedis, find_binary, postgres_bindir


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: kills and restarts private PostgreSQL / NATS / Redis and OrderHub processes")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a fault test that cannot start its service fails the run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def faults_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="orderhub-faults-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    bindir = postgres_bindir()
    if bindir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        _unavailable("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) to start a private cluster")
    pg = PrivatePostgres(bindir)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.remove()


@pytest.fixture(scope="session")
def private_nats(faults_dir: Path) -> Iterator[PrivateNats]:
    binary = find_binary("nats-server", ("/usr/sbin/nats-server", "/usr/local/bin/nats-server"))
    if binary is None:
        _unavailable("no nats-server binary to start a private NATS JetStream")
    nats = PrivateNats(binary, faults_dir)
    nats.start()
    yield nats
    nats.stop()


@pytest.fixture(scope="session")
def private_redis(faults_dir: Path) -> Iterator[PrivateRedis]:
    binary = find_binary("redis-server", ("/usr/bin/redis-server", "/usr/local/bin/redis-server"))
    if binary is None:
        _unavailable("no redis-server binary to start a private Redis")
    redis = PrivateRedis(binary, faults_dir)
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="session")
def simulator(faults_dir: Path) -> Iterator[Simulator]:
    sim = Simulator(faults_dir)
    yield sim
    sim.stop()


@pytest.fixture
def new_stack(private_postgres: PrivatePostgres, simulator: Simulator, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    """new_stack(broker) -> a Stack on a fresh private database; broker None (embedded), "nats" or "redis"."""
    made: list[Stack] = []

    def make(broker: str | None = None) -> Stack:
        private_postgres.ensure_running()
        url = None
        if broker is not None:
            service = request.getfixturevalue(f"private_{broker}")
            service.ensure_running()
            url = service.url
        database = private_postgres.create_database(f"faults_{uuid.uuid4().hex[:10]}")
        stack = Stack(tmp_path, database, simulator, broker_url=url)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.stop()
