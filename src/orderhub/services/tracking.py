"""Logistics tracking: carrier pushes and polls onto the parcel state machine, stall rules, tickets, the order's track.

Every change is one transaction: the carrier's new scans, the parcel's state, and the order's
shipment.logistics_status, tags, tickets and event-log rows (kind `logistics`) commit together,
and so does whatever `on_stall` writes (the notifications' outbox rows). Locks are always taken
order first, then its parcels (the WMS registers a parcel while it holds the order), so two
writers cannot wait on each other. Tracking never changes the order's own status: the platform
says when an order is delivered (a status OrderHub set itself would conflict with the platform's
next "shipped" snapshot); the carrier's word goes to shipment.logistics_status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from orderhub.adapters.carriers import kuaidi100, sf
from orderhub.adapters.carriers.kuaidi100 import Kuaidi100
from orderhub.adapters.carriers.sf import Sf
from orderhub.adapters.db import audit_log_repo, outbox_repo
from orderhub.adapters.db import tracking_repo as repo
from orderhub.adapters.db.engine import is_deadlock
from orderhub.adapters.db.queries import local
from orderhub.domain import logistics as lg
from orderhub.domain.access import Actor, as_actor
from orderhub.domain.errors import ErrorCode, FetchError, OrderHubError
from orderhub.domain.logistics import LABELS_ZH, CarrierTrack, ParcelFacts, ParcelState, apply_scans
from orderhub.services.rules import RuleBook

log = logging.getLogger(__name__)

STALL_SET = "stall"
ACTOR = "tracking"
StallHook = Callable[[sa.Connection, str, str, str], None]  # (conn, order_id, code, reason)


def default_stall_rules() -> dict[str, Any]:
    """Version 1 of the stall rule set (adapters/rules/stall_defaults/stall.json); pass as RuleBook(extra_sets={"stall": this})."""
    return orjson.loads((resources.files("orderhub.adapters.rules") / "stall_defaults" / "stall.json").read_bytes())


def _no_hook(conn: sa.Connection, order_id: str, code: str, reason: str) -> None:
    return None


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _OrderChange:
    """What one transaction changes on one order: its tags and logistics status, and the event rows."""

    row: Any
    tags: list[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    logistics_status: str | None = None
    shipment_defaults: dict[str, Any] = field(default_factory=dict)  # for an order whose shipment is not written yet

    def values(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.tags != list(self.row.tags or []):
            values["tags"] = self.tags
        shipment = dict(self.row.shipment or {})
        if self.logistics_status and shipment.get("logistics_status") != self.logistics_status:
            values["shipment"] = {"carrier": None, "waybill_no": None, **self.shipment_defaults, **shipment, "logistics_status": self.logistics_status}
        return values


class Tracker:
    def __init__(
        self, engine: sa.Engine, rules: RuleBook, *, kuaidi100: Kuaidi100 | None = None, sf: Sf | None = None,
        http: httpx.AsyncClient | None = None, poll_after: timedelta = timedelta(hours=6), on_stall: StallHook | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.engine = engine
        self.rules = rules
        self.kuaidi100 = kuaidi100
        self.sf = sf
        self.http = http
        self.poll_after = poll_after
        self.on_stall = on_stall or _no_hook
        self.clock = clock

    # -- carrier pushes and polls -------------------------------------------------------------

    def accept_push(self, carrier: str, body: bytes, headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> tuple[bytes, str]:
        """Verify (SignatureError: 401, nothing kept), store, apply; the carrier's own success reply."""
        if carrier == "kuaidi100" and self.kuaidi100 is not None:
            tracks, reply = [self.kuaidi100.read_push(body)], kuaidi100.PUSH_REPLY
        elif carrier == "sf" and self.sf is not None:
            tracks, reply = self.sf.read_push(body, headers, query or {}), sf.PUSH_REPLY
        else:
            raise OrderHubError(ErrorCode.UNKNOWN_CHANNEL, f"no carrier {carrier!r} is configured for pushes", "carrier")
        for track in tracks:
            self.ingest(track, source="push")
        return reply, "application/json"

    def ingest(self, track: CarrierTrack, source: str) -> int:
        """Store a carrier's track and apply what is new; returns how many scans were new."""
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    return self._ingest(conn, track, source)
            except sa.exc.OperationalError as exc:
                if not is_deadlock(exc) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _ingest(self, conn: sa.Connection, track: CarrierTrack, source: str) -> int:
        now = self.clock()
        repo.ensure_parcel(conn, track.waybill_no, track.carrier, now)
        order = None
        for _ in range(3):  # the order first, then the parcel; re-read if the parcel was linked meanwhile
            order_id = repo.parcel(conn, track.waybill_no).order_id
            order = repo.lock_order(conn, order_id) if order_id else None
            row = repo.parcel(conn, track.waybill_no, lock=True)
            if row.order_id == order_id:
                break
        new = repo.insert_scans(conn, track.waybill_no, row.carrier, track.scans, source, now)
        start = ParcelState(row.state)
        result = apply_scans(start, new, since=row.last_event_at)
        values: dict[str, Any] = {"state": result.state.value, "updated_at": now}
        first = lg.first_scan(new)
        if first is not None and (row.first_scan_at is None or first < row.first_scan_at):
            values["first_scan_at"] = first
        newest = result.accepted[-1] if result.accepted else None
        moved = newest is not None and newest.state != ParcelState.NONE and (row.last_event_at is None or newest.at > row.last_event_at)
        if newest is not None:
            values["last_event_at"] = newest.at
        recovered = moved and result.state not in lg.EXCEPTIONS
        if moved:
            values["stall"] = None
        if source == "poll":
            values["polled_at"] = now
        repo.update_parcel(conn, track.waybill_no, values)
        if order is not None:
            change = _OrderChange(order, list(order.tags or []), shipment_defaults={"carrier": row.carrier, "waybill_no": track.waybill_no})
            for before, after, scan in lg.moves(start, result.accepted):
                change.events.append(_event(f"物流状态 {LABELS_ZH[before]} → {LABELS_ZH[after]}：{scan.description}"[:500], {
                    "waybill_no": track.waybill_no, "carrier": row.carrier, "from": before.value, "to": after.value,
                    "at": local(scan.at), "carrier_code": scan.carrier_code, "source": source,
                }))  # fmt: skip
                if after in lg.EXCEPTIONS:
                    reason = f"快递异常：{LABELS_ZH[after]}（{scan.description}）"[:500]
                    self._open(conn, change, lg.exception_kind(after), reason, "critical", [track.waybill_no], {}, scan.at, now)
            parcels_now = repo.order_parcels(conn, order.id)
            if recovered:
                self._close_recovered(conn, change, track.waybill_no, parcels_now, now)
            change.logistics_status = lg.order_logistics_status(ParcelState(p.state) for p in parcels_now).value
            repo.save_order(conn, order, change.values(), change.events, now)
        return len(new)

    async def poll_due(self, limit: int = 100) -> dict[str, int]:
        """Fallback for parcels no carrier has told us about for `poll_after`: ask the carrier's query API."""
        now = self.clock()
        with self.engine.connect().execution_options(readonly=True) as conn:
            due = repo.due_for_poll(conn, now - self.poll_after, limit)
        counts = {"due": len(due), "polled": 0, "failed": 0, "skipped": 0, "new_events": 0}
        if not due or self.http is None:
            counts["skipped"] = len(due)
            return counts
        tracks: list[CarrierTrack] = []
        asked: list[str] = []
        sf_waybills = [p.waybill_no for p in due if p.carrier == sf.CARRIER and self.sf is not None]
        for start in range(0, len(sf_waybills), sf.MAX_PER_QUERY):
            chunk = sf_waybills[start : start + sf.MAX_PER_QUERY]
            try:
                tracks.extend(await self.sf.query(self.http, chunk))  # type: ignore[union-attr]
                asked.extend(chunk)
            except FetchError as exc:
                log.warning("SF route query of %d waybills failed: %s", len(chunk), exc.message)
                counts["failed"] += len(chunk)
        for p in due:
            if p.waybill_no in sf_waybills:
                continue
            if self.kuaidi100 is None:
                counts["skipped"] += 1
                continue
            try:
                found = await self.kuaidi100.query(self.http, p.carrier, p.waybill_no)
                asked.append(p.waybill_no)
                if found is not None:
                    tracks.append(CarrierTrack(p.waybill_no, p.carrier, found.scans))
            except FetchError as exc:
                log.warning("kuaidi100 query of %s failed: %s", p.waybill_no, exc.message)
                counts["failed"] += 1
        for track in tracks:
            counts["new_events"] += await asyncio.to_thread(self.ingest, track, "poll")
        counts["polled"] = len(asked)

        def mark() -> None:
            with self.engine.begin() as conn:  # a failed query is also tried again only after poll_after
                repo.mark_polled(conn, [p.waybill_no for p in due], now)

        await asyncio.to_thread(mark)
        return counts

    def register_parcel(self, conn: sa.Connection, order_id: str, package_no: int, carrier: str, waybill_no: str, shipped_at: datetime) -> str:
        """Called in the shipping transaction (which holds the order); returns the parcel's logistics state,
        already past none when the carrier's scans arrived before the shipment did."""
        existing = repo.parcel(conn, waybill_no, lock=True)
        if existing is not None and existing.order_id not in (None, order_id):
            raise OrderHubError(ErrorCode.CONFLICT, f"waybill {waybill_no} already belongs to order {existing.order_id}", "waybill_no")
        row = repo.register(conn, waybill_no=waybill_no, carrier=carrier, order_id=order_id, package_no=package_no,
                            shipped_at=shipped_at, now=self.clock())  # fmt: skip
        if self.subscribes(carrier):
            # Kuaidi100 pushes only what was subscribed: the request goes out with the shipment (outbox,
            # retried); a replayed ship event finds the same key and asks nothing more.
            outbox_repo.enqueue(conn, kind=kuaidi100.SUBSCRIBE_KIND, endpoint="carrier:kuaidi100", order_id=order_id,
                                payload={"carrier": carrier, "waybill_no": waybill_no}, now=self.clock(),
                                idempotency_key=f"kd100-subscribe:{carrier}:{waybill_no}"[:64])
        return row.state

    @property
    def subscribing(self) -> bool:
        """Kuaidi100 is configured with a callback for its pushes: shipped parcels are subscribed."""
        return self.kuaidi100 is not None and bool(self.kuaidi100.config.callback_url)

    def subscribes(self, carrier: str) -> bool:
        """Parcels tracked by Kuaidi100 subscription: every carrier's, except SF's when SF pushes its routes itself."""
        return self.subscribing and not (carrier.upper() == sf.CARRIER and self.sf is not None)

    async def run_forever(
        self, stall_check_interval_s: float = 300.0, poll_limit: int = 100, defer_polls: Callable[[], bool] | None = None,
    ) -> None:
        """The background loop: poll silent parcels, then check stalls, every interval (one failure
        is logged, not fatal). `defer_polls` true (the peak's switch): the polls wait, stalls are checked."""
        while True:
            try:
                if defer_polls is None or not await asyncio.to_thread(defer_polls):
                    await self.poll_due(poll_limit)
                await asyncio.to_thread(self.check_stalls)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tracking round failed")
            await asyncio.sleep(stall_check_interval_s)

    # -- stalls and tickets ----------------------------------------------------------------------

    def check_stalls(self, now: datetime | None = None) -> dict[str, Any]:
        """Evaluate the live stall rule set on every parcel still on its way; open what fired."""
        now = now or self.clock()
        label, key = self.rules.live_set(STALL_SET)
        with self.engine.connect().execution_options(readonly=True) as conn:
            candidates = repo.stall_candidates(conn)
        fired: dict[str, list[tuple[Any, list[dict[str, Any]]]]] = {}
        for row in candidates:
            facts = ParcelFacts(ParcelState(row.state), row.carrier, row.shipped_at, row.first_scan_at, row.last_event_at,
                                (row.address or {}).get("province"))  # fmt: skip
            results = self.rules.rule_engine.evaluate(key, lg.stall_context(facts, now)).result or []
            results = [r for r in (results if isinstance(results, list) else [results]) if isinstance(r, dict) and r.get("code")]
            if results:
                fired.setdefault(row.order_id, []).append((row, results))
        opened = 0
        for order_id, hits in fired.items():
            with self.engine.begin() as conn:
                opened += self._stalls_of_order(conn, order_id, hits, label, now)
        return {"rule_version": label, "checked": len(candidates), "fired": sum(len(h) for h in fired.values()), "opened": opened}

    def _stalls_of_order(self, conn: sa.Connection, order_id: str, hits: list[tuple[Any, list[dict[str, Any]]]], label: str, now: datetime) -> int:
        order = repo.lock_order(conn, order_id)
        if order is None:
            return 0
        current = {p.waybill_no: p for p in repo.order_parcels(conn, order_id, lock=True)}
        change = _OrderChange(order, list(order.tags or []))
        opened = 0
        for seen, results in hits:
            row = current.get(seen.waybill_no)
            if row is None or row.last_event_at != seen.last_event_at or row.state != seen.state:
                continue  # it moved since it was evaluated: the next check sees it as it is now
            for r in results:
                detail = {"severity": r.get("severity"), "rule": r.get("rule"), "rule_version": label}
                reason = str(r.get("reason") or r["code"])
                if self._open(conn, change, str(r["code"])[:32], reason, str(r.get("severity") or "warn"), [row.waybill_no], detail, row.last_event_at, now):
                    opened += 1
            worst = next((r for r in results if r.get("severity") == "critical"), results[0])
            if row.stall != worst["code"]:
                repo.update_parcel(conn, row.waybill_no, {"stall": str(worst["code"])[:32], "updated_at": now})
        repo.save_order(conn, order, change.values(), change.events, now)
        return opened

    def _open(self, conn: sa.Connection, change: _OrderChange, kind: str, reason: str, severity: str, waybills: list[str],
              detail: dict[str, Any], last_event_at: datetime | None, now: datetime) -> bool:
        """One ticket per order and kind: none while one is open, nor while a closed one already saw this
        very situation (created after the parcel's latest scan, or ever, for kinds that do not auto-close)."""
        tickets = repo.order_tickets(conn, change.row.id)
        same = [t for t in tickets if t.kind == kind]
        if any(t.status == repo.OPEN for t in same):
            return False
        if same and (not lg.auto_closes(kind) or last_event_at is None or same[-1].created_at >= last_event_at):
            return False
        ticket_id = repo.insert_ticket(conn, change.row.id, kind, {**detail, "severity": severity, "reason": reason, "waybills": waybills}, now)
        open_kinds = {t.kind for t in tickets if t.status == repo.OPEN} | {kind}
        change.tags = lg.retag(change.tags, {t.kind for t in tickets} | {kind}, open_kinds)
        change.events.append(_event(f"物流预警：{reason}", {"ticket_id": ticket_id, "code": kind, "severity": severity, "waybills": waybills}))
        self.on_stall(conn, change.row.id, kind, reason)
        return True

    def _close_recovered(self, conn: sa.Connection, change: _OrderChange, waybill_no: str, parcels_now: list[Any], now: datetime) -> None:
        """A parcel that moves again closes the tickets it was the cause of, once every parcel they name is moving."""
        flagged = {p.waybill_no for p in parcels_now if p.stall or ParcelState(p.state) in lg.EXCEPTIONS} - {waybill_no}
        tickets = repo.order_tickets(conn, change.row.id)
        done = [t for t in tickets if t.status == repo.OPEN and lg.auto_closes(t.kind)
                and waybill_no in (t.detail or {}).get("waybills", []) and not flagged & set((t.detail or {}).get("waybills", []))]
        if done:
            self._close(conn, change, tickets, done, ACTOR, "包裹已恢复流转 the parcel moves again", now)

    def _close(self, conn: sa.Connection, change: _OrderChange, tickets: list[Any], done: list[Any], actor: str, reason: str, now: datetime) -> None:
        repo.close_tickets(conn, [t.id for t in done], actor, now, reason)
        closed = {t.id for t in done}
        open_kinds = {t.kind for t in tickets if t.status == repo.OPEN and t.id not in closed}
        change.tags = lg.retag(change.tags, {t.kind for t in tickets}, open_kinds)
        for t in done:
            change.events.append(_event(f"工单关闭：{t.kind}（{reason}）", {"ticket_id": t.id, "code": t.kind, "closed_by": actor}, actor=actor))

    def close_ticket(self, ticket_id: int, actor: Actor | str, reason: str | None) -> dict[str, Any]:
        if not reason or not reason.strip():
            raise OrderHubError(ErrorCode.INVALID_REQUEST, "say why (reason is required)", "reason")
        who = as_actor(actor)
        actor = who.name
        now = self.clock()
        with self.engine.begin() as conn:
            found = repo.ticket(conn, ticket_id)
            if found is None:
                raise OrderHubError(ErrorCode.NOT_FOUND, f"ticket {ticket_id} does not exist", "ticket_id")
            order = repo.lock_order(conn, found.order_id)
            tickets = repo.order_tickets(conn, found.order_id)
            target = next(t for t in tickets if t.id == ticket_id)
            if target.status != repo.OPEN:
                raise OrderHubError(ErrorCode.CONFLICT, f"ticket {ticket_id} is already closed", "ticket_id")
            if order is not None:
                change = _OrderChange(order, list(order.tags or []))
                self._close(conn, change, tickets, [target], actor, reason.strip(), now)
                repo.save_order(conn, order, change.values(), change.events, now)
            else:
                repo.close_tickets(conn, [ticket_id], actor, now, reason.strip())
            audit_log_repo.record(conn, who, "ticket.close", "ticket", ticket_id, before={"status": target.status, "order_id": found.order_id},
                                  after={"status": "closed", "reason": reason.strip()}, at=now)
            return ticket_json(repo.ticket(conn, ticket_id))

    # -- reading ---------------------------------------------------------------------------------

    @classmethod
    def order_tracking(cls, conn: sa.Connection, order_id: str) -> dict[str, Any]:
        """The order page's logistics block: each parcel with its state, and the whole track."""
        order = repo.order_shipment(conn, order_id)
        if order is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"order {order_id} does not exist", "order_id")
        status = (order.shipment or {}).get("logistics_status")
        return {
            "order_id": order_id, "status": order.status, "logistics_status": status, "logistics_label": _label(status) if status else None,
            "warnings": [t for t in order.tags or [] if t in lg.UMBRELLA_TAGS], "parcels": cls.parcels(conn, order_id),
            "events": cls.track(conn, order_id),
        }  # fmt: skip

    def list_tickets(self, *, status: str | None = None, kind: str | None = None, order_id: str | None = None,
                     limit: int = 50, before_id: int | None = None) -> dict[str, Any]:
        with self.engine.connect().execution_options(readonly=True) as conn:
            rows = repo.list_tickets(conn, status=status, kind=kind, order_id=order_id, limit=limit + 1, before_id=before_id)
        items = [ticket_json(r) for r in rows[:limit]]
        return {"items": items, "next_before_id": items[-1]["id"] if len(rows) > limit else None}

    @staticmethod
    def track(conn: sa.Connection, order_id: str) -> list[dict[str, Any]]:
        """Every carrier event of the order's parcels, newest first, with Chinese state labels."""
        waybills = [p.waybill_no for p in repo.order_parcels(conn, order_id)]
        return [
            {"waybill_no": e.waybill_no, "carrier": e.carrier, "at": local(e.at), "state": e.state, "state_label": _label(e.state),
             "carrier_code": e.carrier_code, "description": e.description, "location": e.location, "source": e.source}
            for e in repo.track(conn, waybills)
        ]  # fmt: skip

    @staticmethod
    def parcels(conn: sa.Connection, order_id: str) -> list[dict[str, Any]]:
        return [
            {"waybill_no": p.waybill_no, "carrier": p.carrier, "package_no": p.package_no, "state": p.state, "state_label": _label(p.state),
             "shipped_at": local(p.shipped_at), "first_scan_at": local(p.first_scan_at), "last_event_at": local(p.last_event_at),
             "stall": p.stall, "polled_at": local(p.polled_at)}
            for p in repo.order_parcels(conn, order_id)
        ]  # fmt: skip


def _label(state: str) -> str:
    try:
        return LABELS_ZH[ParcelState(state)]
    except ValueError:
        return state


def _event(reason: str, data: dict[str, Any], actor: str = ACTOR) -> dict[str, Any]:
    return {"actor": actor, "kind": "logistics", "reason": reason, "data": data}


def ticket_json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "order_id": row.order_id, "kind": row.kind, "status": row.status, "detail": row.detail,
            "created_at": local(row.created_at), "closed_at": local(row.closed_at), "closed_by": row.closed_by}  # fmt: skip
