"""`orderhub serve`: the API and workers under uvicorn; with --demo also the simulator and demo data."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from datetime import UTC, datetime

import click
import sqlalchemy as sa
import uvicorn

from orderhub.bootstrap import Runtime
from orderhub.config import (
    CainiaoSettings, CarrierSettings, DingTalkRobotSettings, Kuaidi100Settings, NotificationSettings, Settings, SfSettings,
    ShopSettings, SmsGatewaySettings, WmsEndpointSettings, WmsSettings,
)
from orderhub.entrypoints.api.app import create_app
from orderhub.demo.pos import pos_csv
from orderhub.domain.access import ROLE_LABELS_ZH, Actor, Role
from orderhub.services import catalogue, imports, users

log = logging.getLogger(__name__)

DEMO_POS_MAPPING = {
    "channel": "pos",
    "columns": {
        "order_no": "单号", "created_at": "下单时间", "paid_at": "付款时间", "status": "状态", "sku": "商品编码",
        "title": "商品名称", "qty": "数量", "unit_price": "单价", "discount": "优惠", "shipping": "运费", "paid": "实收",
        "buyer_id": "会员号", "receiver_name": "收货人", "receiver_phone": "手机", "province": "省", "city": "市",
        "district": "区", "address": "地址", "buyer_message": "备注",
    },
    "status_values": {"已付款": "paid", "已完成": "completed", "已取消": "cancelled", "已发货": "shipped"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_settings(settings: Settings, simulator_base: str) -> Settings:
    from orderhub.demo.shops import DEMO_SHOPS

    configured = {(s.channel, s.shop_id) for s in settings.shops}
    shops = list(settings.shops)
    for shop in DEMO_SHOPS:
        if (shop["channel"], shop["shop_id"]) not in configured:
            shops.append(ShopSettings(**shop, api_base_url=f"{simulator_base}/{shop['channel']}"))
    from orderhub.simulator.wms import DEMO_WMS_APP

    # the simulator plays the WMS too; the demo syncs stock every minute so the console shows it move
    stock_sync = settings.stock_sync.model_copy(update={
        "interval_s": min(settings.stock_sync.interval_s, 60.0),
        "wms": settings.stock_sync.wms or WmsSettings(base_url=f"{simulator_base}/wms", **DEMO_WMS_APP),
    })
    # the simulator also receives the notifications: SMS gateway, 企业微信 and 钉钉 robots
    notifications = settings.notifications
    if not (notifications.sms or notifications.wecom_robots or notifications.dingtalk_robots or notifications.email):
        notifications = demo_notifications(simulator_base)
    carriers = settings.carriers
    if not (carriers.kuaidi100 or carriers.sf):  # the simulator plays Kuaidi100 and SF: pushes and the query APIs
        from orderhub.simulator.carriers import DEMO_KUAIDI100, DEMO_SF

        # each shipped parcel is subscribed at the simulated Kuaidi100, which then pushes to this callback
        hub = f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '::') else settings.host}:{settings.port}"
        carriers = CarrierSettings(kuaidi100=Kuaidi100Settings(**DEMO_KUAIDI100, base_url=f"{simulator_base}/kuaidi100",
                                                               callback_url=f"{hub}/api/v1/webhooks/carriers/kuaidi100"),
                                   sf=SfSettings(**DEMO_SF, base_url=f"{simulator_base}/sf"))
    # the simulator's warehouse floor takes the packages (packing ~20 s) and its 菜鸟 prints the waybills
    fulfillment = settings.fulfillment
    if not fulfillment.wms:
        from orderhub.simulator.cainiao import DEMO_CAINIAO_APP

        fulfillment = fulfillment.model_copy(update={
            "wms": [WmsEndpointSettings(name=DEMO_WMS_NAME, base_url=f"{simulator_base}/wms", **DEMO_WMS_APP)],
            "cainiao": fulfillment.cainiao or CainiaoSettings(base_url=f"{simulator_base}/cainiao", **DEMO_CAINIAO_APP, sender=DEMO_SENDER),
        })
    # the demo's JD pull runs often so the console visibly fills up
    return settings.model_copy(update={
        "shops": shops, "pull_interval_s": min(settings.pull_interval_s, 5.0), "stock_sync": stock_sync, "notifications": notifications,
        "carriers": carriers, "fulfillment": fulfillment,
    })


DEMO_WMS_NAME = "main"
DEMO_SENDER = {"name": "华东仓", "mobile": "13800000000",
               "address": {"province": "上海", "city": "上海市", "district": "青浦区", "detail": "华新镇演示路 1 号"}}


def demo_notifications(simulator_base: str) -> NotificationSettings:
    from orderhub.simulator.notify import DEMO_SMS_APP

    robot = f"{simulator_base}/notify"
    return NotificationSettings(
        recipients={"buyer": ["sms"], "cs": ["wecom:cs-group"], "warehouse": ["dingtalk:wh-east", "wecom:warehouse"]},
        sms=SmsGatewaySettings(url=f"{robot}/sms/send", **DEMO_SMS_APP),
        wecom_robots={
            "cs-group": f"{robot}/wecom/cgi-bin/webhook/send?key=fake-wecom-key-cs-group",
            "warehouse": f"{robot}/wecom/cgi-bin/webhook/send?key=fake-wecom-key-warehouse",
        },
        dingtalk_robots={"wh-east": DingTalkRobotSettings(
            url=f"{robot}/dingtalk/robot/send?access_token=fake-dingtalk-token-wh-east", secret="SECfake-dingtalk-secret-wh-east-0001")},
    )


def seed_demo_catalogue(engine: sa.Engine) -> None:
    """Warehouses, SKUs and gifts, every SKU's listing on the seven channels, opening stock."""
    from orderhub.demo.catalogue import WAREHOUSES, skus
    from orderhub.demo.stock import GIFTS, opening_stock, sku_mappings

    sku_rows = [{"code": s.code, "title": s.title, "category": s.category, "price": s.price, "cost": s.cost, "weight_g": s.weight} for s in skus()]
    catalogue.upsert_catalogue(engine, WAREHOUSES, sku_rows + GIFTS)
    catalogue.upsert_sku_mappings(engine, sku_mappings())
    catalogue.seed_stock(engine, opening_stock(), actor="demo", reason="演示期初库存 demo opening stock")


# One login per role, only in demo mode; README.md "Demo users" lists them.
DEMO_USERS: tuple[tuple[str, str, Role, str], ...] = (
    ("admin", "admin123", Role.ADMIN, "演示管理员"),
    ("ops", "ops12345", Role.OPS, "演示运营"),
    ("cs", "cs123456", Role.CS, "演示客服"),
    ("warehouse", "warehouse123", Role.WAREHOUSE, "演示仓管"),
    ("finance", "finance123", Role.FINANCE, "演示财务"),
    ("viewer", "viewer123", Role.VIEWER, "演示只读"),
)


def seed_demo_users(engine: sa.Engine) -> None:
    """The demo's users, created once: a restart keeps passwords someone changed."""
    existing = {u["username"] for u in users.list_users(engine)}
    for username, password, role, name in DEMO_USERS:
        if username not in existing:
            users.create_user(engine, Actor("demo"), username=username, password=password, role=role.value, display_name=name)


def seed_demo(runtime: Runtime) -> None:
    seed_demo_users(runtime.engine)
    seed_demo_catalogue(runtime.engine)
    if "pos-default" not in imports.mapping_names(runtime.engine):
        imports.save_mapping(runtime.engine, "pos-default", DEMO_POS_MAPPING)
    # the store's export of today, so the demo shows file import and store buyers recognised
    # as the platforms' customers (a fresh seed each start: new order numbers)
    data = pos_csv(30, datetime.now(UTC), seed=time.time_ns() % 1000)
    imports.import_file(runtime.engine, data, "demo-pos.csv", "pos-default", "pos", "store-01", runtime.pii)


async def run_server(settings: Settings, *, demo: bool = False, demo_rate: float = 2.0, workers: bool | None = None) -> None:
    """Embedded mode (no broker URL): API, console and workers in this one process. Scaled mode: an
    API node only, unless `workers` asks for them too (`orderhub worker` runs the processing)."""
    if workers is None:
        workers = not settings.broker_url
    simulator = None
    if demo:
        from orderhub.simulator.app import Simulator, serve_in_background

        sim_port = free_port()
        settings = demo_settings(settings, f"http://127.0.0.1:{sim_port}")
    runtime = Runtime(settings)
    if demo:
        seed_demo(runtime)
    app = create_app(runtime, workers=workers)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    url = f"http://{settings.host}:{settings.port}"
    if demo:
        # a fresh seed each start: the simulator derives order numbers from it, and a restarted
        # demo on the same data directory must not replay different orders under old numbers
        simulator = await serve_in_background("127.0.0.1", sim_port, Simulator(seed=time.time_ns()), url, demo_rate)
        # the simulated WMS reports picking, packing and shipping to OrderHub's callback
        simulator.sim.wms.flow.configure({"callback_url": f"{url}/api/v1/webhooks/wms/{DEMO_WMS_NAME}"})
    click.echo(f"OrderHub 订单中枢 is running at {url}  (API docs: {url}/api/v1/docs)")
    click.echo(f"database: {runtime.engine.url.render_as_string(hide_password=True)}")
    if runtime.transport is not None:
        click.echo(f"broker: {runtime.transport.render_url()} ({runtime.settings.broker.partitions} partitions); "
                   f"{'workers in this process' if workers else 'API node: run `orderhub worker` for the processing'}")
    if demo:
        click.echo(f"demo: platform simulator on http://127.0.0.1:{sim_port}, {demo_rate} orders/s")
        click.echo("demo users (username / password):")
        for username, password, role, _name in DEMO_USERS:
            click.echo(f"  {username:<10} {password:<13} {role.value} {ROLE_LABELS_ZH[role]}")
    try:
        await server.serve()
    finally:
        if simulator is not None:
            await simulator.stop()


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """`orderhub worker`: processing only (broker partitions, inbox sweep, audit, outbox relay and,
    on the one worker holding the lease, the singleton duties). Stateless: start and stop any number."""
    import signal

    runtime = Runtime(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start(workers=True, streams=False)
    mode = f"broker {runtime.transport.render_url()}" if runtime.transport else "database inbox (embedded mode)"
    click.echo(f"OrderHub worker {runtime.broker_worker.id if runtime.broker_worker else ''} consuming {mode}")
    try:
        await stop.wait()
    finally:
        await runtime.stop()
