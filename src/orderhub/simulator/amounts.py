"""Exact money helpers for the simulator (integer fen in, platform strings out; never floats)."""

from __future__ import annotations

import calendar
import time


def yuan(fen: int) -> str:
    """Format fen as the platforms' yuan string with two decimals: 13470 -> "134.70"."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def split_by_weight(total: int, weights: list[int]) -> list[int]:
    """Split `total` fen over `weights` proportionally (largest remainder); parts sum to `total`."""
    weight_sum = sum(weights)
    if total == 0 or weight_sum == 0:
        return [0] * len(weights)
    floors = [total * w // weight_sum for w in weights]
    left = total - sum(floors)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i))
    for i in by_remainder[:left]:
        floors[i] += 1
    return floors


_CST = 8 * 3600


def cst(ts: int) -> str:
    """Unix seconds as "yyyy-MM-dd HH:mm:ss" in GMT+8 (the format JD and Youzan use); 0 -> ""."""
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts + _CST))


def parse_cst(text: str) -> int:
    """Parse "yyyy-MM-dd HH:mm:ss" (GMT+8) to unix seconds; raise ValueError if malformed."""
    return calendar.timegm(time.strptime(text.strip(), "%Y-%m-%d %H:%M:%S")) - _CST


def end_of_day_cst(ts: int, days_after: int = 0) -> int:
    """Last second (23:59:59 GMT+8) of the day of `ts`, `days_after` days later."""
    day_start = (ts + _CST) // 86400 * 86400 - _CST
    return day_start + (days_after + 1) * 86400 - 1
