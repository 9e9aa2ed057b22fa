"""The logistics state machine of a parcel (DESIGN.md §3), carrier codes mapped onto it, and what the stall rules see.

Pure functions over plain data; docs/logistics.md explains every table and cites the carriers' sources.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from orderhub.domain.audit import province_short


class ParcelState(StrEnum):
    NONE = "none"
    COLLECTED = "collected"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    # exception sub-states
    STALLED = "stalled"
    RETURNED = "returned"
    REJECTED = "rejected"
    LOST = "lost"
    DAMAGED = "damaged"
    ADDRESS_ISSUE = "address_issue"
    CUSTOMS = "customs"


P = ParcelState

LABELS_ZH: dict[ParcelState, str] = {
    P.NONE: "待揽收", P.COLLECTED: "已揽收", P.IN_TRANSIT: "运输中", P.OUT_FOR_DELIVERY: "派件中", P.DELIVERED: "已签收",
    P.STALLED: "滞留", P.RETURNED: "退回", P.REJECTED: "拒收", P.LOST: "丢失", P.DAMAGED: "破损",
    P.ADDRESS_ISSUE: "地址异常", P.CUSTOMS: "清关异常",
}  # fmt: skip

EXCEPTIONS: frozenset[ParcelState] = frozenset({P.STALLED, P.RETURNED, P.REJECTED, P.LOST, P.DAMAGED, P.ADDRESS_ISSUE, P.CUSTOMS})
# Problems a parcel can come out of: it is found, cleared, re-addressed, moves again.
RECOVERABLE: frozenset[ParcelState] = frozenset({P.STALLED, P.LOST, P.DAMAGED, P.ADDRESS_ISSUE, P.CUSTOMS})
IN_FLIGHT: frozenset[ParcelState] = frozenset({P.COLLECTED, P.IN_TRANSIT, P.OUT_FOR_DELIVERY})
# Nothing more is expected from the carrier: no polling, no stall checks.
FINAL: frozenset[ParcelState] = frozenset({P.DELIVERED, P.RETURNED})

# Which state may follow which (a scan in the same state only confirms it). Carriers skip
# scans we never see (a poll after an outage finds a parcel already delivered), so forward
# jumps are allowed. out_for_delivery -> in_transit is a parcel re-routed (转投/转递) after a
# failed attempt. A refused parcel can only go back to the sender; delivered is terminal except
# for a return (signed at a locker or 驿站, then sent back); returned is terminal.
TRANSITIONS: dict[ParcelState, frozenset[ParcelState]] = {
    P.NONE: frozenset(set(P) - {P.NONE}),
    P.COLLECTED: frozenset({P.IN_TRANSIT, P.OUT_FOR_DELIVERY, P.DELIVERED}) | EXCEPTIONS,
    P.IN_TRANSIT: frozenset({P.OUT_FOR_DELIVERY, P.DELIVERED}) | EXCEPTIONS,
    P.OUT_FOR_DELIVERY: frozenset({P.IN_TRANSIT, P.DELIVERED}) | EXCEPTIONS,
    P.DELIVERED: frozenset({P.RETURNED}),
    **{s: frozenset({P.IN_TRANSIT, P.OUT_FOR_DELIVERY, P.DELIVERED}) | (EXCEPTIONS - {s}) for s in RECOVERABLE},
    P.REJECTED: frozenset({P.RETURNED}),
    P.RETURNED: frozenset(),
}


def can_move(current: ParcelState, target: ParcelState) -> bool:
    return target in TRANSITIONS[current]


@dataclass(frozen=True, slots=True)
class Scan:
    """One carrier event, as the carrier reported it, with the state it maps to."""

    at: datetime  # aware
    state: ParcelState
    carrier_code: str  # the carrier's own code (Kuaidi100 statusCode/state, SF opCode); "" if none
    description: str
    location: str = ""


@dataclass(frozen=True, slots=True)
class CarrierTrack:
    """What one push or query answer says about one waybill."""

    waybill_no: str
    carrier: str  # OrderHub's carrier code (SF, ZTO...) or the carrier's own name when unknown
    scans: tuple[Scan, ...]


class ScanResult(NamedTuple):
    state: ParcelState
    accepted: tuple[Scan, ...]  # moved the state, or confirmed it
    ignored: tuple[Scan, ...]  # older than what was applied, or a move the table does not allow


def apply_scans(state: ParcelState, scans: Iterable[Scan], since: datetime | None = None) -> ScanResult:
    """Apply scans in time order onto `state`; `since` is the time of the latest scan already applied.

    An older scan never moves the state back (it still belongs in the track); a scan at the same
    time as the latest applied one counts if the table allows its move.
    """
    current, latest = state, since
    accepted: list[Scan] = []
    ignored: list[Scan] = []
    for scan in sorted(scans, key=lambda s: s.at):  # stable: scans at one time keep the carrier's order
        if latest is not None and scan.at < latest:
            ignored.append(scan)
        elif scan.state == current or can_move(current, scan.state):
            accepted.append(scan)
            current, latest = scan.state, scan.at
        else:
            ignored.append(scan)
    return ScanResult(current, tuple(accepted), tuple(ignored))


def moves(start: ParcelState, accepted: Sequence[Scan]) -> list[tuple[ParcelState, ParcelState, Scan]]:
    """(from, to, scan) for every accepted scan that changed the state."""
    out = []
    for scan in accepted:
        if scan.state != start:
            out.append((start, scan.state, scan))
            start = scan.state
    return out


def first_scan(scans: Iterable[Scan]) -> datetime | None:
    """When the carrier first had the parcel: 已下单/待揽收 (state none) is not a scan of it."""
    times = [s.at for s in scans if s.state != P.NONE]
    return min(times) if times else None


_SEVERITY = (P.LOST, P.DAMAGED, P.REJECTED, P.RETURNED, P.ADDRESS_ISSUE, P.CUSTOMS, P.STALLED)
_PROGRESS = (P.NONE, P.COLLECTED, P.IN_TRANSIT, P.OUT_FOR_DELIVERY, P.DELIVERED)


def order_logistics_status(states: Iterable[ParcelState]) -> ParcelState:
    """One status for an order's parcels: its worst exception, else the least advanced parcel
    (an order is delivered when every parcel is)."""
    found = set(states)
    for state in _SEVERITY:
        if state in found:
            return state
    return min(found, key=_PROGRESS.index) if found else P.NONE


# -- carrier codes ------------------------------------------------------------------------------

# Kuaidi100 `lastResult.state` (main states) and `data[].statusCode` (高级状态, with resultv2=4/6).
KUAIDI100_STATES: dict[str, ParcelState] = {
    "0": P.IN_TRANSIT,  # 在途
    "1": P.COLLECTED,  # 揽收
    "2": P.STALLED,  # 疑难 (refined by the text, see refine_problem)
    "3": P.DELIVERED,  # 签收
    "4": P.RETURNED,  # 退签
    "5": P.OUT_FOR_DELIVERY,  # 派件
    "6": P.RETURNED,  # 退回
    "7": P.IN_TRANSIT,  # 转投
    "8": P.IN_TRANSIT,  # 清关 (older docs) [U]
    "10": P.IN_TRANSIT,  # 待清关
    "11": P.IN_TRANSIT,  # 清关中
    "12": P.IN_TRANSIT,  # 已清关
    "13": P.CUSTOMS,  # 清关异常
    "14": P.REJECTED,  # 拒签
    # 高级状态
    "101": P.NONE,  # 已下单
    "102": P.NONE,  # 待揽收
    "103": P.COLLECTED,  # 已揽收
    "1001": P.IN_TRANSIT,  # 到达派件城市
    "1002": P.IN_TRANSIT,  # 干线
    "1003": P.IN_TRANSIT,  # 转递
    "501": P.OUT_FOR_DELIVERY,  # 投柜或驿站
    "301": P.DELIVERED,  # 本人签收
    "302": P.DELIVERED,  # 派件异常后签收
    "303": P.DELIVERED,  # 代签
    "304": P.DELIVERED,  # 投柜或站签收
    "401": P.RETURNED,  # 已销单 (the waybill was cancelled: the parcel goes back)
    # 疑难 sub-states [U]: codes and names from memory, not confirmed in a source
    "201": P.STALLED,  # 超时未签收
    "202": P.STALLED,  # 超时未更新
    "203": P.REJECTED,  # 拒收
    "204": P.STALLED,  # 派件异常
    "205": P.STALLED,  # 柜或驿站超时未取
    "206": P.ADDRESS_ISSUE,  # 无法联系
    "207": P.ADDRESS_ISSUE,  # 超区
    "208": P.STALLED,  # 滞留
    "209": P.DAMAGED,  # 破损
}

# The Chinese status names Kuaidi100 puts in data[].status (resultv2=1), for scans without a statusCode.
KUAIDI100_NAMES: dict[str, ParcelState] = {
    "在途": P.IN_TRANSIT, "揽收": P.COLLECTED, "疑难": P.STALLED, "签收": P.DELIVERED, "退签": P.RETURNED,
    "派件": P.OUT_FOR_DELIVERY, "退回": P.RETURNED, "转投": P.IN_TRANSIT, "清关": P.IN_TRANSIT, "待清关": P.IN_TRANSIT,
    "清关中": P.IN_TRANSIT, "已清关": P.IN_TRANSIT, "清关异常": P.CUSTOMS, "拒签": P.REJECTED,
    "已下单": P.NONE, "待揽收": P.NONE, "已揽收": P.COLLECTED, "到达派件城市": P.IN_TRANSIT, "干线": P.IN_TRANSIT,
    "转递": P.IN_TRANSIT, "投柜或驿站": P.OUT_FOR_DELIVERY, "本人签收": P.DELIVERED, "派件异常后签收": P.DELIVERED,
    "代签": P.DELIVERED, "投柜或站签收": P.DELIVERED, "已销单": P.RETURNED,
}  # fmt: skip

# SF route opCodes seen with their remarks; anything else is read as "somewhere in the network".
SF_OPCODES: dict[str, ParcelState] = {
    "50": P.COLLECTED,  # 顺丰速运 已收取快件
    "54": P.COLLECTED,  # 已收取快件
    "30": P.IN_TRANSIT,  # 快件在…完成分拣，准备发往…
    "31": P.IN_TRANSIT,  # 快件到达…
    "36": P.IN_TRANSIT,  # 快件离开…，已在发往…的路上
    "407": P.IN_TRANSIT,  # 快件已发往…
    "501": P.IN_TRANSIT,  # 快件运输中
    "130": P.IN_TRANSIT,  # 已到达目的地网点，即将派件
    "44": P.OUT_FOR_DELIVERY,  # 正在为您的快件分配最合适的快递员
    "204": P.OUT_FOR_DELIVERY,  # 快件交给…，正在派送途中
    "80": P.DELIVERED,  # 已签收
    "8000": P.DELIVERED,  # 结单 [U]
    "631": P.RETURNED,  # 快件已退回
    "648": P.RETURNED,  # 退回 [U]
    "99": P.RETURNED,  # 退回 [U]
    "70": P.STALLED,  # 派送不成功/滞留 [U] (refined by the text)
    "33": P.STALLED,  # 滞留 [U] (refined by the text)
}
SF_UNKNOWN_OPCODE = P.IN_TRANSIT

# For a generic problem code (Kuaidi100 疑难, SF 70/33) the text says what kind of problem it is.
_PROBLEM_WORDS: tuple[tuple[re.Pattern[str], ParcelState], ...] = (
    (re.compile("丢失|遗失|丢件"), P.LOST),
    (re.compile("破损|损坏|破包"), P.DAMAGED),
    (re.compile("拒收|拒签"), P.REJECTED),
    (re.compile("清关|海关|扣关"), P.CUSTOMS),
    (re.compile("地址|电话错误|无法联系|联系不上|超区"), P.ADDRESS_ISSUE),
)


def refine_problem(text: str, default: ParcelState = P.STALLED) -> ParcelState:
    for pattern, state in _PROBLEM_WORDS:
        if pattern.search(text):
            return state
    return default


def kuaidi100_state(status_code: str | None, status_name: str | None, text: str = "") -> ParcelState | None:
    """The state of one Kuaidi100 scan from its statusCode, else its Chinese status name; None if neither is known."""
    state = KUAIDI100_STATES.get((status_code or "").strip()) or KUAIDI100_NAMES.get((status_name or "").strip())
    if state is P.STALLED and (status_code or "").strip() in ("2", ""):  # 疑难 in general, not a sub-state
        return refine_problem(text)
    return state


def sf_state(op_code: str, text: str = "") -> ParcelState:
    state = SF_OPCODES.get(op_code.strip(), SF_UNKNOWN_OPCODE)
    return refine_problem(text) if state is P.STALLED else state


# -- stall rules --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ParcelFacts:
    """What the stall rules need to know about one parcel."""

    state: ParcelState
    carrier: str
    shipped_at: datetime | None
    first_scan_at: datetime | None
    last_event_at: datetime | None
    province: str | None


def _hours(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier).total_seconds() / 3600, 2)


def stall_context(facts: ParcelFacts, now: datetime) -> dict[str, Any]:
    """The JSON the stall rule set sees (docs/logistics.md); a figure that cannot be known is null."""
    return {
        "state": facts.state.value,
        "hours_since_shipped": _hours(now, facts.shipped_at),
        "hours_since_last_event": _hours(now, facts.last_event_at),
        "has_first_scan": facts.first_scan_at is not None,
        "ship_before_first_scan_hours": _hours(facts.first_scan_at, facts.shipped_at),
        "carrier": facts.carrier,
        "province_short": province_short(facts.province),
    }


# Ticket kinds: a stall rule's code (stall_*, scan_after_ship, or any code ops add to the rule set),
# or parcel_<state> when the carrier itself reports an exception.
_RECOVERABLE_KINDS = frozenset({"parcel_stalled", "parcel_lost", "parcel_address_issue", "parcel_customs"})


def exception_kind(state: ParcelState) -> str:
    return f"parcel_{state.value}"


def is_stall(kind: str) -> bool:
    return kind.startswith("stall_") or kind == "parcel_stalled"


def auto_closes(kind: str) -> bool:
    """A ticket that closes by itself when its parcel moves again (what it reports is over); the
    others (late collection, damage, refusal, return) stay for a person to close."""
    return is_stall(kind) or kind in _RECOVERABLE_KINDS


def umbrella_tag(kind: str) -> str:
    """The order tag every open ticket of this kind adds beside its own code."""
    return "stalled" if is_stall(kind) else "logistics_exception"


UMBRELLA_TAGS = frozenset({"stalled", "logistics_exception"})


def retag(tags: Iterable[str], all_kinds: Iterable[str], open_kinds: Iterable[str]) -> list[str]:
    """The order's tags with every ticket tag recomputed from the tickets still open."""
    ours = set(all_kinds) | UMBRELLA_TAGS
    still = set(open_kinds)
    kept = [t for t in tags if t not in ours]
    return kept + sorted(still | {umbrella_tag(k) for k in still})
