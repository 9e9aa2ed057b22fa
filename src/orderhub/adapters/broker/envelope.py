"""One accepted platform message as broker bytes: a JSON header line, then the raw body.

The same frame on every broker, so the transports only move bytes and a message reads the same
whether NATS, Redis or Kafka delivered it.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Envelope:
    key: str  # unique per accepted message: the inbox row's broker_key, so a redelivery adds no second row
    channel: str
    shop_id: str | None
    kind: str  # push (a whole body) | message (one order's message out of a push)
    received_at: datetime
    body: bytes
    meta: dict[str, Any] | None = None

    @staticmethod
    def new_key() -> str:
        return uuid.uuid4().hex

    def encode(self) -> bytes:
        header = {"k": self.key, "c": self.channel, "s": self.shop_id, "t": self.kind, "r": self.received_at.isoformat(), "m": self.meta}
        return orjson.dumps(header) + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Raises ValueError for anything that is not an envelope (a poison message)."""
        head, sep, body = data.partition(b"\n")
        if not sep:
            raise ValueError("no header line")
        try:
            h = orjson.loads(head)
            return cls(str(h["k"]), str(h["c"]), h.get("s"), str(h["t"]), datetime.fromisoformat(h["r"]), body, h.get("m"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable envelope header: {exc}") from None


def partition_of(key: str, partitions: int) -> int:
    """Stable across processes and restarts (not Python's salted hash)."""
    return zlib.crc32(key.encode()) % partitions
