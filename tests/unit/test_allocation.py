"""Which warehouse(s) serve an order: the allocation policy step by step, and its properties."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderhub.domain.inventory import Allocation, Need, Pick, Shortage, allocate, apply_picks

EAST, SOUTH, NORTH = "WH-EAST", "WH-SOUTH", "WH-NORTH"
ALL = [EAST, SOUTH, NORTH]


def stock(**rows: int) -> dict[tuple[str, str], int]:
    """stock(A_EAST=5) -> {("A", "WH-EAST"): 5}"""
    return {(key.split("_")[0], f"WH-{key.split('_')[1]}"): qty for key, qty in rows.items()}


def shipped(allocation: Allocation) -> dict[tuple[str, str], int]:
    out: Counter[tuple[str, str]] = Counter()
    for pick in allocation.picks:
        out[(pick.sku, pick.warehouse)] += pick.qty
    return dict(out)


# -- the policy, step by step -----------------------------------------------------------------


def test_the_whole_order_ships_from_the_routing_rules_warehouse_when_it_has_everything():
    allocation = allocate([Need(1, "A", 2), Need(2, "B", 1)], stock(A_EAST=2, B_EAST=1, A_SOUTH=9, B_SOUTH=9), preferred=EAST, warehouses=ALL)
    assert allocation.ok and allocation.warehouse == EAST and not allocation.split
    assert allocation.picks == (Pick(1, "A", EAST, 2, 1), Pick(2, "B", EAST, 1, 1))


def test_an_order_the_preferred_warehouse_cannot_serve_goes_whole_to_the_first_other_that_can():
    available = stock(A_EAST=5, B_EAST=0, A_SOUTH=1, B_SOUTH=1, A_NORTH=5, B_NORTH=5)
    allocation = allocate([Need(1, "A", 2), Need(2, "B", 1)], available, preferred=EAST, warehouses=ALL)
    # SOUTH has B but not 2 of A; NORTH has both: one package from NORTH rather than a split.
    assert allocation.warehouse == NORTH and not allocation.split
    assert {p.warehouse for p in allocation.picks} == {NORTH}


def test_other_warehouses_are_tried_in_the_configured_order():
    available = stock(A_SOUTH=3, A_NORTH=3)
    assert allocate([Need(1, "A", 3)], available, preferred=EAST, warehouses=[NORTH, SOUTH, EAST]).warehouse == NORTH
    assert allocate([Need(1, "A", 3)], available, preferred=EAST, warehouses=[SOUTH, NORTH, EAST]).warehouse == SOUTH


def test_without_a_routing_rule_the_first_warehouse_that_can_serve_it_is_used():
    allocation = allocate([Need(1, "A", 1)], stock(A_SOUTH=1), preferred=None, warehouses=ALL)
    assert allocation.warehouse == SOUTH and allocation.ok


def test_when_no_warehouse_has_everything_lines_split_preferred_first_and_a_line_may_be_divided():
    available = stock(A_EAST=3, A_SOUTH=5, B_SOUTH=2, B_NORTH=4)
    allocation = allocate([Need(1, "A", 5), Need(2, "B", 5)], available, preferred=EAST, warehouses=ALL)
    assert allocation.ok and allocation.split and allocation.warehouse == EAST
    assert set(allocation.picks) == {
        Pick(1, "A", EAST, 3, 1), Pick(1, "A", SOUTH, 2, 2), Pick(2, "B", SOUTH, 2, 2), Pick(2, "B", NORTH, 3, 3),
    }


def test_lines_with_a_package_reason_ship_in_a_package_of_their_own():
    needs = [Need(1, "A", 1), Need(2, "P", 1, package="presale"), Need(3, "O", 1, package="oversized"), Need(4, "B", 1)]
    allocation = allocate(needs, stock(A_EAST=9, P_EAST=9, O_EAST=9, B_EAST=9), preferred=EAST, warehouses=ALL)
    packages = {p.line_no: p.package_no for p in allocation.picks}
    assert packages[1] == packages[4] == 1  # ordinary goods: the main package
    assert len({packages[1], packages[2], packages[3]}) == 3
    assert allocation.split and allocation.warehouse == EAST


def test_split_by_rule_and_by_warehouse_combine_one_package_per_warehouse_and_reason():
    needs = [Need(1, "A", 2), Need(2, "P", 2, package="presale")]
    allocation = allocate(needs, stock(A_EAST=1, A_SOUTH=1, P_EAST=1, P_SOUTH=1), preferred=EAST, warehouses=ALL)
    by_package = {(p.warehouse, p.package_no) for p in allocation.picks}
    assert len(by_package) == 4 and (EAST, 1) in by_package
    assert sorted(p.package_no for p in allocation.picks) == [1, 2, 3, 4]


def test_a_short_order_picks_nothing_and_names_every_short_sku_not_only_the_first():
    available = stock(A_EAST=1, A_SOUTH=1, B_EAST=5, C_NORTH=1)
    allocation = allocate([Need(1, "A", 3), Need(2, "B", 2), Need(3, "C", 4), Need(4, "D", 1)], available, preferred=EAST, warehouses=ALL)
    assert not allocation.ok and allocation.picks == () and allocation.warehouse is None
    assert allocation.shortages == (Shortage("A", 3, 2), Shortage("C", 4, 1), Shortage("D", 1, 0))


def test_negative_availability_counts_as_none():
    allocation = allocate([Need(1, "A", 1)], stock(A_EAST=-4, A_SOUTH=1), preferred=EAST, warehouses=ALL)
    assert allocation.warehouse == SOUTH
    assert allocate([Need(1, "A", 2)], stock(A_EAST=-4, A_SOUTH=1), preferred=EAST, warehouses=ALL).shortages == (Shortage("A", 2, 1),)


def test_the_same_sku_on_two_lines_needs_the_sum_from_the_shelf():
    needs = [Need(1, "A", 2), Need(2, "A", 2)]
    assert not allocate(needs, stock(A_EAST=3), preferred=EAST, warehouses=[EAST]).ok
    assert allocate(needs, stock(A_EAST=3), preferred=EAST, warehouses=[EAST]).shortages == (Shortage("A", 4, 3),)
    split = allocate(needs, stock(A_EAST=3, A_SOUTH=1), preferred=EAST, warehouses=ALL)
    assert shipped(split) == {("A", EAST): 3, ("A", SOUTH): 1}


def test_without_splitting_an_order_no_single_warehouse_can_serve_is_short_and_says_what_the_first_choice_lacks():
    allocation = allocate([Need(1, "A", 1), Need(2, "B", 1)], stock(A_EAST=1, B_SOUTH=1), preferred=EAST, warehouses=ALL, allow_split=False)
    assert not allocation.ok and allocation.picks == ()
    assert allocation.shortages == (Shortage("B", 1, 1),)  # stock exists, only not in one place


def test_without_splitting_a_single_warehouse_still_serves_it():
    allocation = allocate([Need(1, "A", 1), Need(2, "B", 1)], stock(A_EAST=1, A_SOUTH=1, B_SOUTH=1), preferred=EAST, warehouses=ALL,
                          allow_split=False)
    assert allocation.ok and allocation.warehouse == SOUTH and not allocation.split


def test_a_gift_out_of_stock_is_dropped_and_reported_without_blocking_the_order():
    gift = Need(1000, "G", 1, gift=True)
    allocation = allocate([Need(1, "A", 1), gift], stock(A_EAST=1), preferred=EAST, warehouses=ALL)
    assert allocation.ok and allocation.dropped_gifts == (gift,)
    assert allocation.picks == (Pick(1, "A", EAST, 1, 1),)


def test_a_gift_in_stock_ships_with_the_order_in_its_package():
    allocation = allocate([Need(1, "A", 1), Need(1000, "G", 2, gift=True)], stock(A_EAST=1, G_EAST=2), preferred=EAST, warehouses=ALL)
    assert allocation.picks == (Pick(1, "A", EAST, 1, 1), Pick(1000, "G", EAST, 2, 1, gift=True))
    assert allocation.dropped_gifts == () and not allocation.split


def test_a_gift_does_not_move_an_order_away_from_its_routing():
    # EAST ships the paid line; the gift is only in SOUTH: it comes from there, EAST stays main.
    allocation = allocate([Need(1, "A", 1), Need(1000, "G", 1, gift=True)], stock(A_EAST=1, A_SOUTH=1, G_SOUTH=1), preferred=EAST,
                          warehouses=ALL)
    assert allocation.warehouse == EAST
    assert {(p.sku, p.warehouse, p.package_no) for p in allocation.picks} == {("A", EAST, 1), ("G", SOUTH, 2)}


def test_an_order_that_has_to_move_anyway_moves_where_its_gift_is_too():
    allocation = allocate([Need(1, "A", 1), Need(1000, "G", 1, gift=True)], stock(A_SOUTH=1, A_NORTH=1, G_NORTH=1), preferred=EAST,
                          warehouses=ALL)
    assert allocation.warehouse == NORTH and not allocation.split and allocation.dropped_gifts == ()


def test_without_splitting_a_gift_only_comes_from_the_main_warehouse():
    gift = Need(1000, "G", 1, gift=True)
    allocation = allocate([Need(1, "A", 1), gift], stock(A_EAST=1, G_SOUTH=1), preferred=EAST, warehouses=ALL, allow_split=False)
    assert allocation.ok and allocation.dropped_gifts == (gift,) and not allocation.split


def test_a_gift_of_the_same_sku_as_a_line_comes_after_the_paid_line():
    gift = Need(1000, "A", 1, gift=True)
    allocation = allocate([Need(1, "A", 2), gift], stock(A_EAST=2), preferred=EAST, warehouses=ALL)
    assert allocation.ok and allocation.dropped_gifts == (gift,)
    assert shipped(allocation) == {("A", EAST): 2}


def test_a_short_order_is_short_because_of_its_lines_never_its_gifts():
    allocation = allocate([Need(1, "A", 2), Need(1000, "G", 5, gift=True)], stock(A_EAST=1, G_EAST=9), preferred=EAST, warehouses=ALL)
    assert allocation.shortages == (Shortage("A", 2, 1),)


def test_an_empty_order_needs_nothing():
    allocation = allocate([], {}, preferred=EAST, warehouses=ALL)
    assert allocation.ok and allocation.picks == () and allocation.warehouse is None


def test_a_line_without_a_positive_quantity_is_refused():
    with pytest.raises(ValueError):
        allocate([Need(1, "A", 0)], stock(A_EAST=1), preferred=EAST, warehouses=ALL)


def test_a_batch_allocated_in_sequence_never_gives_the_same_units_twice():
    available = stock(A_EAST=3, A_SOUTH=1)
    served = []
    for _ in range(5):
        allocation = allocate([Need(1, "A", 1)], available, preferred=EAST, warehouses=ALL)
        served.append(allocation.warehouse)
        if allocation.ok:
            apply_picks(available, allocation.picks)
    assert served == [EAST, EAST, EAST, SOUTH, None]
    assert available == {("A", EAST): 0, ("A", SOUTH): 0}


def test_apply_picks_subtracts_in_place_and_creates_missing_keys():
    available = {("A", EAST): 2}
    apply_picks(available, [Pick(1, "A", EAST, 2, 1), Pick(2, "B", SOUTH, 1, 2)])
    assert available == {("A", EAST): 0, ("B", SOUTH): -1}


# -- properties --------------------------------------------------------------------------------

SKUS = ["A", "B", "C", "D"]
REASONS = [None, None, None, "presale", "oversized"]

needs_strategy = st.lists(
    st.builds(
        lambda sku, qty, gift, package: (sku, qty, gift, package),
        st.sampled_from(SKUS), st.integers(1, 6), st.booleans(), st.sampled_from(REASONS),
    ),
    min_size=1, max_size=6,
).map(lambda items: [Need(i + 1 if not g else 1000 + i, s, q, gift=g, package=p) for i, (s, q, g, p) in enumerate(items)])
stock_strategy = st.dictionaries(st.tuples(st.sampled_from(SKUS), st.sampled_from(ALL)), st.integers(-3, 8), max_size=12)


@settings(max_examples=400, deadline=None)
@given(needs=needs_strategy, available=stock_strategy, preferred=st.sampled_from([EAST, SOUTH, None]), allow_split=st.booleans())
def test_allocation_properties(needs, available, preferred, allow_split):
    allocation = allocate(needs, available, preferred=preferred, warehouses=ALL, allow_split=allow_split)
    lines = [n for n in needs if not n.gift]
    want: Counter[str] = Counter()
    for n in lines:
        want[n.sku] += n.qty
    total = {sku: sum(max(0, available.get((sku, w), 0)) for w in ALL) for sku in SKUS}

    # never more than what is free in any warehouse
    for (sku, w), qty in shipped(allocation).items():
        assert qty <= max(0, available.get((sku, w), 0))
    assert all(p.qty > 0 for p in allocation.picks)

    if not allocation.ok:
        assert allocation.picks == () and allocation.warehouse is None
        assert len({s.sku for s in allocation.shortages}) == len(allocation.shortages)
        for s in allocation.shortages:
            assert s.needed == want[s.sku] and s.available == total[s.sku]
        if allow_split:
            # short means short: exactly the SKUs whose total demand exceeds the total stock
            assert {s.sku for s in allocation.shortages} == {sku for sku, qty in want.items() if qty > total[sku]}
        return

    # every line gets exactly its quantity; every gift exactly its quantity or nothing (dropped)
    by_line: Counter[int] = Counter()
    for p in allocation.picks:
        by_line[p.line_no] += p.qty
    for n in lines:
        assert by_line[n.line_no] == n.qty
    for n in (n for n in needs if n.gift):
        assert by_line[n.line_no] == (0 if n in allocation.dropped_gifts else n.qty)
    assert all(n.gift for n in allocation.dropped_gifts)

    # packages: numbered 1..n, each from one warehouse with one reason; package 1 is the main warehouse
    if allocation.picks:
        reason = {n.line_no: n.package for n in needs}
        packages: dict[int, set[tuple[str, str | None]]] = {}
        for p in allocation.picks:
            packages.setdefault(p.package_no, set()).add((p.warehouse, reason[p.line_no]))
        assert sorted(packages) == list(range(1, len(packages) + 1))
        assert all(len(v) == 1 for v in packages.values())
        assert next(iter(packages[1]))[0] == allocation.warehouse
        assert allocation.split == (len(packages) > 1)
        if not allow_split:
            assert {p.warehouse for p in allocation.picks} == {allocation.warehouse}

    # the routing rule's warehouse keeps every order it can ship alone
    if preferred and all(max(0, available.get((sku, preferred), 0)) >= qty for sku, qty in want.items()) and lines:
        assert allocation.warehouse == preferred
        assert {p.warehouse for p in allocation.picks if not p.gift} == {preferred}


@settings(max_examples=200, deadline=None)
@given(needs=needs_strategy, available=stock_strategy)
def test_with_splitting_allowed_an_order_is_served_whenever_the_total_stock_suffices(needs, available):
    want: Counter[str] = Counter()
    for n in needs:
        if not n.gift:
            want[n.sku] += n.qty
    enough = all(qty <= sum(max(0, available.get((sku, w), 0)) for w in ALL) for sku, qty in want.items())
    assert allocate(needs, available, preferred=EAST, warehouses=ALL).ok == enough


@settings(max_examples=100, deadline=None)
@given(orders=st.lists(needs_strategy, min_size=1, max_size=8), available=stock_strategy)
def test_a_batch_allocated_in_sequence_never_takes_more_than_the_stock(orders, available):
    start = {key: max(0, qty) for key, qty in available.items()}
    working = dict(available)
    taken: Counter[tuple[str, str]] = Counter()
    for needs in orders:
        allocation = allocate(needs, working, preferred=SOUTH, warehouses=ALL)
        if allocation.ok:
            apply_picks(working, allocation.picks)
            taken.update(shipped(allocation))
    for key, qty in taken.items():
        assert qty <= start.get(key, 0)
