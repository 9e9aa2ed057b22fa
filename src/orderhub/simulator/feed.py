"""The live feed: new orders at a steady rate, their timelines played on the simulated clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from typing import TYPE_CHECKING, Any

from orderhub.simulator import model as m
from orderhub.simulator.pusher import Push

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

log = logging.getLogger(__name__)


class Feed:
    """Creates `rate` orders per (wall-clock) second and plays every planned event when due.

    Pushes of one order are delivered one after another (so a planned out-of-order pair really
    arrives out of order); different orders are delivered concurrently.
    """

    def __init__(self, sim: Simulator, rate: float, target_url: str | None) -> None:
        self.sim = sim
        self.rate = rate
        self.target_url = target_url
        self.paused = False
        self.created = 0
        self._events: list[tuple[int, int, int, m.SimOrder, m.PlannedEvent, list[m.PlannedEvent]]] = []
        self._seq = itertools.count()
        self._remaining: dict[str, int] = {}
        self._held: dict[str, Push] = {}
        self._last: dict[str, asyncio.Task[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def status(self) -> dict[str, Any]:
        return {"running": self.running, "paused": self.paused, "rate": self.rate, "target": self.target_url,
                "orders_created": self.created, "pending_events": len(self._events),
                "deliveries_in_flight": len(self._last)}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="orderhub-sim-feed")

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task
        for task in list(self._last.values()):
            task.cancel()

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_create = loop.time()
        while not self._stop:
            if self.paused:
                await asyncio.sleep(0.05)
                next_create = loop.time()
                continue
            now = loop.time()
            made = 0
            while self.rate > 0 and next_create <= now and made < 1000:
                self._create_one()
                next_create += 1.0 / self.rate
                made += 1
            if self.rate <= 0 or made == 1000:
                next_create = now + (1.0 / self.rate if self.rate > 0 else 0.05)
            try:
                self._play_due(self.sim.clock.now())
            except Exception:  # a bug in one order must not stop the feed
                log.exception("feed: playing events failed")
            await asyncio.sleep(max(0.0, min(0.05, next_create - loop.time())))

    def _create_one(self) -> None:
        plan = self.sim.plan(start=self.sim.clock.now())
        self.created += 1
        self._remaining[plan.order.original_id] = len(plan.events)
        for ev in plan.events:
            heapq.heappush(self._events, (ev.at, next(self._seq), id(ev), plan.order, ev, plan.events))

    def _play_due(self, now: int) -> None:
        while self._events and self._events[0][0] <= now:
            _, _, _, order, ev, events = heapq.heappop(self._events)
            push = self.sim.apply(order, ev)
            oid = order.original_id
            self._remaining[oid] -= 1
            last = self._remaining[oid] == 0
            if last:
                del self._remaining[oid]
            if push is not None:
                held = self._held.pop(oid, None)
                if order.extra.get("late") == ev.kind and not last:
                    self._held[oid] = push  # sent right after the next push of this order
                else:
                    self._send(push)
                    if held is not None:
                        self._send(held)
                if order.extra.get("duplicate") == next(i for i, e in enumerate(events) if e is ev):
                    self._send(push)
            if last and oid in self._held:
                self._send(self._held.pop(oid))

    def _send(self, push: Push) -> None:
        target = self.target_url or self.sim.target_url or ""
        if not target and not push.stream_key:
            return
        oid = push.order_id
        previous = self._last.get(oid)

        async def deliver() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            await self.sim.pusher.deliver(push, target)

        task = asyncio.get_running_loop().create_task(deliver())
        self._last[oid] = task

        def forget(t: asyncio.Task[Any]) -> None:
            if self._last.get(oid) is t:
                del self._last[oid]

        task.add_done_callback(forget)


async def run_feed(sim: Simulator, rate_per_s: float, target_url: str | None) -> None:
    """Run a live feed on `sim` until it is stopped (DELETE /_sim/feed or Feed.stop())."""
    await sim.run_feed(rate_per_s, target_url)
