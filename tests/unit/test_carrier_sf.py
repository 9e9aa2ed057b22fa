"""SF (顺丰): the fixture route push, its digest (assumed, docs/logistics.md), the documented query signature and answers."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs

import httpx
import orjson
import pytest

from orderhub.adapters.carriers import sf
from orderhub.adapters.carriers.sf import Sf, SfConfig
from orderhub.domain.errors import ErrorCode, FetchError, SignatureError
from orderhub.domain.logistics import ParcelState

CHECKWORD = "fake-sf-checkword-0001"


@pytest.fixture
def body(fixtures_dir) -> bytes:
    return (fixtures_dir / "sf_route_push.json").read_bytes()


def test_the_fixture_route_push_is_one_waybill_collected_then_signed_for(body):
    [track] = sf.parse_push(body)
    assert track.waybill_no == "SF0000000000001" and track.carrier == "SF"
    assert [(s.state, s.carrier_code) for s in track.scans] == [(ParcelState.COLLECTED, "50"), (ParcelState.DELIVERED, "80")]
    assert track.scans[1].at == datetime(2025, 3, 19, 2, 2, 33, tzinfo=UTC)
    assert track.scans[0].location == "杭州市"


def test_a_push_signed_in_the_query_string_or_a_header_verifies(body):
    digest = sf.push_digest(body, CHECKWORD)
    client = Sf(SfConfig(CHECKWORD))
    assert client.read_push(body, {}, {"msgDigest": digest})[0].waybill_no == "SF0000000000001"
    assert client.read_push(body, {"MsgDigest": digest}, {})[0].waybill_no == "SF0000000000001"


def test_a_one_byte_change_to_the_body_is_refused(body):
    digest = sf.push_digest(body, CHECKWORD)
    with pytest.raises(SignatureError) as caught:
        sf.verify_push(body.replace(b'"80"', b'"81"'), {}, {"msgDigest": digest}, CHECKWORD)
    assert caught.value.code == ErrorCode.SIGNATURE_INVALID


def test_an_unsigned_push_is_refused_as_unsigned(body):
    with pytest.raises(SignatureError) as caught:
        sf.verify_push(body, {}, {}, CHECKWORD)
    assert caught.value.code == ErrorCode.SIGNATURE_MISSING


def test_the_reply_is_what_sf_expects():
    assert orjson.loads(sf.PUSH_REPLY) == {"return_code": "0000", "return_msg": "成功"}


def test_the_query_digest_matches_the_documented_example():
    # 丰桥's own worked example: msgData + timestamp + checkword, URL-encoded, MD5, Base64.
    msg_data = '{"language":"zh-CN","orderId":"QIAO-20200618-004"}'
    assert sf.api_digest(msg_data, "12312334453453", "fjcg5PGKaNpPSHFAZ4QsCOkV71R3zVci") == "IIKJtuLVzoFTu4kHI8M8vA=="


def test_url_encoding_follows_javas_urlencoder():
    assert sf.java_urlencode("a b~c*d+é") == "a+b%7Ec*d%2B%C3%A9"


def _client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_a_route_query_is_signed_and_reads_every_route_of_each_waybill():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        seen.update(form)
        data = {"success": True, "errorCode": "S0000", "msgData": {"routeResps": [{"mailNo": "SF1", "routes": [
            {"acceptTime": "2025-03-18 18:20:11", "acceptAddress": "杭州市", "remark": "已收取快件", "opCode": "50"},
            {"acceptTime": "2025-03-19 10:02:33", "acceptAddress": "杭州市", "remark": "已签收", "opCode": "80"}]}]}}
        return httpx.Response(200, json={"apiResultCode": "A1000", "apiErrorMsg": "", "apiResponseID": "x", "apiResultData": orjson.dumps(data).decode()})

    client = Sf(SfConfig(CHECKWORD, partner_id="P1", base_url="http://sf.test"))
    async with _client(handler) as http:
        [track] = await client.query(http, ["SF1"])
    assert seen["serviceCode"] == "EXP_RECE_SEARCH_ROUTES" and seen["partnerID"] == "P1"
    assert seen["msgDigest"] == sf.api_digest(seen["msgData"], seen["timestamp"], CHECKWORD)
    assert orjson.loads(seen["msgData"])["trackingNumber"] == ["SF1"]
    assert [s.state for s in track.scans] == [ParcelState.COLLECTED, ParcelState.DELIVERED]


async def test_a_refused_route_query_is_an_error_that_is_not_retried():
    refusal = {"apiResultCode": "A1006", "apiErrorMsg": "数字签名无效", "apiResponseID": "x", "apiResultData": None}
    async with _client(lambda request: httpx.Response(200, json=refusal)) as http:
        with pytest.raises(FetchError) as caught:
            await Sf(SfConfig(CHECKWORD, base_url="http://sf.test")).query(http, ["SF1"])
    assert not caught.value.retryable and "A1006" in caught.value.message
