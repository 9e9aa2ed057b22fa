"""淘宝 TMC (Taobao Message Channel) client: the binary frame codec and the long-lived connection.

TMC is a WebSocket carrying binary frames (little-endian), as the tmcpy client reads and
writes them (tmcpy `messageio.py`, `message.py`; its test vector is in the unit tests):

    frame   = u8 protocol_version (2) | u8 message_type | header* | u16 0 (end of headers)
    header  = u16 kind, then  1 custom: counted key, u8 value format, value
                              2 status code: i32 | 3 status phrase: counted | 4 flag: i32
                              5 token: counted
    counted = u32 byte length | UTF-8 bytes
    values  = 0 void | 1 counted string | 2 u8 | 3 i16 | 4 i32 | 5 i64 | 6 date (i64 ms) | 7 bytes

Message types: 0 connect (client: app_key, group_name, timestamp, sign, sdk), 1 connect ack
(server: token, or a status code and phrase when refused), 2 send (server: a data message;
client: a confirm `{__kind: 2, id}` or a pull request `{__kind: 1}`, both carrying the token).
Every [U] choice is a constant below; docs/channels/taobao.md explains each.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2
CONNECT, CONNECT_ACK, SEND = 0, 1, 2
END_OF_HEADERS, CUSTOM, STATUS_CODE, STATUS_PHRASE, FLAG, TOKEN = 0, 1, 2, 3, 4, 5
VOID, COUNTED_STRING, BYTE, INT16, INT32, INT64, DATE, BYTE_ARRAY = range(8)

KIND_FIELD = "__kind"
KIND_PULL_REQUEST = 1  # tmcpy QueryMessage
KIND_CONFIRM = 2  # tmcpy ConfirmMessage
KIND_DATA = 3  # [U] the server's data messages; the client does not rely on it (see _data_message)
CONNECT_FLAG = 1  # [U] tmcpy sends flag=1 with its connect frame; meaning unknown
# [U] tmcpy identifies itself with the Java SDK's name; the server may look at it.
SDK_NAME = "top-sdk-java-201403304"
DATA_FIELDS = ("id", "topic", "pub_app_key", "pub_time", "user_id", "user_nick", "content")
CST = timezone(timedelta(hours=8))


class TmcProtocolError(Exception):
    """A frame that does not follow the TMC framing, or an unexpected frame."""


class HandshakeRefused(Exception):
    """The server answered the connect frame with a status code instead of a token."""

    def __init__(self, status_code: int, phrase: str | None) -> None:
        super().__init__(f"TMC handshake refused: {status_code} {phrase or ''}".strip())
        self.status_code = status_code
        self.phrase = phrase


# -- frames ----------------------------------------------------------------------------------


@dataclass(slots=True)
class TmcFrame:
    message_type: int
    content: dict[str, Any] = field(default_factory=dict)
    token: str | None = None
    status_code: int | None = None
    status_phrase: str | None = None
    flag: int | None = None
    protocol_version: int = PROTOCOL_VERSION


def handshake_sign(app_key: str, app_secret: str, group_name: str, timestamp_ms: int | str) -> str:
    """UPPER(md5(secret + k1v1k2v2k3v3 (keys sorted) + secret)) over app_key, group_name, timestamp."""
    params = {"app_key": app_key, "group_name": group_name, "timestamp": str(timestamp_ms)}
    text = app_secret + "".join(key + params[key] for key in sorted(params)) + app_secret
    return hashlib.md5(text.encode()).hexdigest().upper()


def connect_frame(app_key: str, app_secret: str, group_name: str, timestamp_ms: int) -> TmcFrame:
    content = {
        "app_key": app_key,
        "group_name": group_name,
        "timestamp": str(timestamp_ms),
        "sign": handshake_sign(app_key, app_secret, group_name, timestamp_ms),
        "sdk": SDK_NAME,
    }
    return TmcFrame(CONNECT, content, flag=CONNECT_FLAG)


def confirm_frame(message_id: int, token: str) -> TmcFrame:
    return TmcFrame(SEND, {KIND_FIELD: KIND_CONFIRM, "id": message_id}, token=token)


def pull_request_frame(token: str) -> TmcFrame:
    return TmcFrame(SEND, {KIND_FIELD: KIND_PULL_REQUEST}, token=token)


def encode_frame(frame: TmcFrame) -> bytes:
    out = bytearray(struct.pack("<BB", frame.protocol_version, frame.message_type))
    if frame.status_code is not None:
        out += struct.pack("<Hi", STATUS_CODE, frame.status_code)
    if frame.status_phrase is not None:
        out += struct.pack("<H", STATUS_PHRASE) + _counted(frame.status_phrase)
    if frame.flag is not None:
        out += struct.pack("<Hi", FLAG, frame.flag)
    if frame.token is not None:
        out += struct.pack("<H", TOKEN) + _counted(frame.token)
    for key, value in frame.content.items():
        out += struct.pack("<H", CUSTOM) + _counted(key) + _value(value)
    out += struct.pack("<H", END_OF_HEADERS)
    return bytes(out)


def _counted(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def _value(value: Any) -> bytes:
    if value is None:
        return struct.pack("<B", VOID)
    if isinstance(value, bool):
        raise TypeError("TMC has no boolean value format")
    if isinstance(value, int):
        # Small integers as a byte (the `__kind` markers), everything else as a 64-bit long:
        # message ids do not fit 32 bits.
        if 0 <= value <= 0xFF:
            return struct.pack("<BB", BYTE, value)
        return struct.pack("<Bq", INT64, value)
    if isinstance(value, datetime):
        return struct.pack("<Bq", DATE, int(value.timestamp() * 1000))
    if isinstance(value, bytes):
        return struct.pack("<BI", BYTE_ARRAY, len(value)) + value
    return struct.pack("<B", COUNTED_STRING) + _counted(str(value))


class _Reader:
    """Reads one frame front to back; every read checks it stays inside the frame."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise TmcProtocolError(f"frame ends early at byte {self.at} (needs {size} more)")
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return value

    def raw(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise TmcProtocolError(f"frame ends early at byte {self.at} (needs {size} more)")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def counted(self) -> str:
        try:
            return self.raw(self.take("<I")).decode()
        except UnicodeDecodeError as exc:
            raise TmcProtocolError(f"string at byte {self.at} is not UTF-8") from exc

    def value(self) -> Any:
        fmt = self.take("<B")
        if fmt == VOID:
            return None
        if fmt == COUNTED_STRING:
            return self.counted()
        if fmt == BYTE:
            return self.take("<B")
        if fmt == INT16:
            return self.take("<h")
        if fmt == INT32:
            return self.take("<i")
        if fmt == INT64:
            return self.take("<q")
        if fmt == DATE:
            return datetime.fromtimestamp(self.take("<q") / 1000, tz=UTC)
        if fmt == BYTE_ARRAY:
            return self.raw(self.take("<I"))
        raise TmcProtocolError(f"unknown value format {fmt}")


def decode_frame(data: bytes) -> TmcFrame:
    """Bytes -> frame; raises TmcProtocolError for anything that is not a whole TMC frame."""
    reader = _Reader(data)
    frame = TmcFrame(protocol_version=reader.take("<B"), message_type=reader.take("<B"))
    while (kind := reader.take("<H")) != END_OF_HEADERS:
        if kind == CUSTOM:
            key = reader.counted()
            frame.content[key] = reader.value()
        elif kind == STATUS_CODE:
            frame.status_code = reader.take("<i")
        elif kind == STATUS_PHRASE:
            frame.status_phrase = reader.counted()
        elif kind == FLAG:
            frame.flag = reader.take("<i")
        elif kind == TOKEN:
            frame.token = reader.counted()
        else:
            raise TmcProtocolError(f"unknown header kind {kind}")
    if reader.at != len(data):
        raise TmcProtocolError(f"{len(data) - reader.at} bytes after the end of headers")
    return frame


# -- data messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TmcMessage:
    """One platform message as delivered: `content` is the JSON string it arrived as."""

    id: int
    topic: str
    pub_app_key: str | None
    pub_time: str | None  # "yyyy-MM-dd HH:mm:ss", GMT+8
    user_id: int | None
    user_nick: str | None
    content: str

    def body(self) -> bytes:
        """The message as OrderHub keeps it (what TaobaoChannel.parse_push reads)."""
        return orjson.dumps({name: getattr(self, name) for name in DATA_FIELDS})


def data_message(frame: TmcFrame) -> TmcMessage | None:
    """The data message a frame carries, or None for any other frame.

    A server frame with a message id and a topic is data, whatever its `__kind` says [U].
    """
    content = frame.content
    if frame.message_type != SEND or "id" not in content or "topic" not in content:
        return None
    message_id, user_id = content["id"], content.get("user_id")
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise TmcProtocolError(f"data message id {message_id!r} is not an integer")
    if user_id is not None and (isinstance(user_id, bool) or not isinstance(user_id, int)):
        user_id = int(user_id) if str(user_id).isdigit() else None
    pub_time = content.get("pub_time")
    if isinstance(pub_time, datetime):
        pub_time = pub_time.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")
    body = content.get("content")
    return TmcMessage(
        id=message_id,
        topic=str(content["topic"]),
        pub_app_key=_text_or_none(content.get("pub_app_key")),
        pub_time=_text_or_none(pub_time),
        user_id=user_id,
        user_nick=_text_or_none(content.get("user_nick")),
        content=body.decode() if isinstance(body, bytes) else ("" if body is None else str(body)),
    )


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


# -- the connection ---------------------------------------------------------------------------


Deliver = Callable[[TmcMessage], Awaitable[None]]
Report = Callable[[str, str | None], None]


def reconnect_delay(attempt: int, rng: random.Random, initial_s: float, max_s: float) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random, so a fleet of
    clients cut off together does not come back in lockstep."""
    step = min(max_s, initial_s * (2 ** min(attempt, 30)))
    return step / 2 + rng.uniform(0, step / 2)


@dataclass
class TmcSettings:
    heartbeat_s: float = 30.0  # WebSocket ping interval; a missing pong within as long drops the link
    pull_interval_s: float = 30.0  # tmcpy asks for pending messages every 50 s; harmless when pushed
    handshake_timeout_s: float = 10.0
    max_in_flight: int = 256  # messages being kept at once: each waits for one database commit
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_frame_bytes: int = 4 * 1024 * 1024


class TmcClient:
    """Holds one app's TMC connection: handshake, keep-then-confirm, heartbeats, reconnects."""

    def __init__(
        self,
        url: str,
        app_key: str,
        app_secret: str,
        group_name: str = "default",
        *,
        settings: TmcSettings | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.app_key = app_key
        self._app_secret = app_secret
        self.group_name = group_name
        self.settings = settings or TmcSettings()
        self._clock_ms = clock_ms
        self._rng = rng or random.Random()
        self._gate = asyncio.Semaphore(self.settings.max_in_flight)
        self._keeping: set[asyncio.Task[None]] = set()

    async def run(self, deliver: Deliver, report: Report) -> None:
        """Connect, serve, reconnect with backoff — until cancelled."""
        attempt = 0
        try:
            while True:
                report("connecting", None)
                try:
                    async with connect(
                        self.url,
                        ping_interval=self.settings.heartbeat_s,
                        ping_timeout=self.settings.heartbeat_s,
                        open_timeout=self.settings.handshake_timeout_s,
                        max_size=self.settings.max_frame_bytes,
                        compression=None,
                        proxy=None,  # platform traffic goes direct; a proxy env var must not reroute it
                    ) as ws:
                        token = await self._handshake(ws)
                        report("connected", None)
                        attempt = 0
                        await self._serve(ws, token, deliver)
                        reason = "closed by the platform"
                except (OSError, TimeoutError, WebSocketException, TmcProtocolError, HandshakeRefused) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                report("disconnected", reason)
                delay = reconnect_delay(attempt, self._rng, self.settings.backoff_initial_s, self.settings.backoff_max_s)
                attempt += 1
                log.info("TMC %s for app %s disconnected (%s); reconnecting in %.2fs", self.url, self.app_key, reason, delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            report("disconnected", "stopped")
            for task in list(self._keeping):
                task.cancel()
            raise

    async def _handshake(self, ws: ClientConnection) -> str:
        await ws.send(encode_frame(connect_frame(self.app_key, self._app_secret, self.group_name, self._clock_ms())))
        reply = await asyncio.wait_for(ws.recv(), self.settings.handshake_timeout_s)
        if not isinstance(reply, bytes):
            raise TmcProtocolError("the connect ack is not a binary frame")
        ack = decode_frame(reply)
        if ack.message_type != CONNECT_ACK:
            raise TmcProtocolError(f"expected a connect ack, got message type {ack.message_type}")
        if ack.status_code:
            raise HandshakeRefused(ack.status_code, ack.status_phrase)
        if not ack.token:
            raise TmcProtocolError("the connect ack carries no token")
        return ack.token

    async def _serve(self, ws: ClientConnection, token: str, deliver: Deliver) -> None:
        # Confirms go out through one writer so keeps finishing at once never interleave sends.
        confirms: asyncio.Queue[int] = asyncio.Queue()
        helpers = [
            asyncio.create_task(self._write_confirms(ws, token, confirms)),
            asyncio.create_task(self._request_pulls(ws, token)),
        ]
        try:
            async for data in ws:
                if not isinstance(data, bytes):
                    raise TmcProtocolError("text frame on a binary protocol")
                message = data_message(decode_frame(data))
                if message is None:
                    continue
                await self._gate.acquire()  # back-pressure: stop reading while the sink is saturated
                task = asyncio.create_task(self._keep_then_confirm(message, deliver, confirms))
                self._keeping.add(task)
                task.add_done_callback(self._keeping.discard)
        except ConnectionClosed:
            pass
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        # Keeps still running finish on their own; their confirms die with this connection's
        # queue, and the platform hands those messages out again.

    async def _keep_then_confirm(self, message: TmcMessage, deliver: Deliver, confirms: asyncio.Queue[int]) -> None:
        try:
            await deliver(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not kept: leave it unconfirmed so the platform redelivers it
            log.warning("TMC message %s (%s) not kept, left unconfirmed: %r", message.id, message.topic, exc)
        else:
            confirms.put_nowait(message.id)
        finally:
            self._gate.release()

    async def _write_confirms(self, ws: ClientConnection, token: str, confirms: asyncio.Queue[int]) -> None:
        while True:
            message_id = await confirms.get()
            await ws.send(encode_frame(confirm_frame(message_id, token)))

    async def _request_pulls(self, ws: ClientConnection, token: str) -> None:
        while True:
            await asyncio.sleep(self.settings.pull_interval_s)
            await ws.send(encode_frame(pull_request_frame(token)))

