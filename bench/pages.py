"""`make bench-pages`: the console's API calls timed over real HTTP with 100,000 orders in the database.

Seeds N orders (30 days, a tenth of them today, with holds, parcels, phones and events) straight
through the repository's write path, and beside them what running the shop for those 30 days leaves
(bulk inserts into the project's own tables): the SKUs' stock in two warehouses with a reservation and
ledger rows per audited order (reserve; consume when shipped, release when cancelled), one inbox row
per order, exception tickets for 2 % of the shipped orders, 0.2 % of the intake in quarantine, a team
of console users and an audit log of about one entry per 25 orders. Then it starts `orderhub serve`
on them (embedded: its workers run, with nothing new to process) with the demo shops configured (a
platform simulator behind them, no new orders) and times
what each console page asks for: the first page of orders, a deep page (cursor), each kind of search,
the exception queue, an order's detail page, the dashboard, stock and a SKU's ledger, the rule sets,
logistics tickets, channel health and shops, notification templates, the audit log, users, the
quarantine and the buyer's tracking lookup. Each figure is printed next to the limit of the same run
— the round trip of `/api/v1/health`, which touches no order — and the target (a page under 1 s).
Ends with one JSON line per backend.

`--browser` adds a phase in a real browser (Playwright driving /usr/bin/chromium headless, the
browser tests' launch flags): it logs in through the login page, then loads every page of the
console — orders list, order search, order page, exception queue, dashboard, inventory, rules (the
JDM editor's graph drawn), logistics, channels, templates, audit log, users, quarantine — and the
buyer's /track page with a lookup of the sample order (`--browser-runs` full page loads each, cache
warm) and times navigation start → the page's data on screen, measured inside the page
(`performance.now()` on the first animation frame where the data's elements exist).
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
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
import yaml
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).parent))

from stack import ORDERHUB, Process, admin_headers, database, free_port, wait_http  # noqa: E402

from orderhub.adapters import passwords  # noqa: E402
from orderhub.adapters.db import migrate  # noqa: E402
from orderhub.adapters.db.engine import create_engine  # noqa: E402
from orderhub.adapters.db.orders_repo import WritePlan, write_plan  # noqa: E402
from orderhub.adapters.db.queries import SHANGHAI  # noqa: E402
from orderhub.adapters.db.tables import (  # noqa: E402
    audit_log, inbox, order_events, orders, parcels, quarantine, reservations, skus, stock, stock_ledger, sync_cursors, tickets, users,
    warehouses,
)
from orderhub.adapters.pii_crypto import PiiVault  # noqa: E402
from orderhub.demo.catalogue import WAREHOUSES  # noqa: E402
from orderhub.demo.shops import DEMO_SHOPS  # noqa: E402
from orderhub.domain import logistics  # noqa: E402
from orderhub.domain.merge import apply_snapshot, content_hash  # noqa: E402
from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder, Shipment  # noqa: E402
from orderhub.domain.status import Status  # noqa: E402

CHANNELS = ["douyin", "taobao", "pdd", "jd", "youzan", "wechat_channels", "kuaishou"]
SHOP_OF = {shop["channel"]: shop["shop_id"] for shop in DEMO_SHOPS}  # each channel's orders come from its demo shop
PULLED = {"jd", "kuaishou"}  # the pull channels (adapters/channels/registry.py); the others push
HOLDS = ["risk_review", "remote_area", "out_of_stock", "address_invalid"]
SKU_COUNT = 500
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
               "exception_queue": "exception_queue", "dashboard": "dashboard", "inventory": "inventory", "rules": "rule_set",
               "logistics": "tickets_open", "channels": "channels", "templates": "templates", "audit_log": "audit_log",
               "users": "users", "quarantine": "quarantine_open", "track": "track"}

# The people who run the shop in the console (username, display name, role): the audit log's actors.
TEAM = [("ma.admin", "马管理员", "admin"), ("li.ops", "李运营", "ops"), ("wang.ops", "王运营", "ops"), ("zhang.cs", "张客服", "cs"),
        ("chen.cs", "陈客服", "cs"), ("liu.cs", "刘客服", "cs"), ("zhao.cs", "赵客服", "cs"), ("huang.cs", "黄客服", "cs"),
        ("zhou.wh", "周仓管", "warehouse"), ("wu.wh", "吴仓管", "warehouse"), ("xu.fin", "徐财务", "finance"), ("sun.boss", "孙老板", "viewer")]
CS = [u for u, _, role in TEAM if role == "cs"]
OPS = [u for u, _, role in TEAM if role == "ops"]
# The stall rule set's codes (adapters/rules/stall_defaults/stall.json): kind, severity, rule, reason, hours after shipping, weight.
TICKET_KINDS = [
    ("stall_in_transit_24h", "warn", "in-transit-24h", "包裹运输中超过24小时无轨迹更新", (26, 40), 35),
    ("stall_in_transit_48h", "critical", "in-transit-48h", "包裹运输中超过48小时无轨迹更新", (50, 72), 30),
    ("stall_no_first_scan", "critical", "no-first-scan", "发货超过24小时仍无快递揽收扫描", (24, 30), 20),
    ("scan_after_ship", "warn", "scan-after-ship", "发货时间早于快递首次揽收扫描超过2小时（疑似虚假发货）", (3, 12), 15),
]
# What lands in quarantine (item kind, code, message, field).
QUARANTINED = [
    ("order", "sku_unmapped", "商品编码未映射到商家SKU platform SKU {x} maps to no merchant SKU", "lines[0].sku"),
    ("order", "amounts_mismatch", "实付金额与明细合计不符 paid {x} ≠ goods − discount + shipping", "amounts.paid"),
    ("message", "unknown_status", "未知订单状态 unknown order status {x}", "status"),
    ("order", "missing_field", "缺少收货人手机号 receiver phone is missing", "receiver.phone"),
    ("order", "invalid_time", "下单时间无法解析 created time {x} is not a time", "created_at"),
    ("body", "malformed_envelope", "推送报文不是合法的 JSON push body is not JSON", None),
]
AUDIT_PER_ORDER = 1 / 25  # entries in the audit log per order: people's actions over the same 30 days
TICKET_EVERY, QUARANTINE_EVERY = 50, 500  # a ticket for one shipped order in 50; one intake item in 500 quarantined


def synthetic(i: int, now: datetime, rng: random.Random) -> tuple[NormalizedOrder, tuple[dict[str, str], ...]]:
    today = i % 10 == 0
    created = now - timedelta(seconds=rng.uniform(0, 20 * 3600) if today else rng.uniform(86_400, 30 * 86_400))
    roll = rng.random()
    status = (Status.SHIPPED if roll < 0.45 else Status.DELIVERED if roll < 0.7 else Status.READY if roll < 0.82
              else Status.PICKING if roll < 0.9 else Status.CANCELLED if roll < 0.95 else Status.ON_HOLD)
    holds = ({"code": rng.choice(HOLDS), "reason": "bench", "since": created.isoformat()},) if status is Status.ON_HOLD else ()
    price = rng.randrange(990, 29_900)
    shipped = status in (Status.SHIPPED, Status.DELIVERED)
    channel = CHANNELS[i % len(CHANNELS)]
    order = NormalizedOrder(
        channel=channel, shop_id=SHOP_OF[channel], original_id=f"B{i:09d}", status=status,
        platform_status={"bench": status.value}, created_at=created, paid_at=created + timedelta(seconds=30),
        updated_at=created + timedelta(hours=2), amounts=Amounts(goods=price, discount=0, shipping=0, paid=price),
        lines=(Line(f"SKU-{i % SKU_COUNT:03d}", "压测商品", 1, price, price, platform_line_id="1"),),
        address=Address("浙江省", "杭州市", "西湖区", "文三路***"), buyer=Buyer(f"buyer-{i % 40_000}", "张*", "138****0000"),
        shipment=Shipment("ZTO", f"ZT{i:012d}") if shipped else None, raw={"bench": i},
    )
    return order, holds


def seed(url: str, n: int, vault: PiiVault) -> dict[str, Any]:
    migrate.upgrade(url)
    engine = create_engine(url)
    rng = random.Random(7)
    more = random.Random(11)  # the rows beside the orders: `rng` draws what it drew for the orders of earlier runs
    now = datetime.now(UTC)
    started = time.perf_counter()
    sample: dict[str, Any] = {}
    received = n // SKU_COUNT + 200  # units per SKU and warehouse the WMS counted at the start: more than its orders take
    active: dict[tuple[str, str], int] = defaultdict(int)  # (sku, warehouse) -> units in active reservations
    consumed: dict[tuple[str, str], int] = defaultdict(int)  # (sku, warehouse) -> units shipped
    refs: list[tuple[str, datetime, Status]] = []  # every order (id, created, status): what the audit log names
    ticket_rows: list[dict[str, Any]] = []
    try:
        with engine.begin() as conn:
            _seed_catalogue(conn, now, received)
            _seed_team(conn, now)
        for start in range(0, n, CHUNK):
            plan = WritePlan()
            parcel_rows: list[dict[str, Any]] = []
            shipped_events: list[dict[str, Any]] = []
            reservation_rows: list[dict[str, Any]] = []
            ledger_rows: list[dict[str, Any]] = []
            inbox_rows: list[dict[str, Any]] = []
            placed: list[dict[str, Any]] = []
            for i in range(start, min(n, start + CHUNK)):
                order, holds = synthetic(i, now, rng)
                change = apply_snapshot(None, order, "platform:bench")
                change = replace(change, holds=holds, content_hash=content_hash(order))
                plan.creates.append((change, None))
                plan.events.extend((order.id, e) for e in change.events)
                phone = f"138{i:08d}"
                plan.pii[order.id] = {"sealed": None, "phone_hash": vault.phone_hash(phone), "last4_hash": vault.last4_hash(phone[-4:]),
                                      "state": "done"}
                shipped_at = None
                if order.shipment:
                    # never later than now: an order of this morning can have shipped already, not tomorrow
                    shipped_at = min(order.paid_at + timedelta(hours=rng.uniform(2, 60)), now - timedelta(minutes=1))
                    parcel_rows.append({"waybill_no": order.shipment.waybill_no, "carrier": "ZTO", "order_id": order.id, "package_no": 1,
                                        "state": "delivered" if order.status is Status.DELIVERED else "in_transit",
                                        "shipped_at": shipped_at, "updated_at": now})
                    shipped_events.append({"order_id": order.id, "at": shipped_at, "actor": "wms:bench", "kind": "status",
                                           "from_status": "picking", "to_status": "shipped"})
                    if i % TICKET_EVERY == 7:
                        ticket = _ticket(order, shipped_at, now, more)
                        if ticket is not None:
                            ticket_rows.append(ticket)
                if i == n // 2:
                    sample = {"original_id": order.original_id, "id": order.id, "phone_last4": phone[-4:],
                              "waybill_no": order.shipment.waybill_no if order.shipment else None}
                refs.append((order.id, order.created_at, order.status))
                inbox_rows.append(_inbox_row(order))
                if order.status is not Status.ON_HOLD:  # audited: a warehouse chosen and the line reserved there
                    warehouse = "WH-EAST" if (i // SKU_COUNT) % 10 < 7 else "WH-SOUTH"  # 7 in 10 of each SKU's orders from 华东
                    placed.append({"b_id": order.id, "b_warehouse": warehouse})
                    key = (order.lines[0].sku or "", warehouse)
                    reservation, ledger = _stock_moves(order, key, shipped_at, more)
                    reservation_rows.append(reservation)
                    ledger_rows.extend(ledger)
                    if reservation["status"] == "active":
                        active[key] += 1
                    elif reservation["status"] == "consumed":
                        consumed[key] += 1
            with engine.begin() as conn:
                write_plan(conn, plan, now)
                if parcel_rows:
                    conn.execute(parcels.insert(), parcel_rows)
                    conn.execute(order_events.insert(), shipped_events)
                if placed:
                    conn.execute(sa.update(orders).where(orders.c.id == sa.bindparam("b_id")).values(warehouse=sa.bindparam("b_warehouse")),
                                 placed)
                    conn.execute(reservations.insert(), reservation_rows)
                    conn.execute(stock_ledger.insert(), ledger_rows)
                conn.execute(inbox.insert(), inbox_rows)
        with engine.begin() as conn:
            conn.execute(sa.update(stock).where(stock.c.sku == sa.bindparam("b_sku"), stock.c.warehouse == sa.bindparam("b_warehouse"))
                         .values(on_hand=sa.bindparam("b_on_hand"), reserved=sa.bindparam("b_reserved")), [
                {"b_sku": sku, "b_warehouse": warehouse, "b_on_hand": received - consumed[(sku, warehouse)], "b_reserved": active[(sku, warehouse)]}
                for sku, warehouse in {*active, *consumed}
            ])
            people = _seed_tickets(conn, ticket_rows)
            people += _seed_quarantine(conn, n, now, more)
            counts = _seed_audit_log(conn, n, now, refs, people, more)
        if engine.dialect.name == "postgresql":
            # 30 days of running leave PostgreSQL's tables vacuumed and analysed (autovacuum); measured straight
            # after a bulk load they would be neither (SQLite is measured as it is: nothing analyses it)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE"))
    finally:
        engine.dispose()
    sample["seed_s"] = round(time.perf_counter() - started, 1)
    sample["seeded"] = {"reservations": sum(1 for _, _, s in refs if s is not Status.ON_HOLD), "tickets": len(ticket_rows),
                        "inbox": n, **counts}
    return sample


def _seed_catalogue(conn: sa.Connection, now: datetime, received: int) -> None:
    """The warehouses, the orders' SKUs, and each SKU's opening stock in both warehouses (the WMS's count, a sync in the ledger)."""
    opened = now - timedelta(days=31)
    conn.execute(warehouses.insert(), WAREHOUSES)
    codes = [f"SKU-{k:03d}" for k in range(SKU_COUNT)]
    conn.execute(skus.insert(), [{"code": c, "title": "压测商品", "category": "bench", "price": 9_900, "cost": 4_000, "weight_g": 500} for c in codes])
    rows = [(c, w["code"]) for c in codes for w in WAREHOUSES]
    conn.execute(stock.insert(), [{"sku": c, "warehouse": w, "on_hand": received, "reserved": 0, "safety": 0, "updated_at": now} for c, w in rows])
    conn.execute(stock_ledger.insert(), [{"at": opened, "sku": c, "warehouse": w, "kind": "sync", "on_hand_delta": received, "reserved_delta": 0,
                                          "order_id": None, "actor": "stock_sync", "reason": "WMS 库存同步"} for c, w in rows])
    # the pull shops have been pulling all along: their cursors are current
    conn.execute(sync_cursors.insert(), [{"channel": c, "shop_id": SHOP_OF[c], "synced_until": now, "last_success_at": now} for c in sorted(PULLED)])


def _seed_team(conn: sa.Connection, now: datetime) -> None:
    hashed = passwords.hash_password("bench-team-password")  # one hash for all: argon2 takes ~0.15 s each
    joined = now - timedelta(days=60)
    conn.execute(users.insert(), [{"username": u, "display_name": d, "password_hash": hashed, "role": r, "active": True, "created_at": joined,
                                   "updated_at": joined, "last_login_at": now - timedelta(hours=k + 1)} for k, (u, d, r) in enumerate(TEAM)])


def _inbox_row(order: NormalizedOrder) -> dict[str, Any]:
    """What the order arrived as: a push message, or a page of a pull (one order here), processed at once."""
    at = order.created_at + timedelta(seconds=1)
    if order.channel in PULLED:
        kind, body = "pull", {"orders": [{"order_id": order.original_id, "status": order.status.value, "paid": order.amounts.paid}]}
    else:
        kind, body = "push", {"tag": "order_created", "shop_id": order.shop_id, "order_id": order.original_id,
                              "event_time": order.created_at.isoformat(), "data": {"status": order.status.value}}
    return {"channel": order.channel, "shop_id": order.shop_id, "kind": kind, "received_at": at, "body": orjson.dumps(body),
            "status": "done", "attempts": 1, "outcome": "created", "processed_at": at + timedelta(seconds=1)}


def _stock_moves(order: NormalizedOrder, key: tuple[str, str], shipped_at: datetime | None,
                 rng: random.Random) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The order's reservation (active, consumed when shipped, released when cancelled) and its ledger rows."""
    at = (order.paid_at or order.created_at) + timedelta(minutes=rng.uniform(1, 10))
    sku, warehouse = key
    moved = {"sku": sku, "warehouse": warehouse, "order_id": order.id}
    ledger = [{**moved, "at": at, "kind": "reserve", "on_hand_delta": 0, "reserved_delta": 1, "actor": "audit", "reason": "audit@1"}]
    status, closed = "active", None
    if shipped_at is not None:
        status, closed = "consumed", shipped_at
        ledger.append({**moved, "at": closed, "kind": "consume", "on_hand_delta": -1, "reserved_delta": -1, "actor": "wms:bench", "reason": "发货 shipped"})
    elif order.status is Status.CANCELLED:
        status, closed = "released", order.updated_at
        ledger.append({**moved, "at": closed, "kind": "release", "on_hand_delta": 0, "reserved_delta": -1, "actor": "platform:bench",
                       "reason": "订单取消/关闭 order cancelled or closed"})
    reservation = {"order_id": order.id, "line_no": 0, "sku": sku, "warehouse": warehouse, "qty": 1, "package_no": 1, "gift": False,
                   "status": status, "created_at": at, "closed_at": closed}
    return reservation, ledger


def _ticket(order: NormalizedOrder, shipped_at: datetime, now: datetime, rng: random.Random) -> dict[str, Any] | None:
    """A stall ticket of a shipped order: open while it is on its way, closed once delivered (by the
    tracker when the parcel moved again, or by a person)."""
    kind, severity, rule, reason, (low, high), _ = rng.choices(TICKET_KINDS, weights=[k[-1] for k in TICKET_KINDS])[0]
    created = shipped_at + timedelta(hours=rng.uniform(low, high))
    if created > now - timedelta(minutes=5):
        return None  # not due yet
    row = {"order_id": order.id, "kind": kind, "status": "open", "created_at": created, "closed_at": None, "closed_by": None,
           "detail": {"severity": severity, "rule": rule, "rule_version": "stall@1", "reason": reason, "waybills": [order.shipment.waybill_no]}}
    if order.status is Status.DELIVERED:
        by = "tracking" if logistics.auto_closes(kind) and rng.random() < 0.6 else rng.choice(CS)
        note = "包裹已恢复流转 the parcel moves again" if by == "tracking" else "已联系快递核实，包裹已签收"
        row.update(status="closed", closed_at=min(created + timedelta(hours=rng.uniform(1, 24)), now - timedelta(minutes=1)), closed_by=by)
        row["detail"] = {**row["detail"], "closed_reason": note}
    return row


def _seed_tickets(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tickets (ids in time order), their orders' tags and event log; the closes people made, for the audit log."""
    rows.sort(key=lambda r: r["created_at"])
    if not rows:
        return []
    ids = conn.execute(tickets.insert().returning(tickets.c.id, sort_by_parameter_order=True), rows).scalars().all()
    events, tagged, people = [], [], []
    for ticket_id, r in zip(ids, rows, strict=True):
        reason = r["detail"]["reason"]
        events.append({"order_id": r["order_id"], "at": r["created_at"], "actor": "tracking", "kind": "logistics", "reason": f"物流预警：{reason}",
                       "data": {"ticket_id": ticket_id, "code": r["kind"], "severity": r["detail"]["severity"], "waybills": r["detail"]["waybills"]}})
        if r["status"] == "open":
            tagged.append({"b_id": r["order_id"], "b_tags": logistics.retag([], {r["kind"]}, {r["kind"]})})
            continue
        note = r["detail"]["closed_reason"]
        events.append({"order_id": r["order_id"], "at": r["closed_at"], "actor": r["closed_by"], "kind": "logistics",
                       "reason": f"工单关闭：{r['kind']}（{note}）", "data": {"ticket_id": ticket_id, "code": r["kind"], "closed_by": r["closed_by"]}})
        if r["closed_by"] != "tracking":
            people.append(_entry(r["closed_at"], r["closed_by"], "ticket.close", "ticket", ticket_id,
                                 before={"status": "open", "order_id": r["order_id"]}, after={"status": "closed", "reason": note}))
    conn.execute(order_events.insert(), events)
    if tagged:
        conn.execute(sa.update(orders).where(orders.c.id == sa.bindparam("b_id")).values(tags=sa.bindparam("b_tags", type_=orders.c.tags.type)), tagged)
    return people


def _seed_quarantine(conn: sa.Connection, n: int, now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """One intake item in QUARANTINE_EVERY kept for review over the 30 days; a quarter of them replayed after a fix."""
    rows = []
    for k in range(max(20, n // QUARANTINE_EVERY)):
        kind, code, message, field = QUARANTINED[k % len(QUARANTINED)]
        channel = CHANNELS[k % len(CHANNELS)]
        created = now - timedelta(seconds=rng.uniform(600, 30 * 86_400))
        original_id = None if kind == "body" else f"Q{k:09d}"
        payload = b'{"order_id": "' + (original_id or "").encode() + b'", "status": "' if kind == "body" else orjson.dumps(
            {"order_id": original_id, "status": "WAIT_SELLER_SEND", "sku_id": f"P{k:06d}", "paid": "12.90"})
        rows.append({"inbox_id": None, "channel": channel, "shop_id": SHOP_OF[channel], "original_id": original_id, "item_kind": kind,
                     "code": code, "message": message.format(x=f"P{k:06d}"), "field": field, "payload": payload, "created_at": created,
                     "status": "open", "replayed_at": None})
    rows.sort(key=lambda r: r["created_at"])
    for r in rows[::4]:
        r.update(status="replayed", replayed_at=min(r["created_at"] + timedelta(hours=rng.uniform(1, 48)), now - timedelta(minutes=1)))
    ids = conn.execute(quarantine.insert().returning(quarantine.c.id, sort_by_parameter_order=True), rows).scalars().all()
    return [_entry(r["replayed_at"], rng.choice(OPS), "quarantine.replay", "quarantine", qid, before={"status": "open"},
                   after={"status": "replayed", "result": "processed"}) for qid, r in zip(ids, rows, strict=True) if r["status"] == "replayed"]


def _seed_audit_log(conn: sa.Connection, n: int, now: datetime, refs: list[tuple[str, datetime, Status]],
                    people: list[dict[str, Any]], rng: random.Random) -> dict[str, int]:
    """About one entry per 25 orders: the team created, then 30 days of logins, buyer-detail reveals and order
    actions, with the ticket closes and quarantine replays above — ids in time order."""
    joined = now - timedelta(days=60)
    entries = [_entry(joined, "ma.admin", "user.create", "user", u, after={"username": u, "display_name": d, "role": r, "active": True})
               for u, d, r in TEAM]
    entries += people
    audited = [r for r in refs if r[2] in (Status.READY, Status.PICKING, Status.SHIPPED, Status.DELIVERED)]
    for _ in range(max(0, round(n * AUDIT_PER_ORDER) - len(entries))):
        order_id, created, _status = rng.choice(audited)
        at = min(created + timedelta(hours=rng.uniform(0.2, 72)), now - timedelta(minutes=1))
        roll = rng.random()
        if roll < 0.25:
            user = rng.choice(TEAM)[0]
            entries.append(_entry(now - timedelta(seconds=rng.uniform(86_400, 30 * 86_400)), user, "login.succeeded", "user", user))
        elif roll < 0.30:
            user = rng.choice(TEAM)[0]
            entries.append(_entry(now - timedelta(seconds=rng.uniform(86_400, 30 * 86_400)), user, "login.failed", "user", user, kind="anonymous",
                                  after={"reason": "invalid_credentials"}))
        elif roll < 0.62:
            entries.append(_entry(at, rng.choice(CS), "pii.reveal", "order", order_id, after={"fields": ["name", "phone", "address"]}))
        elif roll < 0.80:
            code = rng.choice(HOLDS)
            entries.append(_entry(at, rng.choice(OPS + CS), "order.release", "order", order_id,
                                  before={"holds": [{"code": code, "reason": "bench"}], "status": "on_hold", "version": 2},
                                  after={"holds": [], "status": "on_hold", "version": 3, "reason": "已电话核实，放行"}))
        elif roll < 0.90:
            entries.append(_entry(at, rng.choice(CS), "order.address", "order", order_id,
                                  before={"address": {"province": "浙江省", "city": "杭州市", "district": "西湖区", "detail": "文三路***"}, "version": 1},
                                  after={"address": {"province": "浙江省", "city": "杭州市", "district": "滨江区", "detail": "江南大道***"},
                                         "version": 2, "reason": "买家来电改地址"}))
        else:
            entries.append(_entry(at, rng.choice(OPS), "order.hold", "order", order_id, before={"holds": [], "status": "ready", "version": 1},
                                  after={"holds": [{"code": "manual", "reason": "买家要求暂缓发货"}], "status": "on_hold", "version": 2,
                                         "reason": "买家要求暂缓发货"}))
    entries.sort(key=lambda e: e["at"])
    conn.execute(audit_log.insert(), entries)
    return {"audit_log": len(entries), "quarantine": max(20, n // QUARANTINE_EVERY), "users": len(TEAM), "stock": SKU_COUNT * len(WAREHOUSES)}


def _entry(at: datetime, actor: str, action: str, entity: str, entity_id: Any, *, kind: str = "user", before: Any = None,
           after: Any = None) -> dict[str, Any]:
    return {"at": at, "actor": actor, "actor_kind": kind, "action": action, "entity": entity, "entity_id": str(entity_id),
            "before": before, "after": after, "ip": f"10.8.{len(actor)}.{sum(map(ord, actor)) % 250 + 2}"}


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
        print(f"seeded in {sample['seed_s']} s: " + ", ".join(f"{k} {v:,}" for k, v in sample["seeded"].items()), flush=True)
        if browser_runs:
            _browser_user(url)
        port, sim_port = free_port(), free_port()
        base, sim_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
        # The demo shops, served by the platform simulator (no new orders: --rate 0), so the channels page has its
        # shops to show, connected; the public tracking limit lifted: the bench is one client asking many times.
        config = {"database_url": url, "data_dir": tmp, "pii_key": PII_KEY, "hash_key": HASH_KEY, "auth": {"track_per_minute": 100_000},
                  "shops": [{**shop, "api_base_url": f"{sim_url}/{shop['channel']}"} for shop in DEMO_SHOPS]}
        (Path(tmp) / "orderhub.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        sim = Process([*ORDERHUB, "simulate", "--port", str(sim_port), "--target", base, "--rate", "0"], Path(tmp) / "sim.log")
        hub = None
        try:
            wait_http(f"{sim_url}/_sim/stats")
            hub = Process([*ORDERHUB, "serve", "--port", str(port), "--config", str(Path(tmp) / "orderhub.yaml")],
                          Path(tmp) / "hub.log")
            wait_http(f"{base}/api/v1/health")
            with httpx.Client(base_url=base, timeout=30, headers=admin_headers(url)) as client:
                floor, _, _ = timed(client, "/api/v1/health")
                _, _, first = timed(client, "/api/v1/orders", {"limit": 50}, runs=1)
                _, _, stock_page = timed(client, "/api/v1/inventory", {"limit": 50}, runs=1)
                _, _, rule_sets = timed(client, "/api/v1/rules", runs=1)
                today = datetime.now(SHANGHAI).date()
                row = stock_page["items"][0]
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
                    "inventory": ("/api/v1/inventory", {"limit": 50}),
                    # the drawer of the first stock row: its ledger, newest first
                    "stock_ledger": (f"/api/v1/inventory/{row['sku']}/ledger", {"warehouse": row["warehouse"], "limit": 50}),
                    "rules": ("/api/v1/rules", None),
                    "rule_set": (f"/api/v1/rules/{rule_sets['sets'][0]['name']}", None),  # the graph the editor opens with
                    "tickets_open": ("/api/v1/tickets", {"status": "open", "limit": 50}),
                    "channels": ("/api/v1/channels", None),
                    "shops": ("/api/v1/shops", None),
                    "templates": ("/api/v1/notification-templates", None),
                    "audit_log": ("/api/v1/audit-log", {"limit": 50}),
                    "users": ("/api/v1/users", None),
                    "quarantine_open": ("/api/v1/quarantine", {"status": "open", "limit": 50}),
                    "track": ("/api/v1/track", {"order_no": sample["original_id"], "phone_last4": sample["phone_last4"]}),
                }
                figures: dict[str, Any] = {"mode": backend, "orders": n, "health_floor_ms": round(floor, 1), "target_ms": TARGET_MS}
                print(f"{'call':24} {'p50 ms':>8} {'p95 ms':>8}   floor (health) {floor:.1f} ms, target {TARGET_MS:.0f} ms")
                for name, (path, params) in calls.items():
                    p50, p95, body = timed(client, path, params)
                    found = (len(body["items"]) if isinstance(body, dict) and "items" in body else len(body) if isinstance(body, list)
                             else len(body["parcels"]) if isinstance(body, dict) and "parcels" in body else "-")
                    print(f"{name:24} {p50:8.1f} {p95:8.1f}   items {found}", flush=True)
                    figures[f"{name}_p95_ms"] = round(p95, 1)
                    figures[f"{name}_p50_ms"] = round(p50, 1)
                figures["slowest_p95_ms"] = max(v for k, v in figures.items() if k.endswith("_p95_ms"))
                if browser_runs:
                    api_p50 = {name: figures.get(f"{name}_p50_ms") for name in calls}
                    figures["browser"] = browser_phase(base, client, sample, first["items"][0], api_p50, figures, browser_runs)
        finally:
            if hub is not None:
                hub.stop()
            sim.stop()
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
    def look_up(page: Any) -> None:
        """The buyer types the sample order's number and phone's last 4 and asks (at machine speed)."""
        page.get_by_test_id("track-order-no").fill(sample["original_id"])
        page.get_by_test_id("track-last4").fill(sample["phone_last4"])
        page.get_by_test_id("track-submit").click()

    pages: dict[str, tuple[str, str, Any]] = {  # name -> (path, when its data is on screen, what the user does first)
        "orders_list": ("/orders", _ready('[data-testid="orders-table"] [data-testid="order-link"]'), None),
        "order_search": (f"/orders?text={sample['original_id']}", _ready('[data-testid="order-link"]', text=sample["original_id"]), None),
        "order_detail": (f"/orders/{order['id']}", _ready('[data-testid="order-detail"]', '[data-testid="timeline-event"]'), None),
        "exception_queue": ("/exceptions", _ready('[data-testid="exceptions-table"] tr.ant-table-row'), None),
        "dashboard": ("/", _ready('[data-testid="heatmap"] canvas'), None),
        "inventory": ("/inventory", _ready('[data-testid="stock-table"] tr.ant-table-row'), None),
        "rules": ("/rules", _ready('[data-testid="jdm-editor"] .react-flow__node'), None),  # the first set's graph drawn in the editor
        "logistics": ("/logistics", _ready('[data-testid="tickets-table"] tr.ant-table-row'), None),
        # a shop's row joined with its credentials: both /channels and /shops answered
        "channels": ("/channels", _ready('[data-testid="app-key-masked"]'), None),
        "templates": ("/templates", _ready('[data-testid="templates-table"] tr.ant-table-row'), None),
        "audit_log": ("/audit-log", _ready('[data-testid="audit-log-table"] tr.ant-table-row'), None),
        "users": ("/users", _ready('[data-testid="users-table"] tr.ant-table-row'), None),
        "quarantine": ("/quarantine", _ready('[data-testid="quarantine-table"] tr.ant-table-row'), None),
        # the public page: navigation start → the lookup's answer on screen, the typing included
        "track": ("/track", _ready('[data-testid="track-result"]'), look_up),
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
            for name, (path, ready, then) in pages.items():
                took: list[list[float]] = []
                calls = 0
                for run in range(runs + 1):  # the first load warms the browser's cache and the page's code chunk
                    if name == "dashboard":
                        client.get("/api/v1/dashboard", params={"day": (today - timedelta(days=1)).isoformat()})  # its 5 s cache: recomputed
                    asked.clear()
                    page.goto(f"{base}{path}", wait_until="commit")
                    if then is not None:
                        then(page)
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
