"""Tell a channel shop how many of each SKU it may sell, through that platform's stock-update API.

One small function per platform, each going through its adapter's own signed, token-authorised,
retried call (so signing lives in one place per platform). Every platform but 快手 takes an
absolute count; 快手 only adds or removes, so its current count is read first and the difference
sent. Methods, parameters and the [U] details: docs/platforms.md, "Stock updates".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx

from orderhub.adapters.channels.base import ShopConfig
from orderhub.domain.errors import FetchError

# The adapters' business-call helpers are private by convention (`_call`): they are used here
# on purpose, as the one place that signs and authorises each platform's requests.

CONCURRENCY = 8  # stock calls in flight per shop


@dataclass(frozen=True, slots=True)
class StockItem:
    """One listing of a merchant SKU on a channel and the sellable quantity it should show."""

    sku: str  # merchant SKU code
    platform_item_id: str  # product / num_iid / goods_id / ware id … the SKU belongs to
    platform_sku_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class PushResult:
    item: StockItem
    ok: bool
    error: str | None = None


def _int_id(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise FetchError(f"{name} {value!r} is not a number", retryable=False) from None


async def _douyin(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, item: StockItem) -> None:
    params = {"product_id": _int_id(item.platform_item_id, "product_id"), "sku_id": _int_id(item.platform_sku_id, "sku_id"),
              "stock_num": item.quantity, "incremental": False}
    await adapter._call(http, shop, "sku.syncStock", params)


async def _taobao(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, item: StockItem) -> None:
    params = {"num_iid": item.platform_item_id, "sku_id": item.platform_sku_id, "quantity": str(item.quantity), "type": "1"}
    await adapter._call(http, shop, "taobao.item.quantity.update", params)


async def _jd(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, item: StockItem) -> None:
    method = "jingdong.stock.write.updateSkuStock"
    node = await adapter.call(http, shop, method, {"skuId": _int_id(item.platform_sku_id, "skuId"), "stockNum": item.quantity})
    if node.get("success") is not True:
        detail = node.get("errorMessage") or node.get("message") or node
        raise FetchError(f"jd {method}: not updated: {detail}", retryable=False)


async def _pdd(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, item: StockItem) -> None:
    params = {"goods_id": item.platform_item_id, "sku_id": item.platform_sku_id, "quantity": item.quantity, "update_type": 1}
    node = await adapter._call(http, shop, "pdd.goods.quantity.update", params)
    if node.get("is_success") is False:
        raise FetchError("pdd pdd.goods.quantity.update: is_success false", retryable=False)


async def _youzan(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, item: StockItem) -> None:
    params = {"item_id": _int_id(item.platform_item_id, "item_id"), "sku_id": _int_id(item.platform_sku_id, "sku_id"),
              "quantity": item.quantity, "type": 0}
    data = await adapter._call(http, shop, ("youzan.item.quantity.update", "3.0.0"), params)
    if data.get("is_success") is False:
        raise FetchError("youzan youzan.item.quantity.update: is_success false", retryable=False)


async def _wechat_channels(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, item: StockItem) -> None:
    # diff_type 3 = 设置 (set); WxJava warns it can race with concurrent sales, as any absolute count does.
    body = {"product_id": item.platform_item_id, "sku_id": item.platform_sku_id, "diff_type": 3, "num": item.quantity}
    await adapter._call(http, shop, "/channels/ec/product/stock/update", body)


async def _kuaishou(adapter: Any, http: httpx.AsyncClient, shop: ShopConfig, item: StockItem) -> None:
    item_id, sku_id = _int_id(item.platform_item_id, "kwaiItemId"), _int_id(item.platform_sku_id, "skuId")
    # The difference from what the listing shows now, not from what OrderHub last pushed: sales
    # on 快手 lower its count too, and those same sales already lowered OrderHub's sellable.
    data = await adapter._call(http, shop, "open.item.get", {"kwaiItemId": item_id})
    skus = [s for s in data.get("skuList") or [] if isinstance(s, dict) and str(s.get("kwaiSkuId")) == str(sku_id)]
    current = skus[0].get("skuStock") if skus else None
    if isinstance(current, bool) or not isinstance(current, int):
        raise FetchError(f"kuaishou open.item.get: item {item_id} has no SKU {sku_id} with a skuStock", retryable=False)
    change = item.quantity - current
    if change:
        params = {"kwaiItemId": item_id, "skuId": sku_id, "skuChangeStock": abs(change), "changeType": 1 if change > 0 else 2}
        await adapter._call(http, shop, "open.item.sku.stock.update", params)


PUSHERS: dict[str, Callable[[Any, httpx.AsyncClient, ShopConfig, StockItem], Awaitable[None]]] = {
    "douyin": _douyin, "taobao": _taobao, "jd": _jd, "pdd": _pdd, "youzan": _youzan,
    "wechat_channels": _wechat_channels, "kuaishou": _kuaishou,
}
STOCK_CHANNELS = frozenset(PUSHERS)


def new_adapters() -> dict[str, Any]:
    """One adapter per channel with a stock API (each keeps its shops' access tokens)."""
    from orderhub.adapters.channels.registry import ChannelRegistry

    sources = ChannelRegistry.default().sources
    return {channel: sources[channel] for channel in STOCK_CHANNELS}


@cache
def _shared_adapters() -> dict[str, Any]:
    return new_adapters()


async def push_stock(
    http: httpx.AsyncClient, shop: ShopConfig, items: list[StockItem], *, adapters: Mapping[str, Any] | None = None
) -> list[PushResult]:
    """Set each item's sellable quantity on the shop's platform; one result per item, in order.

    A failed item (after the adapter's own retries) is reported, not raised, so the others still go.
    """
    push_one = PUSHERS.get(shop.channel)
    if push_one is None:
        return [PushResult(item, False, f"{shop.channel} has no stock-update API") for item in items]
    adapter = (adapters or _shared_adapters())[shop.channel]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: StockItem) -> PushResult:
        if item.quantity < 0:
            return PushResult(item, False, "a quantity below 0 cannot be pushed")
        async with gate:
            try:
                await push_one(adapter, http, shop, item)
            except FetchError as exc:
                return PushResult(item, False, exc.message)
            except Exception as exc:  # noqa: BLE001 - recorded as this item's failure, the round goes on
                return PushResult(item, False, f"{type(exc).__name__}: {exc}")
        return PushResult(item, True)

    return list(await asyncio.gather(*(one(item) for item in items)))
