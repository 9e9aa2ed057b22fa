"""Each notification sender against the simulator's receivers over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from urllib.parse import quote_plus

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from fastapi import FastAPI

from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage
from orderhub.adapters.notify.dingtalk import DingTalkRobot, DingTalkRobotSender, dingtalk_sign, signed_url
from orderhub.adapters.notify.sms import SmsGatewaySender, sms_signature
from orderhub.adapters.notify.wecom import WeComRobotSender, truncate_utf8
from orderhub.adapters.pii_crypto import PiiVault
from orderhub.simulator import notify as sim_notify

SMS_APP = sim_notify.DEMO_SMS_APP
WECOM_KEY = sim_notify.DEMO_WECOM_KEYS[0]
DING_TOKEN, DING_SECRET = next(iter(sim_notify.DEMO_DINGTALK_ROBOTS.items()))
PHONE = "13800001234"


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Receiver:
    def __init__(self, state: sim_notify.NotifyState, base: str) -> None:
        self.state, self.base = state, base


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = sim_notify.NotifyState()
    app = FastAPI()
    app.include_router(sim_notify.make_router(state), prefix="/notify")
    app.include_router(sim_notify.make_control_router(state), prefix="/_sim/notify")
    server = _QuietServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        assert not task.done(), "receiver did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield Receiver(state, f"http://127.0.0.1:{port}")
    server.should_exit = True
    await task


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest.fixture
def vault() -> PiiVault:
    return PiiVault([Fernet.generate_key().decode()], "test-hash-key-0123456789")


def message(kind: str, payload: dict, key: str = "k" * 64) -> OutboxMessage:
    return OutboxMessage(1, kind, kind, "oid", "someone", payload, key, 0, 0, datetime.now(UTC))


def sms_sender(receiver: Receiver, vault: PiiVault, http: httpx.AsyncClient, **kw) -> SmsGatewaySender:
    app = {**SMS_APP, **kw.pop("app", {})}
    return SmsGatewaySender(f"{receiver.base}/notify/sms/send", app["app_key"], app["app_secret"], vault, http, **kw)


def sms_message(vault: PiiVault, key: str = "a" * 64) -> OutboxMessage:
    payload = {"channel": "sms", "template": "shipped", "version": 1, "body": "【测试旗舰店】您的订单4951234567890123456已发货，顺丰速运运单号SF1234567890123",
               "to_sealed": vault.seal({"phone": PHONE}), "to_masked": "138****1234"}
    return message("notify.sms", payload, key)


# -- SMS gateway -------------------------------------------------------------------------------------


async def test_an_sms_reaches_the_gateway_with_the_buyers_phone_opened_from_the_sealed_copy(receiver, vault, http):
    response = await sms_sender(receiver, vault, http).send(sms_message(vault))
    [got] = receiver.state.received("sms")
    assert got["to"] == PHONE and got["content"].startswith("【测试旗舰店】您的订单") and got["request_id"] == "a" * 64
    assert response == {"message_id": got["message_id"], "to": "138****1234"}  # what the outbox row keeps: no phone


async def test_an_sms_resent_after_a_crash_is_recognised_by_the_gateway_and_not_delivered_twice(receiver, vault, http):
    sender = sms_sender(receiver, vault, http)
    first = await sender.send(sms_message(vault))
    again = await sender.send(sms_message(vault))
    assert first == again and len(receiver.state.received("sms")) == 1


async def test_the_gateway_refuses_a_wrong_secret_and_a_stale_clock_and_neither_is_retried(receiver, vault, http):
    with pytest.raises(DeliveryError) as wrong:
        await sms_sender(receiver, vault, http, app={"app_secret": "fake-sms-app-secret-0002"}).send(sms_message(vault))
    assert not wrong.value.retryable and "40101" in str(wrong.value)
    with pytest.raises(DeliveryError) as stale:
        await sms_sender(receiver, vault, http, clock=lambda: time.time() - 3600).send(sms_message(vault))
    assert not stale.value.retryable and "40102" in str(stale.value)
    assert receiver.state.received("sms") == []


def test_the_sms_signature_matches_the_worked_example_in_the_docs():
    body = b'{"to":"13800001234","content":"test","request_id":"r1"}'
    assert sms_signature("fake-sms-app-secret-0001", "1742263962", body) == "caf2fceaae93b055483feeff4486f1eb502d2f9fcc5ddca80a740a1050201c18"


async def test_a_gateway_that_is_down_is_retried(receiver, vault, http):
    receiver.state.fail_next("sms", status=503)
    with pytest.raises(DeliveryError) as caught:
        await sms_sender(receiver, vault, http).send(sms_message(vault))
    assert caught.value.retryable


# -- 企业微信 ----------------------------------------------------------------------------------------------


def robot_message(kind: str, target: str, body: str = "### 物流异常：发货后长时间未揽收\n> 订单：4951234567890123456", **extra) -> OutboxMessage:
    return message(kind, {"channel": kind.split(".")[1], "template": "stalled", "version": 1, "target": target,
                          "msgtype": "markdown", "subject": "物流异常：4951234567890123456", "body": body, **extra})


async def test_a_wecom_markdown_message_reaches_the_group_robot(receiver, http):
    sender = WeComRobotSender({"cs-group": f"{receiver.base}/notify/wecom/cgi-bin/webhook/send?key={WECOM_KEY}"}, http)
    assert await sender.send(robot_message("notify.wecom", "cs-group")) == {"errcode": 0, "errmsg": "ok"}
    [got] = receiver.state.received("wecom")
    assert got["key"] == WECOM_KEY and got["msgtype"] == "markdown" and got["content"].startswith("### 物流异常")


async def test_a_wecom_errcode_other_than_0_is_a_failure_even_with_http_200(receiver, http):
    sender = WeComRobotSender({"cs-group": f"{receiver.base}/notify/wecom/cgi-bin/webhook/send?key={WECOM_KEY}",
                               "gone": f"{receiver.base}/notify/wecom/cgi-bin/webhook/send?key=removed-robot"}, http)
    receiver.state.fail_next("wecom", errcode=45009)  # the robot's 20-a-minute limit: try again later
    with pytest.raises(DeliveryError) as limited:
        await sender.send(robot_message("notify.wecom", "cs-group"))
    assert limited.value.retryable and limited.value.retry_after_s == 60.0 and "45009" in str(limited.value)
    with pytest.raises(DeliveryError) as gone:
        await sender.send(robot_message("notify.wecom", "gone"))
    assert not gone.value.retryable and "93000" in str(gone.value)
    with pytest.raises(DeliveryError) as unknown:
        await sender.send(robot_message("notify.wecom", "not-configured"))
    assert not unknown.value.retryable
    assert receiver.state.received("wecom") == []


async def test_a_wecom_message_over_4096_bytes_is_cut_rather_than_refused(receiver, http):
    sender = WeComRobotSender({"cs-group": f"{receiver.base}/notify/wecom/cgi-bin/webhook/send?key={WECOM_KEY}"}, http)
    await sender.send(robot_message("notify.wecom", "cs-group", body="物流异常" * 1000))
    [got] = receiver.state.received("wecom")
    assert len(got["content"].encode()) <= 4096 and got["content"].endswith("…")
    assert truncate_utf8("短信短信", 7) == "短…"  # cut on a character, never inside one
    assert truncate_utf8("ab", 10) == "ab"


# -- 钉钉 ------------------------------------------------------------------------------------------------------


def ding_sender(receiver: Receiver, http: httpx.AsyncClient, secret: str = DING_SECRET, **kw) -> DingTalkRobotSender:
    robot = DingTalkRobot(f"{receiver.base}/notify/dingtalk/robot/send?access_token={DING_TOKEN}", secret)
    return DingTalkRobotSender({"wh-east": robot}, http, **kw)


def test_the_dingtalk_sign_matches_the_worked_example_in_the_docs():
    # docs/notifications.md: secret SECfake-dingtalk-secret-wh-east-0001, timestamp 1742263962000
    digest = hmac.new(DING_SECRET.encode(), f"1742263962000\n{DING_SECRET}".encode(), hashlib.sha256).digest()
    assert dingtalk_sign(DING_SECRET, "1742263962000") == quote_plus(base64.b64encode(digest))
    assert dingtalk_sign(DING_SECRET, "1742263962000") == "eB4U4JrbatQozAuKo2STOggActQ7RiGjAmvAkstEYlI%3D"


async def test_a_signed_dingtalk_message_is_verified_and_delivered_with_its_title(receiver, http):
    assert await ding_sender(receiver, http).send(robot_message("notify.dingtalk", "wh-east")) == {"errcode": 0, "errmsg": "ok"}
    [got] = receiver.state.received("dingtalk")
    assert got["msgtype"] == "markdown" and got["title"] == "物流异常：4951234567890123456" and "4951234567890123456" in got["content"]


async def test_a_one_byte_change_to_the_dingtalk_sign_is_refused(receiver, http):
    timestamp = str(int(time.time() * 1000))
    url = signed_url(f"{receiver.base}/notify/dingtalk/robot/send?access_token={DING_TOKEN}", DING_SECRET, timestamp)
    body = {"msgtype": "text", "text": {"content": "冻结指令"}}
    assert (await http.post(url, json=body)).json() == {"errcode": 0, "errmsg": "ok"}
    head, sign = url.rsplit("sign=", 1)
    tampered = head + "sign=" + ("B" if sign[0] != "B" else "C") + sign[1:]
    assert (await http.post(tampered, json=body)).json() == {"errcode": 310000, "errmsg": "sign not match"}
    assert len(receiver.state.received("dingtalk")) == 1


async def test_a_wrong_dingtalk_secret_or_a_stale_timestamp_fails_the_send(receiver, http):
    with pytest.raises(DeliveryError) as wrong:
        await ding_sender(receiver, http, secret=DING_SECRET[:-1] + "2").send(robot_message("notify.dingtalk", "wh-east"))
    assert not wrong.value.retryable and "sign not match" in str(wrong.value)
    with pytest.raises(DeliveryError) as stale:
        await ding_sender(receiver, http, clock=lambda: time.time() - 7200).send(robot_message("notify.dingtalk", "wh-east"))
    assert "invalid timestamp" in str(stale.value)
    assert receiver.state.received("dingtalk") == []


async def test_dingtalk_send_too_fast_is_retried_later(receiver, http):
    receiver.state.fail_next("dingtalk", errcode=130101)
    with pytest.raises(DeliveryError) as caught:
        await ding_sender(receiver, http).send(robot_message("notify.dingtalk", "wh-east"))
    assert caught.value.retryable and caught.value.retry_after_s == 60.0


# -- what the simulator kept ----------------------------------------------------------------------------------


async def test_the_simulator_shows_what_it_received_and_forgets_on_request(receiver, vault, http):
    await sms_sender(receiver, vault, http).send(sms_message(vault))
    await WeComRobotSender({"cs": f"{receiver.base}/notify/wecom/cgi-bin/webhook/send?key={WECOM_KEY}"}, http).send(
        robot_message("notify.wecom", "cs"))
    everything = (await http.get(f"{receiver.base}/_sim/notify/received")).json()["items"]
    assert [item["channel"] for item in everything] == ["sms", "wecom"]
    only_sms = (await http.get(f"{receiver.base}/_sim/notify/received", params={"channel": "sms"})).json()["items"]
    assert [item["to"] for item in only_sms] == [PHONE]
    assert (await http.post(f"{receiver.base}/_sim/notify/failures", json={"channel": "fax"})).status_code == 400
    await http.delete(f"{receiver.base}/_sim/notify/received")
    assert (await http.get(f"{receiver.base}/_sim/notify/received")).json()["items"] == []
