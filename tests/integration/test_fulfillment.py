"""Fulfillment on both databases, against the simulator's WMS and 菜鸟 over real HTTP on 127.0.0.1 (packing in ~0.5 s):
ready → picking → shipped, priority first, interception before and after packing, supervisors, replays, signatures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import uvicorn

from auth_helpers import secured_app, user_headers
from factories import T0
from fakes import SHOP, FakeChannel, StoredOrdersChannel, push_body
from servers import QuietServer, listening_socket
from orderhub.adapters.channels.registry import ChannelRegistry
from orderhub.adapters.db import inventory_repo
from orderhub.adapters.db.tables import freeze_instructions, fulfillments, order_events, orders, outbox, parcels, stock
from orderhub.adapters.wms.stock import wms_signature
from orderhub.bootstrap import Runtime
from orderhub.config import CainiaoSettings, FulfillmentSettings, NotificationSettings, Settings, ShopSettings, WmsEndpointSettings
from orderhub.domain.ids import order_id
from orderhub.domain.order import Address, Amounts, Buyer, Line, NormalizedOrder
from orderhub.domain.status import Status
from orderhub.entrypoints.api.fulfillment_routes import build_fulfillment_router
from orderhub.services import catalogue
from orderhub.services.fulfillment import Fulfillment
from orderhub.simulator.app import serve_in_background
from orderhub.simulator.cainiao import DEMO_CAINIAO_APP
from orderhub.simulator.state import Simulator
from orderhub.simulator.wms import DEMO_WMS_APP

TEE, BAG = "TS-TEE01-WH-L", "TS-BAG02-BE"
SKUS = [
    {"code": TEE, "title": "测试纯棉T恤", "category": "服装", "price": 5990, "cost": 2000, "weight_g": 300, "presale": False},
    {"code": BAG, "title": "测试帆布袋", "category": "家居", "price": 2990, "cost": 1000, "weight_g": 200, "presale": False},
]
WAREHOUSES = [{"code": "WH-EAST", "name": "华东仓", "city": "上海"}]
FAST = {"accept_s": 0.05, "pack_s": 0.5, "ship_s": 0.1, "pickers": 2, "jitter": 0.0}


def build(oid: str, *, status: Status = Status.PAID, updated: int = 0, level: str | None = None, buyer: str | None = None,
          detail: str = "测试路***", lines: tuple[tuple[str, int, int], ...] = ((TEE, 2, 5990),)) -> NormalizedOrder:
    goods = sum(q * p for _, q, p in lines)
    order = NormalizedOrder(
        channel="fake", shop_id=SHOP.shop_id, original_id=oid, status=status, platform_status={"s": status.value},
        created_at=T0, paid_at=T0 + timedelta(seconds=41), updated_at=T0 + timedelta(seconds=41 + updated),
        amounts=Amounts(goods=goods, discount=0, shipping=0, paid=goods, discount_shop=0, discount_platform=0),
        lines=tuple(Line(sku, f"商品{sku}", q, p, q * p, platform_sku_id=f"P-{sku}", platform_line_id=str(i)) for i, (sku, q, p) in enumerate(lines)),
        address=Address("浙江省", "杭州市", "西湖区", detail), buyer=Buyer(buyer or f"open-{oid}", "张*", "138****0000", level), raw={"id": oid},
    )
    order.check()
    return order


@dataclass
class Hub:
    rt: Runtime
    channel: StoredOrdersChannel
    sim: Simulator
    sim_url: str
    url: str
    client: httpx.AsyncClient  # logged in as the admin "api"; `logins` has CS and their lead
    fulfillment: Fulfillment
    logins: dict[str, dict[str, str]]

    async def arrive(self, *orders: NormalizedOrder) -> float:
        return await arrive(self.rt, self.channel, *orders)

    # The helpers read as the console does (readonly: no write turn on SQLite), so the test's event
    # loop, which also serves the simulated WMS and OrderHub's callbacks, never waits behind a commit.
    def order(self, oid: str) -> Any:
        with self.rt.engine.connect().execution_options(readonly=True) as conn:
            return conn.execute(sa.select(orders).where(orders.c.id == order_id("fake", oid))).mappings().first() or {}

    async def status(self, oid: str, status: str, timeout: float = 10.0) -> Any:
        await until(lambda: hub_status(self, oid) == status, timeout, what=f"order {oid} {status}")
        return self.order(oid)

    def rows(self, query: sa.Select) -> list[Any]:
        with self.rt.engine.connect().execution_options(readonly=True) as conn:
            return list(conn.execute(query).mappings())

    def events(self, oid: str) -> list[tuple[str, str | None]]:
        rows = self.rows(sa.select(order_events.c.kind, order_events.c.to_status).where(order_events.c.order_id == order_id("fake", oid))
                         .order_by(order_events.c.id))
        return [(r["kind"], r["to_status"]) for r in rows]

    def packages(self, oid: str) -> list[Any]:
        return self.rows(sa.select(fulfillments).where(fulfillments.c.order_id == order_id("fake", oid)).order_by(fulfillments.c.package_no))

    def instructions(self, oid: str) -> list[Any]:
        return self.rows(sa.select(freeze_instructions).where(freeze_instructions.c.order_id == order_id("fake", oid))
                         .order_by(freeze_instructions.c.id))

    def outbox(self, kind: str, oid: str | None = None) -> list[Any]:
        query = sa.select(outbox).where(outbox.c.kind == kind).order_by(outbox.c.id)
        return self.rows(query.where(outbox.c.order_id == order_id("fake", oid)) if oid else query)

    def stock(self, sku: str) -> tuple[int, int]:
        row = self.rows(sa.select(stock.c.on_hand, stock.c.reserved).where(stock.c.sku == sku, stock.c.warehouse == "WH-EAST"))[0]
        return row["on_hand"], row["reserved"]

    def healthy(self) -> bool:
        with self.rt.engine.connect().execution_options(readonly=True) as conn:
            return inventory_repo.check_invariant(conn) == []

    async def wms(self, path: str = "/_sim/wms/orders") -> Any:
        async with httpx.AsyncClient(base_url=self.sim_url) as client:
            return (await client.get(path)).json()

    async def wms_order(self, oid: str) -> dict[str, Any] | None:
        items = (await self.wms())["items"]
        return next((o for o in items if order_id("fake", oid) in o["order_code"]), None)

    async def configure(self, **values: Any) -> None:
        async with httpx.AsyncClient(base_url=self.sim_url) as client:
            (await client.put("/_sim/wms/config", json=values)).raise_for_status()

    async def control(self, path: str) -> None:
        async with httpx.AsyncClient(base_url=self.sim_url) as client:
            (await client.post(path)).raise_for_status()


async def arrive(rt: Runtime, channel: StoredOrdersChannel, *orders: NormalizedOrder) -> float:
    """Push the orders as the platform would; returns when the push was acknowledged (wall time)."""
    for order in orders:
        channel.orders[order.original_id] = order
    body = push_body(*({"id": o.original_id, "updated": int((o.updated_at - T0).total_seconds()) - 41} for o in orders))
    await rt.intake.accept_push("fake", {"x-sign": FakeChannel.sign(body)}, body)
    rt.notify_work()
    return datetime.now(UTC).timestamp()


async def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


def hub_status(hub: Hub, oid: str) -> str | None:
    return hub.order(oid).get("status")


@pytest.fixture
async def hub(database_url, tmp_path):
    sim = Simulator(seed=11)
    served = await serve_in_background("127.0.0.1", 0, sim)
    sim.wms.flow.configure(FAST)
    channel = StoredOrdersChannel()
    settings = Settings(
        database_url=database_url, data_dir=tmp_path, pull_interval_s=3600,
        shops=[ShopSettings(channel="fake", shop_id=SHOP.shop_id, name=SHOP.name, app_key=SHOP.app_key, app_secret=SHOP.app_secret)],
        notifications=NotificationSettings(recipients={"buyer": ["sms", "webhook:erp"], "cs": ["wecom:cs"], "warehouse": ["wecom:wh"]}),
        # the Runtime wires fulfillment from these settings: the relay's `wms` sender, the freeze lane, the reconcile loop
        fulfillment=FulfillmentSettings(
            wms=[WmsEndpointSettings(name="main", base_url=f"{served.url}/wms", **DEMO_WMS_APP)],
            cainiao=CainiaoSettings(base_url=f"{served.url}/cainiao", **DEMO_CAINIAO_APP, sender={"name": "华东仓", "mobile": "13800000000"}),
        ),
    )
    rt = Runtime(settings, channels=ChannelRegistry(push={"fake": channel}, sources={"fake": channel}, pull=set(), file=None))
    catalogue.upsert_catalogue(rt.engine, WAREHOUSES, SKUS)
    with rt.engine.begin() as conn:
        inventory_repo.sync_on_hand(conn, [(TEE, "WH-EAST", 100), (BAG, "WH-EAST", 100)], actor="test", reason="stock", now=datetime.now(UTC))
    fulfillment = rt.fulfillment
    assert fulfillment is not None
    app = secured_app(rt.engine, build_fulfillment_router(rt))
    logins = {name: user_headers(rt.engine, name, role) for name, role in (("cs-wang", "cs"), ("cs-li", "cs"), ("lead-zhao", "ops"))}
    sock = listening_socket(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    sim.wms.flow.configure({"callback_url": f"{url}/api/v1/webhooks/wms/main"})
    await rt.start(workers=True, streams=False)
    client = httpx.AsyncClient(base_url=url, timeout=10, headers=user_headers(rt.engine, "api", "admin"))
    try:
        yield Hub(rt, channel, sim, served.url, url, client, fulfillment, logins)
    finally:
        await client.aclose()
        await served.stop()
        server.should_exit = True
        await task
        sock.close()
        await rt.stop()


# -- ready → picking → shipped ---------------------------------------------------------------------------


async def test_a_ready_order_goes_to_the_wms_and_ships_with_its_stock_consumed_and_its_parcel_registered(hub):
    await hub.arrive(build("A1"))
    order = await hub.status("A1", "shipped")
    shipment = order["shipment"]
    assert shipment["carrier"] == order["carrier"] and shipment["waybill_no"]
    assert hub.stock(TEE) == (98, 0)  # consumed: on hand down, nothing reserved
    assert hub.healthy()
    statuses = [to for kind, to in hub.events("A1") if kind in ("created", "audited", "status")]
    assert statuses == ["paid", "ready", "picking", "shipped"]
    parcel = hub.rows(sa.select(parcels).where(parcels.c.waybill_no == shipment["waybill_no"]))
    assert parcel and parcel[0]["order_id"] == order["id"] and parcel[0]["package_no"] == 1
    ship = hub.outbox("platform.ship", "A1")
    assert len(ship) == 1 and ship[0]["endpoint"] == f"fake:{SHOP.shop_id}"
    assert {k: ship[0]["payload"][k] for k in ("channel", "shop_id", "original_id", "carrier", "waybill_no", "package_no")} == {
        "channel": "fake", "shop_id": SHOP.shop_id, "original_id": "A1", "carrier": shipment["carrier"],
        "waybill_no": shipment["waybill_no"], "package_no": 1}
    assert ship[0]["payload"]["lines"] == [{"line_no": 0, "sku": TEE, "qty": 2, "platform_sku_id": f"P-{TEE}", "platform_line_id": "0"}]
    told = [r["payload"] for r in hub.outbox("webhook", "A1")]
    assert [(t["event"], t["waybill_no"]) for t in told] == [("shipped", shipment["waybill_no"])]
    package = hub.packages("A1")[0]
    assert (package["status"], package["waybill_no"]) == ("shipped", shipment["waybill_no"])
    assert package["accepted_at"] <= package["packed_at"] <= package["shipped_at"]
    at_wms = await hub.wms_order("A1")
    assert at_wms["status"] == "shipped" and at_wms["waybill_no"] == shipment["waybill_no"]
    issued = (await hub.wms("/_sim/cainiao/waybills"))["items"]
    assert [w["waybill_code"] for w in issued] == [shipment["waybill_no"]]


async def test_priority_orders_are_sent_and_picked_first(hub):
    await hub.configure(pickers=1)
    await hub.control("/_sim/wms/pause")
    await hub.arrive(build("N1"), build("N2"), build("V1", level="V5"), build("N3"))
    await until(lambda: len(hub.outbox("wms.order")) == 4, what="four orders queued")
    queued = {r["payload"]["orders"][0]["original_id"]: r["priority"] for r in hub.outbox("wms.order")}
    assert queued == {"N1": 0, "N2": 0, "V1": 20, "N3": 0}
    await until(lambda: all(hub_status(hub, o) == "picking" for o in ("N1", "N2", "V1", "N3")), what="all accepted")
    await hub.control("/_sim/wms/resume")
    await until(lambda: all(hub_status(hub, o) == "shipped" for o in ("N1", "N2", "V1", "N3")), timeout=15, what="all shipped")
    ranks = {o["lines"][0]["order_id"]: o["pick_rank"] for o in (await hub.wms())["items"]}
    assert ranks[order_id("fake", "V1")] == 1  # the VIP order overtook the three paid before it


async def test_a_cancel_before_packing_is_intercepted_the_stock_released_and_the_order_cancelled(hub):
    await hub.configure(pack_s=30)
    await hub.arrive(build("C1"))
    await hub.status("C1", "picking")
    await until(lambda: ("wms_picking", None) in hub.events("C1"), what="picking at the WMS, as OrderHub heard")
    assert hub.stock(TEE) == (100, 2)
    arrived = await hub.arrive(build("C1", status=Status.CANCELLED, updated=60))
    order = await hub.status("C1", "cancelled")
    assert hub.stock(TEE) == (100, 0) and hub.healthy()
    # The WMS's callback can settle the freeze before the relay has recorded its own reply (and the send time).
    [instruction] = await until(lambda: [i for i in hub.instructions("C1") if i["sent_at"]], what="the freeze's send time recorded")
    assert (instruction["kind"], instruction["outcome"], instruction["source"]) == ("cancel", "applied", "platform:fake")
    assert instruction["requested_at"].timestamp() <= arrived and instruction["requested_at"] <= instruction["sent_at"]
    assert instruction["answered_at"]
    code = hub.packages("C1")[0]["wms_order_no"]
    assert instruction["detail"]["answers"] == {code: "frozen"}
    assert hub.packages("C1")[0]["status"] == "cancelled"
    story = [(k, to) for k, to in hub.events("C1") if not k.startswith("notif")]
    assert story == [("created", "paid"), ("audited", "ready"), ("status", "picking"), ("wms_picking", None), ("cancel_requested", None),
                     ("freeze_requested", None), ("freeze_answered", None), ("intercepted", "cancelled")]
    assert ("status", "cancelled") not in hub.events("C1")  # the platform's cancel waited for the WMS's freeze
    assert order["holds"] == []
    at_wms = await until(lambda: hub_wms(hub, "C1", "cancelled"), what="cancelled at the WMS")
    assert at_wms["freezes"][0]["result"] == "frozen" and "packed_at" not in at_wms
    alerts = [r["payload"] for r in hub.outbox("notify.wecom", "C1") if r["payload"]["template"] == "freeze_alert"]
    assert len(alerts) == 1 and alerts[0]["target"] == "wh" and "冻结指令" in alerts[0]["body"]
    results = [r["payload"]["template"] for r in hub.outbox("notify.wecom", "C1")]
    assert "intercept_result" in results
    assert hub.outbox("platform.ship", "C1") == []


async def test_a_cancel_after_packing_is_too_late_and_becomes_a_hold_and_a_carrier_interception(hub):
    await hub.configure(pack_s=0.2, ship_s=0.2, hold_events=True)  # OrderHub does not hear of the packing in time
    await hub.arrive(build("L1"))
    await until(lambda: hub_wms(hub, "L1", "shipped"), what="shipped at the WMS")
    assert hub_status(hub, "L1") == "ready"  # as far as OrderHub knows
    await hub.arrive(build("L1", status=Status.CANCELLED, updated=60))
    await until(lambda: [i["outcome"] for i in hub.instructions("L1")] == ["too_late"], what="too late")
    order = hub.order("L1")
    assert order["status"] == "ready" and [h["code"] for h in order["holds"]] == ["intercept_pending"]
    assert "intercept_too_late" in [k for k, _ in hub.events("L1")]
    [intercept] = hub.outbox("carrier.intercept", "L1")
    assert intercept["payload"]["action"] == "return" and intercept["payload"]["waybill_no"] == (await hub.wms_order("L1"))["waybill_no"]
    assert hub.stock(TEE) == (100, 2)  # not given back: the parcel is on its way
    await hub.configure(hold_events=False)
    order = await hub.status("L1", "shipped")
    assert [h["code"] for h in order["holds"]] == ["intercept_pending"] and hub.stock(TEE) == (98, 0)
    assert hub.healthy()


async def test_a_cancel_and_an_expedite_within_15_seconds_go_to_a_supervisor_instead_of_racing(hub):
    await hub.configure(pack_s=30)
    await hub.arrive(build("X1"))
    order = await hub.status("X1", "picking")
    hurry = await hub.client.post(f"/api/v1/orders/{order['id']}/intercept", json={"kind": "expedite", "reason": "买家催单", "actor": "cs-wang"}, headers=hub.logins["cs-wang"])
    assert hurry.status_code == 202 and hurry.json()["action"] == "freeze"
    await until(lambda: [i["outcome"] for i in hub.instructions("X1")] == ["applied"], what="expedited")
    cancel = await hub.client.post(f"/api/v1/orders/{order['id']}/intercept", json={"kind": "cancel", "reason": "买家取消", "actor": "cs-li"}, headers=hub.logins["cs-li"])
    assert cancel.status_code == 200 and cancel.json()["outcome"] == "supervisor"
    assert [h["code"] for h in hub.order("X1")["holds"]] == ["intercept_pending"]
    assert hub.outbox("wms.freeze", "X1") == []  # no WMS call while a person decides
    waiting = (await hub.client.get("/api/v1/interceptions", params={"outcome": "supervisor"})).json()["items"]
    assert [(w["kind"], w["order_id"]) for w in waiting] == [("cancel", order["id"])]
    decided = await hub.client.post(f"/api/v1/interceptions/{waiting[0]['id']}/resolve", json={"decision": "apply", "actor": "lead-zhao"}, headers=hub.logins["lead-zhao"])
    assert decided.status_code == 200 and decided.json()["action"] == "freeze"
    order = await hub.status("X1", "cancelled")
    assert order["holds"] == [] and hub.stock(TEE) == (100, 0)
    assert [i["resolved_by"] for i in hub.instructions("X1")] == [None, "lead-zhao"]


async def test_replayed_wms_callbacks_change_nothing(hub):
    await hub.arrive(build("R1"))
    await hub.status("R1", "shipped")
    await until(lambda: hub_calls(hub) and all(c["status_code"] for c in hub.sim.wms.flow.callbacks), what="callbacks answered")
    before = (hub.events("R1"), hub.stock(TEE), hub.rows(sa.select(outbox.c.id).order_by(outbox.c.id)), hub.packages("R1"))
    for call in list(hub.sim.wms.flow.callbacks):
        response = await hub.client.post("/api/v1/webhooks/wms/main", content=call["body"].encode(), headers=call["headers"])
        assert response.status_code == 200, response.text
        if call["event"] == "waybill_request":
            assert response.json()["data"]["waybill_no"] == hub.order("R1")["shipment"]["waybill_no"]
    assert (hub.events("R1"), hub.stock(TEE), hub.rows(sa.select(outbox.c.id).order_by(outbox.c.id)), hub.packages("R1")) == before
    assert len((await hub.wms("/_sim/cainiao/waybills"))["items"]) == 1  # the replayed waybill request asked 菜鸟 nothing


async def test_a_wrongly_signed_wms_callback_is_refused_with_401(hub):
    body = orjson.dumps({"event": "shipped", "order_code": "x-1", "waybill_no": "SF1"})
    now = str(int(datetime.now(UTC).timestamp()))
    good = {"X-WMS-App-Key": DEMO_WMS_APP["app_key"], "X-WMS-Timestamp": now, "X-WMS-Signature": wms_signature(DEMO_WMS_APP["app_secret"], now, body)}
    cases = {
        "signature_invalid": {**good, "X-WMS-Signature": wms_signature("not-the-secret", now, body)},
        "signature_missing": {k: v for k, v in good.items() if k != "X-WMS-Signature"},
    }
    stale = str(int(datetime.now(UTC).timestamp()) - 3600)
    cases["signature_invalid (stale)"] = {**good, "X-WMS-Timestamp": stale, "X-WMS-Signature": wms_signature(DEMO_WMS_APP["app_secret"], stale, body)}
    for code, headers in cases.items():
        response = await hub.client.post("/api/v1/webhooks/wms/main", content=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (401, code.split(" ")[0]), code
    tampered = await hub.client.post("/api/v1/webhooks/wms/main", content=body.replace(b"SF1", b"SF2"), headers=good)
    assert tampered.status_code == 401
    unknown = await hub.client.post("/api/v1/webhooks/wms/main", content=body, headers=good)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")  # signed right: only the package is unknown


async def test_a_cancel_of_an_order_not_yet_sent_to_the_wms_is_intercepted_here_without_asking_it(hub):
    sender = hub.rt.relay.senders.pop("wms")  # the relay holds the package back for now
    await hub.arrive(build("Q1"))
    await hub.status("Q1", "ready")
    await until(lambda: hub.packages("Q1"), what="queued")
    await hub.arrive(build("Q1", status=Status.CANCELLED, updated=60))
    await hub.status("Q1", "cancelled")
    [instruction] = hub.instructions("Q1")
    assert (instruction["outcome"], instruction["detail"]["action"]) == ("applied", "local")
    assert hub.packages("Q1")[0]["status"] == "cancelled" and hub.stock(TEE) == (100, 0)
    assert ("status", "cancelled") in hub.events("Q1") and hub.outbox("wms.freeze", "Q1") == []
    hub.rt.relay.senders["wms"] = sender
    hub.rt.notify_outbox()
    await until(lambda: hub.outbox("wms.order", "Q1")[0]["status"] == "sent", what="the held message handled")
    assert "skipped" in hub.outbox("wms.order", "Q1")[0]["response"]
    assert await hub.wms_order("Q1") is None  # the WMS never saw it


async def test_an_address_change_before_packing_is_given_to_the_wms_which_then_picks_on(hub):
    await hub.control("/_sim/wms/pause")  # the order waits at the WMS unpacked until the change is in: no race with a packing clock
    await hub.arrive(build("D1"))
    await hub.status("D1", "picking")
    await hub.arrive(build("D1", detail="新地址路8号", updated=30))
    await until(lambda: [(i["kind"], i["outcome"]) for i in hub.instructions("D1")] == [("address", "applied")], 15, what="address applied")
    await hub.control("/_sim/wms/resume")
    order = await hub.status("D1", "shipped", timeout=15)
    at_wms = await hub.wms_order("D1")
    assert at_wms["recipient"]["address"]["detail"] == "新地址路8号" and at_wms["freezes"][0]["result"] == "frozen"
    issued = (await hub.wms("/_sim/cainiao/waybills"))["items"]
    assert issued[-1]["recipient"]["address"]["detail"] == "新地址路8号" and issued[-1]["waybill_code"] == order["shipment"]["waybill_no"]
    assert [k for k, _ in hub.events("D1")].count("address_updated") == 1


async def test_two_orders_merged_by_the_audit_go_to_the_wms_as_one_package_and_ship_under_one_waybill(hub):
    await hub.arrive(build("M1", buyer="open-m"), build("M2", buyer="open-m", lines=((BAG, 1, 2990),)))
    first, second = await hub.status("M1", "shipped"), await hub.status("M2", "shipped")
    assert first["merge_group"] and first["merge_group"] == second["merge_group"]
    assert len(hub.outbox("wms.order")) == 1
    [at_wms] = (await hub.wms())["items"]
    assert sorted((line["order_id"], line["sku"]) for line in at_wms["lines"]) == sorted([(first["id"], TEE), (second["id"], BAG)])
    assert first["shipment"]["waybill_no"] == second["shipment"]["waybill_no"]
    assert len(hub.outbox("platform.ship")) == 2 and hub.stock(TEE) == (98, 0) and hub.stock(BAG) == (99, 0)


def hub_calls(hub: Hub) -> bool:
    return bool(hub.sim.wms.flow.callbacks)


async def hub_wms(hub: Hub, oid: str, status: str) -> dict[str, Any] | None:
    found = await hub.wms_order(oid)
    return found if found and found["status"] == status else None



async def test_a_platform_cancel_after_shipping_becomes_a_carrier_interception_with_one_hold(hub):
    await hub.arrive(build("S1"))
    shipped = await hub.status("S1", "shipped")
    await hub.arrive(build("S1", status=Status.CANCELLED, updated=600))
    await until(lambda: [i["outcome"] for i in hub.instructions("S1")] == ["too_late"], what="too late")
    order = hub.order("S1")
    assert order["status"] == "shipped"
    assert [(h["code"], h.get("instruction")) for h in order["holds"]] == [("intercept_pending", hub.instructions("S1")[0]["id"])]
    [intercept] = hub.outbox("carrier.intercept", "S1")
    assert intercept["payload"]["waybill_no"] == shipped["shipment"]["waybill_no"] and intercept["payload"]["action"] == "return"
    assert hub.outbox("wms.freeze", "S1") == []  # nothing to ask the WMS: the parcel has left


async def test_the_wms_gets_no_label_while_a_supervisor_decides_and_packs_once_it_is_decided(hub):
    await hub.control("/_sim/wms/pause")
    await hub.arrive(build("G1"))
    order = await hub.status("G1", "picking")
    await hub.client.post(f"/api/v1/orders/{order['id']}/intercept", json={"kind": "expedite", "reason": "催单", "actor": "cs-wang"}, headers=hub.logins["cs-wang"])
    await until(lambda: [i["outcome"] for i in hub.instructions("G1")] == ["applied"], what="expedited")
    held = await hub.client.post(f"/api/v1/orders/{order['id']}/intercept", json={"kind": "cancel", "reason": "取消", "actor": "cs-li"}, headers=hub.logins["cs-li"])
    assert held.json()["outcome"] == "supervisor"
    await hub.configure(pack_s=0.2)
    await hub.control("/_sim/wms/resume")
    await until(lambda: any(c["status_code"] == 409 for c in hub.sim.wms.flow.callbacks if c["event"] == "waybill_request"), what="label held")
    await asyncio.sleep(0.5)
    assert (await hub.wms_order("G1"))["status"] == "picking" and hub_status(hub, "G1") == "picking"  # the box waits at the bench
    iid = held.json()["id"]
    decided = await hub.client.post(f"/api/v1/interceptions/{iid}/resolve", json={"decision": "dismiss", "actor": "lead-zhao", "reason": "买家改主意"},
                                   headers=hub.logins["lead-zhao"])
    assert decided.status_code == 200 and decided.json()["decision"] == "dismissed"
    order = await hub.status("G1", "shipped")
    assert order["holds"] == []
    assert [(i["kind"], i["outcome"], i["resolved_by"]) for i in hub.instructions("G1")] == [
        ("expedite", "applied", None), ("cancel", "supervisor", "lead-zhao")]


async def test_a_cs_address_change_through_the_api_reaches_the_wms_and_the_order(hub):
    await hub.control("/_sim/wms/pause")  # unpacked until the change is in (as above)
    await hub.arrive(build("E1"))
    order = await hub.status("E1", "picking")
    new = {"province": "浙江省", "city": "杭州市", "district": "滨江区", "detail": "网商路699号"}
    asked = await hub.client.post(f"/api/v1/orders/{order['id']}/intercept", json={"kind": "address", "reason": "买家来电改地址", "address": new})
    assert asked.status_code == 202
    await until(lambda: [i["outcome"] for i in hub.instructions("E1")] == ["applied"], 15, what="address applied")
    await hub.control("/_sim/wms/resume")
    order = await hub.status("E1", "shipped", timeout=15)
    assert order["address"]["detail"] == "***"  # the typed street is sealed (tests/integration/test_address_sealing.py)
    assert (await hub.wms_order("E1"))["recipient"]["address"]["detail"] == "网商路699号"
    page = (await hub.client.get("/api/v1/interceptions", params={"order_id": order["id"]})).json()
    assert [(i["kind"], i["outcome"], i["source"]) for i in page["items"]] == [("address", "applied", "cs:api")]
    missing = await hub.client.post(f"/api/v1/orders/{order['id']}/intercept", json={"kind": "address", "reason": "x"})
    assert (missing.status_code, missing.json()["code"]) == (400, "invalid_request")
    gone = await hub.client.post("/api/v1/orders/nope/intercept", json={"kind": "cancel", "reason": "x"})
    assert (gone.status_code, gone.json()["code"]) == (404, "not_found")


async def test_a_freeze_answer_lost_before_it_was_recorded_is_recovered_from_the_outbox_row(hub, monkeypatch):
    await hub.configure(pack_s=30)
    await hub.arrive(build("K1"))
    await hub.status("K1", "picking")
    await hub.configure(hold_events=True)  # the WMS's own "frozen" callback does not come either
    monkeypatch.setattr(hub.fulfillment, "record_reply", lambda *args, **kwargs: "noted")  # as if the process died right after the send
    await hub.arrive(build("K1", status=Status.CANCELLED, updated=60))
    await until(lambda: [r["status"] for r in hub.outbox("wms.freeze", "K1")] == ["sent"], what="freeze sent")
    assert [i["outcome"] for i in hub.instructions("K1")] == ["pending"] and hub_status(hub, "K1") == "picking"
    monkeypatch.undo()
    assert await asyncio.to_thread(hub.fulfillment.reconcile, timedelta(0)) == 1
    order = hub.order("K1")
    assert order["status"] == "cancelled" and hub.stock(TEE) == (100, 0)
    assert [i["outcome"] for i in hub.instructions("K1")] == ["applied"]
    assert await asyncio.to_thread(hub.fulfillment.reconcile, timedelta(0)) == 0  # settled once


async def test_a_refused_event_in_a_callback_group_leaves_the_other_events_of_the_group_applied(hub):
    from orderhub.services import wms_events  # the group's transaction itself: which events share one is the loop's timing

    await hub.control("/_sim/wms/pause")  # the WMS reports nothing more of the package meanwhile
    await hub.arrive(build("W1"))
    await hub.status("W1", "picking")
    code = hub.packages("W1")[0]["wms_order_no"]
    wms = hub.fulfillment.wms["main"]
    events = [(wms, {"event": "packed", "order_code": code}), (wms, {"event": "packed", "order_code": f"{code}-not-ours"}),
              (wms, {"event": "frozen", "order_code": code})]  # a freeze answer without its instruction id: refused too
    results = await asyncio.to_thread(wms_events._apply_all, hub.fulfillment, events)
    assert results[0] == "packed"
    assert [type(r).__name__ for r in results[1:]] == ["OrderHubError", "OrderHubError"]
    assert [r.code.value for r in results[1:]] == ["not_found", "invalid_request"]
    assert hub.packages("W1")[0]["status"] == "packed" and [k for k, _ in hub.events("W1")].count("wms_packed") == 1
