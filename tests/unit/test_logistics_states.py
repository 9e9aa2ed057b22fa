"""The parcel state machine cell by cell, scans applied in time order, and the carrier code tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderhub.domain.logistics import (
    KUAIDI100_STATES,
    TRANSITIONS,
    ParcelFacts,
    ParcelState,
    Scan,
    apply_scans,
    auto_closes,
    can_move,
    first_scan,
    kuaidi100_state,
    moves,
    order_logistics_status,
    retag,
    sf_state,
    stall_context,
    umbrella_tag,
)

P = ParcelState
ORDER = [P.NONE, P.COLLECTED, P.IN_TRANSIT, P.OUT_FOR_DELIVERY, P.DELIVERED, P.STALLED, P.RETURNED, P.REJECTED, P.LOST,
         P.DAMAGED, P.ADDRESS_ISSUE, P.CUSTOMS]  # fmt: skip
# Rows: from; columns: to, in ORDER. 1 = allowed, 0 = refused, - = the same state (a confirmation, not a move).
#               N C T O D S R J L G A X
MATRIX = """
none            - 1 1 1 1 1 1 1 1 1 1 1
collected       0 - 1 1 1 1 1 1 1 1 1 1
in_transit      0 0 - 1 1 1 1 1 1 1 1 1
out_for_delivery 0 0 1 - 1 1 1 1 1 1 1 1
delivered       0 0 0 0 - 0 1 0 0 0 0 0
stalled         0 0 1 1 1 - 1 1 1 1 1 1
returned        0 0 0 0 0 0 - 0 0 0 0 0
rejected        0 0 0 0 0 0 1 - 0 0 0 0
lost            0 0 1 1 1 1 1 1 - 1 1 1
damaged         0 0 1 1 1 1 1 1 1 - 1 1
address_issue   0 0 1 1 1 1 1 1 1 1 - 1
customs         0 0 1 1 1 1 1 1 1 1 1 -
"""


def _cells() -> list[tuple[ParcelState, ParcelState, str]]:
    cells = []
    for line in MATRIX.strip().splitlines():
        name, *marks = line.split()
        assert len(marks) == len(ORDER), line
        cells.extend((P(name), target, mark) for target, mark in zip(ORDER, marks, strict=True))
    return cells


T0 = datetime(2025, 3, 18, 10, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def scan(state: ParcelState, hours: float, code: str = "", text: str = "") -> Scan:
    return Scan(at(hours), state, code, text or state.value)


def test_the_matrix_covers_every_state_once():
    assert sorted(ORDER) == sorted(ParcelState)
    assert set(TRANSITIONS) == set(ParcelState)


@pytest.mark.parametrize(("source", "target", "mark"), _cells(), ids=lambda v: v if isinstance(v, str) and len(v) > 1 else None)
def test_each_move_of_the_state_machine_is_allowed_exactly_when_the_table_says(source, target, mark):
    assert can_move(source, target) is (mark == "1")
    result = apply_scans(source, [scan(target, 1)])
    expected = target if mark in ("1", "-") else source
    assert result.state == expected
    assert (result.ignored == ()) is (mark in ("1", "-"))


def test_scans_arriving_out_of_order_are_applied_in_time_order():
    result = apply_scans(P.NONE, [scan(P.DELIVERED, 30), scan(P.COLLECTED, 1), scan(P.OUT_FOR_DELIVERY, 28), scan(P.IN_TRANSIT, 5)])
    assert result.state == P.DELIVERED
    assert [s.state for s in result.accepted] == [P.COLLECTED, P.IN_TRANSIT, P.OUT_FOR_DELIVERY, P.DELIVERED]
    assert result.ignored == ()


def test_a_scan_older_than_the_last_applied_one_never_moves_the_state_back():
    result = apply_scans(P.OUT_FOR_DELIVERY, [scan(P.IN_TRANSIT, 5)], since=at(20))
    assert result.state == P.OUT_FOR_DELIVERY
    assert result.accepted == () and [s.state for s in result.ignored] == [P.IN_TRANSIT]


def test_even_an_allowed_exception_reported_late_does_not_override_a_newer_delivery():
    result = apply_scans(P.DELIVERED, [scan(P.DAMAGED, 10)], since=at(12))
    assert result.state == P.DELIVERED and len(result.ignored) == 1


def test_a_move_the_table_refuses_is_ignored_but_later_allowed_scans_still_apply():
    result = apply_scans(P.COLLECTED, [scan(P.NONE, 2), scan(P.IN_TRANSIT, 3)])
    assert result.state == P.IN_TRANSIT
    assert [s.state for s in result.ignored] == [P.NONE]


def test_a_scan_confirming_the_state_is_accepted_without_a_move():
    result = apply_scans(P.IN_TRANSIT, [scan(P.IN_TRANSIT, 6)], since=at(5))
    assert result.state == P.IN_TRANSIT and len(result.accepted) == 1
    assert moves(P.IN_TRANSIT, result.accepted) == []


def test_a_scan_at_the_same_time_as_the_last_applied_one_counts_if_it_moves_forward():
    assert apply_scans(P.IN_TRANSIT, [scan(P.OUT_FOR_DELIVERY, 5)], since=at(5)).state == P.OUT_FOR_DELIVERY


def test_moves_lists_each_change_with_the_scan_that_caused_it():
    accepted = apply_scans(P.NONE, [scan(P.COLLECTED, 1), scan(P.COLLECTED, 1.5), scan(P.IN_TRANSIT, 3)]).accepted
    assert [(a, b) for a, b, _ in moves(P.NONE, accepted)] == [(P.NONE, P.COLLECTED), (P.COLLECTED, P.IN_TRANSIT)]


def test_the_first_scan_is_the_first_the_carrier_had_the_parcel_not_the_order_it_was_given():
    assert first_scan([scan(P.NONE, 0.5, "101"), scan(P.COLLECTED, 3)]) == at(3)
    assert first_scan([scan(P.NONE, 0.5, "101")]) is None


def test_an_order_is_delivered_only_when_every_parcel_is_and_shows_its_worst_exception():
    assert order_logistics_status([P.DELIVERED, P.IN_TRANSIT]) == P.IN_TRANSIT
    assert order_logistics_status([P.DELIVERED, P.DELIVERED]) == P.DELIVERED
    assert order_logistics_status([P.DELIVERED, P.STALLED, P.LOST]) == P.LOST
    assert order_logistics_status([]) == P.NONE


@pytest.mark.parametrize(("code", "state"), [
    ("0", P.IN_TRANSIT), ("1", P.COLLECTED), ("3", P.DELIVERED), ("4", P.RETURNED), ("5", P.OUT_FOR_DELIVERY),
    ("6", P.RETURNED), ("7", P.IN_TRANSIT), ("13", P.CUSTOMS), ("14", P.REJECTED), ("501", P.OUT_FOR_DELIVERY), ("304", P.DELIVERED),
])  # fmt: skip
def test_kuaidi100_states_map_onto_the_parcel_states(code, state):
    assert kuaidi100_state(code, None) == state
    assert KUAIDI100_STATES[code] == state


def test_a_kuaidi100_problem_parcel_is_told_apart_by_its_text():
    assert kuaidi100_state("2", "疑难", "快件外包装破损") == P.DAMAGED
    assert kuaidi100_state("2", "疑难", "快件丢失，正在核实") == P.LOST
    assert kuaidi100_state("2", "疑难", "收件地址不详") == P.ADDRESS_ISSUE
    assert kuaidi100_state("2", "疑难", "快件滞留于营业点") == P.STALLED
    assert kuaidi100_state("", "疑难", "客户拒收") == P.REJECTED
    assert kuaidi100_state("", "派件") == P.OUT_FOR_DELIVERY
    assert kuaidi100_state("", "") is None


@pytest.mark.parametrize(("op_code", "text", "state"), [
    ("50", "顺丰速运 已收取快件", P.COLLECTED), ("31", "快件到达", P.IN_TRANSIT), ("36", "快件离开", P.IN_TRANSIT),
    ("44", "分配快递员", P.OUT_FOR_DELIVERY), ("204", "正在派送途中", P.OUT_FOR_DELIVERY), ("80", "已签收", P.DELIVERED),
    ("631", "快件已退回", P.RETURNED), ("70", "快件外包装破损", P.DAMAGED), ("70", "客户拒收", P.REJECTED),
    ("70", "派送不成功", P.STALLED), ("9999", "新的操作码", P.IN_TRANSIT),
])  # fmt: skip
def test_sf_op_codes_map_onto_the_parcel_states(op_code, text, state):
    assert sf_state(op_code, text) == state


def test_the_stall_rules_see_hours_and_a_null_where_a_figure_cannot_be_known():
    facts = ParcelFacts(P.NONE, "ZTO", at(0), None, None, "新疆维吾尔自治区")
    context = stall_context(facts, at(25.5))
    assert context == {"state": "none", "hours_since_shipped": 25.5, "hours_since_last_event": None, "has_first_scan": False,
                       "ship_before_first_scan_hours": None, "carrier": "ZTO", "province_short": "新疆"}  # fmt: skip
    late = stall_context(ParcelFacts(P.IN_TRANSIT, "SF", at(0), at(3.25), at(10), "上海市"), at(40))
    assert late["ship_before_first_scan_hours"] == 3.25 and late["hours_since_last_event"] == 30


def test_stall_tickets_close_when_the_parcel_moves_but_late_collection_and_damage_wait_for_a_person():
    assert auto_closes("stall_in_transit_48h") and auto_closes("parcel_lost") and auto_closes("stall_custom_rule")
    assert not auto_closes("scan_after_ship") and not auto_closes("parcel_damaged") and not auto_closes("parcel_returned")
    assert umbrella_tag("stall_no_first_scan") == "stalled" and umbrella_tag("parcel_rejected") == "logistics_exception"


def test_order_tags_are_recomputed_from_the_tickets_still_open():
    tags = ["vip", "stalled", "stall_in_transit_24h", "scan_after_ship", "logistics_exception"]
    assert retag(tags, {"stall_in_transit_24h", "scan_after_ship"}, {"scan_after_ship"}) == ["vip", "logistics_exception", "scan_after_ship"]
    assert retag(["vip"], set(), {"stall_no_first_scan"}) == ["vip", "stall_no_first_scan", "stalled"]
