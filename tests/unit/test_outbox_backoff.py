"""The outbox's retry schedule, without a database: exponential backoff with jitter, a cap, and when a message is dead."""

from __future__ import annotations

import pytest

from orderhub.services.outbox import DeliveryError, backoff_delay, backoff_wait, retry_delay, sender_for

WAIT = backoff_wait(2.0, 600.0)


@pytest.mark.parametrize("attempts", range(1, 9))
def test_the_wait_after_the_nth_failure_is_base_times_two_to_the_n_minus_one_plus_at_most_one_base_of_jitter(attempts):
    low = 2.0 * 2 ** (attempts - 1)
    for _ in range(50):
        assert low <= backoff_delay(attempts, WAIT) <= min(600.0, low + 2.0)


def test_every_retry_waits_longer_than_the_one_before():
    for attempts in range(1, 8):
        longest_now = max(backoff_delay(attempts, WAIT) for _ in range(50))
        shortest_next = min(backoff_delay(attempts + 1, WAIT) for _ in range(50))
        assert longest_now <= shortest_next


def test_the_wait_is_capped_however_many_attempts_were_made():
    assert backoff_delay(12, WAIT) == 600.0
    assert backoff_delay(10_000, WAIT) == 600.0  # 2**9999 overflows a float; still the cap


def test_jitter_spreads_out_messages_that_failed_together():
    assert len({round(backoff_delay(3, WAIT), 6) for _ in range(20)}) > 10


def test_a_retryable_failure_is_tried_again_until_the_last_allowed_attempt():
    error = DeliveryError("HTTP 503")
    assert 2.0 <= retry_delay(1, error, max_attempts=3, wait=WAIT) <= 4.0
    assert 4.0 <= retry_delay(2, error, max_attempts=3, wait=WAIT) <= 6.0
    assert retry_delay(3, error, max_attempts=3, wait=WAIT) is None


def test_a_refusal_is_final_at_the_first_attempt():
    assert retry_delay(1, DeliveryError("HTTP 422", retryable=False), max_attempts=10, wait=WAIT) is None


def test_a_receivers_retry_after_is_honoured_when_longer_than_the_backoff():
    assert retry_delay(1, DeliveryError("HTTP 429", retry_after_s=120.0), max_attempts=10, wait=WAIT) == 120.0
    assert 2.0 <= retry_delay(1, DeliveryError("HTTP 429", retry_after_s=0.5), max_attempts=10, wait=WAIT) <= 4.0


def test_a_kind_goes_to_its_own_sender_before_its_prefixs():
    wms, freeze = object(), object()
    senders = {"wms": wms, "wms.freeze": freeze}
    assert sender_for(senders, "wms.freeze") is freeze
    assert sender_for(senders, "wms.order") is wms
    assert sender_for(senders, "carrier.waybill") is None
