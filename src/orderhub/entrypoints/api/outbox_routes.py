"""API routes of the outbox: what is waiting, sent or dead (with its error), the breakers, and a retry by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from orderhub.adapters.db import audit_log_repo, outbox_repo, queries
from orderhub.bootstrap import Runtime
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.entrypoints.api import schemas
from orderhub.entrypoints.api.auth import current_actor, pii_view
from orderhub.entrypoints.api.responses import JsonResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Error}, 404: {"model": schemas.Error}, 409: {"model": schemas.Error}, 422: {"model": schemas.Error},
}
_TIMES = ("next_attempt_at", "lease_until", "created_at", "sent_at")


def build_outbox_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERRORS)
    engine = runtime.engine

    def read(fn: Any, *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            with engine.connect().execution_options(readonly=True) as conn:
                return fn(conn, *args, **kwargs)

        return asyncio.to_thread(run)

    @router.get("/outbox", tags=["outbox"], summary="Messages to WMS, carriers, platforms and notification channels",
                description="Newest first. `status=dead` is the dead-letter queue: each item's `last_error` says why. "
                            "`kind` is a kind (`wms.freeze`) or a prefix (`wms`). `breakers` is each endpoint's circuit breaker "
                            "(closed | open | half_open) in this process's relay.")
    async def list_outbox(
        request: Request,
        status: Annotated[Literal["pending", "sending", "sent", "dead"] | None, Query()] = None,
        kind: str | None = None,
        order_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
        payload: Annotated[bool, Query(description="include each message's payload")] = False,
    ) -> JsonResponse:
        before_id = _decode_cursor(cursor) if cursor else None
        items = await read(outbox_repo.list_messages, status=status, kind=kind, order_id=order_id, limit=limit + 1,
                           before_id=before_id, with_payload=payload)
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = str(items[-1]["id"])
        counts = await read(outbox_repo.counts)
        relay = getattr(runtime, "relay", None)
        breakers = relay.breaker_states() if relay is not None else {}
        shown = pii_view(request, [message_json(i) for i in items]) if payload else [message_json(i) for i in items]
        return JsonResponse({"items": shown, "counts": counts, "next_cursor": next_cursor, "breakers": breakers})

    @router.post("/outbox/{message_id}/retry", tags=["outbox"], summary="Send a dead (or waiting) message again now",
                 description="Its attempts are kept: should it fail again it is dead again, with the new error. "
                             "404 `not_found`; 409 `conflict` when it was sent already or is being sent.")
    async def retry_message(message_id: int, request: Request) -> JsonResponse:
        actor = current_actor(request)

        def run() -> dict[str, Any]:
            with engine.begin() as conn:
                before = outbox_repo.get_message(conn, message_id)
                if outbox_repo.retry(conn, message_id, now=datetime.now(UTC)):
                    audit_log_repo.record(conn, actor, "outbox.retry", "outbox", message_id,
                                          before={"status": before["status"], "attempts": before["attempts"]} if before else None,
                                          after={"status": outbox_repo.PENDING})
                else:
                    row = before
                    if row is None:
                        raise OrderHubError(ErrorCode.NOT_FOUND, f"no outbox message {message_id}", "id")
                    raise OrderHubError(ErrorCode.CONFLICT, f"outbox message {message_id} is {row['status']}: nothing to retry", "id")
                return {"id": message_id, "status": outbox_repo.PENDING}

        result = await asyncio.to_thread(run)
        notify = getattr(runtime, "notify_outbox", None)
        if notify is not None:
            notify()  # the relay sends it now rather than at its next poll
        return JsonResponse(result)

    return router


def message_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, **{name: queries.local(row.get(name)) for name in _TIMES}}


def _decode_cursor(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError:
        raise OrderHubError(ErrorCode.INVALID_CURSOR, "cursor is not one this API issued", "cursor") from None
