"""拼多多 PMC server end: the signed WebSocket `/message/{client_id}/{timestamp}/{sign}`, framing, acks.

Messages come from the simulator's stream hub (`sim.streams`, key = the app's client id); each is
framed as `{"id", "commandType": "Common", "sendTime", "message"}` and confirmed when the client
sends `{"commandType": "Ack", "id": ...}`. Unconfirmed ones are handed out again by the hub.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio
import orjson
from fastapi import APIRouter, Response, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

CHANNEL = "pdd"
# How far the connect timestamp may be from the server's clock before the handshake is refused
# [U: PMC's window is not published; clients are told to keep their clocks right].
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
BATCH = 100  # messages taken from the stream at a time
POLL_S = 0.2  # how often an idle connection looks at the fault switches
CLOSE_GOING_AWAY = 1001


def expected_signature(client_id: str, timestamp: str, client_secret: str) -> str:
    """base64 of the lower-case md5 hex text of client_id + timestamp + client_secret."""
    hex_text = hashlib.md5((client_id + timestamp + client_secret).encode("utf-8")).hexdigest()
    return base64.b64encode(hex_text.encode("ascii")).decode("ascii")


def _refusal(sim: Simulator, client_id: str, timestamp: str, sign: str) -> Response | None:
    """The HTTP answer that refuses the handshake, or None to accept it [U: status codes and bodies]."""
    if sim.faults.active(CHANNEL) == "down":
        return Response(b"service unavailable", status_code=503)
    shop = sim.shop_by_app_key(CHANNEL, client_id)
    if shop is None or not timestamp.isdigit():
        return _denied(401, "client_id 或 timestamp 不合法")
    if abs(int(timestamp) - int(time.time() * 1000)) > MAX_CLOCK_SKEW_MS:
        return _denied(401, "timestamp 已过期，请校准时间")
    if not hmac.compare_digest(expected_signature(client_id, timestamp, shop["app_secret"]), unquote(sign)):
        return _denied(401, "签名校验失败")
    return None


def _denied(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error_code": status, "error_msg": message}), status_code=status,
                    media_type="application/json")


def add_message_endpoint(router: APIRouter, sim: Simulator) -> None:
    @router.websocket("/message/{client_id}/{timestamp}/{sign}")
    async def message_stream(websocket: WebSocket, client_id: str, timestamp: str, sign: str) -> None:
        refusal = _refusal(sim, client_id, timestamp, sign)
        if refusal is not None:
            await websocket.send_denial_response(refusal)
            return
        await websocket.accept()
        await _Session(sim, websocket, client_id).serve()


class _Session:
    """One accepted PMC connection: delivers messages, answers heartbeats, confirms acks."""

    def __init__(self, sim: Simulator, websocket: WebSocket, client_id: str) -> None:
        self.sim = sim
        self.websocket = websocket
        self.conn = sim.streams.connect(CHANNEL, client_id)
        self.generation = sim.faults.generation.get(CHANNEL, 0)
        self.send_lock = asyncio.Lock()

    async def serve(self) -> None:
        try:
            # An anyio task group, not bare asyncio tasks: the server (and Starlette's test client)
            # cancel through anyio scopes, which only unwind cleanly through anyio's own groups.
            async with anyio.create_task_group() as group:
                for part in (self._deliver, self._listen):
                    group.start_soon(self._until_either_ends, part, group.cancel_scope)
        finally:
            self.conn.close()  # what it held unconfirmed goes out again at once
        if self.websocket.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(CLOSE_GOING_AWAY)

    @staticmethod
    async def _until_either_ends(part: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
        try:
            await part()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away while we were sending
        finally:
            scope.cancel()

    def _cut_off(self) -> bool:
        """An outage began (`down`) or open connections are to be dropped (`drop`) since this one opened."""
        faults = self.sim.faults
        return faults.active(CHANNEL) == "down" or faults.generation.get(CHANNEL, 0) != self.generation

    async def _deliver(self) -> None:
        while not self._cut_off():
            for message in await self.conn.take(BATCH, POLL_S):
                send_ms = int(time.time() * 1000)
                frame = (b'{"id":' + str(message.id).encode() + b',"commandType":"Common","sendTime":'
                         + str(send_ms).encode() + b',"message":' + message.body + b"}")
                await self._send(frame.decode("utf-8"))

    async def _listen(self) -> None:
        while True:
            event = await self.websocket.receive()
            if event["type"] == "websocket.disconnect":
                return
            text = event.get("text")
            if text is None and event.get("bytes") is not None:
                text = event["bytes"].decode("utf-8", "replace")
            await self._handle(text or "")

    async def _handle(self, text: str) -> None:
        try:
            frame: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        if not isinstance(frame, dict):
            return
        command = frame.get("commandType")
        if command == "Ack" and isinstance(frame.get("id"), int):
            self.conn.confirm(frame["id"])
        elif command == "HeartBeat":
            # Answered in kind [U: what PMC replies is not documented; clients ignore it either way].
            await self._send(orjson.dumps({"commandType": "HeartBeat", "time": int(time.time() * 1000)}).decode())

    async def _send(self, text: str) -> None:
        async with self.send_lock:
            await self.websocket.send_text(text)
