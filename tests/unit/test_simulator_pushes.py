"""Pushes are signed like the platforms sign them and reach OrderHub, with retries, over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import httpx
from aiohttp import web

from orderhub.demo.shops import demo_shop
from orderhub.simulator import Simulator, serve_in_background
from orderhub.simulator.clock import FixedClock, SimClock
from orderhub.simulator.pusher import Pusher

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms"
NOW = 1742263920 + 30 * 86400
DY, YZ = demo_shop("douyin"), demo_shop("youzan")
ACK = {"code": 0, "msg": "success"}


def md5(text: bytes) -> str:
    return hashlib.md5(text).hexdigest()


def verify(channel: str, headers, body: bytes) -> bool:
    """Independent check of a push signature (FORMATS.md §1 / §5a)."""
    h = {k.lower(): v for k, v in headers.items()}
    if channel == "douyin":
        return h["app-id"] == DY["app_key"] and h["event-sign"] == md5(DY["app_key"].encode() + body + DY["app_secret"].encode())
    return (h["client-id"] == YZ["app_key"] and h["event-type"] == json.loads(body)["type"]
            and h["event-sign"] == md5(YZ["app_key"].encode() + body + YZ["app_secret"].encode()))


def test_push_signing_reproduces_the_fixture_signatures():
    from orderhub.simulator import douyin, youzan

    sigs = json.loads((FIXTURES / "SIGNATURES.json").read_text())
    body = (FIXTURES / "douyin_push_trade_paid.body.json").read_bytes()
    assert douyin.sign_push(DY["app_key"], body, DY["app_secret"]) == sigs["douyin_push_trade_paid.body.json"]["header event-sign (md5(app_key+body+app_secret))"]
    body = (FIXTURES / "youzan_push_trade_paid.body.json").read_bytes()
    assert youzan.sign_push(YZ["app_key"], body, YZ["app_secret"]) == sigs["youzan_push_trade_paid.body.json"]["header Event-Sign (md5(client_id+body+client_secret))"]


def test_every_generated_push_is_signed_md5_of_app_key_body_secret():
    sim = Simulator(seed=3, clock=FixedClock(NOW))
    result = sim.generate(300, ["douyin", "youzan"])
    assert len(result.pushes) > 300
    for p in result.pushes:
        assert verify(p.channel, p.headers, p.body)
        if p.channel == "douyin":
            [message] = json.loads(p.body)
            data = json.loads(message["data"])
            assert message["tag"] == p.kind and data["p_id"] == int(p.order_id)
            assert data["shop_id"] == int(DY["shop_id"])
        else:
            body = json.loads(p.body)
            assert body["sign"] == md5((YZ["app_key"] + body["msg"] + YZ["app_secret"]).encode())
            assert body["id"] == p.order_id and body["kdt_id"] == int(YZ["shop_id"])


class Receiver:
    """A small OrderHub stand-in: records pushes; the first `fail_first` requests get a 500."""

    def __init__(self, fail_first: int = 0, reply=ACK):
        self.fail_first = fail_first
        self.reply = reply
        self.received: list[tuple[str, dict, bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((request.path, dict(request.headers), body))
        if len(self.received) <= self.fail_first:
            return web.Response(status=500, text="boom")
        return web.json_response(self.reply)

    async def __aenter__(self):
        app = web.Application()
        app.router.add_post("/api/v1/webhooks/{channel}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc):
        await self._runner.cleanup()


def test_a_push_arrives_with_the_platform_headers_and_is_retried_after_a_500():
    sim = Simulator(seed=5, clock=FixedClock(NOW), pusher=Pusher(retry_delays=(0.01, 0.01, 0.01)))
    push = next(p for p in sim.generate(20, ["douyin"]).pushes)

    async def scenario():
        async with Receiver(fail_first=1) as receiver:
            ok = await sim.pusher.deliver(push, receiver.url)
            await sim.pusher.aclose()
            return ok, receiver.received

    ok, received = asyncio.run(scenario())
    assert ok
    assert len(received) == 2
    assert all(path == "/api/v1/webhooks/douyin" for path, _, _ in received)
    assert received[0][2] == received[1][2] == push.body
    assert verify("douyin", received[1][1], received[1][2])
    assert sim.pusher.stats.retries == 1 and sim.pusher.stats.delivered == 1


def test_a_youzan_retry_is_resigned_with_a_higher_send_count():
    sim = Simulator(seed=5, clock=FixedClock(NOW), pusher=Pusher(retry_delays=(0.01, 0.01)))
    push = next(p for p in sim.generate(20, ["youzan"]).pushes)

    async def scenario():
        async with Receiver(fail_first=1) as receiver:
            await sim.pusher.deliver(push, receiver.url)
            await sim.pusher.aclose()
            return receiver.received

    first, second = asyncio.run(scenario())
    assert [json.loads(b)["sendCount"] for _, _, b in (first, second)] == [0, 1]
    assert verify("youzan", first[1], first[2]) and verify("youzan", second[1], second[2])


def test_a_reply_other_than_the_platform_ack_counts_as_failed_after_all_retries():
    sim = Simulator(seed=5, clock=FixedClock(NOW), pusher=Pusher(retry_delays=(0.01, 0.01)))
    push = next(p for p in sim.generate(20, ["douyin"]).pushes)

    async def scenario():
        async with Receiver(reply={"code": 1, "msg": "nope"}) as receiver:
            ok = await sim.pusher.deliver(push, receiver.url)
            await sim.pusher.aclose()
            return ok, receiver.received

    ok, received = asyncio.run(scenario())
    assert not ok and len(received) == 3
    assert sim.pusher.stats.bad_ack == 3 and sim.pusher.stats.failed == 1


def test_the_background_server_generates_delivers_and_prepares_pushes():
    sim = Simulator(seed=9, clock=FixedClock(NOW))

    async def scenario():
        async with Receiver() as receiver:
            handle = await serve_in_background("127.0.0.1", 0, sim, target_url=receiver.url)
            try:
                async with httpx.AsyncClient(base_url=handle.url) as client:
                    gen = (await client.post("/_sim/generate", json={"count": 30, "channels": ["douyin", "youzan"],
                                                                      "deliver": True})).json()
                    lines = (await client.post("/_sim/prepare-pushes", json={"count": 40, "seed": 1, "channels": ["douyin", "youzan"]})).text
                    single = (await client.post("/_sim/prepare-pushes",
                                                json={"count": 25, "seed": 2, "channels": ["douyin", "youzan"],
                                                      "mix": {"single_push": True}})).text
                    one = gen["orders"][0]
                    scen = (await client.get(f"/_sim/scenarios/{one['channel']}/{one['order_id']}")).json()
                    stats = (await client.get("/_sim/stats")).json()
            finally:
                await handle.stop()
            return gen, lines, single, scen, stats, receiver.received

    gen, lines, single, scen, stats, received = asyncio.run(scenario())
    assert gen["delivery"] == {"delivered": len(gen["pushes"]), "failed": 0}
    assert len(received) == len(gen["pushes"])
    assert all(verify(path.rsplit("/", 1)[1], headers, body) for path, headers, body in received)
    requests = [json.loads(line) for line in lines.splitlines()]
    assert len({r["channel"] for r in requests}) == 2
    for r in requests:
        assert set(r) == {"channel", "path", "headers", "body", "original_id"}
        assert verify(r["channel"], r["headers"], r["body"].encode())
    assert scen["scenarios"] == gen["orders"][0]["scenarios"]
    assert stats["orders"]["douyin"] + stats["orders"]["youzan"] == 95
    single_ids = [json.loads(line)["original_id"] for line in single.splitlines()]
    assert len(single_ids) == len(set(single_ids)) == 25


def test_the_live_feed_creates_orders_and_plays_their_timelines():
    sim = Simulator(seed=4, clock=SimClock(speed=600), pusher=Pusher(retry_delays=(0.01,)))

    async def scenario():
        async with Receiver() as receiver:
            feed = sim.start_feed(40, receiver.url)
            await asyncio.sleep(1.5)
            feed.pause()
            paused_at = feed.created
            await asyncio.sleep(0.3)
            assert feed.created == paused_at
            feed.resume()
            await asyncio.sleep(0.2)
            await feed.stop()
            await asyncio.sleep(0.1)
            await sim.pusher.aclose()
            return receiver.received

    received = asyncio.run(scenario())
    assert sim.feed.created >= 30
    kinds = {json.loads(b)[0]["tag"] for p, _, b in received if p.endswith("douyin")}
    assert {"100", "101"} <= kinds  # created and paid (payment comes seconds after creation)
    assert all(verify(p.rsplit("/", 1)[1], h, b) for p, h, b in received if p.endswith(("douyin", "youzan")))
    assert any(p.split("?")[0].endswith("/wechat_channels") for p, _, _ in received)  # 视频号小店 (encrypted)
    streams = sim.streams.stats()  # 淘宝 and 拼多多 messages wait on their streams for OrderHub's connection
    assert streams["taobao/12345678"]["published"] > 0 and streams["pdd/fakeclientid0001"]["published"] > 0
