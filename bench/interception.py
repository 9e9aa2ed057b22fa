"""Interception under a burst: how fast a platform cancel reaches the WMS as a freeze, and whether every cancel
that arrives before packing is intercepted.

Over real HTTP on 127.0.0.1: the simulator's WMS and 菜鸟 in their own process (pickers for every
order, packing `--pack-s` seconds after picking starts, ~20 s as in a real warehouse), and OrderHub
in this one (intake webhook, processing, audit, fulfillment, outbox relay, the WMS callback route),
as `orderhub serve` runs it. N orders are pushed as a burst; each gets a platform cancel at a random point
between its payment and 2 × pack_s later, so about half arrive after packing. The cancel's clock
starts when the bench sends the cancel push (before OrderHub has even stored it) and stops when the
simulated WMS receives the freeze. The platform's own order API answers from memory here, so a real
platform's detail fetch would add its latency on top.

A cancel "arrives" when OrderHub has stored it (its inbox row: what the platform's push got acknowledged
for); the freeze "reaches the WMS" when the simulated WMS receives it. Prints one JSON line:
cancel_to_freeze_p50_ms / _p99_ms, cancels, intercepted, too_late, too_late_before_packing (a cancel that
arrived before the WMS packed the parcel and still came too late: must be 0), and push_sent_to_freeze_*
(the same, but from the moment the bench started sending the push), and cpu_s: the CPU seconds this process
spent from the first push until everything settled (what the burst costs; on 2 cores the latency tails follow it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import random
import resource
import socket
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from hashlib import md5
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from orderhub.adapters.channels.base import Authenticated, PushMessage
from orderhub.adapters.channels.registry import ChannelRegistry
from orderhub.adapters.db import inventory_repo
from orderhub.adapters.db.tables import freeze_instructions, inbox, orders, outbox
from orderhub.bootstrap import Runtime
from orderhub.config import CainiaoSettings, FulfillmentSettings, Settings, ShopSettings, WmsEndpointSettings
from orderhub.domain.errors import ErrorCode, SignatureError
from orderhub.domain.ids import order_id
from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder
from orderhub.domain.status import Status
from orderhub.entrypoints.api import errors
from orderhub.entrypoints.api.fulfillment_routes import build_fulfillment_router
from orderhub.entrypoints.api.routes import build_router
from orderhub.services import catalogue
from orderhub.simulator.cainiao import DEMO_CAINIAO_APP
from orderhub.simulator.wms import DEMO_WMS_APP

sys.path.insert(0, str(Path(__file__).parent))
from phases import percentile  # noqa: E402
from stack import ORDERHUB, Process, database, free_port, wait_http  # noqa: E402

SHOP_ID, APP_KEY, APP_SECRET = "B1", "bench-app", "bench-secret"
SKU = "TS-TEE01-WH-L"
T0 = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)
TRACE = False


class BenchChannel:
    """A push platform whose order API answers from memory: the bench measures OrderHub, not a platform."""

    channel = "bench"
    ack_body = b'{"code":0,"msg":"success"}'
    ack_media_type = "application/json"

    def __init__(self, orders: Any = None) -> None:
        # with --split a multiprocessing manager's dict: the worker process reads what the bench has "sold"
        self.orders: Any = {} if orders is None else orders

    @staticmethod
    def sign(body: bytes) -> str:
        return md5(APP_KEY.encode() + body + APP_SECRET.encode()).hexdigest()

    def authenticate(self, headers: Any, body: bytes, shops: Any, query: Any = None) -> Authenticated:
        if headers.get("x-sign") != self.sign(body):
            raise SignatureError(ErrorCode.SIGNATURE_INVALID, "x-sign does not match", "x-sign")
        return Authenticated(APP_KEY, SHOP_ID)

    def parse_push(self, body: bytes) -> list[PushMessage]:
        return [PushMessage(SHOP_ID, m["id"], "change", datetime.fromisoformat(m["at"]), m) for m in orjson.loads(body)["messages"]]

    async def fetch_orders(self, http: Any, shop: Any, original_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {oid: {"id": oid} for oid in original_ids if oid in self.orders}

    async def pull_window(self, http: Any, shop: Any, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return []

    def normalize(self, raw: dict[str, Any], shop: Any) -> NormalizedOrder:
        return self.orders[raw["id"]]


def paid_order(n: int) -> NormalizedOrder:
    oid = f"BN{n:06d}"
    return NormalizedOrder(
        channel="bench", shop_id=SHOP_ID, original_id=oid, status=Status.PAID, platform_status={"s": "paid"},
        created_at=T0, paid_at=T0 + timedelta(seconds=1), updated_at=T0 + timedelta(seconds=1),
        amounts=Amounts(goods=5990, discount=0, shipping=0, paid=5990, discount_shop=0, discount_platform=0),
        lines=(Line(SKU, "测试纯棉T恤", 1, 5990, 5990, platform_sku_id="P1", platform_line_id="1"),),
        address=Address("浙江省", "杭州市", "西湖区", f"测试路{n}号"), buyer=Buyer(f"buyer-{n}", "张*", "138****0000", None), raw={"id": oid},
    )


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


@contextlib.contextmanager
def simulator(workdir: Path) -> Any:
    """The simulator in its own process, as a real WMS would be: its work does not share OrderHub's CPU."""
    port = free_port()
    process = Process([*ORDERHUB, "simulate", "--port", str(port), "--rate", "0", "--target", "http://127.0.0.1:9"], workdir / "sim.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/_sim/stats")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def _registry(channel: BenchChannel) -> ChannelRegistry:
    return ChannelRegistry(push={"bench": channel}, sources={"bench": channel}, pull=set(), file=None)


def _worker_process(settings: Settings, orders: Any, ready: Any, stop: Any) -> None:
    """--split: `orderhub worker` on the database inbox (processing, audit, relays, freeze lane), in a process of its own."""
    logging.basicConfig(level=logging.ERROR)

    async def main() -> None:
        rt = Runtime(settings, channels=_registry(BenchChannel(orders)), run_migrations=False)
        await rt.start(workers=True, streams=False)
        ready.set()
        try:
            await asyncio.to_thread(stop.wait)
        finally:
            await rt.stop()

    asyncio.run(main())


@contextlib.contextmanager
def _worker_node(settings: Settings, orders: Any) -> Any:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    process = context.Process(target=_worker_process, args=(settings, orders, ready, stop), name="orderhub-worker")
    process.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the worker process did not start within 60 s")
        yield process
    finally:
        stop.set()
        process.join(30)
        if process.is_alive():
            process.kill()


async def run(backend: str, count: int, pack_s: float, seed: int, burst_s: float = 5.0, split: bool = False) -> dict[str, Any]:
    rng = random.Random(seed)
    # the bench platform has no ship write-back: the rows of the orders that shipped dead-letter, as they should, without
    # a warning each (those of the cancels that came too late are withheld: services/late_cancels.py)
    logging.getLogger("orderhub.services.outbox").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, database(backend, Path(tmp)) as url, simulator(Path(tmp)) as sim_url:
        sim = httpx.AsyncClient(base_url=sim_url, timeout=30)
        await sim.put("/_sim/wms/config", json={"accept_s": 0.2, "pack_s": pack_s, "ship_s": 1.0, "pickers": count, "jitter": 0.2, "seed": seed})
        manager = multiprocessing.get_context("spawn").Manager() if split else None
        channel = BenchChannel(manager.dict() if manager is not None else None)
        # fulfillment wired by the Runtime from its settings, as `orderhub serve` does
        fulfillment_settings = FulfillmentSettings(
            wms=[WmsEndpointSettings(name="main", base_url=f"{sim_url}/wms", **DEMO_WMS_APP)],
            cainiao=CainiaoSettings(base_url=f"{sim_url}/cainiao", **DEMO_CAINIAO_APP, sender={"name": "华东仓"}),
        )
        settings = Settings(database_url=url, data_dir=Path(tmp), pull_interval_s=3600, fulfillment=fulfillment_settings,
                            shops=[ShopSettings(channel="bench", shop_id=SHOP_ID, name="压测店", app_key=APP_KEY, app_secret=APP_SECRET)])
        rt = Runtime(settings, channels=_registry(channel))
        catalogue.upsert_catalogue(rt.engine, [{"code": "WH-EAST", "name": "华东仓", "city": "上海"}],
                                   [{"code": SKU, "title": "测试纯棉T恤", "category": "服装", "price": 5990, "cost": 2000, "weight_g": 300}])
        with rt.engine.begin() as conn:
            inventory_repo.sync_on_hand(conn, [(SKU, "WH-EAST", count * 10)], actor="bench", reason="bench stock", now=datetime.now(UTC))
        app = FastAPI()
        errors.install(app)
        app.include_router(build_fulfillment_router(rt))
        app.include_router(build_router(rt))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        hub_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = _QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=2))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        await sim.put("/_sim/wms/config", json={"callback_url": f"{hub_url}/api/v1/webhooks/wms/main"})
        nodes = contextlib.ExitStack()
        if split:
            nodes.enter_context(_worker_node(settings, channel.orders))
        await rt.start(workers=not split, streams=False)  # split: this process is the API node only
        cancel_sent: dict[str, float] = {}
        cpu_before = _cpu_s()
        try:
            async with httpx.AsyncClient(base_url=hub_url, timeout=30, limits=httpx.Limits(max_connections=64)) as client:
                async def push(order: NormalizedOrder, at: datetime) -> float:
                    channel.orders[order.original_id] = order
                    body = orjson.dumps({"messages": [{"id": order.original_id, "at": at.isoformat()}]})
                    sent = datetime.now(UTC).timestamp()
                    response = await client.post("/api/v1/webhooks/bench", content=body, headers={"x-sign": BenchChannel.sign(body)})
                    response.raise_for_status()
                    return sent

                async def one(n: int) -> None:
                    order = paid_order(n)
                    await asyncio.sleep(burst_s * n / count)  # the orders arrive evenly over the burst
                    await push(order, order.updated_at)
                    await asyncio.sleep(rng.uniform(0, 2 * pack_s))
                    cancelled = replace(order, status=Status.CANCELLED, platform_status={"s": "cancelled"},
                                        updated_at=order.updated_at + timedelta(minutes=1))
                    cancel_sent[order.original_id] = await push(cancelled, cancelled.updated_at)

                await asyncio.gather(*(one(n) for n in range(count)))
            await _settled(rt.engine, count, timeout=120 + 4 * pack_s)
            cpu_s = _cpu_s() - cpu_before
            wms = {o["order_code"].split("-")[0]: o for o in (await sim.get("/_sim/wms/orders")).json()["items"]}
            held_labels = sum(1 for c in (await sim.get("/_sim/wms/callbacks", params={"event": "waybill_request"})).json()["items"]
                              if c["status_code"] == 409)
            with rt.engine.connect() as conn:
                outcomes = {r.order_id: r.outcome for r in conn.execute(sa.select(freeze_instructions.c.order_id, freeze_instructions.c.outcome))}
                statuses = dict(conn.execute(sa.select(orders.c.id, orders.c.status)).all())
                arrived = _cancel_arrivals(conn)
                written = {r.order_id: r.created_at.timestamp() for r in conn.execute(
                    sa.select(outbox.c.order_id, sa.func.min(outbox.c.created_at).label("created_at"))
                    .where(outbox.c.kind == "wms.freeze").group_by(outbox.c.order_id))}
                after_packing = _after_packing(conn, {order_id("bench", o): at for o, at in arrived.items()})
        finally:
            await rt.stop()
            nodes.close()
            if manager is not None:
                manager.shutdown()
            server.should_exit = True
            await serving
            await sim.aclose()
    delays, from_send, late_margins, intercepted, too_late, before_packing, other = [], [], [], 0, 0, 0, []
    processing, relaying = [], []  # the two halves: cancel stored -> freeze written (processing), -> at the WMS (relay)
    for original, sent in cancel_sent.items():
        oid = order_id("bench", original)
        at_wms = wms.get(oid) or {}
        arrival = arrived[original]  # when OrderHub had the cancel (its inbox row): "a cancel message arriving"
        freeze = at_wms.get("freezes") or []
        if freeze:
            delays.append((freeze[0]["received_at"] - arrival) * 1000)
            if TRACE:
                print(f"{arrival - min(arrived.values()):8.3f} s  {delays[-1]:8.1f} ms  {freeze[0]['result']}", file=sys.stderr)
            from_send.append((freeze[0]["received_at"] - sent) * 1000)
            if oid in written:
                processing.append((written[oid] - arrival) * 1000)
                relaying.append((freeze[0]["received_at"] - written[oid]) * 1000)
        packed_at = at_wms.get("packed_at")
        early = packed_at is None or arrival < packed_at
        before_packing += early
        if statuses.get(oid) == Status.CANCELLED:
            intercepted += 1
        elif outcomes.get(oid) == "too_late":
            too_late += 1
            if early and packed_at is not None:
                late_margins.append(round((packed_at - arrival) * 1000, 1))
        else:
            other.append({"order": original, "status": statuses.get(oid), "instruction": outcomes.get(oid), "wms": at_wms.get("status")})

    def ms(values: list[float], q: float) -> float | None:
        return round(percentile(values, q), 1) if values else None

    return {
        "backend": backend, "processes": "api+worker" if split else "one", "orders": count, "burst_s": burst_s, "pack_s": pack_s, "cancels": len(cancel_sent), "intercepted": intercepted, "too_late": too_late,
        "arrived_before_packing": before_packing, "too_late_before_packing": len(late_margins), "too_late_before_packing_margins_ms": late_margins,
        "freezes_sent": len(delays), "labels_held": held_labels, "neither": other,
        "cancel_to_freeze_p50_ms": ms(delays, 0.50), "cancel_to_freeze_p99_ms": ms(delays, 0.99), "cancel_to_freeze_max_ms": ms(delays, 1.0),
        "push_sent_to_freeze_p50_ms": ms(from_send, 0.50), "push_sent_to_freeze_p99_ms": ms(from_send, 0.99),
        "stored_to_written_p50_ms": ms(processing, 0.50), "stored_to_written_p99_ms": ms(processing, 0.99),
        "written_to_wms_p50_ms": ms(relaying, 0.50), "written_to_wms_p99_ms": ms(relaying, 0.99),
        **after_packing,
        "cpu_s": round(cpu_s, 2),
    }


def _cpu_s() -> float:
    """CPU seconds this process used so far (user + system): OrderHub (the API node only with --split) and the bench's pushes."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _after_packing(conn: sa.Connection, cancel_arrived: dict[str, float]) -> dict[str, Any]:
    """What became of the too-late cancels: their carrier interceptions (the bench's carrier is ZTO, which no API
    intercepts: CS tasks) and their platform write-backs — withheld when the cancel was there first; one sent
    before the cancel arrived went to the platform (the bench platform has no ship API: a dead letter there,
    a shipment on a real platform, whose later cancel is an after-sales matter)."""
    intercepts: dict[str, int] = {}
    for status, response in conn.execute(sa.select(outbox.c.status, outbox.c.response).where(outbox.c.kind == "carrier.intercept")):
        key = (response or {}).get("result") if status == "sent" else status
        intercepts[str(key)] = intercepts.get(str(key), 0) + 1
    withheld = before_cancel = other = 0
    query = sa.select(outbox.c.order_id, outbox.c.status, outbox.c.response, outbox.c.created_at).where(outbox.c.kind == "platform.ship")
    for oid, status, response, created_at in conn.execute(query):
        if status == "sent" and "skipped" in (response or {}):
            withheld += 1
        elif created_at.timestamp() < cancel_arrived.get(oid, float("inf")):
            before_cancel += 1
        else:
            other += 1
    return {"carrier_intercepts": intercepts, "write_backs_withheld": withheld, "write_backs_before_the_cancel": before_cancel,
            "write_backs_after_the_cancel_not_withheld": other}


def _cancel_arrivals(conn: sa.Connection) -> dict[str, float]:
    """original id -> when its cancel push was stored (the bench's cancel messages carry the later platform time)."""
    found: dict[str, float] = {}
    for body, received_at in conn.execute(sa.select(inbox.c.body, inbox.c.received_at)):
        for message in orjson.loads(body)["messages"]:
            if datetime.fromisoformat(message["at"]) > T0 + timedelta(seconds=1):
                found[message["id"]] = received_at.timestamp()
    return found


async def _settled(engine: sa.Engine, count: int, timeout: float) -> None:
    """Every message processed, every order cancelled or shipped (a too-late cancel ships), no instruction, carrier
    interception or write-back still waiting."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        with engine.connect() as conn:
            done = conn.execute(sa.select(sa.func.count()).select_from(orders).where(orders.c.status.in_(["cancelled", "shipped"]))).scalar_one()
            waiting = conn.execute(sa.select(sa.func.count()).select_from(freeze_instructions)
                                   .where(freeze_instructions.c.outcome.in_(["pending", "frozen"]))).scalar_one()
            waiting += conn.execute(sa.select(sa.func.count()).select_from(inbox).where(inbox.c.status != "done")).scalar_one()
            waiting += conn.execute(sa.select(sa.func.count()).select_from(outbox).where(
                outbox.c.kind.in_(["carrier.intercept", "platform.ship"]), outbox.c.status.in_(["pending", "sending"]))).scalar_one()
        if done >= count and not waiting:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"not settled within {timeout:.0f} s: {done}/{count} orders final, {waiting} messages or instructions waiting")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--pack-s", type=float, default=20.0, help="picking start -> packed at the simulated WMS")
    parser.add_argument("--burst-s", type=float, default=5.0, help="the orders' payments arrive evenly over this many seconds")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--split", action="store_true",
                        help="PostgreSQL: this process as the API node (intake, WMS callbacks) and a worker process (processing, relays)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the platform write-back has no sender here: its rows dead-letter, as they should
    if args.split and args.backend != "postgresql":
        parser.error("--split needs --backend postgresql: SQLite is one process")
    result = asyncio.run(run(args.backend, args.orders, args.pack_s, args.seed, args.burst_s, args.split))
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
