"""A moving-window request limit per client address, kept by the `limits` library.

Used by the public tracking endpoint. The counters live where `auth.track_limit_storage` says:
`memory://` (the default: this process), or `redis://host:port/db` so that every API node counts
into the same window and N nodes still allow one limit, not N. Never the database: a write per
anonymous request would hand attackers a write amplifier. When the shared store cannot be reached
the process's own counters take over (logged), so the endpoint keeps answering and each node
still holds the limit by itself until the store is back.
"""

from __future__ import annotations

import logging
import time

from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

_NAMESPACE = "orderhub-track"


class RateLimiter:
    def __init__(self, limit: int, window_s: int = 60, *, storage: str = "memory://") -> None:
        self.item = RateLimitItemPerSecond(limit, window_s)
        self.storage_uri = storage
        shared: Storage = storage_from_string(storage, wrap_exceptions=True)
        self._shared = MovingWindowRateLimiter(shared)
        self._local = self._shared if isinstance(shared, MemoryStorage) else MovingWindowRateLimiter(MemoryStorage())
        self._warned_at = 0.0

    def hit(self, client: str) -> float | None:
        """Count one request; None when allowed, else the seconds until the next one would be."""
        try:
            return self._hit(self._shared, client)
        except StorageError as exc:
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("rate-limit store %s unreachable (%s): counting in this process until it is back",
                            self.storage_uri.split("@")[-1], exc.storage_error)
            return self._hit(self._local, client)

    def _hit(self, limiter: MovingWindowRateLimiter, client: str) -> float | None:
        if limiter.hit(self.item, _NAMESPACE, client):
            return None
        reset_at = limiter.get_window_stats(self.item, _NAMESPACE, client).reset_time
        return max(0.0, reset_at - time.time())
