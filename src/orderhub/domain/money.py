"""Money is integer fen everywhere; conversions from platform formats live here."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from orderhub.domain.errors import ErrorCode, NormalizationError

_FEN_PER_YUAN = Decimal(100)


def yuan_to_fen(value: str | int | float | Decimal, field: str = "amount") -> int:
    """Convert a yuan amount ("59.90", 59.9, 188.0) to integer fen without float error.

    Floats are converted through their shortest repr, so 0.1 + 0.2 style noise in a
    platform's JSON (PDD sends doubles) cannot leak into the fen value. More than two
    decimals is refused rather than rounded: money that does not fit fen is a data error.
    """
    if isinstance(value, bool):
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{field}: boolean is not money", field)
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation:
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{field}: {value!r} is not a number", field) from None
    if not amount.is_finite():
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{field}: {value!r} is not finite", field)
    fen = amount * _FEN_PER_YUAN
    if fen != fen.to_integral_value():
        raise NormalizationError(ErrorCode.INVALID_AMOUNT, f"{field}: {value!r} has more than 2 decimals", field)
    return int(fen)


def fen_to_yuan(fen: int) -> str:
    """Format fen as a yuan string with two decimals (for display and exports)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def allocate_largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split `total` fen across `weights` proportionally; the parts add up to `total` exactly.

    Largest-remainder (Hamilton) method: floor every share, then hand the fen left over to
    the shares with the largest fractional parts (ties go to the earlier line, so the
    result is deterministic). Zero weights get zero; all-zero weights split evenly.
    """
    if not weights:
        if total != 0:
            raise ValueError("cannot allocate a non-zero total over no weights")
        return []
    if any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative")
    weight_sum = sum(weights)
    if weight_sum == 0:
        weights = [1] * len(weights)
        weight_sum = len(weights)
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    floors = []
    remainders = []
    for index, weight in enumerate(weights):
        share, remainder = divmod(magnitude * weight, weight_sum)
        floors.append(share)
        remainders.append((-remainder, index))
    leftover = magnitude - sum(floors)
    for _, index in sorted(remainders)[:leftover]:
        floors[index] += 1
    return [sign * part for part in floors]
