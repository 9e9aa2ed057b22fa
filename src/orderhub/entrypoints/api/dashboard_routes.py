"""API routes behind the console's 工作台 dashboard and its 渠道与店铺 page: the day's figures, the
shops with their credentials masked, and a connection test that makes one real signed call."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from orderhub.adapters.db import dashboard_queries
from orderhub.adapters.db.queries import SHANGHAI
from orderhub.bootstrap import Runtime
from orderhub.domain.errors import ErrorCode, FetchError, OrderHubError
from orderhub.entrypoints.api import schemas
from orderhub.entrypoints.api.responses import JsonResponse

ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": schemas.Error}, 422: {"model": schemas.Error}}
# The console polls the dashboard every few seconds from every open tab; one computation per
# window serves them all (the figures are per day, a few seconds stale is fine).
CACHE_S = 5.0
DEFERRED_CACHE_S = 60.0  # while `defer_analytics` is on (the peak): one computation a minute
TEST_WINDOW = timedelta(minutes=1)


def mask_key(key: str) -> str:
    """`ab12****yz`: enough to tell two keys apart, not enough to use one."""
    if not key:
        return ""
    return f"{key[:4]}****{key[-2:]}" if len(key) > 8 else "****"


def build_dashboard_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERRORS)
    cached: list[tuple[date, float, dict[str, Any]]] = []  # one day at a time is what the console asks for

    def summary(day: date) -> dict[str, Any]:
        with runtime.engine.connect().execution_options(readonly=True) as conn:
            return dashboard_queries.day_summary(conn, day, datetime.now(UTC), timedelta(hours=runtime.settings.ship_sla_hours))

    @router.get("/dashboard", tags=["dashboard"], summary="工作台: one day's orders by channel and hour, funnel, exceptions, on-time shipping",
                description="The day is a calendar day in Asia/Shanghai (default today); an order belongs to the day it was paid. "
                            "`heatmap` cells are `[channel index, hour, orders]`; `funnel` counts every order in each stage it reached; "
                            "`on_time_ship_rate` = shipped within `ship_sla_hours` of payment / (shipped + overdue), null while none is due. "
                            f"Cached for {CACHE_S:g} s ({DEFERRED_CACHE_S:g} s while the `defer_analytics` switch is on).")
    async def dashboard(day: Annotated[date | None, Query(description="YYYY-MM-DD, default today")] = None) -> JsonResponse:
        day = day or datetime.now(SHANGHAI).date()
        ttl = DEFERRED_CACHE_S if await asyncio.to_thread(runtime.switches.is_on, "defer_analytics") else CACHE_S
        if not cached or cached[0][0] != day or time.monotonic() - cached[0][1] > ttl:
            cached[:] = [(day, time.monotonic(), await asyncio.to_thread(summary, day))]
        return JsonResponse(cached[0][2])

    @router.get("/shops", tags=["channels"], summary="Configured shops; credentials masked")
    async def shops() -> JsonResponse:
        items = [{
            "channel": s.channel, "shop_id": s.shop_id, "name": s.name, "transport": runtime.channels.transport(s.channel),
            "app_key_masked": mask_key(s.app_key), "has_secret": bool(s.app_secret), "api_base_url": s.api_base_url or None,
        } for s in runtime.shops.all()]
        return JsonResponse({"items": items})

    @router.post("/shops/{channel}/{shop_id}/test", tags=["channels"], summary="Test a shop's connection with one real signed API call",
                 description="Asks the platform for the shop's orders of the last minute (a read with no effect): it exercises "
                             "the address, the app key and secret and the access token. `ok` false carries the platform's answer.")
    async def test_shop(channel: str, shop_id: str) -> JsonResponse:
        shop = runtime.shops.by_shop(channel, shop_id)
        if shop is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"shop {channel}/{shop_id} is not configured", "shop_id")
        source = runtime.channels.sources.get(channel)
        if source is None:
            return JsonResponse({"ok": False, "latency_ms": None, "error_code": "no_order_api",
                                 "message": f"channel {channel} has no order API to call (orders arrive by file)"})
        end = datetime.now(UTC)
        started = time.perf_counter()
        try:
            await source.pull_window(runtime.http, shop, end - TEST_WINDOW, end)
        except FetchError as exc:
            return JsonResponse({"ok": False, "latency_ms": round((time.perf_counter() - started) * 1000), "error_code": exc.code.value,
                                 "message": exc.message})
        return JsonResponse({"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000)})

    return router
