"""The simulator's HTTP app (platform APIs under /douyin, /youzan, /jd …, the WMS under /wms; control under /_sim) and runners."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from orderhub.simulator import carriers, notify, wms
from orderhub.simulator import cainiao
from orderhub.simulator.clock import SimClock
from orderhub.simulator.faults import MODES
from orderhub.simulator.pusher import WEBHOOK_PATHS
from orderhub.simulator.scenarios import CHANNELS, PUSH_CHANNELS
from orderhub.simulator.state import PLATFORMS, Simulator

_PREPARE_CHUNK = 500
FAULT_TARGETS = (*PLATFORMS, "wms")  # what POST /_sim/faults can take down


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise HTTPException(400, "body must be JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "body must be a JSON object")
    return data


def _channels(value: Any, default: tuple[str, ...]) -> list[str]:
    channels = list(value or default)
    unknown = [ch for ch in channels if ch not in CHANNELS]
    if unknown:
        raise HTTPException(400, f"unknown channels {unknown}; known: {list(CHANNELS)}")
    return channels


def create_app(sim: Simulator) -> FastAPI:
    """The simulator app: every platform endpoint of docs/wire-protocols.md plus /_sim controls."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the carriers push every registered parcel's new scans to OrderHub, as Kuaidi100 and SF do
        tracks = asyncio.create_task(sim.carriers.push_forever(sim.pusher.client(), 5.0, sim.target_url)) if sim.target_url else None
        yield
        if tracks is not None:
            tracks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tracks
        if sim.feed is not None:
            await sim.feed.stop()
        await sim.pusher.aclose()
        await sim.wms.aclose()  # the WMS floor's pickers and callbacks

    app = FastAPI(title="OrderHub platform simulator", lifespan=lifespan, docs_url="/_sim/docs", openapi_url="/_sim/openapi.json")
    app.state.sim = sim
    for channel, module in PLATFORMS.items():
        app.include_router(module.make_router(sim), prefix=f"/{channel}")
    app.include_router(wms.make_router(sim.wms), prefix="/wms")
    app.include_router(wms.make_control_router(sim.wms), prefix="/_sim/wms")
    app.state.cainiao = cainiao.CainiaoState()  # 菜鸟 electronic waybills (simulator/cainiao.py)
    app.include_router(cainiao.make_router(app.state.cainiao), prefix="/cainiao")
    app.include_router(cainiao.make_control_router(app.state.cainiao), prefix="/_sim/cainiao")
    app.include_router(notify.make_router(sim.notify), prefix="/notify")
    app.include_router(notify.make_control_router(sim.notify), prefix="/_sim/notify")
    app.include_router(carriers.make_router(sim.carriers))
    app.include_router(carriers.make_control_router(sim.carriers, sim.pusher.client), prefix="/_sim/carriers")

    @app.middleware("http")
    async def injected_faults(request: Request, call_next: Any) -> Response:
        """An outage switched on by POST /_sim/faults answers every API call of that platform."""
        channel = request.url.path.split("/", 2)[1] if request.url.path.count("/") >= 1 else ""
        fault = sim.faults.active(channel) if channel in FAULT_TARGETS else None
        if fault == "down":
            return Response(b"service unavailable", status_code=503)
        if fault == "rate_limit":
            return Response(b"too many requests", status_code=429, headers={"Retry-After": "1"})
        return await call_next(request)

    @app.post("/_sim/faults")
    async def set_fault(request: Request) -> Response:
        """{"channel", "mode": down | rate_limit | drop, "seconds"}; {"channel", "mode": "clear"} ends it."""
        req = await _body(request)
        channel, mode = str(req.get("channel", "")), str(req.get("mode", ""))
        if channel not in FAULT_TARGETS:
            raise HTTPException(400, f"unknown channel {channel!r}; known: {list(FAULT_TARGETS)}")
        if mode == "clear":
            sim.faults.clear(channel)
        elif mode in MODES:
            sim.faults.set(channel, mode, float(req.get("seconds", 30)))
        else:
            raise HTTPException(400, f"unknown mode {mode!r}; known: {[*MODES, 'clear']}")
        return _json(sim.faults.as_dict())

    @app.post("/_sim/tokens/{channel}/revoke")
    async def revoke_tokens(channel: str) -> Response:
        """Expire every access token of a platform, as if they all ran out now."""
        if channel not in PLATFORMS:
            raise HTTPException(404, f"unknown channel {channel!r}")
        return _json({"revoked": sim.revoke_tokens(channel)})

    @app.get("/_sim/stock")
    async def channel_stock(channel: str | None = None) -> Response:
        """What each shop's listings show, as the platforms' stock-update APIs last set it."""
        return _json({"items": sim.channel_stock_rows(channel), "updates": len(sim.stock_updates)})

    @app.post("/_sim/stock")
    async def set_channel_stock(request: Request) -> Response:
        """{"channel", "shop_id"?, "sku_id", "quantity"}: the listing shows this (e.g. after sales on the platform)."""
        req = await _body(request)
        channel = str(req.get("channel", ""))
        if channel not in PLATFORMS:
            raise HTTPException(400, f"unknown channel {channel!r}; known: {list(PLATFORMS)}")
        sku_id, quantity = str(req.get("sku_id", "")), req.get("quantity")
        if sim.listing(channel, sku_id) is None or isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise HTTPException(400, "needs a catalogue sku_id of the channel and an integer quantity >= 0")
        sim.set_channel_stock(channel, str(req.get("shop_id") or sim.shop(channel)["shop_id"]), sku_id, quantity, via="_sim")
        return _json({"items": sim.channel_stock_rows(channel)})

    @app.get("/_sim/shipments")
    async def shipments(channel: str | None = None) -> Response:
        """Every ship write-back the platforms accepted, in order (simulator/shipments.py)."""
        return _json({"items": [s for s in list(sim.shipments) if channel is None or s["channel"] == channel]})

    @app.get("/_sim/stats")
    async def stats() -> Response:
        return _json(sim.stats())

    @app.get("/_sim/acks")
    async def acks() -> Response:
        """NDJSON of recent acknowledged pushes: {channel, original_id, kind, acked_at (unix s)}."""
        lines = (orjson.dumps({"channel": c, "original_id": o, "kind": k, "acked_at": t}) for c, o, k, t in list(sim.pusher.acks))
        return Response(b"\n".join(lines), media_type="application/x-ndjson")

    @app.post("/_sim/generate")
    async def generate(request: Request) -> Response:
        req = await _body(request)
        count = int(req.get("count", 10))
        channels = _channels(req.get("channels"), CHANNELS)
        result = sim.generate(count, channels, mix=req.get("mix"), seed=req.get("seed"))
        delivery = None
        if req.get("deliver"):
            target = req.get("target") or sim.target_url
            if not target:
                raise HTTPException(400, "deliver needs a target (body 'target' or the simulator's target_url)")
            delivery = await sim.pusher.deliver_all(result.pushes, target)
        created = {ch: 0 for ch in channels}
        for o in result.orders:
            created[o.channel] += 1
        reply: dict[str, Any] = {"created": created, "push_count": len(result.pushes), "delivery": delivery}
        if req.get("details", count <= 1000):  # 100k orders' details would be a very large reply
            reply["orders"] = [{"channel": o.channel, "order_id": o.original_id, "status": o.status,
                                "update_time": o.update_time, "scenarios": o.scenarios} for o in result.orders]
            reply["pushes"] = [{**p.as_request(), "order_id": p.order_id, "kind": p.kind, "send_at": p.send_at}
                               for p in result.pushes]
        return _json(reply)

    @app.post("/_sim/prepare-pushes")
    async def prepare_pushes(request: Request) -> StreamingResponse:
        req = await _body(request)
        count = int(req.get("count", 1000))
        rng = random.Random(int(req.get("seed", 0)))
        channels = _channels(req.get("channels"), tuple(ch for ch in PUSH_CHANNELS if ch in WEBHOOK_PATHS))

        async def lines() -> AsyncIterator[bytes]:
            left = count
            while left > 0:
                n = min(_PREPARE_CHUNK, left)
                left -= n
                result = sim.generate(n, channels, mix=req.get("mix"), rng=rng)
                # Stream messages are not the caller's to send: they queue on the platform's
                # stream (at once, or on POST /_sim/streams/release with "hold_streams"), for
                # OrderHub's connection to take; their line says so.
                for p in result.pushes:
                    if p.stream_key:
                        if req.get("hold_streams"):
                            sim.held_stream_pushes.append(p)
                        else:
                            await sim.pusher.deliver(p, "")
                yield b"".join(
                    orjson.dumps({"channel": p.channel, "original_id": p.order_id, "stream": True} if p.stream_key
                                 else {**p.as_request(), "original_id": p.order_id}) + b"\n"
                    for p in result.pushes)
                await asyncio.sleep(0)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.post("/_sim/streams/release")
    async def release_streams() -> Response:
        """Publish the stream messages prepare-pushes held back (the benchmark starts its clock)."""
        held, sim.held_stream_pushes = sim.held_stream_pushes, []
        for push in held:
            await sim.pusher.deliver(push, "")
        return _json({"released": len(held)})

    @app.post("/_sim/feed")
    async def start_feed(request: Request) -> Response:
        req = await _body(request)
        target = req.get("target") or sim.target_url
        feed = sim.start_feed(float(req.get("rate", 1.0)), target)
        return _json(feed.status())

    @app.delete("/_sim/feed")
    async def stop_feed() -> Response:
        if sim.feed is not None:
            await sim.feed.stop()
        return _json(sim.feed.status() if sim.feed is not None else {"running": False})

    @app.post("/_sim/feed/pause")
    async def pause_feed() -> Response:
        if sim.feed is None:
            raise HTTPException(404, "no feed")
        sim.feed.pause()
        return _json(sim.feed.status())

    @app.post("/_sim/feed/resume")
    async def resume_feed() -> Response:
        if sim.feed is None:
            raise HTTPException(404, "no feed")
        sim.feed.resume()
        return _json(sim.feed.status())

    @app.get("/_sim/scenarios/{channel}/{order_id}")
    async def scenarios(channel: str, order_id: str) -> Response:
        info = sim.scenarios_of(channel, order_id)
        if info is None:
            raise HTTPException(404, f"no {channel} order {order_id}")
        return _json(info)

    @app.get("/_sim/orders/{channel}/{order_id}")
    async def order_payload(channel: str, order_id: str) -> Response:
        order = sim.get(channel, order_id)
        if order is None:
            raise HTTPException(404, f"no {channel} order {order_id}")
        return Response(sim.payload(order), media_type="application/json")

    return app


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process (serve --demo)."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def _config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          loop="auto", http="auto", lifespan="on")


@dataclass
class BackgroundSimulator:
    """Handle on a simulator served inside another process's event loop."""

    sim: Simulator
    server: uvicorn.Server
    task: asyncio.Task[None]
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self.sim.feed is not None:
            await self.sim.feed.stop()
        self.server.should_exit = True
        await self.task


async def serve_in_background(
    host: str, port: int, sim: Simulator, target_url: str | None = None, rate: float = 0.0
) -> BackgroundSimulator:
    """Serve `sim` on host:port as a task of the running loop (port 0 = any free port).

    Returns once the server accepts connections; starts the live feed when rate > 0.
    """
    if target_url:
        sim.target_url = target_url
    server = _QuietServer(_config(create_app(sim), host, port))
    task = asyncio.get_running_loop().create_task(server.serve(), name="orderhub-simulator")
    while not server.started:
        if task.done():
            task.result()  # raises the startup error (port in use ...)
            raise RuntimeError("simulator server stopped during startup")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    if rate > 0:
        sim.start_feed(rate, target_url)
    return BackgroundSimulator(sim, server, task, host, bound)


async def run(host: str = "127.0.0.1", port: int = 9100, target_url: str | None = None, rate: float = 0.0,
              seed: int = 0, speed: float = 1.0, sim: Simulator | None = None) -> None:
    """Serve the simulator until interrupted (the coroutine behind `orderhub simulate`).

    Starts the live feed when rate > 0; `speed` > 1 runs the simulated clock faster than real time.
    """
    sim = sim or Simulator(seed=seed, target_url=target_url, clock=SimClock(speed=speed))
    sim.target_url = target_url or sim.target_url
    server = uvicorn.Server(_config(create_app(sim), host, port))
    if rate > 0:
        async def start_feed_when_up() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.05)
            if server.started:
                sim.start_feed(rate, target_url)

        asyncio.get_running_loop().create_task(start_feed_when_up())
    await server.serve()


def run_blocking(host: str = "127.0.0.1", port: int = 9100, target_url: str | None = None, rate: float = 0.0,
                 seed: int = 0, speed: float = 1.0) -> None:
    """`run` on a fresh event loop (uvloop when installed)."""
    main = run(host, port, target_url, rate, seed, speed)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
