"""拼多多 end to end against the simulator: PMC over a real WebSocket, the router over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tenacity import wait_fixed

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.pdd import PddChannel
from orderhub.config import ShopSettings
from orderhub.demo.shops import DEMO_SHOPS, demo_shop
from orderhub.domain.errors import FetchError
from orderhub.domain.status import Status
from orderhub.simulator import model as m
from orderhub.simulator import pdd as sim_pdd
from orderhub.simulator.app import Simulator, serve_in_background

OTHER_MALL = {"channel": "pdd", "shop_id": "100000002", "name": "拼多多二号店", "app_key": "fakeclientid0002",
              "app_secret": "another-fake-secret", "extra": {"access_token": "fake-pdd-access-token-0002"}}
FAST_PMC = {"backoff_min_s": 0.05, "backoff_max_s": 0.2, "heartbeat_s": 0.5}
EXPECTED_STATUS = {m.PAID: Status.PAID, m.SHIPPED: Status.SHIPPED, m.COMPLETED: Status.COMPLETED,
                   m.CANCELLED: Status.CANCELLED}


@pytest.fixture
async def platform():
    sim = Simulator(seed=11, shops=[*DEMO_SHOPS, OTHER_MALL])
    sim.streams.redeliver_after_s = 0.5  # the platform redelivers unconfirmed messages (10 s by default)
    handle = await serve_in_background("127.0.0.1", 0, sim)
    async with httpx.AsyncClient(timeout=10) as http:
        yield sim, handle, http
    await handle.stop()


def shop_for(port: int, shop: dict[str, Any] | None = None, **extra: Any) -> ShopConfig:
    settings = dict(shop or demo_shop("pdd"))
    settings["extra"] = {**settings["extra"], **extra}
    return ShopSettings(**settings, api_base_url=f"http://127.0.0.1:{port}/pdd").to_shop()


class FakeSink:
    """The intake's StreamSink in memory: keeps bodies, records connection states, fails on request."""

    def __init__(self, fail_once: set[int] | None = None) -> None:
        self.kept: list[tuple[str | None, bytes, dict[str, Any]]] = []
        self.attempts: Counter[int] = Counter()
        self.states: list[tuple[str, str | None]] = []
        self.fail_once = set(fail_once or ())

    async def keep(self, channel: str, shop_id: str | None, body: bytes, meta: dict[str, Any]) -> None:
        assert channel == "pdd"
        await asyncio.sleep(0.001)  # a commit takes a moment
        self.attempts[meta["message_id"]] += 1
        if meta["message_id"] in self.fail_once:
            self.fail_once.discard(meta["message_id"])
            raise RuntimeError("inbox unavailable")
        self.kept.append((shop_id, body, meta))

    def connection(self, channel: str, app_key: str, state: str, detail: str | None = None) -> None:
        self.states.append((state, detail))

    def kept_ids(self) -> set[int]:
        return {meta["message_id"] for _, _, meta in self.kept}

    def connected(self) -> int:
        return sum(state == "connected" for state, _ in self.states)


@contextlib.asynccontextmanager
async def streaming(channel: PddChannel, http: httpx.AsyncClient, shop: ShopConfig, sink: FakeSink):
    task = asyncio.create_task(channel.run(http, [shop], sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish(sim: Simulator, count: int, **mix: Any) -> tuple[list[m.SimOrder], set[int]]:
    """Generate orders; their PMC messages go onto the app's stream, as the platform queues them."""
    result = sim.generate(count, ["pdd"], mix=mix or None)
    for push in result.pushes:
        await sim.pusher.deliver(push, "")
    return result.orders, {push.message_id for push in result.pushes}


async def drained(sim: Simulator, app_key: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while sim.streams.backlog("pdd", app_key):
            await asyncio.sleep(0.02)


def assert_matches(normalized, order: m.SimOrder) -> None:
    assert normalized.status is EXPECTED_STATUS[order.status]
    a = normalized.amounts
    assert (a.goods, a.discount, a.shipping, a.paid) == (order.goods, order.discount_shop + order.discount_platform,
                                                         order.post_amount, order.paid)
    assert (a.discount_shop, a.discount_platform) == (order.discount_shop, order.discount_platform)
    assert sorted((line.sku, line.qty, line.unit_price, line.gift, line.platform_sku_id) for line in normalized.lines) == sorted(
        (line.sku.code, line.qty, line.unit_price, line.gift, line.sku.pdd_sku_id) for line in order.lines)
    assert int(normalized.created_at.timestamp()) == order.create_time
    assert int(normalized.paid_at.timestamp()) == order.pay_time
    assert int(normalized.updated_at.timestamp()) == order.update_time
    if order.shipment is not None and order.status in (m.SHIPPED, m.COMPLETED):
        assert normalized.shipment.waybill_no == order.shipment.tracking_no


async def test_every_message_is_kept_then_acknowledged_and_its_order_fetched_equals_the_platforms(platform):
    sim, handle, http = platform
    shop, sink, channel = shop_for(handle.port), FakeSink(), PddChannel(pmc_options=FAST_PMC)
    orders, message_ids = await publish(sim, 60)
    async with streaming(channel, http, shop, sink):
        await drained(sim, shop.app_key)
    assert sink.kept_ids() == message_ids  # every message kept, and only acked ones left the stream
    assert {shop_id for shop_id, _, _ in sink.kept} == {"100000001"}
    assert {meta["app_key"] for _, _, meta in sink.kept} == {shop.app_key}
    assert sim.stats()["streams"][f"pdd/{shop.app_key}"]["confirmed"] == len(message_ids)

    messages = [message for _, body, _ in sink.kept for message in channel.parse_push(body)]
    assert all(message.event_time is not None and message.shop_id == "100000001" for message in messages)
    assert {message.original_id for message in messages} == {o.original_id for o in orders}

    found = await channel.fetch_orders(http, shop, sorted({msg.original_id for msg in messages}) + ["250101-000"])
    assert set(found) == {o.original_id for o in orders}
    for order in orders:
        assert_matches(channel.normalize(found[order.original_id], shop), order)
    assert {o.status for o in orders} >= {m.PAID, m.SHIPPED, m.COMPLETED}


async def test_a_pull_over_several_hours_reads_every_30_minute_span_and_page(platform):
    sim, handle, http = platform
    shop, channel = shop_for(handle.port), PddChannel(page_size=20)
    orders = sim.generate(200, ["pdd"], mix={"spread_s": 4 * 3600}).orders
    start = datetime.fromtimestamp(min(o.update_time for o in orders), UTC) - timedelta(seconds=1)
    end = datetime.fromtimestamp(max(o.update_time for o in orders), UTC) + timedelta(seconds=1)
    assert end - start > timedelta(hours=2)
    raws = await channel.pull_window(http, shop, start, end)
    assert sorted(raw["order_sn"] for raw in raws) == sorted(o.original_id for o in orders)
    by_id = {o.original_id: o for o in orders}
    for raw in raws:
        assert_matches(channel.normalize(raw, shop), by_id[raw["order_sn"]])


async def test_drop_and_down_lead_to_reconnection_and_nothing_is_lost(platform):
    sim, handle, http = platform
    shop, sink, channel = shop_for(handle.port), FakeSink(), PddChannel(pmc_options=FAST_PMC)
    published: set[int] = set()
    async with streaming(channel, http, shop, sink):
        _, ids = await publish(sim, 10)
        published |= ids
        await drained(sim, shop.app_key)

        sim.faults.set("pdd", "drop", 2)  # open connections are closed once
        _, ids = await publish(sim, 10)
        published |= ids
        await drained(sim, shop.app_key)
        assert sink.connected() >= 2

        sim.faults.set("pdd", "down", 1.0)  # closed, and refused for a second
        _, ids = await publish(sim, 10)
        published |= ids
        await drained(sim, shop.app_key)
    assert sink.kept_ids() == published
    details = [detail or "" for state, detail in sink.states if state == "disconnected"]
    assert any("HTTP 503" in detail for detail in details)
    assert sink.connected() >= 3


async def test_a_message_whose_keep_failed_is_redelivered_and_kept(platform):
    sim, handle, http = platform
    shop, channel = shop_for(handle.port), PddChannel(pmc_options=FAST_PMC)
    _, ids = await publish(sim, 10)
    failing = set(sorted(ids)[:3])
    sink = FakeSink(fail_once=failing)
    async with streaming(channel, http, shop, sink):
        await drained(sim, shop.app_key)
    assert sink.kept_ids() == ids
    assert all(sink.attempts[message_id] >= 2 for message_id in failing)


async def test_decrypt_returns_the_plaintext_and_another_mall_is_refused(platform):
    sim, handle, http = platform
    shop, channel = shop_for(handle.port), PddChannel()
    orders = sim.generate(5, ["pdd"]).orders
    found = await channel.fetch_orders(http, shop, [o.original_id for o in orders])
    pii = [(o.original_id, channel.normalize(found[o.original_id], shop).pii) for o in orders]
    plain = await channel.decrypt(http, shop, pii, ("phone", "name", "address_detail"))
    for order in orders:
        assert plain[order.original_id] == {"phone": order.customer.phone, "name": order.customer.name,
                                            "address_detail": order.address.detail}
    other = shop_for(handle.port, OTHER_MALL)
    assert await channel.decrypt(http, other, pii, ("phone",)) == {}
    stranger = replace(shop, extra={"access_token": "not-a-token"})
    with pytest.raises(FetchError) as info:
        await channel.decrypt(http, stranger, pii, ("phone",))
    assert info.value.retryable is False and "re-authorised" in info.value.message


async def test_after_a_token_revoke_the_refresh_token_keeps_the_shop_working(platform):
    sim, handle, http = platform
    orders = sim.generate(3, ["pdd"]).orders
    sim.revoke_tokens("pdd")
    refreshing = shop_for(handle.port, refresh_token=sim_pdd.refresh_token_for(demo_shop("pdd")))
    found = await PddChannel().fetch_orders(http, refreshing, [o.original_id for o in orders])
    assert set(found) == {o.original_id for o in orders}
    with pytest.raises(FetchError) as info:
        await PddChannel().fetch_orders(http, replace(shop_for(handle.port), extra={"access_token": "fake-pdd-access-token-0001"}),
                                        [orders[0].original_id])
    assert info.value.retryable is False and "re-authorised" in info.value.message


async def test_rate_limits_and_outages_are_retried_until_the_platform_answers(platform):
    sim, handle, http = platform
    shop = shop_for(handle.port)
    orders = sim.generate(3, ["pdd"]).orders
    for mode in ("rate_limit", "down"):
        sim.faults.set("pdd", mode, 0.3)
        with pytest.raises(FetchError) as info:
            await PddChannel(attempts=1).fetch_orders(http, shop, [orders[0].original_id])
        assert info.value.retryable is True
        patient = PddChannel(attempts=10, retry_wait=wait_fixed(0.1))
        assert set(await patient.fetch_orders(http, shop, [orders[0].original_id])) == {orders[0].original_id}


async def test_a_wrong_secret_is_refused_on_the_router_and_on_the_message_socket(platform):
    sim, handle, http = platform
    orders = sim.generate(2, ["pdd"]).orders
    wrong = replace(shop_for(handle.port), app_secret="not-the-secret")
    with pytest.raises(FetchError) as info:
        await PddChannel().fetch_orders(http, wrong, [orders[0].original_id])
    assert info.value.retryable is False and "20004" in info.value.message
    sink = FakeSink()
    async with streaming(PddChannel(pmc_options=FAST_PMC), http, wrong, sink):
        async with asyncio.timeout(5):
            while not any(state == "disconnected" for state, _ in sink.states):
                await asyncio.sleep(0.02)
    assert sink.connected() == 0
    assert any("HTTP 401" in (detail or "") for state, detail in sink.states if state == "disconnected")
