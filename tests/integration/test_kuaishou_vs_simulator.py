"""The 快手 adapter against the simulator over real HTTP: pulls, fetches, token expiry, outages, catch-up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import sqlalchemy as sa

from orderhub.adapters.channels.http_common import backoff
from orderhub.adapters.channels.kuaishou import KuaishouChannel
from orderhub.adapters.channels.registry import ChannelRegistry
from orderhub.adapters.db.tables import inbox, orders, quarantine, sync_cursors
from orderhub.bootstrap import Runtime
from orderhub.config import Settings, ShopSettings
from orderhub.demo.shops import demo_shop
from orderhub.domain.errors import FetchError
from orderhub.domain.order import RefundStatus
from orderhub.domain.status import Status, platform_view
from orderhub.simulator import model as m
from orderhub.simulator.app import Simulator, serve_in_background
from orderhub.simulator.clock import FixedClock

NOW = 1742263920 + 30 * 86400
CHANNEL = "kuaishou"
STATUS = {m.UNPAID: Status.PENDING_PAYMENT, m.PAID: Status.PAID, m.SHIPPED: Status.SHIPPED,
          m.COMPLETED: Status.COMPLETED, m.CANCELLED: Status.CANCELLED, m.CLOSED: Status.CLOSED}
REFUND = {m.NO_REFUND: RefundStatus.NONE, m.REFUNDING: RefundStatus.REFUNDING, m.REFUNDED: RefundStatus.REFUNDED}


def adapter(**kwargs) -> KuaishouChannel:
    return KuaishouChannel(retry_wait=backoff(0.001, 0.005), **kwargs)


def shop_for(port: int, **extra):
    shop = demo_shop(CHANNEL)
    settings = ShopSettings(**{**shop, "extra": {**shop["extra"], **extra}}, api_base_url=f"http://127.0.0.1:{port}/{CHANNEL}")
    return settings.to_shop()


@pytest.fixture
async def world():
    sim = Simulator(seed=17, clock=FixedClock(NOW))
    handle = await serve_in_background("127.0.0.1", 0, sim)
    async with httpx.AsyncClient(timeout=10) as http:
        yield sim, handle, http
    await handle.stop()


def moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def assert_same_order(normalized, order: m.SimOrder) -> None:
    """What OrderHub read equals what the platform holds: status, money, the line, times, buyer."""
    assert normalized.original_id == order.original_id
    assert normalized.status is STATUS[order.status]
    amounts = normalized.amounts
    assert (amounts.goods, amounts.discount, amounts.shipping, amounts.paid) == (
        order.goods, order.discount_shop + order.discount_platform, order.post_amount, order.paid)
    (line,) = normalized.lines
    (sim_line,) = order.lines
    assert (line.sku, line.qty, line.unit_price, line.paid, line.platform_sku_id, line.refund_status) == (
        sim_line.sku.code, sim_line.qty, sim_line.unit_price, sim_line.paid, sim_line.sku.kuaishou_sku_id, REFUND[sim_line.refund])
    assert int(normalized.updated_at.timestamp()) == order.update_time
    assert int(normalized.created_at.timestamp()) == order.create_time
    assert normalized.buyer.platform_buyer_id == order.customer.kuaishou_open_id
    assert order.customer.phone not in str(normalized.buyer) and normalized.pii.keys() == {"phone", "name", "address_detail"}
    if order.shipment is not None:
        assert normalized.shipment.waybill_no == order.shipment.tracking_no


# ---------------------------------------------------------------- pulling and fetching


async def test_a_multi_hour_pull_returns_every_order_once_equal_to_the_platform(world):
    sim, handle, http = world
    generated = {o.original_id: o for o in sim.generate(180, channels=[CHANNEL]).orders}
    first, last = min(o.update_time for o in generated.values()), max(o.update_time for o in generated.values())
    assert last - first > 3 * 3600  # the window spans hours
    channel, shop = adapter(), shop_for(handle.port)
    raws = await channel.pull_window(http, shop, moment(first), moment(last + 1))
    assert len(raws) == len(generated) > 50  # every order, once, over several pages
    for raw in raws:
        normalized = channel.normalize(raw, shop)
        assert_same_order(normalized, generated[normalized.original_id])


async def test_the_window_end_is_exclusive(world):
    sim, handle, http = world
    generated = sim.generate(60, channels=[CHANNEL]).orders
    cut = sorted(o.update_time for o in generated)[30]
    raws = await adapter().pull_window(http, shop_for(handle.port), moment(cut - 86400), moment(cut))
    assert {str(r["orderBaseInfo"]["oid"]) for r in raws} == {o.original_id for o in generated if o.update_time < cut}


async def test_a_pull_over_more_than_seven_days_is_split_and_misses_nothing(world):
    sim, handle, http = world
    generated = sim.generate(40, channels=[CHANNEL]).orders
    last = max(o.update_time for o in generated)
    raws = await adapter().pull_window(http, shop_for(handle.port), moment(last - 10 * 86400), moment(last + 1))
    assert sorted(str(r["orderBaseInfo"]["oid"]) for r in raws) == sorted(o.original_id for o in generated)


async def test_orders_fetched_by_number_match_the_platform_and_unknown_numbers_are_absent(world):
    sim, handle, http = world
    generated = {o.original_id: o for o in sim.generate(30, channels=[CHANNEL]).orders}
    channel, shop = adapter(concurrency=4), shop_for(handle.port)
    found = await channel.fetch_orders(http, shop, [*generated, "2199999999999999"])
    assert found.keys() == generated.keys()
    for order_id, raw in found.items():
        assert_same_order(channel.normalize(raw, shop), generated[order_id])


async def test_a_wrong_sign_secret_is_refused_by_the_platform_and_not_retried(world):
    sim, handle, http = world
    order = sim.generate(1, channels=[CHANNEL]).orders[0]
    shop = shop_for(handle.port, sign_secret="not-the-sign-secret")
    with pytest.raises(FetchError) as info:
        await adapter().fetch_orders(http, shop, [order.original_id])
    assert info.value.retryable is False and "签名" in info.value.message


# ---------------------------------------------------------------- token expiry


async def test_an_expired_token_without_a_refresh_token_tells_the_merchant_to_reauthorise(world):
    sim, handle, http = world
    order = sim.generate(1, channels=[CHANNEL]).orders[0]
    channel, shop = adapter(), shop_for(handle.port)
    assert await channel.fetch_orders(http, shop, [order.original_id])
    sim.revoke_tokens(CHANNEL)
    with pytest.raises(FetchError) as info:
        await channel.fetch_orders(http, shop, [order.original_id])
    assert info.value.retryable is False
    assert "re-authorise" in info.value.message and "no refresh token" in info.value.message


async def test_an_expired_token_is_refreshed_and_the_call_succeeds():
    shop_row = demo_shop(CHANNEL)
    shops = [dict(shop_row, extra={**shop_row["extra"], "refresh_token": "fake-kuaishou-refresh-0001"})]
    sim = Simulator(seed=3, clock=FixedClock(NOW), shops=shops)
    handle = await serve_in_background("127.0.0.1", 0, sim)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            order = sim.generate(1, channels=[CHANNEL]).orders[0]
            channel = adapter()
            shop = shop_for(handle.port, refresh_token="fake-kuaishou-refresh-0001")
            sim.revoke_tokens(CHANNEL)
            assert list(await channel.fetch_orders(http, shop, [order.original_id])) == [order.original_id]
            sim.revoke_tokens(CHANNEL)  # the refreshed token expires too: the rotated refresh token is used
            assert list(await channel.fetch_orders(http, shop, [order.original_id])) == [order.original_id]
    finally:
        await handle.stop()


# ---------------------------------------------------------------- outages


@pytest.mark.parametrize("mode", ["down", "rate_limit"])
async def test_an_outage_is_a_retryable_failure_and_the_next_call_after_it_succeeds(world, mode):
    sim, handle, http = world
    generated = sim.generate(20, channels=[CHANNEL]).orders
    channel, shop = adapter(), shop_for(handle.port)
    start, end = moment(min(o.update_time for o in generated)), moment(max(o.update_time for o in generated) + 1)
    sim.faults.set(CHANNEL, mode, 1.0)
    with pytest.raises(FetchError) as info:
        await channel.pull_window(http, shop, start, end)
    assert info.value.retryable is True and ("503" in info.value.message or "429" in info.value.message)
    with pytest.raises(FetchError) as info:
        await channel.fetch_orders(http, shop, [generated[0].original_id])
    assert info.value.retryable is True
    while sim.faults.active(CHANNEL) is not None:  # the outage ends by itself
        await asyncio.sleep(0.05)
    assert len(await channel.pull_window(http, shop, start, end)) == len(generated)
    assert len(await channel.fetch_orders(http, shop, [generated[0].original_id])) == 1


# ---------------------------------------------------------------- catch-up with the real Puller


def cursor_row(rt: Runtime) -> dict:
    with rt.engine.connect() as conn:
        return dict(conn.execute(sa.select(sync_cursors).where(sync_cursors.c.channel == CHANNEL)).mappings().one())


def pulled_ids(rt: Runtime) -> set[str]:
    with rt.engine.connect() as conn:
        bodies = conn.execute(sa.select(inbox.c.body).where(inbox.c.kind == "pull", inbox.c.channel == CHANNEL)).scalars().all()
    return {str(o["orderBaseInfo"]["oid"]) for body in bodies for o in orjson.loads(body)["orders"]}


async def test_the_puller_catches_up_after_an_outage_with_no_gap(tmp_path):
    clock = FixedClock(NOW)
    sim = Simulator(seed=29, clock=clock)
    handle = await serve_in_background("127.0.0.1", 0, sim)
    shop_row = demo_shop(CHANNEL)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'orderhub.db'}",
        shops=[ShopSettings(**shop_row, api_base_url=f"{handle.url}/{CHANNEL}")],
        pull_overlap_s=120, pull_lookback_s=86_400,
    )
    registry = ChannelRegistry(sources={CHANNEL: adapter()}, pull={CHANNEL})
    rt = Runtime(settings, channels=registry)
    await rt.start(workers=False)
    shop = settings.shops[0].to_shop()
    try:
        before = sim.generate(40, channels=[CHANNEL]).orders
        t0 = moment(NOW + 1)
        first = await rt.puller.pull_shop(shop, now=t0)
        assert (first.error, first.synced_until, first.orders) == (None, t0, 40)

        # An hour later the platform is down while new orders keep coming.
        clock.advance(3600)
        sim.faults.set(CHANNEL, "down", 600)
        during = sim.generate(30, channels=[CHANNEL], mix={"spread_s": 1800}).orders
        assert min(o.update_time for o in during) > NOW  # all after the stored cursor
        t1 = moment(NOW + 3601)
        failed = await rt.puller.pull_shop(shop, now=t1)
        assert failed.error is not None and "503" in failed.error
        row = cursor_row(rt)
        assert row["synced_until"] == t0  # the cursor did not move
        assert "503" in row["last_error"]
        assert pulled_ids(rt) == {o.original_id for o in before}

        # The outage ends: the next pull reads everything since the cursor.
        sim.faults.clear(CHANNEL)
        caught_up = await rt.puller.pull_shop(shop, now=t1)
        assert caught_up.error is None and caught_up.synced_until == t1
        row = cursor_row(rt)
        assert row["synced_until"] == t1 and row["last_error"] is None
        platform = {o.original_id: o for o in sim.orders(CHANNEL)}
        assert pulled_ids(rt) == set(platform)  # no gap: every platform order is in the inbox

        await rt.drain()
        with rt.engine.connect() as conn:
            stored = conn.execute(sa.select(orders.c.original_id, orders.c.status, orders.c.paid)).all()
            assert conn.execute(sa.select(sa.func.count()).select_from(quarantine)).scalar_one() == 0
        assert {row.original_id for row in stored} == set(platform)
        for row in stored:
            order = platform[row.original_id]
            assert platform_view(Status(row.status)) is STATUS[order.status]
            assert row.paid == order.paid
    finally:
        await rt.stop()
        await handle.stop()

