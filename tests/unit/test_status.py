import pytest

from orderhub.domain.status import INTERNAL_REFINEMENTS_OF_PAID, TRANSITIONS, Status, can_transition, platform_view

S = Status

ALLOWED = {
    (S.PENDING_PAYMENT, S.PAID), (S.PENDING_PAYMENT, S.CANCELLED), (S.PENDING_PAYMENT, S.CLOSED),
    (S.PENDING_PAYMENT, S.SHIPPED), (S.PENDING_PAYMENT, S.DELIVERED), (S.PENDING_PAYMENT, S.COMPLETED),
    (S.PAID, S.ON_HOLD), (S.PAID, S.READY), (S.PAID, S.CANCELLED), (S.PAID, S.SHIPPED), (S.PAID, S.DELIVERED), (S.PAID, S.COMPLETED),
    (S.ON_HOLD, S.PAID), (S.ON_HOLD, S.READY), (S.ON_HOLD, S.CANCELLED), (S.ON_HOLD, S.SHIPPED), (S.ON_HOLD, S.DELIVERED), (S.ON_HOLD, S.COMPLETED),
    (S.READY, S.PICKING), (S.READY, S.ON_HOLD), (S.READY, S.CANCELLED), (S.READY, S.SHIPPED), (S.READY, S.DELIVERED), (S.READY, S.COMPLETED),
    (S.PICKING, S.SHIPPED), (S.PICKING, S.ON_HOLD), (S.PICKING, S.CANCELLED), (S.PICKING, S.DELIVERED), (S.PICKING, S.COMPLETED),
    (S.SHIPPED, S.DELIVERED), (S.SHIPPED, S.COMPLETED),
    (S.DELIVERED, S.COMPLETED),
}


@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("target", list(Status))
def test_every_cell_of_the_transition_table(current, target):
    assert can_transition(current, target) is ((current, target) in ALLOWED)


def test_the_table_covers_every_status():
    assert set(TRANSITIONS) == set(Status)


@pytest.mark.parametrize("status", [S.COMPLETED, S.CANCELLED, S.CLOSED])
def test_final_statuses_lead_nowhere(status):
    assert TRANSITIONS[status] == frozenset()


def test_nothing_is_cancelled_once_shipped():
    assert not can_transition(S.SHIPPED, S.CANCELLED)
    assert not can_transition(S.DELIVERED, S.CANCELLED)


def test_internal_statuses_read_as_paid_to_a_platform():
    for status in INTERNAL_REFINEMENTS_OF_PAID:
        assert platform_view(status) is S.PAID
    assert platform_view(S.SHIPPED) is S.SHIPPED
