"""Stock sync (DESIGN.md §4.3): WMS counts in, sellable quantities out to every channel shop.

`import_wms` writes the WMS's absolute on-hand counts in one transaction. `push_channels` tells
each configured shop, per mapped SKU, the sellable quantity (Σ over warehouses of available)
less that channel's buffer, floored at 0, so a SKU sold out through one channel shows 0 on all
of them. A quantity already told successfully is not sent again; a failed push is recorded as
failed (visible in `stock_pushes`) and tried again next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.registry import ShopRegistry
from orderhub.adapters.channels.stock_push import STOCK_CHANNELS, PushResult, StockItem, new_adapters, push_stock
from orderhub.adapters.db import audit_repo, inventory_repo
from orderhub.adapters.db.tables import sku_mappings, stock, stock_pushes, warehouses
from orderhub.adapters.wms.stock import StockCount, WmsStockSource
from orderhub.domain.errors import ErrorCode, OrderHubError

log = logging.getLogger(__name__)

OK, FAILED = "ok", "failed"


@dataclass(frozen=True, slots=True)
class ImportResult:
    counts: int  # (sku, warehouse) counts the WMS reported
    raised: list[tuple[str, str]]  # rows whose available went up: orders held 缺货 for them may ship now

    def as_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "raised": [{"sku": sku, "warehouse": wh} for sku, wh in self.raised]}


@dataclass(frozen=True, slots=True)
class ShopPushResult:
    channel: str
    shop_id: str
    pushed: int  # SKUs whose quantity the shop now shows
    failed: int
    unchanged: int  # SKUs already showing the right quantity: not sent


@dataclass
class PushSummary:
    pushed: int = 0
    failed: int = 0
    unchanged: int = 0
    shops: list[ShopPushResult] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # {channel, shop_id, sku, quantity, error}
    skipped: str | None = None  # why nothing was pushed at all

    def as_dict(self) -> dict[str, Any]:
        return {"pushed": self.pushed, "failed": self.failed, "unchanged": self.unchanged, "skipped": self.skipped,
                "shops": [asdict(s) for s in self.shops],
                "errors": self.errors}


@dataclass(frozen=True, slots=True)
class _Planned:
    shop: ShopConfig
    quantities: dict[str, int]  # sku -> quantity to tell
    items: list[StockItem]  # one per listing of those SKUs
    unchanged: int


class StockSync:
    """One round = `import_wms` (when a WMS is configured), then `push_channels`."""

    def __init__(
        self,
        engine: sa.Engine,
        shops: ShopRegistry,
        http: httpx.AsyncClient,
        source: WmsStockSource | None,
        buffers: Mapping[str, int],
        *,
        actor: str = "stock_sync",
        adapters: Mapping[str, Any] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.shops = shops
        self.http = http
        self.source = source
        self.buffers = {channel: max(0, int(units)) for channel, units in buffers.items()}
        self.actor = actor
        # Pass the registry's adapters to share their access tokens with intake and pulls.
        self.adapters = adapters if adapters is not None else new_adapters()
        self._clock = clock or (lambda: datetime.now(UTC))

    # -- in: WMS counts ----------------------------------------------------------------------

    async def import_wms(self, reason: str = "WMS 库存同步") -> ImportResult:
        if self.source is None:
            raise OrderHubError(ErrorCode.INVALID_REQUEST, "no WMS is configured (settings stock_sync.wms)", "stock_sync.wms")
        counts = await self.source.counts(self.http)
        return await asyncio.to_thread(self.import_counts, counts, reason)

    def import_counts(self, counts: Iterable[StockCount], reason: str = "WMS 库存同步") -> ImportResult:
        """Write absolute counts in one transaction; a warehouse may be named by code or by name."""
        counts = list(counts)
        with self.engine.begin() as conn:
            resolved = _resolve_warehouses(conn, counts)
            raised = inventory_repo.sync_on_hand(conn, resolved, actor=self.actor, reason=reason, now=self._clock())
            # orders held 缺货 for a SKU that got stock are audited again, in the same transaction
            audit_repo.requeue_short(conn, {sku for sku, _ in raised})
        return ImportResult(len(resolved), list(raised))

    # -- out: sellable quantities to the channels ----------------------------------------------

    async def push_channels(self) -> PushSummary:
        shops = sorted((s for s in self.shops.all() if s.channel in STOCK_CHANNELS and s.channel in self.adapters),
                       key=lambda s: (s.channel, s.shop_id))
        summary = PushSummary()
        if not shops:
            summary.skipped = "no configured shop has a stock-update API"
            return summary
        plans, skipped = await asyncio.to_thread(self._plan, shops)
        if skipped:
            summary.skipped = skipped
            return summary
        results = await asyncio.gather(*(push_stock(self.http, p.shop, p.items, adapters=self.adapters) for p in plans))
        now = self._clock()
        records: list[dict[str, Any]] = []
        for plan, shop_results in zip(plans, results):
            records.extend(self._outcome(plan, shop_results, now, summary))
        if records:
            await asyncio.to_thread(self._record, records)
        return summary

    async def run_once(self) -> tuple[ImportResult | None, PushSummary]:
        imported = await self.import_wms() if self.source is not None else None
        return imported, await self.push_channels()

    async def run_forever(self, interval_s: float) -> None:
        """`run_once` every `interval_s` seconds until cancelled; a failed round is logged and the next one runs.

        The first round waits too (at most a minute): at start-up the channels' API quota belongs
        to catching up on orders, not to hundreds of stock updates."""
        await asyncio.sleep(min(interval_s, 60.0))
        while True:
            try:
                imported, pushed = await self.run_once()
                if pushed.failed or (imported and imported.raised):
                    log.info("stock sync: %s counts imported, %s rows up; pushed %s, failed %s, unchanged %s",
                             imported.counts if imported else 0, len(imported.raised) if imported else 0,
                             pushed.pushed, pushed.failed, pushed.unchanged)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a periodic job must survive a WMS or database outage
                log.exception("stock sync round failed; trying again in %.0f s", interval_s)
            await asyncio.sleep(interval_s)

    # -- internals -----------------------------------------------------------------------------

    def _plan(self, shops: list[ShopConfig]) -> tuple[list[_Planned], str | None]:
        channels = sorted({s.channel for s in shops})
        with self.engine.connect().execution_options(readonly=True) as conn:
            if conn.execute(sa.select(stock.c.sku).limit(1)).first() is None:
                # Nothing was ever imported: every SKU would read 0 and every listing be taken off sale.
                return [], "no stock has been imported yet"
            listings = _listings(conn, channels)
            wanted = {sku for by_sku in listings.values() for sku in by_sku}
            sellable = inventory_repo.sellable(conn, wanted) if wanted else {}
            told = _told(conn, channels)
        plans = []
        for shop in shops:
            buffer = self.buffers.get(shop.channel, 0)
            quantities: dict[str, int] = {}
            items: list[StockItem] = []
            unchanged = 0
            for sku, found in sorted(listings.get(shop.channel, {}).items()):
                quantity = max(0, sellable.get(sku, 0) - buffer)
                if told.get((shop.channel, shop.shop_id, sku)) == (quantity, OK):
                    unchanged += 1
                    continue
                quantities[sku] = quantity
                items.extend(StockItem(sku, item_id, sku_id, quantity) for item_id, sku_id in found)
            plans.append(_Planned(shop, quantities, items, unchanged))
        return plans, None

    def _outcome(self, plan: _Planned, results: list[PushResult], now: datetime, summary: PushSummary) -> list[dict[str, Any]]:
        errors: dict[str, list[str]] = defaultdict(list)
        for result in results:
            if not result.ok:
                errors[result.item.sku].append(f"{result.item.platform_item_id}/{result.item.platform_sku_id}: {result.error}")
        records = []
        for sku, quantity in plan.quantities.items():
            error = "; ".join(errors[sku]) if sku in errors else None
            records.append({"channel": plan.shop.channel, "shop_id": plan.shop.shop_id, "sku": sku, "quantity": quantity,
                            "pushed_at": now, "status": FAILED if error else OK, "error": error})
            if error:
                summary.errors.append({"channel": plan.shop.channel, "shop_id": plan.shop.shop_id, "sku": sku,
                                       "quantity": quantity, "error": error})
        failed = len(errors)
        summary.shops.append(ShopPushResult(plan.shop.channel, plan.shop.shop_id, len(plan.quantities) - failed, failed, plan.unchanged))
        summary.pushed += len(plan.quantities) - failed
        summary.failed += failed
        summary.unchanged += plan.unchanged
        return records

    def _record(self, records: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(stock_pushes)
            upsert = insert.on_conflict_do_update(
                index_elements=[stock_pushes.c.channel, stock_pushes.c.shop_id, stock_pushes.c.sku],
                set_={name: insert.excluded[name] for name in ("quantity", "pushed_at", "status", "error")},
            )
            conn.execute(upsert, records)


def _resolve_warehouses(conn: sa.Connection, counts: list[StockCount]) -> list[StockCount]:
    """Counts with each warehouse as its code; a name (华东仓) is accepted for its code (WH-EAST)."""
    by_name: dict[str, str] = {}
    for code, name in conn.execute(sa.select(warehouses.c.code, warehouses.c.name)):
        by_name[code] = code
        by_name.setdefault(name, code)
    unknown = sorted({wh for _, wh, _ in counts if wh not in by_name})
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" … (+{len(unknown) - 10})" if len(unknown) > 10 else "")
        raise OrderHubError(ErrorCode.INVALID_FIELD, f"未知仓库 / unknown warehouse(s): {shown}; known: {', '.join(sorted(set(by_name.values())))}",
                            "warehouse")
    return [(sku, by_name[wh], on_hand) for sku, wh, on_hand in counts]


def _listings(conn: sa.Connection, channels: list[str]) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """channel -> merchant SKU -> [(platform item id, platform SKU id)]. Mapping rows without an
    item id (keyed by 商家编码 only) name no listing a stock API could address, so they are left out."""
    m = sku_mappings.c
    query = (
        sa.select(m.channel, m.sku, m.platform_item_id, m.platform_sku_id)
        .where(m.channel.in_(channels), m.platform_item_id.is_not(None), m.platform_item_id != "")
        .order_by(m.channel, m.sku, m.platform_item_id, m.platform_sku_id)
    )
    out: dict[str, dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for channel, sku, item_id, sku_id in conn.execute(query):
        out[channel][sku].append((item_id, sku_id))
    return out


def _told(conn: sa.Connection, channels: list[str]) -> dict[tuple[str, str, str], tuple[int, str]]:
    p = stock_pushes.c
    query = sa.select(p.channel, p.shop_id, p.sku, p.quantity, p.status).where(p.channel.in_(channels))
    return {(channel, shop_id, sku): (int(quantity), status) for channel, shop_id, sku, quantity, status in conn.execute(query)}
