"""Never oversell, never deadlock: processes x threads reserving the same hot SKUs on PostgreSQL.

Processes are spawned (no state shared with the parent but the database URL), each with its own
engine and threads, so the only thing keeping them from selling the same unit twice is the
database: the conditional UPDATE in `inventory_repo.reserve` and the CHECK behind it.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa

from orderhub.adapters.db import inventory_repo as inv
from orderhub.adapters.db import migrate
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.tables import reservations, stock
from orderhub.domain.inventory import Need, Pick, allocate

pytestmark = pytest.mark.postgres

HOT = [f"HOT-{n}" for n in range(1, 6)]
EAST, SOUTH = "WH-EAST", "WH-SOUTH"
WAREHOUSES = [EAST, SOUTH]
ON_HAND = {EAST: 50, SOUTH: 12}
SAFETY = {EAST: 0, SOUTH: 2}
PROCESSES, THREADS, ITERATIONS = 4, 4, 50


@pytest.fixture
def pg_url(postgres_url):
    migrate.upgrade(postgres_url)
    return postgres_url


def _now() -> datetime:
    return datetime.now(UTC)


def _shop_thread(engine: sa.Engine, process_no: int, thread_no: int) -> tuple[Counter[str], dict[str, int]]:
    """One thread of one process: reserve random orders (re-reading stock on a conflict), cancel some."""
    rng = random.Random(process_no * 1000 + thread_no)
    stats: Counter[str] = Counter()
    held: dict[str, int] = {}  # order id -> units this thread believes are reserved for it
    for i in range(ITERATIONS):
        # Cancellations in the first half only: the run ends with the stock sold out, where an
        # oversell would still be visible at the end.
        if held and i < ITERATIONS // 2 and rng.random() < 0.3:
            order_id = rng.choice(sorted(held))
            with engine.begin() as conn:
                released = inv.release(conn, [order_id], actor=f"cs:{process_no}.{thread_no}", reason="买家取消", now=_now())
            assert released == held.pop(order_id)
            stats["releases"] += 1
            stats["released_units"] += released
            continue
        needs = [Need(n, rng.choice(HOT), rng.randint(1, 3)) for n in range(1, rng.randint(1, 3) + 1)]
        order_id = f"p{process_no}t{thread_no}o{i}"
        for _attempt in range(5):
            try:
                with engine.begin() as conn:
                    allocation = allocate(needs, inv.load_available(conn, HOT), preferred=rng.choice(WAREHOUSES), warehouses=WAREHOUSES)
                    if allocation.ok:
                        inv.reserve(conn, {order_id: allocation.picks}, actor=f"audit:{process_no}.{thread_no}", now=_now())
            except inv.StockConflict:
                stats["conflicts"] += 1  # someone took it between our read and our update: read again
                continue
            if allocation.ok:
                held[order_id] = sum(p.qty for p in allocation.picks)
                stats["orders"] += 1
                stats["reserved_units"] += held[order_id]
                stats["split"] += allocation.split
            else:
                stats["sold_out"] += 1  # nothing left for it: the buyer is told, no oversell
            break
        else:
            stats["gave_up"] += 1
    return stats, held


def _shop_process(url: str, process_no: int) -> tuple[dict[str, int], dict[str, int]]:
    engine = create_engine(url)
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(lambda t: _shop_thread(engine, process_no, t), range(THREADS)))
    finally:
        engine.dispose()
    stats: Counter[str] = Counter()
    held: dict[str, int] = {}
    for s, h in results:
        stats.update(s)
        held.update(h)
    return dict(stats), held


@pytest.mark.timeout(120)
def test_processes_and_threads_reserving_the_same_hot_skus_never_oversell(pg_url):
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        inv.sync_on_hand(conn, [(sku, wh, ON_HAND[wh]) for sku in HOT for wh in WAREHOUSES], actor="wms", reason="开仓", now=_now())
        for sku in HOT:
            inv.set_safety(conn, sku, SOUTH, SAFETY[SOUTH], actor="ops", now=_now())
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        results = pool.starmap(_shop_process, [(pg_url, p) for p in range(PROCESSES)])
    elapsed = time.perf_counter() - started
    stats: Counter[str] = Counter()
    held: dict[str, int] = {}
    for s, h in results:
        stats.update(s)
        held.update(h)

    with engine.connect() as conn:
        rows = conn.execute(sa.select(stock)).mappings().all()
        active = dict(conn.execute(
            sa.select(reservations.c.order_id, sa.func.sum(reservations.c.qty)).where(reservations.c.status == "active")
            .group_by(reservations.c.order_id)
        ).all())
        assert inv.check_invariant(conn) == []
    engine.dispose()
    total_reserved = sum(r["reserved"] for r in rows)
    supply = sum((ON_HAND[wh] - SAFETY[wh]) * len(HOT) for wh in WAREHOUSES)
    print(
        f"\noversell test: {PROCESSES} processes x {THREADS} threads x {ITERATIONS} iterations in {elapsed:.1f}s: "
        f"{stats['orders']} orders reserved ({stats['reserved_units']} units, {stats['split']} split), "
        f"{stats['releases']} cancelled ({stats['released_units']} units), {stats['sold_out']} sold out, "
        f"{stats['conflicts']} stock conflicts retried, {stats['gave_up']} gave up; "
        f"reserved at the end {total_reserved} of {supply} sellable units"
    )
    for r in rows:
        assert r["reserved"] <= r["on_hand"] - r["safety"], f"oversold {r['sku']}@{r['warehouse']}"
        assert r["on_hand"] == ON_HAND[r["warehouse"]]  # reserving never touches on hand
    assert total_reserved == stats["reserved_units"] - stats["released_units"]
    assert active == held  # every order holds exactly what its buyer was promised, and no other order holds anything
    assert stats["sold_out"] > 0 and stats["releases"] > 0  # the stock really ran out, and came back, under contention
    assert total_reserved >= 0.9 * supply  # it ended sold out, where an oversell would show


# -- deadlocks ------------------------------------------------------------------------------------

SLOW_UPDATES = """
CREATE FUNCTION slow_stock_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.003); RETURN NEW; END $$;
CREATE TRIGGER slow_stock_update BEFORE UPDATE ON stock FOR EACH ROW EXECUTE FUNCTION slow_stock_update();
"""


def _race(engine: sa.Engine, work, iterations: int) -> Counter[str]:
    """Two threads, each iteration started together, each doing `work(conn, forward)` in its own
    transaction with a low deadlock_timeout, so a lock cycle surfaces as DeadlockDetected at once."""
    barrier = threading.Barrier(2)
    outcome: Counter[str] = Counter()
    lock = threading.Lock()

    def thread(forward: bool) -> None:
        for i in range(iterations):
            barrier.wait(timeout=30)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql("SET LOCAL deadlock_timeout = '10ms'")
                    conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
                    work(conn, forward, i)
                kind = "ok"
            except sa.exc.DBAPIError as exc:
                if not isinstance(exc.orig, psycopg.errors.DeadlockDetected):
                    raise
                kind = "deadlock"
            with lock:
                outcome[kind] += 1

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(thread, True), pool.submit(thread, False)]:
            future.result()
    return outcome


@pytest.fixture
def two_skus(pg_url):
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        inv.sync_on_hand(conn, [("X", EAST, 100_000), ("Y", EAST, 100_000)], actor="wms", reason="开仓", now=_now())
        # Each row update sleeps 3 ms while holding its row lock: the window in which two
        # transactions locking in opposite order would deadlock is made wide on purpose.
        conn.exec_driver_sql(SLOW_UPDATES)
    yield engine
    engine.dispose()


@pytest.mark.timeout(60)
def test_orders_touching_the_same_skus_in_opposite_order_never_deadlock(two_skus):
    def reserve(conn: sa.Connection, forward: bool, i: int) -> None:
        lines = [Pick(1, "X", EAST, 1, 1), Pick(2, "Y", EAST, 1, 1)]
        inv.reserve(conn, {f"{forward}-{i}": lines if forward else lines[::-1]}, actor="audit", now=_now())

    outcome = _race(two_skus, reserve, iterations=150)
    print(f"\ndeadlock test: {outcome['ok']} transactions, {outcome['deadlock']} deadlocks")
    assert outcome == {"ok": 300}
    with two_skus.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(stock.c.reserved))).scalar_one() == 600
        assert inv.check_invariant(conn) == []


@pytest.mark.timeout(60)
def test_the_same_race_with_rows_locked_in_line_order_does_deadlock_so_the_test_above_has_teeth(two_skus):
    stop = threading.Event()

    def unsorted(conn: sa.Connection, forward: bool, i: int) -> None:
        if stop.is_set():
            return
        for sku in ("X", "Y") if forward else ("Y", "X"):
            conn.execute(sa.update(stock).where(stock.c.sku == sku).values(reserved=stock.c.reserved + 1))

    def until_first_deadlock(conn: sa.Connection, forward: bool, i: int) -> None:
        try:
            unsorted(conn, forward, i)
        except sa.exc.DBAPIError:
            stop.set()
            raise

    outcome = _race(two_skus, until_first_deadlock, iterations=100)
    print(f"\ndeadlock control: {outcome['deadlock']} deadlocks when rows are locked in line order")
    assert outcome["deadlock"] >= 1
