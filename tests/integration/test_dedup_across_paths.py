"""The same platform order arriving by pull, by file and again by pull is one order."""

from __future__ import annotations

import csv
import io
import json

import orjson
import pytest
import sqlalchemy as sa

from orderhub.adapters.db.inbox import append_rows, claim
from orderhub.adapters.db.tables import order_events, orders
from orderhub.bootstrap import Runtime
from orderhub.config import Settings, ShopSettings
from orderhub.domain.ids import order_id
from orderhub.services import imports

JD_MAPPING = {
    "channel": "jd",
    "columns": {
        "order_no": "订单号", "created_at": "下单时间", "paid_at": "付款时间", "updated_at": "修改时间", "status": "状态",
        "sku": "商家编码", "title": "商品", "qty": "数量", "unit_price": "单价", "discount": "优惠", "shipping": "运费", "paid": "实付",
    },
    "status_values": {"等待出库": "paid", "已取消": "cancelled"},
}


@pytest.fixture
async def runtime(database_url):
    settings = Settings(database_url=database_url, audit=False, shops=[ShopSettings(channel="jd", shop_id="10000001", name="京东店")])
    rt = Runtime(settings)
    await rt.start(workers=False)
    yield rt
    await rt.stop()


def jd_order(fixtures_dir, modified: str = "2025-03-18 10:12:45", state: str = "WAIT_SELLER_STOCK_OUT") -> dict:
    data = json.loads((fixtures_dir / "jd_order_search.json").read_text(encoding="utf-8"))
    order = data["jingdong_pop_order_search_responce"]["searchorderinfo_result"]["orderInfoList"][0]
    return {**order, "modified": modified, "orderState": state}


def pull_page(rt: Runtime, *raws: dict) -> None:
    with rt.engine.begin() as conn:
        append_rows(conn, [{"channel": "jd", "shop_id": "10000001", "kind": "pull", "body": orjson.dumps({"orders": list(raws)})}])


def file_with(order_no: str, modified: str, status: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["订单号", "下单时间", "付款时间", "修改时间", "状态", "商家编码", "商品", "数量", "单价", "优惠", "运费", "实付"])
    writer.writerow([order_no, "2025-03-18 10:12:00", "2025-03-18 10:12:41", modified, status, "TS-TEE01-WH-L", "测试纯棉T恤 白色 L", "2", "59.90", "16.00", "0", "133.70"])
    writer.writerow([order_no, "", "", "", "", "TS-BAG02-BE", "测试帆布袋 米色", "1", "29.90", "", "", ""])
    return out.getvalue().encode("utf-8")


async def process_all(rt: Runtime) -> None:
    while rows := claim(rt.engine, 100):
        await rt.processor.process(rows)


def count(rt: Runtime, table) -> int:
    with rt.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


async def test_pull_then_file_then_pull_again_is_one_order_with_the_newest_state(runtime, fixtures_dir):
    pull_page(runtime, jd_order(fixtures_dir))
    await process_all(runtime)
    # an older export of the same order, imported as channel jd: same internal id, stale
    imports.save_mapping(runtime.engine, "jd-export", JD_MAPPING)
    report = imports.import_file(runtime.engine, file_with("300000000001", "2025-03-18 10:12:40", "等待出库"), "jd.csv", "jd-export", "jd", "10000001")
    assert report["orders"] == 1
    await process_all(runtime)
    # the overlap of the next pull window delivers the same order again, unchanged
    pull_page(runtime, jd_order(fixtures_dir))
    await process_all(runtime)
    assert count(runtime, orders) == 1
    with runtime.engine.connect() as conn:
        row = conn.execute(sa.select(orders.c.id, orders.c.version, orders.c.status, orders.c.paid)).one()
        kinds = list(conn.execute(sa.select(order_events.c.kind)).scalars())
    assert row.id == order_id("jd", "300000000001")
    assert (row.version, row.status, row.paid) == (1, "paid", 13370)
    assert kinds == ["created"]


async def test_a_newer_file_cancels_the_pulled_order_and_a_later_pull_cannot_undo_it(runtime, fixtures_dir):
    pull_page(runtime, jd_order(fixtures_dir))
    await process_all(runtime)
    imports.save_mapping(runtime.engine, "jd-export", JD_MAPPING)
    imports.import_file(runtime.engine, file_with("300000000001", "2025-03-18 10:30:00", "已取消"), "jd.csv", "jd-export", "jd", "10000001")
    await process_all(runtime)
    pull_page(runtime, jd_order(fixtures_dir))  # a late page with the older state
    await process_all(runtime)
    with runtime.engine.connect() as conn:
        status, version = conn.execute(sa.select(orders.c.status, orders.c.version)).one()
        events = conn.execute(sa.select(order_events.c.kind, order_events.c.actor, order_events.c.to_status).order_by(order_events.c.id)).all()
    assert (status, version) == ("cancelled", 2)
    status_story = [tuple(e) for e in events if e.kind in ("created", "status")]
    assert status_story == [("created", "platform:jd", "paid"), ("status", "file_import", "cancelled")]
    # the file had no address columns: that difference is on the record too, by the file import
    assert {e.actor for e in events} == {"platform:jd", "file_import"}
