"""Message streams the simulated platforms deliver over long-lived connections (淘宝 TMC, 拼多多 PMC).

Platform-neutral: a stream per (channel, app key) holds every published message until a client
confirms it. Connections take messages from the stream; a message handed to a connection that
closes before confirming it, or left unconfirmed longer than `redeliver_after_s`, is handed out
again — which is how the real message services behave, and why OrderHub must be idempotent.
The wire framing (binary TMC frames, PMC JSON frames) lives in each platform's module.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class StreamMessage:
    channel: str
    id: int
    body: bytes  # the platform's message, as its module renders it (the module frames it)
    order_id: str
    kind: str
    published_at: float
    deliveries: int = 0
    holder: int | None = None  # the connection it was last handed to, while unconfirmed
    handed_at: float = 0.0


@dataclass
class StreamStats:
    published: int = 0
    handed_out: int = 0
    redelivered: int = 0
    confirmed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class _Stream:
    pending: dict[int, StreamMessage] = field(default_factory=dict)  # unconfirmed, by id
    ready: deque[int] = field(default_factory=deque)  # ids waiting for a connection
    in_flight: list[tuple[float, int]] = field(default_factory=list)  # heap of (handed out at, id)
    wake: asyncio.Event | None = None
    stats: StreamStats = field(default_factory=StreamStats)


class Connection:
    """One client connection's view of a stream."""

    _ids = itertools.count(1)

    def __init__(self, hub: StreamHub, key: tuple[str, str]) -> None:
        self.hub = hub
        self.key = key
        self.id = next(self._ids)
        self.closed = False

    async def take(self, limit: int = 100, timeout: float = 1.0) -> list[StreamMessage]:
        """Up to `limit` messages to send now; waits up to `timeout` s when none is due."""
        return await self.hub._take(self, limit, timeout)

    def confirm(self, message_id: int) -> bool:
        return self.hub.confirm(self.key[0], self.key[1], message_id)

    def close(self) -> None:
        """The connection ended: what it held unconfirmed is handed out again at once."""
        if not self.closed:
            self.closed = True
            self.hub._release(self)


class StreamHub:
    def __init__(self, redeliver_after_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.redeliver_after_s = redeliver_after_s
        self._clock = clock
        self._streams: dict[tuple[str, str], _Stream] = {}
        # (channel, order id, kind, unix time) of confirmed messages, for latency runs
        self.on_confirm: Callable[[StreamMessage], None] | None = None

    def _stream(self, channel: str, app_key: str) -> _Stream:
        key = (channel, app_key)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream()
        return stream

    def publish(self, channel: str, app_key: str, message_id: int, body: bytes, order_id: str, kind: str) -> None:
        """Queue a message for the app's connections; a repeated id replaces nothing (a duplicate
        publish of the same id is the platform resending it)."""
        stream = self._stream(channel, app_key)
        if message_id in stream.pending:
            stream.ready.append(message_id)
        else:
            stream.pending[message_id] = StreamMessage(channel, message_id, body, order_id, kind, self._clock())
            stream.ready.append(message_id)
        stream.stats.published += 1
        if stream.wake is not None:
            stream.wake.set()

    def connect(self, channel: str, app_key: str) -> Connection:
        self._stream(channel, app_key)
        return Connection(self, (channel, app_key))

    def confirm(self, channel: str, app_key: str, message_id: int) -> bool:
        stream = self._streams.get((channel, app_key))
        if stream is None:
            return False
        message = stream.pending.pop(message_id, None)
        if message is None:
            return False
        stream.stats.confirmed += 1
        if self.on_confirm is not None:
            self.on_confirm(message)
        return True

    def backlog(self, channel: str, app_key: str) -> int:
        stream = self._streams.get((channel, app_key))
        return len(stream.pending) if stream else 0

    def stats(self) -> dict[str, dict[str, int]]:
        return {f"{ch}/{app}": {**s.stats.as_dict(), "unconfirmed": len(s.pending)} for (ch, app), s in self._streams.items()}

    # -- connections -----------------------------------------------------------------------

    async def _take(self, conn: Connection, limit: int, timeout: float) -> list[StreamMessage]:
        stream = self._streams[conn.key]
        deadline = self._clock() + timeout
        while True:
            out = self._due(stream, conn, limit)
            if out or conn.closed:
                return out
            left = deadline - self._clock()
            if left <= 0:
                return []
            if stream.wake is None:
                stream.wake = asyncio.Event()
            stream.wake.clear()
            wait = left
            if stream.in_flight:  # wake up when the oldest unconfirmed message is due again
                wait = min(left, max(0.01, stream.in_flight[0][0] + self.redeliver_after_s - self._clock()))
            try:
                await asyncio.wait_for(stream.wake.wait(), timeout=wait)
            except TimeoutError:
                pass

    def _due(self, stream: _Stream, conn: Connection, limit: int) -> list[StreamMessage]:
        now = self._clock()
        # unconfirmed too long: hand out again
        while stream.in_flight and stream.in_flight[0][0] + self.redeliver_after_s <= now:
            handed_at, mid = heapq.heappop(stream.in_flight)
            message = stream.pending.get(mid)
            if message is not None and message.holder is not None and message.handed_at == handed_at:
                message.holder = None
                stream.ready.append(mid)
        out: list[StreamMessage] = []
        while stream.ready and len(out) < limit:
            mid = stream.ready.popleft()
            message = stream.pending.get(mid)
            if message is None or message.holder is not None:
                continue  # confirmed meanwhile, or already out on a connection
            message.holder = conn.id
            message.handed_at = now
            if message.deliveries:
                stream.stats.redelivered += 1
            message.deliveries += 1
            stream.stats.handed_out += 1
            heapq.heappush(stream.in_flight, (now, mid))
            out.append(message)
        return out

    def _release(self, conn: Connection) -> None:
        stream = self._streams.get(conn.key)
        if stream is None:
            return
        held = [message for message in stream.pending.values() if message.holder == conn.id]
        for message in held:
            message.holder = None
        stream.ready.extendleft(reversed([message.id for message in held]))
        if stream.wake is not None:
            stream.wake.set()
