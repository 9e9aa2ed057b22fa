"""What people do to an order from the exception queue (异常订单) and the order page: release or
resolve a hold, hold by hand, edit the address, cancel, merge and unmerge. One transaction each,
each written to the order's event log with who and why, and to the audit log with before and after."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import audit_log_repo, audit_repo, inventory_repo
from orderhub.adapters.db.audit_repo import AuditState
from orderhub.adapters.db.tables import order_events, orders
from orderhub.adapters.pii_crypto import PiiVault
from orderhub.domain.access import Actor, as_actor
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.merge import HoldCode
from orderhub.domain.pii import mask_address_detail

_BEFORE_WAREHOUSE = ("paid", "on_hold", "ready")


def _load(conn: sa.Connection, order_id: str, version: int | None) -> Any:
    query = sa.select(orders).where(orders.c.id == order_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # a console edit waits for the worker's write, then checks the version
    row = conn.execute(query).mappings().first()
    if row is None:
        raise OrderHubError(ErrorCode.NOT_FOUND, f"order {order_id} does not exist", "order_id")
    if version is not None and row["version"] != version:
        raise OrderHubError(ErrorCode.CONFLICT, f"order {order_id} changed (version {row['version']}, you had {version}): reload it", "version")
    return row


def _save(conn: sa.Connection, row: Any, now: datetime, values: dict[str, Any], kind: str, actor: Actor, reason: str,
          data: dict[str, Any] | None = None) -> dict[str, Any]:
    conn.execute(sa.update(orders).where(orders.c.id == row["id"]).values(**values, version=orders.c.version + 1, modified_at=now))
    conn.execute(order_events.insert().values(
        order_id=row["id"], at=now, actor=actor.name, kind=kind, from_status=row["status"], to_status=values.get("status", row["status"]),
        reason=reason, data=data,
    ))
    before, after = audit_log_repo.changed(row, {**values, "status": values.get("status", row["status"])})
    audit_log_repo.record(conn, actor, f"order.{kind}", "order", row["id"], before={**before, "version": row["version"]},
                          after={**after, "version": row["version"] + 1, "reason": reason}, at=now)
    return {"id": row["id"], "status": values.get("status", row["status"]), "version": row["version"] + 1}


def _require_reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "say why (reason is required)", "reason")
    return reason.strip()


def _drop_holds(row: Any, code: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    holds = list(row["holds"] or [])
    if not holds:
        raise OrderHubError(ErrorCode.CONFLICT, f"order {row['id']} has no holds", "code")
    gone = [h for h in holds if code is None or h["code"] == code]
    if not gone:
        raise OrderHubError(ErrorCode.NOT_FOUND, f"order {row['id']} has no {code} hold", "code")
    return [h for h in holds if h not in gone], gone


def release_hold(engine: sa.Engine, order_id: str, *, actor: Actor | str, reason: str | None, code: str | None = None, version: int | None = None) -> dict[str, Any]:
    """放行: lift a hold (or all) and audit again; the rules will not put the same code back."""
    return _lift(engine, order_id, as_actor(actor), reason, code, version, remember=True)


def resolve_hold(engine: sa.Engine, order_id: str, *, actor: Actor | str, reason: str | None, code: str | None = None, version: int | None = None) -> dict[str, Any]:
    """标记已处理: the cause was dealt with (address fixed, remark clarified); the order is audited
    again and the rules may still hold it if the cause is still there."""
    return _lift(engine, order_id, as_actor(actor), reason, code, version, remember=False)


def _lift(engine: sa.Engine, order_id: str, actor: Actor, reason: str | None, code: str | None, version: int | None, *, remember: bool) -> dict[str, Any]:
    reason = _require_reason(reason)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = _load(conn, order_id, version)
        left, gone = _drop_holds(row, code)
        values: dict[str, Any] = {"holds": left}
        if remember:  # stock is checked on every audit: an out_of_stock hold is never remembered as released
            released = set(row["released_holds"] or []) | {h["code"] for h in gone if h["code"] != HoldCode.OUT_OF_STOCK.value}
            values["released_holds"] = sorted(released)
        if row["status"] in _BEFORE_WAREHOUSE and not _manual(left):
            values["audit_state"] = AuditState.PENDING
        kind = "hold_released" if remember else "hold_resolved"
        return _save(conn, row, now, values, kind, actor, reason, {"codes": [h["code"] for h in gone]})


def _manual(holds: list[dict[str, Any]]) -> bool:
    return any(h.get("source") == "manual" for h in holds)


def hold_order(engine: sa.Engine, order_id: str, *, actor: Actor | str, reason: str | None, code: str = HoldCode.MANUAL.value, version: int | None = None) -> dict[str, Any]:
    """挂起 by hand: a ready order gives its stock back; it stays held until a person releases it."""
    reason = _require_reason(reason)
    actor = as_actor(actor)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = _load(conn, order_id, version)
        if row["status"] not in _BEFORE_WAREHOUSE:
            raise OrderHubError(ErrorCode.ORDER_STATE, f"order {order_id} is {row['status']}: only orders not yet at the warehouse can be held", "status")
        if row["status"] == "ready":
            _give_back(conn, order_id, actor, f"人工挂起 {reason}", now)
        holds = [h for h in row["holds"] or [] if h["code"] != code] + [{"code": code, "reason": reason, "source": "manual", "by": actor.name}]
        return _save(conn, row, now, {"holds": holds, "status": "on_hold", "audit_state": None}, "hold_placed", actor, reason, {"code": code})


def cancel_order(engine: sa.Engine, order_id: str, *, actor: Actor | str, reason: str | None, version: int | None = None) -> dict[str, Any]:
    """取消 before the warehouse has it: stock goes back at once (and to orders waiting for it)."""
    reason = _require_reason(reason)
    actor = as_actor(actor)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = _load(conn, order_id, version)
        if row["status"] not in _BEFORE_WAREHOUSE:
            raise OrderHubError(ErrorCode.ORDER_STATE, f"order {order_id} is {row['status']}: it can no longer be cancelled here", "status")
        _give_back(conn, order_id, actor, f"取消 {reason}", now)
        return _save(conn, row, now, {"status": "cancelled", "audit_state": None, "merge_group": None}, "cancelled", actor, reason)


def _give_back(conn: sa.Connection, order_id: str, actor: Actor, reason: str, now: datetime) -> None:
    """Release an order's stock; orders held out of stock for those SKUs are audited again."""
    freed = inventory_repo.active_reservations(conn, [order_id]).get(order_id, [])
    inventory_repo.release(conn, [order_id], actor=actor.name, reason=reason, now=now)
    audit_repo.requeue_short(conn, {r["sku"] for r in freed})


def edit_address(
    engine: sa.Engine, vault: PiiVault, order_id: str, address: dict[str, str | None], *, actor: Actor | str, reason: str | None, version: int | None = None,
) -> dict[str, Any]:
    """改地址 then audit again. The street detail is plaintext from a person: it is sealed with the
    buyer's other PII and only its mask is stored in the address."""
    reason = _require_reason(reason)
    actor = as_actor(actor)
    for name in ("province", "city", "district"):
        if not (address.get(name) or "").strip():
            raise OrderHubError(ErrorCode.INVALID_REQUEST, f"{name} is required", f"address.{name}")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = _load(conn, order_id, version)
        if row["status"] not in _BEFORE_WAREHOUSE:
            raise OrderHubError(ErrorCode.ORDER_STATE, f"order {order_id} is {row['status']}: the address can no longer be changed here", "status")
        detail = (address.get("detail") or "").strip() or None
        new = {"province": address["province"], "city": address["city"], "district": address["district"], "detail": mask_address_detail(detail)}
        values: dict[str, Any] = {"address": new, "audit_state": AuditState.PENDING}
        if detail:
            sealed = vault.open(row["pii_sealed"]) if row["pii_sealed"] else {}
            values["pii_sealed"] = vault.seal({**sealed, "address_detail": detail})
        return _save(conn, row, now, values, "address_changed", actor, reason, {"from": row["address"], "to": new})


def merge_orders(engine: sa.Engine, order_ids: list[str], *, actor: Actor | str, reason: str | None) -> dict[str, Any]:
    """手工合单: ready orders of one shop, shipping from one warehouse to one address."""
    reason = _require_reason(reason)
    actor = as_actor(actor)
    ids = sorted(set(order_ids))
    if len(ids) < 2:
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "name at least two orders", "order_ids")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        rows = [_load(conn, oid, None) for oid in ids]  # one global lock order: sorted ids
        for row in rows:
            if row["status"] != "ready":
                raise OrderHubError(ErrorCode.ORDER_STATE, f"order {row['id']} is {row['status']}: only ready orders can be merged", "order_ids")
        for name, label in (("shop_id", "shop"), ("warehouse", "warehouse"), ("address", "address")):
            if len({repr(row[name]) for row in rows}) > 1:
                raise OrderHubError(ErrorCode.INVALID_REQUEST, f"the orders differ in {label}: they cannot ship as one package", "order_ids")
        group = next((row["merge_group"] for row in rows if row["merge_group"]), None) or ids[0]
        for row in rows:
            tags = [t for t in row["tags"] or [] if t != "no_auto_merge"]
            _save(conn, row, now, {"merge_group": group, "tags": tags}, "merged", actor, reason, {"merge_group": group, "orders": ids})
        return {"merge_group": group, "orders": ids}


def unmerge_order(engine: sa.Engine, order_id: str, *, actor: Actor | str, reason: str | None) -> dict[str, Any]:
    """拆开合单: the order ships on its own and is not merged again automatically."""
    reason = _require_reason(reason)
    actor = as_actor(actor)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = _load(conn, order_id, None)
        group = row["merge_group"]
        if not group:
            raise OrderHubError(ErrorCode.CONFLICT, f"order {order_id} is not merged", "order_id")
        tags = sorted(set(row["tags"] or []) | {"no_auto_merge"})
        result = _save(conn, row, now, {"merge_group": None, "tags": tags}, "unmerged", actor, reason, {"previous": group})
        rest = list(conn.execute(sa.select(orders.c.id).where(orders.c.merge_group == group)).scalars())
        if len(rest) == 1:  # a group of one is no group
            audit_repo.join_merge_group(conn, rest[0], None, now, actor=actor.name, reason=f"合单仅剩一单 group dissolved ({reason})")
        return result
