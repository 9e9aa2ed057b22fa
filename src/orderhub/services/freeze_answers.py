"""The WMS's answers to freeze instructions (拦截), the follow-ups they lead to, and a supervisor's decision.

An answer comes from the outbox sender (the WMS answers a freeze synchronously) or from the WMS's
callback, whichever is first; a repeat finds the instruction settled and changes nothing (every
write here is conditional on the instruction's outcome). Frozen → cancel: the WMS drops the package,
the stock goes back, the order is cancelled; address: the WMS gets the new address and works on
(or, when the new address belongs to another warehouse, the order is audited again); remark: the
WMS gets the remark and works on. Refused → too late: a carrier interception and a hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import audit_repo, inventory_repo, outbox_repo
from orderhub.adapters.db import fulfillment_repo as repo
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.fulfillment import EVENT_MOVES, LIVE, UNDER_WAY, Action, InstructionKind, Outcome, PackageStatus, Plan, settle
from orderhub.domain.pii import SEALED
from orderhub.domain.status import Status
from orderhub.services.interception import (
    ACTOR, EXPEDITE_PRIORITY, FREEZE_PRIORITY, OUTCOMES, Ctx, cancel_order, carrier_intercept, execute, lift_hold, locked_order,
    notify_result, outbox_key, plan_for, record_of, resend, serving, too_late,
)

K, P = InstructionKind, PackageStatus


def record_answer(conn: sa.Connection, instruction_id: int, code: str, result: str, wms_status: str | None = None, *,
                  now: datetime | None = None, sent_at: datetime | None = None) -> str:
    """The WMS answered a freeze (`frozen` / `refused`) or an expedite (`expedited` / `refused`) for one
    WMS order. Returns what it did: settled | waiting | stale (already answered: a replay)."""
    ctx = Ctx(conn, serving(conn), now or datetime.now(UTC))
    first = repo.instruction(conn, instruction_id)
    if first is None:
        return "stale"
    order = repo.lock_orders(conn, [first.order_id])[first.order_id]  # the order first: the global lock order
    if sent_at is not None:
        repo.mark_sent(conn, instruction_id, sent_at)  # also when the WMS's callback settled it first
    if Outcome(first.outcome) not in UNDER_WAY:
        return "stale"
    rows = repo.packages_by_code(conn, code, lock=True)
    row = repo.instruction(conn, instruction_id, lock=True)
    detail = dict(row.detail or {})
    answers = dict(detail.get("answers") or {})
    if Outcome(row.outcome) is not Outcome.PENDING or code in answers or code not in detail.get("asked", ()):
        return "stale"
    answers[code] = "frozen" if result in ("frozen", "expedited") else "refused"
    what = K(row.kind)
    keys = [(r.order_id, r.package_no) for r in rows]
    if what is not K.EXPEDITE:
        if answers[code] == "frozen":
            repo.move(conn, keys, P.FROZEN, (P.QUEUED, P.ACCEPTED, P.PICKING), ctx.now)
        elif wms_status in (P.PACKED, P.SHIPPED):
            # known packed now; shipped only through the WMS's shipped event, which brings the waybill and the rest
            repo.move(conn, keys, P.PACKED, EVENT_MOVES["packed"][1], ctx.now)
    settled = settle(detail.get("asked", ()), answers)
    detail["answers"] = answers
    if settled is None:
        repo.update_instruction(conn, instruction_id, [Outcome.PENDING], detail=detail)
        return "waiting"
    if what is K.EXPEDITE:
        outcome = Outcome.APPLIED if not settled.refused else Outcome.REFUSED
        repo.update_instruction(conn, instruction_id, [Outcome.PENDING], outcome=outcome.value, answered_at=ctx.now, detail=detail)
        for r in rows:
            repo.set_values(conn, (r.order_id, r.package_no), ctx.now, priority=max(r.priority, EXPEDITE_PRIORITY))
        repo.event(conn, order.id, ctx.now, actor=ACTOR, kind="expedited" if not settled.refused else "intercept_too_late",
                   reason=f"加急指令 #{instruction_id}：{'仓库已加急' if not settled.refused else '包裹已打包，无需加急'}", data={"instruction": instruction_id})
        return "settled"
    outcome = Outcome.TOO_LATE if settled.refused else (Outcome.APPLIED if what is K.CANCEL else Outcome.FROZEN)
    repo.update_instruction(conn, instruction_id, [Outcome.PENDING], outcome=outcome.value, answered_at=ctx.now, detail=detail)
    repo.event(conn, order.id, ctx.now, actor=f"wms:{rows[0].wms}" if rows else ACTOR, kind="freeze_answered",
               reason=f"仓库回复指令 #{instruction_id}：冻结 {len(settled.frozen)} 单，拒绝 {len(settled.refused)} 单（已打包/已发出）",
               data={"instruction": instruction_id, "answers": answers})
    for frozen in settled.frozen:
        _follow_up(ctx, order.id, instruction_id, what, frozen, detail)
    if settled.refused:
        late = [p for c in settled.refused for p in repo.packages_by_code(conn, c) if p.order_id == order.id]
        too_late(ctx, repo.lock_orders(conn, [order.id])[order.id], instruction_id, what, late, detail)
    return "settled"


def _follow_up(ctx: Ctx, order_id: str, iid: int, what: InstructionKind, code: str, detail: Mapping[str, Any]) -> None:
    """A frozen WMS order: cancel it / give it the new address and let it go on / give it the remark and let it go on."""
    conn = ctx.conn
    order = repo.lock_orders(conn, [order_id])[order_id]
    rows = repo.packages_by_code(conn, code, lock=True)
    if not rows:
        return
    wms = rows[0].wms
    others = {r.order_id for r in rows if r.order_id != order_id}
    base = {"order_code": code, "instruction_id": str(iid), "order_id": order_id}
    # only an order travelling as this one package can move to another warehouse as a whole
    alone = [p for p in repo.packages(conn, [order_id]) if P(p.status) in LIVE] == [r for r in rows if r.order_id == order_id]
    reroute = what is K.ADDRESS and not others and alone and ctx.service is not None and ctx.service.reroutes(conn, order, rows)
    if what is K.CANCEL or (others and what is K.ADDRESS) or reroute:
        # A merged package whose member changed address no longer ships as one: drop it, send the rest again —
        # once the WMS has dropped it (cancel_confirmed): a WMS refusing the cancel ships the box, and the rest
        # sent again meanwhile would ship twice.
        outbox_repo.enqueue(conn, kind="wms.cancel", endpoint=wms, payload=base, idempotency_key=outbox_key("wms.cancel", iid, code),
                            order_id=order_id, priority=FREEZE_PRIORITY, now=ctx.now)
        repo.move(conn, [(r.order_id, r.package_no) for r in rows], P.CANCELLED, (P.FROZEN, P.QUEUED, P.ACCEPTED, P.PICKING), ctx.now)
        ctx.wake()
        if others:
            audit_repo.join_merge_group(conn, order_id, None, ctx.now, actor=ACTOR, reason="拦截：移出合单")
        after = {"code": code, "resend": sorted(others | ({order_id} if what is K.ADDRESS and not reroute else set())), "reaudit": reroute}
        if after["resend"] or reroute:
            repo.add_to_detail(conn, iid, after_cancel=after)
        if what is K.CANCEL:
            cancel_order(ctx, repo.lock_orders(conn, [order_id])[order_id], iid, "拦截成功：仓库已冻结并取消")
            return
        repo.update_instruction(conn, iid, [Outcome.FROZEN], outcome=Outcome.APPLIED.value, answered_at=ctx.now)
        notify_result(ctx, order_id, iid, what, "address_updated")
        return
    if what is K.ADDRESS:
        payload = {**base, "address": detail.get("address") or order.address, "recipient": _recipient(order, detail), "unfreeze": True}
        if detail.get(SEALED):
            payload[SEALED] = detail[SEALED]  # the street CS typed, sealed: the WMS sender opens it (adapters/wms/orders.py)
        kind = "wms.address"
    else:
        payload = {**base, "remark": order.seller_remark, "buyer_message": order.buyer_message}
        kind = "wms.unfreeze"
    outbox_repo.enqueue(conn, kind=kind, endpoint=wms, payload=payload, idempotency_key=outbox_key(kind, iid, code), order_id=order_id,
                        priority=FREEZE_PRIORITY, now=ctx.now)
    ctx.wake()


def cancel_confirmed(conn: sa.Connection, code: str, iid: int, now: datetime) -> str:
    """The WMS dropped a package OrderHub asked it to cancel (its answer to the wms.cancel, or its `cancelled`
    callback, whichever comes first): the merged orders that were in it are sent again, an address that
    belongs to another warehouse is audited again. Once: the instruction keeps what is still to do."""
    first = repo.instruction(conn, iid)
    after = (first.detail or {}).get("after_cancel") if first is not None else None
    if not after or after.get("code") != code:
        return "noted"
    ctx = Ctx(conn, serving(conn), now)
    locked = repo.lock_orders(conn, sorted({first.order_id, *after["resend"]}))  # the orders first: the global lock order
    row = repo.instruction(conn, iid, lock=True)
    detail = dict(row.detail or {})
    if detail.pop("after_cancel", None) is None:
        return "noted"  # the other path was first
    repo.update_instruction(conn, iid, [row.outcome], detail=detail)
    if after.get("reaudit"):
        _reaudit(ctx, locked[first.order_id], iid)
    if after["resend"]:
        resend(ctx, first.order_id, set(after["resend"]))
        for oid in after["resend"]:
            repo.event(conn, oid, ctx.now, actor=ACTOR, kind="wms_resent", reason=f"仓库已取消合单包裹 {code}（指令 #{iid}）：重新发往仓库",
                       data={"instruction": iid, "code": code})
    return "settled"


def _reaudit(ctx: Ctx, order: Any, iid: int) -> None:
    """The new address belongs to another warehouse: stock back, and the audit decides the order again."""
    inventory_repo.release(ctx.conn, [order.id], actor=ACTOR, reason=f"改地址换仓，重新审单（指令 #{iid}）", now=ctx.now)
    order = repo.lock_orders(ctx.conn, [order.id])[order.id]
    # on_hold with no holds of its own: the audit's next batch sets ready or on_hold afresh
    repo.save_order(ctx.conn, order, {"status": Status.ON_HOLD.value, "audit_state": audit_repo.AuditState.PENDING}, ctx.now,
                    actor=ACTOR, kind="reaudit", reason="收货地址改到另一仓库的范围：仓库取消，重新审单", data={"instruction": iid})


def _recipient(order: Any, detail: Mapping[str, Any]) -> dict[str, Any]:
    buyer = order.buyer or {}
    return {"name": buyer.get("name"), "phone": buyer.get("phone"), "address": detail.get("address") or order.address}


def record_follow_up(conn: sa.Connection, instruction_id: int, code: str, result: str, *, now: datetime | None = None) -> str:
    """The WMS took the new address / the remark and works on (`updated` / `unfrozen`, or its
    `unfrozen` callback): the package is back in work and the instruction applied."""
    ctx = Ctx(conn, serving(conn), now or datetime.now(UTC))
    first = repo.instruction(conn, instruction_id)
    if first is None:
        return "stale"
    order = repo.lock_orders(conn, [first.order_id])[first.order_id]
    rows = repo.packages_by_code(conn, code, lock=True)
    if result not in ("updated", "unfrozen"):
        return "stale"
    repo.move(conn, [(r.order_id, r.package_no) for r in rows], P.ACCEPTED, (P.FROZEN,), ctx.now)
    if not repo.update_instruction(conn, instruction_id, [Outcome.FROZEN], outcome=Outcome.APPLIED.value, answered_at=ctx.now):
        return "stale"
    what = K(first.kind)
    repo.event(conn, order.id, ctx.now, actor=f"wms:{rows[0].wms}" if rows else ACTOR, kind="address_updated" if what is K.ADDRESS else "remark_updated",
               reason=f"仓库已{'更新地址' if what is K.ADDRESS else '记录备注'}并继续作业（指令 #{instruction_id}）", data={"instruction": instruction_id})
    notify_result(ctx, order.id, instruction_id, what, f"{what.value}_updated")
    return "settled"


def awaiting_waybill(conn: sa.Connection, order_id: str, package_no: int, carrier: str | None, waybill_no: str, now: datetime) -> None:
    """The ship handler learnt a waybill: carrier interceptions that waited for it are asked now."""
    for row in repo.instructions_of(conn, order_id):
        detail = dict(row.detail or {})
        if package_no in (detail.get("awaiting_waybill") or ()):
            carrier_intercept(conn, order_id, row.id, row.kind, carrier, waybill_no, package_no, detail, now)
            detail["awaiting_waybill"] = [n for n in detail["awaiting_waybill"] if n != package_no]
            repo.update_instruction(conn, row.id, [row.outcome], detail=detail)


# -- supervisors ------------------------------------------------------------------------------------


def resolve(conn: sa.Connection, instruction_id: int, decision: str, *, actor: str, reason: str | None, now: datetime | None = None) -> dict[str, Any]:
    """A supervisor's call on a conflicting instruction: `apply` (it goes ahead as if alone: frozen,
    applied or too late as the packages are now) or `dismiss` (set aside; it no longer counts)."""
    ctx = Ctx(conn, serving(conn), now or datetime.now(UTC))
    first = repo.instruction(conn, instruction_id)
    if first is None:
        raise OrderHubError(ErrorCode.NOT_FOUND, f"no freeze instruction {instruction_id}", "id")
    if decision not in ("apply", "dismiss"):
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "decision must be apply or dismiss", "decision")
    order = locked_order(conn, first.order_id)
    packages = repo.packages(conn, [order.id], lock=True)
    row = repo.instruction(conn, instruction_id, lock=True)
    if Outcome(row.outcome) is not Outcome.SUPERVISOR or row.resolved_by:
        raise OrderHubError(ErrorCode.CONFLICT, f"instruction {instruction_id} is {row.outcome}, not waiting for a supervisor", "id")
    lift_hold(conn, order.id, instruction_id, ctx.now, actor=actor, reason=f"主管处理指令 #{instruction_id}：{decision}")
    detail = dict(row.detail or {})
    if decision == "dismiss":
        detail.update(decision="dismissed", decision_reason=reason)
        repo.update_instruction(conn, instruction_id, [Outcome.SUPERVISOR], resolved_by=actor[:64], answered_at=ctx.now, detail=detail)
        repo.event(conn, order.id, ctx.now, actor=actor, kind="intercept_dismissed", reason=f"主管驳回指令 #{instruction_id}：{reason or ''}".rstrip("："),
                   data={"instruction": instruction_id})
        return {"id": instruction_id, "outcome": Outcome.SUPERVISOR.value, "decision": "dismissed"}
    what = K(row.kind)
    plan = plan_for(conn, order, what, packages, row.requested_at, detail, check_conflicts=False)
    if plan.action is Action.DUPLICATE:
        plan = Plan(Action.LOCAL, reason=plan.reason) if what is K.EXPEDITE else plan
    outcome = OUTCOMES.get(plan.action, Outcome.APPLIED)
    detail = {**record_of(detail, plan), "decision": "applied", "decision_reason": reason}
    repo.update_instruction(conn, instruction_id, [Outcome.SUPERVISOR], resolved_by=actor[:64], outcome=outcome.value, detail=detail,
                            answered_at=None if plan.action is Action.FREEZE else ctx.now)
    repo.event(conn, order.id, ctx.now, actor=actor, kind="intercept_approved", reason=f"主管批准指令 #{instruction_id}：{reason or ''}".rstrip("："),
               data={"instruction": instruction_id})
    if plan.action is not Action.DUPLICATE:
        execute(ctx, order, instruction_id, what, plan, packages, detail, source=f"supervisor:{actor}")
    return {"id": instruction_id, "outcome": outcome.value, "decision": "applied", "action": plan.action.value}
