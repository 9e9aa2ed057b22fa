"""Outages on demand: make a simulated platform fail so OrderHub's retries and catch-up can be tested.

Modes (per channel, for a number of seconds):
- ``down``: every API call answers HTTP 503 and message connections are refused or closed;
- ``rate_limit``: every API call answers HTTP 429 (the platform's "too many calls");
- ``drop``: open message connections are closed once; new ones are accepted.
Expired tokens are a separate control (`Simulator.revoke_tokens`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

MODES = ("down", "rate_limit", "drop")


class Faults:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, tuple[str, float]] = {}
        self.generation: dict[str, int] = {}  # bumps on every "drop", so connections can notice

    def set(self, channel: str, mode: str, seconds: float) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; known: {MODES}")
        self._until[channel] = (mode, self._clock() + seconds)
        if mode in ("drop", "down"):
            self.generation[channel] = self.generation.get(channel, 0) + 1

    def clear(self, channel: str | None = None) -> None:
        if channel is None:
            self._until.clear()
        else:
            self._until.pop(channel, None)

    def active(self, channel: str) -> str | None:
        """The fault now in force on `channel`, if any."""
        entry = self._until.get(channel)
        if entry is None:
            return None
        mode, until = entry
        if self._clock() >= until:
            del self._until[channel]
            return None
        return mode

    def as_dict(self) -> dict[str, dict[str, float | str]]:
        now = self._clock()
        return {ch: {"mode": mode, "seconds_left": round(until - now, 1)} for ch, (mode, until) in self._until.items() if until > now}
