"""菜鸟 electronic waybills: the TOP signature over the fixture's request, the simulator's independent check, the reply."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import httpx
import orjson
import pytest

from orderhub.adapters.waybills.cainiao import CainiaoSettings, CainiaoWaybills, UnknownCarrier, WaybillOrder, read_reply
from orderhub.domain.errors import FetchError
from orderhub.simulator import cainiao as sim_cainiao
from fastapi import FastAPI

CST = timezone(timedelta(hours=8))
SENT = datetime(2025, 3, 18, 10, 12, 42, tzinfo=CST)
APP = sim_cainiao.DEMO_CAINIAO_APP
# md5(secret + k1v1k2v2… + secret), computed outside Python with md5sum over the fixture's compact request
# (the command is in docs/fulfillment.md): the adapter must produce exactly this.
EXPECTED_SIGN = "2E2275EB0DF23357FC5AA3F88755B6F8"


@pytest.fixture
def fixture(fixtures_dir):
    return orjson.loads((fixtures_dir / "cainiao_waybill_get.json").read_bytes())


def adapter(base_url: str = "http://sim/cainiao", sender: dict | None = None) -> CainiaoWaybills:
    settings = CainiaoSettings(base_url, APP["app_key"], APP["app_secret"], APP["session"], sender or {"name": "测试仓库"})
    return CainiaoWaybills(settings, clock=lambda: SENT.timestamp())


def sim_client() -> tuple[httpx.AsyncClient, sim_cainiao.CainiaoState]:
    state = sim_cainiao.CainiaoState(clock=lambda: SENT.timestamp())
    app = FastAPI()
    app.include_router(sim_cainiao.make_router(state), prefix="/cainiao")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim"), state


def test_the_signature_over_the_fixtures_request_is_the_one_computed_independently(fixture):
    form = adapter().signed_form(fixture["request"], SENT)
    assert form["sign"] == EXPECTED_SIGN
    assert form["param_waybill_cloud_print_apply_new_request"] == orjson.dumps(fixture["request"]).decode()
    assert (form["method"], form["timestamp"], form["v"], form["sign_method"]) == ("cainiao.waybill.ii.get", "2025-03-18 10:12:42", "2.0", "md5")


async def test_the_simulated_cainiao_issues_a_waybill_for_a_correctly_signed_request(fixture):
    client, state = sim_client()
    async with client:
        response = await client.post("/cainiao/router/rest", data=adapter().signed_form(fixture["request"], SENT))
    waybills = read_reply(response.content, "SF", "SF")
    assert list(waybills) == ["1"]
    assert waybills["1"].waybill_no.startswith("SF") and len(waybills["1"].waybill_no) == 15
    assert orjson.loads(waybills["1"].print_data)["templateURL"] == fixture["request"]["trade_order_info_dtos"][0]["template_url"]
    assert state.waybills()[0]["trade_order_list"] == ["4012345678901234560"]


async def test_a_request_changed_by_one_byte_after_signing_is_refused(fixture):
    form = adapter().signed_form(fixture["request"], SENT)
    form["param_waybill_cloud_print_apply_new_request"] = form["param_waybill_cloud_print_apply_new_request"].replace("1号", "2号")
    client, state = sim_client()
    async with client:
        response = await client.post("/cainiao/router/rest", content=urlencode(form).encode(),
                                     headers={"content-type": "application/x-www-form-urlencoded"})
    assert orjson.loads(response.content)["error_response"]["code"] == 25
    with pytest.raises(FetchError, match="Invalid signature") as caught:
        read_reply(response.content, "SF", "SF")
    assert caught.value.retryable is False
    assert state.waybills() == []


async def test_the_same_package_asked_again_gets_the_same_waybill_and_another_package_a_new_one():
    client, _ = sim_client()
    waybills = adapter("http://sim/cainiao")
    package = WaybillOrder("5d41402abc4b2a76b9719d911017c592-1:ab12cd34", "SF", "taobao", ("4012345678901234560",), (("测试纯棉T恤", 2),), 800,
                           {"name": "张**", "mobile": "*******0000", "address": {"province": "浙江省", "detail": "测试路**号"}})
    async with client:
        first = await waybills.get_one(client, package)
        again = await waybills.get_one(client, package)
        other = await waybills.get_one(client, WaybillOrder("other-1", "DBL", "jd", ("9",), (("x", 1),), 100, {"name": "李*"}))
    assert first.waybill_no == again.waybill_no
    assert (other.cp_code, other.carrier) == ("DBKD", "DBL") and other.waybill_no.startswith("DPK")


async def test_a_stale_timestamp_is_refused_by_the_simulated_cainiao(fixture):
    client, _ = sim_client()
    async with client:
        response = await client.post("/cainiao/router/rest", data=adapter().signed_form(fixture["request"], SENT - timedelta(hours=1)))
    assert orjson.loads(response.content)["error_response"]["code"] == 31


def test_the_fixtures_reply_reads_as_its_waybill(fixture):
    waybills = read_reply(orjson.dumps(fixture["response"]), "SF", "SF")
    assert waybills["1"].waybill_no == "SF0000000000001"
    assert orjson.loads(waybills["1"].print_data)["ver"] == "waybill_print_secret_version_1"


def test_a_package_becomes_a_dto_shaped_like_the_fixtures(fixture):
    dto = fixture["request"]["trade_order_info_dtos"][0]
    recipient = dto["recipient"]
    package = WaybillOrder("1", "SF", "taobao", tuple(dto["order_info"]["trade_order_list"]),
                           tuple((i["name"], i["count"]) for i in dto["package_info"]["items"]), 800, recipient)
    request = adapter(sender=fixture["request"]["sender"]).request([package])
    built = request["trade_order_info_dtos"][0]
    assert request["cp_code"] == "SF" and request["sender"] == fixture["request"]["sender"]
    assert built["order_info"] == dto["order_info"]
    assert built["package_info"]["items"] == dto["package_info"]["items"] and built["recipient"] == recipient


def test_a_carrier_without_a_cainiao_code_is_refused_before_any_call():
    with pytest.raises(UnknownCarrier):
        adapter().cp_code("NOPE")
    assert adapter().cp_code("dbl") == "DBKD"


def test_the_reply_of_a_service_outage_is_worth_retrying():
    body = orjson.dumps({"error_response": {"code": 15, "msg": "Remote service error", "sub_code": "isp.service-unavailable",
                                            "request_id": "FAKEreq0003"}})
    with pytest.raises(FetchError) as caught:
        read_reply(body, "SF", "SF")
    assert caught.value.retryable is True
