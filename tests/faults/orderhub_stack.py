"""OrderHub as real processes for the fault tests: the platform simulator, API nodes, workers
(or one embedded `serve`), a sender that plays a platform (retrying what was not accepted), and
the invariants checked by SQL at the end of each test."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson
import sqlalchemy as sa
import yaml

from orderhub.adapters.db import inventory_repo, migrate
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.tables import inbox, orders, quarantine, stock, workers
from orderhub.demo.shops import DEMO_SHOPS
from orderhub.domain.ids import order_id
from private_services import SHARED_PORTS, free_port, wait_until

ORDERHUB = [sys.executable, "-m", "orderhub.entrypoints.cli"]
DOUYIN = next(shop for shop in DEMO_SHOPS if shop["channel"] == "douyin")
PII_KEY = "3pG6p0mJzD0k7Wy3h2ZrVtq8nKc5Jx1bQf4s9LuEo6A="  # fixed: every process of a stack seals alike
HASH_KEY = "0f" * 32


class Process:
    """One OrderHub (or simulator) process; its output goes to a log file in the stack's directory."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.args = args
        self.log_path = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def clean_env(**values: str) -> dict[str, str]:
    """The test's environment without any ORDERHUB_* setting (they could name the shared services)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERHUB_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


def wait_http(url: str, timeout: float = 60.0, proc: Process | None = None) -> None:
    def up() -> bool:
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.args[3]} exited while starting:\n{proc.log_tail()}")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout, f"{url} answering")


# -- the platform simulator ------------------------------------------------------------------------


@dataclass
class SimOrder:
    original_id: str
    update_time: int  # the platform's newest update (unix s): what the stored order must show
    status: str


@dataclass
class Push:
    original_id: str
    kind: str
    headers: dict[str, str]
    body: bytes
    path: str = "/api/v1/webhooks/douyin"
    reason: str = "valid"  # what the sender expects: valid, or the kind of bad input injected


class Simulator:
    """`orderhub simulate` as a process: 抖店's open API (order details, decryption) with real signing."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [*ORDERHUB, "simulate", "--port", str(self.port), "--target", "http://127.0.0.1:9", "--rate", "0"]
        self.process = Process(args, workdir / "simulator.log", clean_env())
        wait_http(f"{self.url}/_sim/stats", proc=self.process)
        self._seed = 7000

    def generate(self, count: int) -> tuple[list[SimOrder], list[Push]]:
        """`count` 抖店 orders with their whole timelines (duplicates and out-of-order pushes included)."""
        self._seed += 1
        reply = httpx.post(f"{self.url}/_sim/generate", json={"count": count, "channels": ["douyin"], "seed": self._seed, "details": True},
                           timeout=120).json()
        sim_orders = [SimOrder(str(o["order_id"]), int(o["update_time"]), o["status"]) for o in reply["orders"]]
        pushes = [Push(str(p["order_id"]), p["kind"], p["headers"], p["body"].encode(), p["path"]) for p in reply["pushes"]]
        return sim_orders, pushes

    def stop(self) -> None:
        self.process.stop()


# -- one OrderHub installation (a fresh database on the private cluster) ---------------------------


class Stack:
    """Config, environment and processes of one OrderHub on the private PostgreSQL (and broker)."""

    def __init__(self, workdir: Path, database_url: str, simulator: Simulator, broker_url: str | None = None, partitions: int = 4) -> None:
        for url in (database_url, broker_url):  # the machine's shared services are never the ones killed here
            assert url is None or urlsplit(url).port not in SHARED_PORTS, url
        self.workdir = workdir
        self.database_url = database_url
        self.broker_url = broker_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[Process] = []
        self._names = itertools.count()
        self.prefix = f"f{uuid.uuid4().hex[:8]}"
        config = {
            "batch_size": 100,
            # a killed worker's inbox rows are claimed again after this (long enough that a batch on a busy
            # 2-core machine is not taken over while it is still being processed)
            "inbox_lease_s": 10.0,
            "pull_interval_s": 3600.0,
            "degrade": {"lag_threshold": 1_000_000},
            # a killed worker's partitions are taken over after lease_s, its unacked messages delivered again after redeliver_s
            "broker": {"partitions": partitions, "prefix": self.prefix, "batch_size": 100, "lease_s": 3.0, "redeliver_s": 2.0, "max_deliveries": 8},
            "shops": [{**DOUYIN, "api_base_url": f"{simulator.url}/douyin"}],
        }
        self.config = workdir / "orderhub.yaml"
        self.config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        env = {"ORDERHUB_DATABASE_URL": database_url, "ORDERHUB_DATA_DIR": str(workdir), "ORDERHUB_PII_KEY": PII_KEY, "ORDERHUB_HASH_KEY": HASH_KEY}
        if broker_url:
            env["ORDERHUB_BROKER_URL"] = broker_url
        self.env = clean_env(**env)
        migrate.upgrade(database_url)
        self.engine = create_engine(database_url)
        seed_catalogue(self.engine)

    def _start(self, name: str, *args: str) -> Process:
        process = Process([*ORDERHUB, *args, "--config", str(self.config)], self.workdir / f"{name}-{next(self._names)}.log", self.env)
        self.processes.append(process)
        return process

    def start_api(self) -> Process:
        """Scaled mode: an API node (intake publishes to the broker), no workers."""
        process = self._start("api", "serve", "--no-workers", "--port", str(self.port))
        wait_http(f"{self.url}/api/v1/health", proc=process)
        return process

    def start_embedded(self) -> Process:
        """Embedded mode: API and workers in one `serve`, the database inbox as the durable store."""
        process = self._start("serve", "serve", "--port", str(self.port))
        wait_http(f"{self.url}/api/v1/health", proc=process)
        return process

    def start_worker(self, wait: bool = True) -> Process:
        process = self._start("worker", "worker")
        if wait:  # it heartbeats once it has its leases table rows and its share of partitions
            wait_until(lambda: self.worker_seen(process), 60, f"worker pid {process.pid} heartbeating")
        return process

    def worker_seen(self, process: Process) -> bool:
        if not process.alive():
            raise AssertionError(f"worker exited:\n{process.log_tail()}")
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(workers).where(workers.c.pid == process.pid)).scalar_one() > 0

    def worker_stats(self, process: Process) -> dict[str, Any]:
        with self.engine.connect() as conn:
            stats = conn.execute(sa.select(workers.c.stats).where(workers.c.pid == process.pid)).scalar_one_or_none()
        return stats or {}

    def health(self) -> dict[str, Any]:
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return {}

    async def start(self, workers: int = 1) -> list[Process]:
        """Scaled: an API node and `workers` workers; embedded: one `serve`. Started side by side."""
        if not self.broker_url:
            return [await asyncio.to_thread(self.start_embedded)]
        return list(await asyncio.gather(asyncio.to_thread(self.start_api), *(asyncio.to_thread(self.start_worker) for _ in range(workers))))

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.engine.dispose()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name} (pid {p.pid}) ---\n{p.log_tail(15)}" for p in self.processes)


def seed_catalogue(engine: sa.Engine, units: int = 6) -> None:
    """The demo catalogue and its 抖店 listings with a little stock: the audit reserves for some
    orders and leaves others short, so the stock invariants are exercised, not vacuous."""
    from orderhub.demo.catalogue import WAREHOUSES, skus
    from orderhub.demo.stock import GIFTS, sku_mappings
    from orderhub.services import catalogue

    rows = [{"code": s.code, "title": s.title, "category": s.category, "price": s.price, "cost": s.cost, "weight_g": s.weight} for s in skus()]
    catalogue.upsert_catalogue(engine, WAREHOUSES, rows + GIFTS)
    catalogue.upsert_sku_mappings(engine, sku_mappings())
    counts = [(code, w["code"], units) for code in [r["code"] for r in rows] + [str(g["code"]) for g in GIFTS] for w in WAREHOUSES]
    catalogue.seed_stock(engine, counts, actor="faults", reason="fault test stock")


# -- the sender: a platform that retries until its push is accepted -------------------------------


@dataclass
class Sent:
    push: Push
    status: int | None = None  # the final answer: 200 accepted, 401 rejected …
    code: str | None = None  # the error code of a non-200 answer
    attempts: int = 0
    unavailable: int = 0  # answers 503 (intake_unavailable) before the final one
    refused: int = 0  # connection refused / reset (the API node was down)
    ambiguous: int = 0  # sent, no answer (kept or not: the retry may duplicate it)


@dataclass
class Platform:
    """Sends pushes at `rate` per second (open loop, at most `concurrency` in flight) and retries
    503s and connection failures with backoff, as a platform does, until each push has a final
    answer. Every attempt is logged as (time, outcome) for the outage measurements."""

    hub_url: str
    rate: float = 200.0
    concurrency: int = 48
    give_up_s: float = 150.0
    attempts: list[tuple[float, str]] = field(default_factory=list)

    async def send(self, pushes: list[Push]) -> list[Sent]:
        sent = [Sent(p) for p in pushes]
        gate = asyncio.Semaphore(self.concurrency)
        timeout = aiohttp.ClientTimeout(total=10.0, connect=2.0)
        async with aiohttp.ClientSession(base_url=self.hub_url, connector=aiohttp.TCPConnector(limit=self.concurrency), timeout=timeout) as session:
            started = time.monotonic()

            async def one(index: int, item: Sent) -> None:
                delay = started + index / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with gate:
                    await self._deliver(session, item, started)

            await asyncio.gather(*(one(i, item) for i, item in enumerate(sent)))
        return sent

    async def _deliver(self, session: aiohttp.ClientSession, item: Sent, started: float) -> None:
        backoff = 0.2
        while True:
            item.attempts += 1
            try:
                async with session.post(item.push.path, data=item.push.body, headers=item.push.headers) as response:
                    status, body = response.status, await response.read()
            except aiohttp.ClientConnectorError:
                item.refused += 1
                outcome = "refused"
            except (aiohttp.ClientError, TimeoutError):  # a reset or a timeout after the request went out
                item.ambiguous += 1
                outcome = "no answer"
            else:
                outcome = str(status)
                if status < 500:
                    item.status = status
                    if status != 200:
                        item.code = orjson.loads(body).get("code")
                    self.attempts.append((time.time(), outcome))
                    return
                item.unavailable += 1
            self.attempts.append((time.time(), outcome))
            if time.monotonic() - started > self.give_up_s:
                item.status = -1
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def outage(self, since: float) -> str:
        """How intake answered after `since` (unix s): the span of failed attempts and the first accepted after it."""
        failed = [(t, o) for t, o in self.attempts if t >= since and o not in ("200", "401")]
        if not failed:
            return "intake never refused"
        first, last = failed[0][0], failed[-1][0]
        recovered = next((t for t, o in self.attempts if t > last and o == "200"), None)
        kinds = Counter(o for _, o in failed)
        back = f"first accepted again at +{recovered - since:.1f} s" if recovered else "never accepted again"
        return f"refused from +{first - since:.1f} s to +{last - since:.1f} s ({dict(kinds)}), {back}"


def accepted(sent: list[Sent]) -> list[Sent]:
    return [s for s in sent if s.status == 200]


def expected_orders(sim_orders: list[SimOrder], sent: list[Sent]) -> dict[str, int]:
    """order id -> the platform's newest update time, for every order with an accepted push."""
    newest = {o.original_id: o.update_time for o in sim_orders}
    return {order_id("douyin", s.push.original_id): newest[s.push.original_id] for s in accepted(sent) if s.push.original_id in newest}


# -- waiting and the invariants --------------------------------------------------------------------


def _scalar(engine: sa.Engine, query: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def drained(stack: Stack, expected: int) -> bool:
    # The broker first: a worker acks a batch after inserting its inbox rows, so once the broker is empty
    # every message is in the inbox, and the counts below see it (read the other way round, a batch inserted
    # and acked between the two reads would pass as drained with its rows still open).
    if stack.broker_url:
        broker = stack.health().get("broker") or {}
        if broker.get("lag") != 0:
            return False
    try:
        stored = _scalar(stack.engine, sa.select(sa.func.count()).select_from(orders))
        open_rows = _scalar(stack.engine, sa.select(sa.func.count()).select_from(inbox).where(inbox.c.status != "done"))
        unaudited = _scalar(stack.engine, sa.select(sa.func.count()).select_from(orders).where(orders.c.audit_state == "pending"))
    except sa.exc.OperationalError:  # the database is being restarted
        return False
    return stored >= expected and not open_rows and not unaudited


def wait_drained(stack: Stack, expected: int, timeout: float = 90.0) -> float:
    started = time.monotonic()
    try:
        wait_until(lambda: drained(stack, expected), timeout, f"{expected} orders stored, inbox done, audited, broker empty", interval=0.25)
    except AssertionError as exc:
        with stack.engine.connect() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
            rows = dict(conn.execute(sa.select(inbox.c.status, sa.func.count()).group_by(inbox.c.status)).all())
        raise AssertionError(f"{exc}; {stored}/{expected} orders, inbox {rows}, health {stack.health()}\n{stack.logs()}") from None
    return time.monotonic() - started


@dataclass
class Findings:
    orders: int
    duplicates: int
    lost: int
    stale: int  # stored, but not at the platform's newest update
    inbox_open: int
    broker_keys: int | None
    quarantined: Counter[str]  # inbox items quarantined, by code
    quarantine_repeats: int  # rows beyond one per item: an inbox row processed twice (its lease ran out mid-batch)
    stock_drift: int
    oversold: int

    def line(self, accepted_messages: int | None = None) -> str:
        keys = ""
        if self.broker_keys is not None:
            keys = f", {self.broker_keys} broker keys" + (f" for {accepted_messages} accepted messages" if accepted_messages is not None else "")
        q = f", quarantined {dict(self.quarantined)}" if self.quarantined else ""
        q += f" ({self.quarantine_repeats} repeated quarantine rows)" if self.quarantine_repeats else ""
        return (f"found {self.orders} orders, {self.duplicates} duplicates, {self.lost} lost, {self.stale} not at the newest state, "
                f"{self.inbox_open} inbox rows open{keys}{q}; stock: {self.oversold} oversold, {self.stock_drift} drifted")


def findings(stack: Stack, expected: dict[str, int]) -> Findings:
    """Read what the database holds against what the platform got accepted."""
    with stack.engine.connect() as conn:
        stored = {r.id: r for r in conn.execute(sa.select(orders.c.id, orders.c.channel, orders.c.original_id, orders.c.updated_at))}
        per_original = conn.execute(
            sa.select(sa.func.count()).select_from(
                sa.select(orders.c.channel, orders.c.original_id).group_by(orders.c.channel, orders.c.original_id)
                .having(sa.func.count() > 1).subquery())
        ).scalar_one()
        misnamed = sum(1 for r in stored.values() if r.id != order_id(r.channel, r.original_id))
        open_rows = conn.execute(sa.select(sa.func.count()).select_from(inbox).where(inbox.c.status != "done")).scalar_one()
        keys = conn.execute(sa.select(sa.func.count(sa.distinct(inbox.c.broker_key)))).scalar_one() if stack.broker_url else None
        items = conn.execute(sa.select(quarantine.c.inbox_id, quarantine.c.original_id, quarantine.c.code)).all()
        drift = len(inventory_repo.check_invariant(conn))
        oversold = conn.execute(sa.select(sa.func.count()).select_from(stock).where(stock.c.reserved > stock.c.on_hand)).scalar_one()
    stale = sum(1 for oid, t in expected.items() if oid in stored and int(stored[oid].updated_at.timestamp()) != t)
    quarantined = Counter(code for _, _, code in set(items))  # per inbox item: one it was processed for twice counts once
    return Findings(
        orders=len(stored), duplicates=per_original + misnamed, lost=len(set(expected) - set(stored)), stale=stale, inbox_open=open_rows,
        broker_keys=keys, quarantined=quarantined, quarantine_repeats=len(items) - len(set(items)), stock_drift=drift, oversold=oversold,
    )


def assert_invariants(
    found: Findings, expected: dict[str, int], sent: list[Sent], quarantined: Counter[str] | None = None, published: int = 0,
) -> None:
    """Every accepted push is in exactly one order at the platform's newest state; nothing extra,
    nothing open, the stock never oversold and equal to its active reservations; in scaled mode one
    inbox row per accepted message (a retry the sender could not tell was kept may add one) and per
    message the test `published` onto the broker itself."""
    assert [s for s in sent if s.status == -1] == [], "the sender gave up on some pushes"
    assert found.lost == 0 and found.duplicates == 0 and found.stale == 0, found.line()
    assert found.orders == len(expected), found.line()
    assert found.inbox_open == 0, found.line()
    assert found.quarantined == (quarantined or Counter()), found.line()
    assert found.oversold == 0 and found.stock_drift == 0, found.line()
    if found.broker_keys is not None:
        # one broker message per accepted push (a 抖店 push carries one order's message); more only from
        # attempts whose fate the API node could not know: no answer, or a publish that timed out (503)
        # yet reached the broker when the client reconnected — a second inbox row of one order, merged
        messages = len(accepted(sent)) + published
        unsure = sum(s.ambiguous + s.unavailable for s in sent)
        assert messages <= found.broker_keys <= messages + unsure, f"{found.broker_keys} broker keys for {messages} accepted messages"
