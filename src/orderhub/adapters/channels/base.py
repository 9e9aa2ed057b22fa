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

    def all(self) -> list[ShopConfig]:
        """Every configured shop (WeChat's encrypted pushes name their app only once decrypted)."""
        ...


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

    def as_dict(self) -> dict[str, Any]:
        """The message as an inbox row or a broker envelope keeps it (read back by `from_dict`)."""
        return {"shop_id": self.shop_id, "original_id": self.original_id, "kind": self.kind,
                "event_time": self.event_time.isoformat() if self.event_time else None, "raw": self.raw}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PushMessage:
        event_time = datetime.fromisoformat(data["event_time"]) if data.get("event_time") else None
        return cls(data["shop_id"], data["original_id"], data["kind"], event_time, data["raw"])


@dataclass(frozen=True, slots=True)
class Authenticated:
    app_key: str  # which app the push was signed for
    shop_id: str | None  # the shop, where the headers name it; else found per message
    # What to keep instead of the wire body, when the platform encrypts its pushes (WeChat's
    # message encryption): the verified, decrypted message. None keeps the body as received.
    body: bytes | None = None


class PushChannel(Protocol):
    """A channel that pushes change notifications over HTTP (webhooks)."""

    channel: str
    ack_body: bytes  # the exact reply the platform expects on success
    ack_media_type: str

    def authenticate(
        self, headers: Mapping[str, str], body: bytes, shops: ShopDirectory, query: Mapping[str, str] | None = None
    ) -> Authenticated:
        """Verify the push signature over the raw body bytes (some platforms sign in the query
        string); raise SignatureError."""
        ...

    def parse_push(self, body: bytes) -> list[PushMessage]:
        """Split an authenticated body into messages; raise EnvelopeError if it is not the envelope."""
        ...


class UrlVerifier(Protocol):
    """A push channel whose platform checks the callback URL with a signed GET (WeChat's echo check)."""

    def verify_url(self, query: Mapping[str, str], shops: ShopDirectory) -> bytes:
        """Check the GET's signature; return the reply body the platform expects (the echo).
        Raises SignatureError."""
        ...


class StreamSink(Protocol):
    """Where a message-stream client hands what it receives (implemented by the intake service)."""

    async def keep(self, channel: str, shop_id: str | None, body: bytes, meta: dict[str, Any]) -> None:
        """Store one raw platform message durably; returns once it is committed (only then may the
        client confirm it to the platform). Raises IntakeUnavailable when it cannot be kept."""
        ...

    def connection(self, channel: str, app_key: str, state: str, detail: str | None = None) -> None:
        """Report the connection's state: "connecting", "connected", "disconnected" (with the
        reason in `detail`) — shown per shop by GET /api/v1/channels."""
        ...


class StreamChannel(Protocol):
    """A channel whose change notifications arrive over a long-lived connection the client opens
    (淘宝 TMC, 拼多多 PMC). One connection serves every shop authorised for one app."""

    channel: str

    async def run(self, http: httpx.AsyncClient, shops: list[ShopConfig], sink: StreamSink) -> None:
        """Hold the app's connection until cancelled: connect (signed), keep each message with
        `sink.keep`, then confirm it to the platform; heartbeats; reconnect with backoff."""
        ...

    def parse_push(self, body: bytes) -> list[PushMessage]:
        """A kept message -> which order changed (as PushChannel.parse_push)."""
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


class PiiSource(Protocol):
    """A channel whose platform decrypts the buyer PII ciphertexts it sends (抖店, 淘宝, 拼多多)."""

    channel: str

    async def decrypt(
        self, http: httpx.AsyncClient, shop: ShopConfig, orders: list[tuple[str, dict[str, str]]], fields: tuple[str, ...]
    ) -> dict[str, dict[str, str]]:
        """Plaintext of `fields` ("phone", "name", "address_detail") for each (original_id,
        order.pii) pair, batching as the platform allows: {original_id: {field: plaintext}}.
        Orders or fields the platform would not decrypt are absent. Raises FetchError."""
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
