"""A cancel that comes after packing, on both databases, against the simulator's WMS, 菜鸟 and SF over real HTTP:
the parcel is intercepted at the carrier (SF's API; any other carrier a task for CS), its track goes back to the
sender, and the platform is not told a cancelled parcel shipped — no dead letter for anyone to clean up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from auth_helpers import secured_app, user_headers
from fakes import SHOP, StoredOrdersChannel
from servers import serve_app
from test_fulfillment import TEE, arrive
from test_fulfillment import build as fulfillment_order
from test_fulfillment import until as _until
from orderhub.adapters.channels.registry import ChannelRegistry
from orderhub.adapters.db import inventory_repo
from orderhub.adapters.db.tables import freeze_instructions, order_events, orders, outbox
from orderhub.bootstrap import Runtime
from orderhub.config import (
    CainiaoSettings, CarrierSettings, FulfillmentSettings, NotificationSettings, Settings, SfSettings, ShopSettings, WmsEndpointSettings,
)
from orderhub.domain.ids import order_id
from orderhub.domain.order import NormalizedOrder
from orderhub.domain.status import Status
from orderhub.entrypoints.api.fulfillment_routes import build_fulfillment_router
from orderhub.entrypoints.api.tracking_routes import build_tracking_router
from orderhub.services import catalogue
from orderhub.simulator.app import serve_in_background
from orderhub.simulator.cainiao import DEMO_CAINIAO_APP
from orderhub.simulator.carriers import DEMO_SF
from orderhub.simulator.state import Simulator
from orderhub.simulator.wms import DEMO_WMS_APP

FAST = {"accept_s": 0.05, "pack_s": 0.2, "ship_s": 0.2, "pickers": 2, "jitter": 0.0}
WAREHOUSE = {"name": "华东仓", "mobile": "13800000000", "address": {"province": "上海", "city": "上海市", "district": "青浦区", "detail": "华志路1号"}}


def build(oid: str, *, status: Status = Status.PAID, updated: int = 0, vip: bool = False) -> NormalizedOrder:
    """A paid order; a V5 buyer's goes by SF (the default carrier rules), anyone else's by ZTO."""
    return fulfillment_order(oid, status=status, updated=updated, level="V5" if vip else None)


@dataclass
class Hub:
    rt: Runtime
    channel: StoredOrdersChannel
    sim: Simulator
    sim_url: str
    url: str
    client: httpx.AsyncClient

    async def arrive(self, order: NormalizedOrder) -> None:
        await arrive(self.rt, self.channel, order)

    def rows(self, query: sa.Select) -> list[Any]:
        with self.rt.engine.connect().execution_options(readonly=True) as conn:
            return list(conn.execute(query).mappings())

    def order(self, oid: str) -> Any:
        return self.rows(sa.select(orders).where(orders.c.id == order_id("fake", oid)))[0]

    def outbox(self, kind: str, oid: str) -> list[Any]:
        return self.rows(sa.select(outbox).where(outbox.c.kind == kind, outbox.c.order_id == order_id("fake", oid)).order_by(outbox.c.id))

    def instruction(self, oid: str) -> Any:
        found = self.rows(sa.select(freeze_instructions).where(freeze_instructions.c.order_id == order_id("fake", oid)).order_by(freeze_instructions.c.id))
        return found[-1] if found else {}

    def events(self, oid: str) -> list[str]:
        rows = self.rows(sa.select(order_events.c.kind).where(order_events.c.order_id == order_id("fake", oid)).order_by(order_events.c.id))
        return [r["kind"] for r in rows]

    async def sim_call(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.sim_url, timeout=10) as client:
            response = await client.request(method, path, json=body)
            response.raise_for_status()
            return response.json()

    async def at_wms(self, oid: str) -> dict[str, Any] | None:
        items = (await self.sim_call("GET", "/_sim/wms/orders"))["items"]
        return next((o for o in items if order_id("fake", oid) in o["order_code"]), None)

    async def packed_and_gone(self, oid: str) -> dict[str, Any]:
        """The WMS packs and ships the order while OrderHub hears nothing of it (its callbacks held)."""
        self.sim.wms.flow.configure({"hold_events": True})
        await self.arrive(build(oid, vip=oid.startswith("V")))
        return await until(lambda: _shipped(self, oid), what=f"{oid} shipped at the WMS")

    async def release_callbacks(self, oid: str) -> None:
        self.sim.wms.flow.configure({"hold_events": False})
        await until(lambda: self.order(oid)["status"] == "shipped", what=f"{oid} shipped in OrderHub")


async def until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    return await _until(check, timeout, what)  # the carrier's way back takes longer than the WMS's steps


async def _shipped(hub: Hub, oid: str) -> dict[str, Any] | None:
    found = await hub.at_wms(oid)
    return found if found and found["status"] == "shipped" else None


@pytest.fixture
async def hub(database_url, tmp_path):
    sim = Simulator(seed=17)
    served = await serve_in_background("127.0.0.1", 0, sim)
    sim.wms.flow.configure(FAST)
    channel = StoredOrdersChannel()
    settings = Settings(
        database_url=database_url, data_dir=tmp_path, pull_interval_s=3600,
        shops=[ShopSettings(channel="fake", shop_id=SHOP.shop_id, name=SHOP.name, app_key=SHOP.app_key, app_secret=SHOP.app_secret)],
        notifications=NotificationSettings(recipients={"cs": ["wecom:cs"]}, wecom_robots={}),
        fulfillment=FulfillmentSettings(
            wms=[WmsEndpointSettings(name="main", base_url=f"{served.url}/wms", **DEMO_WMS_APP)],
            cainiao=CainiaoSettings(base_url=f"{served.url}/cainiao", **DEMO_CAINIAO_APP, sender=WAREHOUSE),
        ),
        carriers=CarrierSettings(sf=SfSettings(checkword=DEMO_SF["checkword"], partner_id=DEMO_SF["partner_id"], base_url=f"{served.url}/sf")),
    )
    rt = Runtime(settings, channels=ChannelRegistry(push={"fake": channel}, sources={"fake": channel}, pull=set(), file=None))
    catalogue.upsert_catalogue(rt.engine, [{"code": "WH-EAST", "name": "华东仓", "city": "上海"}],
                               [{"code": TEE, "title": "测试纯棉T恤", "category": "服装", "price": 5990, "cost": 2000, "weight_g": 300}])
    with rt.engine.begin() as conn:
        inventory_repo.sync_on_hand(conn, [(TEE, "WH-EAST", 100)], actor="test", reason="stock", now=datetime.now(UTC))
    app = secured_app(rt.engine, build_fulfillment_router(rt), build_tracking_router(rt))
    hub_server = await serve_app(app, backlog=128)
    sim.wms.flow.configure({"callback_url": f"{hub_server.url}/api/v1/webhooks/wms/main"})
    await rt.start(workers=True, streams=False)
    client = httpx.AsyncClient(base_url=hub_server.url, timeout=10, headers=user_headers(rt.engine, "cs-wang", "cs"))
    try:
        yield Hub(rt, channel, sim, served.url, hub_server.url, client)
    finally:
        await client.aclose()
        await served.stop()
        await hub_server.stop()
        await rt.stop()


async def test_a_platform_cancel_after_packing_is_intercepted_at_sf_the_parcel_comes_back_and_no_shipment_is_written_back(hub):
    gone = await hub.packed_and_gone("V1")
    waybill = gone["waybill_no"]
    assert hub.sim.carriers.parcels[waybill].carrier == "SF"
    await hub.sim_call("PUT", "/_sim/carriers/config", {"time_scale": 0.00005})  # the way back in seconds, not hours
    await hub.arrive(build("V1", status=Status.CANCELLED, updated=60))
    [asked] = await until(lambda: [r for r in hub.outbox("carrier.intercept", "V1") if r["status"] == "sent"], what="interception sent")
    assert asked["response"]["result"] == "accepted" and asked["payload"]["action"] == "return"
    assert hub.sim.carriers.parcels[waybill].intercept["destination"]["address"] == "华志路1号"  # back to the warehouse
    instruction = hub.instruction("V1")
    assert instruction["outcome"] == "too_late" and instruction["detail"]["carrier"][waybill]["result"] == "accepted"
    [hold] = hub.order("V1")["holds"]
    assert hold["code"] == "intercept_pending" and hold["reason"].startswith("快递已拦截，包裹退回中")
    assert "carrier_intercept_accepted" in hub.events("V1")

    await hub.release_callbacks("V1")
    [ship] = await until(lambda: [r for r in hub.outbox("platform.ship", "V1") if r["status"] in ("sent", "dead")], what="write-back handled")
    assert ship["status"] == "sent" and "平台已取消订单" in ship["response"]["skipped"]
    assert "ship_writeback_skipped" in hub.events("V1")

    async def returned() -> bool:
        await hub.sim_call("POST", "/_sim/carriers/push", {"target": hub.url})
        tracking = (await hub.client.get(f"/api/v1/orders/{order_id('fake', 'V1')}/tracking")).json()
        return tracking["parcels"] and tracking["parcels"][0]["state"] == "returned"

    await until(returned, what="the track back to the sender")
    assert hub.order("V1")["shipment"]["logistics_status"] == "returned"
    assert [r["status"] for r in hub.rows(sa.select(outbox.c.status).where(outbox.c.status == "dead"))] == []


async def test_a_cancel_after_packing_of_a_zto_parcel_is_a_task_for_cs_not_a_silent_success_nor_a_dead_letter(hub):
    gone = await hub.packed_and_gone("Z1")
    await hub.arrive(build("Z1", status=Status.CANCELLED, updated=60))
    [asked] = await until(lambda: [r for r in hub.outbox("carrier.intercept", "Z1") if r["status"] == "sent"], what="interception handled")
    assert asked["response"]["result"] == "manual" and asked["response"]["reason_code"] == "carrier_intercept_unsupported"
    [hold] = hub.order("Z1")["holds"]
    assert hold["reason"].startswith("需人工拦截") and gone["waybill_no"] in hold["reason"]
    told = [r["payload"] for r in hub.outbox("notify.wecom", "Z1") if r["payload"]["template"] == "intercept_result"]
    assert any("需人工拦截" in t["body"] for t in told)  # CS hears of it
    assert "carrier_intercept_manual" in hub.events("Z1") and gone["waybill_no"] not in hub.sim.carriers.awaiting_pickup
    await hub.release_callbacks("Z1")
    [ship] = await until(lambda: [r for r in hub.outbox("platform.ship", "Z1") if r["status"] in ("sent", "dead")], what="write-back handled")
    assert ship["status"] == "sent" and "skipped" in ship["response"]


async def test_a_cs_cancel_sf_cannot_intercept_any_more_writes_the_shipment_back_after_all(hub):
    gone = await hub.packed_and_gone("V2")
    waybill = gone["waybill_no"]
    intercepts = hub.rt.relay.senders.pop("carrier.intercept")  # the carrier is asked only once the write-back was withheld
    oid = order_id("fake", "V2")
    asked = await hub.client.post(f"/api/v1/orders/{oid}/intercept", json={"kind": "cancel", "reason": "买家来电取消"})
    assert asked.status_code in (200, 202), asked.text
    await until(lambda: hub.instruction("V2").get("outcome") == "too_late", what="too late")
    await hub.release_callbacks("V2")
    [withheld] = await until(lambda: [r for r in hub.outbox("platform.ship", "V2") if r["status"] == "sent"], what="write-back withheld")
    assert "买家已取消" in withheld["response"]["skipped"] and "1" in hub.instruction("V2")["detail"]["ship_skipped"]
    # by the time SF is asked the buyer has signed for it
    now = int(hub.sim.clock.now())
    await hub.sim_call("POST", "/_sim/carriers/parcels", {"parcels": [{"waybill_no": waybill, "carrier": "SF", "shipped_at": now - 10,
                                                                         "scans": [{"after_s": 1, "kind": "collected"}, {"after_s": 2, "kind": "delivered"}]}]})
    hub.rt.relay.senders["carrier.intercept"] = intercepts
    hub.rt.notify_outbox()
    [refused] = await until(lambda: [r for r in hub.outbox("carrier.intercept", "V2") if r["status"] == "sent"], what="SF asked")
    assert refused["response"]["result"] == "refused" and refused["response"]["code"] == "8101"
    assert hub.order("V2")["holds"][0]["reason"].startswith("快递拒绝拦截")
    resumed = await until(lambda: [r for r in hub.outbox("platform.ship", "V2") if r["id"] != withheld["id"] and r["status"] in ("sent", "dead")],
                          what="the write-back sent after all")
    assert resumed[0]["payload"]["waybill_no"] == waybill and "ship_writeback_resumed" in hub.events("V2")
    # it went to the platform this time: the test's platform has no ship API, which is what its refusal says
    assert resumed[0]["status"] == "dead" and "has no ship write-back" in resumed[0]["last_error"]


async def test_a_platform_refusing_the_write_back_before_its_cancel_is_processed_is_asked_once_more_then_skipped(hub):
    await hub.packed_and_gone("Z2")
    await hub.release_callbacks("Z2")  # shipped, and written back before the platform's cancel reached OrderHub
    [refused] = await until(lambda: [r for r in hub.outbox("platform.ship", "Z2") if r["attempts"] == 1 and r["status"] == "pending"],
                            what="the first refusal, to be tried again")
    assert "tried once more" in refused["last_error"]
    ships = hub.rt.relay.senders.pop("platform.ship")  # the retry waits until the cancel is in
    await hub.arrive(build("Z2", status=Status.CANCELLED, updated=600))
    await until(lambda: hub.instruction("Z2").get("outcome") == "too_late", what="the cancel, too late")
    hub.rt.relay.senders["platform.ship"] = ships
    [done] = await until(lambda: [r for r in hub.outbox("platform.ship", "Z2") if r["status"] in ("sent", "dead")], what="the retry")
    assert (done["status"], done["attempts"]) == ("sent", 2) and "平台已取消订单" in done["response"]["skipped"]
    assert "ship_writeback_skipped" in hub.events("Z2")


async def test_a_frozen_package_the_wms_then_will_not_cancel_is_intercepted_at_sf_once_it_ships(hub):
    hub.sim.wms.flow.configure({"pack_s": 30})
    await hub.arrive(build("V3", vip=True))
    await until(lambda: [r for r in hub.rows(sa.select(orders.c.status).where(orders.c.id == order_id("fake", "V3"))) if r["status"] == "picking"],
                what="picking")
    # this WMS froze the box, then finds it packed after all when told to drop it
    hub.sim.wms.flow.cancel = lambda code, body: {"order_code": code, "result": "refused", "status": "packed"}  # type: ignore[method-assign]
    await hub.arrive(build("V3", status=Status.CANCELLED, updated=60))
    await until(lambda: "intercept_too_late" in hub.events("V3"), what="the refused wms.cancel recorded")
    instruction = hub.instruction("V3")
    assert instruction["outcome"] == "too_late" and instruction["detail"]["awaiting_waybill"] == [1]
    assert hub.order("V3")["status"] == "cancelled" and hub.outbox("carrier.intercept", "V3") == []  # no waybill to name yet
    [parcel] = [o for o in hub.sim.wms.flow.orders.values() if order_id("fake", "V3") in o.code]
    status, _ = await hub.sim.wms.flow.call(parcel, "shipped", {"waybill_no": "SF7000000001", "carrier": "SF"})
    assert status == 200
    [asked] = await until(lambda: [r for r in hub.outbox("carrier.intercept", "V3") if r["status"] == "sent"], what="interception sent")
    assert asked["payload"]["waybill_no"] == "SF7000000001" and asked["payload"]["action"] == "return"
    assert asked["response"]["result"] == "accepted" and "SF7000000001" in hub.sim.carriers.awaiting_pickup
    assert hub.instruction("V3")["detail"]["awaiting_waybill"] == [] and "wms_shipped_cancelled" in hub.events("V3")
    assert hub.outbox("platform.ship", "V3") == []  # a cancelled package is not written back as shipped


# -- a merged package (合单): the other order in the box ships once ----------------------------------------


async def _merged_and_picking(hub: Hub) -> dict[str, Any]:
    hub.sim.wms.flow.configure({"pack_s": 30})
    await arrive(hub.rt, hub.channel, fulfillment_order("W1", buyer="open-w"), fulfillment_order("W2", buyer="open-w"))
    await until(lambda: [r for r in hub.rows(sa.select(orders.c.status).where(orders.c.id.in_([order_id("fake", "W1"), order_id("fake", "W2")])))
                         if r["status"] == "picking"] and len(hub.sim.wms.flow.orders) == 1, what="one merged box, picking")
    assert hub.order("W1")["merge_group"] and hub.order("W1")["merge_group"] == hub.order("W2")["merge_group"]
    [box] = hub.sim.wms.flow.orders.values()
    return box


def _boxes_with(hub: Hub, oid: str) -> list[Any]:
    return [o for o in hub.sim.wms.flow.orders.values() if any(line.get("order_id") == order_id("fake", oid) for line in o.body["lines"])]


async def test_a_merged_box_the_wms_will_not_cancel_ships_the_other_order_once_and_is_not_brought_back(hub):
    box = await _merged_and_picking(hub)
    hub.sim.wms.flow.cancel = lambda code, body: {"order_code": code, "result": "refused", "status": "packed"}  # type: ignore[method-assign]
    await hub.arrive(fulfillment_order("W1", buyer="open-w", status=Status.CANCELLED, updated=60))
    await until(lambda: "intercept_too_late" in hub.events("W1"), what="the refused wms.cancel recorded")
    # the other order was not sent a second time: its goods are in the box that will ship
    assert len(_boxes_with(hub, "W2")) == 1 and "wms_cancel_refused" in hub.events("W2") and "wms_resent" not in hub.events("W2")
    assert hub.order("W2")["holds"] in (None, [])
    [hold] = hub.order("W1")["holds"]
    assert hold["code"] == "intercept_pending" and "合单" in hold["reason"]
    assert hub.instruction("W1")["outcome"] == "too_late" and "after_cancel" not in hub.instruction("W1")["detail"]
    status, _ = await hub.sim.wms.flow.call(box, "shipped", {"waybill_no": "ZTO7000000001", "carrier": "ZTO"})
    assert status == 200
    await until(lambda: hub.order("W2")["status"] == "shipped", what="the other order shipped")
    await until(lambda: hub.outbox("platform.ship", "W2"), what="its write-back queued")
    assert hub.outbox("carrier.intercept", "W1") == []  # the box holds W2's goods too: not brought back by the carrier
    assert len([r for r in hub.rows(sa.select(outbox.c.id).where(outbox.c.kind == "wms.order"))]) == 1


async def test_a_merged_box_the_wms_cancels_sends_the_other_order_again_once(hub):
    await _merged_and_picking(hub)
    await hub.arrive(fulfillment_order("W1", buyer="open-w", status=Status.CANCELLED, updated=60))
    await until(lambda: hub.order("W1")["status"] == "cancelled", what="W1 intercepted")
    await until(lambda: len(_boxes_with(hub, "W2")) == 2, what="W2 sent again in a box of its own")
    await until(lambda: hub.order("W2")["status"] == "shipped", timeout=60, what="W2 shipped")
    # the WMS's answer and its `cancelled` callback both said so: sent again once
    assert hub.events("W2").count("wms_resent") == 1 and len(_boxes_with(hub, "W2")) == 2
    assert [o.status for o in _boxes_with(hub, "W2")] == ["cancelled", "shipped"]
    assert "after_cancel" not in hub.instruction("W1")["detail"]


async def test_a_cancel_too_late_for_a_packed_merged_box_is_a_task_for_cs_not_a_carrier_interception(hub):
    hub.sim.wms.flow.configure({"pack_s": 0.2, "ship_s": 60})
    await arrive(hub.rt, hub.channel, fulfillment_order("P1", buyer="open-p"), fulfillment_order("P2", buyer="open-p"))
    await until(lambda: [o for o in hub.sim.wms.flow.orders.values() if o.status == "packed"], what="one merged box, packed")
    [box] = hub.sim.wms.flow.orders.values()
    await hub.arrive(fulfillment_order("P1", buyer="open-p", status=Status.CANCELLED, updated=60))
    await until(lambda: hub.instruction("P1").get("outcome") == "too_late", what="the freeze refused: too late")
    [hold] = hub.order("P1")["holds"]
    assert hold["code"] == "intercept_pending" and "合单" in hold["reason"]
    status, _ = await hub.sim.wms.flow.call(box, "shipped", {"waybill_no": "ZTO7000000002", "carrier": "ZTO"})
    assert status == 200
    await until(lambda: hub.order("P2")["status"] == "shipped", what="the other order shipped")
    await until(lambda: hub.outbox("platform.ship", "P2"), what="its write-back queued")
    assert hub.outbox("carrier.intercept", "P1") == []  # the box holds P2's goods: CS has the buyer send P1's back
    assert hub.order("P2")["holds"] in (None, [])
