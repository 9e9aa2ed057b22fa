"""The simulated WMS (warehouse management system): its signed HTTP/JSON API, its stock, and its order flow.

The contract is docs/wms.md. Stock on hand per SKU and warehouse (what OrderHub's `HttpWmsStock`
reads), and orders: the WMS accepts a package, picks it (highest priority first, `pack_s` from
picking to packed, ~20 s by default), asks OrderHub for a waybill when it packs, ships it, and
answers freeze instructions — frozen while not yet packed, refused after. Every step is a signed
callback to OrderHub. The checks are written here independently of OrderHub's client
(adapters/wms/stock.py, adapters/wms/orders.py); the order flow is `simulator/wms_flow.py`.
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
from orderhub.simulator.wms_flow import OrderFlow, WmsOrder

# The demo WMS app (serve --demo and the tests use it; a real WMS issues its own).
DEMO_WMS_APP = {"app_key": "fake-wms-app-key-0001", "app_secret": "fake-wms-app-secret-0001"}
MAX_SKEW_S = 300  # a request whose timestamp is further from the WMS clock is refused (replays)
MAX_PAGE_SIZE = 500

# Error codes of this WMS's replies (docs/wms.md).
BAD_SIGNATURE = 40101
STALE_TIMESTAMP = 40102
UNKNOWN_APP = 40103
BAD_PARAMETER = 40001
UNKNOWN_ORDER = 40401


def sign(app_secret: str, timestamp: str, payload: bytes) -> str:
    """hex HMAC-SHA256(app_secret, timestamp + "\\n" + payload); payload = raw query (GET) or body."""
    return hmac.new(app_secret.encode(), timestamp.encode() + b"\n" + payload, hashlib.sha256).hexdigest()


def seeded_stock() -> dict[tuple[str, str], int]:
    """On hand per (SKU, warehouse): the demo's opening stock, so a fresh demo's first import
    changes nothing and the same SKUs are scarce on both sides."""
    return {(sku, warehouse): on_hand for sku, warehouse, on_hand in opening_stock()}


class WmsState:
    """What the simulated warehouse knows (thread-safe behind one lock)."""

    def __init__(self, apps: Iterable[dict[str, str]] | None = None, clock: Callable[[], float] = time.time,
                 on_shipped: Callable[[WmsOrder], None] | None = None) -> None:
        # Wall time, not the simulator's clock: the signature timestamp is the client's wall time.
        self.clock = clock
        self.on_shipped = on_shipped  # who else hears of a package leaving (the simulator's carriers)
        self.apps = {app["app_key"]: app["app_secret"] for app in (apps or [DEMO_WMS_APP])}
        self._lock = threading.Lock()
        self._stock = seeded_stock()
        self.flow = OrderFlow(self.apps, sign, clock=clock, on_shipped=self._shipped)

    def _shipped(self, order: WmsOrder) -> None:
        """What leaves the warehouse leaves its stock (the next stock import sees it) and is the carrier's now."""
        warehouse = str(order.body.get("warehouse") or "")
        with self._lock:
            for line in order.body.get("lines") or ():
                key = (str(line.get("sku")), warehouse)
                if key in self._stock:
                    self._stock[key] = max(0, self._stock[key] - int(line.get("qty") or 0))
        if self.on_shipped is not None:
            self.on_shipped(order)

    async def aclose(self) -> None:
        await self.flow.aclose()

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

    async def signed_body(request: Request) -> tuple[str, dict[str, Any]] | Response:
        raw = await request.body()  # the bytes as sent: what was signed
        refused = _verified(state, request, raw)
        if refused is not None:
            return refused
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _fail(400, BAD_PARAMETER, "the body must be JSON")
        if not isinstance(body, dict):
            return _fail(400, BAD_PARAMETER, "the body must be a JSON object")
        return request.headers["x-wms-app-key"], body

    @router.post("/orders")
    async def receive_order(request: Request) -> Response:
        checked = await signed_body(request)
        if isinstance(checked, Response):
            return checked
        app_key, body = checked
        if not body.get("order_code") or not isinstance(body.get("lines"), list) or not body["lines"]:
            return _fail(400, BAD_PARAMETER, "an order needs order_code and at least one line")
        return _reply({"code": 0, "message": "ok", "data": state.flow.receive(app_key, body)})

    @router.post("/orders/{code}/{action}")
    async def instruct(code: str, action: str, request: Request) -> Response:
        checked = await signed_body(request)
        if isinstance(checked, Response):
            return checked
        calls = {"freeze": state.flow.freeze, "unfreeze": state.flow.unfreeze, "cancel": state.flow.cancel,
                 "address": state.flow.change_address, "expedite": state.flow.expedite}
        if action not in calls:
            return _fail(404, UNKNOWN_ORDER, f"no such call {action!r}; known: {', '.join(calls)}")
        try:
            data = calls[action](code, checked[1])
        except KeyError:
            return _fail(404, UNKNOWN_ORDER, f"no order {code!r} at this WMS")
        return _reply({"code": 0, "message": "ok", "data": data})

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
        state.flow.emit(None, "stock", items=[{"sku": s, "warehouse": w, "on_hand": n} for s, w, n in rows])
        return _reply({"updated": len(rows)})

    @router.get("/config")
    async def show_config() -> Response:
        return _reply(state.flow.config())

    @router.put("/config")
    async def set_config(request: Request) -> Response:
        """{"callback_url", "accept_s", "pack_s", "ship_s", "pickers", "jitter", "seed", "hold_events"}, any of them."""
        try:
            body = orjson.loads(await request.body())
            return _reply(state.flow.configure(body))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
            raise HTTPException(400, f"bad WMS config: {exc}") from None

    @router.post("/pause")
    async def pause() -> Response:
        state.flow.pause(True)
        return _reply(state.flow.config())

    @router.post("/resume")
    async def resume() -> Response:
        state.flow.pause(False)
        return _reply(state.flow.config())

    @router.get("/orders")
    async def orders() -> Response:
        """Every order the WMS received, with when it reached each step (unix seconds) and every freeze."""
        return _reply({"items": state.flow.orders_view(), "pre_frozen": list(state.flow.pre_frozen)})

    @router.get("/callbacks")
    async def callbacks(event: str | None = None) -> Response:
        """Every callback try, oldest first, with the exact body and headers sent (a test may replay them)."""
        return _reply({"items": [c for c in state.flow.callbacks if event is None or c["event"] == event]})

    return router
