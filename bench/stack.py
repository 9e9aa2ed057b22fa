"""Start and stop the real stack for the benchmark: simulator and OrderHub as separate processes."""

from __future__ import annotations

import os
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
def stack(backend: str, *, pull_interval_s: float = 2.0, before_hub: Callable[[str], None] | None = None) -> Iterator[dict[str, str]]:
    """Simulator + OrderHub on free ports, OrderHub on a fresh database of `backend`.

    `before_hub(sim_url)` runs once the simulator is up and before OrderHub starts (e.g. to
    create the JD orders its first pull will find).
    """
    with tempfile.TemporaryDirectory(prefix="orderhub-bench-") as tmp:
        workdir = Path(tmp)
        sim_port, hub_port = free_port(), free_port()
        sim_url, hub_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{hub_port}"
        with database(backend, workdir) as db_url:
            seed_catalogue(db_url)
            config = {
                "database_url": db_url,
                "data_dir": str(workdir),
                "pull_interval_s": pull_interval_s,
                "shops": [{**shop, "api_base_url": f"{sim_url}/{shop['channel']}"} for shop in DEMO_SHOPS],
            }
            (workdir / "orderhub.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
            sim = Process([*ORDERHUB, "simulate", "--port", str(sim_port), "--target", hub_url, "--rate", "0"], workdir / "sim.log")
            hub = None
            try:
                wait_http(f"{sim_url}/_sim/stats")
                if before_hub is not None:
                    before_hub(sim_url)
                hub = Process([*ORDERHUB, "serve", "--port", str(hub_port), "--config", str(workdir / "orderhub.yaml")], workdir / "hub.log")
                wait_http(f"{hub_url}/api/v1/health")
                yield {"sim": sim_url, "hub": hub_url, "database_url": db_url, "workdir": str(workdir), "headers": admin_headers(db_url)}
            finally:
                if hub is not None:
                    hub.stop()
                sim.stop()
