"""The pipeline on a real database (SQLite and PostgreSQL), with an in-memory platform."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from fakes import SHOP, FakeChannel, FakePlatform, fake_registry, push_body
from orderhub.adapters.db import migrate, queries
from orderhub.adapters.db.tables import inbox, order_events, order_lines, orders, quarantine
from orderhub.bootstrap import Runtime
from orderhub.config import Settings, ShopSettings
from orderhub.domain.errors import FetchError, SignatureError
from orderhub.domain.ids import order_id
from orderhub.services.quarantine import replay


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform()


@pytest.fixture
async def runtime(database_url, platform):
    settings = Settings(
        audit=False,  # these tests look at intake and processing on their own
        database_url=database_url,
        shops=[ShopSettings(channel="fake", shop_id=SHOP.shop_id, name=SHOP.name, app_key=SHOP.app_key, app_secret=SHOP.app_secret)],
        max_attempts=3,
    )
    rt = Runtime(settings, channels=fake_registry(platform))
    await rt.start(workers=False)
    yield rt
    await rt.stop()


async def push(rt: Runtime, *messages) -> bytes:
    body = push_body(*messages)
    reply, _ = await rt.intake.accept_push("fake", {"x-sign": FakeChannel.sign(body)}, body)
    return reply


def scalar(rt: Runtime, query):
    with rt.engine.connect().execution_options(readonly=True) as conn:
        return conn.execute(query).scalar_one()


def rows(rt: Runtime, query):
    with rt.engine.connect().execution_options(readonly=True) as conn:
        return conn.execute(query).mappings().all()


async def test_the_schema_matches_the_code_after_alembic_upgrade(database_url):
    migrate.upgrade(database_url)
    migrate.check(database_url)  # raises if a table or index differs


async def test_a_push_is_acknowledged_stored_and_becomes_a_canonical_order(runtime, platform):
    platform.put("1001")
    assert await push(runtime, {"id": "1001"}) == b'{"code":0,"msg":"success"}'
    assert scalar(runtime, sa.select(sa.func.count()).select_from(inbox).where(inbox.c.status == "pending")) == 1
    await runtime.drain()
    oid = order_id("fake", "1001")
    with runtime.engine.connect() as conn:
        order = queries.get_order(conn, oid)
    assert order["status"] == "paid"
    assert order["amounts"] == {"goods": 14970, "discount": 1500, "discount_shop": 1500, "discount_platform": 0, "shipping": 0, "paid": 13470}
    assert sum(line["paid"] for line in order["lines"]) == 13470
    assert order["created_at"].endswith("+08:00")
    assert order["customer"]["id"] and order["customer"]["channels"] == ["fake"]
    events = rows(runtime, sa.select(order_events).where(order_events.c.order_id == oid))
    assert [(e["kind"], e["to_status"], e["actor"]) for e in events] == [("created", "paid", "platform:fake")]


async def test_duplicate_pushes_make_one_order_and_change_nothing(runtime, platform):
    platform.put("1002")
    for _ in range(3):
        await push(runtime, {"id": "1002"})
    await push(runtime, {"id": "1002"}, {"id": "1002"})
    await runtime.drain()
    assert scalar(runtime, sa.select(sa.func.count()).select_from(orders)) == 1
    assert scalar(runtime, sa.select(orders.c.version)) == 1
    assert scalar(runtime, sa.select(sa.func.count()).select_from(order_events)) == 1
    outcomes = sorted(r["outcome"] for r in rows(runtime, sa.select(inbox.c.outcome)))
    assert outcomes == ["created", "unchanged", "unchanged", "unchanged"]


async def test_a_message_older_than_the_stored_order_is_answered_stale_without_a_fetch(runtime, platform):
    platform.put("1003", status="cancelled", updated=30)
    await push(runtime, {"id": "1003", "updated": 30})
    await runtime.drain()
    calls = platform.fetch_calls
    await push(runtime, {"id": "1003", "updated": 0})  # the paid message, delivered late
    await runtime.drain()
    assert platform.fetch_calls == calls
    assert scalar(runtime, sa.select(orders.c.status)) == "cancelled"
    assert "stale" in [r["outcome"] for r in rows(runtime, sa.select(inbox.c.outcome))]


async def test_a_later_change_updates_the_order_and_logs_it(runtime, platform):
    platform.put("1004")
    await push(runtime, {"id": "1004"})
    await runtime.drain()
    platform.put("1004", status="cancelled", updated=25, detail="新地址***")
    await push(runtime, {"id": "1004", "updated": 25})
    await runtime.drain()
    oid = order_id("fake", "1004")
    kinds = [(e["kind"], e["from_status"], e["to_status"]) for e in rows(runtime, sa.select(order_events).where(order_events.c.order_id == oid).order_by(order_events.c.id))]
    assert kinds == [("created", None, "paid"), ("status", "paid", "cancelled"), ("address_changed", None, None)]
    assert scalar(runtime, sa.select(orders.c.version)) == 2
    assert scalar(runtime, sa.select(sa.func.count()).select_from(order_lines)) == 2


async def test_a_wrong_signature_is_refused_and_nothing_is_stored(runtime):
    body = push_body({"id": "1005"})
    with pytest.raises(SignatureError) as info:
        await runtime.intake.accept_push("fake", {"x-sign": "0" * 32}, body)
    assert info.value.code.value == "signature_invalid"
    assert scalar(runtime, sa.select(sa.func.count()).select_from(inbox)) == 0
    assert runtime.intake.rejected[("fake", "signature_invalid")] == 1


async def test_a_signed_body_that_is_not_the_envelope_is_kept_in_quarantine(runtime):
    body = b"<xml>not json</xml>"
    reply, _ = await runtime.intake.accept_push("fake", {"x-sign": FakeChannel.sign(body)}, body)
    assert reply == b'{"code":0,"msg":"success"}'
    await runtime.drain()
    (item,) = rows(runtime, sa.select(quarantine))
    assert item["code"] == "malformed_envelope" and item["item_kind"] == "body" and item["payload"] == body


async def test_an_order_that_cannot_be_normalised_is_quarantined_and_replayable_after_a_fix(runtime, platform):
    platform.put("1006", bad=True)
    await push(runtime, {"id": "1006"})
    await runtime.drain()
    (item,) = rows(runtime, sa.select(quarantine))
    assert (item["code"], item["field"], item["original_id"]) == ("unknown_status", "status", "1006")
    # replaying before the fix quarantines it again, with the reason
    again = await replay(runtime.processor, item["id"])
    assert again["result"] == "quarantined"
    assert again["new_quarantine"][0]["code"] == "unknown_status"
    # the platform data is fixed (or the mapping is): replay succeeds
    platform.put("1006")
    fixed = await replay(runtime.processor, again["new_quarantine"][0]["id"])
    assert fixed["result"] == "processed" and fixed["outcomes"] == {"created": 1}
    assert scalar(runtime, sa.select(orders.c.status)) == "paid"


async def test_a_failing_platform_api_is_retried_with_backoff_then_quarantined(runtime, platform):
    platform.put("1007")
    platform.fail_with = FetchError("HTTP 503 from the platform")
    await push(runtime, {"id": "1007"})
    await runtime.drain()
    row = rows(runtime, sa.select(inbox))[0]
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["next_attempt_at"] is not None and "503" in row["error"]
    # the retry is due later; make it due now, twice more, and it runs out of attempts
    for _ in range(2):
        with runtime.engine.begin() as conn:
            conn.execute(sa.update(inbox).values(next_attempt_at=None))
        await runtime.drain()
    (item,) = rows(runtime, sa.select(quarantine))
    assert item["code"] == "fetch_failed" and item["item_kind"] == "message"
    platform.fail_with = None
    assert (await replay(runtime.processor, item["id"]))["result"] == "processed"


async def test_two_workers_on_one_inbox_never_duplicate_an_order(runtime, platform, database_url):
    for n in range(60):
        platform.put(str(2000 + n % 20), updated=n // 20)
        await push(runtime, {"id": str(2000 + n % 20)})
    other = Runtime(runtime.settings, channels=runtime.channels, run_migrations=False)
    runtime.processor.batch_size = other.processor.batch_size = 7
    try:
        await asyncio.gather(runtime.drain(), other.drain())
    finally:
        await other.stop()
    assert scalar(runtime, sa.select(sa.func.count()).select_from(orders)) == 20
    assert scalar(runtime, sa.select(sa.func.count()).select_from(inbox).where(inbox.c.status != "done")) == 0
    assert scalar(runtime, sa.select(sa.func.count()).select_from(order_lines)) == 40


async def test_a_push_received_well_before_the_stored_snapshot_was_read_needs_no_fetch(runtime, platform):
    platform.put("1008")
    await push(runtime, {"id": "1008"})
    await push(runtime, {"id": "1008"})  # the same change announced twice, e.g. create and pay
    with runtime.engine.begin() as conn:  # both arrived a minute before the workers got to them
        received = conn.execute(sa.select(inbox.c.id, inbox.c.received_at).order_by(inbox.c.id)).all()
        for inbox_id, at in received:
            conn.execute(sa.update(inbox).where(inbox.c.id == inbox_id).values(received_at=at - timedelta(minutes=1)))
    runtime.processor.batch_size = 1  # one message per batch: the second sees what the first stored
    await runtime.drain()
    assert platform.fetch_calls == 1
    assert [r["outcome"] for r in rows(runtime, sa.select(inbox.c.outcome).order_by(inbox.c.id))] == ["created", "stale"]
    assert scalar(runtime, sa.select(orders.c.snapshot_at)) is not None
