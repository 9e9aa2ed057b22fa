"""Try a rule draft before publishing it: a dry run on one order (the decision and why) and a
back-test over the last N days of orders (which orders would change, and how), answered at once
or run as a job the console follows (services/jobs.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import audit_repo
from orderhub.domain.access import SYSTEM, Actor
from orderhub.domain.audit import AuditOrder, Decision
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.services.jobs import BACKTEST, JobRunner
from orderhub.services.rules import RuleBook

_CHUNK = 500
SAMPLE_LIMIT = 200


def decision_changes(before: Decision, after: Decision) -> dict[str, Any]:
    """What a user would see change on the order: warehouse, priority, holds, gifts, carrier."""
    changes: dict[str, Any] = {}
    if before.warehouse != after.warehouse:
        changes["warehouse"] = {"from": before.warehouse, "to": after.warehouse}
    if before.priority != after.priority:
        changes["priority"] = {"from": before.priority, "to": after.priority}
    if before.carrier != after.carrier:
        changes["carrier"] = {"from": before.carrier, "to": after.carrier}
    held_before, held_after = {h.code for h in before.holds}, {h.code for h in after.holds}
    if held_before != held_after:
        changes["holds"] = {"added": sorted(held_after - held_before), "removed": sorted(held_before - held_after)}
    gifts_before = {(g.sku, g.qty) for g in before.gifts if g.reached}
    gifts_after = {(g.sku, g.qty) for g in after.gifts if g.reached}
    if gifts_before != gifts_after:
        changes["gifts"] = {"added": sorted(f"{s}×{q}" for s, q in gifts_after - gifts_before),
                            "removed": sorted(f"{s}×{q}" for s, q in gifts_before - gifts_after)}
    return changes


def dry_run(
    engine: sa.Engine, rules: RuleBook, name: str, *, order_id: str | None = None, order: dict[str, Any] | None = None,
    content: dict[str, Any] | None = None, version: int | None = None,
) -> dict[str, Any]:
    """The draft's decision on one stored order (or an order body), beside the live decision."""
    if (order_id is None) == (order is None):
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "give either order_id or an order body", "order_id")
    with engine.connect().execution_options(readonly=True) as conn:
        if order_id is not None:
            rows = audit_repo.load_audit_rows(conn, [order_id])
            if not rows:
                raise OrderHubError(ErrorCode.NOT_FOUND, f"order {order_id} does not exist", "order_id")
            subject = rows[0].order
        else:
            subject = audit_repo.audit_order_from_body(conn, order or {})
    live = rules.live()
    draft = rules.with_draft(name, content, version)
    before, _ = rules.decide(subject, live=live)
    after, trace = rules.decide(subject, live=draft, trace=True)
    return {
        "order_id": subject.id,
        "rule_set": name,
        "live": {"rule_version": live.label, "decision": before.as_dict()},
        "draft": {"version": draft.sets.get(name), "decision": after.as_dict()},
        "changes": decision_changes(before, after),
        "trace": (trace or {}).get(name),
    }


def backtest(
    engine: sa.Engine, rules: RuleBook, name: str, *, days: float = 7, limit: int = 20_000, content: dict[str, Any] | None = None,
    version: int | None = None, progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Re-decide the last `days` of paid orders with the draft and with the live rules;
    `progress(done, total)` hears of the total first, then after every chunk of orders."""
    _check_days(days)
    live = rules.live()
    draft = rules.with_draft(name, content, version)
    now = datetime.now(UTC)
    with engine.connect().execution_options(readonly=True) as conn:
        ids = audit_repo.recent_audit_ids(conn, days, limit, now)
    if progress is not None and ids:  # nothing to replay: no progress to tell
        progress(0, len(ids))
    counts: Counter[str] = Counter()
    samples: list[dict[str, Any]] = []
    changed = 0
    for start in range(0, len(ids), _CHUNK):
        with engine.connect().execution_options(readonly=True) as conn:
            rows = audit_repo.load_audit_rows(conn, ids[start : start + _CHUNK])
        for row in rows:
            changes = _compare(rules, row.order, live, draft)
            if not changes:
                continue
            changed += 1
            counts.update(_kinds(changes))
            if len(samples) < SAMPLE_LIMIT:
                samples.append({"order_id": row.order.id, "channel": row.order.channel, "changes": changes})
        if progress is not None:
            progress(min(start + _CHUNK, len(ids)), len(ids))
    return {
        "rule_set": name, "draft_version": draft.sets.get(name), "live_rule_version": live.label, "days": days,
        "orders": len(ids), "changed": changed, "by_change": dict(sorted(counts.items())), "samples": samples,
        "truncated": len(ids) >= limit,
    }


def start_backtest(
    runner: JobRunner, engine: sa.Engine, rules: RuleBook, name: str, *, days: float = 7, limit: int = 20_000,
    content: dict[str, Any] | None = None, version: int | None = None, actor: Actor = SYSTEM,
) -> int:
    """The back-test as a job: its id at once, the report as the job's result. A draft that does
    not compile or a set that does not exist fails the job with the code `backtest` would raise."""
    _check_days(days)
    params = {"rule_set": name, "days": days, "limit": limit, "version": version, "content": content is not None}

    def work(progress: Callable[[int, int], None]) -> dict[str, Any]:
        return backtest(engine, rules, name, days=days, limit=limit, content=content, version=version, progress=progress)

    return runner.start(BACKTEST, work, actor=actor, params=params)


def _check_days(days: float) -> None:
    if days <= 0 or days > 90:
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "days must be between 0 and 90", "days")


def _compare(rules: RuleBook, order: AuditOrder, live: Any, draft: Any) -> dict[str, Any]:
    before, _ = rules.decide(order, live=live)
    after, _ = rules.decide(order, live=draft)
    return decision_changes(before, after)


def _kinds(changes: dict[str, Any]) -> list[str]:
    kinds = []
    for key, value in changes.items():
        if key in ("holds", "gifts"):
            kinds.extend(f"{key}_{side}:{code}" for side in ("added", "removed") for code in value[side])
        else:
            kinds.append(key)
    return kinds
