"""The audit stage (审单): paid orders -> rules -> stock reserved -> `ready`, or `on_hold` with reasons.

A batch at a time. The rules run outside any write transaction (they are CPU only); then one
transaction locks the batch's orders, re-reads stock, allocates the orders in the order they were
paid, reserves all of it with a few conditional updates, and writes every decision. An order that
changed meanwhile is left for the next batch; stock that moved meanwhile (another worker) makes
the transaction roll back and run again on fresh numbers.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import audit_repo, inventory_repo
from orderhub.adapters.db.audit_repo import AuditRow, AuditState, AuditWrite
from orderhub.adapters.db.engine import is_deadlock
from orderhub.adapters.db.inventory_repo import StockConflict
from orderhub.adapters.db.tables import warehouses
from orderhub.domain.audit import Decision, GiftDecision
from orderhub.domain.inventory import Allocation, Need, allocate, apply_picks
from orderhub.domain.merge import Event, HoldCode
from orderhub.services import fulfillment
from orderhub.services.rules import LiveAudit, RuleBook

log = logging.getLogger(__name__)

ACTOR = "audit"
GIFT_LINE_BASE = 1000  # reservations of gifts are numbered after the order's own lines
_AUDIT_SOURCE = "audit"  # holds the audit placed (and may lift again on a re-audit)


@dataclass(slots=True)
class AuditResult:
    orders: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    rule_seconds: float = 0.0
    retried: int = 0


@dataclass(slots=True)
class _Verdict:
    row: AuditRow
    decision: Decision
    holds: list[dict[str, Any]] = field(default_factory=list)
    allocation: Allocation | None = None
    gifts: list[dict[str, Any]] = field(default_factory=list)
    merge_group: str | None = None


class Auditor:
    def __init__(
        self, engine: sa.Engine, rules: RuleBook, *, batch_size: int = 500, merge_window: timedelta = timedelta(minutes=30),
        allow_split: bool = True,
    ) -> None:
        self.engine = engine
        self.rules = rules
        self.batch_size = batch_size
        self.merge_window = merge_window
        self.allow_split = allow_split

    def run_once(self) -> AuditResult | None:
        with self.engine.connect().execution_options(readonly=True) as conn:
            ids = audit_repo.pending_ids(conn, self.batch_size)
            if not ids:
                return None
            rows = audit_repo.load_audit_rows(conn, ids)
            names = self._warehouses(conn)
        live = self.rules.live()
        started = time.perf_counter()
        verdicts = {row.order.id: _Verdict(row, self.rules.decide(row.order, live=live)[0]) for row in rows}
        result = AuditResult(rule_seconds=time.perf_counter() - started)
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    self._write(conn, verdicts, live, names, result)
                return result
            except (StockConflict, sa.exc.OperationalError) as exc:
                if isinstance(exc, sa.exc.OperationalError) and not is_deadlock(exc):
                    raise
                # Another worker reserved the same stock between our read and our update.
                log.info("audit batch retried: stock moved underneath (%s)", exc)
                result.retried += 1
                result.outcomes.clear()
        log.warning("audit batch gave up after repeated stock conflicts; its orders stay pending")
        return result

    @staticmethod
    def _warehouses(conn: sa.Connection) -> dict[str, str]:
        """code -> name, read every batch (a tiny table): a warehouse added later is used without a restart."""
        return dict(conn.execute(sa.select(warehouses.c.code, warehouses.c.name).order_by(warehouses.c.code)).all())

    # -- the write transaction -------------------------------------------------------------

    def _write(self, conn: sa.Connection, verdicts: dict[str, _Verdict], live: LiveAudit, names: dict[str, str], result: AuditResult) -> None:
        """Locks: the batch's orders (skipping any another worker holds), then partner orders for
        合单 (also skip-locked), then stock rows in one global order — the same order processing
        takes them in (orders, then stock), so the two cannot deadlock."""
        now = datetime.now(UTC)
        locked = audit_repo.lock_versions(conn, list(verdicts))
        current: list[_Verdict] = []
        gone: list[str] = []
        for oid, verdict in verdicts.items():
            state = locked.get(oid)
            if state is None:
                continue  # another auditor holds it
            version, status, audit_state = state
            if version != verdict.row.version or audit_state != AuditState.PENDING:
                continue  # changed since it was read: still pending, decided again next batch
            if status not in audit_repo.AUDITABLE:
                gone.append(oid)  # cancelled or gone to the warehouse meanwhile: nothing to decide
                continue
            current.append(verdict)
        if gone:
            audit_repo.set_audit_state(conn, gone, None)
        if not current:
            return
        for verdict in current:
            verdict.holds = self._holds(verdict)
        # A ready order audited again gives its stock back first: the new decision may route it elsewhere.
        again = [v.row.order.id for v in current if v.row.status == "ready"]
        held = inventory_repo.active_reservations(conn, again) if again else {}
        self._allocate(conn, current, list(names), held)
        self._merge(conn, current, now)
        writes = [self._audit_write(v, live, names, now) for v in current]
        if again:
            inventory_repo.release(conn, again, actor=ACTOR, reason="重新审单 re-audit", now=now)
        picks = {v.row.order.id: v.allocation.picks for v in current if v.allocation is not None and v.allocation.ok and not v.holds}
        inventory_repo.reserve(conn, picks, actor=ACTOR, now=now, reason=live.label)
        audit_repo.write_audits(conn, writes, now)
        # What became ready goes to the warehouse in this same transaction (a no-op without a WMS).
        fulfillment.queue_ready(conn, [w.id for w in writes], now)
        result.orders += len(writes)
        result.outcomes.update(w.values["status"] for w in writes)

    def _holds(self, verdict: _Verdict) -> list[dict[str, Any]]:
        """The order's holds after this audit: what others placed stays; the audit's own holds
        are decided afresh, except those a person released."""
        row = verdict.row
        kept = [h for h in row.holds if h.get("source") != _AUDIT_SOURCE]
        codes = {h["code"] for h in kept}
        for hold in verdict.decision.holds:
            if hold.code in row.released or hold.code in codes:
                continue
            codes.add(hold.code)
            kept.append({"code": hold.code, "reason": hold.reason, "rule": hold.rule, "source": _AUDIT_SOURCE})
        return kept

    def _allocate(self, conn: sa.Connection, verdicts: list[_Verdict], warehouse_codes: list[str], held: dict[str, list[dict[str, Any]]]) -> None:
        needs_by_order = {v.row.order.id: self._needs(v) for v in verdicts if not v.holds}
        wanted = {need.sku for needs in needs_by_order.values() for need in needs}
        available = inventory_repo.load_available(conn, wanted)
        for reservations in held.values():
            for r in reservations:
                key = (r["sku"], r["warehouse"])
                available[key] = available.get(key, 0) + r["qty"]
        # Paid first, served first (the batch was read in paid order).
        for verdict in verdicts:
            needs = needs_by_order.get(verdict.row.order.id)
            if needs is None:
                continue
            allocation = allocate(needs, available, preferred=verdict.decision.warehouse, warehouses=warehouse_codes, allow_split=self.allow_split)
            verdict.allocation = allocation
            verdict.gifts = self._gifts(verdict, allocation)
            if allocation.ok:
                apply_picks(available, allocation.picks)
                continue
            short = "；".join(f"{s.sku} 需{s.needed} 可用{max(0, s.available)}" for s in allocation.shortages)
            verdict.holds.append({"code": HoldCode.OUT_OF_STOCK.value, "reason": f"缺货：{short}", "source": _AUDIT_SOURCE})

    def _needs(self, verdict: _Verdict) -> list[Need]:
        order = verdict.row.order
        separate = verdict.decision.separate_lines
        needs = [
            Need(line.line_no, line.sku, line.qty, gift=line.gift, package=separate.get(line.line_no))
            for line in order.lines if line.sku is not None and not line.refunding
        ]
        for index, gift in enumerate(g for g in verdict.decision.gifts if g.reached):
            needs.append(Need(GIFT_LINE_BASE + index, gift.sku, gift.qty, gift=True))
        return needs

    @staticmethod
    def _gifts(verdict: _Verdict, allocation: Allocation) -> list[dict[str, Any]]:
        dropped = {need.sku for need in allocation.dropped_gifts}
        out = []
        for gift in verdict.decision.gifts:
            entry = _gift_json(gift)
            if gift.reached and gift.sku in dropped:
                entry["reached"] = False
                entry["message"] = f"{gift.message}（赠品缺货，未随单发出）"
            out.append(entry)
        return out

    def _merge(self, conn: sa.Connection, verdicts: list[_Verdict], now: datetime) -> None:
        """合单: ready orders of one shop, buyer and address, shipping from one warehouse within the
        window, go out as one package. The platform orders stay distinct (each is written back)."""
        ready = {v.row.order.id: v for v in verdicts if self._mergeable(v)}
        if not ready:
            return
        groups: dict[tuple[Any, ...], dict[str, str | None]] = {}
        pairs = {(v.row.shop_id, v.row.customer_id) for v in ready.values()}
        for r in audit_repo.merge_candidates(conn, pairs, now - self.merge_window):
            if r.id not in ready and "no_auto_merge" not in (r.tags or []):
                groups.setdefault((r.shop_id, r.customer_id, _address_key(r.address), r.warehouse), {})[r.id] = r.merge_group
        for oid, v in ready.items():
            key = (v.row.shop_id, v.row.customer_id, _address_key(v.row.address), v.allocation.warehouse)  # type: ignore[union-attr]
            groups.setdefault(key, {})[oid] = None
        for members in groups.values():
            if len(members) < 2:
                continue
            group = next((g for g in members.values() if g), None) or min(members)
            for oid, current_group in members.items():
                if current_group == group:
                    continue
                if oid in ready:
                    ready[oid].merge_group = group
                else:
                    audit_repo.join_merge_group(conn, oid, group, now, actor=ACTOR)

    @staticmethod
    def _mergeable(v: _Verdict) -> bool:
        order = v.row.order
        return (
            v.allocation is not None and v.allocation.ok and not v.holds and not v.allocation.split
            and v.row.customer_id is not None and "no_auto_merge" not in v.row.tags
            and not any(line.refunding or line.presale for line in order.lines)
        )

    def _audit_write(self, v: _Verdict, live: LiveAudit, names: dict[str, str], now: datetime) -> AuditWrite:
        row, decision = v.row, v.decision
        allocation = v.allocation
        short = any(h["code"] == HoldCode.OUT_OF_STOCK.value for h in v.holds)
        status = "on_hold" if v.holds else "ready"
        warehouse = allocation.warehouse if allocation is not None and allocation.ok else decision.warehouse
        tags = sorted(set(t for t in row.tags if t == "no_auto_merge") | set(decision.tags) | {w.code for w in decision.warnings})
        values = {
            "status": status,
            "warehouse": warehouse,
            "priority": decision.priority,
            "carrier": decision.carrier,
            "holds": v.holds,
            "tags": tags,
            # a held order still shows what its gifts would be (and what it misses for them)
            "gifts": v.gifts if allocation is not None else [_gift_json(g) for g in decision.gifts],
            "decisions": {**decision.as_dict(), "split": bool(allocation and allocation.split)},
            "rule_version": live.label,
            "audit_state": AuditState.SHORT if short else AuditState.DONE,
            "audited_at": now,
            "merge_group": v.merge_group,
        }
        if status == "ready":
            where = names.get(warehouse or "", warehouse)
            reason = f"审单通过 → {where}，优先级 {decision.priority}" + (f"，{decision.carrier}" if decision.carrier else "")
            if allocation is not None and allocation.split:
                reason += "，拆单发货"
            if v.merge_group:
                reason += f"，合单 {v.merge_group[:8]}"
        else:
            reason = "审单挂起：" + "；".join(h["reason"] for h in v.holds)
        data = {
            "rule_version": live.label, "fired": list(decision.fired), "warehouse": warehouse, "holds": [h["code"] for h in v.holds],
            "packages": _packages(allocation) if allocation is not None and allocation.ok else [],
        }
        event = Event("audited", ACTOR, row.status, status, reason, data)
        return AuditWrite(row.order.id, row.version, values, event)


def _gift_json(gift: GiftDecision) -> dict[str, Any]:
    return {"rule": gift.rule, "sku": gift.sku, "qty": gift.qty, "reached": gift.reached, "shortfall": gift.shortfall, "message": gift.message}


def _packages(allocation: Allocation) -> list[dict[str, Any]]:
    packages: dict[int, dict[str, Any]] = {}
    for pick in allocation.picks:
        package = packages.setdefault(pick.package_no, {"package_no": pick.package_no, "warehouse": pick.warehouse, "lines": []})
        package["lines"].append({"line_no": pick.line_no, "sku": pick.sku, "qty": pick.qty, "gift": pick.gift})
    return [packages[k] for k in sorted(packages)]


def _address_key(address: dict[str, Any] | None) -> tuple[Any, ...]:
    a = address or {}
    return (a.get("province"), a.get("city"), a.get("district"), a.get("detail"))
