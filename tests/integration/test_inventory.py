"""Stock on a real database (SQLite and PostgreSQL): reserve, release, consume, WMS counts, the ledger, the invariant."""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from orderhub.adapters.db import inventory_repo as inv
from orderhub.adapters.db.tables import reservations, stock, stock_ledger
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.inventory import Pick

NOW = datetime(2025, 3, 18, 2, 0, tzinfo=UTC)
EAST, SOUTH = "WH-EAST", "WH-SOUTH"



def receive(engine, *rows: tuple[str, str, int]) -> None:
    with engine.begin() as conn:
        for sku, warehouse, qty in rows:
            inv.adjust(conn, sku, warehouse, qty, actor="ops:li", reason="入库 receipt", now=NOW)


def row(engine, sku: str, warehouse: str) -> dict:
    with engine.connect() as conn:
        found = conn.execute(sa.select(stock).where(stock.c.sku == sku, stock.c.warehouse == warehouse)).mappings().first()
    return dict(found) if found else {}


def ledger_kinds(engine, sku: str) -> list[tuple]:
    with engine.connect() as conn:
        return [(r["kind"], r["warehouse"], r["on_hand_delta"], r["reserved_delta"], r["order_id"]) for r in reversed(inv.ledger(conn, sku))]


def test_reserve_release_and_consume_move_stock_and_every_move_is_in_the_ledger(engine):
    receive(engine, ("A", EAST, 10), ("B", EAST, 5))
    with engine.begin() as conn:
        inv.reserve(conn, {"o1": [Pick(1, "A", EAST, 3, 1), Pick(2, "B", EAST, 1, 1)], "o2": [Pick(1, "A", EAST, 2, 1)]},
                    actor="audit", now=NOW, reason="audit@7")
    assert (row(engine, "A", EAST)["on_hand"], row(engine, "A", EAST)["reserved"]) == (10, 5)
    with engine.connect() as conn:
        assert inv.load_available(conn, ["A", "B", "Z"]) == {("A", EAST): 5, ("B", EAST): 4}
        assert inv.active_reservations(conn, ["o1", "o2", "o3"]) == {
            "o1": [{"line_no": 1, "sku": "A", "warehouse": EAST, "qty": 3, "package_no": 1, "gift": False},
                   {"line_no": 2, "sku": "B", "warehouse": EAST, "qty": 1, "package_no": 1, "gift": False}],
            "o2": [{"line_no": 1, "sku": "A", "warehouse": EAST, "qty": 2, "package_no": 1, "gift": False}],
        }
    with engine.begin() as conn:
        assert inv.release(conn, ["o2"], actor="cs:wang", reason="买家取消", now=NOW) == 2
        assert inv.consume(conn, ["o1"], actor="wms", now=NOW) == 4
    assert (row(engine, "A", EAST)["on_hand"], row(engine, "A", EAST)["reserved"]) == (7, 0)
    assert (row(engine, "B", EAST)["on_hand"], row(engine, "B", EAST)["reserved"]) == (4, 0)
    assert ledger_kinds(engine, "A") == [
        ("receive", EAST, 10, 0, None), ("reserve", EAST, 0, 3, "o1"), ("reserve", EAST, 0, 2, "o2"),
        ("release", EAST, 0, -2, "o2"), ("consume", EAST, -3, -3, "o1"),
    ]
    with engine.connect() as conn:
        newest = inv.ledger(conn, "A", limit=1)[0]
        assert newest["actor"] == "wms" and newest["at"] == NOW
        assert inv.ledger(conn, "A", warehouse=EAST, before_id=newest["id"])[0]["reason"] == "买家取消"
        assert inv.active_reservations(conn, ["o1", "o2"]) == {}
        assert inv.check_invariant(conn) == []


def test_releasing_twice_gives_the_units_back_once(engine):
    receive(engine, ("A", EAST, 4))
    with engine.begin() as conn:
        inv.reserve(conn, {"o1": [Pick(1, "A", EAST, 3, 1)]}, actor="audit", now=NOW)
    with engine.begin() as conn:
        assert inv.release(conn, ["o1"], actor="cs", reason="取消", now=NOW) == 3
        assert inv.release(conn, ["o1", "nobody"], actor="cs", reason="取消", now=NOW) == 0
        assert inv.consume(conn, ["o1"], actor="wms", now=NOW) == 0
    assert (row(engine, "A", EAST)["on_hand"], row(engine, "A", EAST)["reserved"]) == (4, 0)


def test_a_split_order_ships_package_by_package(engine):
    receive(engine, ("A", EAST, 2), ("A", SOUTH, 2))
    with engine.begin() as conn:
        inv.reserve(conn, {"o1": [Pick(1, "A", EAST, 2, 1), Pick(1, "A", SOUTH, 1, 2)]}, actor="audit", now=NOW)
        assert inv.consume(conn, ["o1"], actor="wms", now=NOW, package_no=2) == 1
    assert (row(engine, "A", SOUTH)["on_hand"], row(engine, "A", SOUTH)["reserved"]) == (1, 0)
    assert row(engine, "A", EAST)["reserved"] == 2
    with engine.connect() as conn:
        assert [r["package_no"] for r in inv.active_reservations(conn, ["o1"])["o1"]] == [1]


def test_a_reservation_the_stock_cannot_cover_fails_names_every_short_row_and_changes_nothing(engine):
    receive(engine, ("A", EAST, 5), ("B", EAST, 1), ("C", EAST, 1))
    with engine.begin() as conn:
        inv.set_safety(conn, "C", EAST, 1, actor="ops", now=NOW)  # C has 1 on hand but none free
    with engine.begin() as conn:
        with pytest.raises(inv.StockConflict) as info:
            inv.reserve(conn, {"o1": [Pick(1, "A", EAST, 3, 1), Pick(2, "B", EAST, 1, 1)],
                               "o2": [Pick(1, "B", EAST, 1, 1), Pick(2, "C", EAST, 1, 1), Pick(3, "Z", EAST, 1, 1)]},
                        actor="audit", now=NOW)
        assert info.value.rows == [("B", EAST), ("C", EAST), ("Z", EAST)]
        # Even the caller's open transaction holds no half-made reservation.
        assert conn.execute(sa.select(sa.func.sum(stock.c.reserved))).scalar_one() == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(reservations)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(stock_ledger).where(stock_ledger.c.kind == "reserve")).scalar_one() == 0
        assert inv.check_invariant(conn) == []


def test_orders_of_one_batch_on_the_same_sku_add_up_against_the_stock(engine):
    receive(engine, ("A", EAST, 4))
    with engine.begin() as conn, pytest.raises(inv.StockConflict):
        inv.reserve(conn, {f"o{i}": [Pick(1, "A", EAST, 1, 1)] for i in range(5)}, actor="audit", now=NOW)
    with engine.begin() as conn:
        inv.reserve(conn, {f"o{i}": [Pick(1, "A", EAST, 1, 1)] for i in range(4)}, actor="audit", now=NOW)
    assert row(engine, "A", EAST)["reserved"] == 4
    assert [k[4] for k in ledger_kinds(engine, "A") if k[0] == "reserve"] == ["o0", "o1", "o2", "o3"]


def test_a_wms_count_below_what_is_reserved_keeps_on_hand_at_reserved_and_says_how_short_it_is(engine, caplog):
    receive(engine, ("A", EAST, 10))
    with engine.begin() as conn:
        inv.reserve(conn, {"o1": [Pick(1, "A", EAST, 5, 1)]}, actor="audit", now=NOW)
    with caplog.at_level(logging.WARNING, logger="orderhub.adapters.db.inventory_repo"), engine.begin() as conn:
        went_up = inv.sync_on_hand(conn, [("A", EAST, 3)], actor="wms:sync", reason="WMS 同步", now=NOW)
    assert went_up == []
    assert (row(engine, "A", EAST)["on_hand"], row(engine, "A", EAST)["reserved"]) == (5, 5)
    with engine.connect() as conn:
        entry = inv.ledger(conn, "A", limit=1)[0]
    assert (entry["kind"], entry["on_hand_delta"]) == ("sync", -5)
    assert "WMS 盘点 3 < 已占用 5" in entry["reason"]
    assert any("A@WH-EAST" in r.getMessage() for r in caplog.records)


def test_a_wms_sync_creates_rows_and_returns_only_the_rows_whose_stock_went_up(engine):
    receive(engine, ("A", EAST, 10), ("B", EAST, 2))
    with engine.begin() as conn:
        went_up = inv.sync_on_hand(conn, [("A", EAST, 7), ("B", EAST, 6), ("C", SOUTH, 4), ("D", SOUTH, 0), ("A", SOUTH, 0)],
                                   actor="wms:sync", reason="WMS 同步", now=NOW + timedelta(minutes=10))
    assert went_up == [("B", EAST), ("C", SOUTH)]
    assert [row(engine, *k)["on_hand"] for k in [("A", EAST), ("B", EAST), ("C", SOUTH), ("D", SOUTH)]] == [7, 6, 4, 0]
    assert row(engine, "C", SOUTH)["reserved"] == 0
    assert [k[:3] for k in ledger_kinds(engine, "A")] == [("receive", EAST, 10), ("sync", EAST, -3)]  # no row for an unchanged count
    with engine.begin() as conn:
        assert inv.sync_on_hand(conn, [("A", EAST, 7)], actor="wms:sync", reason="WMS 同步", now=NOW) == []
        with pytest.raises(ValueError):
            inv.sync_on_hand(conn, [("A", EAST, -1)], actor="wms:sync", reason="WMS 同步", now=NOW)


def test_a_write_off_cannot_take_stock_below_what_is_reserved(engine):
    receive(engine, ("A", EAST, 5))
    with engine.begin() as conn:
        inv.reserve(conn, {"o1": [Pick(1, "A", EAST, 4, 1)]}, actor="audit", now=NOW)
    with engine.begin() as conn:
        with pytest.raises(OrderHubError) as info:
            inv.adjust(conn, "A", EAST, -2, actor="ops", reason="破损", now=NOW)
        assert info.value.code == ErrorCode.INSUFFICIENT_STOCK
        assert "已占用 4" in info.value.message
        with pytest.raises(OrderHubError):
            inv.adjust(conn, "NOPE", EAST, -1, actor="ops", reason="破损", now=NOW)
        inv.adjust(conn, "A", EAST, -1, actor="ops", reason="破损", now=NOW)
    assert (row(engine, "A", EAST)["on_hand"], row(engine, "A", EAST)["reserved"]) == (4, 4)
    assert [k[0] for k in ledger_kinds(engine, "A")] == ["receive", "reserve", "adjust"]


def test_the_database_itself_refuses_more_reserved_than_on_hand(engine):
    receive(engine, ("A", EAST, 3))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.update(stock).where(stock.c.sku == "A").values(reserved=4))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.update(stock).where(stock.c.sku == "A").values(on_hand=-1, reserved=0))
    assert row(engine, "A", EAST)["reserved"] == 0


def test_safety_stock_is_kept_back_from_sale_and_sellable_adds_up_the_warehouses(engine):
    receive(engine, ("A", EAST, 5), ("A", SOUTH, 3), ("B", EAST, 1))
    with engine.begin() as conn:
        inv.set_safety(conn, "A", EAST, 2, actor="ops", now=NOW)
        inv.set_safety(conn, "B", EAST, 4, actor="ops", now=NOW)  # more than on hand: B is not sellable
        inv.set_safety(conn, "N", SOUTH, 1, actor="ops", now=NOW)  # no stock yet: the row is created
        inv.reserve(conn, {"o1": [Pick(1, "A", EAST, 3, 1)]}, actor="audit", now=NOW)
        with pytest.raises(inv.StockConflict):
            inv.reserve(conn, {"o2": [Pick(1, "A", EAST, 1, 1)]}, actor="audit", now=NOW)
    with engine.connect() as conn:
        assert inv.sellable(conn) == {"A": 3, "B": 0, "N": 0}
        assert inv.sellable(conn, ["A", "Z"]) == {"A": 3, "Z": 0}
        assert inv.load_available(conn, ["B"]) == {("B", EAST): -3}
        assert inv.ledger(conn, "A", warehouse=EAST)[1]["reason"] == "安全库存 0 → 2"


def test_stock_lists_page_by_sku_and_warehouse_and_filter_by_sku_prefix_and_warehouse(engine):
    receive(engine, *[(f"SKU-{n}", wh, n) for n in range(1001, 1013) for wh in (EAST, SOUTH)], ("sku-1001", EAST, 1), ("SKU_1", EAST, 1))
    with engine.connect() as conn:
        seen, cursor = [], None
        while True:
            page, cursor = inv.list_stock(conn, limit=5, cursor=cursor)
            seen += [(r["sku"], r["warehouse"]) for r in page]
            if cursor is None:
                break
        assert len(seen) == 26 and seen == sorted(seen)
        page, _ = inv.list_stock(conn, sku="SKU-100", warehouse=SOUTH)
        assert [r["sku"] for r in page] == [f"SKU-{n}" for n in range(1001, 1010)]
        assert page[0] == {"sku": "SKU-1001", "warehouse": SOUTH, "on_hand": 1001, "reserved": 0, "safety": 0, "available": 1001,
                           "updated_at": NOW}
        # the prefix is case-sensitive and `_` is a character, not a wildcard, on both backends
        assert [r["sku"] for r in inv.list_stock(conn, sku="sku")[0]] == ["sku-1001"]
        assert [r["sku"] for r in inv.list_stock(conn, sku="SKU_")[0]] == ["SKU_1"]
        with pytest.raises(OrderHubError) as info:
            inv.list_stock(conn, cursor="not-a-cursor")
        assert info.value.code == ErrorCode.INVALID_CURSOR


def test_the_invariant_check_finds_drift_and_reservations_without_stock(engine):
    receive(engine, ("A", EAST, 5))
    with engine.begin() as conn:
        inv.reserve(conn, {"o1": [Pick(1, "A", EAST, 2, 1)]}, actor="audit", now=NOW)
        conn.execute(sa.update(stock).values(reserved=3))
        conn.execute(sa.insert(reservations).values(order_id="o9", line_no=1, sku="GHOST", warehouse=EAST, qty=1, status="active",
                                                    created_at=NOW))
    with engine.connect() as conn:
        assert inv.check_invariant(conn) == [
            {"sku": "A", "warehouse": EAST, "reserved": 3, "active": 2},
            {"sku": "GHOST", "warehouse": EAST, "reserved": None, "active": 1},
        ]


def test_the_invariant_and_the_ledger_hold_after_a_random_sequence_of_operations(engine):
    rng = random.Random(20250318)
    keys = [(sku, wh) for sku in ("A", "B", "C") for wh in (EAST, SOUTH)]
    receive(engine, *[(sku, wh, 6) for sku, wh in keys])
    open_orders: list[str] = []
    counts = {"reserve": 0, "conflict": 0, "refused": 0}
    for step in range(120):
        op = rng.choice(["reserve", "reserve", "reserve", "release", "consume", "adjust", "sync", "safety"])
        with engine.begin() as conn:
            if op == "reserve":
                picks = {f"s{step}": [Pick(n, *rng.choice(keys), rng.randint(1, 3), 1) for n in range(1, rng.randint(2, 4))]}
                try:
                    inv.reserve(conn, picks, actor="audit", now=NOW)
                    open_orders.append(f"s{step}")
                    counts["reserve"] += 1
                except inv.StockConflict:
                    counts["conflict"] += 1
            elif op in ("release", "consume") and open_orders:
                order = open_orders.pop(rng.randrange(len(open_orders)))
                if op == "release":
                    inv.release(conn, [order], actor="cs", reason="取消", now=NOW)
                else:
                    inv.consume(conn, [order], actor="wms", now=NOW, package_no=rng.choice([None, 1]))
            elif op == "adjust":
                try:
                    inv.adjust(conn, *rng.choice(keys), rng.randint(-4, 4), actor="ops", reason="盘点", now=NOW)
                except OrderHubError:
                    counts["refused"] += 1
            elif op == "sync":
                inv.sync_on_hand(conn, [(*k, rng.randint(0, 8)) for k in rng.sample(keys, 3)], actor="wms", reason="同步", now=NOW)
            elif op == "safety":
                inv.set_safety(conn, *rng.choice(keys), rng.randint(0, 2), actor="ops", now=NOW)
        with engine.connect() as conn:
            assert inv.check_invariant(conn) == [], f"after step {step} ({op})"
    with engine.connect() as conn:
        sums = {(r.sku, r.warehouse): (r.on_hand, r.reserved) for r in conn.execute(
            sa.select(stock_ledger.c.sku, stock_ledger.c.warehouse, sa.func.sum(stock_ledger.c.on_hand_delta).label("on_hand"),
                      sa.func.sum(stock_ledger.c.reserved_delta).label("reserved")).group_by(stock_ledger.c.sku, stock_ledger.c.warehouse))}
        rows = {(r.sku, r.warehouse): (r.on_hand, r.reserved) for r in conn.execute(sa.select(stock.c.sku, stock.c.warehouse, stock.c.on_hand,
                                                                                                stock.c.reserved))}
    assert rows == sums  # the ledger explains every unit on hand and every unit reserved
    assert all(reserved <= on_hand for on_hand, reserved in rows.values())
    assert counts["reserve"] > 10 and counts["conflict"] > 0


def test_threads_racing_for_the_last_units_get_exactly_the_stock_and_no_more(engine):
    receive(engine, ("A", EAST, 30))
    outcome: list[str] = []

    def buyer(thread_no: int) -> None:
        for i in range(20):
            try:
                with engine.begin() as conn:
                    available = inv.load_available(conn, ["A"]).get(("A", EAST), 0)
                    if available < 1:
                        outcome.append("sold_out")
                        continue
                    inv.reserve(conn, {f"t{thread_no}-{i}": [Pick(1, "A", EAST, 1, 1)]}, actor="audit", now=NOW)
                outcome.append("reserved")
            except inv.StockConflict:
                outcome.append("conflict")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(buyer, range(4)))
    assert outcome.count("reserved") == 30
    assert (row(engine, "A", EAST)["on_hand"], row(engine, "A", EAST)["reserved"]) == (30, 30)
    with engine.connect() as conn:
        assert inv.check_invariant(conn) == []
