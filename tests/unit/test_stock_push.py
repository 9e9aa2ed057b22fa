"""Stock updates reach each platform signed as that platform expects, checked by the simulator's own end.

The requests go through OrderHub's adapters to the simulator app in-process (no network, no
database); the simulator verifies each platform's signature or token independently. A request
changed by one byte after signing must be refused, and the listing must keep its quantity.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from orderhub.adapters.channels.stock_push import StockItem, new_adapters, push_stock
from orderhub.adapters.wms.stock import HttpWmsStock, wms_signature
from orderhub.config import ShopSettings
from orderhub.demo.catalogue import sku_by_code
from orderhub.demo.shops import demo_shop
from orderhub.simulator import Simulator, create_app
from orderhub.simulator import wms as sim_wms
from orderhub.simulator.wms import DEMO_WMS_APP

CHANNELS = ["douyin", "taobao", "jd", "pdd", "youzan", "wechat_channels", "kuaishou"]
# Which catalogue attributes hold each platform's (item id, SKU id).
IDS = {
    "douyin": ("douyin_product_id", "douyin_sku_id"), "taobao": ("taobao_num_iid", "taobao_sku_id"),
    "jd": ("jd_ware_id", "jd_sku_id"), "pdd": ("pdd_goods_id", "pdd_sku_id"), "youzan": ("youzan_item_id", "youzan_sku_id"),
    "wechat_channels": ("wechat_product_id", "wechat_sku_id"), "kuaishou": ("kuaishou_item_id", "kuaishou_sku_id"),
}
# The API each platform's stock update is made through (as the simulator records it).
METHODS = {
    "douyin": "sku.syncStock", "taobao": "taobao.item.quantity.update", "jd": "jingdong.stock.write.updateSkuStock",
    "pdd": "pdd.goods.quantity.update", "youzan": "youzan.item.quantity.update",
    "wechat_channels": "/channels/ec/product/stock/update", "kuaishou": "open.item.sku.stock.update",
}


def shop_for(channel: str):
    return ShopSettings(**demo_shop(channel), api_base_url=f"http://sim/{channel}").to_shop()


def item(channel: str, sku: str = "SKU-1001", quantity: int = 7) -> StockItem:
    item_attr, sku_attr = IDS[channel]
    catalogue_sku = sku_by_code()[sku]
    return StockItem(sku, getattr(catalogue_sku, item_attr), getattr(catalogue_sku, sku_attr), quantity)


class Tamper(httpx.AsyncBaseTransport):
    """Changes one byte of every stock-update request after it was signed, then sends it on."""

    def __init__(self, inner: httpx.AsyncBaseTransport, channel: str) -> None:
        self.inner, self.channel = inner, channel
        self.tampered = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        query = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
        body = await request.aread()
        form = dict(parse_qsl(body.decode(), keep_blank_values=True)) if b"=" in body and not body.startswith(b"{") else None
        changed = _tamper(self.channel, request.url.path, query, form)
        if changed is None:
            return await self.inner.handle_async_request(request)
        self.tampered += 1
        new_query, new_form = changed
        content = urlencode(new_form).encode() if new_form is not None else body
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        forged = httpx.Request(request.method, request.url.copy_with(query=urlencode(new_query).encode()), headers=headers,
                               content=content)
        return await self.inner.handle_async_request(forged)


def _tamper(channel: str, path: str, query: dict, form: dict | None):
    """(query, form) with one byte changed if this is the channel's stock update, else None."""
    def swap(text: str, old: str, new: str) -> str:
        assert old in text, (old, text)
        return text.replace(old, new, 1)

    if channel == "douyin" and query.get("method") == "sku.syncStock":
        return {**query, "param_json": swap(query["param_json"], '"stock_num":7', '"stock_num":8')}, form
    if channel == "taobao" and form and form.get("method") == "taobao.item.quantity.update":
        return query, {**form, "quantity": swap(form["quantity"], "7", "8")}
    if channel == "jd" and form and form.get("method") == "jingdong.stock.write.updateSkuStock":
        return query, {**form, "360buy_param_json": swap(form["360buy_param_json"], '"stockNum":7', '"stockNum":8')}
    if channel == "pdd" and form and form.get("type") == "pdd.goods.quantity.update":
        return query, {**form, "quantity": swap(form["quantity"], "7", "8")}
    if channel == "kuaishou" and query.get("method") == "open.item.sku.stock.update":
        return {**query, "param": swap(query["param"], '"skuChangeStock":7', '"skuChangeStock":8')}, form
    # 有赞 and 视频号 authorise by access token alone: a token one byte off must not be accepted.
    if channel == "youzan" and "youzan.item.quantity.update" in path or channel == "wechat_channels" and path.endswith("/stock/update"):
        token = query["access_token"]
        return {**query, "access_token": token[:-1] + ("0" if token[-1] != "0" else "1")}, form
    return None


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=5)


def client(sim: Simulator, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport or httpx.ASGITransport(app=create_app(sim)), base_url="http://sim")


@pytest.mark.parametrize("channel", CHANNELS)
async def test_each_platform_takes_the_signed_update_and_its_listing_shows_the_quantity(sim, channel):
    async with client(sim) as http:
        [result] = await push_stock(http, shop_for(channel), [item(channel)], adapters=new_adapters())
    assert result.ok, result.error
    assert sim.channel_stock(channel, demo_shop(channel)["shop_id"], item(channel).platform_sku_id) == 7
    assert sim.stock_updates[-1]["via"] == METHODS[channel]
    assert sim.stock_updates[-1]["sku"] == "SKU-1001"


@pytest.mark.parametrize("channel", CHANNELS)
async def test_a_request_changed_by_one_byte_after_signing_is_refused_and_the_listing_keeps_its_quantity(sim, channel):
    tamper = Tamper(httpx.ASGITransport(app=create_app(sim)), channel)
    async with client(sim, tamper) as http:
        [result] = await push_stock(http, shop_for(channel), [item(channel)], adapters=new_adapters())
    assert tamper.tampered >= 1
    assert not result.ok
    assert any(word in result.error.lower() for word in ("signature", "签名", "access_token", "credential")), result.error
    assert sim.channel_stock(channel, demo_shop(channel)["shop_id"], item(channel).platform_sku_id) == 0
    assert not [u for u in sim.stock_updates if u["via"] == METHODS[channel]]


@pytest.mark.parametrize("channel", CHANNELS)
async def test_zero_is_pushed_as_zero_so_the_listing_stops_selling(sim, channel):
    shop_id = demo_shop(channel)["shop_id"]
    sim.set_channel_stock(channel, shop_id, item(channel).platform_sku_id, 12, via="_sim")
    async with client(sim) as http:
        [result] = await push_stock(http, shop_for(channel), [item(channel, quantity=0)], adapters=new_adapters())
    assert result.ok, result.error
    assert sim.channel_stock(channel, shop_id, item(channel).platform_sku_id) == 0


async def test_kuaishou_is_sent_the_difference_from_what_the_listing_shows_now(sim):
    # Buyers on 快手 took the listing from 20 to 10; OrderHub's sellable is 7: 3 are taken off, not 13.
    shop_id, sku_id = demo_shop("kuaishou")["shop_id"], item("kuaishou").platform_sku_id
    sim.set_channel_stock("kuaishou", shop_id, sku_id, 10, via="_sim")
    adapters = new_adapters()
    async with client(sim) as http:
        [result] = await push_stock(http, shop_for("kuaishou"), [item("kuaishou")], adapters=adapters)
        assert result.ok, result.error
        assert sim.channel_stock("kuaishou", shop_id, sku_id) == 7
        updates = len(sim.stock_updates)
        [again] = await push_stock(http, shop_for("kuaishou"), [item("kuaishou")], adapters=adapters)
    assert again.ok
    assert len(sim.stock_updates) == updates  # already 7: nothing to add or take off


async def test_an_unknown_listing_fails_alone_and_the_other_items_still_go(sim):
    bad = StockItem("SKU-1002", "3600000000001000003", "3799999999999999999", 5)
    async with client(sim) as http:
        good_result, bad_result = await push_stock(http, shop_for("douyin"), [item("douyin"), bad], adapters=new_adapters())
    assert good_result.ok
    assert not bad_result.ok and "不存在" in bad_result.error


async def test_an_outage_after_the_adapters_retries_is_a_failed_result_not_an_exception(sim):
    sim.faults.set("pdd", "down", 60)
    async with client(sim) as http:
        [result] = await push_stock(http, shop_for("pdd"), [item("pdd")], adapters=new_adapters())
    assert not result.ok and "503" in result.error


# -- the WMS's stock API --------------------------------------------------------------------------


def wms(secret: str = DEMO_WMS_APP["app_secret"], warehouses=("WH-EAST", "WH-SOUTH"), page_size=50) -> HttpWmsStock:
    return HttpWmsStock("http://sim/wms", DEMO_WMS_APP["app_key"], secret, warehouses, page_size=page_size)


async def test_the_wms_stock_is_read_page_by_page_with_a_signature_the_wms_accepts(sim):
    async with client(sim) as http:
        counts = await wms().counts(http)
    assert sorted(counts) == sorted(sim.wms.stock())
    assert len(counts) > 2 * 50  # more than one page per warehouse


async def test_a_wms_request_changed_by_one_byte_or_signed_with_another_secret_is_refused(sim):
    class OneByte(httpx.AsyncBaseTransport):
        def __init__(self, inner):
            self.inner = inner

        async def handle_async_request(self, request):
            url = request.url.copy_with(query=request.url.query.replace(b"page_size=50", b"page_size=51"))
            return await self.inner.handle_async_request(httpx.Request(request.method, url, headers=request.headers))

    async with client(sim, OneByte(httpx.ASGITransport(app=create_app(sim)))) as http:
        with pytest.raises(Exception, match="X-WMS-Signature does not match") as refused:
            await wms().counts(http)
    assert refused.value.retryable is False
    async with client(sim) as http:
        with pytest.raises(Exception, match="X-WMS-Signature does not match"):
            await wms(secret="not-the-wms-secret").counts(http)


def test_the_wms_signature_matches_the_worked_example_in_the_docs():
    query = b"page=1&page_size=200&warehouse=WH-EAST"
    expected = "5bc0c2111ac9342be2bde6bd745e522030cc57f68997dfe134e8f027739b8790"  # docs/wms.md
    assert wms_signature("fake-wms-app-secret-0001", "1742263962", query) == expected
    assert sim_wms.sign("fake-wms-app-secret-0001", "1742263962", query) == expected


async def test_a_wms_request_with_a_stale_timestamp_is_refused(sim):
    stale = HttpWmsStock("http://sim/wms", DEMO_WMS_APP["app_key"], DEMO_WMS_APP["app_secret"], clock=lambda: 1_000_000_000)
    async with client(sim) as http:
        with pytest.raises(Exception, match="X-WMS-Timestamp"):
            await stale.counts(http)
