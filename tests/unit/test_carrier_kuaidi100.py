"""Kuaidi100: the fixture push verifies with its salt (and a one-byte change does not), its scans, the replies, the query API."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderhub.adapters.carriers import kuaidi100
from orderhub.adapters.carriers.kuaidi100 import Kuaidi100, Kuaidi100Config
from orderhub.domain.errors import ErrorCode, FetchError, SignatureError
from orderhub.domain.logistics import ParcelState


@pytest.fixture
def form(fixtures_dir) -> bytes:
    return (fixtures_dir / "kuaidi100_push.form.txt").read_bytes()


@pytest.fixture
def salt(fixtures_dir) -> str:
    return orjson.loads((fixtures_dir / "SIGNATURES.json").read_bytes())["kuaidi100_push.form.txt"]["salt (fake)"]


def test_the_fixture_push_verifies_with_the_salt_and_yields_its_exact_param(form, salt, fixtures_dir):
    param = kuaidi100.verify_push(form, salt)
    assert kuaidi100.push_sign(param, salt) == "413158D10F00791F0DE69946E3DA51AC"
    assert orjson.loads(param) == orjson.loads((fixtures_dir / "kuaidi100_push.param.json").read_bytes())


def test_a_one_byte_change_to_the_param_is_refused(form, salt):
    tampered = form.replace(b"SF0000000000001", b"SF0000000000002", 1)
    with pytest.raises(SignatureError) as caught:
        kuaidi100.verify_push(tampered, salt)
    assert caught.value.code == ErrorCode.SIGNATURE_INVALID


def test_a_one_character_change_to_the_sign_or_a_wrong_salt_is_refused(form, salt):
    with pytest.raises(SignatureError):
        kuaidi100.verify_push(form.replace(b"51AC", b"51AD"), salt)
    with pytest.raises(SignatureError):
        kuaidi100.verify_push(form, salt + "x")


def test_a_push_without_sign_is_refused_as_unsigned(form, salt):
    param_only = form.split(b"&sign=")[0]
    with pytest.raises(SignatureError) as caught:
        kuaidi100.verify_push(param_only, salt)
    assert caught.value.code == ErrorCode.SIGNATURE_MISSING


def test_the_fixture_push_is_three_scans_oldest_first_in_utc(form, salt):
    track = Kuaidi100(Kuaidi100Config("c", "k", salt)).read_push(form)
    assert track.waybill_no == "SF0000000000001" and track.carrier == "SF"
    assert [s.state for s in track.scans] == [ParcelState.COLLECTED, ParcelState.IN_TRANSIT, ParcelState.OUT_FOR_DELIVERY]
    assert track.scans[0].at == datetime(2025, 3, 18, 10, 20, 11, tzinfo=UTC)
    assert track.scans[0].description == "[杭州市]顺丰速运 已收取快件" and track.scans[0].location == "浙江,杭州市"
    assert [s.carrier_code for s in track.scans] == ["1", "0", "5"]


def test_the_success_reply_is_exactly_what_kuaidi100_documents(fixtures_dir):
    expected = orjson.loads((fixtures_dir / "SIGNATURES.json").read_bytes())["kuaidi100_push.form.txt"]["expected reply"]
    assert kuaidi100.PUSH_REPLY == '{"result":true,"returnCode":"200","message":"成功"}'.encode()
    assert orjson.loads(kuaidi100.PUSH_REPLY) == expected


def test_scans_without_their_own_status_take_the_parcels_state_for_the_newest_one():
    result = {"nu": "YT1", "com": "yuantong", "state": "3", "data": [
        {"ftime": "2025-03-20 09:00:00", "context": "已签收"}, {"ftime": "2025-03-19 09:00:00", "context": "到达杭州"}]}
    track = kuaidi100.parse_result(result)
    assert track.carrier == "YTO"
    assert [s.state for s in track.scans] == [ParcelState.IN_TRANSIT, ParcelState.DELIVERED]


@given(st.text(min_size=1, max_size=200), st.text(max_size=40))
def test_any_param_signed_with_the_salt_verifies_and_with_another_salt_does_not(param, salt):
    body = urlencode({"param": param, "sign": kuaidi100.push_sign(param, salt)}).encode()
    assert kuaidi100.verify_push(body, salt) == param
    with pytest.raises(SignatureError):
        kuaidi100.verify_push(body, salt + "!")


def _client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_a_query_is_signed_upper_md5_of_param_key_customer_and_reads_the_track():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        seen.update(form, path=request.url.path)
        return httpx.Response(200, json={"message": "ok", "nu": "ZT9", "com": "zhongtong", "state": "5", "status": "200", "data": [
            {"ftime": "2025-03-19 08:31:02", "context": "派送中", "status": "派件", "statusCode": "5"}]})

    client = Kuaidi100(Kuaidi100Config("CUSTOMER1", "KEY1", "salt", base_url="http://kd100.test"))
    async with _client(handler) as http:
        track = await client.query(http, "ZTO", "ZT9")
    assert seen["path"] == "/poll/query.do" and seen["customer"] == "CUSTOMER1"
    assert seen["sign"] == hashlib.md5((seen["param"] + "KEY1" + "CUSTOMER1").encode()).hexdigest().upper()
    assert orjson.loads(seen["param"])["com"] == "zhongtong"
    assert track is not None and track.scans[0].state == ParcelState.OUT_FOR_DELIVERY


async def test_a_query_kuaidi100_has_no_result_for_yet_is_nothing_and_a_refusal_is_an_error():
    answers = iter([{"result": False, "returnCode": "500", "message": "查询无结果，请隔段时间再查"},
                    {"result": False, "returnCode": "503", "message": "验证签名失败"}])
    client = Kuaidi100(Kuaidi100Config("c", "k", "s", base_url="http://kd100.test"))
    async with _client(lambda request: httpx.Response(200, json=next(answers))) as http:
        assert await client.query(http, "SF", "SF1") is None
        with pytest.raises(FetchError) as caught:
            await client.query(http, "SF", "SF1")
    assert not caught.value.retryable
