"""The simulated warehouse floor: orders queue by priority, pickers pick and pack them, freezes stop them, callbacks report it.

One package ("WMS order") at a time per picker. An order is accepted shortly after it arrives,
waits in a priority queue, is picked for `pack_s` seconds (jittered), gets its waybill from
OrderHub (the `waybill_request` callback) and is then packed: from that moment a freeze is
refused. It ships `ship_s` later. A freeze before packing stops the picker at once; an unfreeze
or an address change puts the order back in the queue. Callbacks to OrderHub are signed, sent in
order per WMS order and retried; each one is kept (bytes and headers) so tests can replay them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

log = logging.getLogger(__name__)

WORKING = ("received", "accepted", "picking")  # a freeze still stops these
DONE = ("packed", "shipped")  # a freeze is refused
CALLBACK_RETRIES = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
HOLD_AT_BENCH_S, HOLD_AT_BENCH_TRIES = 0.1, 600  # label held by OrderHub (409): ask again every 0.1 s, for up to a minute


@dataclass
class WmsTiming:
    """How fast the simulated warehouse works; per simulator instance (PUT /_sim/wms/config)."""

    accept_s: float = 0.2  # received -> accepted
    pack_s: float = 20.0  # picking starts -> packed (label on the box)
    ship_s: float = 5.0  # packed -> handed to the carrier
    pickers: int = 4  # packages picked at the same time
    jitter: float = 0.2  # each duration varies by up to ± this fraction
    seed: int = 0


@dataclass
class WmsOrder:
    code: str
    app_key: str
    wms_order_no: str
    body: dict[str, Any]
    priority: int
    received_at: float
    status: str = "received"
    times: dict[str, float] = field(default_factory=dict)  # accepted, picking, packed, shipped, frozen, cancelled
    freezes: list[dict[str, Any]] = field(default_factory=list)  # {instruction_id, kind, received_at, result}
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # (call, instruction id) -> the reply given
    waybill: dict[str, Any] | None = None
    pick_rank: int | None = None  # the how-many-th package the floor started picking
    run: int = 0  # bumped when a freeze or unfreeze invalidates the picker's current work
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # callbacks of one order go out in order
    events: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "order_code": self.code, "wms_order_no": self.wms_order_no, "status": self.status, "priority": self.priority,
            "received_at": self.received_at, **{f"{k}_at": v for k, v in self.times.items()}, "freezes": self.freezes,
            "carrier": (self.waybill or {}).get("carrier") or self.body.get("carrier"), "waybill_no": (self.waybill or {}).get("waybill_no"),
            "recipient": self.body.get("recipient"), "remark": self.body.get("remark"), "pick_rank": self.pick_rank,
            "lines": self.body.get("lines"), "warehouse": self.body.get("warehouse"),
        }


class OrderFlow:
    def __init__(
        self, apps: Mapping[str, str], sign: Callable[[str, str, bytes], str], *, clock: Callable[[], float] = time.time,
        on_shipped: Callable[[WmsOrder], None] | None = None,
    ) -> None:
        self.apps = apps
        self._sign = sign
        self.clock = clock
        self.on_shipped = on_shipped
        self.timing = WmsTiming()
        self.callback_url: str | None = None
        self.orders: dict[str, WmsOrder] = {}
        self.pre_frozen: dict[str, dict[str, Any]] = {}  # freezes for codes not received yet: applied on arrival
        self.callbacks: list[dict[str, Any]] = []
        self._queue: list[tuple[int, int, str]] = []
        self._seq = itertools.count()
        self._ranks = itertools.count(1)
        self._numbers = itertools.count(1)
        self._rng = random.Random(0)
        self._work = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self.events_open = asyncio.Event()
        self.events_open.set()
        self._pickers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self._sending = asyncio.Semaphore(8)  # a WMS's callback queue: a few at a time, not one per package at once

    # -- configuration -------------------------------------------------------------------------

    def configure(self, values: Mapping[str, Any]) -> dict[str, Any]:
        for name in ("accept_s", "pack_s", "ship_s", "jitter"):
            if name in values:
                setattr(self.timing, name, max(0.0, float(values[name])))
        if "pickers" in values:
            self.timing.pickers = max(1, int(values["pickers"]))
        if "seed" in values:
            self.timing.seed = int(values["seed"])
            self._rng = random.Random(self.timing.seed)
        if "callback_url" in values:
            self.callback_url = values["callback_url"] or None
        if "hold_events" in values:
            (self.events_open.clear if values["hold_events"] else self.events_open.set)()
        if self._pickers:
            self._start_pickers()
        self._work.set()
        return self.config()

    def config(self) -> dict[str, Any]:
        return {**asdict(self.timing), "callback_url": self.callback_url, "hold_events": not self.events_open.is_set(),
                "paused": not self._running.is_set()}

    def orders_view(self) -> list[dict[str, Any]]:
        return [o.view() for o in self.orders.values()]

    def pause(self, paused: bool) -> None:
        """Pickers finish what they hold but take nothing new while paused (so a test can queue orders first)."""
        (self._running.clear if paused else self._running.set)()
        self._work.set()

    def _duration(self, seconds: float) -> float:
        j = self.timing.jitter
        return max(0.0, seconds * (1 + self._rng.uniform(-j, j))) if j else seconds

    # -- the API's calls -----------------------------------------------------------------------

    def receive(self, app_key: str, body: dict[str, Any]) -> dict[str, Any]:
        code = str(body["order_code"])
        order = self.orders.get(code)
        if order is None:
            order = WmsOrder(code, app_key, f"W{next(self._numbers):010d}", body, int(body.get("priority") or 0), self.clock())
            self.orders[code] = order
            early = self.pre_frozen.pop(code, None)
            if early is not None:  # a freeze (and maybe the cancel) overtook the order: it is never worked on
                order.status = "cancelled" if early["result"] == "cancelled" else "frozen"
                order.times[order.status] = self.clock()
                order.freezes.append({**early, "result": "frozen"})
            else:
                self._spawn(self._accept(order))
        return {"order_code": code, "wms_order_no": order.wms_order_no, "status": order.status}

    def freeze(self, code: str, body: dict[str, Any]) -> dict[str, Any]:
        iid = str(body.get("instruction_id", ""))
        order = self.orders.get(code)
        entry = {"instruction_id": iid, "kind": body.get("kind"), "received_at": self.clock()}
        if order is None:
            self.pre_frozen.setdefault(code, {**entry, "result": "frozen"})
            return {"order_code": code, "result": "frozen", "status": "not_received"}
        if ("freeze", iid) in order.answers:
            return order.answers[("freeze", iid)]
        if order.status in WORKING or order.status in ("frozen", "cancelled"):
            result = "frozen"
            if order.status in WORKING:
                order.status = "frozen"
                order.times["frozen"] = entry["received_at"]
                self._stop(order)
        else:
            result = "refused"
        order.freezes.append({**entry, "result": result})
        answer = {"order_code": code, "wms_order_no": order.wms_order_no, "result": result, "status": order.status}
        order.answers[("freeze", iid)] = answer
        self.emit(order, result, instruction_id=iid)
        return answer

    def unfreeze(self, code: str, body: dict[str, Any]) -> dict[str, Any]:
        order = self._known(code)
        if body.get("remark") is not None:
            order.body["remark"] = body["remark"]
        if order.status == "frozen":
            self._requeue(order)
            self.emit(order, "unfrozen", instruction_id=str(body.get("instruction_id", "")))
        return {"order_code": code, "result": "unfrozen" if order.status == "accepted" else "unchanged", "status": order.status}

    def cancel(self, code: str, body: dict[str, Any]) -> dict[str, Any]:
        if code not in self.orders and code in self.pre_frozen:  # frozen before it arrived: it never will be worked on
            self.pre_frozen[code]["result"] = "cancelled"
            return {"order_code": code, "result": "cancelled", "status": "not_received"}
        order = self._known(code)
        if order.status in DONE:
            return {"order_code": code, "result": "refused", "status": order.status}
        if order.status != "cancelled":
            order.status = "cancelled"
            order.times["cancelled"] = self.clock()
            self._stop(order)
            self.emit(order, "cancelled", instruction_id=str(body.get("instruction_id", "")))
        return {"order_code": code, "result": "cancelled", "status": order.status}

    def change_address(self, code: str, body: dict[str, Any]) -> dict[str, Any]:
        order = self._known(code)
        if order.status in DONE:
            return {"order_code": code, "result": "refused", "status": order.status}
        order.body["recipient"] = body.get("recipient") or order.body.get("recipient")
        if order.waybill is not None:
            order.waybill = None  # the label carried the old address
        if body.get("unfreeze", True) and order.status == "frozen":
            self._requeue(order)
            self.emit(order, "unfrozen", instruction_id=str(body.get("instruction_id", "")))
        return {"order_code": code, "result": "updated", "status": order.status}

    def expedite(self, code: str, body: dict[str, Any]) -> dict[str, Any]:
        order = self._known(code)
        if order.status in DONE or order.status == "cancelled":
            return {"order_code": code, "result": "refused", "status": order.status}
        order.priority = max(order.priority, int(body.get("priority") or 100))
        if order.status == "accepted":
            heapq.heappush(self._queue, (-order.priority, next(self._seq), order.code))  # the old entry is skipped
            self._work.set()
        return {"order_code": code, "result": "expedited", "status": order.status}

    def _known(self, code: str) -> WmsOrder:
        order = self.orders.get(code)
        if order is None:
            raise KeyError(code)
        return order

    # -- the floor -------------------------------------------------------------------------------

    async def _accept(self, order: WmsOrder) -> None:
        await asyncio.sleep(self._duration(self.timing.accept_s))
        if order.status == "received":
            order.times["accepted"] = self.clock()
            self._requeue(order)
            self.emit(order, "accepted")

    def _requeue(self, order: WmsOrder) -> None:
        order.status = "accepted"
        order.run += 1
        heapq.heappush(self._queue, (-order.priority, next(self._seq), order.code))
        self._start_pickers()
        self._work.set()

    def _stop(self, order: WmsOrder) -> None:
        order.run += 1
        order.interrupt.set()

    def _start_pickers(self) -> None:
        self._pickers = [t for t in self._pickers if not t.done()]
        while len(self._pickers) < self.timing.pickers:
            self._pickers.append(asyncio.get_running_loop().create_task(self._picker(len(self._pickers)), name="sim-wms-picker"))

    def _next(self) -> WmsOrder | None:
        while self._queue:
            _, _, code = heapq.heappop(self._queue)
            order = self.orders[code]
            if order.status == "accepted":
                return order
        return None

    async def _picker(self, index: int) -> None:
        while index < self.timing.pickers:
            await self._running.wait()
            order = self._next()
            if order is None:
                self._work.clear()
                await self._work.wait()
                continue
            await self._pick(order)

    async def _pick(self, order: WmsOrder) -> None:
        run = order.run
        order.status = "picking"
        order.times["picking"] = self.clock()
        order.pick_rank = order.pick_rank or next(self._ranks)
        order.interrupt = asyncio.Event()
        self.emit(order, "picking")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(order.interrupt.wait(), self._duration(self.timing.pack_s))
        if order.run != run or order.status != "picking":
            return  # frozen or cancelled while picking: the picker moves on
        if order.waybill is None and not await self._get_waybill(order, run):
            return
        if order.run != run or order.status != "picking":
            return  # frozen while the label was being printed: not packed
        order.status = "packed"
        order.times["packed"] = self.clock()
        self.emit(order, "packed", carrier=order.waybill["carrier"], waybill_no=order.waybill["waybill_no"])  # type: ignore[index]
        self._spawn(self._ship(order))

    async def _get_waybill(self, order: WmsOrder, run: int) -> bool:
        """The label, from OrderHub. A 409 means an instruction for the order is on its way: the box
        waits at the packing bench (a freeze will come, or the label once it is settled)."""
        body = {"weight_g": int(order.body.get("weight_g") or 0), "carrier": order.body.get("carrier")}
        failures = held = 0
        while order.run == run:
            status, reply = await self.call(order, "waybill_request", body)
            data = reply.get("data") if isinstance(reply, dict) and reply.get("code") == 0 else None
            if isinstance(data, dict) and data.get("waybill_no"):
                order.waybill = {"carrier": data.get("carrier"), "waybill_no": data["waybill_no"], "cp_code": data.get("cp_code")}
                return True
            if status == 409 and held < HOLD_AT_BENCH_TRIES:
                held += 1
                await asyncio.sleep(HOLD_AT_BENCH_S)
                continue
            if failures >= len(CALLBACK_RETRIES) or (status is not None and 400 <= status < 500 and status != 409):
                break
            await asyncio.sleep(CALLBACK_RETRIES[failures])
            failures += 1
        if order.run == run and order.status == "picking":
            log.warning("sim wms: no waybill for %s; back in the queue", order.code)
            self._requeue(order)
        return False

    async def _ship(self, order: WmsOrder) -> None:
        await asyncio.sleep(self._duration(self.timing.ship_s))
        if order.status != "packed":
            return
        order.status = "shipped"
        order.times["shipped"] = self.clock()
        if self.on_shipped is not None:
            self.on_shipped(order)
        waybill = order.waybill or {}
        self.emit(order, "shipped", carrier=waybill.get("carrier"), waybill_no=waybill.get("waybill_no"),
                  package={"weight_g": int(order.body.get("weight_g") or 0), "lines": order.body.get("lines") or []})

    # -- callbacks -------------------------------------------------------------------------------

    def emit(self, order: WmsOrder | None, event: str, **data: Any) -> None:
        """Report `event` to OrderHub in the background, after the order's earlier events."""
        self._spawn(self.call(order, event, data, wait_open=True))

    async def call(self, order: WmsOrder | None, event: str, data: Mapping[str, Any], *, wait_open: bool = False) -> tuple[int | None, Any]:
        """POST one signed callback (retried on transport errors and 5xx); (HTTP status, OrderHub's JSON reply), (None, None) if it never got through."""
        if wait_open:  # held events wait here, not inside the lock: a waybill request must not queue behind them
            await self.events_open.wait()
        lock = order.lock if order is not None else contextlib.nullcontext()
        async with lock:  # type: ignore[attr-defined]
            if not self.callback_url:
                return None, None
            body = {"event": event, "at": datetime.fromtimestamp(self.clock(), UTC).isoformat(), **data}
            if order is not None:
                order.events += 1
                body = {"event_id": f"{order.code}:{order.events}", "order_code": order.code, "wms_order_no": order.wms_order_no,
                        "status": order.status, **body}
            else:
                body = {"event_id": f"{event}:{next(self._numbers)}", **body}
            raw = orjson.dumps(body)
            app_key = order.app_key if order is not None else next(iter(self.apps))
            for delay in (*CALLBACK_RETRIES, None):
                timestamp = str(int(self.clock()))
                headers = {"Content-Type": "application/json", "X-WMS-App-Key": app_key, "X-WMS-Timestamp": timestamp,
                           "X-WMS-Signature": self._sign(self.apps[app_key], timestamp, raw)}
                record = {"event": event, "order_code": order.code if order else None, "body": raw.decode(), "headers": headers,
                          "sent_at": self.clock(), "status_code": None}
                self.callbacks.append(record)
                try:
                    async with self._sending:
                        response = await self._client().post(self.callback_url, content=raw, headers=headers)
                    record["status_code"] = response.status_code
                    if response.status_code < 500:
                        return response.status_code, orjson.loads(response.content) if response.content else None
                except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
                    record["error"] = f"{type(exc).__name__}: {exc}"
                if delay is None:
                    log.warning("sim wms: callback %s for %s given up", event, body.get("order_code"))
                    return None, None
                await asyncio.sleep(delay)
        return None, None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0))
        return self._http

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in [*self._pickers, *self._tasks]:
            task.cancel()
        for task in [*self._pickers, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pickers.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
