"""When the durable store for raw messages cannot take a push, the platform is told to retry:
503 + Retry-After + `intake_unavailable`, and nothing is acknowledged that was not kept."""

from __future__ import annotations

import uuid

import httpx
import pytest
import sqlalchemy as sa

from broker_helpers import drop_broker_prefix
from fakes import SHOP, FakeChannel, FakePlatform, fake_registry, push_body
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.tables import inbox
from orderhub.bootstrap import Runtime
from orderhub.config import BrokerSettings, Settings, ShopSettings
from orderhub.entrypoints.api.app import create_app

SHOPS = [ShopSettings(channel="fake", shop_id=SHOP.shop_id, name=SHOP.name, app_key=SHOP.app_key, app_secret=SHOP.app_secret)]


async def post_push(app, body: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/api/v1/webhooks/fake", content=body, headers={"x-sign": FakeChannel.sign(body)})


def inbox_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar_one()


async def test_embedded_intake_answers_503_while_the_inbox_database_cannot_be_written(tmp_path):
    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'oh.db'}", data_dir=tmp_path, shops=SHOPS), channels=fake_registry(FakePlatform()))
    await rt.start(workers=False, streams=False)
    try:
        app = create_app(rt, workers=False)
        healthy = rt.writer._engine
        rt.writer._engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")  # the store is gone
        refused = await post_push(app, push_body({"id": "u1"}))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["code"] == "intake_unavailable"
        rt.writer._engine = healthy  # the store is back: the platform's retry is kept
        accepted = await post_push(app, push_body({"id": "u1"}))
        assert accepted.status_code == 200
        assert inbox_rows(rt.engine) == 1
    finally:
        await rt.stop()


@pytest.mark.postgres
async def test_scaled_intake_answers_503_while_the_broker_cannot_take_messages(postgres_url, broker_url):
    prefix = f"u{uuid.uuid4().hex[:10]}"
    settings = Settings(database_url=postgres_url, broker_url=broker_url, broker=BrokerSettings(partitions=2, prefix=prefix), shops=SHOPS)
    rt = Runtime(settings, channels=fake_registry(FakePlatform()))
    await rt.start(workers=False, streams=False)
    try:
        app = create_app(rt, workers=False)
        assert (await post_push(app, push_body({"id": "u2"}))).status_code == 200
        assert await rt.transport.lag() == 1
        await rt.transport.stop()  # the broker connection is gone
        refused = await post_push(app, push_body({"id": "u3"}))
        assert refused.status_code == 503 and refused.json()["code"] == "intake_unavailable"
        assert inbox_rows(rt.engine) == 0  # nothing went around the broker into the database
    finally:
        rt.transport = None  # already stopped
        await rt.stop()
        await drop_broker_prefix(broker_url, prefix)
