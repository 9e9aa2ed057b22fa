"""Logistics tracking end to end on both databases: the simulated carriers push over real HTTP to the
tracking routes, OrderHub polls their query APIs, and the stall rules open tickets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from auth_helpers import secured_app, user_headers
from servers import serve_app

from orderhub.adapters.carriers.kuaidi100 import Kuaidi100, Kuaidi100Config
from orderhub.adapters.carriers.sf import Sf, SfConfig
from orderhub.adapters.db import migrate
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.tables import order_events, orders, parcels, tickets, tracking_events
from orderhub.entrypoints.api.tracking_routes import build_tracking_router
from orderhub.services.rules import RuleBook
from orderhub.services.tracking import Tracker, default_stall_rules
from orderhub.simulator.carriers import DEMO_KUAIDI100, DEMO_SF, SCENARIOS, CarrierSim, make_control_router, make_router

SHIPPED = 1742263920  # 2025-03-18 02:12 UTC
H = 3600


class Clock:
    """One simulated time for the carriers and OrderHub."""

    def __init__(self, now: int) -> None:
        self.unix = now

    def __call__(self) -> float:
        return self.unix

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.unix, UTC)


class World:
    def __init__(self, engine: sa.Engine, tracker: Tracker, sim: CarrierSim, clock: Clock, http: httpx.AsyncClient,
                 hub: str, sim_url: str, stalls: list[tuple[str, str, str]]) -> None:
        self.engine, self.tracker, self.sim, self.clock, self.http = engine, tracker, sim, clock, http
        self.cs = user_headers(engine, "cs-li", "cs")  # the hub's API wants a login; the carrier webhooks do not
        self.hub, self.sim_url, self.stalls = hub, sim_url, stalls

    def order(self, oid: str, province: str = "浙江省") -> None:
        now = self.clock.utc()
        with self.engine.begin() as conn:
            conn.execute(orders.insert().values(
                id=oid, channel="douyin", shop_id="88880001", original_id=oid, status="shipped", platform_status={}, created_at=now,
                updated_at=now, currency="CNY", goods=1000, discount=0, shipping=0, paid=1000, buyer={}, holds=[], tags=["vip"],
                address={"province": province, "city": "杭州市", "district": "西湖区", "detail": "测试路***"}, pii={},
                content_hash="x", version=1, raw="{}", ingested_at=now, modified_at=now, shipment=None,
            ))  # fmt: skip

    def ship(self, oid: str, waybill: str, carrier: str, scans: list[tuple[float, str]] | None = None, scenario: str | None = None) -> None:
        self.order(oid)
        with self.engine.begin() as conn:
            self.tracker.register_parcel(conn, oid, 1, carrier, waybill, datetime.fromtimestamp(SHIPPED, UTC))
        scripted = [{"after_s": int(h * H), "kind": kind} for h, kind in scans] if scans is not None else None
        self.sim.add(waybill, carrier, SHIPPED, scenario=scenario, scans=scripted)

    async def push(self, **body: Any) -> dict[str, int]:
        response = await self.http.post(f"{self.sim_url}/_sim/carriers/push", json={"target": self.hub, **body})
        assert response.status_code == 200, response.text
        return response.json()

    async def tracking(self, oid: str) -> dict[str, Any]:
        response = await self.http.get(f"{self.hub}/api/v1/orders/{oid}/tracking", headers=self.cs)
        assert response.status_code == 200, response.text
        return response.json()

    def at(self, hours: float) -> None:
        self.clock.unix = SHIPPED + int(hours * H)

    def count(self, table: sa.Table, *where: Any) -> int:
        with self.engine.connect().execution_options(readonly=True) as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()

    def row(self, table: sa.Table, *where: Any) -> Any:
        with self.engine.connect().execution_options(readonly=True) as conn:
            return conn.execute(sa.select(table).where(*where)).one()


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    rules = RuleBook(engine, extra_sets={"stall": default_stall_rules})
    rules.ensure_defaults()
    clock = Clock(SHIPPED)
    sim = CarrierSim(seed=3, clock=clock)
    stalls: list[tuple[str, str, str]] = []
    async with httpx.AsyncClient(timeout=10) as http:
        sim_app = FastAPI()
        sim_app.include_router(make_router(sim))
        sim_app.include_router(make_control_router(sim, lambda: http), prefix="/_sim/carriers")
        sim_server = await serve_app(sim_app)
        tracker = Tracker(
            engine, rules, http=http, poll_after=timedelta(hours=6), clock=clock.utc,
            kuaidi100=Kuaidi100(Kuaidi100Config(**DEMO_KUAIDI100, base_url=f"{sim_server.url}/kuaidi100")),
            sf=Sf(SfConfig(DEMO_SF["checkword"], DEMO_SF["partner_id"], base_url=f"{sim_server.url}/sf")),
            on_stall=lambda conn, order_id, code, reason: stalls.append((order_id, code, reason)),
        )
        hub_app = secured_app(engine, build_tracking_router(SimpleNamespace(engine=engine, tracker=tracker)))
        hub_server = await serve_app(hub_app)
        try:
            yield World(engine, tracker, sim, clock, http, hub_server.url, sim_server.url, stalls)
        finally:
            for served in (hub_server, sim_server):
                await served.stop()
            engine.dispose()


NORMAL = [(0.5, "collected"), (3, "in_transit"), (12, "in_transit"), (20, "out_for_delivery"), (22, "delivered")]


async def test_signed_pushes_from_both_carriers_move_the_parcels_and_make_the_orders_track(world):
    world.ship("order-sf", "SF1001", "SF", NORMAL)
    world.ship("order-zto", "ZT2002", "ZTO", NORMAL[:4])
    world.at(21)
    assert await world.push() == {"sent": 2, "failed": 0}
    sf_track = await world.tracking("order-sf")
    assert sf_track["logistics_status"] == "out_for_delivery" and sf_track["status"] == "shipped"
    world.at(30)
    await world.push()
    sf_track, zto_track = await world.tracking("order-sf"), await world.tracking("order-zto")
    assert sf_track["logistics_status"] == "delivered" and sf_track["logistics_label"] == "已签收"
    assert sf_track["parcels"][0]["state"] == "delivered" and sf_track["status"] == "shipped"  # the platform says when an order is delivered
    assert [e["state"] for e in sf_track["events"]] == ["delivered", "out_for_delivery", "in_transit", "in_transit", "collected"]
    assert sf_track["events"][0]["state_label"] == "已签收" and sf_track["events"][0]["source"] == "push"
    assert zto_track["parcels"][0]["state"] == "out_for_delivery" and zto_track["events"][0]["carrier_code"] == "5"
    moves = world.count(order_events, order_events.c.order_id == "order-sf", order_events.c.kind == "logistics")
    assert moves == 4  # none → collected → in_transit → out_for_delivery → delivered
    assert world.row(orders, orders.c.id == "order-sf").shipment == {"carrier": "SF", "waybill_no": "SF1001", "logistics_status": "delivered"}


async def test_a_replayed_push_changes_nothing(world):
    world.ship("order-1", "SF1001", "SF", NORMAL)
    world.ship("order-2", "ZT2002", "ZTO", NORMAL)
    world.at(30)
    await world.push()
    before = (world.count(tracking_events), world.count(order_events), world.row(orders, orders.c.id == "order-2").version)
    assert await world.push(replay=True) == {"sent": 2, "failed": 0}
    assert (world.count(tracking_events), world.count(order_events), world.row(orders, orders.c.id == "order-2").version) == before
    assert before[0] == 10


async def test_a_push_with_a_wrong_signature_is_refused_with_401_and_nothing_is_kept(world):
    world.ship("order-1", "ZT2002", "ZTO", NORMAL)
    world.ship("order-2", "SF1001", "SF", NORMAL)
    world.at(30)
    forger = CarrierSim(clock=world.clock, kuaidi100={**DEMO_KUAIDI100, "salt": "not-the-salt"}, sf={**DEMO_SF, "checkword": "not-it"})
    forger.parcels = world.sim.parcels
    assert await forger.push(world.http, world.hub) == {"sent": 0, "failed": 2}
    parcel = world.sim.parcels["ZT2002"]
    response = await world.http.post(f"{world.hub}/api/v1/webhooks/carriers/kuaidi100", content=forger.kuaidi100_push(parcel, parcel.scans),
                                     headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 401 and response.json()["code"] == "signature_invalid"
    unsigned = await world.http.post(f"{world.hub}/api/v1/webhooks/carriers/sf", content=b'{"Body":{"WaybillRoute":[]}}')
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "signature_missing"
    assert world.count(tracking_events) == 0 and world.count(order_events) == 0


async def test_a_scan_arriving_after_a_newer_one_is_kept_in_the_track_but_does_not_move_the_parcel_back(world):
    world.ship("order-1", "SF1001", "SF", NORMAL)
    parcel = world.sim.parcels["SF1001"]
    route = f"{world.hub}/api/v1/webhooks/carriers/sf"
    for scans in ([parcel.scans[0], parcel.scans[4]], [parcel.scans[2]]):  # collected + delivered first, an in-transit scan later
        body, digest = world.sim.sf_push(parcel, scans)
        response = await world.http.post(route, content=body, params={"msgDigest": digest})
        assert response.status_code == 200 and response.json() == {"return_code": "0000", "return_msg": "成功"}
    track = await world.tracking("order-1")
    assert track["parcels"][0]["state"] == "delivered"
    assert [e["state"] for e in track["events"]] == ["delivered", "in_transit", "collected"]


async def test_parcels_no_carrier_pushed_for_hours_are_polled_through_the_query_apis(world):
    world.ship("order-sf", "SF1001", "SF", NORMAL)
    world.ship("order-zto", "ZT2002", "ZTO", NORMAL)
    world.ship("order-new", "YT3003", "YTO", [(0.5, "collected")])
    world.at(4)
    assert (await world.tracker.poll_due())["due"] == 0  # shipped less than 6 h ago: pushes may still come
    world.at(13)
    with world.engine.begin() as conn:  # the newest parcel shipped later
        conn.execute(sa.update(parcels).where(parcels.c.waybill_no == "YT3003").values(shipped_at=world.clock.utc() - timedelta(hours=1)))
    counts = await world.tracker.poll_due()
    assert counts == {"due": 2, "polled": 2, "failed": 0, "skipped": 0, "new_events": 6}
    for oid in ("order-sf", "order-zto"):
        track = await world.tracking(oid)
        assert track["parcels"][0]["state"] == "in_transit" and {e["source"] for e in track["events"]} == {"poll"}
    assert world.sim.stats["queries"] == 2
    assert (await world.tracker.poll_due())["due"] == 0  # just polled: not again before poll_after


async def _stall_case(world: World, oid: str, scans: list[tuple[float, str]], hours: float) -> list[str]:
    world.ship(oid, f"W-{oid}", "ZTO", scans)
    world.at(hours)
    await world.push()
    world.tracker.check_stalls(world.clock.utc())
    with world.engine.connect().execution_options(readonly=True) as conn:
        return sorted(conn.execute(sa.select(tickets.c.kind).where(tickets.c.order_id == oid)).scalars())


@pytest.mark.parametrize(("scans", "hours", "expected"), [
    ([], 30, ["stall_no_first_scan"]),
    ([], 20, []),
    ([(0.5, "collected"), (3, "in_transit")], 30, ["stall_in_transit_24h"]),
    ([(0.5, "collected"), (3, "in_transit")], 20, []),
    ([(0.5, "collected"), (3, "in_transit")], 55, ["stall_in_transit_48h"]),
    ([(3.5, "collected"), (5, "in_transit")], 10, ["scan_after_ship"]),
    ([(1.5, "collected"), (5, "in_transit")], 10, []),
], ids=["no-first-scan-30h", "no-first-scan-20h-not-yet", "in-transit-27h-silent", "in-transit-17h-silent-fine",
        "in-transit-52h-silent", "collected-3.5h-after-ship", "collected-1.5h-after-ship-fine"])  # fmt: skip
async def test_each_stall_rule_fires_when_its_condition_holds_and_only_then(world, scans, hours, expected):
    assert await _stall_case(world, "order-1", scans, hours) == expected
    order = world.row(orders, orders.c.id == "order-1")
    if expected:
        assert expected[0] in order.tags and ("stalled" in order.tags or "logistics_exception" in order.tags) and "vip" in order.tags
        assert order.holds == [] and [code for _, code, _ in world.stalls] == expected
    else:
        assert order.tags == ["vip"] and world.stalls == []


async def test_a_stall_opens_one_ticket_however_often_it_is_checked_and_closes_when_the_parcel_moves(world):
    await _stall_case(world, "order-1", [(0.5, "collected"), (3, "in_transit"), (60, "out_for_delivery")], 55)
    world.tracker.check_stalls(world.clock.utc() + timedelta(minutes=5))
    assert world.count(tickets, tickets.c.status == "open") == 1 and len(world.stalls) == 1
    listed = (await world.http.get(f"{world.hub}/api/v1/tickets", params={"status": "open", "kind": "stall_in_transit_48h"}, headers=world.cs)).json()
    assert [t["order_id"] for t in listed["items"]] == ["order-1"] and listed["items"][0]["detail"]["rule_version"] == "stall@1"
    assert world.row(parcels, parcels.c.waybill_no == "W-order-1").stall == "stall_in_transit_48h"
    world.at(61)
    await world.push()  # it moves again
    ticket = world.row(tickets, tickets.c.order_id == "order-1")
    assert ticket.status == "closed" and ticket.closed_by == "tracking"
    assert world.row(orders, orders.c.id == "order-1").tags == ["vip"]
    assert world.row(parcels, parcels.c.waybill_no == "W-order-1").stall is None
    world.tracker.check_stalls(world.clock.utc())
    assert world.count(tickets) == 1  # moving again: nothing new


async def test_a_ticket_closed_by_hand_is_not_opened_again_for_the_same_situation(world):
    await _stall_case(world, "order-1", [], 30)
    [ticket] = (await world.http.get(f"{world.hub}/api/v1/tickets", params={"status": "open"}, headers=world.cs)).json()["items"]
    closed = await world.http.post(f"{world.hub}/api/v1/tickets/{ticket['id']}/close", json={"actor": "cs-li", "reason": "已联系快递补扫"}, headers=world.cs)
    assert closed.status_code == 200 and closed.json()["status"] == "closed" and closed.json()["closed_by"] == "cs-li"
    again = await world.http.post(f"{world.hub}/api/v1/tickets/{ticket['id']}/close", json={"actor": "cs-li", "reason": "again"}, headers=world.cs)
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    world.tracker.check_stalls(world.clock.utc() + timedelta(hours=2))
    assert world.count(tickets) == 1 and world.row(orders, orders.c.id == "order-1").tags == ["vip"]


async def test_a_carrier_reported_exception_opens_a_ticket_that_waits_for_a_person(world):
    world.ship("order-1", "SF1001", "SF", [(0.5, "collected"), (3, "in_transit"), (9, "damaged"), (20, "out_for_delivery"), (22, "delivered")])
    world.at(10)
    await world.push()
    ticket = world.row(tickets, tickets.c.order_id == "order-1")
    assert ticket.kind == "parcel_damaged" and (await world.tracking("order-1"))["logistics_status"] == "damaged"
    world.at(30)
    await world.push()
    assert world.row(tickets, tickets.c.order_id == "order-1").status == "open"  # delivered, but damaged: CS decides
    assert (await world.tracking("order-1"))["logistics_status"] == "delivered"
    assert world.stalls == [("order-1", "parcel_damaged", "快递异常：破损（快件外包装破损，已登记）")]


async def test_stall_rules_are_versioned_data_a_new_version_or_a_switch_takes_effect_at_the_next_check(world):
    rules = world.tracker.rules
    content = default_stall_rules()
    table = content["nodes"][1]["content"]
    row = next(r for r in table["rules"] if r["_id"] == "no-first-scan")
    row["in-hours_since_shipped"] = ">= 12"
    rules.save_draft("stall", content, "ops-wang", "旺季缩短到12小时")
    assert rules.publish("stall", "ops-wang")["rule_version"] == "stall@2"
    assert await _stall_case(world, "order-1", [], 13) == ["stall_no_first_scan"]
    assert world.row(tickets, tickets.c.order_id == "order-1").detail["rule_version"] == "stall@2"
    rules.set_switch("stall", "no-first-scan", False, "ops-wang")
    assert await _stall_case(world, "order-2", [], 13) == []
    assert rules.rollback("stall", "ops-wang")["rule_version"] == "stall@1"
    assert sorted(rules.live().sets) == ["carrier", "gifts", "holds", "priority", "routing", "split"]  # the audit never sees it


async def test_every_drawn_scenario_of_the_simulator_ends_in_the_state_its_carrier_last_reported(world):
    for n in range(24):
        carrier = "SF" if n % 2 else "ZTO"
        world.ship(f"order-{n}", f"W{n:03d}", carrier, scenario=list(SCENARIOS)[n % len(SCENARIOS)])
    world.at(400)
    await world.push()
    for n in range(24):
        parcel = world.sim.parcels[f"W{n:03d}"]
        state = world.row(parcels, parcels.c.waybill_no == parcel.waybill_no).state
        assert state == (parcel.scans[-1].kind if parcel.scans else "none"), (parcel.scenario, [s.kind for s in parcel.scans])
    troubles = {s.kind for p in world.sim.parcels.values() for s in p.scans} - {"collected", "in_transit", "out_for_delivery", "delivered"}
    assert len(troubles) >= 3, troubles  # not only the happy path
    assert world.count(tracking_events) == sum(len(p.scans) for p in world.sim.parcels.values())
