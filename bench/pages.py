"""`make bench-pages`: the console's API calls timed over real HTTP with 100,000 orders in the database.

Seeds N orders (30 days, a tenth of them today, with holds, parcels, phones and events) straight
through the repository's write path, starts `orderhub serve` on them (workers off), and times what
each console page asks for: the first page of orders, a deep page (cursor), each kind of search,
the exception queue, an order's detail page, the dashboard. Each figure is printed next to the
limit of the same run — the round trip of `/api/v1/health`, which touches no order — and the
target (a page under 1 s). Ends with one JSON line per backend.

`--browser` adds a phase in a real browser (Playwright driving /usr/bin/chromium headless, the
browser tests' launch flags): it logs in through the login page, then loads the orders list, an
order search, an order's page, the exception queue and the dashboard (`--browser-runs` full page
loads each, cache warm) and times navigation start → the page's data on screen, measured inside
the page (`performance.now()` on the first animation frame where the data's elements exist).
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
CHROMIUM = os.environ.get("ORDERHUB_CHROMIUM", "/usr/bin/chromium")
# the same flags as tests/browser/conftest.py
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--lang=zh-CN"]
BROWSER_USER, BROWSER_PASSWORD = "bench-ops", "bench-pages-1234"
# browser page -> the API call of the same page timed above
API_OF_PAGE = {"orders_list": "orders_first_page", "order_search": "search_order_no", "order_detail": "order_detail",
               "exception_queue": "exception_queue", "dashboard": "dashboard"}


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


def bench_backend(backend: str, n: int, browser_runs: int = 0) -> dict[str, Any]:
    print(f"\n=== {backend}: {n:,} orders ===", flush=True)
    vault = PiiVault([PII_KEY], HASH_KEY)
    with tempfile.TemporaryDirectory(prefix="orderhub-pages-") as tmp, database(backend, Path(tmp)) as url:
        sample = seed(url, n, vault)
        print(f"seeded in {sample['seed_s']} s", flush=True)
        if browser_runs:
            _browser_user(url)
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
                    figures[f"{name}_p50_ms"] = round(p50, 1)
                figures["slowest_p95_ms"] = max(v for k, v in figures.items() if k.endswith("_p95_ms"))
                if browser_runs:
                    api_p50 = {name: figures.get(f"{name}_p50_ms") for name in calls}
                    figures["browser"] = browser_phase(base, client, sample, first["items"][0], api_p50, figures, browser_runs)
        finally:
            hub.stop()
    return figures


def _browser_user(url: str) -> None:
    """A person to log in as (the API phase uses an API key; the browser logs in like a user)."""
    from orderhub.domain.access import Actor
    from orderhub.services import users

    engine = create_engine(url)
    try:
        users.create_user(engine, Actor("bench", "system"), username=BROWSER_USER, password=BROWSER_PASSWORD, role="admin")
    finally:
        engine.dispose()


def _ready(*selectors: str, text: str | None = None) -> str:
    """JS for wait_for_function: false until every selector matches (and the last one's text equals
    `text`); then [ms since navigation start, when the document's scripts had run (DOMContentLoaded),
    when the last API call was sent, when the last API answer had arrived] — where a page load's time goes."""
    checks = " && ".join(f"document.querySelector({json.dumps(s)})" for s in selectors)
    if text is not None:
        checks += (f" && [...document.querySelectorAll({json.dumps(selectors[-1])})]"
                   f".some((e) => e.textContent.trim() === {json.dumps(text)})")
    return f"""() => {{
        if (!({checks})) return false;
        const api = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/v1/'));
        const nav = performance.getEntriesByType('navigation')[0];
        return [performance.now(), nav ? nav.domContentLoadedEventEnd : 0, Math.max(0, ...api.map((e) => e.startTime)),
                Math.max(0, ...api.map((e) => e.responseEnd))];
    }}"""


def browser_phase(base: str, client: httpx.Client, sample: dict[str, Any], order: dict[str, Any], api_p50: dict[str, Any],
                  figures: dict[str, Any], runs: int) -> dict[str, Any]:
    """Full page loads in chromium, navigation start → the data on screen, next to the API call of the same page."""
    from playwright.sync_api import sync_playwright

    today = datetime.now(SHANGHAI).date()
    pages = {  # name -> (path, when its data is on screen)
        "orders_list": ("/orders", _ready('[data-testid="orders-table"] [data-testid="order-link"]')),
        "order_search": (f"/orders?text={sample['original_id']}", _ready('[data-testid="order-link"]', text=sample["original_id"])),
        "order_detail": (f"/orders/{order['id']}", _ready('[data-testid="order-detail"]', '[data-testid="timeline-event"]')),
        "exception_queue": ("/exceptions", _ready('[data-testid="exceptions-table"] tr.ant-table-row')),
        "dashboard": ("/", _ready('[data-testid="heatmap"] canvas')),
    }
    out: dict[str, Any] = {"runs": runs}
    started = time.perf_counter()
    print(f"\nbrowser: chromium headless, {runs} full page loads each (cache warm), navigation start → data on screen, target {TARGET_MS:.0f} ms")
    print(f"{'page':24} {'p50 ms':>8} {'p95 ms':>8}   {'scripts':>8} {'asked':>8} {'answered':>8} {'calls':>5}   {'API p50':>8} {'API p95':>8}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN", timezone_id="Asia/Shanghai")
            context.set_default_timeout(60_000)
            page = context.new_page()
            asked: list[str] = []
            page.on("request", lambda request: asked.append(request.url) if "/api/v1/" in request.url else None)
            page.goto(f"{base}/login")
            page.get_by_test_id("login-username").fill(BROWSER_USER)
            page.get_by_test_id("login-password").fill(BROWSER_PASSWORD)
            page.get_by_test_id("login-submit").click()
            page.wait_for_url(lambda url: "/login" not in url)
            for name, (path, ready) in pages.items():
                took: list[list[float]] = []
                calls = 0
                for run in range(runs + 1):  # the first load warms the browser's cache and the page's code chunk
                    if name == "dashboard":
                        client.get("/api/v1/dashboard", params={"day": (today - timedelta(days=1)).isoformat()})  # its 5 s cache: recomputed
                    asked.clear()
                    page.goto(f"{base}{path}", wait_until="commit")
                    marks = page.wait_for_function(ready, polling="raf").json_value()
                    if run:
                        took.append([float(m) for m in marks])
                        calls = max(calls, len(asked))
                shown = sorted(t[0] for t in took)
                p50, p95 = statistics.median(shown), shown[math.ceil(len(shown) * 0.95) - 1]  # nearest rank: of 10 loads, the slowest
                scripts, asked_at, answered = (statistics.median(t[i] for t in took) for i in (1, 2, 3))
                api = API_OF_PAGE[name]
                print(f"{name:24} {p50:8.1f} {p95:8.1f}   {scripts:8.1f} {asked_at:8.1f} {answered:8.1f} {calls:5d}   "
                      f"{api_p50[api]:8.1f} {figures[f'{api}_p95_ms']:8.1f}", flush=True)
                out[f"{name}_p50_ms"], out[f"{name}_p95_ms"] = round(p50, 1), round(p95, 1)
                out[f"{name}_answered_p50_ms"] = round(answered, 1)
        finally:
            browser.close()
    out["slowest_p95_ms"] = max(v for k, v in out.items() if k.endswith("_p95_ms"))
    out["phase_s"] = round(time.perf_counter() - started, 1)
    print(f"browser phase: {out['phase_s']} s (scripts: DOMContentLoaded; asked / answered: the last API call sent / answered; "
          "calls: API calls per load)")
    return out


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
    parser.add_argument("--browser", action="store_true", help="also time the pages in chromium (needs `make console` and `make browser`)")
    parser.add_argument("--browser-runs", type=int, default=10, help="page loads per page in the browser phase")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = [bench_backend(b, args.orders, args.browser_runs if args.browser else 0) for b in backends]
    print()
    for r in results:
        print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
