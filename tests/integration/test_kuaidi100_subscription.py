"""Kuaidi100 pushes only what was subscribed: a shipped parcel's subscription request goes out through the
outbox to the simulated Kuaidi100 (real HTTP, its `poll` API), which then pushes the track to OrderHub's
callback signed with the salt given at subscription."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from auth_helpers import secured_app
from orderhub.adapters.carriers.kuaidi100 import SUBSCRIBE_KIND, Kuaidi100, Kuaidi100Config, Kuaidi100Subscriber
from orderhub.adapters.carriers.sf import Sf, SfConfig
from orderhub.adapters.db import migrate, outbox_repo
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.outbox_repo import DeliveryError
from orderhub.adapters.db.tables import orders, outbox, tracking_events
from orderhub.entrypoints.api.tracking_routes import build_tracking_router
from orderhub.services.rules import RuleBook
from orderhub.services.tracking import Tracker, default_stall_rules
from orderhub.simulator.carriers import DEMO_KUAIDI100, DEMO_SF, CarrierSim, make_control_router, make_router
from servers import serve_app

SHIPPED = datetime(2025, 3, 18, 2, 12, tzinfo=UTC)


@dataclass
class World:
    engine: sa.Engine
    tracker: Tracker
    sim: CarrierSim
    http: httpx.AsyncClient
    sender: Kuaidi100Subscriber

    def ship(self, oid: str, waybill: str, carrier: str) -> None:
        with self.engine.begin() as conn:
            if conn.execute(sa.select(orders.c.id).where(orders.c.id == oid)).first() is None:
                conn.execute(orders.insert().values(
                    id=oid, channel="douyin", shop_id="S1", original_id=oid, status="shipped", platform_status={}, created_at=SHIPPED,
                    updated_at=SHIPPED, currency="CNY", goods=1000, discount=0, shipping=0, paid=1000, buyer={}, holds=[], tags=[],
                    address={"province": "浙江省"}, pii={}, content_hash="x", version=1, raw="{}", ingested_at=SHIPPED, modified_at=SHIPPED))
            self.tracker.register_parcel(conn, oid, 1, carrier, waybill, SHIPPED)

    def requests(self) -> list[Any]:
        with self.engine.begin() as conn:
            return outbox_repo.claim(conn, limit=50, lease=timedelta(minutes=1), now=datetime.now(UTC) + timedelta(seconds=1),
                                     kinds=[SUBSCRIBE_KIND])

    def events(self, waybill: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(tracking_events).where(tracking_events.c.waybill_no == waybill)).scalar_one()


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    rules = RuleBook(engine, extra_sets={"stall": default_stall_rules})
    rules.ensure_defaults()
    sim = CarrierSim(seed=5, clock=lambda: SHIPPED.timestamp() + 3 * 86400)  # three days on: the whole track is visible
    async with httpx.AsyncClient(timeout=10) as http:
        sim_app = FastAPI()
        sim_app.include_router(make_router(sim))
        sim_app.include_router(make_control_router(sim, lambda: http), prefix="/_sim/carriers")
        sim_server = await serve_app(sim_app)
        sf = Sf(SfConfig(DEMO_SF["checkword"], DEMO_SF["partner_id"], base_url=f"{sim_server.url}/sf"))
        tracker = Tracker(engine, rules, http=http, sf=sf)
        hub_server = await serve_app(secured_app(engine, build_tracking_router(SimpleNamespace(engine=engine, tracker=tracker))))
        # the callback is OrderHub's own URL, known once it listens
        kd100 = Kuaidi100(Kuaidi100Config(**DEMO_KUAIDI100, base_url=f"{sim_server.url}/kuaidi100",
                                          callback_url=f"{hub_server.url}/api/v1/webhooks/carriers/kuaidi100"))
        tracker.kuaidi100 = kd100
        try:
            yield World(engine, tracker, sim, http, Kuaidi100Subscriber(kd100, http))
        finally:
            for served in (hub_server, sim_server):
                await served.stop()
    engine.dispose()


async def test_a_shipped_parcel_is_subscribed_once_and_its_track_then_arrives_at_the_callback(world: World) -> None:
    world.ship("O1", "ZT5001", "ZTO")
    world.ship("O1", "ZT5001", "ZTO")  # a replayed ship event: the same request, not a second one
    [request] = world.requests()
    assert request.payload == {"carrier": "ZTO", "waybill_no": "ZT5001"} and request.endpoint == "carrier:kuaidi100"
    assert await world.sender.send(request) == {"returnCode": "200", "message": "提交成功"}
    subscribed = world.sim.subscriptions["ZT5001"]
    assert subscribed["company"] == "zhongtong" and subscribed["salt"] == DEMO_KUAIDI100["salt"]
    assert subscribed["callbackurl"].endswith("/api/v1/webhooks/carriers/kuaidi100")
    world.sim.add("ZT5001", "ZTO", int(SHIPPED.timestamp()), scenario="normal")
    assert (await world.sim.push(world.http)) == {"sent": 1, "failed": 0}  # no target: the subscription says where
    assert world.events("ZT5001") >= 3
    # asked again (the outbox retried after a lost answer): Kuaidi100 says 501 重复订阅, which is success
    assert (await world.sender.send(request))["returnCode"] == "501"


async def test_sf_parcels_follow_sfs_own_route_push_and_nothing_is_subscribed_without_a_callback(world: World) -> None:
    world.ship("O2", "SF7001", "SF")
    assert world.requests() == []
    world.tracker.kuaidi100 = Kuaidi100(replace(world.tracker.kuaidi100.config, callback_url=None))  # type: ignore[union-attr]
    world.ship("O3", "YT7002", "YTO")
    with world.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one() == 0


async def test_a_refused_subscription_is_dead_lettered_with_kuaidi100s_code_and_a_server_error_is_retried(world: World) -> None:
    world.ship("O4", "ZT5004", "ZTO")
    [request] = world.requests()
    wrong_key = Kuaidi100Subscriber(Kuaidi100(replace(world.tracker.kuaidi100.config, key="not-the-key")), world.http)  # type: ignore[union-attr]
    with pytest.raises(DeliveryError) as refused:
        await wrong_key.send(request)
    assert not refused.value.retryable and "600" in str(refused.value)
    down = Kuaidi100Subscriber(Kuaidi100(replace(world.tracker.kuaidi100.config, base_url="http://127.0.0.1:9")), world.http)  # type: ignore[union-attr]
    with pytest.raises(DeliveryError) as unreachable:
        await down.send(request)
    assert unreachable.value.retryable
    assert world.sim.subscriptions == {}
