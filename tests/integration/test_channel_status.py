"""GET /api/v1/channels: a merchant sees when a channel stops delivering (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fakes import SHOP, FakeChannel, FakePlatform, push_body
from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.registry import ChannelRegistry
from orderhub.bootstrap import Runtime
from orderhub.config import Settings, ShopSettings
from orderhub.domain.errors import FetchError
from orderhub.services.channel_status import channel_statuses


class DownPlatform:
    """A pull channel whose API answers 429 until told otherwise."""

    channel = "pullme"

    def __init__(self) -> None:
        self.failing = True

    async def pull_window(self, http: Any, shop: ShopConfig, start: datetime, end: datetime) -> list[dict[str, Any]]:
        if self.failing:
            raise FetchError("pullme order list: HTTP 429 rate limited", retryable=True)
        return []


class QuietStream:
    channel = "streamy"

    async def run(self, http: Any, shops: list[ShopConfig], sink: Any) -> None:  # driven by the test instead
        return None

    def parse_push(self, body: bytes) -> list:
        return []


@pytest.fixture
async def runtime(database_url, tmp_path):
    fake, puller, stream = FakeChannel(FakePlatform()), DownPlatform(), QuietStream()
    registry = ChannelRegistry(
        push={"fake": fake}, streams={"streamy": stream}, sources={"fake": fake, "pullme": puller}, pull={"pullme"},
    )
    settings = Settings(database_url=database_url, audit=False, data_dir=tmp_path, shops=[
        ShopSettings(channel="fake", shop_id=SHOP.shop_id, name=SHOP.name, app_key=SHOP.app_key, app_secret=SHOP.app_secret),
        ShopSettings(channel="pullme", shop_id="P1", name="拉取店"),
        ShopSettings(channel="streamy", shop_id="T1", name="长连接店", app_key="app-t"),
    ])
    rt = Runtime(settings, channels=registry)
    await rt.start(workers=False, streams=False)
    yield rt, puller
    await rt.stop()


def by_channel(rt: Runtime, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    return {s["channel"]: s for s in channel_statuses(rt.engine, rt.shops, rt.channels, rt.monitor, 10.0, now)}


async def test_each_shop_shows_how_its_channel_is_delivering(runtime):
    rt, puller = runtime
    rt.channels.push["fake"].platform.put("1001")
    body = push_body({"id": "1001", "updated": 0})
    await rt.intake.accept_push("fake", {"x-sign": FakeChannel.sign(body)}, body)
    rt.intake.connection("streamy", "app-t", "connected")
    await rt.puller.pull_shop(rt.shops.by_shop("pullme", "P1"))

    now = by_channel(rt)
    assert now["fake"]["transport"] == "push" and now["fake"]["state"] == "connected"
    assert now["fake"]["backlog"] == 1 and now["fake"]["last_message_at"] is not None
    assert now["streamy"]["state"] == "connected" and now["streamy"]["connection"]["state"] == "connected"
    assert now["pullme"]["state"] == "failing" and "429" in now["pullme"]["reason"]
    assert "429" in now["pullme"]["last_error"]["message"]

    # two minutes on: the unprocessed push is late, and a dropped connection is failing
    rt.intake.connection("streamy", "app-t", "disconnected", "connection closed 1006")
    later = by_channel(rt, datetime.now(UTC) + timedelta(minutes=2))
    assert later["fake"]["state"] == "lagging"
    assert later["streamy"]["state"] == "failing" and "1006" in later["streamy"]["reason"]

    # the platform recovers: the pull catches up and the shop is healthy again
    puller.failing = False
    result = await rt.puller.pull_shop(rt.shops.by_shop("pullme", "P1"))
    assert result.error is None
    assert by_channel(rt)["pullme"]["state"] == "connected"
    await rt.drain()
    assert by_channel(rt)["fake"]["backlog"] == 0
