"""How the FastAPI app serves the built console: index.html for client routes, never for /api/,
long-cached hashed assets, and a clear 503 while the console is not built."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from orderhub.entrypoints.api.console import ASSET_CACHE, mount_console


def app_with(dist: Path) -> httpx.AsyncClient:
    app = FastAPI()

    @app.get("/api/v1/ping")
    async def ping() -> dict[str, bool]:
        return {"pong": True}

    mount_console(app, dist)

    @app.get("/api/v1/after")  # a router included after the console is still reachable
    async def after() -> dict[str, bool]:
        return {"after": True}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test")


@pytest.fixture
def built(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><div id=root></div>", encoding="utf-8")
    (tmp_path / "assets" / "index-AbCd1234.js").write_text("console.log(1)", encoding="utf-8")
    (tmp_path / "assets" / "big-Zz998877.js").write_text("x" * 5000, encoding="utf-8")
    (tmp_path / "assets" / "big-Zz998877.js.gz").write_bytes(gzip.compress(b"x" * 5000))
    return tmp_path


@pytest.mark.parametrize("path", ["/", "/orders", "/orders/5d41402abc4b2a76b9719d911017c592", "/track", "/rules?set=holds", "/apidocs"])
async def test_client_routes_answer_index_html_asked_for_again_each_time(built: Path, path: str) -> None:
    reply = await app_with(built).get(path)
    assert reply.status_code == 200
    assert reply.text.startswith("<!doctype html>")
    assert reply.headers["cache-control"] == "no-cache"


async def test_hashed_assets_are_cached_for_a_year_and_a_missing_one_is_404(built: Path) -> None:
    client = app_with(built)
    asset = await client.get("/assets/index-AbCd1234.js")
    assert asset.status_code == 200 and asset.headers["cache-control"] == ASSET_CACHE
    assert (await client.get("/assets/gone-12345678.js")).status_code == 404


async def test_a_precompressed_asset_goes_to_browsers_that_accept_gzip(built: Path) -> None:
    client = app_with(built)
    packed = await client.get("/assets/big-Zz998877.js", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip" and packed.headers["content-type"].startswith("text/javascript")
    assert packed.text == "x" * 5000  # httpx decodes it: the bytes are the file's
    assert int(packed.headers["content-length"]) < 200
    plain = await client.get("/assets/big-Zz998877.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == "x" * 5000
    assert plain.headers["vary"] == packed.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize("path", ["/api", "/api/", "/api/v1/nothing-here", "/api/v2/orders"])
async def test_api_paths_never_get_the_console(built: Path, path: str) -> None:
    reply = await app_with(built).get(path)
    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("application/json")


async def test_api_routes_before_and_after_the_console_still_answer(built: Path) -> None:
    client = app_with(built)
    assert (await client.get("/api/v1/ping")).json() == {"pong": True}
    assert (await client.get("/api/v1/after")).json() == {"after": True}


async def test_without_a_build_the_console_says_how_to_make_one(tmp_path: Path) -> None:
    client = app_with(tmp_path / "not-built")
    reply = await client.get("/orders")
    assert reply.status_code == 503
    assert "make console" in reply.text
    assert (await client.get("/api/v1/ping")).status_code == 200  # the API works without the console
