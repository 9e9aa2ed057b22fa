"""The simulator's glue for a simulated day: a package the WMS ships is handed to its carrier, and the
carriers' tracks can be compressed in time, drawn from a chosen mix and pushed at a chosen cadence."""

from __future__ import annotations

import asyncio
import random

import pytest
from fastapi.testclient import TestClient

from orderhub.simulator import Simulator, create_app
from orderhub.simulator.carriers import SCENARIOS, CarrierSim, timeline
from orderhub.simulator.clock import FixedClock
from orderhub.simulator.wms_flow import WmsOrder

NOW = 1742263920
H = 3600


def package(code: str, waybill: dict | None, carrier: str = "ZTO") -> WmsOrder:
    body = {"order_code": code, "warehouse": "WH-EAST", "carrier": carrier, "lines": [{"sku": "NO-SUCH-SKU", "qty": 1}]}
    order = WmsOrder(code, "app", f"W-{code}", body, 0, NOW)
    order.waybill = waybill
    return order


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=5, clock=FixedClock(NOW))


def test_a_shipped_package_is_handed_to_its_carrier_at_the_simulated_time(sim):
    sim.clock.advance(90)
    sim.wms.flow.on_shipped(package("P1", {"carrier": "SF", "waybill_no": "SF0000000001", "cp_code": "SF"}))
    sim.wms.flow.on_shipped(package("P2", {"carrier": "ZTO", "waybill_no": "7000000000002", "cp_code": "ZTO"}))
    sf, zto = sim.carriers.parcels["SF0000000001"], sim.carriers.parcels["7000000000002"]
    assert (sf.carrier, sf.provider, sf.shipped_at) == ("SF", "sf", NOW + 90)
    assert (zto.carrier, zto.provider, zto.shipped_at) == ("ZTO", "kuaidi100", NOW + 90)
    assert all(scan.at > NOW + 90 for p in (sf, zto) for scan in p.scans)


def test_a_package_without_a_waybill_is_not_tracked(sim):
    sim.wms.flow.on_shipped(package("P1", None))
    sim.wms.flow.on_shipped(package("P2", {"carrier": "ZTO", "waybill_no": ""}))
    assert sim.carriers.parcels == {}


def test_a_package_reported_shipped_again_keeps_the_track_it_has(sim):
    shipped = package("P1", {"carrier": "ZTO", "waybill_no": "7000000000001"})
    sim.wms.flow.on_shipped(shipped)
    first = sim.carriers.parcels["7000000000001"]
    first.pushed = 2
    sim.clock.advance(600)
    sim.wms.flow.on_shipped(shipped)
    assert sim.carriers.parcels["7000000000001"] is first and first.pushed == 2 and first.shipped_at == NOW


def test_shipping_still_takes_the_package_off_the_warehouse_stock(sim):
    sku, warehouse, on_hand = sim.wms.stock()[0]
    shipped = package("P1", {"carrier": "ZTO", "waybill_no": "7000000000001"})
    shipped.body.update(warehouse=warehouse, lines=[{"sku": sku, "qty": 1}])
    sim.wms.flow.on_shipped(shipped)
    assert sim.wms.stock(warehouse, sku) == [(sku, warehouse, on_hand - 1)]
    assert "7000000000001" in sim.carriers.parcels


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_compressed_track_is_the_same_track_in_less_time(scenario):
    real = timeline(random.Random(8), NOW, scenario)
    fast = timeline(random.Random(8), NOW, scenario, time_scale=1 / H)  # an hour in a second
    assert [(s.kind, s.text, s.city) for s in fast] == [(s.kind, s.text, s.city) for s in real]
    gaps, real_gaps = _gaps(fast), _gaps(real)
    assert all(gap >= 1 for gap in gaps)  # strictly increasing at one-second resolution
    assert all(abs(gap - real_gap / H) <= 1 for gap, real_gap in zip(gaps, real_gaps, strict=True))


def _gaps(scans: list) -> list[int]:
    times = [NOW, *[s.at for s in scans]]
    return [after - before for before, after in zip(times, times[1:], strict=False)]


def test_the_default_scale_draws_exactly_the_tracks_it_drew_before():
    plain, configured = CarrierSim(seed=4, clock=lambda: NOW), CarrierSim(seed=4, clock=lambda: NOW, time_scale=1.0)
    rng = random.Random(4)
    for n in range(30):
        a, b = plain.add(f"W{n}", "ZTO", NOW), configured.add(f"W{n}", "ZTO", NOW)
        # what the code drew before time_scale existed: the scenario, then the timeline, from one rng
        scenario = rng.choices(list(SCENARIOS), weights=list(SCENARIOS.values()))[0]
        assert a.scenario == b.scenario == scenario
        assert a.scans == b.scans == timeline(rng, NOW, scenario)


def test_the_configured_scale_and_mix_apply_to_parcels_added_afterwards():
    carriers = CarrierSim(seed=2, clock=lambda: NOW)
    slow = carriers.add("W-SLOW", "ZTO", NOW)
    assert carriers.configure({"time_scale": 1 / H, "scenarios": {"stall_in_transit": 1, "normal": 0}}) == {
        "time_scale": 1 / H, "scenarios": {"stall_in_transit": 1.0, "normal": 0.0}, "push_interval_s": None}
    fast = [carriers.add(f"W{n}", "ZTO", NOW) for n in range(10)]
    assert {p.scenario for p in fast} == {"stall_in_transit"}
    # collected within 1.5 "hours", then one or two hops of at most 10: seconds now
    assert max(s.at for p in fast for s in p.scans) - NOW <= 22
    assert all(s.at - NOW >= 0.2 * H for s in slow.scans)  # added before: real hours


@pytest.mark.parametrize("bad", [
    {"time_scale": 0}, {"time_scale": -1}, {"scenarios": {"teleported": 1}}, {"scenarios": {"normal": -1}},
    {"scenarios": {"normal": 0}}, {"push_interval_s": 0}, {"scenarios": "normal"},
])
def test_a_bad_carriers_config_is_refused_and_changes_nothing(bad):
    carriers = CarrierSim(seed=2)
    with pytest.raises((ValueError, TypeError)):
        carriers.configure(bad)
    assert carriers.config() == {"time_scale": 1.0, "scenarios": SCENARIOS, "push_interval_s": None}


def test_the_carriers_config_is_set_over_the_control_api(sim):
    with TestClient(create_app(sim)) as client:
        assert client.get("/_sim/carriers/config").json()["time_scale"] == 1.0
        changed = client.put("/_sim/carriers/config", json={"time_scale": 0.001, "push_interval_s": 0.5})
        assert changed.status_code == 200 and changed.json()["time_scale"] == 0.001 and changed.json()["push_interval_s"] == 0.5
        refused = client.put("/_sim/carriers/config", json={"scenarios": {"teleported": 1}})
        assert refused.status_code == 400 and "scenarios" in refused.json()["detail"]
    assert (sim.carriers.time_scale, sim.carriers.push_interval_s) == (0.001, 0.5)


async def test_push_forever_follows_the_configured_cadence():
    carriers = CarrierSim(seed=2)
    rounds: list[str | None] = []

    async def push(http, target=None, waybill_no=None, replay=False):
        rounds.append(target)
        return {"sent": 0, "failed": 0}

    carriers.push = push  # type: ignore[method-assign]
    carriers.configure({"push_interval_s": 0.01})
    task = asyncio.create_task(carriers.push_forever(None, 5.0, "http://hub"))  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(rounds) >= 5 and set(rounds) == {"http://hub"}  # not one round per 5 s
