"""Packages at the warehouse and freeze instructions (拦截): the status table and what an instruction becomes. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class PackageStatus(StrEnum):
    QUEUED = "queued"  # written with its wms.order outbox row; the WMS may or may not have it yet
    ACCEPTED = "accepted"
    PICKING = "picking"
    PACKED = "packed"  # labelled: from here on a freeze is refused
    SHIPPED = "shipped"
    FROZEN = "frozen"  # the WMS stopped work on it for an instruction
    CANCELLED = "cancelled"  # dropped at the WMS, or withdrawn before it got there


P = PackageStatus

# What each WMS event (or freeze answer) moves a package to, and from which statuses. Events may
# arrive late or twice: a move from any other status is stale and changes nothing. Only `unfrozen`
# leaves FROZEN for work again, so an `accepted` or `picking` sent before the freeze but delivered
# after it cannot undo the freeze; `packed`/`shipped` are the physical truth and always win.
EVENT_MOVES: dict[str, tuple[PackageStatus, frozenset[PackageStatus]]] = {
    "accepted": (P.ACCEPTED, frozenset({P.QUEUED})),
    "picking": (P.PICKING, frozenset({P.QUEUED, P.ACCEPTED})),
    "packed": (P.PACKED, frozenset({P.QUEUED, P.ACCEPTED, P.PICKING, P.FROZEN})),
    "shipped": (P.SHIPPED, frozenset({P.QUEUED, P.ACCEPTED, P.PICKING, P.PACKED, P.FROZEN})),
    "frozen": (P.FROZEN, frozenset({P.QUEUED, P.ACCEPTED, P.PICKING})),
    "unfrozen": (P.ACCEPTED, frozenset({P.FROZEN})),
    "cancelled": (P.CANCELLED, frozenset({P.QUEUED, P.ACCEPTED, P.PICKING, P.FROZEN})),
}

TRANSITIONS: dict[PackageStatus, frozenset[PackageStatus]] = {
    status: frozenset(target for target, sources in EVENT_MOVES.values() if status in sources) for status in PackageStatus
}

LIVE = frozenset({P.QUEUED, P.ACCEPTED, P.PICKING, P.PACKED, P.FROZEN})  # on its way, not yet gone or dropped
LATE = frozenset({P.PACKED, P.SHIPPED})  # too late to freeze


def after_event(status: PackageStatus, event: str) -> PackageStatus | None:
    """The package's status after `event`, or None when the event is stale (or unknown) for it."""
    move = EVENT_MOVES.get(event)
    if move is None or status not in move[1]:
        return None
    return move[0]


# -- freeze instructions ---------------------------------------------------------------------------


class InstructionKind(StrEnum):
    CANCEL = "cancel"
    ADDRESS = "address"
    REMARK = "remark"
    EXPEDITE = "expedite"


class Outcome(StrEnum):
    PENDING = "pending"  # sent (or about to be) to the WMS, no answer yet
    FROZEN = "frozen"  # the WMS froze every package; the follow-up (cancel, new address, remark) is on its way
    REFUSED = "refused"  # an expedite the WMS would not take
    SUPERVISOR = "supervisor"  # conflicts with another instruction: a person decides, nothing was sent
    APPLIED = "applied"  # done
    TOO_LATE = "too_late"  # packed or shipped: carrier interception / return


UNDER_WAY = frozenset({Outcome.PENDING, Outcome.FROZEN})
CONFLICT_WINDOW = timedelta(seconds=15)

K = InstructionKind
# Pairs that pull an order two ways at once: whichever ran first, the other would be wrong.
CONFLICTS: frozenset[frozenset[InstructionKind]] = frozenset({
    frozenset({K.CANCEL, K.EXPEDITE}),
    frozenset({K.CANCEL, K.ADDRESS}),
})


class Action(StrEnum):
    SUPERVISOR = "supervisor"  # a conflicting instruction within the window: hold it for a person, no WMS call
    DUPLICATE = "duplicate"  # the same instruction is already under way (or done): nothing new to send
    LOCAL = "local"  # nothing of the order has reached the WMS: apply it here, without asking
    FREEZE = "freeze"  # ask the WMS to freeze (expedite: to hurry) the packages it holds and has not packed
    TOO_LATE = "too_late"  # every package still on its way is packed or shipped


@dataclass(frozen=True, slots=True)
class PackageView:
    code: str  # the WMS order code the package travels under (merged orders share one)
    package_no: int
    status: PackageStatus
    handed_over: bool  # its wms.order message left the outbox (the WMS may have it)


@dataclass(frozen=True, slots=True)
class Earlier:
    """An instruction already recorded for the same order."""

    id: int
    kind: InstructionKind
    requested_at: datetime
    outcome: Outcome
    fingerprint: str = ""  # what it asks for (the new address), so two different addresses conflict
    dismissed: bool = False  # a supervisor set it aside: it no longer counts


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    freeze: tuple[str, ...] = ()  # WMS order codes to ask
    withdraw: tuple[str, ...] = ()  # codes still in the outbox: taken back here
    late: tuple[int, ...] = ()  # package numbers already packed or shipped
    other: int | None = None  # the earlier instruction this one conflicts with / duplicates
    reason: str = ""


def conflicting(kind: InstructionKind, fingerprint: str, earlier: Earlier) -> bool:
    if frozenset({kind, earlier.kind}) in CONFLICTS:
        return True
    return kind is K.ADDRESS and earlier.kind is K.ADDRESS and fingerprint != earlier.fingerprint


def decide(
    kind: InstructionKind, packages: Iterable[PackageView], earlier: Iterable[Earlier], *, requested_at: datetime,
    fingerprint: str = "", window: timedelta = CONFLICT_WINDOW, check_conflicts: bool = True,
) -> Plan:
    """What one instruction becomes, given the order's packages and its earlier instructions.
    `check_conflicts=False` once a supervisor has let it go ahead."""
    earlier = [e for e in earlier if not e.dismissed]
    for e in sorted(earlier, key=lambda e: e.requested_at, reverse=True) if check_conflicts else ():
        if abs(requested_at - e.requested_at) <= window and conflicting(kind, fingerprint, e):
            return Plan(Action.SUPERVISOR, other=e.id, reason=f"与{window.seconds}秒内的指令 #{e.id}（{e.kind.value}）冲突")
    for e in earlier:
        # the same thing asked again: under way, done, or already handed to the carrier as too late
        same = e.kind is kind and e.fingerprint == fingerprint
        if same and (e.outcome in UNDER_WAY or (e.outcome in (Outcome.APPLIED, Outcome.TOO_LATE) and kind is not K.EXPEDITE)):
            return Plan(Action.DUPLICATE, other=e.id, reason=f"同一指令 #{e.id} 已处理或在处理中")
    live = [p for p in packages if p.status in LIVE or p.status is P.SHIPPED]
    withdraw = tuple(sorted({p.code for p in live if p.status is P.QUEUED and not p.handed_over}))
    late = tuple(sorted(p.package_no for p in live if p.status in LATE))
    freeze = tuple(sorted({p.code for p in live if p.status in LIVE - LATE and p.code not in withdraw}))
    if freeze:
        return Plan(Action.FREEZE, freeze, withdraw, late)
    if late:
        return Plan(Action.TOO_LATE, (), withdraw, late, reason="包裹已打包或已发出")
    return Plan(Action.LOCAL, (), withdraw, reason="尚未交给仓库")


@dataclass(frozen=True, slots=True)
class Settled:
    outcome: Outcome
    frozen: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()


def settle(asked: Iterable[str], answers: Mapping[str, str]) -> Settled | None:
    """The instruction's outcome once every asked WMS order answered ("frozen" or "refused"); None while some have not."""
    asked = tuple(asked)
    if any(code not in answers for code in asked):
        return None
    frozen = tuple(c for c in asked if answers[c] == "frozen")
    refused = tuple(c for c in asked if answers[c] != "frozen")
    return Settled(Outcome.TOO_LATE if refused else Outcome.FROZEN, frozen, refused)


# -- WMS order codes -------------------------------------------------------------------------------


def wms_order_code(anchor: str, package_no: int, generation: int = 1) -> str:
    """The code a package travels under at the WMS: its order id (a merged package: its merge group's
    id) and package number, plus the generation when the package was sent again (re-queued)."""
    return f"{anchor}-{package_no}" if generation <= 1 else f"{anchor}-{package_no}-{generation}"


def parse_code(code: str) -> tuple[str, int, int]:
    """(anchor, package_no, generation) of a WMS order code; ValueError when it is not one of ours."""
    parts = code.split("-")
    if len(parts) not in (2, 3) or not parts[0] or not all(p.isdigit() for p in parts[1:]):
        raise ValueError(f"{code!r} is not an OrderHub WMS order code")
    return parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else 1
