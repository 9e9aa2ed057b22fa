"""钉钉 (DingTalk) custom robot with the 加签 security setting (docs/notifications.md, with a worked sign).

`POST https://oapi.dingtalk.com/robot/send?access_token=…&timestamp=<ms>&sign=<sign>` where
sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))). DingTalk refuses a
timestamp more than an hour from its clock, so the sign is made afresh for every try. Success is
`{"errcode": 0, "errmsg": "ok"}`; a non-zero errcode (310000 sign not match / invalid timestamp …) fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
import orjson

from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage
from orderhub.adapters.notify.posting import post_json
from orderhub.adapters.notify.wecom import truncate_utf8

KIND = "notify.dingtalk"
MAX_BYTES = 20_000
# errcodes worth another try: system busy, and "send too fast" (20 messages a minute per robot).
RETRYABLE = {-1: None, 130101: 60.0}


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """The `sign` query value, already URL-encoded."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest))


def signed_url(url: str, secret: str | None, timestamp_ms: str) -> str:
    if not secret:  # a robot secured by keywords or an IP list only
        return url
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}timestamp={timestamp_ms}&sign={dingtalk_sign(secret, timestamp_ms)}"


@dataclass(frozen=True, slots=True)
class DingTalkRobot:
    url: str  # the robot's webhook, with its access_token
    secret: str | None = None  # the SEC… string of 加签


def dingtalk_body(msgtype: str, subject: str | None, content: str) -> dict[str, Any]:
    content = truncate_utf8(content, MAX_BYTES)
    if msgtype == "text":
        return {"msgtype": "text", "text": {"content": content}}
    if msgtype == "markdown":
        first_line = content.strip().splitlines()[0].lstrip("#> ").strip() if content.strip() else ""
        title = subject or first_line or "OrderHub"  # the conversation list shows the title, not the text
        return {"msgtype": "markdown", "markdown": {"title": title[:64], "text": content}}
    raise DeliveryError(f"dingtalk msgtype {msgtype!r} is not text or markdown", retryable=False)


class DingTalkRobotSender:
    """The outbox sender of kind `notify.dingtalk`; robots: target name -> DingTalkRobot."""

    def __init__(self, robots: Mapping[str, DingTalkRobot], http: httpx.AsyncClient, *, clock: Callable[[], float] = time.time) -> None:
        self.robots = dict(robots)
        self._http = http
        self._clock = clock

    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        payload = message.payload
        robot = self.robots.get(payload.get("target", ""))
        if robot is None:
            raise DeliveryError(f"no DingTalk robot configured for {payload.get('target')!r}", retryable=False)
        body = orjson.dumps(dingtalk_body(payload.get("msgtype", "markdown"), payload.get("subject"), payload["body"]))
        url = signed_url(robot.url, robot.secret, str(int(self._clock() * 1000)))
        reply = await post_json(self._http, url, body, {}, "dingtalk robot")
        errcode = reply.get("errcode")
        if errcode != 0:
            retryable = errcode in RETRYABLE
            raise DeliveryError(f"dingtalk robot: errcode {errcode} {reply.get('errmsg') or ''}".strip(), retryable=retryable,
                                retry_after_s=RETRYABLE.get(errcode) if retryable else None)
        return {"errcode": 0, "errmsg": reply.get("errmsg")}
