"""A 2,000-order simulated run through the real stack: every scenario ends up in the stored data.

The simulator serves the platforms' open APIs with real signing and pushes signed messages;
OrderHub receives them over real HTTP, fetches details, pulls JD and stores canonical orders.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from orderhub.adapters.db import inventory_repo
from orderhub.adapters.db.tables import inbox, order_events, order_lines, orders, quarantine, reservations, stock, sync_cursors
from orderhub.bootstrap import Runtime
from orderhub.config import Settings, ShopSettings
from orderhub.demo.catalogue import REMOTE_PROVINCES, customers
from orderhub.demo.shops import DEMO_SHOPS
from orderhub.domain.ids import order_id
from orderhub.entrypoints.api.app import create_app
from orderhub.entrypoints.serve import seed_demo_catalogue
from orderhub.simulator.app import Simulator, serve_in_background
from orderhub.simulator.scenarios import CHANNELS
from auth_helpers import api_key_headers
from orderhub.domain.access import Role
from servers import QuietServer, listening_socket

ORDERS = 2000

pytestmark = pytest.mark.slow


@pytest.fixture
async def stack(database_url):
    sim = Simulator(seed=424242)
    sim_server = await serve_in_background("127.0.0.1", 0, sim)
    sock = listening_socket()
    hub_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(
        database_url=database_url,
        pull_interval_s=0.5,
        pull_lookback_s=7 * 86400,
        shops=[ShopSettings(**shop, api_base_url=f"http://127.0.0.1:{sim_server.port}/{shop['channel']}") for shop in DEMO_SHOPS],
    )
    runtime = Runtime(settings)
    seed_demo_catalogue(runtime.engine)  # the audit runs too: catalogue, listings and opening stock
    server = QuietServer(uvicorn.Config(create_app(runtime), log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sim, runtime, hub_url
    finally:
        server.should_exit = True
        await task
        await sim_server.stop()


async def settle(runtime: Runtime, hub_url: str, expected: int, timeout: float = 60.0) -> None:
    async with httpx.AsyncClient(base_url=hub_url) as client:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            health = (await client.get("/api/v1/health")).json()
            with runtime.engine.connect() as conn:
                stored = conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
                pending = conn.execute(sa.select(sa.func.count()).select_from(orders).where(orders.c.audit_state == "pending")).scalar_one()
            if health["backlog"] == 0 and stored >= expected and pending == 0:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"only {stored} of {expected} orders stored, backlog {health['backlog']}")


async def play_in_rounds(sim: Simulator, runtime: Runtime, hub_url: str, count: int) -> list:
    """Play every order's timeline one event per round, letting OrderHub catch up between rounds.

    That is how a platform's events reach a merchant in real life (a cancel comes seconds after
    the payment was already stored). A planned duplicate is sent twice in its round; a planned
    late push is sent only after the order's next push has been processed (out of order).
    """
    start = sim.clock.now() - 30 * 86400  # whole timelines lie in the past, as in a replay of history
    plans = [sim.plan(channels=["douyin", "youzan"], start=start + n) for n in range(count)]
    held: dict[str, object] = {}
    announced: set[str] = set()  # orders the platform has pushed at least once
    for step in range(max(len(p.events) for p in plans)):
        now, late = [], []
        for plan in plans:
            if step >= len(plan.events):
                continue
            order, event = plan.order, plan.events[step]
            push = sim.apply(order, event)
            if push is None:
                continue
            is_last = step == len(plan.events) - 1
            if order.extra.get("late") == event.kind and not is_last:
                held[order.original_id] = push
                continue
            now.append(push)
            announced.add(order.original_id)
            if order.extra.get("duplicate") == step:
                now.append(push)
            if order.original_id in held:
                late.append(held.pop(order.original_id))
        for wave in (now, late):
            if wave:
                delivery = await sim.pusher.deliver_all(wave, hub_url)
                assert delivery["failed"] == 0, delivery
                await settle(runtime, hub_url, len(announced))
    return [plan.order for plan in plans]


async def test_a_2000_order_simulated_run_stores_every_scenario_once_and_at_its_newest_state(stack):
    sim, runtime, hub_url = stack
    pushed = await play_in_rounds(sim, runtime, hub_url, 1400)
    # JD has no push: its orders are pulled by modified-time window. The simulator writes their
    # history in the past, so the shop is connected afresh: its first sync reads the lookback window.
    pulled = [o for o in sim.generate(600, channels=["jd"]).orders if o.visible]
    with runtime.engine.begin() as conn:
        conn.execute(sa.delete(sync_cursors))
    visible = pushed + pulled
    await settle(runtime, hub_url, len(visible), timeout=120.0)  # the 600 JD orders come from one first sync of a 7-day window

    with runtime.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(orders))}
        lines = conn.execute(sa.select(order_lines)).all()
        events = conn.execute(sa.select(order_events.c.order_id, order_events.c.kind, order_events.c.from_status, order_events.c.to_status)).all()
        outcomes = Counter(conn.execute(sa.select(inbox.c.outcome)).scalars())
        quarantined = conn.execute(sa.select(quarantine.c.code, quarantine.c.message)).all()

    # nothing lost, nothing duplicated, nothing quarantined from a well-behaved platform
    assert quarantined == []
    assert set(rows) == {order_id(o.channel, o.original_id) for o in visible}
    # every order is stored at the platform's newest state (no out-of-order rollback)
    for o in visible:
        assert int(rows[order_id(o.channel, o.original_id)].updated_at.timestamp()) == o.update_time, (o.channel, o.original_id, o.scenarios)

    by_order_lines: dict[str, list] = {}
    for line in lines:
        by_order_lines.setdefault(line.order_id, []).append(line)
    kinds = Counter(e.kind for e in events)
    found = {
        "multi_sku": sum(1 for ls in by_order_lines.values() if sum(not line.gift for line in ls) >= 2),
        "gift": sum(1 for line in lines if line.gift),
        "shop_and_platform_discount": sum(1 for r in rows.values() if (r.discount_shop or 0) > 0 and (r.discount_platform or 0) > 0),
        "shipping_fee": sum(1 for r in rows.values() if r.shipping > 0),
        "remote_province": sum(1 for r in rows.values() if r.address["province"] in REMOTE_PROVINCES),
        "buyer_message": sum(1 for r in rows.values() if r.buyer_message),
        "cancelled_after_payment": sum(1 for e in events if e.kind == "status" and e.from_status in ("paid", "on_hold", "ready") and e.to_status == "cancelled"),
        "closed_unpaid": sum(1 for e in events if e.kind == "status" and e.from_status == "pending_payment" and e.to_status == "closed"),
        "address_change": kinds["address_changed"],
        "refund": kinds["refund"],
        "shipped_with_waybill": sum(1 for r in rows.values() if r.shipment and r.shipment["waybill_no"]),
        "duplicate_push": outcomes["unchanged"],
        "out_of_order": outcomes["stale"],
        "every_channel": len({r.channel for r in rows.values()}),
    }
    audited = Counter(r.status for r in rows.values() if r.rule_version)
    found.update(audited_ready=audited["ready"], audited_on_hold=audited["on_hold"],
                 remote_area_warned=sum(1 for r in rows.values() if "remote_area" in (r.tags or [])))
    missing = [name for name, n in found.items() if n == 0]
    assert not missing, f"scenarios not found in the stored data: {missing} ({found})"
    assert found["every_channel"] == 3
    # the audit: nothing left waiting, stock reserved exactly for the orders that are ready, never oversold
    assert [r.id for r in rows.values() if r.audit_state == "pending"] == []
    with runtime.engine.connect() as conn:
        assert inventory_repo.check_invariant(conn) == []
        reserved = {oid for oid, in conn.execute(sa.select(reservations.c.order_id).where(reservations.c.status == "active").distinct())}
        oversold = conn.execute(sa.select(sa.func.count()).select_from(stock).where(stock.c.reserved > stock.c.on_hand)).scalar_one()
    assert reserved == {oid for oid, r in rows.items() if r.status == "ready"}
    assert oversold == 0
    # money invariants hold for every stored order and its lines
    for oid, r in rows.items():
        assert r.paid == r.goods - r.discount + r.shipping
        assert sum(line.paid for line in by_order_lines[oid]) == r.paid - r.shipping


async def test_every_channel_arrives_over_its_own_transport_buyers_match_and_logs_hold_no_plaintext(stack, caplog):
    """All six platforms at once: webhooks (抖店, 有赞, encrypted 视频号小店), message streams
    (淘宝 TMC, 拼多多 PMC) and pulls (京东, 快手), with duplicates and out-of-order pushes."""
    caplog.set_level(logging.DEBUG)  # whatever any module logs, at any level
    sim, runtime, hub_url = stack
    result = sim.generate(700, channels=list(CHANNELS))
    delivery = await sim.pusher.deliver_all(result.pushes, hub_url)
    assert delivery["failed"] == 0, delivery
    visible = [o for o in result.orders if o.visible]
    with runtime.engine.begin() as conn:  # the pull shops connect afresh: their first sync reads the lookback
        conn.execute(sa.delete(sync_cursors))
    await settle(runtime, hub_url, len(visible), timeout=120.0)

    with runtime.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(orders))}
        quarantined = conn.execute(sa.select(quarantine.c.code, quarantine.c.message)).all()
    assert quarantined == []
    assert set(rows) == {order_id(o.channel, o.original_id) for o in visible}
    assert {r.channel for r in rows.values()} == set(CHANNELS)
    for o in visible:
        assert int(rows[order_id(o.channel, o.original_id)].updated_at.timestamp()) == o.update_time, (o.channel, o.scenarios)
    assert all(sim.streams.backlog(ch, sim.shop(ch)["app_key"]) == 0 for ch in ("taobao", "pdd"))  # every message confirmed

    # one customer across channels: the same demo buyer's orders on phone-decrypting channels share a customer
    by_buyer: dict[int, set[str]] = defaultdict(set)
    seen: dict[int, list] = defaultdict(list)
    for o in visible:
        row = rows[order_id(o.channel, o.original_id)]
        if row.phone_hash is not None:  # the platform decrypted the buyer's phone (not for unpaid 视频号 orders)
            by_buyer[o.customer.index].add(row.customer_id)
            seen[o.customer.index].append((o.channel, row.status, row.pii_state, row.customer_id))
    split = {i: seen[i] for i, ids in by_buyer.items() if len(ids) > 1}
    assert by_buyer and not split, split
    async with httpx.AsyncClient(base_url=hub_url, headers=api_key_headers(runtime.engine, Role.OPS)) as client:
        buyer = next(o.customer for o in visible if o.channel == "pdd")
        found = (await client.get("/api/v1/orders", params={"phone_last4": buyer.phone[-4:], "limit": 200})).json()["items"]
        channels = (await client.get("/api/v1/channels")).json()
        customer = (await client.get(f"/api/v1/customers/{found[0]['customer']['id']}")).json()
    same_phone = {o.original_id for o in visible if o.customer.phone[-4:] == buyer.phone[-4:] and o.channel != "jd" and o.channel != "youzan" and o.channel != "kuaishou"}
    assert same_phone <= {f["original_id"] for f in found}
    assert len(customer["channels"]) >= 2
    assert {c["channel"]: c["state"] for c in channels} == {ch: "connected" for ch in CHANNELS}, channels

    text = caplog.text
    leaked = [c.phone for c in customers() if c.phone in text] + [c.name for c in customers() if len(c.name) > 1 and c.name in text]
    assert not leaked, leaked[:5]


async def test_outages_show_on_the_channels_page_and_every_order_arrives_once_they_end(stack):
    """淘宝's message service down, 快手 answering 429, 视频号's tokens revoked: the merchant sees
    it per shop, and once the platforms recover every order made meanwhile is there, once."""
    sim, runtime, hub_url = stack

    async def states(client: httpx.AsyncClient) -> dict[str, tuple[str, str | None]]:
        return {c["channel"]: (c["state"], c["reason"]) for c in (await client.get("/api/v1/channels")).json()}

    async def wait_for(client: httpx.AsyncClient, check, timeout: float = 30.0) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            now = await states(client)
            if check(now):
                return now
            assert asyncio.get_running_loop().time() < deadline, now
            await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=hub_url, headers=api_key_headers(runtime.engine, Role.OPS)) as client:
        await wait_for(client, lambda s: s["taobao"][0] == "connected" and s["pdd"][0] == "connected")
        sim.faults.set("taobao", "down", 15.0)
        sim.faults.set("kuaishou", "rate_limit", 15.0)
        sim.revoke_tokens("wechat_channels")
        # recent history (updates within the last minute): the pull catches up from its last window
        made = sim.generate(120, channels=["taobao", "kuaishou", "wechat_channels", "douyin"], mix={"spread_s": 60})
        delivery = await sim.pusher.deliver_all(made.pushes, hub_url)
        assert delivery["failed"] == 0
        observed: dict[str, set] = defaultdict(set)

        def both_seen(now: dict) -> bool:
            for channel, (state, _) in now.items():
                observed[channel].add(state)
            return observed["taobao"] - {"connected"} != set() and "failing" in observed["kuaishou"]

        during = await wait_for(client, both_seen)
        assert during["kuaishou"][0] != "failing" or "429" in during["kuaishou"][1], during
        visible = [o for o in made.orders if o.visible]
        await settle(runtime, hub_url, len(visible), timeout=90.0)  # the platforms recover after 15 s
        await wait_for(client, lambda s: all(state == "connected" for state, _ in s.values()), timeout=30.0)

    with runtime.engine.connect() as conn:
        stored = {r.id: r.updated_at for r in conn.execute(sa.select(orders.c.id, orders.c.updated_at))}
        quarantined = conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar_one()
    assert quarantined == 0
    for o in visible:
        assert int(stored[order_id(o.channel, o.original_id)].timestamp()) == o.update_time, (o.channel, o.scenarios)
