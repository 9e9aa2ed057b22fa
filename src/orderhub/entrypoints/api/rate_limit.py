"""A sliding-window request limit per client address, in this process.

Used by the public tracking endpoint. Kept in memory on purpose: a limit needs no durability, and a
database write per anonymous request would hand attackers a write amplifier. With N API nodes a
client gets up to N times the limit (docs/security.md); the login throttle, which must hold across
nodes, counts audit-log rows instead.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class RateLimiter:
    def __init__(self, limit: int, window_s: float = 60.0, *, max_clients: int = 50_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients  # memory bound: the least recently seen clients are forgotten first
        self.clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, client: str) -> float | None:
        """Count one request; None when allowed, else the seconds until the next one would be."""
        now = self.clock()
        with self._lock:
            hits = self._hits.pop(client, None) or deque()
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            self._hits[client] = hits  # most recently seen last
            if len(hits) >= self.limit:
                return hits[0] + self.window_s - now
            hits.append(now)
            while len(self._hits) > self.max_clients:
                self._hits.popitem(last=False)
            return None
