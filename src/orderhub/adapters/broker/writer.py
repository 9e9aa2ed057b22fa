"""The intake's durable store in scaled mode: the broker instead of the database inbox.

Same contract as adapters/db/inbox.InboxWriter: `append` returns once the message is kept (here:
the broker acknowledged every part of it), so the platform is answered only for what is kept, and
raises when it cannot be kept (the intake answers 503 + Retry-After; the platform retries).

A push body usually names several orders; it is split into one message per order, each published
to the partition of its order, so one order's events are consumed in order by one worker. A body
that does not parse is published whole (to its shop's partition): the worker quarantines it with
the reason, as in embedded mode.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson

from orderhub.adapters.broker.envelope import Envelope, partition_of
from orderhub.adapters.broker.transport import Transport
from orderhub.domain.errors import OrderHubError

log = logging.getLogger(__name__)


class BrokerWriter:
    def __init__(self, transport: Transport, parser: Any) -> None:
        self.transport = transport
        self._parser = parser  # channel name -> adapter with parse_push (ChannelRegistry.parser)
        self.commits = 0  # publishes acknowledged (the /health counter the DB writer calls commits)
        self.rows_written = 0
        self._unwritten: deque[datetime] = deque()

    def start(self) -> None:
        """Connected by Runtime.start (async); nothing to do here."""

    def stop(self) -> None:
        """Disconnected by Runtime.stop (async)."""

    async def append(self, channel: str, shop_id: str | None, kind: str, body: bytes, meta: dict[str, Any] | None = None) -> None:
        received_at = datetime.now(UTC)
        envelopes = self._split(channel, shop_id, kind, body, meta, received_at)
        self._unwritten.append(received_at)
        try:
            await asyncio.gather(*(self.transport.publish(p, env.encode(), env.key) for p, env in envelopes))
        finally:
            self._unwritten.remove(received_at)
        self.commits += len(envelopes)
        self.rows_written += len(envelopes)

    def oldest_unwritten(self) -> datetime | None:
        """This API node's in-flight publishes (what other nodes publish, the gate sees in the broker: `oldest_in_broker`)."""
        try:
            return min(self._unwritten)
        except ValueError:
            return None

    async def oldest_in_broker(self, keys: list[tuple[str, str]]) -> datetime | None:
        """When the oldest message still in the broker, in the partitions of these orders (channel, original id),
        arrived: the label gate's view of what the workers have not inserted yet (a cancel on its way)."""
        partitions = sorted({partition_of(f"{channel}:{original_id}", self.transport.partitions) for channel, original_id in keys})
        found = await asyncio.gather(*(self.transport.oldest_pending(p) for p in partitions))
        return min((t for t in found if t is not None), default=None)

    def _split(
        self, channel: str, shop_id: str | None, kind: str, body: bytes, meta: dict[str, Any] | None, received_at: datetime,
    ) -> list[tuple[int, Envelope]]:
        partitions = self.transport.partitions
        if kind == "push":
            try:
                messages = self._parser(channel).parse_push(body)
            except (OrderHubError, ValueError, KeyError, TypeError):
                messages = None
            if messages:
                out = []
                for m in messages:
                    data = orjson.dumps(m.as_dict())
                    env = Envelope(Envelope.new_key(), channel, m.shop_id, "message", received_at, data, meta)
                    out.append((partition_of(f"{channel}:{m.original_id}", partitions), env))
                return out
        env = Envelope(Envelope.new_key(), channel, shop_id, kind, received_at, body, meta)
        return [(partition_of(f"{channel}:{shop_id}", partitions), env)]
