"""The audit stage on a real database (SQLite and PostgreSQL): platform pushes in, orders out
ready (stock reserved, warehouse chosen) or held with reasons, and the actions on held orders."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from factories import T0
from fakes import SHOP, FakeChannel, StoredOrdersChannel, push_body
from orderhub.adapters.channels.registry import ChannelRegistry
from orderhub.adapters.db import audit_repo, inventory_repo, queries
from orderhub.adapters.db.tables import order_events, stock
from orderhub.bootstrap import Runtime
from orderhub.config import Settings, ShopSettings
from orderhub.domain.errors import OrderHubError
from orderhub.domain.ids import order_id
from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder
from orderhub.domain.status import Status
from orderhub.services import catalogue, order_actions, rule_trials

TEE, BAG, PRE = "TS-TEE01-WH-L", "TS-BAG02-BE", "TS-PRE03"
SKUS = [
    {"code": PRE, "title": "预售新款外套", "category": "服装", "price": 19900, "cost": 8000, "weight_g": 900, "presale": True},
    {"code": TEE, "title": "测试纯棉T恤", "category": "服装", "price": 5990, "cost": 2000, "weight_g": 300, "presale": False},
    {"code": BAG, "title": "测试帆布袋", "category": "家居", "price": 2990, "cost": 1000, "weight_g": 200, "presale": False},
    {"code": "GIFT-01", "title": "帆布袋", "category": "赠品", "price": 0, "cost": 800, "weight_g": 120, "presale": False},
    {"code": "GIFT-02", "title": "试用装小样", "category": "赠品", "price": 0, "cost": 500, "weight_g": 50, "presale": False},
    {"code": "GIFT-03", "title": "会员礼盒", "category": "赠品", "price": 0, "cost": 3000, "weight_g": 600, "presale": False},
]
WAREHOUSES = [{"code": "WH-EAST", "name": "华东仓", "city": "上海"}, {"code": "WH-SOUTH", "name": "华南仓", "city": "广州"}]


def build(oid: str, *, lines: tuple[tuple[str | None, int, int], ...] = ((TEE, 2, 5990),), province: str = "浙江省",
          city: str = "杭州市", district: str = "西湖区", detail: str = "测试路***", buyer: str = "open-1", level: str | None = None,
          message: str | None = None, status: Status = Status.PAID, updated: int = 0, created: int = 0) -> NormalizedOrder:
    goods = sum(qty * price for _, qty, price in lines)
    order = NormalizedOrder(
        channel="fake", shop_id=SHOP.shop_id, original_id=oid, status=status, platform_status={"s": status.value},
        created_at=T0 + timedelta(seconds=created), paid_at=T0 + timedelta(seconds=created + 41),
        updated_at=T0 + timedelta(seconds=created + 41 + updated),
        amounts=Amounts(goods=goods, discount=0, shipping=0, paid=goods, discount_shop=0, discount_platform=0),
        lines=tuple(Line(sku, f"商品{sku}", qty, price, qty * price, platform_sku_id=f"P-{sku}", platform_line_id=str(i))
                    for i, (sku, qty, price) in enumerate(lines)),
        address=Address(province, city, district, detail), buyer=Buyer(buyer, "张*", "138****0000", level), buyer_message=message,
        raw={"id": oid},
    )
    order.check()
    return order


@pytest.fixture
def channel() -> StoredOrdersChannel:
    return StoredOrdersChannel()


@pytest.fixture
async def runtime(database_url, channel, tmp_path):
    settings = Settings(
        database_url=database_url, data_dir=tmp_path,
        shops=[ShopSettings(channel="fake", shop_id=SHOP.shop_id, name=SHOP.name, app_key=SHOP.app_key, app_secret=SHOP.app_secret)],
    )
    rt = Runtime(settings, channels=ChannelRegistry(push={"fake": channel}, sources={"fake": channel}, pull=set(), file=None))
    catalogue.upsert_catalogue(rt.engine, WAREHOUSES, SKUS)
    set_stock(rt, [(TEE, "WH-EAST", 50), (TEE, "WH-SOUTH", 50), (BAG, "WH-EAST", 20), (BAG, "WH-SOUTH", 20), (PRE, "WH-EAST", 10)]
              + [(g, w, 100) for g in ("GIFT-01", "GIFT-02", "GIFT-03") for w in ("WH-EAST", "WH-SOUTH")])
    await rt.start(workers=False, streams=False)
    yield rt
    await rt.stop()


def set_stock(rt: Runtime, counts: list[tuple[str, str, int]]) -> None:
    with rt.engine.begin() as conn:
        inventory_repo.sync_on_hand(conn, counts, actor="test", reason="test stock", now=datetime.now(UTC))


async def arrive(rt: Runtime, channel: StoredOrdersChannel, *orders: NormalizedOrder) -> None:
    for order in orders:
        channel.orders[order.original_id] = order
    body = push_body(*({"id": o.original_id, "updated": int((o.updated_at - T0).total_seconds()) - 41} for o in orders))
    await rt.intake.accept_push("fake", {"x-sign": FakeChannel.sign(body)}, body)
    await rt.drain()


def get(rt: Runtime, oid: str) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        order = queries.get_order(conn, order_id("fake", oid))
    assert order is not None
    return order


def stock_row(rt: Runtime, sku: str, warehouse: str) -> tuple[int, int]:
    with rt.engine.connect() as conn:
        row = conn.execute(sa.select(stock.c.on_hand, stock.c.reserved).where(stock.c.sku == sku, stock.c.warehouse == warehouse)).one()
    return row.on_hand, row.reserved


def healthy(rt: Runtime) -> bool:
    with rt.engine.connect() as conn:
        return inventory_repo.check_invariant(conn) == []


async def test_a_paid_order_is_audited_to_ready_with_its_stock_reserved_and_the_rule_version_recorded(runtime, channel):
    await arrive(runtime, channel, build("A1"))
    order = get(runtime, "A1")
    assert (order["status"], order["warehouse"], order["rule_version"]) == ("ready", "WH-EAST", "audit@1")
    assert order["packages"] == [{"package_no": 1, "warehouse": "WH-EAST", "lines": [{"line_no": 0, "sku": TEE, "qty": 2, "gift": False, "status": "active"}]}]
    assert order["audit"]["state"] == "done" and order["carrier"]
    assert stock_row(runtime, TEE, "WH-EAST") == (50, 2)
    with runtime.engine.connect() as conn:
        events = conn.execute(sa.select(order_events.c.kind, order_events.c.to_status).where(order_events.c.order_id == order["id"]).order_by(order_events.c.id)).all()
    assert [tuple(e) for e in events] == [("created", "paid"), ("audited", "ready")]
    assert healthy(runtime)


async def test_an_order_short_of_the_spend_threshold_shows_how_much_it_misses_for_the_gift(runtime, channel):
    await arrive(runtime, channel, build("G1"))  # ¥119.80 of goods, the first tier is ¥199
    gifts = get(runtime, "G1")["gifts"]
    assert any(not g["reached"] and g["message"] == "未达赠品门槛：差¥79.20" for g in gifts)


async def test_a_gift_reached_is_reserved_with_the_order(runtime, channel):
    await arrive(runtime, channel, build("G2", lines=((TEE, 4, 5990),)))  # ¥239.60
    order = get(runtime, "G2")
    reached = [g for g in order["gifts"] if g["reached"]]
    assert reached and order["status"] == "ready"
    gift_lines = [line for p in order["packages"] for line in p["lines"] if line["gift"]]
    assert {line["sku"] for line in gift_lines} == {g["sku"] for g in reached}
    assert healthy(runtime)


async def test_an_order_to_xinjiang_over_500_yuan_is_held_for_risk_review_until_a_person_releases_it(runtime, channel):
    await arrive(runtime, channel, build("R1", lines=((TEE, 9, 5990),), province="新疆维吾尔自治区", city="乌鲁木齐市", district="天山区"))
    order = get(runtime, "R1")
    assert order["status"] == "on_hold"
    assert [(h["code"], h["reason"]) for h in order["holds"] if h["code"] == "risk_review"] == [("risk_review", "金额>¥500且收货地为新疆/西藏")]
    assert stock_row(runtime, TEE, "WH-EAST")[1] == 0  # a held order holds no stock
    with pytest.raises(OrderHubError) as missing_reason:
        order_actions.release_hold(runtime.engine, order["id"], actor="ops-li", reason=" ", code="risk_review")
    assert missing_reason.value.field == "reason"
    order_actions.release_hold(runtime.engine, order["id"], actor="ops-li", reason="已电话核实", code="risk_review")
    await runtime.drain()
    order = get(runtime, "R1")
    assert order["status"] == "ready" and not any(h["code"] == "risk_review" for h in order["holds"])
    assert "remote_area" in order["tags"]  # a warning, not a hold
    with runtime.engine.connect() as conn:
        story = conn.execute(sa.select(order_events.c.kind, order_events.c.actor, order_events.c.reason).where(order_events.c.order_id == order["id"]).order_by(order_events.c.id)).all()
    assert [s.kind for s in story] == ["created", "audited", "hold_released", "audited"]
    assert (story[2].actor, story[2].reason) == ("ops-li", "已电话核实")


async def test_an_order_short_of_stock_is_held_and_audited_again_as_soon_as_stock_arrives(runtime, channel):
    set_stock(runtime, [(BAG, "WH-EAST", 1), (BAG, "WH-SOUTH", 0)])
    await arrive(runtime, channel, build("S1", lines=((BAG, 3, 2990),)))
    order = get(runtime, "S1")
    assert order["status"] == "on_hold" and order["audit"]["state"] == "short"
    assert [h["reason"] for h in order["holds"] if h["code"] == "out_of_stock"] == [f"缺货：{BAG} 需3 可用1"]
    with runtime.engine.begin() as conn:
        inventory_repo.adjust(conn, BAG, "WH-SOUTH", 5, actor="warehouse", reason="到货", now=datetime.now(UTC))
        assert audit_repo.requeue_short(conn, [BAG]) == 1
    await runtime.drain()
    order = get(runtime, "S1")
    assert (order["status"], order["warehouse"]) == ("ready", "WH-SOUTH")
    assert healthy(runtime)


async def test_an_order_neither_warehouse_can_serve_alone_is_split_across_both(runtime, channel):
    set_stock(runtime, [(TEE, "WH-EAST", 1), (TEE, "WH-SOUTH", 2)])
    await arrive(runtime, channel, build("P1", lines=((TEE, 3, 5990),)))
    order = get(runtime, "P1")
    assert order["status"] == "ready" and order["audit"]["decisions"]["split"] is True
    placed = {(p["warehouse"], line["qty"]) for p in order["packages"] for line in p["lines"] if not line["gift"]}
    assert placed == {("WH-EAST", 1), ("WH-SOUTH", 2)}
    assert stock_row(runtime, TEE, "WH-EAST") == (1, 1) and stock_row(runtime, TEE, "WH-SOUTH") == (2, 2)


async def test_a_platform_cancel_after_audit_puts_the_stock_back_at_once(runtime, channel):
    await arrive(runtime, channel, build("C1"))
    assert stock_row(runtime, TEE, "WH-EAST") == (50, 2)
    await arrive(runtime, channel, build("C1", status=Status.CANCELLED, updated=60))
    assert get(runtime, "C1")["status"] == "cancelled"
    assert stock_row(runtime, TEE, "WH-EAST") == (50, 0)
    with runtime.engine.connect() as conn:
        kinds = [r["kind"] for r in inventory_repo.ledger(conn, TEE)]
    assert kinds[:2] == ["release", "reserve"]
    assert healthy(runtime)


async def test_two_orders_of_one_buyer_to_one_address_ship_as_one_package_until_unmerged(runtime, channel):
    await arrive(runtime, channel, build("M1"), build("M2", lines=((BAG, 1, 2990),), created=60))
    first, second = get(runtime, "M1"), get(runtime, "M2")
    assert first["status"] == second["status"] == "ready"
    assert first["merge_group"] and first["merge_group"] == second["merge_group"]
    await arrive(runtime, channel, build("M3", buyer="open-2", created=90))  # another buyer: not merged
    assert get(runtime, "M3")["merge_group"] is None
    order_actions.unmerge_order(runtime.engine, second["id"], actor="cs-wang", reason="买家要求分开发")
    assert get(runtime, "M2")["merge_group"] is None and get(runtime, "M1")["merge_group"] is None
    assert "no_auto_merge" in get(runtime, "M2")["tags"]


async def test_a_line_without_a_known_merchant_sku_holds_the_order_instead_of_guessing(runtime, channel):
    await arrive(runtime, channel, build("U1", lines=((None, 1, 5990),)))
    order = get(runtime, "U1")
    assert order["status"] == "on_hold" and "sku_unmapped" in [h["code"] for h in order["holds"]]


async def test_switching_a_rule_off_changes_the_next_audit_without_a_restart(runtime, channel):
    far = {"province": "西藏自治区", "city": "拉萨市", "district": "城关区", "lines": ((TEE, 9, 5990),)}
    await arrive(runtime, channel, build("W1", **far))
    assert get(runtime, "W1")["status"] == "on_hold"
    published = runtime.rules.set_switch("holds", "risk-xinjiang-tibet", False, "ops-lead")
    assert published["rule_version"] == "audit@2"
    await arrive(runtime, channel, build("W2", **far, buyer="open-9"))
    order = get(runtime, "W2")
    assert (order["status"], order["rule_version"]) == ("ready", "audit@2")


async def test_a_manual_hold_and_a_cancel_from_the_console_give_the_stock_back(runtime, channel):
    await arrive(runtime, channel, build("H1"), build("H2", buyer="open-3"))
    h1, h2 = get(runtime, "H1"), get(runtime, "H2")
    assert stock_row(runtime, TEE, "WH-EAST") == (50, 4)
    order_actions.hold_order(runtime.engine, h1["id"], actor="cs-wang", reason="买家来电要求暂缓")
    assert get(runtime, "H1")["status"] == "on_hold" and stock_row(runtime, TEE, "WH-EAST") == (50, 2)
    with pytest.raises(OrderHubError) as stale:
        order_actions.cancel_order(runtime.engine, h2["id"], actor="cs-wang", reason="买家取消", version=h2["version"] - 1)
    assert stale.value.code.value == "conflict"
    order_actions.cancel_order(runtime.engine, h2["id"], actor="cs-wang", reason="买家取消", version=h2["version"])
    assert get(runtime, "H2")["status"] == "cancelled" and stock_row(runtime, TEE, "WH-EAST") == (50, 0)
    await runtime.drain()
    assert get(runtime, "H1")["status"] == "on_hold"  # a manual hold is not audited away
    assert healthy(runtime)


async def test_an_address_edit_is_sealed_masked_and_audited_again(runtime, channel):
    await arrive(runtime, channel, build("E1", detail=""))
    order = get(runtime, "E1")
    assert "address_incomplete" in [h["code"] for h in order["holds"]]
    order_actions.edit_address(runtime.engine, runtime.vault, order["id"], {"province": "广东省", "city": "广州市", "district": "天河区", "detail": "体育西路100号"},
                               actor="cs-wang", reason="买家补充地址")
    await runtime.drain()
    order = get(runtime, "E1")
    assert (order["status"], order["warehouse"], order["address"]["detail"]) == ("ready", "WH-SOUTH", "***")
    with runtime.engine.connect() as conn:
        sealed = conn.execute(sa.text("SELECT pii_sealed FROM orders WHERE id = :id"), {"id": order["id"]}).scalar_one()
    assert "体育西路" not in sealed and runtime.vault.open(sealed)["address_detail"] == "体育西路100号"


async def test_dry_run_and_backtest_show_what_a_draft_would_change(runtime, channel):
    recent = int((datetime.now(UTC) - T0).total_seconds()) - 3600  # paid an hour ago
    await arrive(runtime, channel, build("D1", province="广东省", city="深圳市", district="南山区", created=recent),
                 build("D2", buyer="open-4", created=recent))
    assert get(runtime, "D1")["warehouse"] == "WH-SOUTH"
    draft = runtime.rules.get_set("routing")["content"]
    for node in draft["nodes"]:
        content = node.get("content") or {}
        for column in content.get("outputs", []):
            if column["field"] == "warehouse":
                for row in content["rules"]:
                    row[column["id"]] = '"WH-EAST"'
    runtime.rules.save_draft("routing", draft, "ops-lead", "全部走华东仓")
    run = rule_trials.dry_run(runtime.engine, runtime.rules, "routing", order_id=order_id("fake", "D1"))
    assert run["changes"]["warehouse"] == {"from": "WH-SOUTH", "to": "WH-EAST"} and run["trace"]
    assert get(runtime, "D1")["warehouse"] == "WH-SOUTH"  # a dry run changes nothing
    report = rule_trials.backtest(runtime.engine, runtime.rules, "routing", days=1)
    assert (report["orders"], report["changed"], report["by_change"]) == (2, 1, {"warehouse": 1})
    assert report["samples"][0]["order_id"] == order_id("fake", "D1")


async def test_a_presale_line_ships_in_a_package_of_its_own_and_such_an_order_is_not_merged(runtime, channel):
    await arrive(runtime, channel, build("PS1", lines=((TEE, 1, 5990), (PRE, 1, 19900))), build("PS2", lines=((BAG, 1, 2990),), created=30))
    order = get(runtime, "PS1")
    assert order["status"] == "ready" and order["audit"]["decisions"]["split"] is True
    packages = {p["package_no"]: sorted(line["sku"] for line in p["lines"] if not line["gift"]) for p in order["packages"]}
    assert sorted(packages.values()) == [[PRE], [TEE]]
    assert {p["warehouse"] for p in order["packages"]} == {"WH-EAST"}
    assert order["merge_group"] is None and get(runtime, "PS2")["merge_group"] is None


async def test_an_order_with_a_line_being_refunded_reserves_only_the_rest_and_is_not_merged(runtime, channel):
    refunding = build("RF1", lines=((TEE, 1, 5990), (BAG, 1, 2990)))
    refunding = replace(refunding, lines=(refunding.lines[0], replace(refunding.lines[1], refund_status="refunding")))
    await arrive(runtime, channel, refunding, build("RF2", created=30))
    order = get(runtime, "RF1")
    assert order["status"] == "ready"
    assert [line["sku"] for p in order["packages"] for line in p["lines"] if not line["gift"]] == [TEE]
    assert order["merge_group"] is None and get(runtime, "RF2")["merge_group"] is None


async def test_a_street_the_platform_sent_only_encrypted_does_not_count_as_missing(runtime, channel):
    await arrive(runtime, channel, replace(build("EN1", detail=""), pii={"address_detail": "$FAKEYWRkcmVzcw==$1$"}))
    order = get(runtime, "EN1")
    assert order["status"] == "ready" and "address_incomplete" not in [h["code"] for h in order["holds"]]
