"""企业微信 (WeCom) group robot: `POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…` (docs/notifications.md).

The body is `{"msgtype": "text"|"markdown", <msgtype>: {"content": …}}`; WeCom answers HTTP 200
with `{"errcode": 0, "errmsg": "ok"}` on success and a non-zero errcode otherwise, which is a
failure here even though the HTTP status says 200.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage
from orderhub.adapters.notify.posting import post_json

KIND = "notify.wecom"
# UTF-8 bytes WeCom takes per message: longer content is refused whole, so it is cut here instead.
MAX_BYTES = {"text": 2048, "markdown": 4096}
# errcodes worth another try: system busy, and the robot's limit of 20 messages a minute.
RETRYABLE = {-1: None, 45009: 60.0}


def truncate_utf8(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, cut on a character boundary, "…" marking the cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "…"


def wecom_body(msgtype: str, content: str) -> dict[str, Any]:
    if msgtype not in MAX_BYTES:
        raise DeliveryError(f"wecom msgtype {msgtype!r} is not text or markdown", retryable=False)
    return {"msgtype": msgtype, msgtype: {"content": truncate_utf8(content, MAX_BYTES[msgtype])}}


class WeComRobotSender:
    """The outbox sender of kind `notify.wecom`; robots: target name -> webhook URL (with its key)."""

    def __init__(self, robots: Mapping[str, str], http: httpx.AsyncClient) -> None:
        self.robots = dict(robots)
        self._http = http

    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        payload = message.payload
        url = self.robots.get(payload.get("target", ""))
        if url is None:
            raise DeliveryError(f"no WeCom robot configured for {payload.get('target')!r}", retryable=False)
        body = orjson.dumps(wecom_body(payload.get("msgtype", "markdown"), payload["body"]))
        reply = await post_json(self._http, url, body, {}, "wecom robot")
        errcode = reply.get("errcode")
        if errcode != 0:
            retryable = errcode in RETRYABLE
            raise DeliveryError(f"wecom robot: errcode {errcode} {reply.get('errmsg') or ''}".strip(), retryable=retryable,
                                retry_after_s=RETRYABLE.get(errcode) if retryable else None)
        return {"errcode": 0, "errmsg": reply.get("errmsg")}
