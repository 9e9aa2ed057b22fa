"""淘宝 TMC server end: binary frames over a WebSocket, fed from the simulator's message stream.

Written apart from OrderHub's client codec on purpose (a framing bug must not hide on both
sides); both are checked against the tmcpy frame vector and SIGNATURES.json's handshake.
Frame layout (little-endian), after tmcpy's messageio: version u8, type u8, then headers
(u16 kind + payload) until kind 0. Kinds: 1 custom (counted key, u8 value type, value),
2 status code (i32), 3 status phrase, 4 flag (i32), 5 token. Counted = u32 length + UTF-8.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import secrets
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from orderhub.simulator.amounts import parse_cst

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

CHANNEL = "taobao"
VERSION = 2
T_CONNECT, T_CONNECT_ACK, T_SEND = 0, 1, 2
H_END, H_CUSTOM, H_STATUS_CODE, H_STATUS_PHRASE, H_FLAG, H_TOKEN = 0, 1, 2, 3, 4, 5
# value types: void, counted string, u8, i16, i32, i64, date (i64 ms), byte array
V_VOID, V_STRING, V_BYTE, V_INT16, V_INT32, V_INT64, V_DATE, V_BYTES = range(8)
KIND_PULL, KIND_CONFIRM, KIND_DATA = 1, 2, 3
REFUSED_STATUS = 401  # [U] what TMC answers a bad handshake with; the socket is closed after it
HANDSHAKE_TIMEOUT_S = 10.0
SEND_BATCH = 64
FAULT_POLL_S = 0.05


@dataclass
class Parsed:
    version: int
    kind: int
    fields: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    phrase: str | None = None
    flag: int | None = None
    token: str | None = None


class BadFrame(ValueError):
    pass


def _read(buf: io.BytesIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    chunk = buf.read(size)
    if len(chunk) != size:
        raise BadFrame("truncated frame")
    return struct.unpack(fmt, chunk)[0]


def _read_text(buf: io.BytesIO) -> str:
    size = _read(buf, "<I")
    chunk = buf.read(size)
    if len(chunk) != size:
        raise BadFrame("truncated string")
    return chunk.decode("utf-8")


_VALUE_READERS = {
    V_BYTE: "<B", V_INT16: "<h", V_INT32: "<i", V_INT64: "<q", V_DATE: "<q",
}


def parse_frame(data: bytes) -> Parsed:
    buf = io.BytesIO(data)
    frame = Parsed(version=_read(buf, "<B"), kind=_read(buf, "<B"))
    while True:
        header = _read(buf, "<H")
        if header == H_END:
            break
        if header == H_CUSTOM:
            name = _read_text(buf)
            vtype = _read(buf, "<B")
            if vtype == V_VOID:
                frame.fields[name] = None
            elif vtype == V_STRING:
                frame.fields[name] = _read_text(buf)
            elif vtype == V_BYTES:
                frame.fields[name] = buf.read(_read(buf, "<I"))
            elif vtype in _VALUE_READERS:
                frame.fields[name] = _read(buf, _VALUE_READERS[vtype])
            else:
                raise BadFrame(f"value type {vtype}")
        elif header == H_STATUS_CODE:
            frame.status = _read(buf, "<i")
        elif header == H_STATUS_PHRASE:
            frame.phrase = _read_text(buf)
        elif header == H_FLAG:
            frame.flag = _read(buf, "<i")
        elif header == H_TOKEN:
            frame.token = _read_text(buf)
        else:
            raise BadFrame(f"header kind {header}")
    if buf.read(1):
        raise BadFrame("bytes after the end of headers")
    return frame


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw


def build_frame(kind: int, *, fields: list[tuple[str, int, Any]] = (), status: int | None = None,
                phrase: str | None = None, flag: int | None = None, token: str | None = None) -> bytes:
    """`fields` are (name, value type, value): the server states each value's wire type."""
    parts = [struct.pack("<BB", VERSION, kind)]
    if status is not None:
        parts.append(struct.pack("<Hi", H_STATUS_CODE, status))
    if phrase is not None:
        parts.append(struct.pack("<H", H_STATUS_PHRASE) + _text(phrase))
    if flag is not None:
        parts.append(struct.pack("<Hi", H_FLAG, flag))
    if token is not None:
        parts.append(struct.pack("<H", H_TOKEN) + _text(token))
    for name, vtype, value in fields:
        parts.append(struct.pack("<H", H_CUSTOM) + _text(name) + struct.pack("<B", vtype))
        if vtype == V_STRING:
            parts.append(_text(value))
        elif vtype == V_BYTES:
            parts.append(struct.pack("<I", len(value)) + value)
        elif vtype != V_VOID:
            parts.append(struct.pack(_VALUE_READERS[vtype], value))
    parts.append(struct.pack("<H", H_END))
    return b"".join(parts)


def connect_ack(token: str) -> bytes:
    return build_frame(T_CONNECT_ACK, flag=1, token=token)


def refusal(phrase: str) -> bytes:
    return build_frame(T_CONNECT_ACK, status=REFUSED_STATUS, phrase=phrase)


def data_frame(body: bytes) -> bytes:
    """A stream message (the TMC message JSON) as the binary data frame TMC sends."""
    msg = orjson.loads(body)
    return build_frame(T_SEND, fields=[
        ("__kind", V_BYTE, KIND_DATA),
        ("id", V_INT64, msg["id"]),
        ("topic", V_STRING, msg["topic"]),
        ("pub_app_key", V_STRING, msg["pub_app_key"]),
        ("pub_time", V_DATE, parse_cst(msg["pub_time"]) * 1000),
        ("user_id", V_INT64, msg["user_id"]),
        ("user_nick", V_STRING, msg["user_nick"]),
        ("content", V_STRING, msg["content"]),
    ])


def expected_sign(app_secret: str, fields: dict[str, Any]) -> str:
    """md5 over secret + app_key… group_name… timestamp… (names in sorted order) + secret, upper-case."""
    signed = ("app_key", "group_name", "timestamp")
    message = app_secret + "".join(name + str(fields.get(name, "")) for name in sorted(signed)) + app_secret
    return hashlib.md5(message.encode("utf-8")).hexdigest().upper()


def check_handshake(sim: Simulator, frame: Parsed) -> tuple[dict[str, Any] | None, str]:
    """The shop whose app signed this connect frame, or None and why not."""
    if frame.kind != T_CONNECT:
        return None, "first frame is not a connect frame"
    fields = frame.fields
    if any(not fields.get(name) for name in ("app_key", "group_name", "timestamp", "sign")):
        return None, "missing app_key, group_name, timestamp or sign"
    shop = sim.shop_by_app_key(CHANNEL, str(fields["app_key"]))
    if shop is None:
        return None, "unknown app_key"
    if not hmac.compare_digest(expected_sign(shop["app_secret"], fields), str(fields["sign"]).upper()):
        return None, "invalid sign"
    return shop, ""


async def serve(sim: Simulator, websocket: WebSocket) -> None:
    """One TMC connection: handshake, then messages out and confirms in until either side stops."""
    if sim.faults.active(CHANNEL) == "down":
        await websocket.close(code=1013)  # before accept: the upgrade is refused (HTTP 403)
        return
    await websocket.accept()
    try:
        first = await asyncio.wait_for(websocket.receive_bytes(), HANDSHAKE_TIMEOUT_S)
        shop, problem = check_handshake(sim, parse_frame(first))
    except (TimeoutError, BadFrame, UnicodeDecodeError, KeyError):
        await _close(websocket, 1002)
        return
    except WebSocketDisconnect:
        return
    if shop is None:
        await websocket.send_bytes(refusal(problem))
        await _close(websocket, 1008)
        return
    token = secrets.token_hex(16)
    await websocket.send_bytes(connect_ack(token))
    conn = sim.streams.connect(CHANNEL, shop["app_key"])
    generation = sim.faults.generation.get(CHANNEL, 0)
    tasks = [asyncio.create_task(job) for job in (
        _send_messages(websocket, conn), _receive_confirms(websocket, conn, token), _watch_faults(sim, generation))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.close()  # what it held unconfirmed is handed out again
        await _close(websocket, 1012)


async def _send_messages(websocket: WebSocket, conn: Any) -> None:
    while True:
        for message in await conn.take(SEND_BATCH, 0.5):
            await websocket.send_bytes(data_frame(message.body))


async def _receive_confirms(websocket: WebSocket, conn: Any, token: str) -> None:
    while True:
        event = await websocket.receive()
        if event["type"] == "websocket.disconnect":
            return
        data = event.get("bytes")
        if data is None:
            return  # a text frame: not TMC; end the connection
        try:
            frame = parse_frame(data)
        except (BadFrame, UnicodeDecodeError):
            return
        if frame.kind != T_SEND or frame.token != token:
            continue
        if frame.fields.get("__kind") == KIND_CONFIRM and isinstance(frame.fields.get("id"), int):
            conn.confirm(frame.fields["id"])
        # KIND_PULL: messages are pushed as soon as they are due; nothing more to do


async def _watch_faults(sim: Simulator, generation: int) -> None:
    """Ends when an outage starts (`down`) or the platform drops its connections (`drop`)."""
    while sim.faults.active(CHANNEL) != "down" and sim.faults.generation.get(CHANNEL, 0) == generation:
        await asyncio.sleep(FAULT_POLL_S)


async def _close(websocket: WebSocket, code: int) -> None:
    with contextlib.suppress(Exception):  # already closed by the other side
        await websocket.close(code=code)
