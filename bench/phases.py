"""The benchmark's phases: intake, processing, steady-rate latency, and the same-run limit.

Also what the peak benchmark (peak.py) adds: pushes sent on a schedule by several sender
processes, each order's first audit, and the invariants checked by SQL at the end.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import httpx
import orjson
import sqlalchemy as sa

from orderhub.adapters.db import migrate
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.tables import (
    customer_channels, customer_identities, customers, inbox, order_events, order_lines, orders, reservations, stock, stock_ledger,
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


# -- the peak benchmark: scheduled senders, first audits, invariants ---------------------------


@dataclass
class Sent:
    """What the sender saw of every push, by the push's index (unix times; status -1: no answer)."""

    sent_at: list[float]
    acked_at: list[float]
    status: list[int]
    started_at: float  # t0 of the schedule
    late_s: float  # how far the senders fell behind the schedule at worst (0 when they kept up)
    cpu_s: float  # the sender processes' own CPU time


def send_scheduled(
    hub_url: str, pushes: list[Push], offsets: list[float], *, processes: int, concurrency: int, on_start: Callable[[], None] | None = None,
) -> Sent:
    """Push i leaves at t0 + offsets[i] (all 0: as fast as the senders go), each in its own HTTP
    request, from `processes` sender processes with at most `concurrency` requests in flight in all.

    One order's pushes all go through the same process, in their order. When the server answers
    slower than the schedule asks, the senders fall behind it (bounded in-flight requests) instead
    of piling up connections: `late_s` says by how much. `on_start` runs once the sender processes
    exist (start threads there, not before: the senders are forked).
    """
    shares: list[list[tuple[int, float, Push]]] = [[] for _ in range(processes)]
    for index, (push, offset) in enumerate(zip(pushes, offsets, strict=True)):
        shares[zlib.crc32(f"{push.channel}:{push.original_id}".encode()) % processes].append((index, offset, push))
    context = multiprocessing.get_context("fork")  # the shares are inherited, not pickled
    pipes, children = [], []
    for share in shares:
        mine, theirs = context.Pipe()
        child = context.Process(target=_sender_process, args=(theirs, hub_url, share, max(1, concurrency // processes)), daemon=True)
        child.start()
        pipes.append(mine)
        children.append(child)
    for pipe in pipes:
        pipe.recv()  # ready
    if on_start is not None:
        on_start()
    started_at = time.time() + 0.3
    for pipe in pipes:
        pipe.send(started_at)
    n = len(pushes)
    sent = Sent([0.0] * n, [0.0] * n, [-1] * n, started_at, 0.0, 0.0)
    for pipe in pipes:
        rows, late, cpu = pipe.recv()
        for index, at, acked, status in rows:
            sent.sent_at[index], sent.acked_at[index], sent.status[index] = at, acked, status
        sent.late_s = max(sent.late_s, late)
        sent.cpu_s += cpu
    for child in children:
        child.join(timeout=30)
    return sent


def _sender_process(pipe: Connection, hub_url: str, share: list[tuple[int, float, Push]], concurrency: int) -> None:
    pipe.send("ready")
    started_at = pipe.recv()
    try:
        import uvloop

        run: Any = uvloop.run  # less of the sender's CPU per request than the default loop
    except ImportError:
        run = asyncio.run
    rows, late = run(_send_share(hub_url, share, concurrency, started_at))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    pipe.send((rows, late, usage.ru_utime + usage.ru_stime))


async def _send_share(hub_url: str, share: list[tuple[int, float, Push]], concurrency: int, started_at: float) -> tuple[list, float]:
    rows: list[tuple[int, float, float, int]] = []
    slots = asyncio.Semaphore(concurrency)
    late = 0.0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=hub_url, connector=connector) as session:

        async def one(index: int, push: Push) -> None:
            at = time.time()
            status = -1
            try:
                async with session.post(push.path, data=push.body, headers=push.headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            finally:
                slots.release()
            rows.append((index, at, time.time(), status))

        tasks = []
        for index, offset, push in share:
            wait = started_at + offset - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await slots.acquire()
            late = max(late, time.time() - started_at - offset)
            tasks.append(asyncio.create_task(one(index, push)))
        await asyncio.gather(*tasks)
    return rows, late


def first_audits(database_url: str) -> dict[str, float]:
    """Order id -> unix time of its first audit decision (the `audited` event, written in the
    audit's transaction: ready with stock reserved, or on hold)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            query = sa.select(order_events.c.order_id, sa.func.min(order_events.c.at)).where(order_events.c.kind == "audited")
            return {oid: at.timestamp() for oid, at in conn.execute(query.group_by(order_events.c.order_id))}
    finally:
        engine.dispose()


def invariants(database_url: str, accepted_orders: set[tuple[str, str]], accepted_messages: int) -> dict[str, Any]:
    """What must hold once the backlog is drained, by SQL over what the pipeline wrote.

    `accepted_messages` is what was answered with success: the webhook requests (embedded mode:
    one inbox row each), or the broker messages they were split into (scaled mode: one inbox row
    per broker key). Each must be one inbox row, processed (done); each acknowledged order must be
    stored once; no stock row may hold more than it has, and its `reserved` must equal the sum of
    its active reservations.
    """
    from orderhub.adapters.db.inventory_repo import check_invariant
    from orderhub.domain.ids import order_id

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            platform_rows = inbox.c.kind.in_(("push", "message"))
            rows = dict(conn.execute(sa.select(inbox.c.status, sa.func.count()).where(platform_rows).group_by(inbox.c.status)).all())
            keyed = conn.execute(sa.select(sa.func.count(inbox.c.broker_key), sa.func.count(sa.distinct(inbox.c.broker_key)))).one()
            outcomes = dict(conn.execute(sa.select(inbox.c.outcome, sa.func.count()).where(platform_rows).group_by(inbox.c.outcome)).all())
            stored = set(conn.execute(sa.select(orders.c.id)).scalars())
            n_orders, n_keys = conn.execute(
                sa.select(sa.func.count(), sa.func.count(sa.distinct(orders.c.channel + ":" + orders.c.original_id)))).one()
            created = sa.select(order_events.c.order_id).where(order_events.c.kind == "created").group_by(order_events.c.order_id)
            created_twice = conn.execute(sa.select(sa.func.count()).select_from(
                created.having(sa.func.count() > 1).subquery())).scalar_one()
            r = reservations.c
            reserved_twice = conn.execute(sa.select(sa.func.count()).select_from(
                sa.select(r.order_id, r.line_no, r.package_no).where(r.status == "active")
                .group_by(r.order_id, r.line_no, r.package_no).having(sa.func.count() > 1).subquery())).scalar_one()
            oversold = conn.execute(sa.select(sa.func.count()).select_from(stock).where(stock.c.reserved > stock.c.on_hand)).scalar_one()
            drift = check_invariant(conn)
            closed_holding = conn.execute(
                sa.select(sa.func.count(sa.distinct(r.order_id))).select_from(reservations.join(orders, orders.c.id == r.order_id))
                .where(r.status == "active", orders.c.status.in_(("cancelled", "closed")))).scalar_one()
            pending_audit = conn.execute(sa.select(sa.func.count()).select_from(orders).where(orders.c.audit_state == "pending")).scalar_one()
    finally:
        engine.dispose()
    n_rows = sum(rows.values())
    done = rows.get("done", 0)
    missing_orders = {key for key in accepted_orders if order_id(*key) not in stored}
    return {
        "accepted_messages": accepted_messages,
        "inbox_rows": n_rows,
        "inbox_done": done,
        "inbox_not_done": n_rows - done,
        "broker_keys_duplicated": keyed[0] - keyed[1],
        "quarantined": outcomes.get("quarantined", 0),
        "orders_missing": len(missing_orders),
        "orders_stored": n_orders,
        "orders_duplicated": n_orders - n_keys,
        "orders_created_twice": created_twice,
        "lines_reserved_twice": reserved_twice,
        "pending_audit": pending_audit,
        # lost: an accepted message that did not end as a processed inbox row, or an acknowledged order not stored
        "lost": max(0, accepted_messages - done) + len(missing_orders),
        # duplicated: more inbox rows than accepted messages, a second row or creation for one order, a line reserved twice
        "duplicated": max(0, n_rows - accepted_messages) + (keyed[0] - keyed[1]) + (n_orders - n_keys) + created_twice + reserved_twice,
        "oversold": oversold,
        "reserved_mismatch": len(drift),
        "cancelled_holding_stock": closed_holding,
    }
