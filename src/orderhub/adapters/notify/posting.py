"""One JSON POST to a notification endpoint, its failures sorted into retryable or not for the outbox relay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from orderhub.adapters.db.outbox_repo import DeliveryError


async def post_json(http: httpx.AsyncClient, url: str | httpx.URL, body: bytes, headers: Mapping[str, str], what: str) -> dict[str, Any]:
    """The endpoint's JSON reply. Transport errors, 429 and 5xx are worth retrying; any other 4xx
    or a reply that is not a JSON object means this message will never be taken: not retried."""
    try:
        response = await http.post(url, content=body, headers={"Content-Type": "application/json; charset=utf-8", **headers})
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"{what}: timed out ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:  # refused, reset, DNS: away for now
        raise DeliveryError(f"{what}: {type(exc).__name__}: {exc}") from exc
    status = response.status_code
    if status == 429 or status >= 500:
        raise DeliveryError(f"{what}: HTTP {status}", retryable=True, retry_after_s=_seconds(response.headers.get("Retry-After")))
    try:
        reply = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        reply = None
    if status >= 400 or not isinstance(reply, dict):
        detail = reply if isinstance(reply, dict) else response.text[:300]
        raise DeliveryError(f"{what}: HTTP {status}: {detail}", retryable=False)
    return reply


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
