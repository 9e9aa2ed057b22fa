"""Helpers for tests on the shared brokers: each test names its streams / keys by a prefix of its own."""

from __future__ import annotations


async def drop_broker_prefix(broker_url: str, prefix: str) -> None:
    """The test's streams / keys are removed from the shared broker."""
    if broker_url.startswith("nats"):
        import nats

        nc = await nats.connect(broker_url)
        js = nc.jetstream()
        for name in (f"{prefix.upper()}_INBOX", f"{prefix.upper()}_DLQ"):
            try:
                await js.delete_stream(name)
            except Exception:
                pass
        await nc.close()
    else:
        import redis.asyncio as redis

        client = redis.from_url(broker_url)
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
