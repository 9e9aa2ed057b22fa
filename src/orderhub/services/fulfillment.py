"""Fulfillment: ready orders go to the WMS as packages (outbox `wms.order`), WMS events move them on, changes are intercepted.

- `queue_ready` runs in the audit's transaction: one `fulfillments` row per package and one
  `wms.order` outbox row per WMS order (a 合单 merge group travels as one), at the order's
  priority, so VIP / priority orders leave first.
- WMS callbacks (`accept_wms_event`, services/wms_events.py) move packages and orders:
  ready → picking → shipped (stock consumed, parcel registered, platform write-back queued).
- Interception (`request_change`, services/interception.py) is called by processing for platform
  changes (`take_platform_changes`) and by the API for CS.
- `FulfillmentSender` wraps the WMS adapter for the relay: a package taken back before it left is
  not sent, and what the WMS answers a freeze is recorded as soon as it is known.
Docs: docs/fulfillment.md, docs/wms.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from orderhub.adapters.db import audit_log_repo, audit_repo, inventory_repo, outbox_repo
from orderhub.adapters.db import fulfillment_repo as repo
from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage
from orderhub.adapters.db.queries import local
from orderhub.adapters.db.tables import order_lines, skus
from orderhub.adapters.pii_crypto import PiiVault
from orderhub.adapters.waybills.cainiao import CainiaoWaybills
from orderhub.adapters.wms.orders import HttpWmsOrders, WmsCredentials
from orderhub.domain.access import Actor, as_actor
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.fulfillment import LIVE, Outcome, PackageStatus, parse_code, wms_order_code
from orderhub.domain.pii import redact
from orderhub.domain.status import Status
from orderhub.services import freeze_answers, interception, wms_events
from orderhub.services.interception import WAKE, PlatformChange, request_change, serving
from orderhub.services.outbox import Relay, Sender

__all__ = ["Fulfillment", "FulfillmentSender", "PlatformChange", "WmsConfig", "queue_ready", "request_change", "take_platform_changes"]

log = logging.getLogger(__name__)

ACTOR = interception.ACTOR
P = PackageStatus
_SENDABLE = (Status.READY, Status.PICKING)  # an order in any other status is not sent (again) to the WMS


@dataclass(frozen=True, slots=True)
class WmsConfig:
    """One WMS OrderHub sends packages to (settings `fulfillment.wms[]`)."""

    name: str  # outbox endpoint, fulfillments.wms, the callback path /api/v1/webhooks/wms/{name}
    base_url: str
    app_key: str
    app_secret: str
    warehouses: tuple[str, ...] = ()  # warehouse codes it serves; empty = every warehouse


def _now() -> datetime:
    return datetime.now(UTC)


class Fulfillment:
    def __init__(
        self, engine: sa.Engine, wms: Sequence[WmsConfig], *, waybills: CainiaoWaybills | None = None, http: httpx.AsyncClient | None = None,
        notifier: Any = None, tracker: Any = None, rules: Any = None, wake: Callable[[], None] | None = None,
        default_carrier: str = "ZTO", clock: Callable[[], datetime] = _now, max_skew_s: float = 300.0, callback_threads: int = 2,
        label_grace_s: float = 0.05, label_wait_s: float = 1.0, unwritten: Callable[[], datetime | None] | None = None,
        vault: PiiVault | None = None, in_broker: Callable[[list[tuple[str, str]]], Awaitable[datetime | None]] | None = None,
    ) -> None:
        """notifier: services.notifications.Notifier; tracker: services.tracking.Tracker; rules: services.rules.RuleBook
        (to tell whether a new address needs another warehouse); wake: thread-safe, wakes the outbox relay;
        unwritten: when the oldest platform message this process accepted and has not committed yet arrived;
        vault: seals the addresses CS types and opens them in the WMS sender (docs/pii.md); in_broker (scaled mode):
        when the oldest message still in the broker for these orders (channel, original id) arrived."""
        self.engine = engine
        self.vault = vault
        self.wms = {w.name: w for w in wms}
        self.waybills = waybills
        self.http = http
        self.notifier = notifier
        self.tracker = tracker
        self.rules = rules
        self.wake = wake
        self.default_carrier = default_carrier
        self.clock = clock
        self.max_skew_s = max_skew_s
        # the label gate (services/waybills.py): how long a label request waits for earlier platform messages
        self.label_grace_s, self.label_wait_s = label_grace_s, label_wait_s
        self.unwritten = unwritten or (lambda: None)
        self.in_broker = in_broker
        # WMS callbacks (a burst: five per package) get threads of their own, so they queue among
        # themselves instead of taking every worker thread the platform cancels and the relay need.
        self._callbacks = ThreadPoolExecutor(max_workers=callback_threads, thread_name_prefix="wms-callbacks")
        self.callbacks = wms_events.CallbackBatches(self)
        self._lane: tuple[Relay, asyncio.AbstractEventLoop, asyncio.Event] | None = None
        interception.register(engine, self)
        # Wake the relay once a transaction that wrote freezes or orders is over: the pool takes the
        # connection back only after its commit (or rollback; a spurious wake costs one empty claim).
        sa.event.listen(engine, "checkin", self._checked_in)

    def _checked_in(self, dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(WAKE, False):
            if self.wake is not None:
                self.wake()
            self.wake_lane()

    def wake_lane(self) -> None:
        """Wake the freeze lane now (thread-safe)."""
        lane = self._lane
        if lane is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody left to wake
                lane[1].call_soon_threadsafe(lane[2].set)

    async def run_freeze_lane(self, sender: Sender, *, idle_s: float = 0.5, **relay_options: Any) -> None:
        """A relay of its own for freezes and expedites, woken by the transaction that wrote them: it never
        waits behind a round of the main relay (hundreds of wms.order sends at a peak), nor behind the
        recording of the freeze before it (it streams: `Relay.run_streaming`). Both relays may take a
        freeze; the outbox lets one have it."""
        threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="freeze-lane")  # its claims queue behind nobody's
        lane = Relay(self.engine, {kind: sender for kind in interception.FAST_KINDS}, executor=threads, **relay_options)
        self._lane = (lane, asyncio.get_running_loop(), asyncio.Event())
        try:
            await lane.run_streaming(idle_s, wake=self._lane[2])
        finally:
            self._lane = None
            threads.shutdown(wait=False, cancel_futures=True)

    async def in_callback_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._callbacks, functools.partial(fn, *args))

    def close(self) -> None:
        self._callbacks.shutdown(wait=False, cancel_futures=True)
        if sa.event.contains(self.engine, "checkin", self._checked_in):
            sa.event.remove(self.engine, "checkin", self._checked_in)

    def wms_for(self, warehouse: str | None) -> WmsConfig | None:
        for w in self.wms.values():
            if not w.warehouses or warehouse in w.warehouses:
                return w
        return None

    def http_sender(self, http: httpx.AsyncClient) -> FulfillmentSender:
        """The relay's sender for `wms.*`: the HTTP adapter over every configured WMS, wrapped."""
        return FulfillmentSender(self, HttpWmsOrders(http, {n: WmsCredentials(w.base_url, w.app_key, w.app_secret) for n, w in self.wms.items()},
                                                     vault=self.vault))

    # -- to the WMS --------------------------------------------------------------------------

    def queue_ready(self, conn: sa.Connection, order_ids: Iterable[str], now: datetime) -> None:
        """The audit decided these orders (in this transaction): the ready ones go to the WMS; a package
        not sent yet of an order decided again is taken back (and sent again with the new decision)."""
        ids = sorted(set(order_ids))
        if not ids:
            return
        rows = repo.lock_orders(conn, ids)
        live = _by_order(p for p in repo.packages(conn, ids, lock=True) if P(p.status) in LIVE)
        views = {v.code: v for v in interception.views(conn, [p for ps in live.values() for p in ps])}
        send: list[str] = []
        for oid in ids:
            mine = live.get(oid, [])
            if any(views[p.wms_order_no].handed_over or P(p.status) is not P.QUEUED for p in mine):
                repo.event(conn, oid, now, actor=ACTOR, kind="wms_kept", reason="包裹已交仓库：重新审单不改变仓库作业（需要时请拦截）")
                continue
            if mine:
                repo.move(conn, [(p.order_id, p.package_no) for p in mine], P.CANCELLED, (P.QUEUED,), now)
            if rows[oid].status == Status.READY:
                send.append(oid)
        self.queue_orders(conn, send + self._partners(conn, rows, send, now), now)

    def _partners(self, conn: sa.Connection, rows: Mapping[str, Any], send: list[str], now: datetime) -> list[str]:
        """Orders this batch merged with that are ready already: not yet at the WMS, they are taken back and
        go along in one package; already there, the new ones go on their own (merge undone)."""
        extra: list[str] = []
        groups: dict[str, list[str]] = defaultdict(list)
        for oid in send:
            if rows[oid].merge_group:
                groups[rows[oid].merge_group].append(oid)
        for group, members in groups.items():
            others = [m for m in repo.group_members(conn, group) if m not in send]
            theirs = [p for p in repo.packages(conn, others, lock=True) if P(p.status) in LIVE]
            if any(v.handed_over or v.status is not P.QUEUED for v in interception.views(conn, theirs)):
                for oid in members:
                    audit_repo.join_merge_group(conn, oid, None, now, actor=ACTOR, reason="合单对象已交仓库，单独发货")
                continue
            repo.move(conn, [(p.order_id, p.package_no) for p in theirs], P.CANCELLED, (P.QUEUED,), now)
            extra.extend(oid for oid, row in repo.lock_orders(conn, others).items() if row.status == Status.READY)
        return extra

    def queue_orders(self, conn: sa.Connection, order_ids: Iterable[str], now: datetime, *, priority: int | None = None) -> None:
        """Send these orders' packages (their active reservations) to the WMS as new WMS orders; orders of
        one merge group among them travel as one. `priority` overrides the orders' own (an expedite)."""
        ids = sorted(set(order_ids))
        rows = {oid: row for oid, row in repo.lock_orders(conn, ids).items() if row.status in _SENDABLE}
        held = inventory_repo.active_reservations(conn, list(rows))
        titles, weights = _catalogue(conn, list(rows), {r["sku"] for rs in held.values() for r in rs})
        known = {(p.order_id, p.package_no): p.wms_order_no for p in repo.packages(conn, list(rows))}
        units = []
        for anchor, package_no, warehouse, members in _units(rows, held):
            wms = self.wms_for(warehouse)
            if wms is None:
                for oid in members:
                    repo.event(conn, oid, now, actor=ACTOR, kind="wms_missing", reason=f"没有为仓库 {warehouse} 配置 WMS：包裹未发送")
                continue
            units.append((anchor, package_no, warehouse, members, wms, _generation(anchor, package_no, [known.get((m, package_no)) for m in members])))
        used = set(repo.outbox_states(conn, [f"wms.order:{wms_order_code(u[0], u[1], u[5])}" for u in units]))
        packages: list[dict[str, Any]] = []
        for anchor, package_no, warehouse, members, wms, generation in units:
            code = wms_order_code(anchor, package_no, generation)
            while f"wms.order:{code}" in used:  # sent before under this code (a constellation since undone): the next one
                generation += 1
                code = wms_order_code(anchor, package_no, generation)
                used |= set(repo.outbox_states(conn, [f"wms.order:{code}"]))
            picks = [(oid, r) for oid in members for r in held[oid] if r["package_no"] == package_no]
            level = priority if priority is not None else max(rows[m].priority or 0 for m in members)
            carrier = next((rows[m].carrier for m in members if rows[m].carrier), None) or self.default_carrier
            payload = _wms_order(code, warehouse, level, carrier, [rows[m] for m in members], picks, titles, weights, now)
            packages.extend(
                {"order_id": oid, "package_no": package_no, "warehouse": warehouse, "wms": wms.name, "wms_order_no": code,
                 "status": P.QUEUED.value, "carrier": carrier, "priority": level, "queued_at": now, "updated_at": now}
                for oid in members
            )
            outbox_repo.enqueue(conn, kind="wms.order", endpoint=wms.name, payload=payload, idempotency_key=f"wms.order:{code}",
                                order_id=anchor, priority=level, now=now)
        repo.upsert_packages(conn, packages)
        if packages:
            conn.info[WAKE] = True

    def reroutes(self, conn: sa.Connection, order: Any, packages: list[Any]) -> bool:
        """Would the routing rules send this order (with its new address) to another warehouse?"""
        if self.rules is None or len({p.warehouse for p in packages}) != 1:
            return False
        found = audit_repo.load_audit_rows(conn, [order.id])
        if not found:
            return False
        decision = self.rules.decide(found[0].order)[0]
        return bool(decision.warehouse) and decision.warehouse != packages[0].warehouse

    def unwanted(self, message: OutboxMessage) -> str | None:
        """Why a wms.order message must not go after all (taken back, or its order no longer ready), else None.
        A read in the common case: only a package to take back costs a write transaction."""
        code = str(message.payload.get("order_code") or "")
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = [r for r in repo.packages_by_code(conn, code) if P(r.status) in LIVE]
            statuses = repo.order_statuses(conn, {r.order_id for r in rows})
        if not rows:
            return "这个包裹已撤回 / the package was taken back before it reached the WMS"
        if all(statuses.get(r.order_id) in _SENDABLE or P(r.status) is not P.QUEUED for r in rows):
            return None
        with self.engine.begin() as conn:
            orders = repo.lock_orders(conn, {r.order_id for r in rows})
            rows = [r for r in repo.packages_by_code(conn, code, lock=True) if P(r.status) in LIVE]
            stopped = [r for r in rows if P(r.status) is P.QUEUED and orders[r.order_id].status not in _SENDABLE]
            if stopped:
                # on hold or cancelled by a person meanwhile (services/order_actions): it stays here
                repo.move(conn, [(r.order_id, r.package_no) for r in rows], P.CANCELLED, (P.QUEUED,), self.clock())
                for r in stopped:
                    repo.event(conn, r.order_id, self.clock(), actor=ACTOR, kind="wms_withdrawn",
                               reason=f"订单已{orders[r.order_id].status}：包裹未发往仓库", data={"code": code})
                return "订单已不在待发货状态 / the order is no longer ready: not sent"
            if not rows:
                return "这个包裹已撤回 / the package was taken back before it reached the WMS"
        return None

    def record_reply(self, message: OutboxMessage, response: Mapping[str, Any], sent_at: datetime) -> str:
        """What the WMS answered an instruction (freeze, expedite, new address, remark, cancel)."""
        payload = message.payload
        iid, code, result = int(payload["instruction_id"]), str(payload["order_code"]), str(response.get("result") or "")
        now = self.clock()
        with self.engine.begin() as conn:
            if message.kind in ("wms.freeze", "wms.expedite"):
                return freeze_answers.record_answer(conn, iid, code, result, response.get("status"), now=now, sent_at=sent_at)
            if message.kind in ("wms.address", "wms.unfreeze"):
                return freeze_answers.record_follow_up(conn, iid, code, result, now=now)
            if message.kind == "wms.cancel" and result == "refused":
                wms_events.cancel_refused(conn, self, code, iid, now)
            elif message.kind == "wms.cancel" and result == "cancelled":
                return freeze_answers.cancel_confirmed(conn, code, iid, now)
        return "noted"

    # -- the API --------------------------------------------------------------------------------

    def intercept(self, order_id: str, kind: str, *, actor: Actor | str, reason: str | None = None, address: Mapping[str, Any] | None = None,
                  remark: str | None = None) -> dict[str, Any]:
        """A CS instruction (cancel, address, remark, expedite), in its own transaction."""
        who = as_actor(actor)
        now = self.clock()
        detail: dict[str, Any] = {"reason": reason}
        if address is not None:
            detail.update(interception.typed_address(self.vault, address))  # sealed before anything stores it
        if remark is not None:
            detail["remark"] = remark
        if kind == "address" and not detail.get("address"):
            raise OrderHubError(ErrorCode.INVALID_REQUEST, "an address change needs the new address", "address")
        with self.engine.begin() as conn:
            result = request_change(conn, order_id, kind, f"cs:{who.name}"[:64], now, detail, now=now)
            audit_log_repo.record(conn, who, "order.intercept", "order", order_id, at=now,
                                  after={"kind": kind, "detail": redact(detail), "instruction": result.get("id"), "action": result.get("action")})
            return result

    def resolve(self, instruction_id: int, decision: str, *, actor: Actor | str, reason: str | None = None) -> dict[str, Any]:
        who = as_actor(actor)
        with self.engine.begin() as conn:
            result = freeze_answers.resolve(conn, instruction_id, decision, actor=who.name, reason=reason, now=self.clock())
            audit_log_repo.record(conn, who, "interception.resolve", "interception", instruction_id,
                                  after={"decision": decision, "reason": reason, "outcome": result.get("outcome")})
            return result

    def list_interceptions(self, *, outcome: str | None = None, order_id: str | None = None, limit: int = 50,
                           before_id: int | None = None) -> dict[str, Any]:
        if outcome is not None and outcome not in {o.value for o in Outcome}:
            raise OrderHubError(ErrorCode.INVALID_REQUEST, f"outcome must be one of {', '.join(o.value for o in Outcome)}", "outcome")
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = repo.list_instructions(conn, outcome=outcome, order_id=order_id, limit=limit + 1, before_id=before_id)
        more = len(rows) > limit
        items = [instruction_json(r) for r in rows[:limit]]
        return {"items": items, "next_cursor": str(items[-1]["id"]) if more else None}

    # -- callbacks and the sweep ----------------------------------------------------------------

    async def accept_wms_event(self, name: str, headers: Mapping[str, str], body: bytes) -> tuple[bytes, str]:
        """A signed WMS callback (SignatureError: 401); the reply OrderHub gives the WMS."""
        return await wms_events.accept(self, name, headers, body)

    def reconcile(self, older_than: timedelta = timedelta(seconds=30)) -> int:
        """Instructions still waiting although their message was answered (a crash between the WMS's
        answer and its recording, a lost callback): the answer kept on the outbox row settles them."""
        settled = 0
        now = self.clock()
        with self.engine.connect() as conn:
            waiting = repo.unanswered(conn, [Outcome.PENDING.value, Outcome.FROZEN.value], now - older_than)
            sent = {(r.kind, str(r.payload.get("instruction_id")), str(r.payload.get("order_code"))): r
                    for w in {w.order_id for w in waiting}
                    for r in repo.outbox_responses(conn, w, ["wms.freeze", "wms.expedite", "wms.address", "wms.unfreeze"]) if r.response}
        for w in waiting:
            for (kind, iid, code), r in sent.items():
                if iid == str(w.id):
                    message = OutboxMessage(0, kind, "", w.order_id, None, {**r.payload, "instruction_id": iid, "order_code": code}, "", 0, 0, now)
                    settled += self.record_reply(message, r.response, r.sent_at or now) == "settled"
        return settled

    async def run_forever(self, interval_s: float = 15.0) -> None:
        while True:
            try:
                await asyncio.to_thread(self.reconcile)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fulfillment reconcile round failed")
            await asyncio.sleep(interval_s)


class FulfillmentSender:
    """The relay's sender for `wms.*` (keyed "wms"): the adapter does the HTTP, this adds what OrderHub knows."""

    def __init__(self, fulfillment: Fulfillment, inner: Sender) -> None:
        self.fulfillment = fulfillment
        self.inner = inner

    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        f = self.fulfillment
        if message.kind == "wms.order":
            reason = await asyncio.to_thread(f.unwanted, message)
            if reason is not None:
                return {"skipped": reason}
        started = f.clock()
        response = await self.inner.send(message)
        if message.kind != "wms.order" and "instruction_id" in message.payload:
            try:
                await asyncio.to_thread(f.record_reply, message, response or {}, started)
            except Exception as exc:  # sent again: the WMS answers a repeated instruction the same way
                raise DeliveryError(f"the WMS answered but the answer could not be recorded: {type(exc).__name__}: {exc}") from exc
        return response


# -- module functions (what the audit and processing call, inside their transactions) ---------------


def queue_ready(conn: sa.Connection, order_ids: Iterable[str], now: datetime) -> None:
    """The audit's hook: send what became ready to the WMS, in the audit's transaction (no WMS configured: nothing)."""
    service = serving(conn)
    if isinstance(service, Fulfillment):
        service.queue_ready(conn, order_ids, now)


def take_platform_changes(conn: sa.Connection, changes: Mapping[str, Any], received_at: datetime, now: datetime) -> set[str]:
    """Platform changes of orders that may be at the warehouse (processing's write, services/processing.py
    `_hand_over`): {order id: (actor, status before, status after, event kinds, held status events)}.
    Returns the orders whose packages the WMS has: their change became instructions here, and the
    caller must neither re-audit them nor give their stock back."""
    return interception.platform_changes(conn, changes, received_at, now)


# -- helpers ------------------------------------------------------------------------------------------


def _by_order(packages: Iterable[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for p in packages:
        out[p.order_id].append(p)
    return out


def _units(rows: Mapping[str, Any], held: Mapping[str, list[dict[str, Any]]]) -> list[tuple[str, int, str, list[str]]]:
    """(anchor, package no, warehouse, member orders) per WMS order: a merge group whose members are
    here, each with one package in the same warehouse, is one; any other package is its own."""
    units: list[tuple[str, int, str, list[str]]] = []
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for oid, row in sorted(rows.items()):
        packages = sorted({r["package_no"]: r["warehouse"] for r in held.get(oid, [])}.items())
        if row.merge_group and len(packages) == 1:
            groups[(row.merge_group, packages[0][1])].append(oid)
            continue
        units.extend((oid, no, warehouse, [oid]) for no, warehouse in packages)
    for (group, warehouse), members in sorted(groups.items()):
        number = min(r["package_no"] for m in members for r in held[m])
        units.append((group if len(members) > 1 else members[0], number, warehouse, members))
    return units


def _generation(anchor: str, package_no: int, previous: Sequence[str | None]) -> int:
    """One more than the latest code of this anchor and package (the caller also skips any outbox key seen before)."""
    generation = 1
    for code in previous:
        try:
            a, n, g = parse_code(code) if code else ("", 0, 0)
        except ValueError:
            continue
        if a == anchor and n == package_no:
            generation = max(generation, g + 1)
    return generation


def _catalogue(conn: sa.Connection, order_ids: list[str], sku_codes: set[str]) -> tuple[dict[tuple[str, int], Any], dict[str, int]]:
    lines = {(r.order_id, r.line_no): r for r in conn.execute(
        sa.select(order_lines.c.order_id, order_lines.c.line_no, order_lines.c.title, order_lines.c.platform_sku_id,
                  order_lines.c.platform_line_id).where(order_lines.c.order_id.in_(order_ids)))} if order_ids else {}
    weights = dict(conn.execute(sa.select(skus.c.code, skus.c.weight_g).where(skus.c.code.in_(sorted(sku_codes)))).all()) if sku_codes else {}
    return lines, weights


def _wms_order(code: str, warehouse: str, priority: int, carrier: str, orders: list[Any], picks: list[tuple[str, dict[str, Any]]],
               titles: Mapping[tuple[str, int], Any], weights: Mapping[str, int], now: datetime) -> dict[str, Any]:
    first = orders[0]
    buyer = first.buyer or {}
    lines = [{"order_id": oid, "line_no": r["line_no"], "sku": r["sku"], "qty": r["qty"], "gift": r["gift"],
              "title": titles[(oid, r["line_no"])].title if (oid, r["line_no"]) in titles else r["sku"]} for oid, r in picks]
    notes = lambda name: "；".join(dict.fromkeys(getattr(o, name) for o in orders if getattr(o, name))) or None  # noqa: E731
    return {
        "order_code": code, "warehouse": warehouse, "priority": priority, "carrier": carrier,
        "orders": [{"order_id": o.id, "channel": o.channel, "shop_id": o.shop_id, "original_id": o.original_id} for o in orders],
        # masked as the platform sent them: the label's plaintext comes through the waybill service (OAID)
        "recipient": {"name": buyer.get("name"), "phone": buyer.get("phone"), "address": first.address},
        "remark": notes("seller_remark"), "buyer_message": notes("buyer_message"), "lines": lines,
        "weight_g": sum(weights.get(r["sku"], 0) * r["qty"] for _, r in picks), "queued_at": now.isoformat(),
    }


def instruction_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "order_id": row["order_id"], "kind": row["kind"], "source": row["source"], "outcome": row["outcome"],
        "requested_at": local(row["requested_at"]), "sent_at": local(row["sent_at"]), "answered_at": local(row["answered_at"]),
        "resolved_by": row["resolved_by"], "detail": interception.public_detail(row["detail"]),
    }
