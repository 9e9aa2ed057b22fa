"""Intake: authenticate a platform push, keep it durably, answer the platform at once."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

from orderhub.adapters.channels.registry import ChannelRegistry, ShopRegistry
from orderhub.adapters.db.inbox import InboxWriter
from orderhub.domain.errors import ErrorCode, OrderHubError, SignatureError

log = logging.getLogger(__name__)


class IntakeUnavailable(OrderHubError):
    """The inbox cannot be written: the platform is told to retry (503), nothing is accepted."""


class Intake:
    def __init__(self, writer: InboxWriter, shops: ShopRegistry, channels: ChannelRegistry) -> None:
        self.writer = writer
        self.shops = shops
        self.channels = channels
        self.accepted: Counter[str] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()

    async def accept_push(self, channel: str, headers: Mapping[str, str], body: bytes) -> tuple[bytes, str]:
        """Returns the platform's expected success reply once the body is on disk."""
        adapter = self.channels.push.get(channel)
        if adapter is None:
            raise OrderHubError(ErrorCode.UNKNOWN_CHANNEL, f"no push channel {channel!r}", "channel")
        try:
            auth = adapter.authenticate(headers, body, self.shops)
        except SignatureError as exc:
            # Counted and logged; the body itself is not stored: it is not from the platform.
            self.rejected[(channel, exc.code.value)] += 1
            log.warning("rejected %s push: %s (%s)", channel, exc.code.value, exc.message)
            raise
        try:
            await self.writer.append(channel, auth.shop_id, "push", body, {"app_key": auth.app_key})
        except Exception as exc:
            raise IntakeUnavailable(ErrorCode.INTAKE_UNAVAILABLE, "the inbox cannot be written now; retry later") from exc
        self.accepted[channel] += 1
        return adapter.ack_body, adapter.ack_media_type
