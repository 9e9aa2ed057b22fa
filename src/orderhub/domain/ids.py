"""Deterministic identifiers: the same platform object always maps to the same id."""

from __future__ import annotations

from hashlib import md5


def order_id(channel: str, original_id: str) -> str:
    """Internal order id: md5("<channel>:<original_id>"); the ':' prevents jd+1x == jd1+x."""
    return md5(f"{channel}:{original_id}".encode()).hexdigest()


def customer_id(channel: str, platform_buyer_id: str) -> str:
    """Customer id for a buyer first seen as `platform_buyer_id` on `channel`."""
    return "c_" + md5(f"{channel}:{platform_buyer_id}".encode()).hexdigest()[:20]
