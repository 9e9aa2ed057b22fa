"""Notifications on a real database (SQLite and PostgreSQL): templates stored and validated, one outbox row
per recipient in the caller's transaction, rate limits, replays, the order's event log, and the relay
delivering through the real senders to the simulator's receivers, a webhook receiver and an SMTP server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
import uvicorn
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet
from fastapi import FastAPI, Request

from auth_helpers import secured_app, user_headers
from orderhub.adapters.db import migrate
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.tables import notification_templates, order_events, orders, outbox
from orderhub.adapters.notify.dingtalk import DingTalkRobot, DingTalkRobotSender
from orderhub.adapters.notify.mail import SmtpSender, SmtpSettings
from orderhub.adapters.notify.sms import SmsGatewaySender
from orderhub.adapters.notify.templates import DEFAULT_TEMPLATES
from orderhub.adapters.notify.wecom import WeComRobotSender
from orderhub.adapters.pii_crypto import PiiVault
from orderhub.adapters.webhooks import WebhookSender, verify
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.entrypoints.api.notification_routes import build_notification_router
from orderhub.services import notifications
from orderhub.services.notifications import Notifier, RateLimit, RateLimits
from orderhub.services.outbox import Relay
from orderhub.simulator import notify as sim_notify

NOW = datetime(2025, 3, 18, 6, 0, tzinfo=UTC)
PHONE = "13800001234"
ROUTES = {"buyer": ["sms"], "cs": ["wecom:cs-group", "email:cs@shop.example"], "warehouse": ["dingtalk:wh-east", "wecom:cs-group"],
          "integrations": ["webhook:erp"]}
SHOPS = {("douyin", "88880001"): "测试旗舰店"}


@pytest.fixture
def vault() -> PiiVault:
    return PiiVault([Fernet.generate_key().decode()], "test-hash-key-0123456789")


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    notifications.seed_templates(engine)
    yield engine
    engine.dispose()


def add_order(engine: sa.Engine, vault: PiiVault, original_id: str, *, phone: str | None = PHONE, status: str = "shipped") -> str:
    oid = f"{original_id:0>32}"[-32:]
    values: dict[str, Any] = {
        "id": oid, "channel": "douyin", "shop_id": "88880001", "original_id": original_id, "status": status, "platform_status": {},
        "created_at": NOW, "paid_at": NOW, "updated_at": NOW, "currency": "CNY", "goods": 13470, "discount": 0, "shipping": 0,
        "paid": 13470, "buyer": {"name": "张*", "phone": "138****1234"},
        "address": {"province": "浙江省", "city": "杭州市", "district": "西湖区", "detail": "***"},
        "holds": [], "tags": [], "warehouse": "WH-EAST", "carrier": "SF",
        "shipment": {"carrier": "SF", "waybill_no": f"SF{original_id[-13:]:0>13}", "logistics_status": "in_transit"},
        "pii": {"phone": "$$cipher$$"}, "content_hash": "0" * 32, "version": 1, "raw": "{}", "ingested_at": NOW, "modified_at": NOW,
    }
    if phone:
        values.update(pii_sealed=vault.seal({"phone": phone}), phone_hash=vault.phone_hash(phone), phone_last4_hash=vault.last4_hash(phone),
                      pii_state="done")
    with engine.begin() as conn:
        conn.execute(orders.insert().values(**values))
    return oid


def notify(engine: sa.Engine, notifier: Notifier, oid: str, event: str, **kw: Any) -> list[int]:
    kw.setdefault("now", NOW)
    with engine.begin() as conn:
        return notifier.notify(conn, oid, event, **kw)


def events_of(engine: sa.Engine, oid: str) -> list[dict[str, Any]]:
    with engine.connect().execution_options(readonly=True) as conn:
        rows = conn.execute(sa.select(order_events).where(order_events.c.order_id == oid).order_by(order_events.c.id)).mappings()
        return [{str(k): v for k, v in r.items()} for r in rows]


def outbox_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect().execution_options(readonly=True) as conn:
        return [{str(k): v for k, v in r.items()} for r in conn.execute(sa.select(outbox).order_by(outbox.c.id)).mappings()]


# -- the template store -------------------------------------------------------------------------------


def test_default_templates_are_seeded_once_and_an_edited_one_is_never_put_back(engine):
    assert {(t["name"], t["channel"]) for t in notifications.list_templates(engine)} == {(d.name, d.channel) for d in DEFAULT_TEMPLATES}
    saved = notifications.save_template(engine, "shipped", "sms", None, "【{{ shop }}】订单{{ order_no }}已发货：{{ carrier_name }}{{ waybill_no }}",
                                        author="ops-lead")
    assert saved["version"] == 2 and saved["updated_by"] == "ops-lead"
    assert notifications.seed_templates(engine) == 0
    [shipped] = [t for t in notifications.list_templates(engine) if (t["name"], t["channel"]) == ("shipped", "sms")]
    assert shipped["body"].startswith("【{{ shop }}】订单") and shipped["version"] == 2


def test_a_misspelt_variable_is_refused_at_save_and_the_stored_template_is_unchanged(engine):
    with pytest.raises(OrderHubError) as caught:
        notifications.save_template(engine, "shipped", "sms", None, "订单{{ order_no }}已发货，运单号{{ waybill }}", author="ops-lead")
    assert caught.value.code == ErrorCode.TEMPLATE_INVALID and "'waybill' is undefined" in caught.value.message
    [shipped] = [t for t in notifications.list_templates(engine) if (t["name"], t["channel"]) == ("shipped", "sms")]
    assert shipped["version"] == 1


@pytest.fixture
async def api(engine) -> AsyncIterator[httpx.AsyncClient]:
    runtime = SimpleNamespace(engine=engine, shops=SimpleNamespace(all=lambda: [SimpleNamespace(channel="douyin", shop_id="88880001", name="测试旗舰店")]))
    app = secured_app(engine, build_notification_router(runtime))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orderhub", headers=user_headers(engine, "ops", "ops")) as client:
        yield client


async def test_the_api_lists_saves_refuses_with_422_and_previews_against_a_real_order(engine, vault, api):
    oid = add_order(engine, vault, "4951234567890123456")
    listed = (await api.get("/api/v1/notification-templates")).json()["items"]
    assert len(listed) == len(DEFAULT_TEMPLATES) and listed[0]["updated_at"].endswith("+08:00")
    bad = await api.put("/api/v1/notification-templates/stalled/wecom", json={"body": "{{ stall_lable }}", "author": "ops"})
    assert bad.status_code == 422 and bad.json()["code"] == "template_invalid" and "'stall_lable' is undefined" in bad.json()["message"]
    good = await api.put("/api/v1/notification-templates/stalled/wecom",
                         json={"body": "滞留：{{ stall_label }} {{ order_no }} {{ buyer_phone }}", "author": "ops"})
    assert good.status_code == 200 and good.json()["version"] == 2
    preview = await api.post("/api/v1/notification-templates/stalled/wecom/preview",
                             json={"order_id": oid, "context": {"stall": "no_update_48h"}})
    assert preview.json()["body"] == "滞留：超过48小时无物流更新 4951234567890123456 138****1234"
    shipped = (await api.post("/api/v1/notification-templates/shipped/sms/preview", json={"order_id": oid})).json()
    assert shipped["body"].startswith("【测试旗舰店】亲，您在抖店购买的订单4951234567890123456已发货，顺丰速运运单号SF")
    assert (await api.post("/api/v1/notification-templates/shipped/sms/preview", json={"order_id": "nope"})).status_code == 404


# -- notify: outbox rows and the event log -----------------------------------------------------------------


def test_a_shipped_order_notifies_the_buyer_and_the_integration_once_and_the_order_says_so(engine, vault):
    oid = add_order(engine, vault, "4951234567890123456")
    notifier = Notifier(engine, recipients=ROUTES, shop_names=SHOPS)
    ids = notify(engine, notifier, oid, "shipped", audience=("buyer", "integrations"))
    rows = outbox_rows(engine)
    assert [r["id"] for r in rows] == ids and [r["kind"] for r in rows] == ["notify.sms", "webhook"]
    sms, hook = rows
    assert sms["recipient"] == vault.phone_hash(PHONE) and sms["order_id"] == oid
    assert sms["payload"]["body"].startswith("【测试旗舰店】亲，您在抖店购买的订单4951234567890123456已发货")
    assert vault.open(sms["payload"]["to_sealed"]) == {"phone": PHONE}
    assert hook["endpoint"] == "erp" and hook["payload"]["event"] == "shipped" and hook["payload"]["order_no"] == "4951234567890123456"
    notified = [e for e in events_of(engine, oid) if e["kind"] == "notified"]
    assert [e["data"]["channel"] for e in notified] == ["sms", "webhook"]
    assert notified[0]["data"] == {"channel": "sms", "template": "shipped", "version": 1, "recipient": "138****1234", "outbox_id": ids[0]}
    assert PHONE not in orjson.dumps([r["payload"] for r in rows]).decode() + orjson.dumps(events_of(engine, oid)).decode()

    # the same event again (a replayed carrier push, a restarted worker): nothing more is sent or logged
    assert notify(engine, notifier, oid, "shipped", audience=("buyer", "integrations")) == []
    assert len(outbox_rows(engine)) == 2 and len(events_of(engine, oid)) == 2


def test_the_notifier_renders_a_stored_template_for_an_orders_row(engine, vault):
    oid = add_order(engine, vault, "4951234567890123456")
    notifier = Notifier(engine, recipients=ROUTES, shop_names=SHOPS)
    with engine.connect() as conn:
        row = conn.execute(sa.select(orders).where(orders.c.id == oid)).mappings().one()
        subject, body = notifier.render(conn, "intercept_result", "email", row, {"outcome": "too_late", "instruction": "cancel"})
    assert subject == "【拦截结果】订单4951234567890123456：拦截未成功：包裹已打包或已发出"
    assert "买家：张* 138****1234" in body and "已转快递拦截/退货处理" in body


def test_a_new_discriminator_in_the_context_is_a_new_notification(engine, vault):
    oid = add_order(engine, vault, "4951234567890123456")
    notifier = Notifier(engine, recipients=ROUTES)
    first = notify(engine, notifier, oid, "stalled", context={"stall": "no_first_scan", "key": "ticket-1"}, audience=("cs",))
    again = notify(engine, notifier, oid, "stalled", context={"stall": "no_first_scan", "key": "ticket-1"}, audience=("cs",))
    later = notify(engine, notifier, oid, "stalled", context={"stall": "no_update_48h", "key": "ticket-2"}, audience=("cs",),
                   now=NOW + timedelta(hours=2))
    assert len(first) == 2 and again == [] and len(later) == 2  # wecom + email each time
    assert [r["kind"] for r in outbox_rows(engine)] == ["notify.wecom", "notify.email"] * 2


def test_a_robot_named_for_two_roles_is_told_once(engine, vault):
    oid = add_order(engine, vault, "4951234567890123456")
    ids = notify(engine, Notifier(engine, recipients=ROUTES), oid, "freeze_alert", context={"instruction": "cancel", "key": "f1"},
                 audience=("warehouse", "cs"))
    assert [(r["kind"], r["endpoint"], r["priority"]) for r in outbox_rows(engine)] == [
        ("notify.dingtalk", "dingtalk:wh-east", 1), ("notify.wecom", "wecom:cs-group", 1)]
    assert len(ids) == 2


def test_the_rate_limit_per_recipient_holds_the_next_notification_and_the_order_says_so(engine, vault):
    orders_ = [add_order(engine, vault, f"49512345678901234{n:02d}") for n in range(3)]  # one buyer, three orders
    notifier = Notifier(engine, recipients=ROUTES, limits=RateLimits(default=RateLimit(2), templates={"delivered": None}))
    sent = [notify(engine, notifier, oid, "shipped", now=NOW + timedelta(minutes=i)) for i, oid in enumerate(orders_)]
    assert [len(s) for s in sent] == [1, 1, 0]
    [limited] = events_of(engine, orders_[2])
    assert limited["kind"] == "notify_limited" and limited["actor"] == "notifier"
    assert limited["data"] == {"channel": "sms", "template": "shipped", "version": 1, "recipient": "138****1234", "limit": 2, "window_s": 3600}
    assert "超过频率限制" in limited["reason"]
    assert len(notify(engine, notifier, orders_[2], "delivered", now=NOW + timedelta(minutes=5))) == 1  # that template is not limited
    assert len(notify(engine, notifier, orders_[2], "shipped", context={"key": "later"}, now=NOW + timedelta(hours=1, minutes=3))) == 1


def test_a_buyer_without_a_decrypted_phone_gets_no_sms_and_the_order_says_why(engine, vault):
    oid = add_order(engine, vault, "4951234567890123456", phone=None)
    assert notify(engine, Notifier(engine, recipients=ROUTES), oid, "shipped") == []
    [skipped] = events_of(engine, oid)
    assert skipped["kind"] == "notify_skipped" and "手机号" in skipped["reason"] and outbox_rows(engine) == []


def test_a_template_that_no_longer_renders_or_is_switched_off_never_fails_the_callers_change(engine, vault):
    oid = add_order(engine, vault, "4951234567890123456")
    with engine.begin() as conn:  # as if stored before a variable was renamed
        conn.execute(sa.update(notification_templates).where(notification_templates.c.name == "stalled",
                                                              notification_templates.c.channel == "wecom").values(body="{{ gone }}"))
    notifications.save_template(engine, "stalled", "email", "x", "{{ order_no }}", author="ops", enabled=False)
    with engine.begin() as conn:
        conn.execute(sa.update(orders).where(orders.c.id == oid).values(seller_remark="the caller's own change"))
        assert Notifier(engine, recipients=ROUTES).notify(conn, oid, "stalled", context={"stall": "no_first_scan"}, audience=("cs",), now=NOW) == []
    [failed] = events_of(engine, oid)
    assert failed["kind"] == "notify_failed" and "'gone' is undefined" in failed["data"]["error"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(orders.c.seller_remark).where(orders.c.id == oid)).scalar_one() == "the caller's own change"


# -- through the relay to the receivers ------------------------------------------------------------------------


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Inbox:
    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
async def receivers() -> AsyncIterator[SimpleNamespace]:
    state = sim_notify.NotifyState()
    hooks: list[tuple[dict[str, str], bytes]] = []
    app = FastAPI()
    app.include_router(sim_notify.make_router(state), prefix="/notify")

    @app.post("/erp/hook")
    async def erp_hook(request: Request) -> dict[str, str]:
        hooks.append((dict(request.headers), await request.body()))
        return {"ok": "yes"}

    server = _QuietServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    inbox = _Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        yield SimpleNamespace(state=state, hooks=hooks, mails=inbox.envelopes, base=base, smtp_port=smtp.port)
    finally:
        smtp.stop()
        server.should_exit = True
        await task


async def test_the_relay_delivers_every_channel_through_the_real_senders(engine, vault, receivers):
    oid = add_order(engine, vault, "4951234567890123456")
    notifier = Notifier(engine, recipients=ROUTES, shop_names=SHOPS)
    await asyncio.to_thread(notify, engine, notifier, oid, "shipped", audience=("buyer", "integrations"))
    await asyncio.to_thread(notify, engine, notifier, oid, "stalled", context={"stall": "no_first_scan", "key": "t1"}, audience=("cs",))
    await asyncio.to_thread(notify, engine, notifier, oid, "freeze_alert", context={"instruction": "cancel", "key": "f1"}, audience=("warehouse",))
    ding_token, ding_secret = next(iter(sim_notify.DEMO_DINGTALK_ROBOTS.items()))
    async with httpx.AsyncClient(timeout=5) as http:
        senders = {
            "notify.sms": SmsGatewaySender(f"{receivers.base}/notify/sms/send", sim_notify.DEMO_SMS_APP["app_key"],
                                           sim_notify.DEMO_SMS_APP["app_secret"], vault, http),
            "notify.wecom": WeComRobotSender(
                {"cs-group": f"{receivers.base}/notify/wecom/cgi-bin/webhook/send?key={sim_notify.DEMO_WECOM_KEYS[0]}"}, http),
            "notify.dingtalk": DingTalkRobotSender(
                {"wh-east": DingTalkRobot(f"{receivers.base}/notify/dingtalk/robot/send?access_token={ding_token}", ding_secret)}, http),
            "notify.email": SmtpSender(SmtpSettings("127.0.0.1", receivers.smtp_port, sender="OrderHub <noreply@shop.example>")),
            "webhook": WebhookSender(http, {"erp": (f"{receivers.base}/erp/hook", "erp-secret")}),
        }
        result = await Relay(engine, senders, base_delay_s=0.01).run_once()
    assert result.sent == 6 and result.dead == result.retrying == 0
    assert {r["status"] for r in outbox_rows(engine)} == {"sent"}

    [sms] = receivers.state.received("sms")
    assert sms["to"] == PHONE and "顺丰速运运单号SF" in sms["content"]
    wecom = receivers.state.received("wecom")
    assert sorted(w["content"].splitlines()[0] for w in wecom) == ["### <font color=\"warning\">冻结指令：取消订单</font>", "### 物流异常：发货后长时间未揽收"]
    [ding] = receivers.state.received("dingtalk")
    assert ding["title"] == "冻结指令：4951234567890123456" and "WH-EAST" in ding["content"]
    [mail] = receivers.mails
    parsed = message_from_bytes(mail.original_content, policy=default_policy)
    assert parsed["Subject"] == "【物流异常】订单4951234567890123456：发货后长时间未揽收" and "138****1234" in parsed.get_content()
    [(headers, body)] = receivers.hooks
    assert verify("erp-secret", headers["x-orderhub-timestamp"], body, headers["x-orderhub-signature"])
    assert orjson.loads(body)["event"] == "shipped"
    assert [e["kind"] for e in events_of(engine, oid)] == ["notified"] * 6


async def test_cs_reads_what_was_sent_about_an_order_without_outbox_access_and_without_the_phone(engine, vault, api):
    oid = add_order(engine, vault, "4951234567890123456")
    notify(engine, Notifier(engine, recipients=ROUTES, shop_names=SHOPS), oid, "shipped", audience=("buyer", "integrations"))
    cs = user_headers(engine, "cs-zhou", "cs")
    response = await api.get(f"/api/v1/orders/{oid}/notifications", headers=cs)
    assert response.status_code == 200, response.text
    [sms] = response.json()["items"]  # the integration's webhook is not a notification to a person
    assert (sms["channel"], sms["template"], sms["status"]) == ("sms", "shipped", "pending")
    assert sms["body"].startswith("【测试旗舰店】亲，您在抖店购买的订单4951234567890123456已发货") and sms["created_at"].endswith("+08:00")
    assert PHONE not in response.text and "sealed" not in response.text
