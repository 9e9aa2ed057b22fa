"""The whole app served by uvicorn on a free local port, in the test's event loop, on each database."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from auth_helpers import api_key_headers
from fakes import SHOP, FakeChannel, FakePlatform, fake_registry, push_body
from orderhub.adapters.channels.file_import import FileChannel
from orderhub.bootstrap import Runtime
from orderhub.config import Settings, ShopSettings
from orderhub.entrypoints.api.app import create_app

ACK = {"code": 0, "msg": "success"}
STARTUP_TIMEOUT_S = 5.0


class _QuietServer(uvicorn.Server):
    """uvicorn without its SIGINT/SIGTERM handlers: Ctrl-C must still stop pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Api:
    """A running OrderHub reachable over real HTTP; `client` is authenticated as an admin (API key)."""

    base_url: str
    client: httpx.AsyncClient
    runtime: Runtime
    platform: FakePlatform

    async def push(self, *messages: dict[str, Any]) -> httpx.Response:
        body = push_body(*messages)
        return await self.client.post("/api/v1/webhooks/fake", content=body, headers={"x-sign": FakeChannel.sign(body), "content-type": "application/json"})

    async def health(self) -> dict[str, Any]:
        response = await self.client.get("/api/v1/health")
        assert response.status_code == 200, response.text
        return response.json()

    async def settled(self, timeout: float = 4.0) -> dict[str, Any]:
        """Poll /health until the inbox backlog is 0 (the workers must be running)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            health = await self.health()
            if health["backlog"] == 0:
                return health
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"backlog still {health['backlog']} after {timeout}s")
            await asyncio.sleep(0.05)

    async def orders(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get("/api/v1/orders", params={"limit": 200, **params})
        assert response.status_code == 200, response.text
        return response.json()["items"]


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform()


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@pytest.fixture
async def serve(database_url: str, platform: FakePlatform) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    """`await serve(workers=False)` starts the app (lifespan included) and returns an Api;
    `audit=True` runs the audit stage in its workers too."""
    running: list[tuple[_QuietServer, asyncio.Task[None], httpx.AsyncClient, socket.socket]] = []

    async def start(*, workers: bool = True, audit: bool = False) -> Api:
        settings = Settings(
            audit=audit,  # most tests here look at intake and processing on their own
            database_url=database_url,
            shops=[ShopSettings(channel="fake", shop_id=SHOP.shop_id, name=SHOP.name, app_key=SHOP.app_key, app_secret=SHOP.app_secret)],
            max_attempts=3,
        )
        channels = fake_registry(platform)
        channels.file = FileChannel()  # file imports are normalised by the real file channel
        runtime = Runtime(settings, channels=channels)
        app = create_app(runtime, workers=workers)
        sock = _free_socket()
        port = sock.getsockname()[1]
        server = _QuietServer(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
        task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
        base_url = f"http://127.0.0.1:{port}"
        client = httpx.AsyncClient(base_url=base_url, timeout=5.0, headers=api_key_headers(runtime.engine))
        running.append((server, task, client, sock))
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
        while True:
            if task.done():
                task.result()  # raises what stopped the server
                raise AssertionError("uvicorn exited during startup")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/api/v1/health")).status_code == 200:
                    break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"/api/v1/health did not answer within {STARTUP_TIMEOUT_S}s")
            await asyncio.sleep(0.02)
        return Api(base_url, client, runtime, platform)

    yield start

    for server, task, client, sock in reversed(running):
        await client.aclose()
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=10)
        finally:
            sock.close()
