"""Start and stop the real stack for the benchmark: simulator and OrderHub as separate processes.

Embedded mode: one `orderhub serve` (API + workers). Scaled mode (`broker_url`): one
`orderhub serve --no-workers` API node and N `orderhub worker` processes, all given
ORDERHUB_DATABASE_URL and ORDERHUB_BROKER_URL, on streams named by a prefix of the run's own
(removed from the shared broker at the end).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import yaml

from orderhub.demo.shops import DEMO_SHOPS

PG_ADMIN = os.environ.get("ORDERHUB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ORDERHUB = [sys.executable, "-m", "orderhub.entrypoints.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    name = f"orderhub_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Process:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def seed_catalogue(database_url: str, units: int = 1_000_000) -> None:
    """The demo catalogue, channel SKU mappings and ample stock, so every order is audited the
    whole way (rules, allocation, reservation) instead of stopping at 缺货."""
    from orderhub.adapters.db import migrate
    from orderhub.adapters.db.engine import create_engine
    from orderhub.demo.catalogue import WAREHOUSES, skus
    from orderhub.demo.stock import GIFTS, sku_mappings
    from orderhub.services import catalogue

    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    try:
        rows = [{"code": s.code, "title": s.title, "category": s.category, "price": s.price, "cost": s.cost, "weight_g": s.weight} for s in skus()]
        catalogue.upsert_catalogue(engine, WAREHOUSES, rows + GIFTS)
        catalogue.upsert_sku_mappings(engine, sku_mappings())
        counts = [(code, w["code"], units) for code in [r["code"] for r in rows] + [str(g["code"]) for g in GIFTS] for w in WAREHOUSES]
        catalogue.seed_stock(engine, counts, actor="bench", reason="benchmark stock")
    finally:
        engine.dispose()


def admin_headers(database_url: str) -> dict[str, str]:
    """An admin API key for the benchmark's own calls (pause, resume, reading pages): the API wants a login."""
    from orderhub.adapters.db.engine import create_engine
    from orderhub.domain.access import Actor
    from orderhub.services import users

    engine = create_engine(database_url)
    try:
        key = users.create_api_key(engine, Actor("bench", "system"), name=f"bench-{uuid.uuid4().hex[:6]}", role="admin")["key"]
    finally:
        engine.dispose()
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def stack(
    backend: str, *, pull_interval_s: float = 2.0, before_hub: Callable[[str], None] | None = None,
    broker_url: str | None = None, workers: int = 2, partitions: int = 16, keep_logs: Path | None = None,
) -> Iterator[dict[str, Any]]:
    """Simulator + OrderHub on free ports, OrderHub on a fresh database of `backend`.

    `before_hub(sim_url)` runs once the simulator is up and before OrderHub starts (e.g. to
    create the JD orders its first pull will find). With `broker_url` (scaled mode, PostgreSQL
    only) OrderHub is an API node plus `workers` worker processes sharing `partitions`.

    Yields the URLs, the database URL, the work directory, an admin's headers, the mode and
    the pid of every process started (`pids`: hub, sim, worker-1 …). With `keep_logs`, the
    processes' logs are copied there at the end (the work directory itself is removed).
    """
    if broker_url and backend != "postgresql":
        raise ValueError("scaled mode needs PostgreSQL: the workers share one database")
    with tempfile.TemporaryDirectory(prefix="orderhub-bench-") as tmp:
        workdir = Path(tmp)
        sim_port, hub_port = free_port(), free_port()
        sim_url, hub_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{hub_port}"
        prefix = f"bench{uuid.uuid4().hex[:8]}" if broker_url else None
        with database(backend, workdir) as db_url:
            seed_catalogue(db_url)
            config: dict[str, Any] = {
                "database_url": db_url,
                "data_dir": str(workdir),
                "pull_interval_s": pull_interval_s,
                "shops": [{**shop, "api_base_url": f"{sim_url}/{shop['channel']}"} for shop in DEMO_SHOPS],
            }
            env: dict[str, str] = {}
            if broker_url:
                config["broker"] = {"prefix": prefix, "partitions": partitions}
                env = {"ORDERHUB_DATABASE_URL": db_url, "ORDERHUB_BROKER_URL": broker_url}
            (workdir / "orderhub.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
            sim = Process([*ORDERHUB, "simulate", "--port", str(sim_port), "--target", hub_url, "--rate", "0"], workdir / "sim.log")
            hub = None
            nodes: list[Process] = []
            try:
                wait_http(f"{sim_url}/_sim/stats")
                if before_hub is not None:
                    before_hub(sim_url)
                serve = [*ORDERHUB, "serve", "--port", str(hub_port), "--config", str(workdir / "orderhub.yaml")]
                hub = Process(serve + (["--no-workers"] if broker_url else []), workdir / "hub.log", env)
                wait_http(f"{hub_url}/api/v1/health")
                pids = {"hub": hub.proc.pid, "sim": sim.proc.pid}
                if broker_url:
                    for n in range(1, workers + 1):
                        nodes.append(Process([*ORDERHUB, "worker", "--config", str(workdir / "orderhub.yaml")], workdir / f"worker-{n}.log", env))
                        pids[f"worker-{n}"] = nodes[-1].proc.pid
                    wait_partitions_shared(db_url, workers, partitions, nodes)
                yield {
                    "sim": sim_url, "hub": hub_url, "database_url": db_url, "workdir": str(workdir), "headers": admin_headers(db_url),
                    "mode": "scaled" if broker_url else "embedded", "broker_url": broker_url, "broker_prefix": prefix, "pids": pids,
                }
            finally:
                for node in nodes:
                    node.stop()
                if hub is not None:
                    hub.stop()
                sim.stop()
                if broker_url and prefix:
                    drop_broker_prefix(broker_url, prefix)
                if keep_logs is not None:
                    keep_logs.mkdir(parents=True, exist_ok=True)
                    for log in workdir.glob("*.log"):
                        shutil.copy(log, keep_logs / log.name)


def wait_partitions_shared(database_url: str, workers: int, partitions: int, nodes: list[Process], timeout: float = 90.0) -> None:
    """Until every partition is leased and each of the `workers` holds its share (a worker that
    joins second takes its half only at the first holder's next rebalance, a few seconds later)."""
    import sqlalchemy as sa

    from orderhub.adapters.db.engine import create_engine
    from orderhub.adapters.db.tables import worker_leases

    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout
    owners: dict[str, int] = {}
    try:
        while time.monotonic() < deadline:
            for node in nodes:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {node.proc.returncode}; see {node.log.name}")
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(worker_leases.c.owner, sa.func.count()).where(worker_leases.c.name.like("partition:%"))
                    .where(worker_leases.c.owner.is_not(None)).where(worker_leases.c.lease_until > datetime.now(UTC))
                    .group_by(worker_leases.c.owner)
                ).all()
            owners = {owner: n for owner, n in rows}
            if len(owners) == workers and sum(owners.values()) == partitions:
                return
            time.sleep(0.5)
    finally:
        engine.dispose()
    raise RuntimeError(f"partitions not shared by {workers} workers after {timeout}s: {owners}")


def drop_broker_prefix(broker_url: str, prefix: str) -> None:
    """The run's streams (NATS) or keys (Redis) removed from the shared broker."""
    import asyncio

    async def drop() -> None:
        if broker_url.startswith("nats"):
            import nats

            nc = await nats.connect(broker_url)
            try:
                js = nc.jetstream()
                for name in (f"{prefix.upper()}_INBOX", f"{prefix.upper()}_DLQ", f"{prefix.upper()}_FLOOR"):
                    try:
                        await js.delete_stream(name)
                    except Exception:  # not created by this run
                        pass
            finally:
                await nc.close()
        elif broker_url.startswith("redis"):
            import redis.asyncio as redis

            client = redis.from_url(broker_url)
            keys = [k async for k in client.scan_iter(f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(drop())


# The HTTP floor: the same requests answered by an ASGI app that only reads the body, under the
# same server (uvicorn, uvloop, httptools) OrderHub runs on.
TRIVIAL_APP = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"code":0,"msg":"success"}'})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, lifespan="off")
"""


@contextmanager
def trivial_http(workdir: Path) -> Iterator[str]:
    """A server that answers every request 200 at once: what the sender and HTTP alone cost."""
    port = free_port()
    server = Process([sys.executable, "-c", TRIVIAL_APP, str(port)], workdir / "trivial.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
