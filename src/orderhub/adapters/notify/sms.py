"""SMS to buyers through a generic HTTP/JSON gateway with an HMAC-signed request (contract: docs/notifications.md).

The buyer's phone is never in the outbox in plaintext: the row carries the order's sealed PII
(`to_sealed`, the same Fernet token as `orders.pii_sealed`), opened here with the PII vault just
before the request. The gateway's request id is the outbox idempotency key, so a resend after a
crash is recognised by the gateway and not delivered twice.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage
from orderhub.adapters.notify.posting import post_json
from orderhub.adapters.pii_crypto import PiiKeyError, PiiVault
from orderhub.domain.pii import normalize_phone

KIND = "notify.sms"
APP_KEY_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "X-Sms-App-Key", "X-Sms-Timestamp", "X-Sms-Signature"


def sms_signature(app_secret: str, timestamp: str, body: bytes) -> str:
    """X-Sms-Signature: lowercase hex HMAC-SHA256(app_secret, timestamp + "\\n" + body), body byte for byte as sent."""
    return hmac.new(app_secret.encode(), timestamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()


class SmsGatewaySender:
    """The outbox sender of kind `notify.sms`."""

    def __init__(self, url: str, app_key: str, app_secret: str, vault: PiiVault, http: httpx.AsyncClient, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self._app_key, self._app_secret = app_key, app_secret
        self._vault = vault
        self._http = http
        self._clock = clock

    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        payload = message.payload
        body = orjson.dumps({"to": self._phone(payload), "content": payload["body"], "request_id": message.idempotency_key})
        timestamp = str(int(self._clock()))
        headers = {APP_KEY_HEADER: self._app_key, TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sms_signature(self._app_secret, timestamp, body)}
        reply = await post_json(self._http, self.url, body, headers, "sms gateway")
        if reply.get("code") != 0:
            raise DeliveryError(f"sms gateway refused: code {reply.get('code')} {reply.get('message') or ''}".strip(), retryable=False)
        # what the row keeps: the gateway's id, never the phone
        return {"message_id": reply.get("message_id"), "to": payload.get("to_masked")}

    def _phone(self, payload: dict[str, Any]) -> str:
        sealed = payload.get("to_sealed")
        if not sealed:
            raise DeliveryError("no sealed buyer phone in the message", retryable=False)
        try:
            phone = normalize_phone(self._vault.open(sealed).get("phone"))
        except PiiKeyError as exc:  # sealed under a key since removed: no retry will open it
            raise DeliveryError(f"buyer phone cannot be opened: {exc}", retryable=False) from None
        if not phone:
            raise DeliveryError("the sealed buyer data has no phone", retryable=False)
        return phone
