"""Apply one platform snapshot of an order onto what is stored: newer wins, never backwards.

Pure functions over plain data. The caller loads the stored state, calls `apply_snapshot`,
and writes what the returned `Change` says, all in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from hashlib import blake2b
from typing import Any

import orjson

from orderhub.domain.pii import SEALED
from orderhub.domain.order import NormalizedOrder
from orderhub.domain.status import Status, can_transition, platform_view


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # a duplicate: same content as stored
    STALE = "stale"  # older than what is stored; ignored


class HoldCode(StrEnum):
    RISK_REVIEW = "risk_review"
    OUT_OF_STOCK = "out_of_stock"
    ADDRESS_INCOMPLETE = "address_incomplete"
    REMOTE_AREA = "remote_area"
    BUYER_MESSAGE = "buyer_message"
    SELLER_REMARK = "seller_remark"
    PRICE_ANOMALY = "price_anomaly"
    DUPLICATE_SUSPECT = "duplicate_suspect"
    INTERCEPT_PENDING = "intercept_pending"
    PLATFORM_CONFLICT = "platform_conflict"
    MANUAL = "manual"
    SKU_UNMAPPED = "sku_unmapped"


@dataclass(frozen=True, slots=True)
class Event:
    """One row of an order's event log."""

    kind: str  # created | status | status_conflict | address_changed | refund | buyer_message | seller_remark | amounts_changed
    actor: str  # who/what made the change, e.g. "platform:douyin"
    from_status: str | None = None
    to_status: str | None = None
    reason: str | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """The part of a stored order the merge needs."""

    id: str
    status: Status
    updated_at: datetime
    content_hash: str
    version: int
    holds: tuple[dict[str, str], ...]
    address: dict[str, Any]
    line_refunds: tuple[str, ...]
    buyer_message: str | None
    seller_remark: str | None
    paid: int
    snapshot_at: datetime | None = None  # when the platform snapshot was read (API fetch or pull)
    pii: dict[str, str] = field(default_factory=dict)  # the platform ciphertexts stored with it
    phone_hash: str | None = None  # set once its buyer's phone was decrypted and hashed
    customer_id: str | None = None


@dataclass(slots=True)
class Change:
    outcome: Outcome
    order: NormalizedOrder
    status: Status | None = None  # the status to store (may differ from the platform's)
    holds: tuple[dict[str, str], ...] = ()
    events: list[Event] = field(default_factory=list)
    content_hash: str = ""


def content_hash(order: NormalizedOrder) -> str:
    """Hash of everything a user could see change; excludes updated_at and the raw payload."""
    payload = (
        order.status,
        order.platform_status,
        order.created_at,
        order.paid_at,
        order.currency,
        order.amounts,
        order.lines,
        order.address,
        order.buyer,
        order.buyer_message,
        order.seller_remark,
        order.shipment,
        # sealed text differs on every sealing (random IV); the phone hash stands for it
        {k: v for k, v in order.pii.items() if k != SEALED},
    )
    return blake2b(orderjson(payload), digest_size=16).hexdigest()


def orderjson(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "__slots__"):
        return {name: getattr(value, name) for name in value.__slots__}
    raise TypeError(type(value))


def address_dict(order: NormalizedOrder) -> dict[str, Any]:
    a = order.address
    return {"province": a.province, "city": a.city, "district": a.district, "detail": a.detail}


def apply_snapshot(stored: StoredOrder | None, incoming: NormalizedOrder, actor: str) -> Change:
    """Decide what an incoming platform snapshot changes on the stored order."""
    digest = content_hash(incoming)
    if stored is None:
        event = Event("created", actor, None, incoming.status.value, "平台新订单 new platform order")
        return Change(Outcome.CREATED, incoming, incoming.status, (), [event], digest)

    if incoming.updated_at < stored.updated_at:
        return Change(Outcome.STALE, incoming, content_hash=digest)
    if digest == stored.content_hash:
        return Change(Outcome.UNCHANGED, incoming, content_hash=digest)

    target = incoming.status
    current = stored.status
    moves = target != current and target != platform_view(current)
    if incoming.updated_at == stored.updated_at and not (moves and can_transition(current, target)):
        # Same platform time and not a forward move: we cannot tell which is newer; keep ours.
        return Change(Outcome.STALE, incoming, content_hash=digest)

    events: list[Event] = []
    holds = list(stored.holds)
    new_status = current
    if moves:
        if can_transition(current, target):
            new_status = target
            events.append(Event("status", actor, current.value, target.value, "平台状态变更 platform status changed"))
        else:
            code = HoldCode.INTERCEPT_PENDING if target is Status.CANCELLED else HoldCode.PLATFORM_CONFLICT
            reason = f"平台状态 {target.value} 与当前状态 {current.value} 冲突，未强制变更"
            if not any(h["code"] == code for h in holds):
                holds.append({"code": code.value, "reason": reason})
            events.append(
                Event("status_conflict", actor, current.value, target.value, f"platform says {target.value}, not allowed after {current.value}; hold {code.value}")
            )

    events.extend(_field_events(stored, incoming, actor))
    return Change(Outcome.UPDATED, incoming, new_status, tuple(holds), events, digest)


def _field_events(stored: StoredOrder, incoming: NormalizedOrder, actor: str) -> list[Event]:
    events: list[Event] = []
    new_address = address_dict(incoming)
    if new_address != stored.address:
        events.append(Event("address_changed", actor, reason="收货地址变更 address changed", data={"from": stored.address, "to": new_address}))
    refunds = tuple(line.refund_status for line in incoming.lines)
    if refunds != stored.line_refunds:
        events.append(Event("refund", actor, reason="退款状态变更 refund status changed", data={"from": list(stored.line_refunds), "to": list(refunds)}))
    if (incoming.buyer_message or None) != stored.buyer_message:
        events.append(Event("buyer_message", actor, reason="买家留言变更 buyer message changed", data={"to": incoming.buyer_message}))
    if (incoming.seller_remark or None) != stored.seller_remark:
        events.append(Event("seller_remark", actor, reason="商家备注变更 seller remark changed", data={"to": incoming.seller_remark}))
    if incoming.amounts.paid != stored.paid:
        events.append(Event("amounts_changed", actor, reason="实付金额变更 paid amount changed", data={"from": stored.paid, "to": incoming.amounts.paid}))
    return events


def stored_after(change: Change, previous: StoredOrder | None) -> StoredOrder:
    """The stored state once `change` is written; lets a batch apply several snapshots in order."""
    order = change.order
    if change.outcome in (Outcome.STALE,):
        assert previous is not None
        return previous
    if change.outcome is Outcome.UNCHANGED:
        assert previous is not None
        return replace(previous, updated_at=max(previous.updated_at, order.updated_at))
    return StoredOrder(
        snapshot_at=previous.snapshot_at if previous else None,
        id=order.id,
        status=change.status or order.status,
        updated_at=order.updated_at,
        content_hash=change.content_hash,
        version=(previous.version + 1) if previous else 1,
        holds=change.holds,
        address=address_dict(order),
        line_refunds=tuple(line.refund_status for line in order.lines),
        buyer_message=order.buyer_message or None,
        seller_remark=order.seller_remark or None,
        paid=order.amounts.paid,
        pii=dict(order.pii),
        phone_hash=previous.phone_hash if previous else None,
        customer_id=previous.customer_id if previous else None,
    )
