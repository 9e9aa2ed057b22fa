"""kill -9 of a worker in the middle of a batch, then a new one: nothing lost, nothing duplicated.

Scaled mode (NATS JetStream, Redis Streams): an API node publishes, two `orderhub worker`s
consume; one is killed while inbox rows of its partitions are being processed. Its partitions go
to the survivor after `broker.lease_s`, its unacked messages are delivered again after
`broker.redeliver_s` and its leased inbox rows are claimed again after `inbox_lease_s`.
Embedded mode: the one `serve` (API and workers) is killed; the platform's retries meet a
connection refused until it is started again on the same port.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import sqlalchemy as sa

from orderhub.adapters.broker.envelope import partition_of
from orderhub.adapters.db.tables import inbox, worker_leases, workers
from orderhub_stack import Platform, Stack, accepted, assert_invariants, expected_orders, findings, wait_drained

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

ORDERS = 500


def worker_id(stack: Stack, pid: int) -> str:
    with stack.engine.connect() as conn:
        return conn.execute(sa.select(workers.c.id).where(workers.c.pid == pid)).scalar_one()


def victim_rows(stack: Stack, pid: int | None) -> tuple[int, list[int]]:
    """Inbox rows being processed by the worker `pid` (rows of the partitions it leases; in embedded
    mode every processing row is the one process's), and those partitions."""
    with stack.engine.connect() as conn:
        bodies = conn.execute(sa.select(inbox.c.kind, inbox.c.body).where(inbox.c.status == "processing")).all()
        if pid is None:
            return len(bodies), []
        owner = conn.execute(sa.select(workers.c.id).where(workers.c.pid == pid)).scalar_one_or_none()
        held = [int(name.split(":")[1]) for name in conn.execute(
            sa.select(worker_leases.c.name).where(worker_leases.c.owner == owner, worker_leases.c.name.like("partition:%"))).scalars()]
    partitions = 4
    mine = [b for kind, b in bodies if kind == "message" and partition_of(f"douyin:{orjson.loads(b)['original_id']}", partitions) in held]
    return len(mine), sorted(held)


def owners(stack: Stack, partitions: list[int]) -> set[str | None]:
    with stack.engine.connect() as conn:
        return set(conn.execute(sa.select(worker_leases.c.owner).where(worker_leases.c.name.in_([f"partition:{p}" for p in partitions]))).scalars())


async def taken_over(stack: Stack, partitions: list[int], victim: str) -> float:
    """Seconds until every partition the victim held is leased by another worker."""
    started = time.monotonic()
    while True:
        held = await asyncio.to_thread(owners, stack, partitions)
        if victim not in held and None not in held:
            return time.monotonic() - started
        await asyncio.sleep(0.1)


def redelivered(stack: Stack) -> int:
    """Deliveries the live workers found already in the inbox (the killed worker's unacked batch, again)."""
    with stack.engine.connect() as conn:
        return sum((stats or {}).get("duplicates", 0) for stats in conn.execute(sa.select(workers.c.stats)).scalars())


async def wait_mid_batch(stack: Stack, platform: Platform, pid: int | None, total: int) -> tuple[int, int, list[int]]:
    """Until a third of the pushes are accepted and the victim has inbox rows in processing."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = sum(1 for _, outcome in platform.attempts if outcome == "200")
        if done >= total // 3:
            rows, held = await asyncio.to_thread(victim_rows, stack, pid)
            if rows:
                return done, rows, held
        await asyncio.sleep(0.02)
    raise AssertionError("the victim was never caught in the middle of a batch")


@pytest.mark.parametrize("broker", ["nats", "redis", None], ids=["nats", "redis", "embedded"])
async def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(new_stack, simulator, broker):
    stack: Stack = await asyncio.to_thread(new_stack, broker)
    sim_orders, pushes = await asyncio.to_thread(simulator.generate, ORDERS)
    started = await stack.start(workers=2)
    victim = started[1] if broker else started[0]
    platform = Platform(stack.url, rate=200.0)
    sending = asyncio.create_task(platform.send(pushes))

    done, rows, held = await wait_mid_batch(stack, platform, victim.pid if broker else None, len(pushes))
    victim_id = await asyncio.to_thread(worker_id, stack, victim.pid) if broker else None
    await asyncio.to_thread(victim.kill9)
    killed_at = time.time()
    takeover = asyncio.create_task(taken_over(stack, held, victim_id)) if broker else None
    replacement = await asyncio.to_thread(stack.start_worker if broker else stack.start_embedded)
    sent = await sending
    expected = expected_orders(sim_orders, sent)
    drain_s = await asyncio.to_thread(wait_drained, stack, len(expected))
    found = await asyncio.to_thread(findings, stack, expected)

    mode = broker or "embedded"
    if broker:
        after = f"its partitions {held} leased by the others {await takeover:.1f} s later, {await asyncio.to_thread(redelivered, stack)} " \
                "redelivered messages found in the inbox already"
    else:
        after = f"started again (pid {replacement.pid}) on the same port; {platform.outage(killed_at)}"
    print(f"\n[kill -9 worker, {mode}] killed pid {victim.pid} with {rows} inbox rows of its own in processing after {done}/{len(pushes)} "
          f"pushes accepted; {after}; {len(accepted(sent))}/{len(pushes)} accepted ({sum(s.refused for s in sent)} refused and retried); "
          f"drained {drain_s:.1f} s after the last push")
    print(f"[kill -9 worker, {mode}] {found.line(len(accepted(sent)))}")
    assert len(accepted(sent)) == len(pushes)
    assert_invariants(found, expected, sent)
