"""The benchmark's phases: intake, processing, steady-rate latency, and the same-run limit."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import orjson
import sqlalchemy as sa

from orderhub.adapters.db import migrate
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.tables import (
    customer_channels, customer_identities, customers, inbox, order_events, order_lines, orders, reservations, stock_ledger,
)

# What the pipeline (intake, processing, audit) writes for an order; the limit phase loads exactly these rows again.
WRITTEN_TABLES = [inbox, orders, order_lines, order_events, customers, customer_identities, customer_channels, reservations, stock_ledger]


@dataclass
class Push:
    path: str
    headers: dict[str, str]
    body: bytes
    original_id: str
    channel: str


@dataclass
class Prepared:
    webhooks: list[Push]  # for the benchmark to send
    streamed: list[tuple[str, str]]  # (channel, order id) of messages the simulator queued on its streams


def prepare_pushes(sim_url: str, count: int, seed: int, mix: dict[str, Any] | None = None, channels: list[str] | None = None) -> Prepared:
    """Webhook pushes to send, and stream messages the simulator holds until `release_streams`."""
    request: dict[str, Any] = {"count": count, "seed": seed, "mix": mix or {}, "hold_streams": True}
    if channels:
        request["channels"] = channels
    response = httpx.post(f"{sim_url}/_sim/prepare-pushes", json=request, timeout=600)
    response.raise_for_status()
    prepared = Prepared([], [])
    for line in response.content.splitlines():
        if not line.strip():
            continue
        item = orjson.loads(line)
        if item.get("stream"):
            prepared.streamed.append((item["channel"], str(item["original_id"])))
        else:
            prepared.webhooks.append(Push(item["path"], item["headers"], item["body"].encode(), str(item["original_id"]), item["channel"]))
    return prepared


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def release_streams(sim_url: str) -> int:
    return httpx.post(f"{sim_url}/_sim/streams/release", timeout=600).json()["released"]


async def send_all(hub_url: str, pushes: list[Push], concurrency: int, sim_url: str | None = None) -> dict[str, Any]:
    """Every push in its own HTTP request, `concurrency` senders; ack latency per request.
    With `sim_url`, the simulator's held stream messages are released as the clock starts."""
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[Push] = asyncio.Queue()
    for push in pushes:
        queue.put_nowait(push)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(base_url=hub_url, connector=connector) as session:

        async def sender() -> None:
            nonlocal failures
            while not queue.empty():
                push = queue.get_nowait()
                started = time.perf_counter()
                async with session.post(push.path, data=push.body, headers=push.headers) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        if sim_url:
            await asyncio.to_thread(release_streams, sim_url)
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "messages": len(pushes), "failures": failures, "seconds": elapsed,
        "msgs_per_s": len(pushes) / elapsed, "ack_p50_ms": percentile(latencies, 0.5) * 1000, "ack_p99_ms": percentile(latencies, 0.99) * 1000,
    }


async def send_at_rate(hub_url: str, pushes: list[Push], rate: float) -> dict[tuple[str, str], float]:
    """Open-loop load: push i is sent at t0 + i/rate whatever the server does.
    Returns (channel, original id) -> unix time its push was acknowledged."""
    acked: dict[tuple[str, str], float] = {}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(base_url=hub_url, connector=connector) as session:

        async def one(push: Push) -> None:
            async with session.post(push.path, data=push.body, headers=push.headers) as response:
                await response.read()
                if response.status == 200:
                    acked[(push.channel, push.original_id)] = time.time()

        started = time.perf_counter()
        tasks = []
        for index, push in enumerate(pushes):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(push)))
        await asyncio.gather(*tasks)
    return acked


def count_orders(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
    finally:
        engine.dispose()


def audit_pending(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(orders).where(orders.c.audit_state == "pending")).scalar_one()
    finally:
        engine.dispose()


def audit_outcomes(database_url: str) -> dict[str, int]:
    """Orders per status once audited: ready, on_hold (and the platform's own cancels etc.)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {status: n for status, n in conn.execute(sa.select(orders.c.status, sa.func.count()).group_by(orders.c.status))}
    finally:
        engine.dispose()


def wait_drained(hub_url: str, database_url: str, expected_orders: int, timeout: float) -> float:
    """Seconds until the backlog is empty, every expected order is stored and none waits for audit."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        backlog = httpx.get(f"{hub_url}/api/v1/health", timeout=30).json().get("backlog", 1)
        if backlog == 0 and count_orders(database_url) >= expected_orders and audit_pending(database_url) == 0:
            return time.perf_counter() - started
        time.sleep(0.25)
    raise TimeoutError(f"not drained after {timeout}s: {count_orders(database_url)}/{expected_orders} orders")


def stored_latencies(database_url: str, first_ack: dict[tuple[str, str], float]) -> list[float]:
    """Ack of an order's push -> its row written (`ingested_at`, taken in the writing
    transaction just before commit; same machine clock). An order read through a list-API
    window before its own push was acknowledged counts as 0."""
    from orderhub.domain.ids import order_id

    by_id = {order_id(channel, oid): at for (channel, oid), at in first_ack.items()}
    engine = create_engine(database_url)
    latencies = []
    try:
        with engine.connect() as conn:
            ids = list(by_id)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for oid, ingested in conn.execute(sa.select(orders.c.id, orders.c.ingested_at).where(orders.c.id.in_(chunk))):
                    latencies.append(max(0.0, ingested.timestamp() - by_id[oid]))
    finally:
        engine.dispose()
    return latencies


def measure_limit(source_url: str, target_url: str) -> dict[str, Any]:
    """Load exactly the rows the pipeline wrote into a fresh copy of the schema, with no logic.

    PostgreSQL: COPY per table (the fastest bulk path). SQLite: one transaction of batched inserts.
    """
    source = create_engine(source_url)
    with source.connect() as conn:
        data = {table.name: [dict(row) for row in conn.execute(sa.select(table)).mappings()] for table in WRITTEN_TABLES}
        n_orders = len(data["orders"])
    source.dispose()
    migrate.upgrade(target_url)
    target = create_engine(target_url)
    try:
        started = time.perf_counter()
        if target.dialect.name == "postgresql":
            raw = target.raw_connection()
            try:
                with raw.cursor() as cursor:
                    for table in WRITTEN_TABLES:
                        rows = data[table.name]
                        columns = [c.name for c in table.columns]
                        with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                            for row in rows:
                                copy.write_row([_pg_value(row[c]) for c in columns])
                raw.commit()
            finally:
                raw.close()
        else:
            with target.begin() as conn:
                for table in WRITTEN_TABLES:
                    if data[table.name]:
                        conn.execute(table.insert(), data[table.name])
        seconds = time.perf_counter() - started
    finally:
        target.dispose()
    return {"orders": n_orders, "seconds": seconds, "orders_per_s": n_orders / seconds if seconds else float("inf")}


def _pg_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return value


def wait_streams_confirmed(sim_url: str, timeout: float) -> float:
    """Seconds until every message the simulator queued on its streams (淘宝 TMC, 拼多多 PMC) was
    taken by OrderHub's connections, kept and confirmed."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        streams = httpx.get(f"{sim_url}/_sim/stats", timeout=30).json().get("streams", {})
        if all(s["unconfirmed"] == 0 for s in streams.values()):
            return time.perf_counter() - started
        time.sleep(0.1)
    raise TimeoutError(f"stream messages still unconfirmed after {timeout}s")
