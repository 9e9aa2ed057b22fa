"""Orders to the WMS: send a package, freeze / unfreeze, cancel, change the address, expedite (docs/wms.md).

`HttpWmsOrders` is the generic HTTP/JSON implementation, signed like the stock API
(`wms_signature`: HMAC-SHA256 over timestamp + "\\n" + the raw body), and it is the outbox
`Sender` of the `wms.*` kinds: the outbox row's endpoint names the WMS, its payload is the
request body, its idempotency key goes along as `Idempotency-Key`. What the WMS answers (for a
freeze: `frozen` or `refused`) is the sender's response, kept on the outbox row.

A new address CS typed is in the payload sealed (`sealed`, docs/pii.md): it is opened here, into the
request body only, so the street is plaintext nowhere but in memory and on the wire to the WMS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import orjson

from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage
from orderhub.adapters.pii_crypto import PiiKeyError, PiiVault
from orderhub.adapters.wms.stock import wms_signature
from orderhub.domain.pii import SEALED

# outbox kind -> the path it is POSTed to ({code}: the WMS order code, also in the body as order_code)
PATHS: dict[str, str] = {
    "wms.order": "/orders",
    "wms.freeze": "/orders/{code}/freeze",
    "wms.unfreeze": "/orders/{code}/unfreeze",
    "wms.cancel": "/orders/{code}/cancel",
    "wms.address": "/orders/{code}/address",
    "wms.expedite": "/orders/{code}/expedite",
}
FREEZE_RESULTS = ("frozen", "refused")


@dataclass(frozen=True, slots=True)
class WmsCredentials:
    base_url: str
    app_key: str
    app_secret: str


class WmsOrders(Protocol):
    """What OrderHub asks of a WMS about orders; each call returns the WMS's `data` object."""

    async def send_order(self, wms: str, order: dict[str, Any], *, key: str) -> dict[str, Any]: ...
    async def freeze(self, wms: str, code: str, instruction: dict[str, Any], *, key: str) -> dict[str, Any]: ...
    async def unfreeze(self, wms: str, code: str, instruction: dict[str, Any], *, key: str) -> dict[str, Any]: ...
    async def cancel(self, wms: str, code: str, instruction: dict[str, Any], *, key: str) -> dict[str, Any]: ...
    async def update_address(self, wms: str, code: str, instruction: dict[str, Any], *, key: str) -> dict[str, Any]: ...
    async def expedite(self, wms: str, code: str, instruction: dict[str, Any], *, key: str) -> dict[str, Any]: ...


class HttpWmsOrders:
    """`POST {base}/orders` and `POST {base}/orders/{code}/{freeze|unfreeze|cancel|address|expedite}`."""

    def __init__(self, http: httpx.AsyncClient, wms: Mapping[str, WmsCredentials], *, clock: Callable[[], float] = time.time,
                 vault: PiiVault | None = None) -> None:
        self._http = http
        self._wms = dict(wms)
        self._clock = clock
        self._vault = vault

    # -- the outbox Sender --------------------------------------------------------------------

    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        path = PATHS.get(message.kind)
        if path is None:
            raise DeliveryError(f"the WMS sender has no call for {message.kind!r}", retryable=False)
        code = str(message.payload.get("order_code") or "")
        return await self._post(message.endpoint, path.format(code=quote(code, safe="")), message.payload, message.idempotency_key)

    # -- WmsOrders ------------------------------------------------------------------------------

    async def send_order(self, wms: str, order: dict[str, Any], *, key: str) -> dict[str, Any]:
        return await self._post(wms, PATHS["wms.order"], order, key)

    async def freeze(self, wms: str, code: str, instruction: dict[str, Any], *, key: str) -> dict[str, Any]:
        return await self._call(wms, "wms.freeze", code, instruction, key)

    async def unfreeze(self, wms: str, code: str, instruction: dict[str, Any], *, key: str) -> dict[str, Any]:
        return await self._call(wms, "wms.unfreeze", code, instruction, key)

    async def cancel(self, wms: str, code: str, instruction: dict[str, Any], *, key: str) -> dict[str, Any]:
        return await self._call(wms, "wms.cancel", code, instruction, key)

    async def update_address(self, wms: str, code: str, instruction: dict[str, Any], *, key: str) -> dict[str, Any]:
        return await self._call(wms, "wms.address", code, instruction, key)

    async def expedite(self, wms: str, code: str, instruction: dict[str, Any], *, key: str) -> dict[str, Any]:
        return await self._call(wms, "wms.expedite", code, instruction, key)

    async def _call(self, wms: str, kind: str, code: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        return await self._post(wms, PATHS[kind].format(code=quote(code, safe="")), {**body, "order_code": code}, key)

    async def _post(self, wms: str, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        creds = self._wms.get(wms)
        if creds is None:
            raise DeliveryError(f"no WMS named {wms!r} is configured", retryable=False)
        raw = orjson.dumps(self._opened(body))
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "X-WMS-App-Key": creds.app_key,
            "X-WMS-Timestamp": timestamp,
            "X-WMS-Signature": wms_signature(creds.app_secret, timestamp, raw),
            "Idempotency-Key": key,
        }
        what = f"wms {wms} POST {path}"
        try:
            response = await self._http.post(f"{creds.base_url.rstrip('/')}{path}", content=raw, headers=headers)
        except httpx.TransportError as exc:
            raise DeliveryError(f"{what}: {type(exc).__name__}: {exc}") from exc
        return _data(what, response)


    def _opened(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body with a sealed street opened (the WMS must deliver to it); no retry opens what the keys cannot."""
        if not body.get(SEALED):
            return body
        if self._vault is None:
            raise DeliveryError("the message carries a sealed address but no PII vault is configured", retryable=False)
        try:
            return self._vault.open_address(body)
        except PiiKeyError as exc:
            raise DeliveryError(f"the sealed address cannot be opened: {exc}", retryable=False) from None


def _data(what: str, response: httpx.Response) -> dict[str, Any]:
    """The reply's `data`; 5xx / 429 are worth retrying, any other refusal is final for this message."""
    try:
        reply = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        reply = None
    detail = f"HTTP {response.status_code}"
    if isinstance(reply, dict):
        detail += f" code {reply.get('code')} {reply.get('message') or ''}".rstrip()
    if response.status_code == 429 or response.status_code >= 500:
        retry_after = response.headers.get("retry-after")
        raise DeliveryError(f"{what}: {detail}", retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None)
    if response.status_code == 401:
        raise DeliveryError(f"{what}: refused ({detail}); check the WMS app key/secret and the clock", retryable=False)
    if response.status_code >= 300 or not isinstance(reply, dict) or reply.get("code") != 0:
        raise DeliveryError(f"{what}: {detail}", retryable=False)
    data = reply.get("data")
    if not isinstance(data, dict):
        raise DeliveryError(f"{what}: the reply has no data object", retryable=False)
    if what.endswith("/freeze") and data.get("result") not in FREEZE_RESULTS:
        raise DeliveryError(f"{what}: result must be one of {FREEZE_RESULTS}, not {data.get('result')!r}", retryable=False)
    return data
