"""Interception (拦截): a cancel, address or remark change becomes a freeze instruction, sent to the WMS at once.

`request_change` runs in the caller's transaction — processing's (a platform change), the API's (CS)
— and decides with `domain.fulfillment.decide`: nothing at the WMS yet → applied here; some package
not packed → `wms.freeze` outbox rows at the highest priority (the relay is woken when the
transaction ends) and a `freeze_alert` to the warehouse; everything packed → too late; a
conflicting instruction within 15 s → a supervisor decides, nothing is sent. The WMS's answers
(services/freeze_answers.py: from the outbox sender or its callback, whichever comes first) settle it:
frozen → cancelled with stock released / address updated then unfrozen / remark recorded;
refused → a hold `intercept_pending` and a `carrier.intercept` request. Every step logs an order
event; replays and late answers change nothing (conditional updates on the instruction's outcome).

An address CS types is plaintext: `typed_address` turns it into the mask (what orders keep), a sealed
street and a keyed hash before anything is stored. The instruction, the `wms.address` and
`carrier.intercept` payloads carry the sealed street (`sealed`), opened by the sender only
(adapters/wms/orders.py, PiiVault.open_address); the order takes the mask and its sealed PII the street.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import sqlalchemy as sa

from orderhub.adapters.db import audit_repo, inventory_repo, outbox_repo
from orderhub.adapters.db import fulfillment_repo as repo
from orderhub.adapters.db.tables import orders
from orderhub.adapters.pii_crypto import PiiKeyError, PiiVault
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.fulfillment import (
    LIVE, Action, Earlier, InstructionKind, Outcome, PackageStatus, PackageView, Plan, decide,
)
from orderhub.domain.merge import Event, HoldCode
from orderhub.domain.pii import SEALED, mask_address_detail
from orderhub.domain.status import LABELS_ZH, Status, can_transition

log = logging.getLogger(__name__)

ACTOR = "fulfillment"
FREEZE_PRIORITY = 1000  # above every order priority: a freeze overtakes the orders queued before it
EXPEDITE_PRIORITY = 100
WAKE = "orderhub.wake_outbox"  # conn.info flag: wake the relay once this connection's transaction is over
K, P = InstructionKind, PackageStatus
_FREEZE_KIND = {K.EXPEDITE: "wms.expedite"}  # every other kind freezes first
FAST_KINDS = ("wms.freeze", "wms.expedite")  # what the freeze lane relays (Fulfillment.run_freeze_lane)
_ALERTED = (K.CANCEL, K.ADDRESS, K.REMARK)


class Service(Protocol):
    """What interception needs from the configured fulfillment (services/fulfillment.py)."""

    notifier: Any
    vault: PiiVault | None  # seals what CS types (the new street) and opens it onto the order

    def queue_orders(self, conn: sa.Connection, order_ids: Iterable[str], now: datetime, *, priority: int | None = None) -> None: ...
    def reroutes(self, conn: sa.Connection, order: Any, packages: list[Any]) -> bool: ...


# The fulfillment configured for a database: processing calls request_change with nothing but a
# connection, so the service is found by the connection's engine (one per runtime, also in tests).
_serving: weakref.WeakKeyDictionary[sa.Engine, Service] = weakref.WeakKeyDictionary()


def register(engine: sa.Engine, service: Service) -> None:
    _serving[engine] = service


def serving(conn: sa.Connection) -> Service | None:
    return _serving.get(conn.engine)


ADDRESS_HASH = "address_hash"  # instruction detail: the vault's keyed hash of the plaintext address CS typed


def fingerprint(kind: InstructionKind, detail: Mapping[str, Any] | None) -> str:
    """What an instruction asks for, so two different addresses conflict and the same one twice is a repeat.
    A typed address is known by the keyed hash of its plaintext (its stored mask hides the street); a
    platform's address by its masks, which are all OrderHub has of it."""
    if kind is not K.ADDRESS or not detail or not detail.get("address"):
        return ""
    if detail.get(ADDRESS_HASH):
        return str(detail[ADDRESS_HASH])[:16]
    return hashlib.sha1(orjson.dumps(detail["address"], option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def typed_address(vault: PiiVault | None, address: Mapping[str, Any]) -> dict[str, Any]:
    """A new address a person typed, as an instruction's detail carries it: the street masked like the
    orders' addresses, sealed (`sealed`: {"address_detail": …}) for the order and the senders, and the
    whole address hashed with the vault's key for the conflict check (`address_hash`)."""
    if vault is None:
        raise PiiKeyError("no PII vault configured: a typed address cannot be sealed")
    plain = {str(k): (v.strip() if isinstance(v, str) else v) for k, v in address.items()}
    street = plain.get("detail") or None
    detail: dict[str, Any] = {"address": {**plain, "detail": mask_address_detail(street)}, ADDRESS_HASH: vault.address_hash(plain)}
    if street:
        detail[SEALED] = vault.seal({"address_detail": street})
    return detail


def public_detail(detail: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An instruction's detail as the API shows it: without the sealed street and the keyed hash."""
    return None if detail is None else {k: v for k, v in detail.items() if k not in (SEALED, ADDRESS_HASH)}


@dataclass(slots=True)
class Ctx:
    conn: sa.Connection
    service: Service | None
    now: datetime

    def wake(self) -> None:
        self.conn.info[WAKE] = True

    def notify(self, order_id: str, event: str, context: dict[str, Any], audience: tuple[str, ...]) -> None:
        notifier = getattr(self.service, "notifier", None)
        if notifier is not None:
            notifier.notify(self.conn, order_id, event, context=context, audience=audience, now=self.now)


# -- asking -----------------------------------------------------------------------------------------

_LABELS = {K.CANCEL: "取消", K.ADDRESS: "改地址", K.REMARK: "改备注", K.EXPEDITE: "加急"}
OUTCOMES = {Action.SUPERVISOR: Outcome.SUPERVISOR, Action.LOCAL: Outcome.APPLIED, Action.FREEZE: Outcome.PENDING,
             Action.TOO_LATE: Outcome.TOO_LATE}


def request_change(
    conn: sa.Connection, order_id: str, kind: str, source: str, received_at: datetime, detail: Mapping[str, Any] | None = None,
    *, now: datetime | None = None, applied_by_caller: bool = False, packages: list[Any] | None = None,
) -> dict[str, Any]:
    """Turn a change into a freeze instruction, in the caller's transaction. `received_at` is when the
    change arrived (the platform message's receipt, the CS request). With `applied_by_caller`, a change
    that needs no WMS (nothing sent yet) was already applied by the caller (processing cancels and
    re-audits such orders itself); only the instruction and the withdrawn packages are written here.
    `packages`: the order's packages, every one, that the caller has locked already (after the order)."""
    try:
        what = InstructionKind(kind)
    except ValueError:
        raise OrderHubError(ErrorCode.INVALID_REQUEST, f"kind must be one of {', '.join(k.value for k in K)}", "kind") from None
    ctx = Ctx(conn, serving(conn), now or datetime.now(UTC))
    detail = dict(detail or {})
    order = locked_order(conn, order_id)
    if order.status in (Status.CANCELLED, Status.CLOSED, Status.PENDING_PAYMENT) and not applied_by_caller:
        raise OrderHubError(ErrorCode.ORDER_STATE, f"order {order_id} is {order.status}: there is nothing to intercept", "status")
    if packages is None:
        packages = repo.packages(conn, [order_id], lock=True)
    plan = plan_for(conn, order, what, packages, received_at, detail)
    if plan.action is Action.DUPLICATE:
        repo.event(conn, order_id, ctx.now, actor=source, kind="intercept_duplicate", reason=f"重复的{_LABELS[what]}指令：{plan.reason}",
                   data={"instruction": plan.other})
        return {"id": plan.other, "action": plan.action.value, "duplicate": True}
    outcome = OUTCOMES[plan.action]
    iid = repo.insert_instruction(conn, {
        "order_id": order_id, "kind": what.value, "source": source[:64], "requested_at": received_at, "outcome": outcome.value,
        "detail": record_of(detail, plan), "answered_at": None if plan.action in (Action.FREEZE, Action.SUPERVISOR) else ctx.now,
    })
    execute(ctx, order, iid, what, plan, packages, detail, source=source, applied_by_caller=applied_by_caller)
    return {"id": iid, "action": plan.action.value, "outcome": outcome.value}


def locked_order(conn: sa.Connection, order_id: str) -> Any:
    order = repo.lock_orders(conn, [order_id]).get(order_id)
    if order is None:
        raise OrderHubError(ErrorCode.NOT_FOUND, f"order {order_id} does not exist", "order_id")
    return order


def plan_for(conn: sa.Connection, order: Any, what: InstructionKind, packages: list[Any], received_at: datetime,
          detail: Mapping[str, Any], *, check_conflicts: bool = True) -> Plan:
    earlier = [_earlier(r) for r in repo.instructions_of(conn, order.id)]
    plan = decide(what, views(conn, packages), earlier, requested_at=received_at, fingerprint=fingerprint(what, detail),
                  check_conflicts=check_conflicts)
    if plan.action is Action.LOCAL and order.status in (Status.SHIPPED, Status.DELIVERED, Status.COMPLETED):
        return Plan(Action.TOO_LATE, reason="订单已发货")  # shipped outside OrderHub's WMS flow: nothing here to stop
    return plan


def record_of(detail: Mapping[str, Any], plan: Plan) -> dict[str, Any]:
    return {**detail, "action": plan.action.value, "asked": list(plan.freeze), "answers": {}, "withdrawn": list(plan.withdraw),
            "late": list(plan.late), "conflicts_with": plan.other, "reason_code": plan.reason or None}


def execute(ctx: Ctx, order: Any, iid: int, what: InstructionKind, plan: Plan, packages: list[Any], detail: Mapping[str, Any], *,
             source: str, applied_by_caller: bool = False) -> None:
    conn, label = ctx.conn, _LABELS[what]
    if plan.withdraw:
        _withdraw(ctx, order, plan.withdraw, reason=f"{label}：尚未交给仓库，撤回")
    if plan.action is Action.SUPERVISOR:
        place_hold(ctx.conn, order.id, iid, f"{label}指令与 #{plan.other} 冲突（15秒内），待主管处理", ctx.now, actor=source)
        repo.event(conn, order.id, ctx.now, actor=source, kind="intercept_supervisor", reason=f"{label}指令 #{iid} 转主管：{plan.reason}",
                   data={"instruction": iid, "conflicts_with": plan.other})
        return
    if plan.action is Action.LOCAL:
        repo.event(conn, order.id, ctx.now, actor=source, kind="intercept_local", reason=f"{label}指令 #{iid}：尚未交给仓库，直接处理",
                   data={"instruction": iid, "withdrawn": list(plan.withdraw)})
        if applied_by_caller:
            notify_result(ctx, order.id, iid, what, "intercepted" if what is K.CANCEL else f"{what.value}_updated")
        else:
            _apply_here(ctx, locked_order(conn, order.id), iid, what, detail)
        return
    _update_fields(ctx, locked_order(conn, order.id), iid, what, detail, reaudit=False)
    if plan.action is Action.FREEZE:
        _send(ctx, order, iid, what, plan.freeze, packages, detail)
    else:
        too_late(ctx, order, iid, what, [p for p in packages if p.package_no in plan.late], detail)


def views(conn: sa.Connection, packages: list[Any]) -> list[PackageView]:
    """The packages as `decide` sees them; their wms.order outbox rows stay locked until the transaction ends."""
    codes = {p.wms_order_no for p in packages if p.wms_order_no}
    states = repo.outbox_states(conn, [f"wms.order:{c}" for c in codes], lock=True)
    return [PackageView(p.wms_order_no or "", p.package_no, P(p.status), states.get(f"wms.order:{p.wms_order_no}", "pending") != "pending")
            for p in packages]


def _earlier(row: Any) -> Earlier:
    detail = row.detail or {}
    return Earlier(row.id, K(row.kind), row.requested_at, Outcome(row.outcome), fingerprint(K(row.kind), detail),
                   dismissed=detail.get("decision") == "dismissed")


def _send(ctx: Ctx, order: Any, iid: int, what: InstructionKind, codes: Iterable[str], packages: list[Any], detail: Mapping[str, Any]) -> None:
    by_code = {p.wms_order_no: p for p in packages}
    kind = _FREEZE_KIND.get(what, "wms.freeze")
    for code in codes:
        payload = {"order_code": code, "instruction_id": str(iid), "kind": what.value, "order_id": order.id,
                   "requested_at": ctx.now.isoformat(), "reason": detail.get("reason")}
        if what is K.EXPEDITE:
            payload["priority"] = EXPEDITE_PRIORITY
        outbox_repo.enqueue(ctx.conn, kind=kind, endpoint=by_code[code].wms, payload=payload, idempotency_key=outbox_key(kind, iid, code),
                            order_id=order.id, priority=FREEZE_PRIORITY, now=ctx.now)
    ctx.wake()
    repo.event(ctx.conn, order.id, ctx.now, actor=ACTOR, kind="freeze_requested", reason=f"冻结指令 #{iid}（{what.value}）以最高优先级发往仓库",
               data={"instruction": iid, "codes": list(codes)})
    if what in _ALERTED:
        ctx.notify(order.id, "freeze_alert", {"instruction": what.value, "reason": detail.get("reason") or "", "key": str(iid)}, ("warehouse",))


def outbox_key(kind: str, iid: int, code: str) -> str:
    key = f"{kind}:{iid}:{code}"
    return key if len(key) <= 64 else f"{kind}:{hashlib.sha256(key.encode()).hexdigest()[:40]}"


# -- what happens to the order ----------------------------------------------------------------------


def _withdraw(ctx: Ctx, order: Any, codes: Iterable[str], *, reason: str) -> None:
    """Take packages back before the WMS got them (their wms.order is skipped by the sender); the other
    orders of a merged package are sent again without this one."""
    others: set[str] = set()
    for code in codes:
        rows = repo.packages_by_code(ctx.conn, code, lock=True)
        repo.move(ctx.conn, [(r.order_id, r.package_no) for r in rows], P.CANCELLED, (P.QUEUED,), ctx.now)
        others.update(r.order_id for r in rows if r.order_id != order.id)
    repo.event(ctx.conn, order.id, ctx.now, actor=ACTOR, kind="wms_withdrawn", reason=reason, data={"codes": list(codes)})
    resend(ctx, order.id, others)


def resend(ctx: Ctx, leaving: str, others: set[str]) -> None:
    if not others:
        return
    audit_repo.join_merge_group(ctx.conn, leaving, None, ctx.now, actor=ACTOR, reason="拦截：移出合单")
    if ctx.service is not None:
        ctx.service.queue_orders(ctx.conn, others, ctx.now)
    else:  # no WMS configured in this process: the audit sends them again
        audit_repo.set_audit_state(ctx.conn, others, audit_repo.AuditState.PENDING)


def _apply_here(ctx: Ctx, order: Any, iid: int, what: InstructionKind, detail: Mapping[str, Any]) -> None:
    if what is K.CANCEL:
        cancel_order(ctx, order, iid, "拦截成功：尚未交给仓库")
        return
    if what is K.EXPEDITE:
        if ctx.service is not None and repo.packages(ctx.conn, [order.id]):
            ctx.service.queue_orders(ctx.conn, [order.id], ctx.now, priority=EXPEDITE_PRIORITY)
        return
    _update_fields(ctx, order, iid, what, detail, reaudit=True)
    notify_result(ctx, order.id, iid, what, f"{what.value}_updated")


def _update_fields(ctx: Ctx, order: Any, iid: int, what: InstructionKind, detail: Mapping[str, Any], *, reaudit: bool) -> None:
    """A CS change carries the new address / remark: the order takes it now (a platform's change is in it already)."""
    values: dict[str, Any] = {}
    if what is K.ADDRESS and detail.get(SEALED):
        values.update(_typed_address_of(ctx, order, detail))
    elif what is K.ADDRESS and detail.get("address") and detail["address"] != order.address:
        values["address"] = dict(detail["address"])
    if what is K.REMARK and "remark" in detail and detail["remark"] != order.seller_remark:
        values["seller_remark"] = detail["remark"]
    if reaudit and order.status in (Status.PAID, Status.ON_HOLD, Status.READY):
        values["audit_state"] = audit_repo.AuditState.PENDING  # the audit decides again (warehouse, carrier, holds)
    if values:
        repo.save_order(ctx.conn, order, values, ctx.now, actor=ACTOR, kind="address_changed" if what is K.ADDRESS else "seller_remark",
                        reason=f"{'地址' if what is K.ADDRESS else '备注'}已更新（指令 #{iid}）", data={"instruction": iid})


def _typed_address_of(ctx: Ctx, order: Any, detail: Mapping[str, Any]) -> dict[str, Any]:
    """The order takes the mask; the typed street joins the buyer's other sealed PII (as order_actions.edit_address does)."""
    vault = getattr(ctx.service, "vault", None)
    if vault is None:
        raise PiiKeyError("no PII vault configured: the sealed street of this instruction cannot be opened")
    current = ctx.conn.execute(sa.select(orders.c.pii_sealed).where(orders.c.id == order.id)).scalar()
    known = vault.open(current) if current else {}
    typed = vault.open(str(detail[SEALED]))
    if detail["address"] == order.address and known.get("address_detail") == typed.get("address_detail"):
        return {}  # the address it has already
    return {"address": dict(detail["address"]), "pii_sealed": vault.seal({**known, **typed})}


def cancel_order(ctx: Ctx, order: Any, iid: int, reason: str) -> None:
    """Stock back and the order cancelled — once nothing of it is still on its way to the buyer."""
    live = [p for p in repo.packages(ctx.conn, [order.id]) if P(p.status) in LIVE]
    if live:
        return  # another package of a split order is still out there: see _too_late / the ship handler
    inventory_repo.release(ctx.conn, [order.id], actor=ACTOR, reason=f"拦截取消（指令 #{iid}）", now=ctx.now)
    if can_transition(Status(order.status), Status.CANCELLED):
        repo.save_order(ctx.conn, order, {"status": Status.CANCELLED.value, "audit_state": None, "merge_group": None}, ctx.now,
                        actor=ACTOR, kind="intercepted", reason=reason, data={"instruction": iid})
    notify_result(ctx, order.id, iid, K.CANCEL, "intercepted")


def too_late(ctx: Ctx, order: Any, iid: int, what: InstructionKind, late: list[Any], detail: Mapping[str, Any]) -> None:
    """Packed or shipped: a carrier interception (return to sender / redirect) for a cancel or a new
    address, with a hold for CS either way; a cancel of an order whose box holds other orders' goods too
    is the hold alone. A remark or an expedite that comes too late is only logged."""
    awaiting: list[int] = []
    if what is K.CANCEL and shares_a_box(ctx.conn, order.id, late):
        # the box holds another order's goods too: brought back, it would take them from the buyer as well
        place_hold(ctx.conn, order.id, iid, SHARED_BOX_REASON, ctx.now, actor=ACTOR)
    elif what in (K.CANCEL, K.ADDRESS):
        place_hold(ctx.conn, order.id, iid, f"{'取消' if what is K.CANCEL else '改地址'}未能拦截：包裹已打包/已发出，已申请快递拦截", ctx.now, actor=ACTOR)
        for p in late:
            if p.waybill_no:
                carrier_intercept(ctx.conn, order.id, iid, what, p.carrier, p.waybill_no, p.package_no, detail, ctx.now)
            else:
                awaiting.append(p.package_no)
        if awaiting:  # asked when the WMS reports the waybill (the ship handler)
            repo.add_to_detail(ctx.conn, iid, awaiting_waybill=awaiting)
    repo.event(ctx.conn, order.id, ctx.now, actor=ACTOR, kind="intercept_too_late", reason=f"指令 #{iid}（{what.value}）太晚：包裹已打包或已发出",
               data={"instruction": iid, "packages": [p.package_no for p in late], "awaiting_waybill": awaiting})
    if what is not K.EXPEDITE:
        notify_result(ctx, order.id, iid, what, "too_late")


SHARED_BOX_REASON = "取消未能拦截：合单包裹已打包/已发出，含其他订单的商品，不申请快递拦截：请联系买家退回本单商品"


def shares_a_box(conn: sa.Connection, order_id: str, packages: list[Any]) -> bool:
    """Does one of these packages travel in a merged box (合单) with another order's goods?"""
    return any(r.order_id != order_id for p in packages if p.wms_order_no for r in repo.packages_by_code(conn, p.wms_order_no))


def carrier_intercept(conn: sa.Connection, order_id: str, iid: int, what: InstructionKind | str, carrier: str | None, waybill_no: str,
                      package_no: int, detail: Mapping[str, Any], now: datetime) -> None:
    """A `carrier.intercept` outbox row: 拦截退回 for a cancel, 改址 for an address. Sent by services/late_cancels.py:
    SF through its interception API, any other carrier as a task for CS (the hold says so)."""
    cancel = InstructionKind(what) is K.CANCEL
    payload = {"action": "return" if cancel else "redirect", "carrier": carrier, "waybill_no": waybill_no, "order_id": order_id,
               "package_no": package_no, "instruction_id": str(iid), "address": None if cancel else detail.get("address"),
               "reason": detail.get("reason") or ("买家取消" if cancel else "收货地址变更")}
    if not cancel and detail.get(SEALED):
        payload[SEALED] = detail[SEALED]  # the typed street: the carrier sender opens it (PiiVault.open_address)
    outbox_repo.enqueue(conn, kind="carrier.intercept", endpoint=f"carrier:{carrier or 'unknown'}"[:64], payload=payload,
                        idempotency_key=outbox_key("carrier.intercept", iid, waybill_no), order_id=order_id, priority=FREEZE_PRIORITY, now=now)


def place_hold(conn: sa.Connection, order_id: str, iid: int, reason: str, now: datetime, *, actor: str) -> None:
    """The instruction's hold goes on the order's list; its status stays (the parcel is at the WMS either way)."""
    order = locked_order(conn, order_id)
    # this hold replaces the instruction's earlier one, and the plain one the status table put on a refused
    # platform cancel (domain/merge.py)
    holds = [h for h in (order.holds or []) if h.get("instruction") != iid
             and not (h.get("code") == HoldCode.INTERCEPT_PENDING.value and "instruction" not in h and "source" not in h)]
    holds.append({"code": HoldCode.INTERCEPT_PENDING.value, "reason": reason, "source": ACTOR, "instruction": iid})
    repo.save_order(conn, order, {"holds": holds}, now, actor=actor, kind="hold_placed", reason=reason,
                    data={"code": HoldCode.INTERCEPT_PENDING.value, "instruction": iid})


def lift_hold(conn: sa.Connection, order_id: str, iid: int, now: datetime, *, actor: str, reason: str) -> None:
    order = locked_order(conn, order_id)
    holds = [h for h in (order.holds or []) if h.get("instruction") != iid]
    if len(holds) != len(order.holds or []):
        repo.save_order(conn, order, {"holds": holds}, now, actor=actor, kind="hold_released", reason=reason, data={"instruction": iid})


def notify_result(ctx: Ctx, order_id: str, iid: int, what: InstructionKind, outcome: str) -> None:
    audience = ("cs",) if what in (K.REMARK, K.EXPEDITE) else ("cs", "buyer")
    ctx.notify(order_id, "intercept_result", {"outcome": outcome, "instruction": what.value, "key": f"{iid}:{outcome}"}, audience)


# -- platform changes of orders at the warehouse --------------------------------------------------------


@dataclass(slots=True)
class PlatformChange:
    """What one processing batch saw change on an order that may be at the warehouse (services/processing.py)."""

    actor: str
    before: str
    after: str
    kinds: frozenset[str]
    held_events: list[Event] = field(default_factory=list)  # its status events to cancelled, written only if the cancel stands


_REMARK_KINDS = frozenset({"seller_remark", "buyer_message"})
_AUDIT_KINDS = frozenset({"refund", "amounts_changed"})


def platform_changes(conn: sa.Connection, changes: Mapping[str, PlatformChange], received_at: datetime, now: datetime) -> set[str]:
    at_wms: set[str] = set()
    ids = sorted(changes)
    orders = repo.lock_orders(conn, ids)
    every: dict[str, list[Any]] = {}
    for p in repo.packages(conn, ids, lock=True):
        every.setdefault(p.order_id, []).append(p)
    for oid in ids:
        change, row, packages = changes[oid], orders[oid], every.get(oid, [])
        live = [p for p in packages if P(p.status) is not P.CANCELLED]  # on their way or shipped
        sent = any(v.handed_over or v.status is not P.QUEUED for v in views(conn, live))
        if change.after in (Status.CANCELLED, Status.CLOSED):
            if sent:
                # The platform's word does not stop a parcel: the order stays where it is until the WMS froze it.
                if row.status != change.before:
                    repo.save_order(conn, row, {"status": change.before}, now, actor=change.actor, kind="cancel_requested", log_status=False,
                                    reason=f"平台已取消：包裹已交仓库，订单保持{LABELS_ZH[Status(change.before)]}，先发冻结指令")
                request_change(conn, oid, "cancel", change.actor, received_at, {"reason": "平台取消 platform cancel", "platform": change.after}, now=now,
                               packages=packages)
                at_wms.add(oid)
                continue
            for e in change.held_events:
                repo.event(conn, oid, now, actor=e.actor, kind=e.kind, reason=e.reason, data=e.data, from_status=e.from_status, to_status=e.to_status)
            if live:
                request_change(conn, oid, "cancel", change.actor, received_at, {"reason": "平台取消 platform cancel"}, now=now, applied_by_caller=True,
                               packages=packages)
            continue
        wanted = []
        if "address_changed" in change.kinds:
            wanted.append(("address", {"address": row.address, "reason": "平台修改收货地址"}))
        if change.kinds & _REMARK_KINDS:
            wanted.append(("remark", {"remark": row.seller_remark, "buyer_message": row.buyer_message, "reason": "平台修改备注/留言"}))
        for n, (kind, detail) in enumerate(wanted if live else ()):  # the second one reads the packages the first may have withdrawn
            request_change(conn, oid, kind, change.actor, received_at, detail, now=now, applied_by_caller=not sent,
                           packages=packages if n == 0 else None)
        if sent:
            at_wms.add(oid)
            if change.kinds & _AUDIT_KINDS:
                repo.event(conn, oid, now, actor=change.actor, kind="wms_change_ignored",
                           reason="包裹已交仓库：退款/金额变更不再重新审单，请走售后", data={"kinds": sorted(change.kinds & _AUDIT_KINDS)})
    return at_wms
