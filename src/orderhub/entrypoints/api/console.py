"""The web console: Vite's build (console/ → console_dist/) served at `/`, the API staying under /api/.

Hashed files under /assets/ never change, so browsers keep them for a year; index.html is asked
for again every time, so a new build reaches every open console on its next page load. Every
path outside /api/ and /assets/ is a client route (/orders/…, /track …): it answers index.html
and the router in the browser picks the page.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

DIST = Path(__file__).parent / "console_dist"
ASSET_CACHE = "public, max-age=31536000, immutable"

MISSING_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>OrderHub 订单中枢 — 控制台未构建</title></head>
<body style="font-family: sans-serif; max-width: 640px; margin: 64px auto; line-height: 1.6">
<h1>控制台尚未构建 · The console is not built</h1>
<p>在项目目录运行 <code>make console</code>（<code>make run</code> 会自动构建），然后刷新本页。</p>
<p>Run <code>make console</code> in the project directory (<code>make run</code> builds it when missing), then reload this page.</p>
<p>API: <a href="/api/v1/docs">/api/v1/docs</a></p>
</body></html>"""


class ClientRoute(Convertor[str]):
    """Any path except /api and what is below it: an unknown API path must stay a JSON 404,
    never the console's HTML (and routers included after this one must still be reachable)."""

    regex = r"(?!api(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("client_route", ClientRoute())


class _Assets(StaticFiles):
    """Vite's content-hashed files: cached for a year; the build's precompressed `<file>.gz` sent
    instead to a browser that accepts gzip (the app has no compression middleware)."""

    def file_response(self, *args, **kwargs) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        if response.status_code == 200:
            response.headers["Cache-Control"] = ASSET_CACHE
            response.headers["Vary"] = "Accept-Encoding"
        return response

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)  # 404s and path checks stay Starlette's
        if isinstance(response, FileResponse) and response.status_code == 200 and _accepts_gzip(scope):
            packed = Path(f"{response.path}.gz")
            if packed.is_file():
                return FileResponse(packed, media_type=response.media_type,
                                    headers={"Content-Encoding": "gzip", "Cache-Control": ASSET_CACHE, "Vary": "Accept-Encoding"})
        return response


def _accepts_gzip(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"accept-encoding":
            return b"gzip" in value.lower()
    return False


def mount_console(app: FastAPI, dist: Path = DIST) -> None:
    """Serve the built console; without a build, `/` and every client route answer 503 saying how to build it."""
    assets = dist / "assets"
    # check_dir=False: a build made after start-up is served without a restart
    app.mount("/assets", _Assets(directory=assets, check_dir=False), name="console-assets")

    @app.get("/{path:client_route}", include_in_schema=False)
    async def console_page(path: str) -> Response:
        index = dist / "index.html"
        if not index.is_file():
            return HTMLResponse(MISSING_PAGE, status_code=503, headers={"Cache-Control": "no-store", "Retry-After": "30"})
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})
