"""淘宝/天猫 over the real transports against the simulator: TMC WebSocket frames and signed TOP calls."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from tenacity import wait_fixed

from orderhub.adapters.channels.taobao import TaobaoChannel
from orderhub.adapters.channels.taobao_tmc import TmcSettings
from orderhub.config import ShopSettings
from orderhub.demo.shops import DEMO_SHOPS, demo_shop
from orderhub.domain.errors import FetchError
from orderhub.domain.order import NormalizedOrder, RefundStatus
from orderhub.domain.status import Status
from orderhub.simulator import Simulator, serve_in_background
from orderhub.simulator import model as m
from orderhub.simulator.taobao import refresh_token_for

SHOP = demo_shop("taobao")
OTHER_SHOP = {**SHOP, "shop_id": "2200000002", "name": "天猫二店", "extra": {"access_token": "fake-taobao-session-0002"}}
FAST = TmcSettings(heartbeat_s=5.0, pull_interval_s=1.0, backoff_initial_s=0.05, backoff_max_s=0.4)
STATUS = {m.UNPAID: Status.PENDING_PAYMENT, m.PAID: Status.PAID, m.SHIPPED: Status.SHIPPED,
          m.COMPLETED: Status.COMPLETED, m.CANCELLED: Status.CANCELLED, m.CLOSED: Status.CLOSED}
REFUND = {m.NO_REFUND: RefundStatus.NONE, m.REFUNDING: RefundStatus.REFUNDING, m.REFUNDED: RefundStatus.REFUNDED}


class MemorySink:
    """The intake's part as a stream client sees it: an async keep that may fail, connection reports."""

    def __init__(self, fail_once: set[int] | None = None) -> None:
        self.kept: dict[int, bytes] = {}
        self.attempts: Counter[int] = Counter()
        self.states: list[tuple[str, str | None]] = []
        self._fail_once = set(fail_once or ())

    async def keep(self, channel: str, shop_id: str | None, body: bytes, meta: dict) -> None:
        assert channel == "taobao" and meta["app_key"] == SHOP["app_key"] and shop_id == SHOP["shop_id"]
        message_id = meta["message_id"]
        self.attempts[message_id] += 1
        await asyncio.sleep(0.002)  # a database commit
        if message_id in self._fail_once:
            self._fail_once.discard(message_id)
            raise RuntimeError("inbox unavailable")
        self.kept[message_id] = body

    def connection(self, channel: str, app_key: str, state: str, detail: str | None = None) -> None:
        self.states.append((state, detail))

    def count(self, state: str) -> int:
        return sum(1 for s, _ in self.states if s == state)


@pytest.fixture
async def platform():
    sim = Simulator(seed=21, shops=[*DEMO_SHOPS, OTHER_SHOP])
    sim.streams.redeliver_after_s = 0.5  # unconfirmed messages come back quickly in tests
    handle = await serve_in_background("127.0.0.1", 0, sim)
    async with httpx.AsyncClient(timeout=10) as http:
        yield sim, handle, http
    await handle.stop()


def shop_config(port: int, shop: dict = SHOP, **changes):
    config = ShopSettings(**shop, api_base_url=f"http://127.0.0.1:{port}/taobao").to_shop()
    return dataclasses.replace(config, **changes)


def publish(sim: Simulator, count: int) -> tuple[list[m.SimOrder], set[int]]:
    result = sim.generate(count, channels=["taobao"])
    for push in result.pushes:
        sim.streams.publish("taobao", push.stream_key, push.message_id, push.body, push.order_id, push.kind)
    return result.orders, {p.message_id for p in result.pushes}


async def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def backlog(sim: Simulator) -> int:
    return sim.streams.backlog("taobao", SHOP["app_key"])


async def running(channel: TaobaoChannel, http, shop, sink):
    task = asyncio.create_task(channel.run(http, [shop], sink))
    return task


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def assert_matches(normalized: NormalizedOrder, order: m.SimOrder) -> None:
    assert normalized.original_id == order.original_id and normalized.shop_id == order.shop_id
    assert normalized.status is STATUS[order.status]
    assert int(normalized.updated_at.timestamp()) == order.update_time
    amounts = normalized.amounts
    assert (amounts.goods, amounts.shipping, amounts.paid) == (order.goods, order.post_amount, order.paid)
    assert (amounts.discount_shop, amounts.discount_platform) == (order.discount_shop, order.discount_platform)
    assert [(x.sku, x.qty, x.unit_price, x.paid, x.gift, x.refund_status, x.platform_line_id) for x in normalized.lines] == [
        (x.sku.code, x.qty, x.unit_price, x.paid, x.gift, REFUND[x.refund], x.line_id) for x in order.lines]
    assert normalized.buyer.platform_buyer_id == order.customer.taobao_open_uid
    assert normalized.pii["oaid"] and order.customer.phone not in str(normalized.buyer)


# -- the TMC stream --------------------------------------------------------------------------------


async def test_every_message_is_kept_then_confirmed_and_names_an_order_equal_to_the_platforms(platform):
    sim, handle, http = platform
    orders, ids = publish(sim, 80)
    channel, shop, sink = TaobaoChannel(tmc_settings=FAST), shop_config(handle.port), MemorySink()
    task = await running(channel, http, shop, sink)
    try:
        await eventually(lambda: backlog(sim) == 0 and set(sink.kept) == ids)
    finally:
        await stop(task)
    assert sink.states[:2] == [("connecting", None), ("connected", None)] and sink.states[-1] == ("disconnected", "stopped")

    named = {push.original_id for body in sink.kept.values() for push in channel.parse_push(body)}
    assert named == {o.original_id for o in orders}
    found = await channel.fetch_orders(http, shop, sorted(named))
    for order in orders:
        assert_matches(channel.normalize(found[order.original_id], shop), order)


async def test_a_dropped_connection_is_reopened_and_nothing_is_lost(platform):
    sim, handle, http = platform
    _, first = publish(sim, 30)
    sink = MemorySink()
    task = await running(TaobaoChannel(tmc_settings=FAST), http, shop_config(handle.port), sink)
    try:
        await eventually(lambda: backlog(sim) == 0)
        sim.faults.set("taobao", "drop", 30)
        _, second = publish(sim, 30)
        await eventually(lambda: sink.count("connected") >= 2 and backlog(sim) == 0 and set(sink.kept) == first | second)
    finally:
        await stop(task)
    assert ("disconnected", "closed by the platform") in sink.states


async def test_an_outage_refuses_connections_until_it_ends_then_everything_arrives(platform):
    sim, handle, http = platform
    _, ids = publish(sim, 20)
    sim.faults.set("taobao", "down", 0.8)
    sink = MemorySink()
    task = await running(TaobaoChannel(tmc_settings=FAST), http, shop_config(handle.port), sink)
    try:
        await eventually(lambda: backlog(sim) == 0 and set(sink.kept) == ids)
        refused = [detail for state, detail in sink.states if state == "disconnected"]
        assert refused and all("403" in detail for detail in refused)  # the upgrade was refused
        # an outage also cuts an open connection; messages published meanwhile wait for the next one
        cut = sink.count("disconnected")
        sim.faults.set("taobao", "down", 0.5)
        await eventually(lambda: sink.count("disconnected") > cut)
        _, later = publish(sim, 10)
        await eventually(lambda: backlog(sim) == 0 and later <= set(sink.kept))
    finally:
        await stop(task)
    assert sink.count("connected") >= 2


async def test_a_message_whose_keep_fails_is_not_confirmed_and_comes_back(platform):
    sim, handle, http = platform
    _, ids = publish(sim, 10)
    unlucky = sorted(ids)[:3]
    sink = MemorySink(fail_once=set(unlucky))
    task = await running(TaobaoChannel(tmc_settings=FAST), http, shop_config(handle.port), sink)
    try:
        await eventually(lambda: backlog(sim) == 0 and set(sink.kept) == ids)
    finally:
        await stop(task)
    assert all(sink.attempts[i] == 2 for i in unlucky)  # refused once, redelivered, kept
    assert sim.streams.stats()[f"taobao/{SHOP['app_key']}"]["redelivered"] >= 3


async def test_a_wrong_app_secret_is_refused_at_the_handshake_and_nothing_is_taken(platform):
    sim, handle, http = platform
    publish(sim, 5)
    before = backlog(sim)
    sink = MemorySink()
    task = await running(TaobaoChannel(tmc_settings=FAST), http, shop_config(handle.port, app_secret="wrong"), sink)
    try:
        await eventually(lambda: sink.count("disconnected") >= 2)
    finally:
        await stop(task)
    assert sink.count("connected") == 0 and not sink.kept and backlog(sim) == before
    assert any("HandshakeRefused" in (detail or "") and "401" in detail for _, detail in sink.states)


# -- TOP API ---------------------------------------------------------------------------------------


async def test_a_pull_window_returns_every_trade_once_over_several_pages(platform):
    sim, handle, http = platform
    orders = sim.generate(250, channels=["taobao"]).orders
    channel, shop = TaobaoChannel(), shop_config(handle.port)
    start = datetime.fromtimestamp(min(o.update_time for o in orders), UTC)
    end = datetime.fromtimestamp(max(o.update_time for o in orders), UTC) + timedelta(seconds=1)
    raws = await channel.pull_window(http, shop, start, end)
    assert sorted(str(r["tid"]) for r in raws) == sorted(o.original_id for o in orders)
    by_id = {o.original_id: o for o in orders}
    for raw in raws:
        assert_matches(channel.normalize(raw, shop), by_id[str(raw["tid"])])


async def test_decrypt_returns_the_platforms_plaintext_and_another_shop_is_refused(platform):
    sim, handle, http = platform
    orders = sim.generate(25, channels=["taobao"]).orders
    channel, shop = TaobaoChannel(), shop_config(handle.port)
    found = await channel.fetch_orders(http, shop, [o.original_id for o in orders])
    pii = [(o.original_id, channel.normalize(found[o.original_id], shop).pii) for o in orders]
    plain = await channel.decrypt(http, shop, pii, ("phone", "name", "address_detail"))
    for order in orders:
        assert plain[order.original_id] == {"phone": order.customer.phone, "name": order.customer.name,
                                            "address_detail": order.address.detail}
    other = shop_config(handle.port, OTHER_SHOP)
    with pytest.raises(FetchError) as info:
        await channel.decrypt(http, other, pii[:1], ("phone",))
    assert info.value.retryable is False and "oaid-decrypt-forbidden" in info.value.message


async def test_a_revoked_session_needs_a_refresh_token_to_recover(platform):
    sim, handle, http = platform
    [order] = sim.generate(1, channels=["taobao"]).orders
    sim.revoke_tokens("taobao")
    with pytest.raises(FetchError) as info:
        without_refresh = {k: v for k, v in SHOP["extra"].items() if k != "refresh_token"}
        await TaobaoChannel().fetch_orders(http, shop_config(handle.port, extra=without_refresh), [order.original_id])
    assert info.value.retryable is False and "re-authorised" in info.value.message

    shop = shop_config(handle.port, extra={**SHOP["extra"], "refresh_token": refresh_token_for(SHOP)})
    found = await TaobaoChannel().fetch_orders(http, shop, [order.original_id])
    assert set(found) == {order.original_id}


async def test_rate_limits_and_outages_of_the_api_are_retried_through(platform):
    sim, handle, http = platform
    orders = sim.generate(5, channels=["taobao"]).orders
    channel = TaobaoChannel(attempts=8, retry_wait=wait_fixed(0.15))
    for mode in ("rate_limit", "down"):
        sim.faults.set("taobao", mode, 0.5)
        found = await channel.fetch_orders(http, shop_config(handle.port), [o.original_id for o in orders])
        assert set(found) == {o.original_id for o in orders}, mode


async def test_a_wrong_app_secret_is_refused_by_the_router_and_not_retried(platform):
    sim, handle, http = platform
    [order] = sim.generate(1, channels=["taobao"]).orders
    with pytest.raises(FetchError) as info:
        await TaobaoChannel().fetch_orders(http, shop_config(handle.port, app_secret="wrong"), [order.original_id])
    assert info.value.retryable is False and "Invalid signature" in info.value.message
