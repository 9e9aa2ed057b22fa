"""API routes of logistics tracking: carrier pushes in, the order's track and the exception tickets out.

The carrier webhooks are two path segments below /webhooks (`/webhooks/carriers/{carrier}`), so the
platforms' one-segment `/webhooks/{channel}` can never match them: the routers may be included in
any order.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from orderhub.entrypoints.api import schemas
from orderhub.entrypoints.api.auth import acting, pii_view
from orderhub.entrypoints.api.responses import JsonResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Error}, 404: {"model": schemas.Error}, 409: {"model": schemas.Error}, 422: {"model": schemas.Error},
}
_PUSH_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": schemas.Error}, 401: {"model": schemas.Error}, 404: {"model": schemas.Error}}


class TicketClose(BaseModel):
    reason: str = Field(description="why (kept on the ticket and in the order's event log)", min_length=1)
    actor: str = Field("api", description=schemas.ACTOR_NOTE, max_length=64)


def build_tracking_router(runtime: Any) -> APIRouter:
    """Needs `runtime.engine` and `runtime.tracker` (services.tracking.Tracker)."""
    router = APIRouter(prefix="/api/v1")
    tracker = runtime.tracker

    def read(fn: Any, *args: Any) -> Any:
        def run() -> Any:
            with runtime.engine.connect().execution_options(readonly=True) as conn:
                return fn(conn, *args)

        return asyncio.to_thread(run)

    async def push(carrier: str, request: Request) -> Response:
        body = await request.body()
        reply, media_type = await asyncio.to_thread(tracker.accept_push, carrier, body, request.headers, request.query_params)
        return Response(reply, media_type=media_type)

    @router.post(
        "/webhooks/carriers/kuaidi100", tags=["tracking"], responses=_PUSH_ERRORS, summary="Kuaidi100 (快递100) subscription push",
        description=(
            "Form fields `param` (JSON) and `sign` = UPPER(md5(param + salt)), checked over the exact `param` received. "
            "Reply `{\"result\":true,\"returnCode\":\"200\",\"message\":\"成功\"}` once stored. 401 `signature_missing` / "
            "`signature_invalid` otherwise (nothing is kept; Kuaidi100 retries). Replays are harmless."
        ),
    )
    async def kuaidi100_push(request: Request) -> Response:
        return await push("kuaidi100", request)

    @router.post(
        "/webhooks/carriers/sf", tags=["tracking"], responses=_PUSH_ERRORS, summary="SF (顺丰) route push",
        description=(
            "Body `{\"Body\":{\"WaybillRoute\":[…]}}`; `msgDigest` (query parameter or header) = base64(md5(body + checkword)) "
            "(SF's push signing is not documented publicly: docs/logistics.md). Reply `{\"return_code\":\"0000\",\"return_msg\":\"成功\"}`; "
            "401 `signature_missing` / `signature_invalid` otherwise."
        ),
    )
    async def sf_push(request: Request) -> Response:
        return await push("sf", request)

    @router.get("/orders/{order_id}/tracking", tags=["tracking"], responses=ERRORS, summary="The order's parcels and every carrier event, newest first")
    async def order_tracking(order_id: str) -> JsonResponse:
        return JsonResponse(await read(tracker.order_tracking, order_id))

    @router.get("/tickets", tags=["tracking"], responses=ERRORS, summary="Exception tickets (stalled parcels, carrier exceptions), newest first")
    async def list_tickets(
        request: Request,
        status: Annotated[str | None, Query(description="open | closed")] = None,
        kind: Annotated[str | None, Query(description="e.g. stall_in_transit_48h, stall_no_first_scan, scan_after_ship, parcel_lost")] = None,
        order_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        before_id: Annotated[int | None, Query(description="the next page: next_before_id of the previous one")] = None,
    ) -> JsonResponse:
        page = await asyncio.to_thread(tracker.list_tickets, status=status, kind=kind, order_id=order_id, limit=limit, before_id=before_id)
        return JsonResponse({**page, "items": pii_view(request, page["items"])})

    @router.post("/tickets/{ticket_id}/close", tags=["tracking"], responses=ERRORS, summary="Close a ticket by hand",
                 description="409 `conflict` if it is already closed. The order's warning tags go when no ticket of theirs is open.")
    async def close_ticket(ticket_id: int, body: TicketClose, request: Request) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(tracker.close_ticket, ticket_id, acting(request, body.actor), body.reason))

    return router
