"""Each connector against the simulator over real HTTP: signing accepted, pages complete, bad keys refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from orderhub.adapters.channels.douyin import DouyinChannel
from orderhub.adapters.channels.jd import JdChannel
from orderhub.adapters.channels.youzan import YouzanChannel
from orderhub.config import ShopSettings
from orderhub.demo.shops import demo_shop
from orderhub.domain.errors import FetchError
from orderhub.simulator.app import Simulator, serve_in_background

ADAPTERS = {"douyin": DouyinChannel, "youzan": YouzanChannel, "jd": JdChannel}


@pytest.fixture
async def simulator():
    sim = Simulator(seed=7)
    handle = await serve_in_background("127.0.0.1", 0, sim)
    async with httpx.AsyncClient(timeout=10) as http:
        yield sim, handle, http
    await handle.stop()


def shop_for(channel: str, port: int):
    return ShopSettings(**demo_shop(channel), api_base_url=f"http://127.0.0.1:{port}/{channel}").to_shop()


@pytest.mark.parametrize("channel", ["douyin", "youzan", "jd"])
async def test_a_pull_window_over_real_http_returns_every_order_once_and_each_normalises(simulator, channel):
    sim, handle, http = simulator
    generated = [o for o in sim.generate(250, channels=[channel]).orders if o.visible]
    adapter, shop = ADAPTERS[channel](), shop_for(channel, handle.port)
    start = datetime.fromtimestamp(min(o.update_time for o in generated), UTC) - timedelta(seconds=1)
    end = datetime.fromtimestamp(max(o.update_time for o in generated), UTC) + timedelta(seconds=1)
    raws = await adapter.pull_window(http, shop, start, end)
    normalized = [adapter.normalize(raw, shop) for raw in raws]
    assert sorted(o.original_id for o in normalized) == sorted(o.original_id for o in generated)
    assert len(raws) > 100  # more than one page


@pytest.mark.parametrize("channel", ["douyin", "youzan", "jd"])
async def test_orders_fetched_by_number_over_real_http_match_the_platform(simulator, channel):
    sim, handle, http = simulator
    generated = [o for o in sim.generate(30, channels=[channel]).orders if o.visible]
    adapter, shop = ADAPTERS[channel](), shop_for(channel, handle.port)
    wanted = [o.original_id for o in generated] + ["999999999999"]
    found = await adapter.fetch_orders(http, shop, wanted)
    assert set(found) == {o.original_id for o in generated}  # an unknown number is simply absent
    for order in generated:
        normalized = adapter.normalize(found[order.original_id], shop)
        assert int(normalized.updated_at.timestamp()) == order.update_time
        assert normalized.amounts.paid == order.paid


@pytest.mark.parametrize("channel", ["douyin", "youzan", "jd"])
async def test_a_wrong_app_secret_is_refused_by_the_platform_and_not_retried(simulator, channel):
    sim, handle, http = simulator
    generated = [o for o in sim.generate(3, channels=[channel]).orders if o.visible]
    adapter = ADAPTERS[channel]()
    shop = replace(shop_for(channel, handle.port), app_secret="not-the-secret")
    with pytest.raises(FetchError) as info:
        await adapter.fetch_orders(http, shop, [generated[0].original_id])
    assert info.value.retryable is False


async def test_douyin_batch_decrypt_returns_the_buyers_phone_and_only_for_the_shops_own_orders(simulator):
    sim, handle, http = simulator
    orders = sim.generate(60, channels=["douyin"]).orders  # more than one decrypt batch of 50
    adapter, shop = DouyinChannel(), shop_for("douyin", handle.port)
    found = await adapter.fetch_orders(http, shop, [o.original_id for o in orders])
    pairs = [(oid, adapter.normalize(raw, shop).pii) for oid, raw in found.items()]
    plain = await adapter.decrypt(http, shop, pairs, ("phone", "name"))
    by_id = {o.original_id: o for o in orders}
    assert set(plain) == set(found)
    for oid, fields in plain.items():
        assert fields == {"phone": by_id[oid].customer.phone, "name": by_id[oid].customer.name}
    # a cipher presented with another order's id is refused, and so is an unknown order
    first, second = pairs[0], pairs[1]
    forged = [(second[0], first[1]), ("4999999999999999999", first[1])]
    if by_id[first[0]].customer.phone != by_id[second[0]].customer.phone:
        assert await adapter.decrypt(http, shop, forged, ("phone",)) == {}
