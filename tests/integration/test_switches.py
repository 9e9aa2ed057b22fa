"""Degradation switches: by hand (audited), by the lag watcher (auto mode only), and what they defer."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from click.testing import CliRunner

from auth_helpers import api_key_headers
from orderhub.adapters.db import migrate
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.tables import audit_log
from orderhub.bootstrap import Runtime
from orderhub.config import Settings
from orderhub.domain.access import Actor
from orderhub.entrypoints.api.app import create_app
from orderhub.entrypoints.cli import main
from orderhub.services.switches import SWITCHES, LagWatcher, Switches


def engine_for(url: str) -> sa.Engine:
    migrate.upgrade(url)
    return create_engine(url)


def states(switches: Switches) -> dict[str, tuple[bool, str]]:
    return {s["name"]: (s["on"], s["mode"]) for s in switches.list()}


async def test_the_lag_watcher_flips_auto_switches_and_leaves_manual_ones(database_url):
    engine = engine_for(database_url)
    switches = Switches(engine, ttl_s=0)
    assert states(switches) == {name: (False, "auto") for name in SWITCHES}
    switches.set("defer_backtests", False, actor=Actor("ops-lead", "user"), reason="back-tests matter today")  # held off by hand
    lag = {"now": 10}

    async def current() -> int:
        return lag["now"]

    watcher = LagWatcher(switches, current, threshold=1000)
    assert await watcher.check() == []
    lag["now"] = 1500
    assert sorted(await watcher.check()) == sorted(set(SWITCHES) - {"defer_backtests"})
    assert switches.is_on("defer_notifications") and not switches.is_on("defer_backtests")
    lag["now"] = 800  # between half and the threshold: no flapping
    assert await watcher.check() == []
    lag["now"] = 100
    assert sorted(await watcher.check()) == sorted(set(SWITCHES) - {"defer_backtests"})
    assert not any(on for on, _ in states(switches).values())
    assert watcher.max_lag == 1500
    with engine.connect() as conn:
        actions = [r.action for r in conn.execute(sa.select(audit_log.c.action).where(audit_log.c.entity == "switch").order_by(audit_log.c.id))]
    assert actions == ["switch.set", "switch.auto", "switch.auto"]
    engine.dispose()


async def test_switches_over_the_api_and_the_cli(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'oh.db'}"
    rt = Runtime(Settings(database_url=url, data_dir=tmp_path))
    app = create_app(rt, workers=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        await rt.start(workers=False, streams=False)
        try:
            ops = api_key_headers(rt.engine, "ops", name="ops")
            viewer = api_key_headers(rt.engine, "viewer", name="viewer")
            listed = (await client.get("/api/v1/switches", headers=viewer)).json()
            assert {s["name"] for s in listed["items"]} == set(SWITCHES)
            assert (await client.put("/api/v1/switches/defer_analytics", json={"on": True}, headers=viewer)).status_code == 403
            changed = await client.put("/api/v1/switches/defer_analytics", json={"on": True, "reason": "双十一 0 点"}, headers=ops)
            assert changed.status_code == 200 and changed.json()["on"] and changed.json()["mode"] == "manual"
            unknown = await client.put("/api/v1/switches/defer_everything", json={"on": True}, headers=ops)
            assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
            assert (await client.post("/api/v1/rules/holds/backtest", json={"days": 1}, headers=ops)).json()["code"] == "not_found"  # no draft
            await client.put("/api/v1/switches/defer_backtests", json={"on": True}, headers=ops)
            for route in ("/api/v1/rules/holds/backtest", "/api/v1/rules/holds/backtest-jobs"):
                deferred = await client.post(route, json={"days": 1}, headers=ops)
                assert deferred.status_code == 503 and deferred.json()["code"] == "deferred" and deferred.headers["retry-after"]
            fleet = (await client.get("/api/v1/fleet", headers=viewer)).json()
            assert fleet["mode"] == "embedded" and fleet["workers"] == []
        finally:
            await rt.stop()
    monkeypatch.setenv("ORDERHUB_DATABASE_URL", url)
    result = CliRunner().invoke(main, ["switches", "set", "defer_analytics", "auto", "--reason", "peak over"])
    assert result.exit_code == 0, result.output
    assert "defer_analytics: off (auto)" in result.output
    listing = CliRunner().invoke(main, ["switches", "list"])
    assert "defer_analytics" in listing.output and "peak over" in listing.output


def test_deferred_notifications_wait_in_the_outbox_but_urgent_ones_and_webhooks_go(database_url):
    from datetime import UTC, datetime, timedelta

    from orderhub.adapters.db import outbox_repo
    from orderhub.services.outbox import Relay

    engine = engine_for(database_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for kind, priority, key in (("notify.sms", 0, "shipped"), ("notify.wecom", 1, "freeze-alert"), ("webhook", 0, "erp")):
            outbox_repo.enqueue(conn, kind=kind, endpoint="x", payload={}, idempotency_key=key, priority=priority, now=now - timedelta(seconds=1))
    switches = Switches(engine, ttl_s=0)
    switches.set("defer_notifications", True, reason="peak")
    relay = Relay(engine, {"notify.sms": None, "notify.wecom": None, "webhook": None})
    relay.defer_people = lambda: switches.is_on("defer_notifications")
    assert sorted(m.idempotency_key for m in relay._claim()) == ["erp", "freeze-alert"]
    switches.set("defer_notifications", False, mode="auto")
    assert [m.idempotency_key for m in relay._claim()] == ["shipped"]  # sent once the peak is over
    engine.dispose()
