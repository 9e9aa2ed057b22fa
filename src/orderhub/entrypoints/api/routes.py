"""API routes: webhooks in, orders/customers/quarantine out."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Body, File, Form, Query, Request, Response, UploadFile
from orderhub.entrypoints.api.responses import JsonResponse

from orderhub.adapters.db import audit_log_repo, queries
from orderhub.adapters.db.inbox import backlog
from orderhub.adapters.db.tables import sync_cursors
from orderhub.bootstrap import Runtime
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.entrypoints.api import schemas
from orderhub.entrypoints.api.auth import CurrentActor, pii_view, pii_view_orders
from orderhub.services import imports as import_service
from orderhub.services import quarantine as quarantine_service
from orderhub.services.channel_status import channel_statuses

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Error}, 404: {"model": schemas.Error}, 422: {"model": schemas.Error},
}


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    def read(fn: Any, *args: Any) -> Any:
        def run() -> Any:
            with runtime.engine.connect().execution_options(readonly=True) as conn:
                return fn(conn, *args)

        return asyncio.to_thread(run)

    @router.post(
        "/webhooks/{channel}",
        tags=["intake"],
        summary="Receive a platform push",
        description=(
            "Platform push endpoint (抖店 `douyin`, 有赞 `youzan`, 视频号小店 `wechat_channels` in WeChat's message "
            "encryption mode: `msg_signature`, `timestamp`, `nonce` in the query, AES-256-CBC body). The signature is verified over the raw body "
            "(401 + `signature_invalid`/`signature_missing`/`unknown_shop` otherwise; the body is not kept). "
            "The body is stored durably in the inbox before the platform's expected success reply is returned; "
            "processing is asynchronous. A signed body that is not the push envelope is kept in quarantine and "
            "still acknowledged, so the platform does not retry forever. 503 + Retry-After when the inbox cannot be written."
        ),
        responses={401: {"model": schemas.Error}, 404: {"model": schemas.Error}, 503: {"model": schemas.Error}},
    )
    async def webhook(channel: str, request: Request) -> Response:
        body = await request.body()
        reply, media_type = await runtime.intake.accept_push(channel, request.headers, body, request.query_params)
        return Response(reply, media_type=media_type)

    @router.get(
        "/webhooks/{channel}",
        tags=["intake"],
        summary="Answer a platform's callback URL check",
        description=(
            "WeChat (`wechat_channels`) checks a callback URL with a signed GET (`signature`/`msg_signature`, "
            "`timestamp`, `nonce`, `echostr`); the reply is the decrypted `echostr` as plain text. "
            "401 + `signature_invalid` when the signature does not match."
        ),
        responses={401: {"model": schemas.Error}, 404: {"model": schemas.Error}},
    )
    async def webhook_check(channel: str, request: Request) -> Response:
        return Response(runtime.intake.verify_url(channel, request.query_params), media_type="text/plain")

    @router.get("/orders", tags=["orders"], response_model=schemas.OrderPage, responses=ERRORS, summary="List and search orders")
    async def list_orders(
        request: Request,
        channel: str | None = None,
        shop_id: Annotated[str | None, Query(alias="shop")] = None,
        status: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        paid_from: datetime | None = None,
        paid_to: datetime | None = None,
        hold: Annotated[str | None, Query(description="hold code, e.g. risk_review")] = None,
        q: Annotated[str | None, Query(description="original order number, internal id or waybill number")] = None,
        waybill_no: Annotated[str | None, Query(description="a parcel's waybill number")] = None,
        phone_last4: Annotated[str | None, Query(description="last 4 digits of the buyer's phone", pattern=r"^\d{4}$")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: str | None = None,
    ) -> JsonResponse:
        for name, value in (("created_from", created_from), ("created_to", created_to), ("paid_from", paid_from), ("paid_to", paid_to)):
            if value is not None and value.tzinfo is None:
                raise OrderHubError(ErrorCode.INVALID_REQUEST, f"{name} needs a time zone, e.g. 2025-03-18T10:00:00+08:00", name)
        last4_hash = runtime.vault.last4_hash(phone_last4) if phone_last4 else None
        filters = queries.OrderFilters(channel, shop_id, status, created_from, created_to, paid_from, paid_to, hold, q, last4_hash,
                                       waybill_no=waybill_no)
        items, next_cursor = await read(queries.list_orders, filters, limit, cursor)
        return JsonResponse({"items": pii_view_orders(request, items), "next_cursor": next_cursor})

    @router.get("/orders/{order_id}", tags=["orders"], response_model=schemas.Order, responses=ERRORS, summary="One order (DESIGN.md §3 shape)")
    async def get_order(order_id: str, request: Request) -> JsonResponse:
        order = await read(queries.get_order, order_id)
        if order is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"order {order_id} does not exist", "order_id")
        return JsonResponse(pii_view_orders(request, [order])[0])

    @router.get("/orders/{order_id}/events", tags=["orders"], response_model=list[schemas.OrderEvent], responses=ERRORS, summary="The order's event log")
    async def get_events(order_id: str, request: Request) -> JsonResponse:
        order = await read(queries.get_order, order_id)
        if order is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"order {order_id} does not exist", "order_id")
        return JsonResponse(pii_view(request, await read(queries.order_events_of, order_id)))

    @router.get("/customers/{customer_id}", tags=["customers"], response_model=schemas.CustomerDetail, responses=ERRORS)
    async def get_customer(customer_id: str) -> JsonResponse:
        customer = await read(queries.get_customer, customer_id)
        if customer is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"customer {customer_id} does not exist", "customer_id")
        return JsonResponse(customer)

    @router.get(
        "/channels",
        tags=["channels"],
        response_model=list[schemas.ChannelStatus],
        summary="Is each shop's channel delivering?",
        description=(
            "One entry per configured shop: how its orders arrive (`push` webhook, `stream` connection, "
            "`pull`, `file`), `state` connected / lagging / failing with the `reason`, the last message time, "
            "the backlog of kept messages not yet processed, the message connection (淘宝 TMC, 拼多多 PMC) and the "
            "last error (an expired token, HTTP 429, a closed connection …). failing: the connection has been down "
            "for over 30 s, the order API failed 3 times in a row, or the last pull failed; lagging: a message has "
            "waited over 60 s, or a pull is behind."
        ),
    )
    async def list_channels() -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(
            channel_statuses, runtime.engine, runtime.shops, runtime.channels, runtime.monitor, runtime.settings.pull_interval_s))

    @router.get("/quarantine", tags=["quarantine"], response_model=schemas.QuarantinePage, summary="Input kept for review")
    async def list_quarantine(
        status: Annotated[str | None, Query(description="open | replayed")] = None,
        channel: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[int | None, Query(description="next_cursor of the previous page")] = None,
    ) -> JsonResponse:
        items = await read(queries.list_quarantine, status, channel, limit, cursor)
        next_cursor = items[-1]["id"] if len(items) == limit else None
        return JsonResponse({"items": items, "next_cursor": next_cursor})

    @router.post("/quarantine/{quarantine_id}/replay", tags=["quarantine"], response_model=schemas.ReplayResult, responses={404: {"model": schemas.Error}, 409: {"model": schemas.Error}})
    async def replay(quarantine_id: int, actor: CurrentActor) -> JsonResponse:
        return JsonResponse(await quarantine_service.replay(runtime.processor, quarantine_id, actor))

    @router.post(
        "/imports",
        tags=["imports"],
        status_code=202,
        summary="Import orders from a CSV/XLSX file: 202 with the import job that follows its processing",
        description=(
            "Upload a file with a saved column mapping. The whole file is validated first: a cell that cannot be read "
            "(e.g. an order number that Excel turned into 4.95123E+18) rejects the file with 400 `precision_lost`, and "
            "`errors` names every bad row. Accepted orders go through the normal pipeline asynchronously: follow them at "
            "`GET /jobs/import/{job_id}` (rows processed, orders stored or quarantined, then the final report)."
        ),
        responses={400: {"model": schemas.Error}},
    )
    async def import_orders(
        file: Annotated[UploadFile, File(description="CSV (UTF-8 or GBK) or XLSX")],
        mapping: Annotated[str, Form(description="name of a saved column mapping")],
        channel: Annotated[str, Form(description="channel code of the orders, e.g. pos, jd")],
        actor: CurrentActor,
        shop: Annotated[str, Form()] = "default",
    ) -> JsonResponse:
        data = await file.read()
        report = await asyncio.to_thread(
            import_service.import_file, runtime.engine, data, file.filename or "upload", mapping, channel, shop, runtime.pii, actor)
        runtime.notify_work()
        return JsonResponse(report, status_code=202)

    @router.put("/import-mappings/{name}", tags=["imports"], summary="Save a named column mapping", responses={400: {"model": schemas.Error}})
    async def put_mapping(name: str, mapping: Annotated[dict[str, Any], Body(description="{columns: {order_no: '订单号', …}, status_values: {…}, …}")],
                          actor: CurrentActor) -> JsonResponse:
        saved = await asyncio.to_thread(import_service.save_mapping, runtime.engine, name, mapping, actor)
        return JsonResponse(saved.to_dict())

    @router.get("/import-mappings", tags=["imports"], summary="Names of the saved column mappings")
    async def get_mappings() -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(import_service.mapping_names, runtime.engine))

    @router.post(
        "/workers/pause",
        tags=["operations"],
        summary="Pause processing (intake keeps accepting)",
        description="Stops this process's workers and puller; pushes are still stored and acknowledged, and pile up as backlog.",
    )
    async def pause_workers(actor: CurrentActor) -> JsonResponse:
        await asyncio.to_thread(audit_log_repo.record_alone, runtime.engine, actor, "workers.pause", "workers", after={"workers": False})
        await runtime.stop_workers()
        return JsonResponse({"workers": runtime.workers_running})

    @router.post("/workers/resume", tags=["operations"], summary="Resume processing; the backlog drains")
    async def resume_workers(actor: CurrentActor) -> JsonResponse:
        await asyncio.to_thread(audit_log_repo.record_alone, runtime.engine, actor, "workers.resume", "workers", after={"workers": True})
        runtime.start_workers()
        runtime.notify_work()
        return JsonResponse({"workers": runtime.workers_running})

    @router.get("/health", tags=["operations"], summary="Liveness, backlog and intake counters")
    async def health() -> JsonResponse:
        def check(conn: sa.Connection) -> dict[str, Any]:
            conn.execute(sa.text("SELECT 1"))
            cursors = [queries.plain(r) for r in conn.execute(sa.select(sync_cursors)).mappings()]
            return {"cursors": [{**c, **{k: queries.local(c[k]) for k in ("synced_until", "last_success_at", "last_error_at")}} for c in cursors]}

        try:
            details = await read(check)
            pending = await asyncio.to_thread(backlog, runtime.engine)
        except Exception as exc:
            return JsonResponse({"status": "unavailable", "database": str(exc)[:200]}, status_code=503)
        broker = None
        if runtime.transport is not None:  # scaled mode: the broker keeps the raw messages
            t = runtime.transport
            try:
                broker = {"kind": t.name, "url": t.render_url(), "partitions": t.partitions, "reachable": await t.ping(), "lag": await t.lag()}
            except Exception as exc:
                broker = {"kind": t.name, "url": t.render_url(), "reachable": False, "error": str(exc)[:200]}
            if not broker["reachable"]:
                return JsonResponse({"status": "unavailable", "broker": broker}, status_code=503)
        return JsonResponse({
            "status": "ok",
            "mode": "scaled" if broker else "embedded",
            "database": runtime.engine.dialect.name,
            "broker": broker,
            "workers": runtime.workers_running,
            "backlog": pending,
            "accepted": dict(runtime.intake.accepted),
            "rejected": {f"{c}:{code}": n for (c, code), n in runtime.intake.rejected.items()},
            "inbox_commits": runtime.writer.commits,
            "pull": details["cursors"],
        })

    return router
