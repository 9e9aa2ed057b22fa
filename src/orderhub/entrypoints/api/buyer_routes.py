"""API routes of the buyer's data: the public tracking answer (the console's /track page asks it) and
the audited plaintext reveal for roles with `pii:read`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from orderhub.bootstrap import Runtime
from orderhub.domain.errors import ErrorCode, ThrottledError
from orderhub.entrypoints.api import schemas
from orderhub.entrypoints.api.auth import CurrentActor, client_ip
from orderhub.entrypoints.api.rate_limit import RateLimiter
from orderhub.entrypoints.api.responses import JsonResponse
from orderhub.services import buyer_access


class TrackEvent(BaseModel):
    at: str
    status: str
    status_label: str
    description: str | None
    location: str | None


class TrackParcel(BaseModel):
    carrier_code: str | None
    carrier_name: str
    waybill_no: str
    logistics_status: str
    logistics_label: str
    events: list[TrackEvent] = Field(description="newest first")


class BuyerTrack(BaseModel):
    order_no: str
    status: str
    status_label: str = Field(description="e.g. 已发货")
    updated_at: str
    parcels: list[TrackParcel]


class BuyerAddress(BaseModel):
    province: str | None
    city: str | None
    district: str | None
    detail: str | None


class Buyer(BaseModel):
    order_id: str
    name: str | None
    phone: str | None
    address: BuyerAddress


def build_buyer_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    limiter = RateLimiter(runtime.settings.auth.track_per_minute, 60, storage=runtime.settings.auth.track_limit_storage)

    def rate_limited(request: Request) -> None:
        # a dependency: counted before the query is validated, so malformed guesses count too
        wait = limiter.hit(client_ip(request) or "?")
        if wait is not None:
            raise ThrottledError(ErrorCode.RATE_LIMITED, "查询太频繁，请稍后再试 too many requests: try again later", int(wait) + 1)

    @router.get(
        "/track", tags=["tracking"], response_model=BuyerTrack, summary="买家查询: an order's status and track, for its buyer (public)",
        responses={404: {"model": schemas.Error}, 422: {"model": schemas.Error}, 429: {"model": schemas.Error}},
        description=(
            "The platform's order number and the last 4 digits of the buyer's phone. No name, phone, address or amount is shown. "
            "An unknown order and wrong digits get the same 404 `not_found`. "
            f"{runtime.settings.auth.track_per_minute} requests a minute per client address, then 429 `rate_limited` with Retry-After."
        ),
        dependencies=[Depends(rate_limited)],
    )
    async def track(
        order_no: Annotated[str, Query(min_length=1, max_length=64, description="the platform's order number")],
        phone_last4: Annotated[str, Query(pattern=r"^\d{4}$", description="last 4 digits of the phone the order ships to")],
    ) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(buyer_access.track_for_buyer, runtime.engine, runtime.vault, order_no, phone_last4))

    @router.get(
        "/orders/{order_id}/buyer", tags=["orders"], response_model=Buyer, summary="The buyer's plaintext name, phone and address (pii:read)",
        responses={403: {"model": schemas.Error}, 404: {"model": schemas.Error}},
        description="For labels and re-shipping. Every call is written to the audit log (`pii.reveal`) and the order's event log with who "
                    "asked, before the answer is sent. Fields the platform cannot decrypt now are null.",
    )
    async def buyer(order_id: str, actor: CurrentActor) -> JsonResponse:
        result: dict[str, Any] = await buyer_access.reveal_buyer(runtime.engine, runtime.pii, order_id, actor)
        return JsonResponse(result, headers={"Cache-Control": "no-store"})

    return router
