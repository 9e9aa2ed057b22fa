"""The outbox on a real database (SQLite and PostgreSQL) and real HTTP: signed webhooks to a local receiver,
retries with backoff, dead letters and retries by hand, circuit breakers, a relay crash, idempotent enqueues."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiohttp import web
from click.testing import CliRunner

from auth_helpers import api_key_headers, secured_app
from orderhub.adapters.db import migrate, outbox_repo
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.webhooks import WebhookSender, sign, verify
from orderhub.entrypoints.api.outbox_routes import build_outbox_router
from orderhub.services.outbox import DeliveryError, OutboxMessage, Relay

DOC = Path(__file__).resolve().parents[2] / "docs" / "outbox.md"
SECRET = "whsec_test_Zr8pQ2"


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class Receiver:
    """Plays every external system on 127.0.0.1: POST /<endpoint>, answers scripted per path (then `status`)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: dict[str, list[tuple[int, Any]]] = {}
        self.status: dict[str, int] = {}
        self.delay_s = 0.0
        self.url = ""

    def to(self, endpoint: str) -> list[Received]:
        return [r for r in self.requests if r.path == f"/{endpoint}"]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()}, await request.read()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        queue = self.script.get(request.path)
        status, reply = queue.pop(0) if queue else (self.status.get(request.path, 200), {"ok": True})
        headers = {"Retry-After": "7"} if status == 429 else None
        return web.json_response(reply, status=status, headers=headers)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{endpoint}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


class Clock:
    """The relay's clock, moved by the test: backoff and leases are checked without waiting for them."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)



@pytest.fixture
async def receiver():
    async with Receiver() as r:
        yield r


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as client:
        yield client


@pytest.fixture
def clock():
    return Clock()


def webhook_relay(engine, http, receiver, clock, **options: Any) -> Relay:
    targets = {endpoint: (f"{receiver.url}/{endpoint}", SECRET) for endpoint in ("erp", "wms-east", "crm")}
    return Relay(engine, {"webhook": WebhookSender(http, targets)}, clock=clock, **options)


def put(engine, clock, key: str, *, endpoint: str = "erp", kind: str = "webhook", order_id: str | None = None, **payload: Any) -> int:
    with engine.begin() as conn:
        message_id = outbox_repo.enqueue(conn, kind=kind, endpoint=endpoint, payload={"key": key, **payload}, idempotency_key=key,
                                         order_id=order_id, now=clock())
    assert message_id is not None
    return message_id


def row(engine, message_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        found = outbox_repo.get_message(conn, message_id)
    assert found is not None
    return found


@asynccontextmanager
async def api(engine, relay):
    woken: list[int] = []
    app = secured_app(engine, build_outbox_router(SimpleNamespace(engine=engine, relay=relay, notify_outbox=lambda: woken.append(1))))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orderhub", headers=api_key_headers(engine)) as client:
        client.woken = woken  # type: ignore[attr-defined]
        yield client


# -- retries and dead letters ----------------------------------------------------------------------


async def test_a_failing_webhook_is_retried_with_growing_waits_until_it_is_delivered(engine, http, receiver, clock):
    receiver.script["/erp"] = [(500, {"error": "db down"}), (503, {"error": "busy"})]
    mid = put(engine, clock, "order-1:shipped", order_id="o1")
    relay = webhook_relay(engine, http, receiver, clock, base_delay_s=2.0)

    assert (await relay.run_once()).retrying == 1
    first = row(engine, mid)
    assert (first["status"], first["attempts"]) == ("pending", 1) and first["last_error"].startswith("HTTP 500")
    assert 2.0 <= (first["next_attempt_at"] - clock.now).total_seconds() <= 4.0
    assert (await relay.run_once()).claimed == 0  # not due yet: the backoff is kept
    clock.now = first["next_attempt_at"]

    assert (await relay.run_once()).retrying == 1
    second = row(engine, mid)
    assert second["attempts"] == 2 and second["last_error"].startswith("HTTP 503")
    assert 4.0 <= (second["next_attempt_at"] - clock.now).total_seconds() <= 6.0
    clock.now = second["next_attempt_at"]

    assert (await relay.run_once()).sent == 1
    done = row(engine, mid)
    assert (done["status"], done["attempts"]) == ("sent", 3)
    assert done["response"] == {"status": 200, "body": {"ok": True}}
    assert len(receiver.to("erp")) == 3
    assert {r.headers["idempotency-key"] for r in receiver.requests} == {"order-1:shipped"}
    assert len({r.body for r in receiver.requests}) == 1


async def test_a_refused_message_goes_dead_at_once_with_the_receivers_error(engine, http, receiver, clock):
    receiver.script["/erp"] = [(422, {"error": "unknown sku SKU-404"})]
    mid = put(engine, clock, "order-2:created")
    relay = webhook_relay(engine, http, receiver, clock)

    assert (await relay.run_once()).dead == 1
    dead = row(engine, mid)
    assert (dead["status"], dead["attempts"]) == ("dead", 1)
    assert "HTTP 422" in dead["last_error"] and "unknown sku SKU-404" in dead["last_error"]
    clock.advance(3600)
    assert (await relay.run_once()).claimed == 0
    assert len(receiver.requests) == 1
    assert relay.breaker_states() == {"erp": "closed"}  # the endpoint answered: it is not failing


async def test_after_max_attempts_a_message_is_dead_and_a_retry_by_hand_sends_it(engine, http, receiver, clock):
    receiver.status["/erp"] = 500
    mid = put(engine, clock, "order-3:shipped")
    relay = webhook_relay(engine, http, receiver, clock, max_attempts=3)
    for _ in range(3):
        await relay.run_once()
        clock.advance(3600)
    dead = row(engine, mid)
    assert (dead["status"], dead["attempts"]) == ("dead", 3) and dead["last_error"].startswith("HTTP 500")
    assert (await relay.run_once()).claimed == 0 and len(receiver.requests) == 3

    async with api(engine, relay) as client:
        page = (await client.get("/api/v1/outbox", params={"status": "dead"})).json()
        assert [item["id"] for item in page["items"]] == [mid]
        assert page["items"][0]["last_error"].startswith("HTTP 500") and page["counts"]["dead"] == 1
        assert page["breakers"] == {"erp": "closed"}

        receiver.status["/erp"] = 200
        answer = await client.post(f"/api/v1/outbox/{mid}/retry")
        assert (answer.status_code, answer.json()) == (200, {"id": mid, "status": "pending"})
        assert client.woken == [1]  # type: ignore[attr-defined]
        assert (await client.get("/api/v1/outbox", params={"status": "dead"})).json()["items"] == []

        assert (await relay.run_once()).sent == 1
        assert (row(engine, mid)["status"], row(engine, mid)["attempts"]) == ("sent", 4)
        again = await client.post(f"/api/v1/outbox/{mid}/retry")
        assert (again.status_code, again.json()["code"]) == (409, "conflict")
        missing = await client.post("/api/v1/outbox/999999/retry")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


async def test_the_outbox_is_listed_newest_first_a_page_at_a_time_and_filtered(engine, http, receiver, clock):
    ids = [put(engine, clock, f"k{n}", order_id="o7" if n % 2 else "o8") for n in range(5)]
    wms = put(engine, clock, "freeze-1", kind="wms.freeze", endpoint="wms-east", order_id="o7")
    async with api(engine, None) as client:
        first = (await client.get("/api/v1/outbox", params={"limit": 4})).json()
        assert [i["id"] for i in first["items"]] == [wms, *ids[:1:-1]]
        assert first["counts"] == {"pending": 6, "sending": 0, "sent": 0, "dead": 0} and first["breakers"] == {}
        rest = (await client.get("/api/v1/outbox", params={"limit": 4, "cursor": first["next_cursor"]})).json()
        assert [i["id"] for i in rest["items"]] == ids[1::-1] and rest["next_cursor"] is None
        assert [i["id"] for i in (await client.get("/api/v1/outbox", params={"kind": "wms"})).json()["items"]] == [wms]
        assert [i["id"] for i in (await client.get("/api/v1/outbox", params={"order_id": "o7"})).json()["items"]] == [wms, ids[3], ids[1]]
        shown = (await client.get("/api/v1/outbox", params={"kind": "wms.freeze", "payload": "true"})).json()["items"][0]
        assert shown["payload"] == {"key": "freeze-1"} and shown["created_at"].endswith("+08:00")
        bad = await client.get("/api/v1/outbox", params={"cursor": "nonsense"})
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_cursor")


def test_the_dead_letter_queue_is_listed_and_retried_from_the_command_line(engine, database_url, clock, monkeypatch, tmp_path):
    import orderhub.entrypoints.cli_outbox  # noqa: F401  (registers `outbox` on main; cli.py imports it once wired)
    from orderhub.entrypoints.cli import main

    monkeypatch.setenv("ORDERHUB_DATABASE_URL", database_url)
    monkeypatch.setenv("ORDERHUB_DATA_DIR", str(tmp_path / "data"))
    mid = put(engine, clock, "order-9:shipped", order_id="o9")
    with engine.begin() as conn:
        outbox_repo.claim(conn, limit=10, lease=timedelta(seconds=60), now=clock())
        outbox_repo.mark_failed(conn, mid, error="HTTP 404: no such order", retry_at=None, now=clock())
    runner = CliRunner()

    listed = runner.invoke(main, ["outbox", "list", "--status", "dead"])
    assert listed.exit_code == 0
    assert "dead: 1" in listed.output and f"{mid}" in listed.output and "HTTP 404: no such order" in listed.output
    retried = runner.invoke(main, ["outbox", "retry", str(mid)])
    assert retried.exit_code == 0 and row(engine, mid)["status"] == "pending"
    with engine.begin() as conn:
        outbox_repo.mark_sent(conn, mid, response=None, now=clock())
    sent = runner.invoke(main, ["outbox", "retry", str(mid)])
    assert sent.exit_code == 1 and "conflict" in sent.output
    missing = runner.invoke(main, ["outbox", "retry", "424242"])
    assert missing.exit_code == 1 and "not_found" in missing.output


# -- circuit breakers ----------------------------------------------------------------------------------


async def test_a_failing_endpoints_breaker_opens_while_others_flow_then_half_opens_and_recovers(engine, http, receiver, clock):
    receiver.status["/wms-east"] = 503
    relay = webhook_relay(engine, http, receiver, clock, breaker_fail_max=3, breaker_reset_s=1.0)  # wall time: purgatory keeps its own clock
    wms = [put(engine, clock, f"wms-{n}", endpoint="wms-east") for n in range(3)]

    assert (await relay.run_once()).retrying == 3
    assert relay.breaker_states() == {"wms-east": "open"}
    wms += [put(engine, clock, f"wms-{n}", endpoint="wms-east") for n in range(3, 6)]
    erp = [put(engine, clock, f"erp-{n}") for n in range(2)]
    result = await relay.run_once()
    assert (result.sent, result.deferred) == (2, 3)  # the ERP is served; the WMS is not even tried
    assert len(receiver.to("wms-east")) == 3 and all(row(engine, m)["status"] == "sent" for m in erp)
    assert [row(engine, m)["attempts"] for m in wms[3:]] == [0, 0, 0]

    await asyncio.sleep(1.05)
    assert relay.breaker_states()["wms-east"] == "half_open"
    clock.advance(10)
    result = await relay.run_once()  # one trial, still failing: open again, the rest wait
    assert (result.retrying, result.deferred) == (1, 5)
    assert len(receiver.to("wms-east")) == 4 and relay.breaker_states()["wms-east"] == "open"

    receiver.status["/wms-east"] = 200
    await asyncio.sleep(1.05)
    clock.advance(10)
    result = await relay.run_once()  # the trial succeeds: closed
    assert (result.sent, result.deferred) == (1, 5) and relay.breaker_states()["wms-east"] == "closed"
    clock.advance(2)
    assert (await relay.run_once()).sent == 5
    rows = [row(engine, m) for m in wms]
    assert {r["status"] for r in rows} == {"sent"}
    assert [r["attempts"] for r in rows[3:]] == [1, 1, 1]  # waiting on an open breaker cost no attempts
    assert sum(r["attempts"] for r in rows) == len(receiver.to("wms-east")) == 10


# -- crash, at least once, idempotency -------------------------------------------------------------


class DiesAfterSending:
    """Delivers, then never returns: the relay process dies before it can record the send."""

    def __init__(self, inner: WebhookSender) -> None:
        self.inner = inner
        self.delivered = asyncio.Event()

    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        await self.inner.send(message)
        self.delivered.set()
        await asyncio.Event().wait()
        return None


async def test_a_relay_that_dies_after_sending_is_taken_over_after_the_lease_and_the_receiver_can_dedupe(engine, http, receiver, clock):
    mid = put(engine, clock, "order-5:freeze", endpoint="wms-east")
    targets = {"wms-east": (f"{receiver.url}/wms-east", SECRET)}
    dying = DiesAfterSending(WebhookSender(http, targets))
    crashed = asyncio.create_task(Relay(engine, {"webhook": dying}, clock=clock, lease=timedelta(seconds=60)).run_once())
    await asyncio.wait_for(dying.delivered.wait(), 5)
    crashed.cancel()
    with suppress(asyncio.CancelledError):
        await crashed
    assert row(engine, mid)["status"] == "sending"

    survivor = Relay(engine, {"webhook": WebhookSender(http, targets)}, clock=clock, lease=timedelta(seconds=60))
    assert (await survivor.run_once()).claimed == 0  # the lease still holds
    clock.advance(61)
    assert (await survivor.run_once()).sent == 1
    clock.advance(3600)
    assert (await survivor.run_once()).claimed == 0

    seen = receiver.to("wms-east")
    assert len(seen) == 2 and seen[0].body == seen[1].body
    assert [r.headers["idempotency-key"] for r in seen] == ["order-5:freeze", "order-5:freeze"]
    done = row(engine, mid)
    assert (done["status"], done["attempts"]) == ("sent", 1)
    with engine.connect() as conn:
        assert outbox_repo.counts(conn) == {"pending": 0, "sending": 0, "sent": 1, "dead": 0}


async def test_enqueueing_the_same_idempotency_key_again_adds_nothing_and_a_rolled_back_enqueue_sends_nothing(engine, clock):
    with engine.begin() as conn:
        first = outbox_repo.enqueue(conn, kind="wms.order", endpoint="wms-east", payload={"v": 1}, idempotency_key="wms.order:o1", now=clock())
        again = outbox_repo.enqueue(conn, kind="wms.order", endpoint="wms-east", payload={"v": 2}, idempotency_key="wms.order:o1", now=clock())
    with engine.begin() as conn:
        later = outbox_repo.enqueue(conn, kind="wms.order", endpoint="wms-east", payload={"v": 3}, idempotency_key="wms.order:o1", now=clock())
    with pytest.raises(RuntimeError), engine.begin() as conn:
        outbox_repo.enqueue(conn, kind="wms.order", endpoint="wms-east", payload={"v": 4}, idempotency_key="wms.order:o2", now=clock())
        raise RuntimeError("the state change failed")
    assert isinstance(first, int) and again is None and later is None

    sent: list[OutboxMessage] = []

    class Recorder:
        async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
            sent.append(message)
            return None

    assert (await Relay(engine, {"wms": Recorder()}, clock=clock).run_once()).sent == 1
    assert [(m.idempotency_key, m.payload) for m in sent] == [("wms.order:o1", {"v": 1})]


async def test_a_relay_claims_only_kinds_it_has_a_sender_for(engine, clock):
    notify = put(engine, clock, "sms-1", kind="notify.sms", endpoint="sms")
    wms = put(engine, clock, "wms-1", kind="wms.order", endpoint="wms-east")

    class Ok:
        async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
            return {"accepted": message.id}

    assert (await Relay(engine, {"wms": Ok()}, clock=clock).run_once()).sent == 1
    assert row(engine, wms)["response"] == {"accepted": wms} and row(engine, notify)["status"] == "pending"


async def test_a_streaming_relay_sends_a_new_message_while_an_earlier_one_is_still_in_hand(engine, clock):
    """The freeze lane: a freeze written while the WMS's answer to the one before is still being recorded goes at
    once (run_forever would hold it until that round ended; on PostgreSQL under a peak, for 300-900 ms)."""
    holding, release, sent = asyncio.Event(), asyncio.Event(), []

    class AnswerRecordedSlowly:
        async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
            sent.append(message.idempotency_key)
            if message.idempotency_key == "freeze-1":
                holding.set()
                await release.wait()
            return {"result": "frozen"}

    first = put(engine, clock, "freeze-1", kind="wms.freeze", endpoint="wms-east")
    wake = asyncio.Event()
    relay = Relay(engine, {"wms.freeze": AnswerRecordedSlowly()}, clock=clock)
    lane = asyncio.create_task(relay.run_streaming(idle_s=60.0, wake=wake))  # only the wake can bring the second one soon
    try:
        await asyncio.wait_for(holding.wait(), 10)
        second = put(engine, clock, "freeze-2", kind="wms.freeze", endpoint="wms-east")
        wake.set()
        await _until(lambda: row(engine, second)["status"] == "sent", "the second freeze sent")
        assert sent == ["freeze-1", "freeze-2"] and row(engine, first)["status"] == "sending"  # the first still in hand
        release.set()
        await _until(lambda: row(engine, first)["status"] == "sent", "the first freeze recorded")
    finally:
        lane.cancel()
        with suppress(asyncio.CancelledError):
            await lane
    with engine.connect() as conn:
        assert outbox_repo.counts(conn) == {"pending": 0, "sending": 0, "sent": 2, "dead": 0}


async def test_a_streaming_relay_stopped_mid_send_leaves_the_message_to_be_sent_again_after_its_lease(engine, clock):
    started = asyncio.Event()

    class Hangs:
        async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
            started.set()
            await asyncio.Event().wait()
            return None

    mid = put(engine, clock, "freeze-9", kind="wms.freeze", endpoint="wms-east")
    lane = asyncio.create_task(Relay(engine, {"wms.freeze": Hangs()}, clock=clock).run_streaming(idle_s=60.0))
    await asyncio.wait_for(started.wait(), 10)
    lane.cancel()
    with suppress(asyncio.CancelledError):
        await lane
    assert row(engine, mid)["status"] == "sending"
    clock.advance(120)  # past the lease: another relay takes it
    assert (await Relay(engine, {"wms.freeze": _Ok()}, clock=clock).run_once()).sent == 1


class _Ok:
    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        return {"ok": True}


async def _until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


# -- PostgreSQL: concurrent relays ------------------------------------------------------------------------


@pytest.mark.postgres
def test_two_relays_on_postgresql_never_claim_the_same_row_and_do_not_wait_for_each_other(postgres_url, clock):
    migrate.upgrade(postgres_url)
    engine = create_engine(postgres_url)
    try:
        for n in range(40):
            put(engine, clock, f"pg-{n}")
        claimed: dict[str, list[int]] = {}
        a_holds = threading.Event()

        def relay_a() -> None:
            with engine.begin() as conn:
                claimed["a"] = [m.id for m in outbox_repo.claim(conn, limit=10, lease=timedelta(seconds=60), now=clock())]
                a_holds.set()
                time.sleep(1.0)  # its transaction, and its row locks, stay open meanwhile

        def relay_b() -> None:
            a_holds.wait(5)
            started = time.perf_counter()
            with engine.begin() as conn:
                claimed["b"] = [m.id for m in outbox_repo.claim(conn, limit=10, lease=timedelta(seconds=60), now=clock())]
            claimed["b_seconds"] = [time.perf_counter() - started]  # type: ignore[list-item]

        threads = [threading.Thread(target=relay_a), threading.Thread(target=relay_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(claimed["a"]) == len(claimed["b"]) == 10 and not set(claimed["a"]) & set(claimed["b"])
        assert claimed["b_seconds"][0] < 0.8  # skipped A's locked rows instead of queueing behind them
    finally:
        engine.dispose()


@pytest.mark.postgres
async def test_two_relays_on_postgresql_deliver_every_message_exactly_once_between_them(postgres_url, clock):
    migrate.upgrade(postgres_url)
    engines = [create_engine(postgres_url), create_engine(postgres_url)]  # as if two processes
    try:
        for n in range(300):
            put(engines[0], clock, f"pg-{n}", kind="wms.order", endpoint=f"wms-{n % 3}")
        delivered: Counter[int] = Counter()
        by_relay: Counter[int] = Counter()

        class Recorder:
            def __init__(self, no: int) -> None:
                self.no = no

            async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
                await asyncio.sleep(0.001)
                delivered[message.id] += 1
                by_relay[self.no] += 1
                return None

        relays = [Relay(e, {"wms": Recorder(no)}, clock=clock, batch_size=20) for no, e in enumerate(engines)]

        async def drain(relay: Relay) -> None:
            while (await relay.run_once()).claimed:
                pass

        await asyncio.gather(*(drain(r) for r in relays))
        assert len(delivered) == 300 and set(delivered.values()) == {1}
        assert by_relay[0] > 0 and by_relay[1] > 0
    finally:
        for e in engines:
            e.dispose()


# -- the webhook sender and its signature ------------------------------------------------------------


def message(endpoint: str = "erp", key: str = "order-8:shipped") -> OutboxMessage:
    return OutboxMessage(id=1, kind="webhook", endpoint=endpoint, order_id="o8", recipient=None,
                         payload={"event": "order.shipped", "waybill_no": "SF1234567890", "收件": "张*"},
                         idempotency_key=key, priority=0, attempts=0, created_at=datetime.now(UTC))


async def test_the_webhook_signature_verifies_and_a_one_byte_change_does_not(http, receiver):
    sender = WebhookSender(http, {"erp": (f"{receiver.url}/erp", SECRET)})
    assert await sender.send(message()) == {"status": 200, "body": {"ok": True}}
    (got,) = receiver.requests
    timestamp, signature = got.headers["x-orderhub-timestamp"], got.headers["x-orderhub-signature"]
    assert got.headers["idempotency-key"] == "order-8:shipped" and got.headers["content-type"] == "application/json"
    assert abs(int(timestamp) - time.time()) < 60
    assert verify(SECRET, timestamp, got.body, signature)
    tampered = got.body.replace(b"SF1234567890", b"SF1234567891")
    assert len(tampered) == len(got.body) and not verify(SECRET, timestamp, tampered, signature)
    assert not verify("another-secret", timestamp, got.body, signature)
    assert not verify(SECRET, str(int(timestamp) - 1), got.body, signature)
    assert not verify(SECRET, timestamp, got.body, signature, now=int(timestamp) + 301)  # too old: a replay
    receiver_check = doc_receiver_function()
    assert receiver_check(SECRET, {"X-OrderHub-Timestamp": timestamp, "X-OrderHub-Signature": signature}, got.body)
    assert not receiver_check(SECRET, {"X-OrderHub-Timestamp": timestamp, "X-OrderHub-Signature": signature}, tampered)


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (502, True), (503, True), (400, False), (401, False),
                                                   (404, False), (409, False), (422, False)])
async def test_the_webhook_sender_retries_429_and_5xx_and_gives_up_on_other_4xx(http, receiver, status, retryable):
    receiver.status["/erp"] = status
    with pytest.raises(DeliveryError) as failure:
        await WebhookSender(http, {"erp": (f"{receiver.url}/erp", SECRET)}).send(message())
    assert failure.value.retryable is retryable and str(failure.value).startswith(f"HTTP {status}")
    assert failure.value.retry_after_s == (7.0 if status == 429 else None)


async def test_timeouts_refused_connections_and_unknown_endpoints_are_told_apart(receiver):
    receiver.delay_s = 1.0
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.2)) as impatient:
        with pytest.raises(DeliveryError) as timed_out:
            await WebhookSender(impatient, {"erp": (f"{receiver.url}/erp", SECRET)}).send(message())
        assert timed_out.value.retryable and "timed out" in str(timed_out.value)
        closed = Receiver()
        async with closed:
            url = closed.url
        with pytest.raises(DeliveryError) as refused:
            await WebhookSender(impatient, {"erp": (f"{url}/erp", SECRET)}).send(message())
        assert refused.value.retryable
        with pytest.raises(DeliveryError) as unknown:
            await WebhookSender(impatient, {}).send(message("nowhere"))
        assert not unknown.value.retryable and "nowhere" in str(unknown.value)


def doc_receiver_function() -> Any:
    """The verification function docs/outbox.md gives receivers, run as written."""
    code = re.search(r"```python\n(import hashlib.*?def verify_orderhub_webhook.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert code, "docs/outbox.md lost its receiver example"
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)  # noqa: S102 - our own documentation
    return namespace["verify_orderhub_webhook"]


def test_the_worked_example_in_the_docs_is_correct():
    text = DOC.read_text(encoding="utf-8")
    values = dict(re.findall(r"^(secret|timestamp|body|signed|signature):\s+(.+)$", text, re.M))
    body = values["body"].encode()
    assert values["signed"] == f"{values['timestamp']}.{values['body']}"
    assert sign(values["secret"], values["timestamp"], body) == values["signature"]
    check = doc_receiver_function()
    headers = {"X-OrderHub-Timestamp": values["timestamp"], "X-OrderHub-Signature": values["signature"]}
    assert check(values["secret"], headers, body, now=float(values["timestamp"]))
    assert not check(values["secret"], headers, body.replace(b"SF1234567890", b"SF1234567891"), now=float(values["timestamp"]))
