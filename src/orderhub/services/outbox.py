"""The outbox relay: sends committed outbox messages to WMS, carriers, platforms and notification channels.

At least once, never lost: a message is claimed with a lease in one short transaction, sent
outside any transaction, and its outcome recorded in another. A relay that dies between sending
and recording leaves the row `sending`; after the lease another relay sends it again, with the
same idempotency key, which every sender must pass on so the receiver can drop the repeat.

Failed tries are retried with exponential backoff and jitter (tenacity's wait strategy; the
attempt count lives in the row, so a restart continues the schedule) until `max_attempts`, then
the message is dead with its last error, for a person to retry. Each endpoint has a circuit
breaker: while it is open the endpoint's messages wait, uncounted, so one dead WMS does not spend
every message's attempts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
import tenacity
# purgatory over circuitbreaker/pybreaker/aiobreaker: it is written for asyncio (an async context
# manager around the awaited send; pybreaker's async path needs tornado, circuitbreaker is a
# decorator per function, aiobreaker is unmaintained since 2021), can exclude an exception by
# predicate (a 4xx the endpoint answered is not the endpoint failing), and keeps breakers in a
# pluggable store (Redis) should several relay processes ever need to share them.
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import Context, OpenedState

from orderhub.adapters.db import outbox_repo
from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage

PEOPLE_PREFIX = "notify."  # the kinds that reach a person (services/notifications.py PEOPLE_KINDS)

__all__ = ["DeliveryError", "OutboxMessage", "Relay", "RelayResult", "Sender", "backoff_delay", "backoff_wait", "retry_delay"]

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Sender(Protocol):
    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        """Deliver one message, passing `message.idempotency_key` on; raise DeliveryError to fail."""
        ...


@dataclass(slots=True)
class RelayResult:
    claimed: int = 0
    sent: int = 0
    retrying: int = 0  # failed, pending again with a backoff
    dead: int = 0
    deferred: int = 0  # breaker open: put back, no attempt counted
    skipped: int = 0  # lease ran out before its turn: left for whoever claims it next

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Outcome:
    message: OutboxMessage
    status: str  # sent | retrying | dead | deferred
    response: dict[str, Any] | None = None
    error: str | None = None
    at: datetime | None = None  # retrying / deferred: when it is due again


def backoff_wait(base_delay_s: float, max_delay_s: float) -> tenacity.wait.wait_base:
    """base·2^(n-1) plus up to `base` of jitter, capped: retries of many messages that failed together spread out."""
    return tenacity.wait_exponential_jitter(multiplier=base_delay_s, max=max_delay_s, jitter=base_delay_s)


def backoff_delay(attempts: int, wait: tenacity.wait.wait_base) -> float:
    """Seconds to wait after the `attempts`-th failed try (1 = the first)."""
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempts)
    return float(wait(state))


def retry_delay(attempts: int, error: DeliveryError, *, max_attempts: int, wait: tenacity.wait.wait_base) -> float | None:
    """Seconds until the next try after the `attempts`-th failure, or None: the message is dead
    (a refusal is final; so is the last allowed attempt). A receiver's Retry-After is honoured."""
    if not error.retryable or attempts >= max_attempts:
        return None
    delay = backoff_delay(attempts, wait)
    return delay if error.retry_after_s is None else max(delay, error.retry_after_s)


def _storable(response: Any) -> dict[str, Any] | None:
    """What a sender returned, as JSON the row can keep: a bad one must not fail the whole write (and resend the batch)."""
    if response is None:
        return None
    try:
        orjson.dumps(response)
    except TypeError:
        return {"repr": repr(response)[:2000]}
    return response if isinstance(response, dict) else {"value": response}


def sender_for(senders: Mapping[str, Sender], kind: str) -> Sender | None:
    """The full kind first (`wms.freeze`), then its prefix (`wms`)."""
    return senders.get(kind) or senders.get(kind.split(".", 1)[0])


class Relay:
    def __init__(
        self, engine: sa.Engine, senders: Mapping[str, Sender], *, batch_size: int = 100, lease: timedelta = timedelta(seconds=60),
        max_attempts: int = 10, base_delay_s: float = 2.0, max_delay_s: float = 600.0, breaker_fail_max: int = 5,
        breaker_reset_s: float = 30.0, clock: Callable[[], datetime] | None = None, concurrency: int = 16,
        send_timeout_s: float = 30.0, executor: Executor | None = None,
    ) -> None:
        """executor: the threads its claims and outcome writes run in (default: asyncio's, shared with every
        other worker; the freeze lane has its own, so a claim never queues behind processing's threads)."""
        self.engine = engine
        self.senders = dict(senders)
        self.defer_people: Callable[[], bool] | None = None  # set by the runtime: the `defer_notifications` switch
        self.batch_size = batch_size
        self.lease = lease
        self.max_attempts = max_attempts
        self.breaker_reset_s = breaker_reset_s
        self.send_timeout_s = send_timeout_s
        self._clock = clock or (lambda: datetime.now(UTC))
        self._wait = backoff_wait(base_delay_s, max_delay_s)
        self._concurrency = asyncio.Semaphore(concurrency)
        self._in_flight_max = concurrency
        # A refusal of one message (a 4xx) shows the endpoint is up: it does not count against the breaker.
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=breaker_fail_max, default_ttl=breaker_reset_s,
            exclude=[(DeliveryError, lambda exc: not exc.retryable)],
        )
        self._breakers.add_listener(self._breaker_event)
        self._contexts: dict[str, Context] = {}  # endpoint -> its breaker's live state
        self._trials: set[str] = set()  # half-open endpoints with their one trial message in flight
        self._pending: list[_Outcome] = []
        self._flush_lock = asyncio.Lock()
        self._executor = executor

    # -- the loop ---------------------------------------------------------------------------

    async def run_forever(self, idle_s: float = 0.5, wake: asyncio.Event | None = None) -> None:
        """Relay until cancelled. A full batch goes on at once; otherwise wait `idle_s`, or less when a
        producer sets `wake` after committing new messages."""
        while True:
            result: RelayResult | None = None
            try:
                result = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: keep trying, messages are safe in the table
                log.exception("outbox relay round failed; trying again in %.1f s", idle_s)
            if result is not None and result.claimed >= self.batch_size:
                continue
            if wake is None:
                await asyncio.sleep(idle_s)
            else:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancel that
                # arrives as the wake fires, and then the relay would never stop
                with suppress(TimeoutError):
                    async with asyncio.timeout(idle_s):
                        await wake.wait()
                wake.clear()

    async def run_streaming(self, idle_s: float = 0.5, wake: asyncio.Event | None = None) -> None:
        """Relay until cancelled, claiming again as soon as `wake` is set, without waiting for the messages
        of earlier claims to be sent and recorded (at most `concurrency` in flight). For a lane of urgent
        messages (freezes): in `run_forever` a new one waits for the whole round before it — on PostgreSQL
        under a peak, a freeze's recording (its own transaction, behind the WMS callbacks' locks) held
        the round, and the freezes written meanwhile, for 300-900 ms."""
        in_flight: set[asyncio.Task[_Outcome | None]] = set()
        try:
            while True:
                room = self._in_flight_max - len(in_flight)
                claimed = 0
                if room > 0:
                    try:
                        messages = await self._in_thread(self._claim, room)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("outbox relay claim failed; trying again in %.1f s", idle_s)
                        messages = []
                    lease_until = self._clock() + self.lease
                    for message in messages:
                        task = asyncio.create_task(self._deliver(message, lease_until))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    claimed = len(messages)
                if room > 0 and claimed >= room:
                    continue  # a full claim: more may be due
                await self._pause(idle_s, wake, in_flight if room <= 0 else ())  # every slot taken: until one is free
        finally:
            for task in in_flight:
                task.cancel()
            with suppress(Exception):
                await asyncio.gather(*in_flight, return_exceptions=True)  # their rows stay `sending`: sent again after the lease
            with suppress(Exception):
                async with self._flush_lock:
                    await self._flush()

    @staticmethod
    async def _pause(idle_s: float, wake: asyncio.Event | None, busy: Iterable[asyncio.Task[Any]]) -> None:
        """Until `wake` is set (then cleared), one of `busy` ends, or `idle_s` has passed."""
        woken = asyncio.ensure_future(wake.wait()) if wake is not None else None
        waits = [*busy, *([woken] if woken is not None else [])]
        try:
            if waits:
                await asyncio.wait(waits, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(idle_s)
        finally:
            if woken is not None:
                woken.cancel()
        if wake is not None:
            wake.clear()

    async def run_once(self) -> RelayResult:
        messages = await self._in_thread(self._claim)
        result = RelayResult(claimed=len(messages))
        if not messages:
            return result
        lease_until = self._clock() + self.lease
        outcomes = await asyncio.gather(*(self._deliver(m, lease_until) for m in messages))
        async with self._flush_lock:  # whatever the last senders left unwritten
            await self._flush()
        for outcome in outcomes:
            if outcome is None:
                result.skipped += 1
            else:
                setattr(result, outcome.status, getattr(result, outcome.status) + 1)
        return result

    def breaker_states(self) -> dict[str, str]:
        """endpoint -> closed | open | half_open (open, and its reset time has passed: the next message is a trial)."""
        return {endpoint: self._state(context) for endpoint, context in sorted(self._contexts.items())}

    # -- one message ----------------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            return await asyncio.to_thread(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    def _claim(self, limit: int | None = None) -> list[OutboxMessage]:
        # the peak's `defer_notifications` switch: messages to people wait, save the urgent ones (priority > 0:
        # the warehouse's freeze alert); they are claimed again once it is off
        deferred = PEOPLE_PREFIX if self.defer_people is not None and self.defer_people() else None
        with self.engine.begin() as conn:
            return outbox_repo.claim(conn, limit=min(limit or self.batch_size, self.batch_size), lease=self.lease, now=self._clock(),
                                     kinds=list(self.senders), defer_prefix=deferred)

    async def _deliver(self, message: OutboxMessage, lease_until: datetime) -> _Outcome | None:
        async with self._concurrency:
            # Too little lease left for a send: another relay may take the row over mid-send.
            margin = min(timedelta(seconds=self.send_timeout_s), self.lease / 2)
            if self._clock() >= lease_until - margin:
                return None
            outcome = await self._attempt(message)
        await self._record(outcome)  # outside the send slot: the next send need not wait for the database
        return outcome

    async def _attempt(self, message: OutboxMessage) -> _Outcome:
        endpoint = message.endpoint
        sender = sender_for(self.senders, message.kind)
        if sender is None:
            return self._failed(message, DeliveryError(f"no sender for kind {message.kind!r}", retryable=False))
        breaker = await self._breakers.get_breaker(endpoint)
        self._contexts[endpoint] = breaker.context
        state = self._state(breaker.context)
        if state == OPEN:
            return self._deferred(message, self._reopens_in(breaker.context))
        trial = state == HALF_OPEN
        if trial:
            if endpoint in self._trials:
                return self._deferred(message, min(self.breaker_reset_s, 1.0))
            self._trials.add(endpoint)
        try:
            async with breaker:
                async with asyncio.timeout(self.send_timeout_s):
                    response = await sender.send(message)
            return _Outcome(message, "sent", response=_storable(response))
        except OpenedState:  # opened by a concurrent failure since the check above
            return self._deferred(message, self._reopens_in(breaker.context))
        except DeliveryError as exc:
            return self._failed(message, exc)
        except TimeoutError:
            return self._failed(message, DeliveryError(f"no answer within {self.send_timeout_s:g} s"))
        except Exception as exc:  # a sender's bug must not stop the relay; it is retried like any failure
            log.exception("sender for %s raised on outbox message %d", message.kind, message.id)
            return self._failed(message, DeliveryError(f"{type(exc).__name__}: {exc}"))
        finally:
            if trial:
                self._trials.discard(endpoint)

    def _failed(self, message: OutboxMessage, exc: DeliveryError) -> _Outcome:
        attempts = message.attempts + 1
        error = str(exc) or type(exc).__name__
        delay = retry_delay(attempts, exc, max_attempts=self.max_attempts, wait=self._wait)
        if delay is None:
            log.warning("outbox message %d (%s to %s) is dead after %d attempts: %s", message.id, message.kind, message.endpoint, attempts, error)
            return _Outcome(message, "dead", error=error)
        return _Outcome(message, "retrying", error=error, at=self._clock() + timedelta(seconds=delay))

    def _deferred(self, message: OutboxMessage, seconds: float) -> _Outcome:
        return _Outcome(message, "deferred", at=self._clock() + timedelta(seconds=max(seconds, 0.0)))

    # -- recording outcomes ---------------------------------------------------------------------

    async def _record(self, outcome: _Outcome) -> None:
        """Write the outcome right after its send, so a crash resends as little as possible. Group
        commit: while one write runs, outcomes of other sends gather and the next write takes them all."""
        self._pending.append(outcome)
        async with self._flush_lock:
            await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self._in_thread(self._write, batch)
        except Exception:  # rows stay `sending`; after the lease they are sent again (at least once)
            log.exception("could not record %d outbox outcomes; they will be retried after the lease", len(batch))

    def _write(self, batch: list[_Outcome]) -> None:
        now = self._clock()
        with self.engine.begin() as conn:
            for o in batch:
                if o.status == "sent":
                    outbox_repo.mark_sent(conn, o.message.id, response=o.response, now=now)
                elif o.status == "deferred":
                    outbox_repo.reschedule(conn, o.message.id, at=o.at or now, now=now)
                else:
                    outbox_repo.mark_failed(conn, o.message.id, error=o.error or "", retry_at=o.at, now=now)

    # -- breakers -------------------------------------------------------------------------------

    @staticmethod
    def _state(context: Context) -> str:
        # purgatory's clock is wall time (time.time()); it moves an open breaker to half-open only
        # when the next request arrives, so "open past its ttl" is reported as half_open here.
        if context.state == "closed":
            return CLOSED
        if context.state == "opened" and time.time() <= (context.opened_at or 0.0) + context.ttl:
            return OPEN
        return HALF_OPEN

    @staticmethod
    def _reopens_in(context: Context) -> float:
        return (context.opened_at or time.time()) + context.ttl - time.time()

    @staticmethod
    def _breaker_event(name: str, event_name: str, event: Any) -> None:
        if event_name == "state_changed":
            log.warning("outbox circuit breaker for endpoint %s is now %s", name, getattr(event, "state", "?"))
