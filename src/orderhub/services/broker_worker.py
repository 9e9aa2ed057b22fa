"""A worker of scaled mode: takes its share of the broker's partitions and turns their messages
into inbox rows and orders.

Per batch of one partition, in order:
1. decode every message; one that is not an envelope is dead-lettered at once (with a quarantine
   row naming the reason);
2. insert the batch as inbox rows keyed by the message's key, leased to this worker — a
   redelivered message finds its row and adds nothing (exactly once into the inbox);
3. ack the batch (the rows are committed: the database owns them now);
4. process the new rows through the same pipeline as embedded mode. Should that fail or the worker
   die, the rows' lease expires and any worker's inbox sweep takes them.

When the insert fails, the batch is delivered again later; a message that keeps failing on its
own while the database answers goes to the dead-letter subject after `max_deliveries`.

Partitions are leased (adapters/db/leases.py): every worker heartbeats, counts the live workers and
holds ceil(partitions / workers) of them, releasing extras when more workers join and taking
over those whose holder stopped renewing. A lease also elects the one worker that runs the
fleet's singleton duties (pulls, stock sync, tracking sweeps, the lag watcher).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.broker.envelope import Envelope
from orderhub.adapters.broker.transport import Consumption, Delivery, Transport
from orderhub.adapters.db import leases
from orderhub.adapters.db.inbox import insert_keyed
from orderhub.adapters.db.tables import quarantine
from orderhub.domain.errors import ErrorCode

log = logging.getLogger(__name__)

SINGLETON = "duty:singleton"


def partition_lease(partition: int) -> str:
    return f"partition:{partition}"


@dataclass
class WorkerStats:
    batches: int = 0
    messages: int = 0
    duplicates: int = 0  # redeliveries whose row was there already
    dead_lettered: int = 0
    retried: int = 0
    partitions: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "messages": self.messages, "duplicates": self.duplicates,
                "dead_lettered": self.dead_lettered, "retried": self.retried, "partitions": self.partitions}


class BrokerWorker:
    def __init__(
        self, engine: sa.Engine, transport: Transport, processor: Any, *, lease_s: float = 15.0, max_deliveries: int = 8,
        on_batch: Callable[[], None] | None = None, on_duty: Callable[[bool], None] | None = None, worker_id: str | None = None,
    ) -> None:
        self.engine = engine
        self.transport = transport
        self.processor = processor
        self.lease = timedelta(seconds=lease_s)
        self.max_deliveries = max_deliveries
        self.on_batch = on_batch  # wake the audit
        self.on_duty = on_duty  # the singleton duties were taken (True) or lost (False)
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.started_at = datetime.now(UTC)
        self.stats = WorkerStats()
        self.consuming: dict[int, Consumption] = {}
        self.singleton = False
        self._stopping = False
        # lease work on a thread of its own: in the default pool it queued behind the batches' database
        # calls, and under CPU starvation the renewals came after the leases had run out (seen in bench-peak)
        self._lease_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orderhub-leases")

    async def _leases(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._lease_thread, functools.partial(fn, *args))

    # -- the lease loop ---------------------------------------------------------------------

    async def run(self) -> None:
        names = [partition_lease(p) for p in range(self.transport.partitions)] + [SINGLETON]
        await self._leases(leases.ensure, self.engine, names)
        try:
            while True:
                try:
                    await self.rebalance()
                except asyncio.CancelledError:
                    raise
                except Exception:  # the database is away: keep consuming what we hold until the leases lapse
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():  # a client library turned our cancellation into its error
                        raise asyncio.CancelledError from None
                    log.exception("worker %s could not renew its leases", self.id)
                await asyncio.sleep(self.lease.total_seconds() / 3)
        finally:
            await self.shutdown()

    async def rebalance(self) -> None:
        now = datetime.now(UTC)
        await self._leases(
            leases.heartbeat, self.engine, self.id, socket.gethostname(), os.getpid(), self.started_at, now, self.stats.as_dict()
        )
        live = await self._leases(leases.live_workers, self.engine, now, self.lease)
        share = math.ceil(self.transport.partitions / max(1, len(live)))
        held_names = [partition_lease(p) for p in self.consuming]
        still = await self._leases(leases.renew, self.engine, held_names, self.id, now, self.lease)
        for partition in [p for p in self.consuming if partition_lease(p) not in still]:
            if await self._leases(leases.acquire, self.engine, partition_lease(partition), self.id, now, self.lease):
                continue  # it ran out, but nobody took it: ours again, consumption never stopped
            log.warning("worker %s lost partition %d to another worker", self.id, partition)
            await self._stop_partition(partition)
        extra = sorted(self.consuming)[share:]
        for partition in extra:  # another worker joined: hand these over
            await self._stop_partition(partition)
        await self._leases(leases.release, self.engine, [partition_lease(p) for p in extra], self.id)
        if len(self.consuming) < share:
            await self._take(share - len(self.consuming), now)
        await self._duty(now)
        self.stats.partitions = sorted(self.consuming)

    async def _take(self, wanted: int, now: datetime) -> None:
        # start at a different partition per worker, so joining workers do not all race for 0, 1, 2 …
        n = self.transport.partitions
        start = hash(self.id) % n
        for partition in ((start + i) % n for i in range(n)):
            if wanted <= 0:
                return
            if partition in self.consuming:
                continue
            if await self._leases(leases.acquire, self.engine, partition_lease(partition), self.id, now, self.lease):
                self.consuming[partition] = await self.transport.consume(partition, self.id, self._handler(partition))
                wanted -= 1

    async def _duty(self, now: datetime) -> None:
        held = await self._leases(leases.acquire, self.engine, SINGLETON, self.id, now, self.lease)
        if held != self.singleton:
            self.singleton = held
            log.info("worker %s %s the singleton duties", self.id, "took" if held else "lost")
            if self.on_duty is not None:
                self.on_duty(held)

    async def _stop_partition(self, partition: int) -> None:
        consumption = self.consuming.pop(partition, None)
        if consumption is not None:
            await consumption.stop()

    async def shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for partition in list(self.consuming):
            await self._stop_partition(partition)
        try:
            await self._leases(leases.forget_worker, self.engine, self.id)
        except Exception:  # the leases expire by themselves
            log.warning("worker %s could not release its leases", self.id)
        self._lease_thread.shutdown(wait=False)

    # -- one batch ------------------------------------------------------------------------

    def _handler(self, partition: int) -> Callable[[list[Delivery]], Any]:
        async def handle(deliveries: list[Delivery]) -> None:
            await self.handle(partition, deliveries)

        return handle

    async def handle(self, partition: int, deliveries: list[Delivery]) -> None:
        good: list[tuple[Delivery, Envelope]] = []
        for d in deliveries:
            try:
                good.append((d, Envelope.decode(d.data)))
            except ValueError as exc:
                await self._dead_letter(d, None, f"not an OrderHub envelope: {exc}")
        if not good:
            return
        try:
            rows = await asyncio.to_thread(insert_keyed, self.engine, [_row(env) for _, env in good], self.processor.lease)
        except Exception as exc:
            await self._failed_insert(good, exc)
            return
        await self.transport.ack([d for d, _ in good])
        self.stats.batches += 1
        self.stats.messages += len(rows)
        self.stats.duplicates += len(good) - len(rows)
        if rows:
            await self._process(rows, f"a batch of partition {partition}")
            if self.on_batch is not None:
                self.on_batch()

    async def _process(self, rows: list[Any], what: str) -> None:
        try:
            await self.processor.process(rows)
        except asyncio.CancelledError:
            raise
        except Exception:  # leased rows: the inbox sweep of any worker retries them after the lease
            log.exception("processing %s failed; the inbox sweep retries it", what)

    async def _failed_insert(self, good: list[tuple[Delivery, Envelope]], exc: Exception) -> None:
        if not await asyncio.to_thread(_database_answers, self.engine):
            log.warning("database unreachable (%s): %d messages will be delivered again", exc, len(good))
            self.stats.retried += len(good)
            await self.transport.retry([d for d, _ in good], 2.0)
            return
        # the database answers, so something in the batch is refused: find it message by message
        for d, env in good:
            try:
                rows = await asyncio.to_thread(insert_keyed, self.engine, [_row(env)], self.processor.lease)
            except Exception as single:
                if d.attempts >= self.max_deliveries:
                    await self._dead_letter(d, env, f"refused by the database {d.attempts} times: {single}")
                else:
                    self.stats.retried += 1
                    await self.transport.retry([d], 2.0)
                continue
            await self.transport.ack([d])
            if rows:
                await self._process(rows, "a message")

    async def _dead_letter(self, d: Delivery, env: Envelope | None, reason: str) -> None:
        log.error("dead-lettering a message after %d deliveries: %s", d.attempts, reason)
        self.stats.dead_lettered += 1
        try:  # visible and replayable in the quarantine (API / CLI) when the database takes it
            await asyncio.to_thread(_quarantine_dead_letter, self.engine, env, d.data, reason)
        except Exception:
            log.exception("could not record the dead letter in the quarantine; it is on the dead-letter subject")
        await self.transport.dead_letter(d, reason)


def _row(env: Envelope) -> dict[str, Any]:
    return {"channel": env.channel, "shop_id": env.shop_id, "kind": env.kind, "received_at": env.received_at,
            "body": env.body, "meta": env.meta, "broker_key": env.key}


def _database_answers(engine: sa.Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except Exception:
        return False


def _quarantine_dead_letter(engine: sa.Engine, env: Envelope | None, data: bytes, reason: str) -> None:
    with engine.begin() as conn:
        conn.execute(quarantine.insert().values(
            channel=env.channel if env else "broker", shop_id=env.shop_id if env else None,
            item_kind="message" if env and env.kind == "message" else "body", code=ErrorCode.BROKER_DEAD_LETTER.value,
            message=reason[:2000], payload=env.body if env else data, created_at=datetime.now(UTC),
        ))
