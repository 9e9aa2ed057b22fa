"""API routes of operations at the peak: the degradation switches and the worker fleet."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from orderhub.adapters.db import leases, queries
from orderhub.bootstrap import Runtime
from orderhub.entrypoints.api import schemas
from orderhub.entrypoints.api.auth import CurrentActor
from orderhub.entrypoints.api.responses import JsonResponse

ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": schemas.Error}, 422: {"model": schemas.Error}}


class SwitchChange(BaseModel):
    on: bool
    mode: Literal["auto", "manual"] = Field("manual", description="manual: the lag watcher leaves it as set; auto: hand it back to the watcher")
    reason: str | None = Field(None, max_length=500)


def build_operations_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERRORS, tags=["operations"])

    @router.get("/switches", summary="Degradation switches: non-core work deferred at the peak",
                description="Each switch with what it defers, on/off, `mode` (auto: the lag watcher flips it past "
                            "`degrade.lag_threshold` unprocessed messages; manual: held by ops), who set it and why.")
    async def list_switches() -> JsonResponse:
        items = await asyncio.to_thread(runtime.switches.list)
        return JsonResponse({"items": [{**s, "set_at": queries.local(s["set_at"])} for s in items],
                             "lag_threshold": runtime.settings.degrade.lag_threshold})

    @router.put("/switches/{name}", summary="Flip a degradation switch by hand (audited)")
    async def set_switch(name: str, body: SwitchChange, actor: CurrentActor) -> JsonResponse:
        item = await asyncio.to_thread(runtime.switches.set, name, body.on, mode=body.mode, actor=actor, reason=body.reason)
        return JsonResponse({**item, "set_at": queries.local(item["set_at"])})

    @router.get("/fleet", summary="Scaled mode: live workers, who holds which partition, and the lag",
                description="Workers heartbeat every few seconds; `partitions` maps each broker partition to its holder. "
                            "`lag` is unprocessed messages (inbox backlog, plus the broker's in scaled mode).")
    async def fleet() -> JsonResponse:
        now = datetime.now(UTC)
        ttl = timedelta(seconds=runtime.settings.broker.lease_s)
        workers = await asyncio.to_thread(leases.live_workers, runtime.engine, now, ttl)
        holders = await asyncio.to_thread(leases.holders, runtime.engine)
        live = [r for r in holders if r["owner"] and r["lease_until"] and r["lease_until"] > now]
        return JsonResponse({
            "mode": "scaled" if runtime.transport is not None else "embedded",
            "lag": await runtime.lag(),
            "workers": [{**w, "started_at": queries.local(w["started_at"]), "seen_at": queries.local(w["seen_at"])} for w in workers],
            "partitions": {r["name"].split(":", 1)[1]: r["owner"] for r in live if r["name"].startswith("partition:")},
            "singleton": next((r["owner"] for r in live if r["name"] == "duty:singleton"), None),
        })

    return router
