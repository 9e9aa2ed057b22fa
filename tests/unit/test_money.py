import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderhub.domain.errors import ErrorCode, NormalizationError
from orderhub.domain.money import allocate_largest_remainder, fen_to_yuan, yuan_to_fen


@pytest.mark.parametrize(
    ("value", "fen"),
    [("59.90", 5990), ("59.9", 5990), ("0.01", 1), ("200.07", 20007), (188.0, 18800), (0.1, 10), (19.99, 1999), (3, 300), ("1299", 129900)],
)
def test_platform_amounts_become_exact_fen(value, fen):
    assert yuan_to_fen(value) == fen


def test_json_doubles_from_a_platform_convert_without_float_error():
    # PDD sends yuan as JSON doubles; 1.15 * 100 is 114.99999999999999 in float arithmetic.
    payload = json.loads('{"a": 1.15, "b": 188.1, "c": 0.29}')
    assert [yuan_to_fen(v) for v in payload.values()] == [115, 18810, 29]


def test_a_float_that_is_not_a_two_decimal_amount_is_refused():
    with pytest.raises(NormalizationError):
        yuan_to_fen(0.1 + 0.2)  # 0.30000000000000004: computed, not money


@pytest.mark.parametrize("value", ["1.001", "abc", "", "NaN", "Infinity", True])
def test_money_that_does_not_fit_fen_is_refused_not_rounded(value):
    with pytest.raises(NormalizationError) as info:
        yuan_to_fen(value, "price")
    assert info.value.code == ErrorCode.INVALID_AMOUNT
    assert info.value.field == "price"


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_fen_to_yuan_and_back_is_the_identity(fen):
    assert yuan_to_fen(fen_to_yuan(fen)) == fen


@given(st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False))
def test_two_decimal_yuan_strings_convert_exactly(amount):
    assert yuan_to_fen(str(amount)) == int(amount * 100)
    assert Decimal(fen_to_yuan(yuan_to_fen(str(amount)))) == amount


@given(
    st.integers(min_value=0, max_value=10**9),
    st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=30),
)
def test_largest_remainder_parts_always_add_up_and_stay_proportional(total, weights):
    parts = allocate_largest_remainder(total, weights)
    assert sum(parts) == total
    assert len(parts) == len(weights)
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights):
        exact = total * weight / weight_sum if weight_sum else total / len(weights)
        assert abs(part - exact) < 1 + 1e-9


def test_largest_remainder_gives_leftover_fen_to_the_largest_fractions():
    # 100 over 1:1:1 -> 33.33 each; one fen left goes to the first line (tie -> earlier line)
    assert allocate_largest_remainder(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate_largest_remainder(13370, [11980, 2990]) == [10700, 2670]
    assert allocate_largest_remainder(0, [5, 0]) == [0, 0]
    assert allocate_largest_remainder(10, [0, 0]) == [5, 5]
