"""API routes of the audit: inventory, rule sets (draft, dry run, back-test, publish), the exception
queue and the actions people take on orders."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from orderhub.adapters.db import inventory_repo, queries
from orderhub.bootstrap import Runtime
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.entrypoints.api import schemas
from orderhub.entrypoints.api.auth import acting, pii_view_orders
from orderhub.entrypoints.api.responses import JsonResponse
from orderhub.services import jobs, order_actions, rule_trials, stock_changes

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.Error}, 404: {"model": schemas.Error}, 409: {"model": schemas.Error}, 422: {"model": schemas.Error},
}


def build_audit_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=ERRORS)
    engine = runtime.engine
    rules = runtime.rules
    runner = jobs.JobRunner(engine)  # back-test jobs of this process

    def read(fn: Any, *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            with engine.connect().execution_options(readonly=True) as conn:
                return fn(conn, *args, **kwargs)

        return asyncio.to_thread(run)

    async def act(fn: Any, *args: Any, **kwargs: Any) -> JsonResponse:
        result = await asyncio.to_thread(fn, engine, *args, **kwargs)
        runtime.notify_work()  # a re-audit is due now, not at the next poll
        return JsonResponse(result)

    # -- inventory ------------------------------------------------------------------------

    @router.get("/inventory", tags=["inventory"], response_model=schemas.StockPage, summary="Stock per SKU and warehouse")
    async def list_inventory(
        sku: Annotated[str | None, Query(description="SKU code prefix")] = None,
        warehouse: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> JsonResponse:
        items, next_cursor = await read(inventory_repo.list_stock, sku=sku, warehouse=warehouse, limit=limit, cursor=cursor)
        return JsonResponse({"items": [_stock_json(i) for i in items], "next_cursor": next_cursor})

    @router.get("/inventory/check", tags=["inventory"], summary="Is reserved == Σ active reservations everywhere?")
    async def check_inventory() -> JsonResponse:
        mismatches = await read(inventory_repo.check_invariant)
        return JsonResponse({"healthy": not mismatches, "mismatches": mismatches})

    @router.get("/inventory/{sku}/ledger", tags=["inventory"], summary="Every stock movement of a SKU, newest first")
    async def stock_ledger(
        sku: str, warehouse: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 100, before_id: int | None = None,
    ) -> JsonResponse:
        rows = await read(inventory_repo.ledger, sku, warehouse=warehouse, limit=limit, before_id=before_id)
        return JsonResponse([{**r, "at": queries.local(r["at"])} for r in rows])

    @router.post("/inventory/{sku}/adjust", tags=["inventory"], summary="Receive (+) or write off (−) stock",
                 description="Refused with 409 `insufficient_stock` below what is reserved. Orders held 缺货 for this SKU are audited again.")
    async def adjust_stock(sku: str, body: schemas.StockAdjust, request: Request) -> JsonResponse:
        await asyncio.to_thread(stock_changes.adjust_stock, engine, acting(request, body.actor), sku, body.warehouse, body.delta, body.reason)
        runtime.notify_work()
        items, _ = await read(inventory_repo.list_stock, sku=sku, warehouse=body.warehouse, limit=1)
        return JsonResponse(_stock_json(items[0]) if items else None)

    @router.put("/inventory/{sku}/safety", tags=["inventory"], summary="Set the safety stock of a SKU in a warehouse")
    async def set_safety(sku: str, body: schemas.SafetyStock, request: Request) -> JsonResponse:
        await asyncio.to_thread(stock_changes.set_safety_stock, engine, acting(request, body.actor), sku, body.warehouse, body.safety)
        items, _ = await read(inventory_repo.list_stock, sku=sku, warehouse=body.warehouse, limit=1)
        return JsonResponse(_stock_json(items[0]) if items else None)

    @router.post("/inventory/sync", tags=["inventory"], summary="Import WMS stock now, then push sellable stock to every channel",
                 description="What the periodic stock sync does every `stock_sync.interval_s`: absolute counts from the WMS, then each "
                             "channel shop's listings set to the sellable quantity less that channel's buffer (unchanged ones are skipped).")
    async def sync_stock() -> JsonResponse:
        imported, pushed = await runtime.stock_sync.run_once()
        runtime.notify_work()
        return JsonResponse({"import": imported.as_dict() if imported else None, "push": pushed.as_dict()})

    # -- rules ------------------------------------------------------------------------------

    @router.get("/rules", tags=["rules"], summary="Rule sets with their published and draft versions")
    async def list_rules() -> JsonResponse:
        sets = await asyncio.to_thread(rules.list_sets)
        live = await asyncio.to_thread(rules.live)
        return JsonResponse({"rule_version": live.label, "sets": sets})

    @router.get("/rules/{name}", tags=["rules"], summary="One rule set version (default: the latest)")
    async def get_rule_set(name: str, version: int | None = None) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(rules.get_set, name, version))

    @router.put("/rules/{name}", tags=["rules"], summary="Save a draft",
                description="Validated by the engine first: 422 `rule_invalid` with the problem. An open draft is replaced; published versions never change.")
    async def save_draft(name: str, body: schemas.RuleDraft, request: Request) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(rules.save_draft, name, body.content, acting(request, body.author), body.note))

    @router.post("/rules/{name}/dry-run", tags=["rules"], summary="The draft's decision on one order, and why")
    async def dry_run(name: str, body: schemas.DryRun) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(
            rule_trials.dry_run, engine, rules, name, order_id=body.order_id, order=body.order, content=body.content, version=body.version))

    @router.post("/rules/{name}/backtest", tags=["rules"], summary="Which of the last N days' orders the draft would change",
                 description="Answers when the back-test is done (one request). The console starts it as a job instead "
                             "(`POST /rules/{name}/backtest-jobs`) to show its progress. 503 `deferred` while the `defer_backtests` "
                             "switch is on (the peak, docs/scaling.md).")
    async def backtest(name: str, body: schemas.Backtest) -> JsonResponse:
        await asyncio.to_thread(runtime.switches.require_off, "defer_backtests")  # 503 `deferred` at the peak
        return JsonResponse(await asyncio.to_thread(
            rule_trials.backtest, engine, rules, name, days=body.days, limit=body.limit, content=body.content, version=body.version))

    @router.post("/rules/{name}/backtest-jobs", tags=["rules"], status_code=202, response_model=schemas.Job,
                 summary="Start the back-test as a job: 202 with the job at once, progress at GET /jobs/backtest/{job_id}",
                 description="The same back-test as `POST /rules/{name}/backtest`, run in a worker thread of this process (two at a "
                             "time; more wait their turn). Follow it at `GET /jobs/backtest/{job_id}`: `done`/`total` orders, `percent`, "
                             "then `result` (the same report) or `error` (e.g. `rule_invalid`, `not_found` for a set without a draft).")
    async def start_backtest(name: str, body: schemas.Backtest, request: Request) -> JsonResponse:
        await asyncio.to_thread(runtime.switches.require_off, "defer_backtests")
        job_id = await asyncio.to_thread(
            rule_trials.start_backtest, runner, engine, rules, name, days=body.days, limit=body.limit, content=body.content,
            version=body.version, actor=acting(request))
        return JsonResponse(await asyncio.to_thread(jobs.read_job, engine, job_id, jobs.BACKTEST), status_code=202)

    @router.post("/rules/{name}/publish", tags=["rules"], summary="Publish the draft (or a stored version): the next audit version",
                 description="Takes effect on the next audit batch, without a restart; orders record the audit version that decided them.")
    async def publish(name: str, body: schemas.RulePublish, request: Request) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(rules.publish, name, acting(request, body.author), body.note, body.version))

    @router.post("/rules/{name}/rollback", tags=["rules"], summary="Back to the version published before the current one")
    async def rollback(name: str, body: schemas.RulePublish, request: Request) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(rules.rollback, name, acting(request, body.author), body.note))

    @router.put("/rules/{name}/switches/{rule_id}", tags=["rules"], summary="Switch one rule off (or on) without a deploy")
    async def switch(name: str, rule_id: str, body: schemas.RuleSwitch, request: Request) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(rules.set_switch, name, rule_id, body.enabled, acting(request, body.author)))

    @router.get("/rules/{name}/diff", tags=["rules"], summary="Rows added, removed and changed between two versions")
    async def diff(name: str, a: int, b: int) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(rules.diff, name, a, b))

    @router.get("/audit-versions", tags=["rules"], summary="Every audit configuration, newest first")
    async def audit_versions(limit: Annotated[int, Query(ge=1, le=200)] = 50) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(rules.audit_versions, limit))

    # -- the exception queue and order actions ---------------------------------------------------

    @router.get("/exceptions", tags=["exceptions"], summary="异常订单: orders with holds, and counts per hold code")
    async def exceptions(
        request: Request,
        code: Annotated[str | None, Query(description="one hold code, e.g. out_of_stock")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: str | None = None,
    ) -> JsonResponse:
        filters = queries.OrderFilters(hold=code, held=True)
        items, next_cursor = await read(queries.list_orders, filters, limit, cursor)
        counts = await read(queries.hold_counts)
        return JsonResponse({"counts": counts, "items": pii_view_orders(request, items), "next_cursor": next_cursor})

    @router.post("/orders/{order_id}/release", tags=["exceptions"], response_model=schemas.ActionResult, summary="放行: lift a hold and audit again",
                 description="The rules will not put a released code back on this order (out_of_stock excepted: stock is checked every time).")
    async def release(order_id: str, body: schemas.HoldAction, request: Request) -> JsonResponse:
        return await act(order_actions.release_hold, order_id, actor=acting(request, body.actor), reason=body.reason, code=body.code, version=body.version)

    @router.post("/orders/{order_id}/resolve", tags=["exceptions"], response_model=schemas.ActionResult, summary="标记已处理: the cause was fixed; audit again")
    async def resolve(order_id: str, body: schemas.HoldAction, request: Request) -> JsonResponse:
        return await act(order_actions.resolve_hold, order_id, actor=acting(request, body.actor), reason=body.reason, code=body.code, version=body.version)

    @router.post("/orders/{order_id}/hold", tags=["exceptions"], response_model=schemas.ActionResult, summary="挂起 by hand (code manual by default)")
    async def hold(order_id: str, body: schemas.HoldAction, request: Request) -> JsonResponse:
        return await act(order_actions.hold_order, order_id, actor=acting(request, body.actor), reason=body.reason, code=body.code or "manual", version=body.version)

    @router.post("/orders/{order_id}/cancel", tags=["exceptions"], response_model=schemas.ActionResult, summary="Cancel an order not yet at the warehouse")
    async def cancel(order_id: str, body: schemas.OrderAction, request: Request) -> JsonResponse:
        return await act(order_actions.cancel_order, order_id, actor=acting(request, body.actor), reason=body.reason, version=body.version)

    @router.post("/orders/{order_id}/address", tags=["exceptions"], response_model=schemas.ActionResult, summary="Edit the address, then audit again")
    async def edit_address(order_id: str, body: schemas.AddressEdit, request: Request) -> JsonResponse:
        address = {"province": body.province, "city": body.city, "district": body.district, "detail": body.detail}
        result = await asyncio.to_thread(
            order_actions.edit_address, engine, runtime.vault, order_id, address, actor=acting(request, body.actor), reason=body.reason,
            version=body.version)
        runtime.notify_work()
        return JsonResponse(result)

    @router.post("/orders/merge", tags=["exceptions"], summary="手工合单: ready orders of one shop, warehouse and address")
    async def merge(body: schemas.MergeRequest, request: Request) -> JsonResponse:
        return await act(order_actions.merge_orders, body.order_ids, actor=acting(request, body.actor), reason=body.reason)

    @router.post("/orders/{order_id}/unmerge", tags=["exceptions"], response_model=schemas.ActionResult, summary="Take an order out of its merge group")
    async def unmerge(order_id: str, body: schemas.OrderAction, request: Request) -> JsonResponse:
        return await act(order_actions.unmerge_order, order_id, actor=acting(request, body.actor), reason=body.reason)

    return router


def _stock_json(row: dict[str, Any]) -> dict[str, Any]:
    if row is None:
        raise OrderHubError(ErrorCode.NOT_FOUND, "no such stock row", "sku")
    return {**row, "updated_at": queries.local(row.get("updated_at"))}
