"""视频号小店 end to end against the simulator over real HTTP: encrypted pushes in, orders and PII out,
and recovery from expired tokens, outages and rate limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from tenacity import wait_none

from orderhub.adapters.channels.registry import ShopRegistry
from orderhub.adapters.channels.wechat_channels import WechatChannelsChannel
from orderhub.config import ShopSettings
from orderhub.demo.shops import demo_shop
from orderhub.domain.errors import FetchError
from orderhub.domain.status import Status
from orderhub.simulator import model as m
from orderhub.simulator.app import Simulator, serve_in_background

CHANNEL = "wechat_channels"
EXPECTED_STATUS = {m.UNPAID: Status.PENDING_PAYMENT, m.PAID: Status.PAID, m.SHIPPED: Status.SHIPPED,
                   m.COMPLETED: Status.COMPLETED, m.CANCELLED: Status.CANCELLED, m.CLOSED: Status.CLOSED}


@pytest.fixture
async def world():
    sim = Simulator(seed=21)
    handle = await serve_in_background("127.0.0.1", 0, sim)
    paths: list[str] = []

    async def record(request: httpx.Request) -> None:
        paths.append(request.url.path)

    async with httpx.AsyncClient(timeout=10, event_hooks={"request": [record]}) as http:
        shop = ShopSettings(**demo_shop(CHANNEL), api_base_url=f"http://127.0.0.1:{handle.port}/{CHANNEL}").to_shop()
        yield sim, http, shop, paths
    await handle.stop()


def adapter() -> WechatChannelsChannel:
    return WechatChannelsChannel(retry_wait=wait_none())


def assert_same_order(normalized, order: m.SimOrder) -> None:
    assert normalized.status is EXPECTED_STATUS[order.status]
    a = normalized.amounts
    assert (a.goods, a.shipping, a.paid) == (order.goods, order.post_amount, order.paid)
    assert (a.discount_shop, a.discount_platform) == (order.discount_shop, order.discount_platform)
    assert int(normalized.updated_at.timestamp()) == order.update_time
    lines = [(x.sku, x.qty, x.unit_price, x.paid, x.platform_line_id) for x in normalized.lines]
    assert lines == [(x.sku.code, x.qty, x.unit_price, x.paid, x.line_id) for x in order.lines]
    assert normalized.buyer.platform_buyer_id == order.customer.wechat_unionid
    assert order.customer.phone not in (normalized.buyer.phone or "")


async def test_a_pull_window_returns_every_order_once_equal_to_the_platforms(world):
    sim, http, shop, _ = world
    generated = sim.generate(250, channels=[CHANNEL]).orders
    start = datetime.fromtimestamp(min(o.update_time for o in generated), UTC)
    end = datetime.fromtimestamp(max(o.update_time for o in generated), UTC) + timedelta(seconds=1)
    ch = adapter()
    raws = await ch.pull_window(http, shop, start, end)
    assert len(raws) == len(generated) > 100  # several list pages
    by_id = {o.original_id: o for o in generated}
    for raw in raws:
        normalized = ch.normalize(raw, shop)
        assert_same_order(normalized, by_id.pop(normalized.original_id))
    assert not by_id


async def test_encrypted_pushes_authenticate_and_name_the_orders_to_fetch(world):
    sim, http, shop, _ = world
    generated = sim.generate(20, channels=[CHANNEL])
    ch, shops = adapter(), ShopRegistry([shop])
    named: dict[str, str] = {}
    for push in generated.pushes:
        query = dict(parse_qsl(urlsplit(push.path).query))
        auth = ch.authenticate(push.headers, push.body, shops, query)
        assert auth.shop_id == shop.shop_id
        (message,) = ch.parse_push(auth.body)
        assert (message.shop_id, message.original_id, message.kind) == (shop.shop_id, push.order_id, push.kind)
        named[message.original_id] = message.kind
    found = await ch.fetch_orders(http, shop, [*named, "3799999999999999999"])
    assert set(found) == set(named) == {o.original_id for o in generated.orders}
    for order in generated.orders:
        assert_same_order(ch.normalize(found[order.original_id], shop), order)


async def test_decrypt_returns_the_receiver_of_paid_orders_only(world):
    sim, http, shop, _ = world
    generated = sim.generate(30, channels=[CHANNEL]).orders
    ch = adapter()
    found = await ch.fetch_orders(http, shop, [o.original_id for o in generated])
    normalized = [ch.normalize(found[o.original_id], shop) for o in generated]
    plain = await ch.decrypt(http, shop, [(n.original_id, n.pii) for n in normalized], ("phone", "name", "address_detail"))
    paid = {o.original_id: o for o in generated if o.pay_time}
    assert set(plain) == set(paid) and paid
    for order_id, fields in plain.items():
        customer = paid[order_id].customer
        assert fields == {"phone": customer.phone, "name": customer.name, "address_detail": paid[order_id].address.detail}


async def test_after_the_tokens_are_revoked_a_new_one_is_fetched_and_the_call_succeeds(world):
    sim, http, shop, paths = world
    order = sim.generate(1, channels=[CHANNEL]).orders[0]
    ch = adapter()
    assert order.original_id in await ch.fetch_orders(http, shop, [order.original_id])
    assert sim.revoke_tokens(CHANNEL) == 1
    paths.clear()
    assert order.original_id in await ch.fetch_orders(http, shop, [order.original_id])
    order_get, token = f"/{CHANNEL}/channels/ec/order/get", f"/{CHANNEL}/cgi-bin/token"
    assert paths == [order_get, token, order_get]  # refused with 42001, a new token, the call again


@pytest.mark.parametrize("fault", ["down", "rate_limit"])
async def test_an_outage_is_a_retryable_failure_then_calls_succeed_again(world, fault):
    sim, http, shop, _ = world
    order = sim.generate(1, channels=[CHANNEL]).orders[0]
    ch = WechatChannelsChannel(attempts=2, retry_wait=wait_none())
    assert order.original_id in await ch.fetch_orders(http, shop, [order.original_id])  # token in hand
    sim.faults.set(CHANNEL, fault, 60)
    with pytest.raises(FetchError) as err:
        await ch.fetch_orders(http, shop, [order.original_id])
    assert err.value.retryable is True
    sim.faults.clear(CHANNEL)
    assert order.original_id in await ch.fetch_orders(http, shop, [order.original_id])


async def test_a_wrong_app_secret_is_refused_and_not_retried(world):
    sim, http, shop, paths = world
    order = sim.generate(1, channels=[CHANNEL]).orders[0]
    with pytest.raises(FetchError) as err:
        await adapter().fetch_orders(http, replace(shop, app_secret="not-the-secret"), [order.original_id])
    assert err.value.retryable is False
    assert paths == [f"/{CHANNEL}/cgi-bin/token"]
