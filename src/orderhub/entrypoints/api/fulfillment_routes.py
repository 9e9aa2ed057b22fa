"""API routes of fulfillment: the WMS's signed callbacks in; CS interception (拦截) and the interception queue.

The WMS webhook is two path segments below /webhooks (`/webhooks/wms/{name}`), so the platforms'
one-segment `/webhooks/{channel}` can never match it: the routers may be included in any order.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.entrypoints.api import schemas
from orderhub.entrypoints.api.auth import acting, pii_view
from orderhub.entrypoints.api.responses import JsonResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Error}, 404: {"model": schemas.Error}, 409: {"model": schemas.Error}, 422: {"model": schemas.Error},
}
_WEBHOOK_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Error}, 401: {"model": schemas.Error}, 404: {"model": schemas.Error}, 409: {"model": schemas.Error},
    503: {"model": schemas.Error},
}


class NewAddress(BaseModel):
    province: str = Field(min_length=1)
    city: str = Field(min_length=1)
    district: str | None = None
    detail: str = Field(min_length=1)


class InterceptRequest(BaseModel):
    kind: Literal["cancel", "address", "remark", "expedite"]
    reason: str = Field(min_length=1, description="why (on the instruction, in the warehouse alert and the event log)")
    actor: str = Field("api", max_length=48, description=schemas.ACTOR_NOTE)
    address: NewAddress | None = Field(None, description="kind=address: the new address (its street is sealed at rest: only the WMS, "
                                                          "SF and 菜鸟 requests carry it in plaintext; GET /interceptions shows the mask)")
    remark: str | None = Field(None, description="kind=remark: the new seller remark")


class ResolveRequest(BaseModel):
    decision: Literal["apply", "dismiss"]
    actor: str = Field("api", max_length=48, description=schemas.ACTOR_NOTE)
    reason: str | None = None


def build_fulfillment_router(runtime: Any) -> APIRouter:
    """Serves `runtime.fulfillment` (services.fulfillment.Fulfillment); 404 `unknown_channel` while none is configured."""
    router = APIRouter(prefix="/api/v1")

    def service() -> Any:
        found = getattr(runtime, "fulfillment", None)
        if found is None:
            raise OrderHubError(ErrorCode.UNKNOWN_CHANNEL, "no WMS is configured (settings fulfillment.wms)", "name")
        return found

    @router.post(
        "/webhooks/wms/{name}", tags=["fulfillment"], summary="Receive a WMS callback", responses=_WEBHOOK_ERRORS,
        description=(
            "The WMS named `name` in the settings reports a package: `accepted`, `picking`, `packed`, `shipped` {carrier, waybill_no}, "
            "`frozen` / `refused` (a freeze answer), `unfrozen`, `cancelled`, `stock` {items}; `waybill_request` is answered with the "
            "package's waybill. Signed like OrderHub's calls to the WMS (X-WMS-App-Key, X-WMS-Timestamp, X-WMS-Signature = hex "
            "HMAC-SHA256(app_secret, timestamp + \"\\n\" + body)); 401 `signature_missing` / `signature_invalid` otherwise. Replays change "
            "nothing. docs/wms.md."
        ),
    )
    async def wms_callback(name: str, request: Request) -> Response:
        reply, media_type = await service().accept_wms_event(name, request.headers, await request.body())
        return Response(reply, media_type=media_type)

    @router.post(
        "/orders/{order_id}/intercept", tags=["fulfillment"], summary="Cancel, re-address, re-mark or expedite an order at the warehouse",
        responses=ERRORS,
        description=(
            "Becomes a freeze instruction sent to the WMS at once (nothing there yet: applied here). The answer: "
            "`{id, action: local | freeze | too_late | supervisor | duplicate, outcome}`; follow it in GET /interceptions. A second, "
            "conflicting instruction within 15 s (cancel + expedite, cancel + address, two addresses) goes to a supervisor."
        ),
    )
    async def intercept(order_id: str, body: InterceptRequest, request: Request) -> JsonResponse:
        result = await asyncio.to_thread(
            service().intercept, order_id, body.kind, actor=acting(request, body.actor), reason=body.reason,
            address=body.address.model_dump() if body.address else None, remark=body.remark,
        )
        return JsonResponse(result, status_code=202 if result.get("action") == "freeze" else 200)

    @router.get("/interceptions", tags=["fulfillment"], summary="Freeze instructions, newest first", responses=ERRORS,
                description="Each instruction's `detail`: reason, a new address as its mask (never the sealed street or its hash), "
                            "the WMS's answers, and for one that came too late the carrier's answer per waybill (`carrier`).")
    async def interceptions(
        request: Request,
        outcome: Annotated[str | None, Query(description="pending | frozen | refused | supervisor | applied | too_late")] = None,
        order_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> JsonResponse:
        before = int(cursor) if cursor and cursor.isdigit() else None
        page = await asyncio.to_thread(service().list_interceptions, outcome=outcome, order_id=order_id, limit=limit, before_id=before)
        return JsonResponse({**page, "items": pii_view(request, page["items"])})  # masked already; redacted once more for callers without pii:read

    @router.post("/interceptions/{instruction_id}/resolve", tags=["fulfillment"], summary="A supervisor decides a conflicting instruction",
                 responses=ERRORS)
    async def resolve(instruction_id: int, body: ResolveRequest, request: Request) -> JsonResponse:
        result = await asyncio.to_thread(service().resolve, instruction_id, body.decision, actor=acting(request, body.actor), reason=body.reason)
        return JsonResponse(result)

    return router
