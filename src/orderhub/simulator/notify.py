"""The simulator's notification receivers: an SMS gateway, 企业微信 and 钉钉 group robots, keeping what they got.

Mounted under `/notify` (the receivers) and `/_sim/notify` (what was received; failures to inject).
The checks are written here independently of OrderHub's senders (adapters/notify/): the SMS
gateway verifies its HMAC header as docs/notifications.md specifies it, the DingTalk robot its
timestamp + sign as DingTalk documents it, refusing with DingTalk's own error bodies, and the
WeCom robot answers `{"errcode": 0, "errmsg": "ok"}` (or an injected non-zero errcode).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response

# The demo's credentials (serve --demo and the tests use them; real ones come from the providers).
DEMO_SMS_APP = {"app_key": "fake-sms-app-key-0001", "app_secret": "fake-sms-app-secret-0001"}
DEMO_WECOM_KEYS = ("fake-wecom-key-cs-group", "fake-wecom-key-warehouse")
DEMO_DINGTALK_ROBOTS = {"fake-dingtalk-token-wh-east": "SECfake-dingtalk-secret-wh-east-0001"}

SMS_MAX_SKEW_S = 300
DINGTALK_MAX_SKEW_MS = 3_600_000  # DingTalk: "与请求调用时间误差不能超过1小时"
CHANNELS = ("sms", "wecom", "dingtalk")

# SMS gateway reply codes (docs/notifications.md)
SMS_BAD_PARAMETER, SMS_BAD_SIGNATURE, SMS_STALE_TIMESTAMP, SMS_UNKNOWN_APP = 40001, 40101, 40102, 40103
# WeCom robot errcodes
WECOM_INVALID_KEY, WECOM_INVALID_MSGTYPE, WECOM_TOO_LONG = 93000, 40008, 40058  # [U] 40008, 40058 as commonly reported
WECOM_MAX_BYTES = {"text": 2048, "markdown": 4096}
# DingTalk robot errcodes: 310000 is every failed security check (keywords, timestamp, sign, IP)
DINGTALK_SECURITY, DINGTALK_NO_TOKEN, DINGTALK_BAD_BODY = 310000, 300001, 40035  # [U] 300001, 40035 as commonly reported


class NotifyState:
    """Everything the receivers were sent, in arrival order (thread-safe behind one lock)."""

    def __init__(self, sms_apps: Iterable[Mapping[str, str]] | None = None, wecom_keys: Iterable[str] | None = None,
                 dingtalk_robots: Mapping[str, str | None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # wall time: signatures are made from the sender's wall clock
        self.sms_apps = {app["app_key"]: app["app_secret"] for app in (sms_apps or [DEMO_SMS_APP])}
        self.wecom_keys = set(wecom_keys if wecom_keys is not None else DEMO_WECOM_KEYS)
        self.dingtalk_robots = dict(dingtalk_robots if dingtalk_robots is not None else DEMO_DINGTALK_ROBOTS)
        self._lock = threading.Lock()
        self._received: list[dict[str, Any]] = []
        self._sms_ids: dict[str, str] = {}  # request_id -> message_id: a resend is answered, not delivered again
        self._next_id = itertools.count(1)
        self._failures: dict[str, deque[dict[str, Any]]] = {ch: deque() for ch in CHANNELS}

    def record(self, channel: str, item: dict[str, Any]) -> None:
        with self._lock:
            self._received.append({"channel": channel, "received_at": datetime.now(UTC).isoformat(), **item})

    def received(self, channel: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(item) for item in self._received if channel is None or item["channel"] == channel]

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
            self._sms_ids.clear()

    def fail_next(self, channel: str, count: int = 1, *, errcode: int | None = None, status: int | None = None) -> None:
        """The next `count` requests to `channel` fail: with an HTTP status, or (200 and) a non-zero errcode/code."""
        with self._lock:
            self._failures[channel].extend({"errcode": errcode, "status": status} for _ in range(count))

    def take_failure(self, channel: str) -> dict[str, Any] | None:
        with self._lock:
            queue = self._failures[channel]
            return queue.popleft() if queue else None

    def sms_message_id(self, request_id: str) -> tuple[str, bool]:
        """(message id, whether this request id was seen before)."""
        with self._lock:
            if request_id in self._sms_ids:
                return self._sms_ids[request_id], True
            message_id = f"sms-{next(self._next_id):06d}"
            self._sms_ids[request_id] = message_id
            return message_id, False


def _reply(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _injected(state: NotifyState, channel: str, error_body: Callable[[int], dict[str, Any]]) -> Response | None:
    failure = state.take_failure(channel)
    if failure is None:
        return None
    if failure["status"]:
        return _reply({"message": "injected failure"}, failure["status"])
    return _reply(error_body(failure["errcode"] or 500))


# -- SMS gateway ----------------------------------------------------------------------------------


def _sms_fail(status: int, code: int, message: str) -> Response:
    return _reply({"code": code, "message": message}, status)


def _sms_check(state: NotifyState, request: Request, raw: bytes) -> Response | None:
    app_key = request.headers.get("x-sms-app-key", "")
    timestamp = request.headers.get("x-sms-timestamp", "")
    signature = request.headers.get("x-sms-signature", "")
    secret = state.sms_apps.get(app_key)
    if secret is None:
        return _sms_fail(401, SMS_UNKNOWN_APP, "unknown app key")
    if not timestamp.isdigit() or abs(state.clock() - int(timestamp)) > SMS_MAX_SKEW_S:
        return _sms_fail(401, SMS_STALE_TIMESTAMP, f"timestamp missing or more than {SMS_MAX_SKEW_S} s off")
    expected = hmac.new(secret.encode(), timestamp.encode() + b"\n" + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        return _sms_fail(401, SMS_BAD_SIGNATURE, "signature mismatch")
    return None


# -- DingTalk --------------------------------------------------------------------------------------


def _dingtalk_error(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": errmsg}


def _dingtalk_check(state: NotifyState, request: Request) -> dict[str, Any] | None:
    token = request.query_params.get("access_token", "")
    if token not in state.dingtalk_robots:
        return _dingtalk_error(DINGTALK_NO_TOKEN, "token is not exist")
    secret = state.dingtalk_robots[token]
    if not secret:
        return None  # a robot secured by keywords or IPs only
    timestamp = request.query_params.get("timestamp", "")
    if not timestamp.isdigit() or abs(state.clock() * 1000 - int(timestamp)) > DINGTALK_MAX_SKEW_MS:
        return _dingtalk_error(DINGTALK_SECURITY, "invalid timestamp")
    # the query value arrives URL-decoded: compare with the plain base64 of the HMAC
    expected = base64.b64encode(hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, request.query_params.get("sign", "")):
        return _dingtalk_error(DINGTALK_SECURITY, "sign not match")
    return None


def _dingtalk_message(body: dict[str, Any]) -> dict[str, Any] | None:
    msgtype = body.get("msgtype")
    part = body.get(msgtype) if isinstance(msgtype, str) else None
    if msgtype == "text" and isinstance(part, dict) and isinstance(part.get("content"), str):
        return {"msgtype": "text", "content": part["content"]}
    if msgtype == "markdown" and isinstance(part, dict) and isinstance(part.get("title"), str) and isinstance(part.get("text"), str):
        return {"msgtype": "markdown", "title": part["title"], "content": part["text"]}
    return None


# -- the routers -----------------------------------------------------------------------------------


def make_router(state: NotifyState) -> APIRouter:
    router = APIRouter()

    @router.post("/sms/send")
    async def sms_send(request: Request) -> Response:
        """Signed JSON {to, content, request_id} -> {code: 0, message, message_id}; a repeated request_id is not sent again."""
        raw = await request.body()
        refused = _sms_check(state, request, raw)
        if refused is not None:
            return refused
        injected = _injected(state, "sms", lambda code: {"code": code, "message": "injected failure"})
        if injected is not None:
            return injected
        body = _json(raw) or {}
        to, content, request_id = body.get("to"), body.get("content"), body.get("request_id")
        if not (isinstance(to, str) and len(to) == 11 and to.isdigit() and to.startswith("1")):
            return _sms_fail(400, SMS_BAD_PARAMETER, "to must be an 11-digit mobile number")
        if not isinstance(content, str) or not content.strip() or len(content) > 500:
            return _sms_fail(400, SMS_BAD_PARAMETER, "content must be 1-500 characters")
        if not isinstance(request_id, str) or not request_id:
            return _sms_fail(400, SMS_BAD_PARAMETER, "request_id is required")
        message_id, repeated = state.sms_message_id(request_id)
        if not repeated:
            state.record("sms", {"to": to, "content": content, "request_id": request_id, "message_id": message_id})
        return _reply({"code": 0, "message": "ok", "message_id": message_id, "duplicate": repeated})

    @router.post("/wecom/cgi-bin/webhook/send")
    async def wecom_send(request: Request) -> Response:
        """企业微信 group robot: ?key=…, {"msgtype": "text"|"markdown", …: {"content"}} -> {"errcode": 0, "errmsg": "ok"}."""
        key = request.query_params.get("key", "")
        if key not in state.wecom_keys:
            return _reply({"errcode": WECOM_INVALID_KEY, "errmsg": "invalid webhook url"})
        injected = _injected(state, "wecom", lambda code: {"errcode": code, "errmsg": "injected failure"})
        if injected is not None:
            return injected
        body = _json(await request.body()) or {}
        msgtype = body.get("msgtype")
        part = body.get(msgtype) if isinstance(msgtype, str) else None
        if msgtype not in WECOM_MAX_BYTES or not isinstance(part, dict) or not isinstance(part.get("content"), str):
            return _reply({"errcode": WECOM_INVALID_MSGTYPE, "errmsg": "invalid message type"})
        if len(part["content"].encode()) > WECOM_MAX_BYTES[msgtype]:
            return _reply({"errcode": WECOM_TOO_LONG, "errmsg": f"content exceed max length {WECOM_MAX_BYTES[msgtype]}"})
        state.record("wecom", {"key": key, "msgtype": msgtype, "content": part["content"]})
        return _reply({"errcode": 0, "errmsg": "ok"})

    @router.post("/dingtalk/robot/send")
    async def dingtalk_send(request: Request) -> Response:
        """钉钉 custom robot: ?access_token=…&timestamp=…&sign=… (加签), text or markdown -> {"errcode": 0, "errmsg": "ok"}."""
        refused = _dingtalk_check(state, request)
        if refused is not None:
            return _reply(refused)
        injected = _injected(state, "dingtalk", lambda code: _dingtalk_error(code, "injected failure"))
        if injected is not None:
            return injected
        message = _dingtalk_message(_json(await request.body()) or {})
        if message is None:
            return _reply(_dingtalk_error(DINGTALK_BAD_BODY, "缺少参数 json"))
        state.record("dingtalk", {"access_token": request.query_params["access_token"], **message})
        return _reply({"errcode": 0, "errmsg": "ok"})

    return router


def make_control_router(state: NotifyState) -> APIRouter:
    router = APIRouter()

    @router.get("/received")
    async def received(channel: str | None = None) -> Response:
        """Every message the receivers took, oldest first (`?channel=sms|wecom|dingtalk`)."""
        return _reply({"items": state.received(channel)})

    @router.delete("/received")
    async def clear() -> Response:
        state.clear()
        return _reply({"items": []})

    @router.post("/failures")
    async def fail(request: Request) -> Response:
        """{"channel", "count": 1, "errcode": 45009} (HTTP 200, the error in the body) or {"channel", "status": 503}."""
        body = _json(await request.body()) or {}
        channel = body.get("channel")
        if channel not in CHANNELS:
            raise HTTPException(400, f"channel must be one of {list(CHANNELS)}")
        count, errcode, status = body.get("count", 1), body.get("errcode"), body.get("status")
        if not isinstance(count, int) or count < 1 or (errcode is None) == (status is None):
            raise HTTPException(400, "needs count >= 1 and exactly one of errcode, status")
        state.fail_next(channel, count, errcode=errcode, status=status)
        return _reply({"channel": channel, "count": count})

    return router
