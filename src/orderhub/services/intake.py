"""Intake: authenticate a platform push, keep it durably, answer the platform at once."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from orderhub.adapters.channels.registry import ChannelRegistry, ShopRegistry
from orderhub.adapters.db.inbox import InboxWriter
from orderhub.domain.errors import ErrorCode, OrderHubError, SignatureError

log = logging.getLogger(__name__)


class IntakeUnavailable(OrderHubError):
    """The inbox cannot be written: the platform is told to retry (503), nothing is accepted."""


class Intake:
    def __init__(self, writer: InboxWriter, shops: ShopRegistry, channels: ChannelRegistry, monitor: Any = None) -> None:
        self.writer = writer
        self.monitor = monitor  # ChannelMonitor: last message time per shop, connection states
        self.shops = shops
        self.channels = channels
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()

    async def accept_push(
        self, channel: str, headers: Mapping[str, str], body: bytes, query: Mapping[str, str] | None = None
    ) -> tuple[bytes, str]:
        """Returns the platform's expected success reply once the body is on disk."""
        adapter = self._push_adapter(channel)
        try:
            auth = adapter.authenticate(headers, body, self.shops, query or {})
        except SignatureError as exc:
            # Counted and logged; the body itself is not stored: it is not from the platform.
            self.rejected[(channel, exc.code.value)] += 1
            log.warning("rejected %s push: %s (%s)", channel, exc.code.value, exc.message)
            raise
        await self._keep(channel, auth.shop_id, auth.body if auth.body is not None else body, {"app_key": auth.app_key})
        return adapter.ack_body, adapter.ack_media_type

    def verify_url(self, channel: str, query: Mapping[str, str]) -> bytes:
        """A platform's signed GET on the callback URL (WeChat's echo check): the expected reply."""
        adapter = self._push_adapter(channel)
        if not hasattr(adapter, "verify_url"):
            raise OrderHubError(ErrorCode.UNKNOWN_CHANNEL, f"push channel {channel!r} has no URL check", "channel")
        try:
            return adapter.verify_url(query, self.shops)
        except SignatureError as exc:
            self.rejected[(channel, exc.code.value)] += 1
            log.warning("rejected %s URL check: %s (%s)", channel, exc.code.value, exc.message)
            raise

    # -- message streams (StreamSink) ---------------------------------------------------------

    async def keep(self, channel: str, shop_id: str | None, body: bytes, meta: dict[str, Any]) -> None:
        """A message a stream client received: on disk before the client confirms it."""
        await self._keep(channel, shop_id, body, meta)

    def connection(self, channel: str, app_key: str, state: str, detail: str | None = None) -> None:
        if self.monitor is not None:
            self.monitor.connection(channel, app_key, state, detail)

    # -- shared -----------------------------------------------------------------------------

    def _push_adapter(self, channel: str) -> Any:
        adapter = self.channels.push.get(channel)
        if adapter is None:
            raise OrderHubError(ErrorCode.UNKNOWN_CHANNEL, f"no push channel {channel!r}", "channel")
        return adapter

    async def _keep(self, channel: str, shop_id: str | None, body: bytes, meta: dict[str, Any]) -> None:
        try:
            await self.writer.append(channel, shop_id, "push", body, meta)
        except Exception as exc:
            raise IntakeUnavailable(ErrorCode.INTAKE_UNAVAILABLE, "the inbox cannot be written now; retry later") from exc
        self.accepted[channel] += 1
        if self.monitor is not None:
            self.monitor.message(channel, shop_id, meta.get("app_key"))
