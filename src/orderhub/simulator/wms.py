"""The simulated WMS (warehouse management system): its signed HTTP/JSON API and its stock.

The contract OrderHub's `HttpWmsStock` speaks is docs/wms.md. Today the WMS serves stock on hand
per SKU and warehouse; orders, picking and shipping (the next issue) add their endpoints to the
same router and their state to `WmsState`, behind the same `_verified` signature check. The
check is written here independently of OrderHub's client (adapters/wms/stock.py).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, HTTPException, Request, Response

from orderhub.demo.stock import opening_stock

# The demo WMS app (serve --demo and the tests use it; a real WMS issues its own).
DEMO_WMS_APP = {"app_key": "fake-wms-app-key-0001", "app_secret": "fake-wms-app-secret-0001"}
MAX_SKEW_S = 300  # a request whose timestamp is further from the WMS clock is refused (replays)
MAX_PAGE_SIZE = 500

# Error codes of this WMS's replies (docs/wms.md).
BAD_SIGNATURE = 40101
STALE_TIMESTAMP = 40102
UNKNOWN_APP = 40103
BAD_PARAMETER = 40001


def sign(app_secret: str, timestamp: str, payload: bytes) -> str:
    """hex HMAC-SHA256(app_secret, timestamp + "\\n" + payload); payload = raw query (GET) or body."""
    return hmac.new(app_secret.encode(), timestamp.encode() + b"\n" + payload, hashlib.sha256).hexdigest()


def seeded_stock() -> dict[tuple[str, str], int]:
    """On hand per (SKU, warehouse): the demo's opening stock, so a fresh demo's first import
    changes nothing and the same SKUs are scarce on both sides."""
    return {(sku, warehouse): on_hand for sku, warehouse, on_hand in opening_stock()}


class WmsState:
    """What the simulated warehouse knows (thread-safe behind one lock)."""

    def __init__(self, apps: Iterable[dict[str, str]] | None = None, clock: Callable[[], float] = time.time) -> None:
        # Wall time, not the simulator's clock: the signature timestamp is the client's wall time.
        self.clock = clock
        self.apps = {app["app_key"]: app["app_secret"] for app in (apps or [DEMO_WMS_APP])}
        self._lock = threading.Lock()
        self._stock = seeded_stock()

    def stock(self, warehouse: str | None = None, sku: str | None = None) -> list[tuple[str, str, int]]:
        """(sku, warehouse, on_hand) rows, ordered by warehouse then SKU (stable pages)."""
        with self._lock:
            rows = [(s, w, n) for (s, w), n in self._stock.items()
                    if (warehouse is None or w == warehouse) and (sku is None or s == sku)]
        return sorted(rows, key=lambda row: (row[1], row[0]))

    def set_stock(self, rows: Iterable[tuple[str, str, int]]) -> None:
        rows = list(rows)
        for sku, warehouse, on_hand in rows:
            if not sku or not warehouse or isinstance(on_hand, bool) or not isinstance(on_hand, int) or on_hand < 0:
                raise ValueError(f"bad stock row {(sku, warehouse, on_hand)!r}")
        with self._lock:
            for sku, warehouse, on_hand in rows:
                self._stock[(sku, warehouse)] = on_hand


def _reply(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _fail(status: int, code: int, message: str) -> Response:
    return _reply({"code": code, "message": message, "data": None}, status)


def _verified(state: WmsState, request: Request, payload: bytes) -> Response | None:
    """None when the request is signed by a known app within the time window; else the refusal."""
    app_key = request.headers.get("x-wms-app-key", "")
    timestamp = request.headers.get("x-wms-timestamp", "")
    signature = request.headers.get("x-wms-signature", "")
    secret = state.apps.get(app_key)
    if secret is None:
        return _fail(401, UNKNOWN_APP, f"unknown app key {app_key!r}")
    if not timestamp.isdigit() or abs(state.clock() - int(timestamp)) > MAX_SKEW_S:
        return _fail(401, STALE_TIMESTAMP, f"X-WMS-Timestamp must be unix seconds within {MAX_SKEW_S} s of now")
    if not hmac.compare_digest(sign(secret, timestamp, payload), signature.lower()):
        return _fail(401, BAD_SIGNATURE, "X-WMS-Signature does not match")
    return None


def make_router(state: WmsState) -> APIRouter:
    """The WMS API, mounted under /wms."""
    router = APIRouter()

    @router.get("/stock")
    async def stock(request: Request) -> Response:
        raw_query = request.scope.get("query_string", b"")  # the bytes as sent: what was signed
        refused = _verified(state, request, raw_query)
        if refused is not None:
            return refused
        query = {key: values[-1] for key, values in parse_qs(raw_query.decode(), keep_blank_values=True).items()}
        try:
            page, page_size = int(query.get("page", "1")), int(query.get("page_size", "100"))
        except ValueError:
            return _fail(400, BAD_PARAMETER, "page and page_size must be integers")
        if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
            return _fail(400, BAD_PARAMETER, f"page starts at 1; page_size is 1-{MAX_PAGE_SIZE}")
        rows = state.stock(query.get("warehouse") or None, query.get("sku") or None)
        chunk = rows[(page - 1) * page_size : page * page_size]
        return _reply({"code": 0, "message": "ok", "data": {
            "items": [{"sku": s, "warehouse": w, "on_hand": n} for s, w, n in chunk],
            "page": page, "page_size": page_size, "total": len(rows), "has_more": page * page_size < len(rows),
        }})

    return router


def make_control_router(state: WmsState) -> APIRouter:
    """Test and demo controls, mounted under /_sim/wms (unsigned, like every /_sim control)."""
    router = APIRouter()

    @router.get("/stock")
    async def show() -> Response:
        return _reply({"items": [{"sku": s, "warehouse": w, "on_hand": n} for s, w, n in state.stock()]})

    @router.put("/stock")
    async def set_counts(request: Request) -> Response:
        """{"items": [{"sku", "warehouse", "on_hand"}]}: the warehouse now holds these counts."""
        try:
            body = orjson.loads(await request.body())
            rows = [(str(i["sku"]), str(i["warehouse"]), i["on_hand"]) for i in body["items"]]
            state.set_stock(rows)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise HTTPException(400, f'body must be {{"items": [{{"sku", "warehouse", "on_hand" >= 0}}]}}: {exc}') from None
        return _reply({"updated": len(rows)})

    return router
