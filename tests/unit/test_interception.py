"""What a freeze instruction becomes (拦截), as a table; the package status machine cell by cell; WMS order codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderhub.domain.fulfillment import (
    EVENT_MOVES, TRANSITIONS, Action, Earlier, InstructionKind, Outcome, PackageStatus, PackageView, after_event, conflicting, decide,
    parse_code, settle, wms_order_code,
)

K, P, O = InstructionKind, PackageStatus, Outcome
T = datetime(2025, 3, 18, 2, 13, tzinfo=UTC)
ALL = list(P)


# -- the package status machine --------------------------------------------------------------------

# event -> the statuses it moves a package out of (to its target); every other cell is stale: no move.
EXPECTED_MOVES = {
    "accepted": (P.ACCEPTED, {P.QUEUED}),
    "picking": (P.PICKING, {P.QUEUED, P.ACCEPTED}),
    "packed": (P.PACKED, {P.QUEUED, P.ACCEPTED, P.PICKING, P.FROZEN}),
    "shipped": (P.SHIPPED, {P.QUEUED, P.ACCEPTED, P.PICKING, P.PACKED, P.FROZEN}),
    "frozen": (P.FROZEN, {P.QUEUED, P.ACCEPTED, P.PICKING}),
    "unfrozen": (P.ACCEPTED, {P.FROZEN}),
    "cancelled": (P.CANCELLED, {P.QUEUED, P.ACCEPTED, P.PICKING, P.FROZEN}),
}


@pytest.mark.parametrize("event", sorted(EXPECTED_MOVES))
@pytest.mark.parametrize("status", ALL, ids=[s.value for s in ALL])
def test_each_wms_event_moves_a_package_only_from_the_statuses_it_may_leave(event, status):
    target, sources = EXPECTED_MOVES[event]
    assert after_event(status, event) == (target if status in sources else None)


def test_no_event_leaves_a_shipped_or_cancelled_package_and_only_unfrozen_resumes_a_frozen_one():
    assert TRANSITIONS[P.SHIPPED] == frozenset() and TRANSITIONS[P.CANCELLED] == frozenset()
    assert TRANSITIONS[P.FROZEN] == {P.ACCEPTED, P.PACKED, P.SHIPPED, P.CANCELLED}
    assert after_event(P.FROZEN, "accepted") is None and after_event(P.FROZEN, "picking") is None  # late events cannot undo a freeze
    assert TRANSITIONS[P.PACKED] == {P.SHIPPED}  # packed: a freeze or a cancel is refused


def test_the_transition_table_is_exactly_what_the_events_allow():
    expected = {s: {t for t, sources in EXPECTED_MOVES.values() if s in sources} for s in ALL}
    assert {s: set(v) for s, v in TRANSITIONS.items()} == expected
    assert set(EVENT_MOVES) == set(EXPECTED_MOVES)


def test_an_unknown_event_moves_nothing():
    assert after_event(P.QUEUED, "teleported") is None


# -- what an instruction becomes ---------------------------------------------------------------------


def pkg(status: P, no: int = 1, *, sent: bool = True, code: str | None = None) -> PackageView:
    return PackageView(code or f"o-{no}", no, status, sent)


def earlier(kind: K, seconds_before: float, outcome: O = O.APPLIED, *, fp: str = "", dismissed: bool = False, id: int = 7) -> Earlier:
    return Earlier(id, kind, T - timedelta(seconds=seconds_before), outcome, fp, dismissed)


CASES = [
    # (what happens, kind, packages, earlier instructions, expected action, freeze, withdraw, late)
    ("nothing sent yet: applied here", K.CANCEL, [pkg(P.QUEUED, sent=False)], [], Action.LOCAL, (), ("o-1",), ()),
    ("no package at all: applied here", K.CANCEL, [], [], Action.LOCAL, (), (), ()),
    ("only dropped packages: applied here", K.CANCEL, [pkg(P.CANCELLED)], [], Action.LOCAL, (), (), ()),
    ("left the outbox, not yet accepted: frozen at the WMS", K.CANCEL, [pkg(P.QUEUED)], [], Action.FREEZE, ("o-1",), (), ()),
    ("accepted: frozen", K.CANCEL, [pkg(P.ACCEPTED)], [], Action.FREEZE, ("o-1",), (), ()),
    ("picking: frozen", K.CANCEL, [pkg(P.PICKING)], [], Action.FREEZE, ("o-1",), (), ()),
    ("frozen for another instruction: asked again", K.CANCEL, [pkg(P.FROZEN)], [], Action.FREEZE, ("o-1",), (), ()),
    ("packed: too late", K.CANCEL, [pkg(P.PACKED)], [], Action.TOO_LATE, (), (), (1,)),
    ("shipped: too late", K.CANCEL, [pkg(P.SHIPPED)], [], Action.TOO_LATE, (), (), (1,)),
    ("split, one picking one packed: freeze one, the other is late", K.CANCEL, [pkg(P.PICKING, 1), pkg(P.PACKED, 2)], [],
     Action.FREEZE, ("o-1",), (), (2,)),
    ("split, one unsent one shipped: take one back, the other is late", K.CANCEL, [pkg(P.QUEUED, 1, sent=False), pkg(P.SHIPPED, 2)], [],
     Action.TOO_LATE, (), ("o-1",), (2,)),
    ("merged package: asked once", K.CANCEL, [pkg(P.PICKING, 1, code="g-1"), pkg(P.PICKING, 1, code="g-1")], [], Action.FREEZE, ("g-1",), (), ()),
    ("cancel 10 s after an expedite: supervisor", K.CANCEL, [pkg(P.PICKING)], [earlier(K.EXPEDITE, 10)], Action.SUPERVISOR, (), (), ()),
    ("cancel 15 s after an expedite: still the window", K.CANCEL, [pkg(P.PICKING)], [earlier(K.EXPEDITE, 15)], Action.SUPERVISOR, (), (), ()),
    ("cancel 16 s after an expedite: no race any more", K.CANCEL, [pkg(P.PICKING)], [earlier(K.EXPEDITE, 16)], Action.FREEZE, ("o-1",), (), ()),
    ("expedite 5 s after a cancel under way: supervisor", K.EXPEDITE, [pkg(P.PICKING)], [earlier(K.CANCEL, 5, O.PENDING)], Action.SUPERVISOR,
     (), (), ()),
    ("cancel 3 s after an address change: supervisor", K.CANCEL, [pkg(P.FROZEN)], [earlier(K.ADDRESS, 3, O.FROZEN)], Action.SUPERVISOR,
     (), (), ()),
    ("a second, different address within 15 s: supervisor", K.ADDRESS, [pkg(P.PICKING)], [earlier(K.ADDRESS, 8, fp="old")], Action.SUPERVISOR,
     (), (), ()),
    ("the same address again while the first is under way: a repeat", K.ADDRESS, [pkg(P.FROZEN)], [earlier(K.ADDRESS, 8, O.FROZEN, fp="new")],
     Action.DUPLICATE, (), (), ()),
    ("a cancel while a cancel is under way: a repeat", K.CANCEL, [pkg(P.FROZEN)], [earlier(K.CANCEL, 60, O.PENDING)], Action.DUPLICATE, (), (), ()),
    ("a cancel after a cancel was applied: a repeat", K.CANCEL, [pkg(P.CANCELLED)], [earlier(K.CANCEL, 600)], Action.DUPLICATE, (), (), ()),
    ("a cancel after one came too late: a repeat (the carrier was asked already)", K.CANCEL, [pkg(P.SHIPPED)], [earlier(K.CANCEL, 60, O.TOO_LATE)],
     Action.DUPLICATE, (), (), ()),
    ("an address after a cancel came too late, 20 s later: a carrier redirect", K.ADDRESS, [pkg(P.SHIPPED)], [earlier(K.CANCEL, 20, O.TOO_LATE)],
     Action.TOO_LATE, (), (), (1,)),
    ("a remark right after a cancel: no conflict", K.REMARK, [pkg(P.PICKING)], [earlier(K.CANCEL, 2, O.PENDING)], Action.FREEZE, ("o-1",), (), ()),
    ("an expedite the supervisor dismissed does not count", K.CANCEL, [pkg(P.PICKING)], [earlier(K.EXPEDITE, 3, O.SUPERVISOR, dismissed=True)],
     Action.FREEZE, ("o-1",), (), ()),
    ("a second expedite after one was applied: sent again", K.EXPEDITE, [pkg(P.PICKING)], [earlier(K.EXPEDITE, 30)], Action.FREEZE, ("o-1",), (), ()),
    ("an expedite of a packed order: too late", K.EXPEDITE, [pkg(P.PACKED)], [], Action.TOO_LATE, (), (), (1,)),
]


@pytest.mark.parametrize(("case", "kind", "packages", "before", "action", "freeze", "withdraw", "late"), CASES, ids=[c[0] for c in CASES])
def test_what_an_instruction_becomes(case, kind, packages, before, action, freeze, withdraw, late):
    fp = "new" if kind is K.ADDRESS else ""
    plan = decide(kind, packages, before, requested_at=T, fingerprint=fp)
    assert (plan.action, plan.freeze, plan.withdraw, plan.late) == (action, freeze, withdraw, late)
    if action in (Action.SUPERVISOR, Action.DUPLICATE):
        assert plan.other == 7


def test_a_supervisors_go_ahead_skips_the_conflict_check():
    plan = decide(K.CANCEL, [pkg(P.PICKING)], [earlier(K.EXPEDITE, 2)], requested_at=T, check_conflicts=False)
    assert plan.action is Action.FREEZE


def test_an_instruction_that_arrived_before_the_other_still_conflicts_with_it():
    later = Earlier(9, K.EXPEDITE, T + timedelta(seconds=4), O.APPLIED)
    assert decide(K.CANCEL, [pkg(P.PICKING)], [later], requested_at=T).action is Action.SUPERVISOR


@pytest.mark.parametrize(("a", "b", "expected"), [
    (K.CANCEL, K.EXPEDITE, True), (K.EXPEDITE, K.CANCEL, True), (K.CANCEL, K.ADDRESS, True), (K.ADDRESS, K.CANCEL, True),
    (K.CANCEL, K.REMARK, False), (K.REMARK, K.REMARK, False), (K.ADDRESS, K.EXPEDITE, False), (K.EXPEDITE, K.EXPEDITE, False),
    (K.CANCEL, K.CANCEL, False), (K.REMARK, K.EXPEDITE, False),
])
def test_which_kinds_pull_an_order_two_ways(a, b, expected):
    assert conflicting(a, "", Earlier(1, b, T, O.PENDING)) is expected


def test_two_addresses_conflict_only_when_they_differ():
    assert conflicting(K.ADDRESS, "a", Earlier(1, K.ADDRESS, T, O.PENDING, "b")) is True
    assert conflicting(K.ADDRESS, "a", Earlier(1, K.ADDRESS, T, O.PENDING, "a")) is False


# -- settling the WMS's answers -------------------------------------------------------------------------


@pytest.mark.parametrize(("answers", "expected"), [
    ({"a": "frozen", "b": "frozen"}, (O.FROZEN, ("a", "b"), ())),
    ({"a": "frozen", "b": "refused"}, (O.TOO_LATE, ("a",), ("b",))),
    ({"a": "refused", "b": "refused"}, (O.TOO_LATE, (), ("a", "b"))),
])
def test_an_instruction_settles_once_every_wms_order_answered(answers, expected):
    settled = settle(("a", "b"), answers)
    assert settled is not None and (settled.outcome, settled.frozen, settled.refused) == expected


def test_an_instruction_waits_while_a_wms_order_has_not_answered():
    assert settle(("a", "b"), {"a": "frozen"}) is None


# -- WMS order codes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("anchor", "package", "generation", "code"), [
    ("5d41402abc4b2a76b9719d911017c592", 1, 1, "5d41402abc4b2a76b9719d911017c592-1"),
    ("5d41402abc4b2a76b9719d911017c592", 2, 3, "5d41402abc4b2a76b9719d911017c592-2-3"),
])
def test_a_wms_order_code_names_its_anchor_order_package_and_generation(anchor, package, generation, code):
    assert wms_order_code(anchor, package, generation) == code
    assert parse_code(code) == (anchor, package, generation)


@pytest.mark.parametrize("code", ["", "abc", "abc-x", "-1", "a-1-2-3", "a-1-b"])
def test_a_code_that_is_not_ours_is_refused(code):
    with pytest.raises(ValueError):
        parse_code(code)
