"""Simulated time: real time, or faster than real time, or frozen (tests)."""

from __future__ import annotations

import time


class SimClock:
    """Unix-seconds clock that runs `speed` times faster than the wall clock from `start`."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        self.speed = speed
        self._origin = time.time() if start is None else start
        self._mono0 = time.monotonic()

    def now(self) -> int:
        return int(self._origin + (time.monotonic() - self._mono0) * self.speed)

    def real_seconds(self, sim_seconds: float) -> float:
        """How long to wait on the wall clock for `sim_seconds` of simulated time."""
        return sim_seconds / self.speed


class FixedClock:
    """A clock that only moves when told to (deterministic tests)."""

    speed = 1.0

    def __init__(self, now: int = 1742263920) -> None:
        self._now = now

    def now(self) -> int:
        return self._now

    def advance(self, seconds: int) -> None:
        self._now += seconds

    def real_seconds(self, sim_seconds: float) -> float:
        return 0.0
