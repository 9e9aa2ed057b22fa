"""Serving an ASGI app inside a test's event loop, on a free port of 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket

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
