"""The broker and the database killed (-9) and started again under load: nothing lost, and
intake recovers by itself, without restarting any OrderHub process.

The sender plays a platform: whatever is not accepted (503 + Retry-After, a refused connection)
is sent again with backoff until it is. The outage is measured from the sender's side.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from orderhub_stack import Platform, Stack, accepted, assert_invariants, expected_orders, findings, wait_drained

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

ORDERS = 500
DOWN_S = 3.0  # how long the killed service stays down before it is started again
RECOVERY_S = 20.0  # intake must accept again within this long after the service is back


async def run_with_outage(stack: Stack, simulator, service, label: str, workers: int = 1) -> tuple[Platform, float]:
    sim_orders, pushes = await asyncio.to_thread(simulator.generate, ORDERS)
    await stack.start(workers=workers)
    platform = Platform(stack.url, rate=200.0)
    sending = asyncio.create_task(platform.send(pushes))
    deadline = time.monotonic() + 60
    while sum(1 for _, outcome in platform.attempts if outcome == "200") < len(pushes) // 3:
        assert time.monotonic() < deadline, f"intake did not take a third of the load:\n{stack.logs()}"
        await asyncio.sleep(0.02)
    done = sum(1 for _, outcome in platform.attempts if outcome == "200")
    killed_at = time.time()
    pid = await asyncio.to_thread(service.kill9)
    await asyncio.sleep(DOWN_S)  # the outage itself (not a wait for a result)
    await asyncio.to_thread(service.start)
    up_at = time.time()
    sent = await sending
    expected = expected_orders(sim_orders, sent)
    drain_s = await asyncio.to_thread(wait_drained, stack, len(expected))
    found = await asyncio.to_thread(findings, stack, expected)

    alive = [p.pid for p in stack.processes if p.alive()]
    refused_at = [t for t, outcome in platform.attempts if t >= killed_at and outcome not in ("200", "401")]
    recovered = next((t for t, outcome in platform.attempts if refused_at and t > refused_at[-1] and outcome == "200"), None)
    print(f"\n[{label}] killed pid {pid} after {done}/{len(pushes)} pushes accepted, down {up_at - killed_at:.1f} s, started again on the "
          f"same port; {platform.outage(killed_at)}; {len(accepted(sent))}/{len(pushes)} accepted after "
          f"{sum(s.unavailable for s in sent)}x503 / {sum(s.refused for s in sent)} refused retried; "
          f"OrderHub processes never restarted ({len(alive)}/{len(stack.processes)} alive); drained {drain_s:.1f} s after the last push")
    print(f"[{label}] {found.line(len(accepted(sent)))}")
    assert len(alive) == len(stack.processes), f"an OrderHub process died:\n{stack.logs()}"
    assert len(accepted(sent)) == len(pushes)
    if refused_at:  # intake accepted again by itself, soon after the service was back
        assert recovered is not None and recovered - up_at < RECOVERY_S, platform.outage(killed_at)
    assert_invariants(found, expected, sent)
    return platform, killed_at


@pytest.mark.parametrize("broker", ["nats", "redis"])
async def test_a_broker_killed_under_load_loses_nothing_and_intake_recovers_by_itself(new_stack, simulator, broker, request):
    stack: Stack = await asyncio.to_thread(new_stack, broker)
    service = request.getfixturevalue(f"private_{broker}")
    platform, killed_at = await run_with_outage(stack, simulator, service, f"{broker} kill -9 + start")
    # the fault was felt: the API node answered 503 while the broker was away (and nothing was accepted unkept)
    assert any(outcome == "503" for t, outcome in platform.attempts if t >= killed_at)


@pytest.mark.parametrize("broker", ["nats", None], ids=["scaled-nats", "embedded"])
async def test_the_database_killed_under_load_loses_nothing_and_intake_recovers_by_itself(new_stack, simulator, private_postgres, broker):
    stack: Stack = await asyncio.to_thread(new_stack, broker)
    label = f"PostgreSQL kill -9 + start, {'scaled ' + broker if broker else 'embedded'}"
    platform, killed_at = await run_with_outage(stack, simulator, private_postgres, label)
    refused = [outcome for t, outcome in platform.attempts if t >= killed_at and outcome != "200"]
    if broker:  # the API node keeps accepting into the broker: the database is only the workers' concern
        assert refused == []
    else:  # embedded: the inbox is the database, so intake answered 503 while it was away
        assert "503" in refused
