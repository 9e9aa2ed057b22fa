"""API routes of notification templates: list, save (validated by rendering), and preview against a real order."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from orderhub.adapters.db import outbox_repo, queries
from orderhub.bootstrap import Runtime
from orderhub.entrypoints.api import schemas
from orderhub.entrypoints.api.auth import acting, pii_view
from orderhub.entrypoints.api.responses import JsonResponse
from orderhub.services import notifications

ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": schemas.Error}, 404: {"model": schemas.Error}, 422: {"model": schemas.Error}}


class TemplateSave(BaseModel):
    subject: str | None = Field(None, description="e-mail subject / robot title (Jinja2); required for email")
    body: str = Field(description="the text (Jinja2), e.g. 您的订单{{ order_no }}已发货，{{ carrier_name }}运单号{{ waybill_no }}")
    author: str = Field("api", description="kept as updated_by: " + schemas.ACTOR_NOTE, max_length=64)
    enabled: bool | None = Field(None, description="switch the template on or off; unchanged when omitted")


class TemplatePreview(BaseModel):
    order_id: str
    context: dict[str, Any] | None = Field(None, description="the event's variables (e.g. {\"stall\": \"no_first_scan\"}); a sample when omitted")


def build_notification_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERRORS, tags=["notifications"])
    engine = runtime.engine

    def shop_names() -> dict[tuple[str, str], str]:
        return {(shop.channel, shop.shop_id): shop.name for shop in runtime.shops.all()}

    @router.get("/orders/{order_id}/notifications", summary="What was sent (or is waiting) about one order, newest first",
                description="The order's notification messages from the outbox: channel, template, target, the rendered text, "
                            "status and error. For CS answering \"what did we tell the buyer?\" (needs orders:read, not outbox access).")
    async def order_notifications(order_id: str, request: Request) -> JsonResponse:
        def run() -> list[dict[str, Any]]:
            with engine.connect().execution_options(readonly=True) as conn:
                return outbox_repo.list_messages(conn, kind="notify", order_id=order_id, limit=200, with_payload=True)

        items = []
        for m in await asyncio.to_thread(run):
            payload = m.get("payload") or {}
            items.append({
                "id": m["id"], "channel": m["kind"].removeprefix("notify."), "template": payload.get("template"),
                "target": payload.get("target"), "subject": payload.get("subject"), "body": payload.get("body"),
                "status": m["status"], "attempts": m["attempts"], "last_error": m["last_error"],
                "created_at": queries.local(m["created_at"]), "sent_at": queries.local(m["sent_at"]),
            })
        return JsonResponse({"items": pii_view(request, items)})

    @router.get("/notification-templates", summary="Every notification template with its version")
    async def list_templates() -> JsonResponse:
        rows = await asyncio.to_thread(notifications.list_templates, engine)
        return JsonResponse({"items": [_template_json(row) for row in rows]})

    @router.put("/notification-templates/{name}/{channel}", summary="Save a template (the next version)",
                description="Validated first by rendering it against a sample order: an unknown variable (in any branch), a syntax "
                            "error or a webhook body that is not a JSON object is refused with 422 `template_invalid` and Jinja's error.")
    async def save_template(name: str, channel: str, body: TemplateSave, request: Request) -> JsonResponse:
        row = await asyncio.to_thread(
            notifications.save_template, engine, name, channel, body.subject, body.body, author=acting(request, body.author), enabled=body.enabled)
        return JsonResponse(_template_json(row))

    @router.post("/notification-templates/{name}/{channel}/preview", summary="The template rendered for one order (nothing is sent)")
    async def preview(name: str, channel: str, body: TemplatePreview) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(
            notifications.preview, engine, name, channel, body.order_id, body.context, shop_names=shop_names()))

    return router


def _template_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "updated_at": queries.local(row.get("updated_at"))}
