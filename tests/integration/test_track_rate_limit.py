"""The buyer tracking endpoint's per-address limit: one window per process by default, one window
for every API node when they share a Redis, and still a limit per node while that Redis is down."""

from __future__ import annotations

import logging
import uuid

from orderhub.entrypoints.api.rate_limit import RateLimiter


def _client() -> str:
    return f"203.0.113.{uuid.uuid4().hex}"  # a fresh address per test: the shared Redis keeps earlier runs' windows


def test_in_memory_each_process_counts_its_own_window():
    a, b, client = RateLimiter(3, 60), RateLimiter(3, 60), _client()
    assert [a.hit(client) for _ in range(4)][:3] == [None, None, None]
    assert a.hit(client) is not None
    assert b.hit(client) is None  # another process: its own count


def test_nodes_sharing_a_redis_share_one_window(redis_url):
    node_a, node_b, client = RateLimiter(5, 60, storage=redis_url), RateLimiter(5, 60, storage=redis_url), _client()
    answers = [node_a.hit(client), node_b.hit(client), node_a.hit(client), node_b.hit(client), node_b.hit(client)]
    assert answers == [None] * 5
    refused_a, refused_b = node_a.hit(client), node_b.hit(client)
    assert refused_a is not None and 0 < refused_a <= 60
    assert refused_b is not None and 0 < refused_b <= 60
    assert node_a.hit(_client()) is None  # another address is not held back


def test_an_unreachable_store_falls_back_to_this_processs_counts(caplog):
    limiter, client = RateLimiter(2, 60, storage="redis://127.0.0.1:1/0"), _client()
    with caplog.at_level(logging.WARNING, logger="orderhub.entrypoints.api.rate_limit"):
        answers = [limiter.hit(client) for _ in range(3)]
    assert answers[:2] == [None, None] and answers[2] is not None
    warned = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warned) == 1  # once, not per request
