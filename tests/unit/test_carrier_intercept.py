"""SF interception (EXP_RECE_WANTED_INTERCEPT): the signed request OrderHub sends, and the simulated SF's side of it —
accepted while the parcel is on its way, its track then going back to the sender, refused once it is signed for."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from fastapi import FastAPI

from orderhub.adapters.carriers import sf
from orderhub.adapters.carriers.sf import Sf, SfConfig, sf_address
from orderhub.adapters.db.outbox_repo import DeliveryError
from orderhub.domain.logistics import ParcelState, apply_scans
from orderhub.simulator.carriers import DEMO_SF, CarrierSim, make_router

SHIPPED = 1742263920
H = 3600
WAREHOUSE = {"province": "上海", "city": "上海市", "district": "青浦区", "detail": "华新镇华志路1号"}


class Clock:
    def __init__(self) -> None:
        self.unix = SHIPPED

    def __call__(self) -> float:
        return self.unix


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def carriers(clock: Clock) -> CarrierSim:
    return CarrierSim(seed=1, clock=clock)


@pytest.fixture
async def http(carriers: CarrierSim):
    app = FastAPI()
    app.include_router(make_router(carriers))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client:
        yield client


def sf_client(checkword: str = DEMO_SF["checkword"], monthly_card: str = "") -> Sf:
    return Sf(SfConfig(checkword, DEMO_SF["partner_id"], base_url="http://sim/sf", monthly_card=monthly_card))


def ship(carriers: CarrierSim, waybill: str, scans: list[tuple[float, str]]) -> None:
    carriers.add(waybill, "SF", SHIPPED, scans=[{"after_s": int(h * H), "kind": kind} for h, kind in scans])


def test_an_interception_is_signed_like_the_route_query_and_carries_the_template_fields():
    form = sf_client(monthly_card="7551234567").intercept_form("SF1001", "return", sf_address(WAREHOUSE, "华东仓", "13800000000"),
                                                              timestamp="1742263920000", request_id="r1")
    assert (form["serviceCode"], form["partnerID"], form["requestID"]) == ("EXP_RECE_WANTED_INTERCEPT", DEMO_SF["partner_id"], "r1")
    assert form["msgDigest"] == sf.api_digest(form["msgData"], "1742263920000", DEMO_SF["checkword"])
    assert orjson.loads(form["msgData"]) == {
        "waybillNo": "SF1001", "serviceCode": "2", "role": "1", "payMode": "4", "monthlyCardNo": "7551234567", "cancel": False,
        "newDestAddress": {"province": "上海", "city": "上海市", "county": "青浦区", "address": "华新镇华志路1号",
                           "contact": "华东仓", "phone": "13800000000"},
    }
    redirect = orjson.loads(sf_client().intercept_form("SF1001", "redirect", sf_address({"province": "浙江省", "detail": "新路8号"}))["msgData"])
    assert (redirect["serviceCode"], redirect["payMode"], "monthlyCardNo" in redirect) == ("1", "1", False)


async def test_an_intercepted_parcel_goes_back_to_the_sender_and_its_track_ends_returned(carriers, clock, http):
    ship(carriers, "SF1001", [(1, "collected"), (5, "in_transit"), (20, "out_for_delivery"), (22, "delivered")])
    clock.unix = SHIPPED + 6 * H
    answer = await sf_client().intercept(http, "SF1001", "return", sf_address(WAREHOUSE, "华东仓", "13800000000"))
    assert answer.accepted and answer.code == "S0000"
    parcel = carriers.parcels["SF1001"]
    assert parcel.intercept["action"] == "return" and parcel.intercept["destination"]["address"] == "华新镇华志路1号"
    clock.unix = SHIPPED + 60 * H  # long after the buyer would have signed
    [track] = await sf_client().query(http, ["SF1001"])
    assert [s.carrier_code for s in track.scans] == ["50", "31", "631", "31", "631"]  # collected, in transit, then back
    assert "拦截" in track.scans[2].description
    assert apply_scans(ParcelState.NONE, track.scans).state is ParcelState.RETURNED
    assert "delivered" not in [s.kind for s in parcel.scans]
    again = await sf_client().intercept(http, "SF1001", "return", sf_address(WAREHOUSE))
    assert again.accepted and len(carriers.parcels["SF1001"].scans) == 5  # asked twice: the same answer, nothing redrawn


async def test_a_redirected_parcel_is_delivered_at_the_new_address(carriers, clock, http):
    ship(carriers, "SF1002", [(1, "collected"), (5, "in_transit"), (20, "delivered")])
    clock.unix = SHIPPED + 6 * H
    assert (await sf_client().intercept(http, "SF1002", "redirect", sf_address({"province": "浙江省", "detail": "新路8号"}))).accepted
    clock.unix = SHIPPED + 60 * H
    [track] = await sf_client().query(http, ["SF1002"])
    assert apply_scans(ParcelState.NONE, track.scans).state is ParcelState.DELIVERED
    assert "改址" in track.scans[2].description and "delivered" == carriers.parcels["SF1002"].scans[-1].kind


async def test_a_parcel_signed_for_already_cannot_be_intercepted(carriers, clock, http):
    ship(carriers, "SF1003", [(1, "collected"), (3, "delivered")])
    clock.unix = SHIPPED + 4 * H
    answer = await sf_client().intercept(http, "SF1003", "return", sf_address(WAREHOUSE))
    assert (answer.accepted, answer.code) == (False, "8101") and "签收" in answer.message
    assert carriers.parcels["SF1003"].intercept is None


async def test_a_waybill_sf_has_not_collected_yet_is_turned_back_at_pickup(carriers, clock, http):
    assert (await sf_client().intercept(http, "SF1004", "return", sf_address(WAREHOUSE))).accepted
    clock.unix = SHIPPED + 60
    carriers.add("SF1004", "SF", SHIPPED + 60, scenario="normal")  # the warehouse hands it over a minute later
    kinds = [s.kind for s in carriers.parcels["SF1004"].scans]
    assert kinds == ["collected", "returned", "in_transit", "returned"]


async def test_a_wrong_checkword_is_refused_for_good_and_a_server_error_is_retried(carriers, http):
    with pytest.raises(DeliveryError) as refused:
        await sf_client("not-the-checkword").intercept(http, "SF1001", "return", sf_address(WAREHOUSE))
    assert not refused.value.retryable and "A1006" in str(refused.value)
    down = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(503)))
    with pytest.raises(DeliveryError) as busy:
        await sf_client().intercept(down, "SF1001", "return", sf_address(WAREHOUSE))
    assert busy.value.retryable
    await down.aclose()


async def test_the_request_is_the_form_sf_reads(carriers, clock, http):
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update({k: v[0] for k, v in parse_qs(request.content.decode()).items()})
        return httpx.Response(200, json={"apiResultCode": "A1000", "apiResultData": orjson.dumps({"success": True, "errorCode": "S0000"}).decode()})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as recording:
        await sf_client().intercept(recording, "SF1009", "return", sf_address(WAREHOUSE), request_id="carrier.intercept:7:SF1009")
    assert seen["requestID"] == "carrier.intercept:7:SF1009"  # the outbox key: the same on every resend
    assert set(seen) == {"partnerID", "requestID", "serviceCode", "timestamp", "msgDigest", "msgData"}
