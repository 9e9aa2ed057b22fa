"""Scaled mode on real brokers (NATS JetStream and Redis Streams) and PostgreSQL: an API node
publishes, workers consume by partition lease, exactly once into the inbox, poison to the DLQ."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from broker_helpers import drop_broker_prefix
from fakes import SHOP, FakeChannel, FakePlatform, fake_registry, push_body
from orderhub.adapters.broker.envelope import Envelope, partition_of
from orderhub.adapters.db import leases
from orderhub.adapters.db.inbox import insert_keyed
from orderhub.adapters.db.tables import inbox, orders, quarantine
from orderhub.bootstrap import Runtime
from orderhub.config import BrokerSettings, Settings, ShopSettings
from orderhub.domain.ids import order_id
from orderhub.services import waybills

pytestmark = pytest.mark.postgres


def settings(database_url: str, broker_url: str, prefix: str, **broker: object) -> Settings:
    return Settings(
        audit=False, database_url=database_url, broker_url=broker_url,
        broker=BrokerSettings(partitions=4, prefix=prefix, lease_s=3.0, redeliver_s=5.0, max_deliveries=3, **broker),
        shops=[ShopSettings(channel="fake", shop_id=SHOP.shop_id, name=SHOP.name, app_key=SHOP.app_key, app_secret=SHOP.app_secret)],
    )


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def cleanup(broker_url, prefix):
    yield
    await drop_broker_prefix(broker_url, prefix)


async def push(rt: Runtime, *messages) -> None:
    body = push_body(*messages)
    await rt.intake.accept_push("fake", {"x-sign": FakeChannel.sign(body)}, body)


async def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(predicate):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def count(engine: sa.Engine, query) -> int:
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


async def test_an_api_node_publishes_and_a_worker_makes_the_order(postgres_url, broker_url, prefix, cleanup):
    platform = FakePlatform()
    api = Runtime(settings(postgres_url, broker_url, prefix), channels=fake_registry(platform))
    await api.start(workers=False)
    try:
        for n in range(20):
            platform.put(f"b{n}")
        await push(api, *({"id": f"b{n}"} for n in range(20)))
        # on the broker, not in the database: the API node needs no database for intake
        assert count(api.engine, sa.select(sa.func.count()).select_from(inbox)) == 0
        assert await api.transport.lag() == 20  # one message per order (the push was split)
        worker = Runtime(settings(postgres_url, broker_url, prefix), channels=fake_registry(platform), run_migrations=False)
        await worker.start(workers=True, streams=False)
        try:
            await wait_for(lambda: count(api.engine, sa.select(sa.func.count()).select_from(orders)) == 20)
            await wait_for(lambda: count(api.engine, sa.select(sa.func.count()).select_from(inbox).where(inbox.c.status != "done")) == 0)
            assert await api.transport.lag() == 0
            keys = count(api.engine, sa.select(sa.func.count(sa.distinct(inbox.c.broker_key))))
            assert keys == 20
            assert sorted(worker.broker_worker.consuming) == [0, 1, 2, 3]
            assert worker.broker_worker.singleton
        finally:
            await worker.stop()
    finally:
        await api.stop()


async def test_the_same_message_five_times_and_updates_in_reverse_make_one_correct_order(postgres_url, broker_url, prefix, cleanup):
    platform = FakePlatform()
    rt = Runtime(settings(postgres_url, broker_url, prefix), channels=fake_registry(platform))
    await rt.start(workers=False)
    try:
        platform.put("r1", status="shipped", updated=30)  # the platform's current state
        # the updates of one order arrive newest first, and the paid one five times (same broker message)
        await push(rt, {"id": "r1", "updated": 30})
        await push(rt, {"id": "r1", "updated": 20})
        body = push_body({"id": "r1", "updated": 10})
        env = Envelope(Envelope.new_key(), "fake", SHOP.shop_id, "push", datetime.now(UTC), body)
        for _ in range(5):
            await rt.transport.publish(0, env.encode(), env.key)
        rt.start_workers()
        oid = order_id("fake", "r1")
        await wait_for(lambda: count(rt.engine, sa.select(sa.func.count()).select_from(orders).where(orders.c.id == oid)) == 1)
        await wait_for(lambda: count(rt.engine, sa.select(sa.func.count()).select_from(inbox).where(inbox.c.status != "done")) == 0)
        with rt.engine.connect() as conn:
            assert conn.execute(sa.select(orders.c.status).where(orders.c.id == oid)).scalar_one() == "shipped"
            assert conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one() == 1
            # the five deliveries of one broker message became one inbox row
            assert conn.execute(sa.select(sa.func.count()).select_from(inbox).where(inbox.c.broker_key == env.key)).scalar_one() == 1
    finally:
        await rt.stop()


async def test_a_poison_message_goes_to_the_dead_letter_stream_and_the_quarantine(postgres_url, broker_url, prefix, cleanup):
    platform = FakePlatform()
    rt = Runtime(settings(postgres_url, broker_url, prefix), channels=fake_registry(platform))
    await rt.start(workers=False)
    try:
        await rt.transport.publish(1, b"\x00\xffnot an envelope", uuid.uuid4().hex)
        platform.put("ok1")
        await push(rt, {"id": "ok1"})
        rt.start_workers()
        await wait_for(lambda: count(rt.engine, sa.select(sa.func.count()).select_from(quarantine).where(quarantine.c.code == "broker_dead_letter")) == 1)
        await wait_for(lambda: count(rt.engine, sa.select(sa.func.count()).select_from(orders)) == 1)  # valid traffic unaffected
        with rt.engine.connect() as conn:
            q = conn.execute(sa.select(quarantine).where(quarantine.c.code == "broker_dead_letter")).mappings().one()
        assert "not an OrderHub envelope" in q["message"] and q["payload"] == b"\x00\xffnot an envelope"
        assert rt.broker_worker.stats.dead_lettered == 1
    finally:
        await rt.stop()


async def test_two_workers_split_the_partitions_and_one_takes_all_when_the_other_stops(postgres_url, broker_url, prefix, cleanup):
    platform = FakePlatform()
    s = settings(postgres_url, broker_url, prefix)
    a = Runtime(s, channels=fake_registry(platform))
    b = Runtime(s, channels=fake_registry(platform), run_migrations=False)
    await a.start(workers=True, streams=False)
    await b.start(workers=True, streams=False)
    try:
        def split() -> bool:
            held = [len(a.broker_worker.consuming), len(b.broker_worker.consuming)]
            return sorted(held) == [2, 2]

        await wait_for(split, timeout=30)
        assert a.broker_worker.singleton != b.broker_worker.singleton  # exactly one runs the singleton duties
        await b.stop_workers()  # leaves cleanly: its leases are freed at once
        await wait_for(lambda: len(a.broker_worker.consuming) == 4, timeout=30)
        owners = {row["owner"] for row in leases.holders(a.engine) if row["name"].startswith("partition:")}
        assert owners == {a.broker_worker.id}
    finally:
        await b.stop()
        await a.stop()


def test_a_redelivered_message_finds_its_inbox_row(postgres_url):
    from orderhub.adapters.db import migrate
    from orderhub.adapters.db.engine import create_engine

    migrate.upgrade(postgres_url)
    engine = create_engine(postgres_url)
    row = {"channel": "fake", "shop_id": "s", "kind": "push", "received_at": datetime.now(UTC), "body": b"{}", "meta": None, "broker_key": "k1"}
    assert len(insert_keyed(engine, [row, {**row, "broker_key": "k2"}])) == 2
    again = insert_keyed(engine, [row, {**row, "broker_key": "k3"}])
    assert [r.id for r in again] and len(again) == 1  # k1 was there: only k3 is new
    assert count(engine, sa.select(sa.func.count()).select_from(inbox)) == 3
    engine.dispose()


async def test_the_label_gate_sees_a_cancel_still_in_the_broker_until_a_worker_has_inserted_it(postgres_url, broker_url, prefix, cleanup):
    platform = FakePlatform()
    api = Runtime(settings(postgres_url, broker_url, prefix), channels=fake_registry(platform))
    await api.start(workers=False)
    try:
        platform.put("g1", status="cancelled")
        before = datetime.now(UTC)
        await push(api, {"id": "g1"})
        mine = [("fake", "g1")]
        others = [("fake", f"x{n}") for n in range(40) if partition_of(f"fake:x{n}", 4) != partition_of("fake:g1", 4)][:3]
        arrived = await api.writer.oldest_in_broker(mine)
        assert arrived is not None and before - timedelta(seconds=1) <= arrived <= datetime.now(UTC)
        assert await api.writer.oldest_in_broker(others) is None  # other partitions hold nothing
        gate = SimpleNamespace(in_broker=api.writer.oldest_in_broker, label_wait_s=1.0)
        assert await waybills._in_broker(gate, mine, datetime.now(UTC))  # the label waits
        assert not await waybills._in_broker(gate, mine, before - timedelta(seconds=5))  # arrived after that cutoff
        worker = Runtime(settings(postgres_url, broker_url, prefix), channels=fake_registry(platform), run_migrations=False)
        await worker.start(workers=True, streams=False)
        try:
            await wait_for(lambda: count(api.engine, sa.select(sa.func.count()).select_from(inbox)) == 1)
            for _ in range(100):  # acked right after the insert commits
                if await api.writer.oldest_in_broker(mine) is None:
                    break
                await asyncio.sleep(0.05)
            assert await api.writer.oldest_in_broker(mine) is None
            assert not await waybills._in_broker(gate, mine, datetime.now(UTC))  # from here the inbox check sees it
        finally:
            await worker.stop()
    finally:
        await api.stop()
