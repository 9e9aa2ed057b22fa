"""Bad and repeated input through the real HTTP intake (and the broker): one correct order for a
message delivered five times and updates arriving newest first; 1,000 malformed and wrongly
signed pushes mixed into valid traffic, each rejected (401 + code) or quarantined with its reason,
the valid orders all stored at their newest state."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
import sqlalchemy as sa

from orderhub.adapters.broker.envelope import Envelope, partition_of
from orderhub.adapters.broker.transport import transport_for
from orderhub.adapters.db.tables import inbox, order_events, orders, quarantine
from orderhub.domain.ids import order_id
from orderhub_stack import DOUYIN, Platform, Push, Sent, Stack, accepted, assert_invariants, expected_orders, findings, wait_drained
from private_services import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

NEWEST_FIRST = ("103", "102", "101", "100")  # 抖店 tags: completed, shipped, paid, created


def processed(stack: Stack, rows: int) -> bool:
    with stack.engine.connect() as conn:
        done = conn.execute(sa.select(sa.func.count()).select_from(inbox).where(inbox.c.status == "done")).scalar_one()
    return done >= rows


async def send_one(platform: Platform, push: Push, stack: Stack, rows_after: int) -> Sent:
    """Send one push and wait until its inbox row is processed: the next one arrives after it."""
    (sent,) = await platform.send([push])
    assert sent.status == 200, sent
    await asyncio.to_thread(wait_until, lambda: processed(stack, rows_after), 60, f"{rows_after} inbox rows processed")
    return sent


@pytest.mark.parametrize("broker", ["nats", "redis", None], ids=["nats", "redis", "embedded"])
async def test_a_message_five_times_and_updates_newest_first_make_one_order_at_its_newest_state(new_stack, simulator, broker):
    stack: Stack = await asyncio.to_thread(new_stack, broker)
    sim_orders, pushes = await asyncio.to_thread(simulator.generate, 100)
    by_order: dict[str, dict[str, Push]] = {}
    for push in pushes:
        by_order.setdefault(push.original_id, {}).setdefault(push.kind, push)
    target = next(o for o in sim_orders if o.status == "completed" and set(NEWEST_FIRST) <= set(by_order[o.original_id]))
    updates = [by_order[target.original_id][tag] for tag in NEWEST_FIRST]
    await stack.start(workers=1)
    platform = Platform(stack.url)

    sent = [await send_one(platform, push, stack, n + 1) for n, push in enumerate(updates)]  # newest first, one at a time
    paid = updates[2]
    sent += await platform.send([paid] * 5)  # the platform repeats its paid push five times
    rows = len(sent)
    injected = f"{len(updates)} updates newest first (tags {', '.join(NEWEST_FIRST)}), the paid push 5 times over HTTP"
    key = None
    if broker:  # and the broker delivers one accepted message five times (a redelivery looks the same)
        transport = transport_for(stack.broker_url, 4, prefix=stack.prefix)
        await transport.start()
        try:
            env = Envelope(Envelope.new_key(), "douyin", None, "push", datetime.now(UTC), paid.body, {"app_key": DOUYIN["app_key"]})
            partition = partition_of(f"douyin:{target.original_id}", 4)
            for n in range(5):  # a publish id of its own each time: the stream's duplicate window must not hide them
                await transport.publish(partition, env.encode(), f"{env.key}-{n}")
            key = env.key
        finally:
            await transport.stop()
        rows += 1
        injected += ", the same broker envelope 5 times"
    expected = {order_id("douyin", target.original_id): target.update_time}
    await asyncio.to_thread(wait_drained, stack, 1)
    if broker:
        await asyncio.to_thread(wait_until, lambda: processed(stack, rows), 60, "the broker's five copies processed")

    oid = order_id("douyin", target.original_id)
    with stack.engine.connect() as conn:
        order = conn.execute(sa.select(orders.c.status, orders.c.updated_at, orders.c.version).where(orders.c.id == oid)).one()
        events = Counter(conn.execute(sa.select(order_events.c.kind).where(order_events.c.order_id == oid)).scalars())
        outcomes = Counter(conn.execute(sa.select(inbox.c.outcome)).scalars())
        copies = conn.execute(sa.select(sa.func.count()).select_from(inbox).where(inbox.c.broker_key == key)).scalar_one() if key else None
    found = await asyncio.to_thread(findings, stack, expected)
    print(f"\n[5x + newest first, {broker or 'embedded'}] injected {injected}")
    print(f"[5x + newest first, {broker or 'embedded'}] found {found.orders} order, status {order.status} (platform: {target.status}), "
          f"updated_at {'= newest' if int(order.updated_at.timestamp()) == target.update_time else '!= newest'}, version {order.version}, "
          f"events {dict(events)}, inbox outcomes {dict(outcomes)}" + (f", {copies} inbox row for the 5 broker copies" if key else ""))
    assert found.orders == 1 and order.status == "completed" and int(order.updated_at.timestamp()) == target.update_time
    assert "status" not in events  # never moved: the first update processed was the newest
    assert outcomes["created"] == 1 and outcomes["created"] + outcomes["stale"] + outcomes["unchanged"] == rows
    assert copies in (None, 1)
    assert_invariants(found, expected, sent, published=1 if key else 0)


# -- 1,000 bad pushes among valid traffic ---------------------------------------------------------

BAD_EACH = 200
UNKNOWN_APP = "7999999999999999999"
MALFORMED_BODIES = (
    b"this is not JSON {",
    b'{"tag": "101", "msg_id": "1", "data": "{}"}',  # an object, not the array of messages
    b'[{"tag": "101", "msg_id": "1", "data": "{\\"shop_id\\": 88880001}"}]',  # no p_id
    b'[{"tag": "101", "msg_id": "1", "data": "not json"}]',
    b"\xff\xfe\x00\x01 not even UTF-8",
)


def _sign(app_key: str, body: bytes, secret: str) -> str:
    return hashlib.md5(app_key.encode() + body + secret.encode()).hexdigest()


def bad_pushes(valid: list[Push], rng: random.Random) -> list[Push]:
    """200 each: wrong signature, no signature, unknown app (all 401), malformed body signed right,
    a signed message naming a shop nobody configured (both accepted, then quarantined)."""
    key, secret = DOUYIN["app_key"], DOUYIN["app_secret"]
    out = []
    for n in range(BAD_EACH):
        model = rng.choice(valid)
        out.append(Push(model.original_id, model.kind, {**model.headers, "event-sign": _sign(key, model.body, "wrong-secret")}, model.body,
                        reason="signature_invalid"))
        out.append(Push(model.original_id, model.kind, {k: v for k, v in model.headers.items() if k != "event-sign"}, model.body,
                        reason="signature_missing"))
        out.append(Push(model.original_id, model.kind, {**model.headers, "app-id": UNKNOWN_APP, "event-sign": _sign(UNKNOWN_APP, model.body, secret)},
                        model.body, reason="unknown_shop"))
        body = MALFORMED_BODIES[n % len(MALFORMED_BODIES)]
        out.append(Push("", "bad", {**model.headers, "event-sign": _sign(key, body, secret)}, body, reason="malformed_envelope"))
        item = orjson.loads(model.body)[0]
        data = {**orjson.loads(item["data"]), "shop_id": 99990000 + n, "p_id": 5_000_000_000_000_000_000 + n}
        body = orjson.dumps([{**item, "data": orjson.dumps(data).decode()}])
        out.append(Push(str(data["p_id"]), model.kind, {**model.headers, "event-sign": _sign(key, body, secret)}, body, reason="unknown_shop_message"))
    return out


@pytest.mark.parametrize("broker", ["nats", None], ids=["nats", "embedded"])
async def test_1000_bad_pushes_mixed_into_valid_traffic_are_rejected_or_quarantined_and_the_valid_ones_all_arrive(new_stack, simulator, broker):
    stack: Stack = await asyncio.to_thread(new_stack, broker)
    sim_orders, valid = await asyncio.to_thread(simulator.generate, 200)
    rng = random.Random(7)
    bad = bad_pushes(valid, rng)
    traffic = valid + bad
    rng.shuffle(traffic)
    await stack.start(workers=1)
    platform = Platform(stack.url, rate=300.0)
    sent = await platform.send(traffic)
    good = [s for s in sent if s.push.reason == "valid"]
    expected = expected_orders(sim_orders, good)
    await asyncio.to_thread(wait_drained, stack, len(expected))
    found = await asyncio.to_thread(findings, stack, expected)
    answers = Counter((s.push.reason, s.status, s.code) for s in sent if s.push.reason != "valid")
    with stack.engine.connect() as conn:
        reasons = conn.execute(sa.select(quarantine.c.code, quarantine.c.message, quarantine.c.field)).all()
    rejected = (stack.health().get("rejected") or {})

    print(f"\n[1,000 bad pushes, {broker or 'embedded'}] injected {len(bad)} bad among {len(valid)} valid pushes "
          f"({BAD_EACH} each: {', '.join(dict.fromkeys(p.reason for p in bad))})")
    told = ", ".join(f"{reason} {n}x {status}{' ' + code if code else ''}" for (reason, status, code), n in sorted(answers.items()))
    print(f"[1,000 bad pushes, {broker or 'embedded'}] answered: {told}; {sum(1 for s in good if s.status == 200)}/{len(valid)} valid accepted")
    print(f"[1,000 bad pushes, {broker or 'embedded'}] {found.line(len(accepted(sent)))}")
    assert answers == Counter({
        ("signature_invalid", 401, "signature_invalid"): BAD_EACH, ("signature_missing", 401, "signature_missing"): BAD_EACH,
        ("unknown_shop", 401, "unknown_shop"): BAD_EACH, ("malformed_envelope", 200, None): BAD_EACH, ("unknown_shop_message", 200, None): BAD_EACH,
    })
    assert rejected == {"douyin:signature_invalid": BAD_EACH, "douyin:signature_missing": BAD_EACH, "douyin:unknown_shop": BAD_EACH}
    assert all(message for _, message, _ in reasons)  # every quarantine row says why
    assert_invariants(found, expected, sent, quarantined=Counter({"malformed_envelope": BAD_EACH, "unknown_shop": BAD_EACH}))
