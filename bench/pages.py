"""`make bench-pages`: the console's API calls timed over real HTTP with 100,000 orders in the database.

Seeds N orders (30 days, a tenth of them today, with holds, parcels, phones and events) straight
through the repository's write path, starts `orderhub serve` on them (workers off), and times what
each console page asks for: the first page of orders, a deep page (cursor), each kind of search,
the exception queue, an order's detail page, the dashboard. Each figure is printed next to the
limit of the same run — the round trip of `/api/v1/health`, which touches no order — and the
target (a page under 1 s). Ends with one JSON line per backend.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).parent))

from stack import ORDERHUB, Process, admin_headers, database, free_port, wait_http  # noqa: E402

from orderhub.adapters.db import migrate  # noqa: E402
from orderhub.adapters.db.engine import create_engine  # noqa: E402
from orderhub.adapters.db.orders_repo import WritePlan, write_plan  # noqa: E402
from orderhub.adapters.db.queries import SHANGHAI  # noqa: E402
from orderhub.adapters.db.tables import order_events, parcels  # noqa: E402
from orderhub.adapters.pii_crypto import PiiVault  # noqa: E402
from orderhub.domain.merge import apply_snapshot, content_hash  # noqa: E402
from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder, Shipment  # noqa: E402
from orderhub.domain.status import Status  # noqa: E402

CHANNELS = ["douyin", "taobao", "pdd", "jd", "youzan", "wechat_channels", "kuaishou"]
HOLDS = ["risk_review", "remote_area", "out_of_stock", "address_invalid"]
TARGET_MS = 1000.0
CHUNK = 2000
PII_KEY = Fernet.generate_key().decode()
HASH_KEY = "bench-hash-key-0123456789"


def synthetic(i: int, now: datetime, rng: random.Random) -> tuple[NormalizedOrder, tuple[dict[str, str], ...]]:
    today = i % 10 == 0
    created = now - timedelta(seconds=rng.uniform(0, 20 * 3600) if today else rng.uniform(86_400, 30 * 86_400))
    roll = rng.random()
    status = (Status.SHIPPED if roll < 0.45 else Status.DELIVERED if roll < 0.7 else Status.READY if roll < 0.82
              else Status.PICKING if roll < 0.9 else Status.CANCELLED if roll < 0.95 else Status.ON_HOLD)
    holds = ({"code": rng.choice(HOLDS), "reason": "bench", "since": created.isoformat()},) if status is Status.ON_HOLD else ()
    price = rng.randrange(990, 29_900)
    shipped = status in (Status.SHIPPED, Status.DELIVERED)
    order = NormalizedOrder(
        channel=CHANNELS[i % len(CHANNELS)], shop_id="bench", original_id=f"B{i:09d}", status=status,
        platform_status={"bench": status.value}, created_at=created, paid_at=created + timedelta(seconds=30),
        updated_at=created + timedelta(hours=2), amounts=Amounts(goods=price, discount=0, shipping=0, paid=price),
        lines=(Line(f"SKU-{i % 500:03d}", "压测商品", 1, price, price, platform_line_id="1"),),
        address=Address("浙江省", "杭州市", "西湖区", "文三路***"), buyer=Buyer(f"buyer-{i % 40_000}", "张*", "138****0000"),
        shipment=Shipment("ZTO", f"ZT{i:012d}") if shipped else None, raw={"bench": i},
    )
    return order, holds


def seed(url: str, n: int, vault: PiiVault) -> dict[str, Any]:
    migrate.upgrade(url)
    engine = create_engine(url)
    rng = random.Random(7)
    now = datetime.now(UTC)
    started = time.perf_counter()
    sample: dict[str, Any] = {}
    try:
        for start in range(0, n, CHUNK):
            plan = WritePlan()
            parcel_rows: list[dict[str, Any]] = []
            shipped_events: list[dict[str, Any]] = []
            for i in range(start, min(n, start + CHUNK)):
                order, holds = synthetic(i, now, rng)
                change = apply_snapshot(None, order, "platform:bench")
                change = replace(change, holds=holds, content_hash=content_hash(order))
                plan.creates.append((change, None))
                plan.events.extend((order.id, e) for e in change.events)
                phone = f"138{i:08d}"
                plan.pii[order.id] = {"sealed": None, "phone_hash": vault.phone_hash(phone), "last4_hash": vault.last4_hash(phone[-4:]),
                                      "state": "done"}
                if order.shipment:
                    shipped_at = order.paid_at + timedelta(hours=rng.uniform(2, 60))
                    parcel_rows.append({"waybill_no": order.shipment.waybill_no, "carrier": "ZTO", "order_id": order.id, "package_no": 1,
                                        "state": "delivered" if order.status is Status.DELIVERED else "in_transit",
                                        "shipped_at": shipped_at, "updated_at": now})
                    shipped_events.append({"order_id": order.id, "at": shipped_at, "actor": "wms:bench", "kind": "status",
                                           "from_status": "picking", "to_status": "shipped"})
                if i == n // 2:
                    sample = {"original_id": order.original_id, "id": order.id, "phone_last4": phone[-4:],
                              "waybill_no": order.shipment.waybill_no if order.shipment else None}
            with engine.begin() as conn:
                write_plan(conn, plan, now)
                if parcel_rows:
                    conn.execute(parcels.insert(), parcel_rows)
                    conn.execute(order_events.insert(), shipped_events)
    finally:
        engine.dispose()
    sample["seed_s"] = round(time.perf_counter() - started, 1)
    return sample


def timed(client: httpx.Client, path: str, params: Any = None, runs: int = 15) -> tuple[float, float, Any]:
    """p50 and p95 of `runs` calls; `params` a list cycles (e.g. to get past a cache)."""
    cycle = params if isinstance(params, list) else [params]
    client.get(path, params=cycle[-1])  # warm: the first call pays imports and plan caches
    took = []
    body: Any = None
    for run in range(runs):
        t = time.perf_counter()
        response = client.get(path, params=cycle[run % len(cycle)])
        took.append((time.perf_counter() - t) * 1000)
        response.raise_for_status()
        body = response.json()
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.95) - 1], body


def bench_backend(backend: str, n: int) -> dict[str, Any]:
    print(f"\n=== {backend}: {n:,} orders ===", flush=True)
    vault = PiiVault([PII_KEY], HASH_KEY)
    with tempfile.TemporaryDirectory(prefix="orderhub-pages-") as tmp, database(backend, Path(tmp)) as url:
        sample = seed(url, n, vault)
        print(f"seeded in {sample['seed_s']} s", flush=True)
        port = free_port()
        config = {"database_url": url, "data_dir": tmp, "pii_key": PII_KEY, "hash_key": HASH_KEY}
        (Path(tmp) / "orderhub.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        hub = Process([*ORDERHUB, "serve", "--port", str(port), "--config", str(Path(tmp) / "orderhub.yaml")],
                      Path(tmp) / "hub.log")
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/api/v1/health")
            with httpx.Client(base_url=base, timeout=30, headers=admin_headers(url)) as client:
                floor, _, _ = timed(client, "/api/v1/health")
                _, _, first = timed(client, "/api/v1/orders", {"limit": 50}, runs=1)
                today = datetime.now(SHANGHAI).date()
                calls = {
                    "orders_first_page": ("/api/v1/orders", {"limit": 50}),
                    "orders_page_20": ("/api/v1/orders", {"limit": 50, "cursor": _deep_cursor(client, 20)}),
                    "search_order_no": ("/api/v1/orders", {"q": sample["original_id"]}),
                    "search_internal_id": ("/api/v1/orders", {"q": sample["id"]}),
                    "search_phone_last4": ("/api/v1/orders", {"phone_last4": sample["phone_last4"]}),
                    "search_waybill_no": ("/api/v1/orders", {"q": sample["waybill_no"] or "none"}),
                    "filter_status_shipped": ("/api/v1/orders", {"status": "shipped", "limit": 50}),
                    "exception_queue": ("/api/v1/exceptions", {"limit": 50}),
                    "order_detail": (f"/api/v1/orders/{first['items'][0]['id']}", None),
                    "order_events": (f"/api/v1/orders/{first['items'][0]['id']}/events", None),
                    "order_tracking": (f"/api/v1/orders/{first['items'][0]['id']}/tracking", None),
                    # today (10% of the orders) and yesterday in turn: each call recomputes (the 5 s cache holds one day)
                    "dashboard": ("/api/v1/dashboard", [{"day": today.isoformat()}, {"day": (today - timedelta(days=1)).isoformat()}]),
                }
                figures: dict[str, Any] = {"mode": backend, "orders": n, "health_floor_ms": round(floor, 1), "target_ms": TARGET_MS}
                print(f"{'call':24} {'p50 ms':>8} {'p95 ms':>8}   floor (health) {floor:.1f} ms, target {TARGET_MS:.0f} ms")
                for name, (path, params) in calls.items():
                    p50, p95, body = timed(client, path, params)
                    found = len(body["items"]) if isinstance(body, dict) and "items" in body else "-"
                    print(f"{name:24} {p50:8.1f} {p95:8.1f}   items {found}", flush=True)
                    figures[f"{name}_p95_ms"] = round(p95, 1)
                figures["slowest_p95_ms"] = max(v for k, v in figures.items() if k.endswith("_p95_ms"))
        finally:
            hub.stop()
    return figures


def _deep_cursor(client: httpx.Client, pages: int) -> str:
    cursor = None
    for _ in range(pages):
        body = client.get("/api/v1/orders", params={"limit": 50, **({"cursor": cursor} if cursor else {})}).json()
        cursor = body["next_cursor"]
    return cursor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = [bench_backend(b, args.orders) for b in backends]
    print()
    for r in results:
        print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
