"""The outbox table: messages to external systems, written with the state change and claimed by the relay.

Rows move pending -> sending (claimed, with a lease) -> sent, or back to pending with a later
`next_attempt_at` after a failed try, or to dead once retries are spent. A relay that crashes
leaves its rows `sending`; when the lease runs out another relay takes them over, so delivery is
at least once and every message carries an idempotency key for the receiver to deduplicate on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from orderhub.adapters.db import wakeups
from orderhub.adapters.db.tables import outbox

PENDING, SENDING, SENT, DEAD = "pending", "sending", "sent", "dead"
STATUSES = (PENDING, SENDING, SENT, DEAD)

# What the schema allows; checked here so SQLite (which ignores VARCHAR lengths) refuses the same as PostgreSQL.
_LIMITS = {"kind": 32, "endpoint": 64, "idempotency_key": 64, "order_id": 32, "recipient": 128}

_c = outbox.c
_MESSAGE_COLUMNS = (_c.id, _c.kind, _c.endpoint, _c.order_id, _c.recipient, _c.payload, _c.idempotency_key,
                    _c.priority, _c.attempts, _c.created_at)
_LIST_COLUMNS = (_c.id, _c.kind, _c.endpoint, _c.order_id, _c.recipient, _c.idempotency_key, _c.priority, _c.status,
                 _c.attempts, _c.next_attempt_at, _c.lease_until, _c.last_error, _c.response, _c.created_at, _c.sent_at)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    kind: str
    endpoint: str
    order_id: str | None
    recipient: str | None
    payload: dict[str, Any]
    idempotency_key: str
    priority: int
    attempts: int  # delivery attempts already made (this one not counted)
    created_at: datetime


class DeliveryError(Exception):
    """A send that failed; raised by senders (`orderhub.services.outbox.Sender`), recorded by the relay.

    Defined here, beside OutboxMessage, so senders in `adapters/` can raise it without importing the
    services layer; `orderhub.services.outbox.DeliveryError` is this same class.
    Not retryable: the receiver refused this very message and would refuse it again (a 4xx).
    """

    def __init__(self, message: str, *, retryable: bool = True, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s  # the receiver's own Retry-After, when it gave one


def _insert(conn: sa.Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(outbox)


def kind_matches(kinds: Sequence[str]) -> sa.ColumnElement[bool]:
    """`wms` matches every `wms.*` kind as well as a kind named exactly `wms`; `wms.freeze` only itself.
    substr, not LIKE: SQLite's LIKE ignores case and treats `_` as a wildcard."""
    terms: list[sa.ColumnElement[bool]] = []
    for kind in kinds:
        terms.append(_c.kind == kind)
        if "." not in kind:
            terms.append(sa.func.substr(_c.kind, 1, len(kind) + 1) == kind + ".")
    return sa.or_(*terms) if terms else sa.false()


def enqueue(
    conn: sa.Connection, *, kind: str, endpoint: str, payload: dict[str, Any], idempotency_key: str,
    order_id: str | None = None, recipient: str | None = None, priority: int = 0, now: datetime,
    not_before: datetime | None = None,
) -> int | None:
    """Add a message in the caller's transaction, so it exists exactly when the change that causes it
    commits. The same idempotency key twice is a no-op (None): a replayed event enqueues nothing more.
    On PostgreSQL the commit also wakes the relays of every process (`wakeups`): the one that wrote the
    row may not run one (an API node in scaled mode)."""
    values = {"kind": kind, "endpoint": endpoint, "idempotency_key": idempotency_key, "order_id": order_id, "recipient": recipient}
    for name, limit in _LIMITS.items():
        if values[name] is not None and len(values[name]) > limit:
            raise ValueError(f"outbox {name} longer than {limit} characters: {values[name]!r}")
    statement = (
        _insert(conn)
        .values(**values, payload=payload, priority=priority, status=PENDING, attempts=0,
                next_attempt_at=not_before or now, created_at=now)
        .on_conflict_do_nothing(index_elements=[_c.idempotency_key])
        .returning(_c.id)
    )
    message_id = conn.execute(statement).scalar_one_or_none()
    if message_id is not None:
        wakeups.notify(conn, wakeups.OUTBOX, kind)
    return message_id


def claim(
    conn: sa.Connection, *, limit: int, lease: timedelta, now: datetime, kinds: Sequence[str] | None = None, defer_prefix: str | None = None,
) -> list[OutboxMessage]:
    """Take up to `limit` due messages, highest priority first, then oldest.

    Due: pending and `next_attempt_at <= now`, or sending with an expired lease (a crashed relay's).
    On PostgreSQL the candidates are locked FOR UPDATE SKIP LOCKED, so concurrent relays split the
    work instead of queueing on each other; a row another relay claimed meanwhile fails the re-check
    of the WHERE clause and is left out. SQLite has one writer at a time (BEGIN IMMEDIATE)."""
    due = sa.or_(
        sa.and_(_c.status == PENDING, _c.next_attempt_at <= now),
        sa.and_(_c.status == SENDING, _c.lease_until < now),
    )
    candidates = sa.select(_c.id).where(due).order_by(_c.priority.desc(), _c.id).limit(limit)
    if kinds is not None:
        candidates = candidates.where(kind_matches(kinds))
    if defer_prefix is not None:  # deferred at the peak, except what is urgent (priority > 0)
        candidates = candidates.where(sa.or_(~_c.kind.startswith(defer_prefix, autoescape=True), _c.priority > 0))
    claim_them = sa.update(outbox).values(status=SENDING, lease_until=now + lease).returning(*_MESSAGE_COLUMNS)
    if conn.dialect.name == "postgresql":
        # A materialised CTE, not `id IN (subquery)`: PostgreSQL may run an IN subquery more than
        # once per statement, and with SKIP LOCKED each run can pick other rows (LIMIT exceeded).
        picked = candidates.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        claim_them = claim_them.where(_c.id == picked.c.id, due)
    else:
        claim_them = claim_them.where(_c.id.in_(candidates.scalar_subquery()))
    rows = conn.execute(claim_them).all()
    messages = [OutboxMessage(*row) for row in rows]
    messages.sort(key=lambda m: (-m.priority, m.id))
    return messages


def mark_sent(conn: sa.Connection, message_id: int, *, response: dict[str, Any] | None, now: datetime) -> None:
    """Delivered. Also from a relay whose lease ran out meanwhile: the receiver has it, whatever the row said."""
    conn.execute(
        sa.update(outbox).where(_c.id == message_id, _c.status != SENT)
        .values(status=SENT, attempts=_c.attempts + 1, sent_at=now, response=response, lease_until=None)
    )


def mark_failed(conn: sa.Connection, message_id: int, *, error: str, retry_at: datetime | None, now: datetime) -> None:
    """A failed try: pending again at `retry_at`, or dead when there is none. Only while still `sending`:
    a slow relay's late failure must not undo another relay's success."""
    values: dict[str, Any] = {"attempts": _c.attempts + 1, "last_error": error[:4000], "lease_until": None}
    if retry_at is None:
        values.update(status=DEAD, next_attempt_at=now)
    else:
        values.update(status=PENDING, next_attempt_at=retry_at)
    conn.execute(sa.update(outbox).where(_c.id == message_id, _c.status == SENDING).values(**values))


def reschedule(conn: sa.Connection, message_id: int, *, at: datetime, now: datetime) -> None:
    """Put a claimed message back unsent and without counting an attempt (its endpoint's breaker is open)."""
    conn.execute(
        sa.update(outbox).where(_c.id == message_id, _c.status == SENDING)
        .values(status=PENDING, next_attempt_at=max(at, now), lease_until=None)
    )


def retry(conn: sa.Connection, message_id: int, *, now: datetime) -> bool:
    """By hand: a dead (or waiting) message is due now. Attempts are kept, so a dead one gets one more
    try before it is dead again. False when there is no such message or it is sent (or being sent)."""
    result = conn.execute(
        sa.update(outbox).where(_c.id == message_id, _c.status.in_((DEAD, PENDING)))
        .values(status=PENDING, next_attempt_at=now, lease_until=None)
    )
    return result.rowcount == 1


def get_message(conn: sa.Connection, message_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(*_LIST_COLUMNS, _c.payload).where(_c.id == message_id)).mappings().first()
    return {str(k): v for k, v in row.items()} if row else None


def list_messages(
    conn: sa.Connection, *, status: str | None = None, kind: str | None = None, order_id: str | None = None,
    limit: int = 50, before_id: int | None = None, with_payload: bool = False,
) -> list[dict[str, Any]]:
    """Newest first; keyset pagination on id (`before_id` = the last id of the previous page)."""
    columns = (*_LIST_COLUMNS, _c.payload) if with_payload else _LIST_COLUMNS
    query = sa.select(*columns)
    if status:
        query = query.where(_c.status == status)
    if kind:
        query = query.where(kind_matches([kind]))
    if order_id:
        query = query.where(_c.order_id == order_id)
    if before_id is not None:
        query = query.where(_c.id < before_id)
    rows = conn.execute(query.order_by(_c.id.desc()).limit(limit)).mappings()
    return [{str(k): v for k, v in row.items()} for row in rows]


def counts(conn: sa.Connection) -> dict[str, int]:
    """status -> number of messages; every status present, zero included."""
    out = dict.fromkeys(STATUSES, 0)
    out.update({status: int(n) for status, n in conn.execute(sa.select(_c.status, sa.func.count()).group_by(_c.status))})
    return out


def sent_to_recipient_since(conn: sa.Connection, recipient: str, since: datetime, kind_prefix: str | None = None) -> int:
    """Messages to `recipient` enqueued at or after `since` that are sent or on their way (pending,
    sending, sent; dead ones never reached anybody). Counting queued ones too is what makes a
    per-recipient rate limit hold during a burst, before the relay has sent anything."""
    query = (
        sa.select(sa.func.count()).select_from(outbox)
        .where(_c.recipient == recipient, _c.created_at >= since, _c.status != DEAD)
    )
    if kind_prefix:
        query = query.where(sa.func.substr(_c.kind, 1, len(kind_prefix)) == kind_prefix)
    return int(conn.execute(query).scalar_one())
