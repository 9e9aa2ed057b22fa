"""Newer wins, duplicates change nothing, and the order never moves backwards."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from factories import make_order
from orderhub.domain.merge import HoldCode, Outcome, apply_snapshot, stored_after
from orderhub.domain.status import Status

ACTOR = "platform:douyin"


def apply_all(snapshots):
    state = None
    outcomes = []
    for snapshot in snapshots:
        change = apply_snapshot(state, snapshot, ACTOR)
        outcomes.append(change)
        state = stored_after(change, state) if change.outcome is not Outcome.STALE else state
    return state, outcomes


def test_a_new_order_is_created_with_one_event():
    state, (change,) = apply_all([make_order()])
    assert change.outcome is Outcome.CREATED
    assert [(e.kind, e.from_status, e.to_status) for e in change.events] == [("created", None, "paid")]
    assert state.version == 1


def test_a_duplicate_push_changes_nothing():
    state, changes = apply_all([make_order(), make_order()])
    assert changes[1].outcome is Outcome.UNCHANGED
    assert changes[1].events == []
    assert state.version == 1


def test_an_older_update_does_not_roll_the_order_back():
    newer = make_order(status=Status.CANCELLED, updated=30)
    older = make_order(status=Status.PAID, updated=0)
    state, changes = apply_all([make_order(status=Status.PENDING_PAYMENT, updated=-40, paid_at=None), newer, older])
    assert changes[2].outcome is Outcome.STALE
    assert state.status is Status.CANCELLED


def test_a_tie_on_update_time_applies_only_a_forward_move():
    state, changes = apply_all([make_order(status=Status.SHIPPED, updated=5), make_order(status=Status.PAID, updated=5)])
    assert changes[1].outcome is Outcome.STALE
    assert state.status is Status.SHIPPED
    state, changes = apply_all([make_order(status=Status.PAID, updated=5), make_order(status=Status.SHIPPED, updated=5)])
    assert changes[1].outcome is Outcome.UPDATED
    assert state.status is Status.SHIPPED


def test_a_platform_cancel_after_shipping_is_not_forced_through_but_held():
    state, changes = apply_all([make_order(status=Status.SHIPPED), make_order(status=Status.CANCELLED, updated=10)])
    assert state.status is Status.SHIPPED
    assert [h["code"] for h in state.holds] == [HoldCode.INTERCEPT_PENDING]
    conflict = [e for e in changes[1].events if e.kind == "status_conflict"]
    assert conflict and conflict[0].to_status == "cancelled" and "not allowed" in conflict[0].reason


def test_an_address_change_is_logged_with_before_and_after():
    state, changes = apply_all([make_order(), make_order(updated=20, detail="新地址路***")])
    events = {e.kind: e for e in changes[1].events}
    assert events["address_changed"].data["from"]["detail"] == "测试路***"
    assert events["address_changed"].data["to"]["detail"] == "新地址路***"
    assert state.version == 2


def test_an_internal_status_is_kept_when_the_platform_still_says_paid():
    order = make_order()
    state, _ = apply_all([order])
    held = replace(state, status=Status.ON_HOLD)
    change = apply_snapshot(held, make_order(updated=5, detail="改过***"), ACTOR)
    assert change.outcome is Outcome.UPDATED
    assert change.status is Status.ON_HOLD


# The platform's history of one order: each step newer than the one before.
HISTORY = [
    make_order(status=Status.PENDING_PAYMENT, updated=-40, paid_at=None),
    make_order(status=Status.PAID, updated=0),
    make_order(status=Status.PAID, updated=10, detail="改地址***"),
    make_order(status=Status.SHIPPED, updated=3600, detail="改地址***"),
    make_order(status=Status.COMPLETED, updated=86400, detail="改地址***"),
]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(range(len(HISTORY))), min_size=1, max_size=12))
def test_any_delivery_order_with_duplicates_ends_at_the_newest_snapshot(indices):
    state, _ = apply_all([HISTORY[i] for i in indices])
    newest = HISTORY[max(indices)]
    assert state.updated_at == newest.updated_at
    assert state.status is newest.status
    assert state.address["detail"] == newest.address.detail


@settings(max_examples=200)
@given(st.permutations(range(len(HISTORY))), st.integers(min_value=1, max_value=3))
def test_replaying_everything_again_changes_nothing(order, repeats):
    state, _ = apply_all([HISTORY[i] for i in order])
    again, changes = apply_all([HISTORY[i] for i in order] * repeats)
    version_before = state.version
    for change in changes[len(order):]:
        assert change.outcome in (Outcome.STALE, Outcome.UNCHANGED)
    assert again.version == version_before


def test_an_order_number_too_long_for_its_column_is_refused_before_it_reaches_the_database():
    import pytest

    from orderhub.domain.errors import NormalizationError

    with pytest.raises(NormalizationError) as info:
        make_order("9" * 65)
    assert (info.value.code.value, info.value.field) == ("invalid_field", "original_id")
