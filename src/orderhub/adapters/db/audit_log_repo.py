"""The audit log (append-only): who changed what, when, before and after.

`record` runs in the caller's transaction, so an entry exists exactly when its change committed.
There is deliberately no update or delete function here; the database refuses both (migration 0008).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db.queries import local
from orderhub.adapters.db.tables import audit_log
from orderhub.domain.access import Actor
from orderhub.domain.errors import ErrorCode, OrderHubError

# Never copied into an entry's before/after: sealed PII and secrets.
_SECRET_KEYS = frozenset({"pii_sealed", "password", "password_hash", "key_hash", "token_hash", "to_sealed", "sealed"})


def record(
    conn: sa.Connection, actor: Actor, action: str, entity: str, entity_id: str | int | None = None, *,
    before: Any = None, after: Any = None, at: datetime | None = None,
) -> None:
    conn.execute(audit_log.insert().values(
        at=at or datetime.now(UTC), actor=actor.name[:64], actor_kind=actor.kind, action=action, entity=entity,
        entity_id=None if entity_id is None else str(entity_id)[:128], before=_clean(before), after=_clean(after),
        ip=(actor.ip or None) and actor.ip[:64],
    ))


def record_alone(engine: sa.Engine, actor: Actor, action: str, entity: str, entity_id: str | int | None = None, **values: Any) -> None:
    """An entry for an action that changes no row (pausing the workers): its own transaction."""
    with engine.begin() as conn:
        record(conn, actor, action, entity, entity_id, **values)


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items() if k not in _SECRET_KEYS}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def changed(row: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(before, after) of the columns an update sets: what the audit log keeps of a row change."""
    keys = [k for k in values if k not in _SECRET_KEYS and k in row]
    return {k: row[k] for k in keys}, {k: values[k] for k in keys}


def list_entries(
    conn: sa.Connection, *, entity: str | None = None, entity_id: str | None = None, actor: str | None = None,
    action: str | None = None, limit: int = 50, cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; `cursor` is the previous page's `next_cursor` (an id)."""
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit + 1)
    for column, value in ((audit_log.c.entity, entity), (audit_log.c.entity_id, entity_id), (audit_log.c.actor, actor),
                          (audit_log.c.action, action)):
        if value:
            query = query.where(column == value)
    if cursor:
        if not cursor.isdigit():
            raise OrderHubError(ErrorCode.INVALID_CURSOR, "cursor is not one this API issued", "cursor")
        query = query.where(audit_log.c.id < int(cursor))
    rows = conn.execute(query).mappings().all()
    more = len(rows) > limit
    items = [
        {"id": r["id"], "at": local(r["at"]), "actor": r["actor"], "actor_kind": r["actor_kind"], "action": r["action"],
         "entity": r["entity"], "entity_id": r["entity_id"], "before": r["before"], "after": r["after"], "ip": r["ip"]}
        for r in rows[:limit]
    ]
    return items, (str(items[-1]["id"]) if more else None)


def recent_failures(conn: sa.Connection, action: str, entity_id: str, ip: str | None, since: datetime) -> list[datetime]:
    """When `action` (e.g. login.failed) happened for this entity from this address since `since`,
    oldest first, counting only those after the last success (login.succeeded) from there."""
    success = action.rsplit(".", 1)[0] + ".succeeded"
    ip_match = audit_log.c.ip == ip if ip else audit_log.c.ip.is_(None)
    last_ok = conn.execute(
        sa.select(sa.func.max(audit_log.c.at)).where(audit_log.c.action == success, audit_log.c.entity_id == entity_id, ip_match,
                                                     audit_log.c.at >= since)
    ).scalar_one_or_none()
    start = max(since, last_ok) if last_ok else since
    return list(conn.execute(
        sa.select(audit_log.c.at).where(audit_log.c.action == action, audit_log.c.entity_id == entity_id, ip_match, audit_log.c.at > start)
        .order_by(audit_log.c.at)
    ).scalars())
