"""拼多多 PMC message client: the signed WebSocket, its JSON frames, acks, heartbeats and reconnects.

Sources for every frame below, and the [U] choices, are in docs/channels/pdd.md. In short:
the connect path and the HeartBeat/Ack frames agree across three public clients
(whalesky-labs/pdd-sdk-php `MessageProtocol`, niltor/open-pdd-net-sdk `PddSocketHostServiceBase`,
and a Rust tokio-tungstenite client) [C3]; what the server answers to a heartbeat is not
documented [U], so liveness is left to WebSocket pings, which every server answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

log = logging.getLogger(__name__)

OFFICIAL_URL = "wss://message-api.pinduoduo.com"
COMMON, HEARTBEAT, ACK = "Common", "HeartBeat", "Ack"
HEARTBEAT_INTERVAL_S = 5.0  # [C3] the PHP, C# and Rust clients all send one every 5 s
MAX_FRAME_BYTES = 1 << 20  # [C3] the PHP SDK refuses frames over 1 MiB
MAX_IN_FLIGHT = 256  # messages being kept at once; the socket is not read while all are busy
# Reconnect waits: doubling from BACKOFF_MIN_S up to BACKOFF_MAX_S, each drawn in [50 %, 100 %]
# so many workers do not reconnect in step; reset once a connection stayed up STABLE_AFTER_S.
BACKOFF_MIN_S, BACKOFF_MAX_S, STABLE_AFTER_S = 0.5, 60.0, 10.0


def connection_path(client_id: str, client_secret: str, timestamp_ms: int) -> str:
    """`/message/{client_id}/{timestamp_ms}/{urlencode(base64(md5_hex(client_id + timestamp + secret)))}`."""
    digest = hashlib.md5(f"{client_id}{timestamp_ms}{client_secret}".encode()).hexdigest()
    signature = base64.b64encode(digest.encode("ascii")).decode("ascii")
    return f"/message/{quote(client_id, safe='')}/{timestamp_ms}/{quote(signature, safe='')}"


def heartbeat_frame(now_ms: int) -> str:
    """The PHP SDK's heartbeat (the Rust client leaves out `id`; the C# one sends id 0) [C3]."""
    return orjson.dumps({"id": now_ms, "commandType": HEARTBEAT, "time": now_ms}).decode()


@dataclass(frozen=True, slots=True)
class PmcMessage:
    """One Common frame: the platform's message and what its ack must echo."""

    id: int | None
    type: str | None
    mall_id: Any  # echoed in the ack as received (an int on the wire)
    send_time: int | None
    body: bytes  # the frame exactly as received: what is kept

    @property
    def shop_id(self) -> str | None:
        return str(self.mall_id) if self.mall_id not in (None, "") else None


def ack_frame(message: PmcMessage, now_ms: int) -> str:
    """`{"id","commandType":"Ack","time","sendTime","type","mallID"}` — the same fields in all three clients [C3]."""
    return orjson.dumps(
        {
            "id": message.id,
            "commandType": ACK,
            "time": now_ms,
            "sendTime": message.send_time,
            "type": message.type,
            "mallID": message.mall_id,
        }
    ).decode()


def read_frame(data: bytes) -> PmcMessage | None:
    """A Common frame -> PmcMessage; HeartBeat/Ack (and unknown commands) -> None.

    Raises ValueError when the frame is not a JSON object. A Common frame whose message is odd is
    still returned: it is kept and acknowledged, and parsing it later sends it to quarantine.
    """
    frame = orjson.loads(data)  # orjson keeps int64 ids exact (JSON numbers above 2**53)
    if not isinstance(frame, dict):
        raise ValueError("PMC frame is not a JSON object")
    command = frame.get("commandType")
    if command != COMMON:
        if command not in (HEARTBEAT, ACK):
            log.warning("pdd PMC: ignored frame with commandType %r", command)
        return None
    message = frame.get("message")
    message = message if isinstance(message, dict) else {}
    frame_id, send_time = frame.get("id"), frame.get("sendTime")
    kind = message.get("type")
    return PmcMessage(
        id=frame_id if isinstance(frame_id, int) and not isinstance(frame_id, bool) else None,
        type=kind if isinstance(kind, str) else None,
        mall_id=message.get("mallID"),
        send_time=send_time if isinstance(send_time, int) and not isinstance(send_time, bool) else None,
        body=data,
    )


class PmcClient:
    """Holds one app's PMC connection until cancelled.

    Each Common message is handed to `keep` (concurrently, at most `max_in_flight` at once) and
    acknowledged only after `keep` returned; a message whose keep raised is not acknowledged, so
    the platform delivers it again. Acks and heartbeats go out through one writer task.
    """

    def __init__(
        self,
        ws_base: str,
        client_id: str,
        client_secret: str,
        keep: Callable[[PmcMessage], Awaitable[None]],
        report: Callable[[str, str | None], None],
        *,
        clock: Callable[[], float] = time.time,
        heartbeat_s: float = HEARTBEAT_INTERVAL_S,
        max_in_flight: int = MAX_IN_FLIGHT,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        stable_after_s: float = STABLE_AFTER_S,
        jitter: Callable[[], float] = random.random,
        connect: Callable[..., Any] = websockets.connect,
    ) -> None:
        self._ws_base = ws_base.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._keep = keep
        self._report = report
        self._clock = clock
        self._heartbeat_s = heartbeat_s
        self._gate = asyncio.Semaphore(max_in_flight)
        self._backoff = (backoff_min_s, backoff_max_s, stable_after_s)
        self._jitter = jitter
        self._connect = connect
        self._keeping: set[asyncio.Task[None]] = set()
        self.connections = 0  # successful handshakes, for monitoring and tests

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                self._report("connecting", None)
                started = time.monotonic()
                connected_before = self.connections
                try:
                    detail = await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any failure of one session ends in a reconnect
                    detail = _describe(exc)
                self._report("disconnected", detail)
                log.warning("pdd PMC connection of %s ended: %s", self._client_id, detail)
                stayed_up = self.connections > connected_before and time.monotonic() - started >= self._backoff[2]
                failures = 0 if stayed_up else failures + 1
                await asyncio.sleep(self._delay(failures))
        finally:
            for task in list(self._keeping):
                task.cancel()
            self._report("disconnected", "stopped")

    def _delay(self, failures: int) -> float:
        low, high, _ = self._backoff
        ceiling = min(high, low * 2 ** max(failures - 1, 0))
        return ceiling * (0.5 + self._jitter() / 2)

    async def _session(self) -> str:
        timestamp_ms = int(self._clock() * 1000)
        url = self._ws_base + connection_path(self._client_id, self._client_secret, timestamp_ms)
        async with self._connect(url, max_size=MAX_FRAME_BYTES, open_timeout=10, close_timeout=2) as ws:
            self.connections += 1
            self._report("connected", None)
            outbox: asyncio.Queue[str] = asyncio.Queue()
            tasks = [
                asyncio.create_task(self._receive(ws, outbox), name="pdd-pmc-receive"),
                asyncio.create_task(self._write(ws, outbox), name="pdd-pmc-write"),
                asyncio.create_task(self._beat(outbox), name="pdd-pmc-heartbeat"),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            return "connection closed"

    async def _receive(self, ws: Any, outbox: asyncio.Queue[str]) -> None:
        while True:
            data = await ws.recv(decode=False)
            try:
                message = read_frame(data if isinstance(data, bytes) else data.encode())
            except ValueError:
                log.warning("pdd PMC: dropped a frame that is not JSON (%d bytes)", len(data))
                continue
            if message is None:
                continue
            # Bounded: when every slot is busy the socket is not read, and the platform holds back.
            await self._gate.acquire()
            task = asyncio.create_task(self._keep_then_ack(message, outbox))
            self._keeping.add(task)
            task.add_done_callback(self._keeping.discard)

    async def _keep_then_ack(self, message: PmcMessage, outbox: asyncio.Queue[str]) -> None:
        try:
            await self._keep(message)
        except Exception:
            # Not acknowledged: the platform delivers it again (on this or the next connection).
            log.exception("pdd PMC: message %s could not be kept; left for redelivery", message.id)
            return
        finally:
            self._gate.release()
        if message.id is None:
            log.warning("pdd PMC: kept a message without an id; it cannot be acknowledged")
            return
        # The outbox of a connection that has closed meanwhile is dropped: the platform redelivers.
        outbox.put_nowait(ack_frame(message, self._now_ms()))

    async def _write(self, ws: Any, outbox: asyncio.Queue[str]) -> None:
        while True:
            await ws.send(await outbox.get())

    async def _beat(self, outbox: asyncio.Queue[str]) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            outbox.put_nowait(heartbeat_frame(self._now_ms()))

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _describe(exc: Exception) -> str:
    if isinstance(exc, InvalidStatus):
        body = (exc.response.body or b"")[:200].decode("utf-8", "replace")
        return f"handshake refused: HTTP {exc.response.status_code} {body}".strip()
    if isinstance(exc, ConnectionClosed):
        close = exc.rcvd or exc.sent
        return f"connection closed: {close.code} {close.reason}".strip() if close else "connection lost"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
