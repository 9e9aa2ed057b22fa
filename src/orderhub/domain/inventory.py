"""Stock allocation: which warehouse(s) serve an order, in which packages. Pure functions over plain data.

The audit stage reads the stock of a whole batch once, then calls `allocate` order by order (paid
first) and `apply_picks` after each served order, so later orders see what earlier ones took.

Policy, in this order (docs/inventory.md):
1. the routing rule's warehouse (`preferred`) ships every line;
2. else the first other warehouse (in `warehouses` order) that can ship the whole order, gifts
   included, else the first that can ship every line;
3. else, if splitting is allowed, each line from the preferred warehouse first and then the others,
   a line's quantity divided where needed;
4. else nothing is picked and every short SKU is reported.
Gifts never decide where an order goes and never block it: they follow the order (its main
warehouse first, then the other warehouses it already ships from, then, if splitting is allowed,
any other); a gift no warehouse can serve is dropped and reported in `dropped_gifts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

Key = tuple[str, str]  # (sku, warehouse)


@dataclass(frozen=True, slots=True)
class Need:
    line_no: int  # the order line; gifts use 1000+
    sku: str
    qty: int
    gift: bool = False
    package: str | None = None  # "presale" / "oversized": ships in a package of its own (split by rule)


@dataclass(frozen=True, slots=True)
class Pick:
    line_no: int
    sku: str
    warehouse: str
    qty: int
    package_no: int
    gift: bool = False


@dataclass(frozen=True, slots=True)
class Shortage:
    sku: str
    needed: int  # over every (non-gift) line of the SKU
    # Total across the warehouses, never negative. needed <= available means the stock exists but
    # only in several warehouses and the order may not be split.
    available: int


@dataclass(frozen=True, slots=True)
class Allocation:
    picks: tuple[Pick, ...]  # empty when short
    shortages: tuple[Shortage, ...]  # every short SKU, not only the first
    warehouse: str | None  # the main warehouse (package 1)
    split: bool  # more than one package
    dropped_gifts: tuple[Need, ...] = ()  # gifts no warehouse could serve; the order ships without them

    @property
    def ok(self) -> bool:
        return not self.shortages


def allocate(
    needs: Sequence[Need], available: Mapping[Key, int], *, preferred: str | None, warehouses: Sequence[str], allow_split: bool = True,
) -> Allocation:
    for need in needs:
        if need.qty <= 0:
            raise ValueError(f"line {need.line_no}: quantity {need.qty} is not positive")
    if not needs:
        return Allocation((), (), None, False)
    candidates = _candidates(preferred, warehouses)
    skus = {need.sku for need in needs}
    stock = {(sku, w): max(0, available.get((sku, w), 0)) for sku in skus for w in candidates}
    lines = [need for need in needs if not need.gift]
    gifts = [need for need in needs if need.gift]
    want_lines = _totals(lines)

    single = _single_warehouse(candidates, preferred, stock, want_lines, _totals(needs))
    if single is not None:
        taken = [(need, single, need.qty) for need in lines]
    elif allow_split and all(qty <= sum(stock[(sku, w)] for w in candidates) for sku, qty in want_lines.items()):
        taken = _split_by_availability(lines, candidates, stock)
    else:
        shortages = _shortages(want_lines, candidates, stock, allow_split)
        if shortages:
            return Allocation((), shortages, None, False)
        taken = []  # no lines and no warehouse: only gifts, which are dropped below

    for need, warehouse, qty in taken:
        stock[(need.sku, warehouse)] -= qty
    used = _used(taken, candidates) or ([single] if single else candidates[:1])
    placed, dropped = _place_gifts(gifts, stock, used, candidates, allow_split)
    return _packaged(taken + placed, candidates, used[0] if used else None, tuple(dropped))


def apply_picks(available: MutableMapping[Key, int], picks: Iterable[Pick]) -> None:
    """Subtract what was picked, in place: the next order of the batch sees the rest."""
    for pick in picks:
        key = (pick.sku, pick.warehouse)
        available[key] = available.get(key, 0) - pick.qty


# -- the steps --------------------------------------------------------------------------------


def _candidates(preferred: str | None, warehouses: Sequence[str]) -> list[str]:
    out = [preferred] if preferred else []
    for w in warehouses:
        if w not in out:
            out.append(w)
    return out


def _totals(needs: Iterable[Need]) -> dict[str, int]:
    # The same SKU on several lines is one demand on the shelf.
    totals: dict[str, int] = {}
    for need in needs:
        totals[need.sku] = totals.get(need.sku, 0) + need.qty
    return totals


def _serves(stock: Mapping[Key, int], warehouse: str, want: Mapping[str, int]) -> bool:
    return all(stock[(sku, warehouse)] >= qty for sku, qty in want.items())


def _single_warehouse(
    candidates: list[str], preferred: str | None, stock: Mapping[Key, int], want_lines: Mapping[str, int], want_all: Mapping[str, int],
) -> str | None:
    """Steps 1 and 2. Preferred keeps the order as long as it ships the paid lines (a gift does not
    move an order away from its routing); when the order must move anyway, it moves where the
    gifts are too."""
    if preferred and _serves(stock, preferred, want_lines):
        return preferred
    others = [w for w in candidates if w != preferred]
    for want in (want_all, want_lines):
        for w in others:
            if _serves(stock, w, want):
                return w
    return None


def _split_by_availability(lines: Sequence[Need], candidates: Sequence[str], stock: Mapping[Key, int]) -> list[tuple[Need, str, int]]:
    """Step 3: each line from the preferred warehouse first, then the others. The caller checked
    that every SKU's total suffices, so the greedy walk always completes."""
    left = dict(stock)
    taken = []
    for need in lines:
        remaining = need.qty
        for w in candidates:
            take = min(remaining, left[(need.sku, w)])
            if take:
                taken.append((need, w, take))
                left[(need.sku, w)] -= take
                remaining -= take
            if not remaining:
                break
    return taken


def _shortages(want: Mapping[str, int], candidates: Sequence[str], stock: Mapping[Key, int], allow_split: bool) -> tuple[Shortage, ...]:
    totals = {sku: sum(stock[(sku, w)] for w in candidates) for sku in want}
    short = [sku for sku, qty in want.items() if qty > totals[sku]]
    if not short and not allow_split and candidates:
        # Enough stock overall, but no single warehouse has it all: name what the first
        # choice lacks, so the hold says which lines stop it.
        first = candidates[0]
        short = [sku for sku, qty in want.items() if qty > stock[(sku, first)]]
    return tuple(Shortage(sku, want[sku], totals[sku]) for sku in short)


def _used(taken: Sequence[tuple[Need, str, int]], candidates: Sequence[str]) -> list[str]:
    """The warehouses the lines ship from, the main one first: the first (in candidate order) that
    ships ordinary goods, else the first one used at all."""
    used = [w for w in candidates if any(t[1] == w for t in taken)]
    ordinary = [w for w in used if any(t[1] == w and t[0].package is None for t in taken)]
    if ordinary:
        used.remove(ordinary[0])
        used.insert(0, ordinary[0])
    return used


def _place_gifts(
    gifts: Sequence[Need], stock: dict[Key, int], used: list[str], candidates: Sequence[str], allow_split: bool,
) -> tuple[list[tuple[Need, str, int]], list[Need]]:
    placed: list[tuple[Need, str, int]] = []
    dropped: list[Need] = []
    for gift in gifts:
        sources = list(used) if allow_split else used[:1]
        if allow_split:
            sources += [w for w in candidates if w not in sources]
        whole = next((w for w in sources if stock[(gift.sku, w)] >= gift.qty), None)
        if whole is not None:
            parts = [(gift, whole, gift.qty)]
        elif allow_split and sum(stock[(gift.sku, w)] for w in sources) >= gift.qty:
            parts, remaining = [], gift.qty
            for w in sources:
                take = min(remaining, stock[(gift.sku, w)])
                if take:
                    parts.append((gift, w, take))
                    remaining -= take
        else:
            dropped.append(gift)
            continue
        for _, w, qty in parts:
            stock[(gift.sku, w)] -= qty
            if w not in used:
                used.append(w)
        placed.extend(parts)
    return placed, dropped


def _packaged(
    taken: Sequence[tuple[Need, str, int]], candidates: Sequence[str], main: str | None, dropped: tuple[Need, ...],
) -> Allocation:
    """One package per warehouse used, plus one per (warehouse, reason) for lines that ship on
    their own (pre-sale, oversized). Package 1 is the main warehouse's ordinary goods; the main
    warehouse is decided by the lines, never by where a gift was found."""
    if not taken:
        return Allocation((), (), None, False, dropped)
    rank = {w: i for i, w in enumerate(candidates)}
    keys = sorted(
        {(w, need.package) for need, w, _ in taken},
        key=lambda k: (k[0] != main, rank[k[0]], k[1] is not None, k[1] or ""),
    )
    main = keys[0][0]
    number = {key: i for i, key in enumerate(keys, start=1)}
    picks = sorted(
        (Pick(need.line_no, need.sku, w, qty, number[(w, need.package)], need.gift) for need, w, qty in taken),
        key=lambda p: (p.package_no, p.line_no, p.sku),
    )
    return Allocation(tuple(picks), (), main, len(keys) > 1, dropped)
