"""Signed outgoing webhooks: the outbox's generic `webhook` sender (docs/outbox.md tells receivers how to verify).

Each POST carries the JSON payload, `X-OrderHub-Timestamp` (Unix seconds),
`X-OrderHub-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed by the endpoint's secret>`
and `Idempotency-Key` — the same on every resend of a message, so the receiver can drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage

SIGNATURE_HEADER = "X-OrderHub-Signature"
TIMESTAMP_HEADER = "X-OrderHub-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_TOLERANCE_S = 300  # receivers refuse older timestamps: a captured request cannot be replayed later


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: `sha256=` + hex HMAC-SHA256 over `<timestamp>.<body>`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None,
           tolerance_s: float = DEFAULT_TOLERANCE_S) -> bool:
    """A receiver's check: the signature matches the exact bytes received and the timestamp is recent."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return False
    if abs(age) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookSender:
    """POSTs outbox messages to the URL configured for their endpoint: endpoint -> (url, secret)."""

    def __init__(self, http: httpx.AsyncClient, secret_by_endpoint: Mapping[str, tuple[str, str]], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.http = http
        self.targets = dict(secret_by_endpoint)
        self._clock = clock

    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        target = self.targets.get(message.endpoint)
        if target is None:
            raise DeliveryError(f"no webhook URL configured for endpoint {message.endpoint!r}", retryable=False)
        url, secret = target
        body = orjson.dumps(message.payload)
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            IDEMPOTENCY_HEADER: message.idempotency_key,
            "X-OrderHub-Kind": message.kind,
        }
        try:
            response = await self.http.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:  # refused, reset, DNS: the endpoint is away, try again later
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return {"status": status, "body": _body(response)}
        detail = f"HTTP {status}: {response.text[:500]}"
        if status == 429 or status >= 500:
            raise DeliveryError(detail, retryable=True, retry_after_s=_retry_after(response.headers.get("Retry-After")))
        raise DeliveryError(detail, retryable=False)


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:2000]


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None

