"""Serving an ASGI app inside a test's event loop, on a free port of 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the test's loop owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def listening_socket(backlog: int = 512) -> socket.socket:
    """A bound, listening, non-blocking socket on a free port (serve with `server.serve(sockets=[sock])`)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


@dataclass
class Served:
    """An app answering on `url` from a task of the test's loop."""

    url: str
    server: QuietServer
    task: asyncio.Task[None]
    sock: socket.socket

    async def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, timeout=timeout)
        finally:
            self.sock.close()


async def serve_app(app: Any, backlog: int = 64) -> Served:
    """Serve an ASGI app (lifespan off) on a free port of 127.0.0.1; returns once it listens."""
    sock = listening_socket(backlog)
    server = QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped the server
        await asyncio.sleep(0.01)
    return Served(f"http://127.0.0.1:{sock.getsockname()[1]}", server, task, sock)
