"""What the WMS tells OrderHub: signed callbacks that move packages and orders on.

Each callback is idempotent: a package moves only from the statuses the event allows
(domain.fulfillment.EVENT_MOVES), so a replayed or late event changes nothing; the order follows
(ready → picking on the first accepted package, → shipped once no package is on its way), each
change with an order event. Shipping a package consumes its stock, registers the parcel with
tracking, queues the platform write-back (`platform.ship`) and tells the buyer. Callbacks are
applied in group commits (`CallbackBatches`); a `waybill_request` is services/waybills.py.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from orderhub.adapters.channels.http_common import header_value
from orderhub.adapters.db import audit_repo, inventory_repo, outbox_repo
from orderhub.adapters.db import fulfillment_repo as repo
from orderhub.adapters.db.engine import is_deadlock
from orderhub.adapters.db.tables import fulfillments, order_lines
from orderhub.adapters.wms.stock import wms_signature
from orderhub.domain.errors import ErrorCode, OrderHubError, SignatureError
from orderhub.domain.fulfillment import EVENT_MOVES, LIVE, InstructionKind, Outcome, PackageStatus
from orderhub.domain.merge import HoldCode
from orderhub.domain.status import LABELS_ZH, Status, can_transition
from orderhub.services import freeze_answers, waybills
from orderhub.services.interception import ACTOR, SHARED_BOX_REASON, WAKE, place_hold

if TYPE_CHECKING:
    from orderhub.services.fulfillment import Fulfillment, WmsConfig

log = logging.getLogger(__name__)

P = PackageStatus
_PROGRESS = {"accepted": "仓库已接单", "picking": "仓库开始拣货", "packed": "仓库已打包"}
_GIFT_LINES = 1000  # reservations of gifts are numbered from here (services/audit.py): not platform lines


def _reply(data: Any = None, **extra: Any) -> tuple[bytes, str]:
    return orjson.dumps({"code": 0, "message": "ok", "data": data, **extra}), "application/json"


# -- the webhook ------------------------------------------------------------------------------------


async def accept(service: Fulfillment, name: str, headers: Mapping[str, str], body: bytes) -> tuple[bytes, str]:
    wms = service.wms.get(name)
    if wms is None:
        raise OrderHubError(ErrorCode.UNKNOWN_CHANNEL, f"no WMS named {name!r} is configured", "name")
    _verify(service, wms, headers, body)
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "a WMS callback is a JSON object with an event", "event")
    if event["event"] == "waybill_request":
        return _reply(await waybills.answer(service, wms, event))
    return _reply(result=await service.callbacks.apply(wms, event))


def _verify(service: Fulfillment, wms: WmsConfig, headers: Mapping[str, str], body: bytes) -> None:
    """The WMS signs its callbacks as OrderHub signs its calls: HMAC-SHA256 with the same app secret."""
    app_key, timestamp, signature = (header_value(headers, h) for h in ("X-WMS-App-Key", "X-WMS-Timestamp", "X-WMS-Signature"))
    if not app_key or not timestamp or not signature:
        raise SignatureError(ErrorCode.SIGNATURE_MISSING, "X-WMS-App-Key, X-WMS-Timestamp and X-WMS-Signature are required", "X-WMS-Signature")
    if app_key != wms.app_key:
        raise SignatureError(ErrorCode.SIGNATURE_INVALID, f"app key {app_key!r} is not the one of WMS {wms.name}", "X-WMS-App-Key")
    if not timestamp.isdigit() or abs(service.clock().timestamp() - int(timestamp)) > service.max_skew_s:
        raise SignatureError(ErrorCode.SIGNATURE_INVALID, f"X-WMS-Timestamp is not within {service.max_skew_s:g} s of now", "X-WMS-Timestamp")
    if not hmac.compare_digest(wms_signature(wms.app_secret, timestamp, body), signature.lower()):
        raise SignatureError(ErrorCode.SIGNATURE_INVALID, "X-WMS-Signature does not match the body", "X-WMS-Signature")


class CallbackBatches:
    """WMS callbacks applied in group commits: while one transaction runs, the callbacks arriving meanwhile
    gather and the next transaction takes them all (one savepoint each, so one bad event fails alone).
    At a peak (five callbacks per package) this is what keeps the database free for the cancels."""

    def __init__(self, service: Fulfillment, max_batch: int = 200) -> None:
        self.service = service
        self.max_batch = max_batch
        self._waiting: list[tuple[WmsConfig, dict[str, Any], asyncio.Future[Any]]] = []
        self._draining = False

    async def apply(self, wms: WmsConfig, event: dict[str, Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((wms, event, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                try:
                    results = await self.service.in_callback_thread(_apply_all, self.service, [(w, e) for w, e, _ in batch])
                except Exception as exc:  # the database is away (or the threads shut down): the WMS sends it again
                    results = [exc] * len(batch)
                except BaseException:  # cancelled: nobody may be left waiting
                    self._settle(batch, [RuntimeError("shutting down")] * len(batch))
                    raise
                self._settle(batch, results)
        finally:
            self._draining = False
            task = asyncio.current_task()
            if self._waiting and task is not None and task.cancelling():
                waiting, self._waiting = self._waiting, []
                self._settle(waiting, [RuntimeError("shutting down")] * len(waiting))

    @staticmethod
    def _settle(batch: list[tuple[WmsConfig, dict[str, Any], asyncio.Future[Any]]], results: list[Any]) -> None:
        """Each caller gets its result (an exception is raised to it)."""
        for (_, _, future), result in zip(batch, results, strict=True):
            if not future.done():
                (future.set_exception if isinstance(result, BaseException) else future.set_result)(result)


def _apply_all(service: Fulfillment, items: list[tuple[WmsConfig, dict[str, Any]]]) -> list[Any]:
    # the global lock order across the group: its orders first (in id order), then the packages' and orders'
    # callbacks, then the WMS's stock counts (stock rows last, as every single transaction takes them)
    order = sorted(range(len(items)), key=lambda i: items[i][1].get("event") == "stock")
    careful = False  # each event in a savepoint of its own: only once an event of the group was refused
    deadlocks = 0
    while True:
        try:
            with service.engine.begin() as conn:
                repo.lock_for_codes(conn, [str(e.get("order_code") or "") for _, e in items if e.get("event") != "stock"])
                out: list[Any] = [None] * len(items)
                for i in order:
                    if not careful:  # a refusal undoes the whole group, which then runs again, carefully
                        out[i] = _apply_in(conn, service, *items[i])
                        continue
                    savepoint = conn.begin_nested()
                    try:
                        out[i] = _apply_in(conn, service, *items[i])
                        savepoint.commit()
                    except OrderHubError as exc:
                        savepoint.rollback()
                        out[i] = exc
                return out
        except OrderHubError as exc:  # an event refused: the transaction and all of the group's writes are undone
            if careful:
                raise  # careful, events' refusals stay in their savepoints: this one is the group's own (lock_for_codes)
            if len(items) == 1:
                return [exc]
            careful = True
        except sa.exc.OperationalError as exc:
            deadlocks += 1
            if not is_deadlock(exc) or deadlocks == 5:
                raise


def _apply_in(conn: sa.Connection, service: Fulfillment, wms: WmsConfig, event: dict[str, Any]) -> Any:
    kind, now = event["event"], service.clock()
    if kind == "stock":
        return _stock(conn, wms, event, now)
    code = str(event.get("order_code") or "")
    orders, rows = repo.locked_by_code(conn, wms.name, code, orders_locked=True)  # _apply_all took the orders' locks
    at = _time(event.get("at")) or now
    iid = event.get("instruction_id")
    if kind in ("frozen", "refused"):
        if not str(iid or "").isdigit():
            raise OrderHubError(ErrorCode.INVALID_REQUEST, "a freeze answer names its instruction_id", "instruction_id")
        return freeze_answers.record_answer(conn, int(iid), code, kind, event.get("status"), now=now)
    if kind == "unfrozen":
        if str(iid or "").isdigit():
            return freeze_answers.record_follow_up(conn, int(iid), code, "unfrozen", now=now)
        return repo.move(conn, _keys(rows), P.ACCEPTED, (P.FROZEN,), now)
    if kind == "cancelled":
        return _cancelled(conn, wms, orders, rows, iid, now)
    if kind in _PROGRESS:
        return _progress(conn, wms, orders, rows, kind, code, at, now)
    if kind == "shipped":
        return _shipped(conn, service, wms, orders, rows, event, at, now)
    raise OrderHubError(ErrorCode.INVALID_REQUEST, f"unknown WMS event {kind!r}", "event")


def _keys(rows: list[Any]) -> list[tuple[str, int]]:
    return [(r.order_id, r.package_no) for r in rows]


def _time(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def _progress(conn: sa.Connection, wms: WmsConfig, orders: dict[str, Any], rows: list[Any], kind: str, code: str, at: datetime,
              now: datetime) -> str:
    target, sources = EVENT_MOVES[kind]
    moving = [r for r in rows if P(r.status) in sources]
    if not moving:
        return "stale"
    f = fulfillments.c
    values = {"packed_at": at} if kind == "packed" else {"accepted_at": sa.func.coalesce(f.accepted_at, at)}
    repo.move(conn, _keys(moving), target, sources, now, **values)
    actor = f"wms:{wms.name}"
    for oid in sorted({r.order_id for r in moving}):
        row = orders[oid]
        if kind != "packed" and row.status == Status.READY:
            repo.save_order(conn, row, {"status": Status.PICKING.value}, now, actor=actor, kind="status",
                            reason=f"{_PROGRESS[kind]}，配货中 WMS {kind}", data={"code": code})
        else:
            repo.event(conn, oid, now, actor=actor, kind=f"wms_{kind}", reason=_PROGRESS[kind], data={"code": code})
    return kind


def _cancelled(conn: sa.Connection, wms: WmsConfig, orders: dict[str, Any], rows: list[Any], iid: Any, now: datetime) -> str:
    """The WMS dropped a package: ours (the ack of a wms.cancel) or its own doing (a person must look)."""
    target, sources = EVENT_MOVES["cancelled"]
    moving = [r for r in rows if P(r.status) in sources]
    repo.move(conn, _keys(moving), target, sources, now)
    ours = str(iid or "").isdigit()
    if ours and rows:
        freeze_answers.cancel_confirmed(conn, rows[0].wms_order_no, int(iid), now)
    for oid in sorted({r.order_id for r in moving}):
        if ours:
            repo.event(conn, oid, now, actor=f"wms:{wms.name}", kind="wms_cancelled", reason=f"仓库已取消包裹（指令 #{iid}）")
            continue
        row = orders[oid]
        holds = [*(row.holds or []), {"code": HoldCode.MANUAL.value, "reason": "仓库取消了包裹：请核实后重新发货或取消订单", "source": "fulfillment"}]
        repo.save_order(conn, row, {"holds": holds}, now, actor=f"wms:{wms.name}", kind="wms_cancelled", reason="仓库自行取消了包裹")
    return "cancelled" if moving else "stale"


def cancel_refused(conn: sa.Connection, service: Fulfillment, code: str, iid: int, now: datetime) -> None:
    """A frozen package the WMS would not cancel after all (it says packed): it will ship, so the cancel is too
    late after all and the carrier is asked to bring the parcel back as soon as the ship event names its waybill.
    A merged package ships with the other orders' goods in it: those orders ship as they were (never sent a
    second time) and the carrier is not asked to bring the box back; the order's own goods are a task for CS."""
    first = repo.instruction(conn, iid)
    if first is None:
        return
    rows = repo.packages_by_code(conn, code)  # without the cancelled order when it left the merge group: `others` are the rest
    repo.lock_orders(conn, sorted({first.order_id, *(r.order_id for r in rows)}))  # the orders first: the global lock order
    row = repo.instruction(conn, iid, lock=True)
    detail = dict(row.detail or {})
    detail.pop("after_cancel", None)  # nothing is sent again: the box ships
    others = [r for r in rows if r.order_id != row.order_id]
    mine = [r.package_no for r in rows if r.order_id == row.order_id]
    if others:
        repo.move(conn, _keys(others), P.PACKED, (P.CANCELLED,), now)
    if others and row.kind == InstructionKind.CANCEL:
        reason = SHARED_BOX_REASON  # brought back, the box would take the other orders' goods from the buyer too
    else:  # alone, or a new address: the whole box is redirected
        detail["awaiting_waybill"] = sorted({*(detail.get("awaiting_waybill") or ()), *mine})
        reason = "仓库拒绝取消：已打包，发出后将申请快递拦截"
    repo.update_instruction(conn, iid, [row.outcome], outcome=Outcome.TOO_LATE.value, detail=detail)
    actor = f"wms:{rows[0].wms}" if rows else "fulfillment"
    repo.event(conn, row.order_id, now, actor=actor, kind="intercept_too_late", reason=f"仓库拒绝取消包裹（指令 #{iid}）：已打包")
    place_hold(conn, row.order_id, iid, reason, now, actor=ACTOR)
    for oid in sorted({r.order_id for r in others}):
        repo.event(conn, oid, now, actor=actor, kind="wms_cancel_refused",
                   reason=f"仓库拒绝取消合单包裹 {code}（指令 #{iid}）：本单随包裹照常发出", data={"instruction": iid, "code": code})


# -- shipping ----------------------------------------------------------------------------------------


def _shipped(conn: sa.Connection, service: Fulfillment, wms: WmsConfig, orders: dict[str, Any], rows: list[Any], event: dict[str, Any],
             at: datetime, now: datetime) -> str:
    waybill = str(event.get("waybill_no") or next((r.waybill_no for r in rows if r.waybill_no), "") or "")
    if not waybill:
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "a shipped event carries the waybill_no", "waybill_no")
    carrier = str(event.get("carrier") or next((r.carrier for r in rows if r.carrier), None) or service.default_carrier)
    actor = f"wms:{wms.name}"
    f = fulfillments.c
    shipped: list[Any] = []
    for r in rows:
        if P(r.status) is P.CANCELLED:
            repo.event(conn, r.order_id, now, actor=actor, kind="wms_shipped_cancelled", reason=f"仓库发出了已取消的包裹 {waybill}：请拦截")
            freeze_answers.awaiting_waybill(conn, r.order_id, r.package_no, carrier, waybill, now)  # a refused wms.cancel's interception
        elif repo.move(conn, [(r.order_id, r.package_no)], P.SHIPPED, EVENT_MOVES["shipped"][1], now, carrier=carrier, waybill_no=waybill,
                       shipped_at=at, packed_at=sa.func.coalesce(f.packed_at, at)):
            shipped.append(r)
    registered: str | None = None
    for r in shipped:
        oid, row = r.order_id, orders[r.order_id]
        lines = _package_lines(conn, oid, r.package_no)
        inventory_repo.consume(conn, [oid], actor=actor, now=now, package_no=r.package_no)
        state = "none"
        if service.tracker is not None and registered is None:  # a merged package is one parcel, tracked on its first order
            try:
                state = service.tracker.register_parcel(conn, oid, r.package_no, carrier, waybill, at)
                registered = oid
            except OrderHubError as exc:
                repo.event(conn, oid, now, actor=actor, kind="parcel_conflict", reason=exc.message)
        outbox_repo.enqueue(conn, kind="platform.ship", endpoint=f"{row.channel}:{row.shop_id}"[:64], order_id=oid, now=now,
                            idempotency_key=f"platform.ship:{oid}:{r.package_no}", payload={
                                "channel": row.channel, "shop_id": row.shop_id, "original_id": row.original_id, "order_id": oid,
                                "carrier": carrier, "waybill_no": waybill, "package_no": r.package_no, "lines": lines,
                                "shipped_at": at.isoformat()})
        freeze_answers.awaiting_waybill(conn, oid, r.package_no, carrier, waybill, now)
        _order_shipped(conn, service, oid, state, actor, now)
    conn.info[WAKE] = True
    return "shipped" if shipped else "stale"


def _package_lines(conn: sa.Connection, order_id: str, package_no: int) -> list[dict[str, Any]]:
    """The platform lines in one package (gifts are OrderHub's own: not written back)."""
    held = [r for r in inventory_repo.active_reservations(conn, [order_id]).get(order_id, []) if r["package_no"] == package_no]
    platform = {row.line_no: row for row in conn.execute(
        sa.select(order_lines.c.line_no, order_lines.c.platform_sku_id, order_lines.c.platform_line_id).where(order_lines.c.order_id == order_id))}
    out: dict[int, dict[str, Any]] = {}
    for r in held:
        if r["line_no"] >= _GIFT_LINES:
            continue
        line = out.setdefault(r["line_no"], {"line_no": r["line_no"], "sku": r["sku"], "qty": 0,
                                             "platform_sku_id": getattr(platform.get(r["line_no"]), "platform_sku_id", None),
                                             "platform_line_id": getattr(platform.get(r["line_no"]), "platform_line_id", None)})
        line["qty"] += r["qty"]
    return [out[k] for k in sorted(out)]


def _order_shipped(conn: sa.Connection, service: Fulfillment, order_id: str, state: str, actor: str, now: datetime) -> None:
    """Once none of its packages is on its way any more, the order is shipped (stock of dropped packages back)."""
    packages = repo.packages(conn, [order_id])
    row = repo.lock_orders(conn, [order_id])[order_id]
    going = [p for p in packages if P(p.status) in LIVE]
    sent = [p for p in packages if P(p.status) is P.SHIPPED]
    if going:
        repo.event(conn, order_id, now, actor=actor, kind="package_shipped",
                   reason=f"包裹已发出（{len(sent)}/{len(sent) + len(going)}）", data={"waybills": [p.waybill_no for p in sent]})
        return
    inventory_repo.release(conn, [order_id], actor=actor, reason="已取消包裹的库存 stock of dropped packages", now=now)
    first = sent[0]
    logistics = (row.shipment or {}).get("logistics_status") or state
    shipment: dict[str, Any] = {"carrier": first.carrier, "waybill_no": first.waybill_no, "logistics_status": logistics}
    if len(sent) > 1:
        shipment["waybills"] = [{"package_no": p.package_no, "carrier": p.carrier, "waybill_no": p.waybill_no} for p in sent]
    reason = f"已发货：{first.carrier} {first.waybill_no}"
    if can_transition(Status(row.status), Status.SHIPPED):
        repo.save_order(conn, row, {"status": Status.SHIPPED.value, "shipment": shipment, "audit_state": None}, now, actor=actor,
                        kind="status", reason=reason, data={"waybills": [p.waybill_no for p in sent]})
    else:
        repo.save_order(conn, row, {"shipment": shipment}, now, actor=actor, kind="status_conflict",
                        reason=f"{reason}（订单状态 {LABELS_ZH[Status(row.status)]}，未改为已发货）")
    if service.notifier is not None:
        service.notifier.notify(conn, order_id, "shipped", context={"key": first.waybill_no}, now=now)


def _stock(conn: sa.Connection, wms: WmsConfig, event: dict[str, Any], now: datetime) -> dict[str, int]:
    try:
        counts = [(str(i["sku"]), str(i["warehouse"]), int(i["on_hand"])) for i in event["items"]]
    except (KeyError, TypeError, ValueError):
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "a stock event carries items [{sku, warehouse, on_hand}]", "items") from None
    went_up = inventory_repo.sync_on_hand(conn, counts, actor=f"wms:{wms.name}", reason="WMS 库存回调 stock callback", now=now)
    audit_repo.requeue_short(conn, {sku for sku, _ in went_up})
    return {"updated": len(counts)}
