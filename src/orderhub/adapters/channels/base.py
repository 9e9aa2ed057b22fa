"""The small interfaces every channel adapter implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx

from orderhub.domain.errors import ErrorCode, NormalizationError
from orderhub.domain.order import NormalizedOrder


@dataclass(frozen=True, slots=True)
class ShopConfig:
    """One merchant shop on one channel, with the credentials of the app that serves it."""

    channel: str
    shop_id: str
    name: str
    app_key: str = ""
    app_secret: str = ""
    api_base_url: str = ""
    # Channel-specific settings (e.g. a pre-issued access token, WeChat token/EncodingAESKey).
    extra: Mapping[str, Any] = field(default_factory=dict)


class ShopDirectory(Protocol):
    def by_shop(self, channel: str, shop_id: str) -> ShopConfig | None: ...

    def by_app_key(self, channel: str, app_key: str) -> list[ShopConfig]: ...


@dataclass(frozen=True, slots=True)
class PushMessage:
    """One message inside an authenticated push body: which order changed, and when."""

    shop_id: str
    original_id: str
    kind: str  # the platform's message type / tag, verbatim ("101", "trade_TradePaid")
    # Time of the change the message reports, if it carries one. A message older than the
    # stored order is already reflected in it (platform snapshots are cumulative), so it
    # is answered as stale without calling the platform.
    event_time: datetime | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Authenticated:
    app_key: str  # which app the push was signed for
    shop_id: str | None  # the shop, where the headers name it; else found per message


class PushChannel(Protocol):
    """A channel that pushes change notifications over HTTP (webhooks)."""

    channel: str
    ack_body: bytes  # the exact reply the platform expects on success
    ack_media_type: str

    def authenticate(self, headers: Mapping[str, str], body: bytes, shops: ShopDirectory) -> Authenticated:
        """Verify the push signature over the raw body bytes; raise SignatureError."""
        ...

    def parse_push(self, body: bytes) -> list[PushMessage]:
        """Split an authenticated body into messages; raise EnvelopeError if it is not the envelope."""
        ...


class OrderSource(Protocol):
    """A channel whose full orders come from the platform's open API (after a push, or by pull)."""

    channel: str

    async def fetch_orders(
        self, http: httpx.AsyncClient, shop: ShopConfig, original_ids: list[str]
    ) -> dict[str, dict[str, Any]]:
        """Fetch full platform orders by number, batching as the platform allows.

        Returns {original_id: raw platform order}; ids the platform does not know are absent.
        Raises FetchError for transport/platform failures (retryable or not).
        """
        ...

    async def pull_window(
        self, http: httpx.AsyncClient, shop: ShopConfig, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """All orders modified in [start, end), every page. Raises FetchError."""
        ...

    def normalize(self, raw: dict[str, Any], shop: ShopConfig) -> NormalizedOrder:
        """Platform order -> canonical order; raises NormalizationError with code and field."""
        ...


def checked_order(build: Callable[[], NormalizedOrder], problem: str, field: str | None = None) -> NormalizedOrder:
    """Run a normaliser and check its result, so a payload shape nobody foresaw (a missing key,
    a wrong type) becomes a NormalizationError for quarantine rather than a crash."""
    try:
        order = build()
    except NormalizationError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NormalizationError(ErrorCode.INVALID_FIELD, f"{problem}: {exc!r}", field) from exc
    order.check()
    return order
