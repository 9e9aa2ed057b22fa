"""Stock sync end to end: the simulator's WMS and platform APIs over real HTTP on 127.0.0.1, on SQLite and PostgreSQL.

WMS counts move on_hand; every channel shop is told the sellable quantity less its channel's
buffer; a SKU sold out through one channel reaches 0 on all; unchanged quantities are not sent
again; a platform that is down stays `failed` and is pushed on the next round.
"""

from __future__ import annotations

import codecs
import io
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from orderhub.adapters.channels.file_mapping import FileImportError
from orderhub.adapters.channels.registry import ShopRegistry
from orderhub.adapters.channels.stock_push import new_adapters
from orderhub.adapters.db import inventory_repo
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.migrate import upgrade
from orderhub.adapters.db.tables import sku_mappings, stock, stock_ledger, stock_pushes
from orderhub.adapters.wms.stock import FileWmsStock, HttpWmsStock
from orderhub.config import ShopSettings
from orderhub.demo.catalogue import WAREHOUSES, skus
from orderhub.demo.shops import demo_shop
from orderhub.demo.stock import sku_mappings as demo_mappings
from orderhub.domain.errors import FetchError
from orderhub.domain.inventory import Pick
from orderhub.services.catalogue import upsert_catalogue
from orderhub.services.stock_sync import StockSync
from orderhub.simulator.app import Simulator, serve_in_background
from orderhub.simulator.wms import DEMO_WMS_APP

CHANNELS = ["douyin", "taobao", "jd", "pdd", "youzan", "wechat_channels", "kuaishou"]
LISTED = ["SKU-1001", "SKU-1002", "SKU-1003"]  # the SKUs mapped on every channel here
BUFFERS = {"douyin": 2, "taobao": 1}


class World:
    def __init__(self, engine: sa.Engine, sim: Simulator, port: int, http: httpx.AsyncClient) -> None:
        self.engine, self.sim, self.port, self.http = engine, sim, port, http
        shops = ShopRegistry(
            ShopSettings(**demo_shop(ch), api_base_url=f"http://127.0.0.1:{port}/{ch}").to_shop() for ch in CHANNELS
        )
        wms = HttpWmsStock(f"http://127.0.0.1:{port}/wms", DEMO_WMS_APP["app_key"], DEMO_WMS_APP["app_secret"], ["WH-EAST", "WH-SOUTH"])
        self.sync = StockSync(engine, shops, http, wms, BUFFERS, adapters=new_adapters())

    def wms_counts(self, *rows: tuple[str, str, int]) -> None:
        self.sim.wms.set_stock(rows)

    def on_hand(self, sku: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {wh: n for wh, n in conn.execute(sa.select(stock.c.warehouse, stock.c.on_hand).where(stock.c.sku == sku))}

    def shown(self, channel: str, sku: str) -> int:
        """What the channel's demo shop lists for the merchant SKU, read from the simulated platform."""
        rows = [r for r in self.sim.channel_stock_rows(channel) if r["sku"] == sku]
        return rows[0]["quantity"] if rows else 0

    def pushes(self) -> dict[tuple[str, str], tuple[int, str, str | None]]:
        with self.engine.connect() as conn:
            query = sa.select(stock_pushes.c.channel, stock_pushes.c.sku, stock_pushes.c.quantity, stock_pushes.c.status,
                              stock_pushes.c.error)
            return {(ch, sku): (q, status, error) for ch, sku, q, status, error in conn.execute(query)}


@pytest.fixture
async def world(database_url):
    upgrade(database_url)
    engine = create_engine(database_url)
    catalogue = [{"code": s.code, "title": s.title, "category": s.category, "price": s.price, "cost": s.cost,
                  "weight_g": s.weight} for s in skus()]
    upsert_catalogue(engine, WAREHOUSES, catalogue)
    with engine.begin() as conn:
        conn.execute(sa.insert(sku_mappings), [row for row in demo_mappings() if row["sku"] in LISTED])
    sim = Simulator(seed=9)
    handle = await serve_in_background("127.0.0.1", 0, sim)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            yield World(engine, sim, handle.port, http)
    finally:
        await handle.stop()
        engine.dispose()


async def test_a_wms_import_moves_on_hand_to_the_wms_counts_and_says_which_rows_rose(world):
    world.wms_counts(("SKU-1001", "WH-EAST", 40), ("SKU-1001", "WH-SOUTH", 5))
    result = await world.sync.import_wms()
    assert world.on_hand("SKU-1001") == {"WH-EAST": 40, "WH-SOUTH": 5}
    assert ("SKU-1001", "WH-EAST") in result.raised
    assert result.counts == len(world.sim.wms.stock())

    world.wms_counts(("SKU-1001", "WH-EAST", 12))
    again = await world.sync.import_wms()
    assert world.on_hand("SKU-1001") == {"WH-EAST": 12, "WH-SOUTH": 5}
    assert again.raised == []
    with world.engine.connect() as conn:
        moves = conn.execute(sa.select(stock_ledger.c.on_hand_delta).where(
            stock_ledger.c.sku == "SKU-1001", stock_ledger.c.warehouse == "WH-EAST", stock_ledger.c.kind == "sync")
            .order_by(stock_ledger.c.id)).scalars().all()
    assert moves[-1] == -28  # the ledger says who moved it and by how much


async def test_every_channel_is_told_the_sellable_quantity_less_its_buffer(world):
    world.wms_counts(("SKU-1001", "WH-EAST", 30), ("SKU-1001", "WH-SOUTH", 5))
    summary = (await world.sync.run_once())[1]
    assert summary.failed == 0 and summary.pushed == len(LISTED) * len(CHANNELS)
    expected = {ch: 35 - BUFFERS.get(ch, 0) for ch in CHANNELS}
    assert {ch: world.shown(ch, "SKU-1001") for ch in CHANNELS} == expected
    assert world.pushes()[("douyin", "SKU-1001")] == (33, "ok", None)


async def test_a_sku_sold_out_through_one_channel_reaches_zero_on_every_channel(world):
    world.wms_counts(("SKU-1002", "WH-EAST", 3), ("SKU-1002", "WH-SOUTH", 0))
    await world.sync.run_once()
    assert {world.shown(ch, "SKU-1002") for ch in ("jd", "pdd", "kuaishou")} == {3}
    # A JD buyer takes the last three: the order's reservation leaves nothing sellable.
    with world.engine.begin() as conn:
        inventory_repo.reserve(conn, {"jd-order-1": [Pick(1, "SKU-1002", "WH-EAST", 3, 1)]}, actor="audit", now=datetime.now(UTC))
    summary = await world.sync.push_channels()
    assert summary.failed == 0
    assert {ch: world.shown(ch, "SKU-1002") for ch in CHANNELS} == dict.fromkeys(CHANNELS, 0)
    assert {world.pushes()[(ch, "SKU-1002")][:2] for ch in CHANNELS} == {(0, "ok")}


async def test_unchanged_quantities_are_not_pushed_twice(world):
    world.wms_counts(("SKU-1003", "WH-EAST", 9))
    await world.sync.run_once()
    updates = len(world.sim.stock_updates)
    second = await world.sync.push_channels()
    assert (second.pushed, second.unchanged) == (0, len(LISTED) * len(CHANNELS))
    assert len(world.sim.stock_updates) == updates  # not one call reached a platform

    world.wms_counts(("SKU-1003", "WH-EAST", 10))
    third = (await world.sync.run_once())[1]
    assert third.pushed == len(CHANNELS)  # only SKU-1003, once per channel shop
    assert world.shown("jd", "SKU-1003") == world.pushes()[("jd", "SKU-1003")][0]


async def test_a_platform_that_is_down_stays_failed_and_is_pushed_again_next_round(world):
    world.wms_counts(("SKU-1001", "WH-EAST", 20), ("SKU-1001", "WH-SOUTH", 0))
    reply = await world.http.post(f"http://127.0.0.1:{world.port}/_sim/faults", json={"channel": "pdd", "mode": "down", "seconds": 60})
    assert reply.status_code == 200
    first = (await world.sync.run_once())[1]
    assert first.failed == len(LISTED)
    quantity, status, error = world.pushes()[("pdd", "SKU-1001")]
    assert (quantity, status) == (20, "failed") and "503" in error
    assert world.shown("pdd", "SKU-1001") == 0 and world.shown("jd", "SKU-1001") == 20

    await world.http.post(f"http://127.0.0.1:{world.port}/_sim/faults", json={"channel": "pdd", "mode": "clear"})
    second = await world.sync.push_channels()
    assert second.failed == 0 and second.pushed == len(LISTED)  # only pdd's, retried
    assert world.pushes()[("pdd", "SKU-1001")] == (20, "ok", None)
    assert world.shown("pdd", "SKU-1001") == 20


async def test_nothing_is_pushed_before_any_stock_was_imported(world):
    summary = await world.sync.push_channels()
    assert summary.skipped and summary.pushed == 0
    assert world.sim.stock_updates == []


async def test_a_wms_outage_fails_the_import_and_changes_nothing(world):
    await world.sync.import_wms()
    before = world.on_hand("SKU-1001")
    world.wms_counts(("SKU-1001", "WH-EAST", 1))
    world.sim.faults.set("wms", "down", 60)
    with pytest.raises(FetchError, match="503"):
        await world.sync.import_wms()
    assert world.on_hand("SKU-1001") == before


# -- stock files ----------------------------------------------------------------------------------


def file_sync(world: World, data: bytes, filename: str) -> StockSync:
    return StockSync(world.engine, ShopRegistry([]), world.http, FileWmsStock(data, filename), {})


async def test_a_gbk_stock_file_with_chinese_headers_and_warehouse_names_is_imported(world):
    text = "商家编码,仓库,库存\r\nSKU-1001,华东仓,17\r\nSKU-1001,华南仓,0\r\nSKU-1002,WH-EAST,4\r\n"
    result = await file_sync(world, codecs.encode(text, "gbk"), "库存.csv").import_wms()
    assert result.counts == 3
    assert world.on_hand("SKU-1001") == {"WH-EAST": 17, "WH-SOUTH": 0}
    assert world.on_hand("SKU-1002") == {"WH-EAST": 4}


async def test_an_xlsx_stock_file_is_imported(world):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["sku", "warehouse", "on_hand"])
    sheet.append(["SKU-1003", "WH-SOUTH", 25])
    sheet.append(["SKU-1003", "WH-EAST", 2.0])  # how a spreadsheet may store a whole number
    buffer = io.BytesIO()
    book.save(buffer)
    await file_sync(world, buffer.getvalue(), "stock.xlsx").import_wms()
    assert world.on_hand("SKU-1003") == {"WH-SOUTH": 25, "WH-EAST": 2}


async def test_a_stock_file_with_bad_rows_is_rejected_whole_naming_every_bad_row(world):
    text = ("sku,warehouse,on_hand\n"
            "SKU-1001,WH-EAST,8\n"      # row 2: fine, but must not be imported either
            "SKU-1002,WH-EAST,-3\n"     # row 3
            "SKU-1003,WH-EAST,2.5\n"    # row 4
            ",WH-EAST,1\n"              # row 5
            "SKU-1001,WH-EAST,9\n")     # row 6 repeats row 2
    with pytest.raises(FileImportError) as rejected:
        await file_sync(world, text.encode(), "stock.csv").import_wms()
    assert rejected.value.code == "invalid_file"
    assert [e["row"] for e in rejected.value.errors] == [3, 4, 5, 6]
    assert "第6行" in rejected.value.message and "row 2" in rejected.value.message
    assert world.on_hand("SKU-1001") == {}


async def test_a_stock_file_naming_an_unknown_warehouse_changes_nothing(world):
    text = "sku,warehouse,on_hand\nSKU-1001,WH-EAST,8\nSKU-1001,西北仓,3\n"
    with pytest.raises(Exception, match="西北仓"):
        await file_sync(world, text.encode(), "stock.csv").import_wms()
    assert world.on_hand("SKU-1001") == {}
