"""Webhook delivery: POST signed push bodies to OrderHub, retry like the platforms do, count."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import orjson

from orderhub.simulator.streams import StreamHub, StreamMessage

log = logging.getLogger(__name__)

# What each platform expects back on success; anything else counts as a failed delivery.
EXPECTED_ACK = {"douyin": {"code": 0, "msg": "success"}, "youzan": {"code": 0, "msg": "success"}}
# WeChat's message push wants the plain text "success" (or an empty body).
PLAIN_ACK = {"wechat_channels": (b"success", b"")}
WEBHOOK_PATHS = {
    "douyin": "/api/v1/webhooks/douyin", "youzan": "/api/v1/webhooks/youzan",
    "wechat_channels": "/api/v1/webhooks/wechat_channels",
}
# 有赞 retries after 5 s, 5 min 20 s, 21 min 20 s, 2 h (FORMATS.md §5a); 抖店 is similar [U].
PLATFORM_RETRY_DELAYS = (5.0, 320.0, 1280.0, 7200.0)


@dataclass(slots=True)
class Push:
    """One signed push request, exactly as the platform would send it."""

    channel: str
    order_id: str
    kind: str  # 抖店 tag ("101") or 有赞 type ("trade_TradePaid")
    path: str
    headers: dict[str, str]
    body: bytes
    send_at: int  # simulated time at which the platform sends it
    # Re-signs the body for retry number n (有赞 bumps `sendCount`); None = resend as is.
    rebuild: Callable[[int], tuple[dict[str, str], bytes]] | None = field(default=None, repr=False)
    # Message-stream platforms (淘宝 TMC, 拼多多 PMC): the app key whose stream carries it and
    # the message id the client confirms. Empty for HTTP webhooks.
    stream_key: str = ""
    message_id: int = 0

    def as_request(self) -> dict:
        """The NDJSON form handed to the benchmark: {channel, path, headers, body}."""
        return {"channel": self.channel, "path": self.path, "headers": self.headers, "body": self.body.decode()}


@dataclass
class PushStats:
    attempts: int = 0
    delivered: int = 0
    failed: int = 0  # gave up after every retry
    retries: int = 0
    bad_ack: int = 0  # 2xx but not the platform's expected reply
    errors: int = 0  # non-2xx or connection errors

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class Pusher:
    """Delivers pushes over one shared HTTP client; retries on errors and unexpected replies."""

    def __init__(
        self,
        retry_delays: tuple[float, ...] | None = None,
        compress: float = 100.0,
        concurrency: int = 64,
        timeout: float = 10.0,
    ) -> None:
        # Platform retry gaps compressed `compress` times (sim time), unless given in real seconds.
        self.retry_delays = retry_delays if retry_delays is not None else tuple(d / compress for d in PLATFORM_RETRY_DELAYS)
        self.stats = PushStats()
        self._concurrency = concurrency
        self._sem = asyncio.Semaphore(concurrency)
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        # (channel, order id, kind, unix time acknowledged) of recent deliveries, for latency runs
        self.acks: deque[tuple[str, str, str, float]] = deque(maxlen=500_000)
        self.streams: StreamHub | None = None  # where stream messages go (set by the Simulator)

    def record_stream_ack(self, message: StreamMessage) -> None:
        """A client confirmed a stream message: it counts as acknowledged now."""
        self.acks.append((message.channel, message.order_id, message.kind, time.time()))

    def client(self) -> httpx.AsyncClient:
        """The shared client, for other simulated senders (the carriers' track pushes)."""
        return self._http()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
            self._client = httpx.AsyncClient(timeout=self._timeout, limits=limits)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(self, push: Push, target_url: str) -> bool:
        """Send `push` to `target_url` until acknowledged or out of retries; True if delivered.

        A stream message is queued on its platform's stream instead: the client connected to
        the stream takes it from there (and confirms it, which records the ack)."""
        if push.stream_key:
            if self.streams is None:
                raise RuntimeError("stream push without a stream hub")
            self.streams.publish(push.channel, push.stream_key, push.message_id, push.body, push.order_id, push.kind)
            self.stats.delivered += 1
            return True
        url = target_url.rstrip("/") + push.path
        headers, body = push.headers, push.body
        for attempt in range(len(self.retry_delays) + 1):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(self.retry_delays[attempt - 1])
                if push.rebuild is not None:
                    headers, body = push.rebuild(attempt)
            if await self._attempt(push.channel, url, headers, body):
                self.stats.delivered += 1
                self.acks.append((push.channel, push.order_id, push.kind, time.time()))
                return True
        self.stats.failed += 1
        log.warning("push %s %s for %s failed after %d attempts", push.channel, push.kind, push.order_id, attempt + 1)
        return False

    async def _attempt(self, channel: str, url: str, headers: dict[str, str], body: bytes) -> bool:
        self.stats.attempts += 1
        try:
            async with self._sem:
                resp = await self._http().post(url, content=body, headers=headers)
        except httpx.HTTPError:
            self.stats.errors += 1
            return False
        if not 200 <= resp.status_code < 300:
            self.stats.errors += 1
            return False
        if channel in PLAIN_ACK:
            ok = resp.content.strip() in PLAIN_ACK[channel]
        else:
            try:
                ok = orjson.loads(resp.content) == EXPECTED_ACK[channel]
            except orjson.JSONDecodeError:
                ok = False
        if not ok:
            self.stats.bad_ack += 1
        return ok

    async def deliver_all(self, pushes: list[Push], target_url: str) -> dict[str, int]:
        """Send pushes; one order's pushes go one after another in list order (so an intended
        out-of-order pair really arrives out of order), different orders concurrently."""
        by_order: dict[tuple[str, str], list[Push]] = {}
        for push in pushes:
            by_order.setdefault((push.channel, push.order_id), []).append(push)

        async def one_order(group: list[Push]) -> list[bool]:
            return [await self.deliver(push, target_url) for push in group]

        results = await asyncio.gather(*(one_order(g) for g in by_order.values()))
        delivered = sum(ok for group in results for ok in group)
        return {"delivered": delivered, "failed": len(pushes) - delivered}
