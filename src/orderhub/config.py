"""Configuration: a YAML file (optional) overridden by ORDERHUB_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from orderhub.adapters.channels.base import ShopConfig

# The platforms' real open-API addresses; the simulator and tests override them per shop.
DEFAULT_API_BASE_URL: dict[str, str] = {
    "douyin": "https://openapi-fxg.jinritemai.com",
    "youzan": "https://open.youzanyun.com",
    "jd": "https://api.jd.com",
    "taobao": "https://eco.taobao.com",  # TOP: {base}/router/rest; TMC: ws://mc.api.taobao.com/
    "pdd": "https://gw-api.pinduoduo.com",  # {base}/api/router; PMC: wss://message-api.pinduoduo.com
    "wechat_channels": "https://api.weixin.qq.com",
    "kuaishou": "https://openapi.kwaixiaodian.com",
}


# Message services of the stream channels, used when a shop names no `tmc_url` / `pmc_url` and
# talks to the real platform (with an api_base_url of their own, e.g. the simulator's, the
# adapters derive the stream address from it).
DEFAULT_STREAM_URL: dict[str, tuple[str, str]] = {
    "taobao": ("tmc_url", "ws://mc.api.taobao.com/"),
    "pdd": ("pmc_url", "wss://message-api.pinduoduo.com"),
}


class ShopSettings(BaseModel):
    channel: str
    shop_id: str
    name: str
    app_key: str = ""
    app_secret: str = ""
    api_base_url: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def to_shop(self) -> ShopConfig:
        base = self.api_base_url or DEFAULT_API_BASE_URL.get(self.channel, "")
        extra = dict(self.extra)
        if not self.api_base_url and self.channel in DEFAULT_STREAM_URL:
            key, url = DEFAULT_STREAM_URL[self.channel]
            extra.setdefault(key, url)
        return ShopConfig(self.channel, str(self.shop_id), self.name, self.app_key, self.app_secret, base.rstrip("/"), extra)


class WmsSettings(BaseModel):
    """The WMS whose stock counts OrderHub imports (docs/wms.md)."""

    base_url: str
    app_key: str
    app_secret: str
    warehouses: list[str] = Field(default_factory=list)


class WmsEndpointSettings(WmsSettings):
    """A WMS OrderHub sends packages and freeze instructions to; its callbacks come to
    /api/v1/webhooks/wms/{name} (docs/fulfillment.md)."""

    name: str


class CainiaoSettings(BaseModel):
    """菜鸟 electronic waybills (cainiao.waybill.ii.get through TOP), asked for when the WMS packs."""

    base_url: str = "https://eco.taobao.com"
    app_key: str
    app_secret: str
    session: str
    sender: dict[str, Any] = Field(default_factory=dict)  # {name, mobile, address{province, city, district, detail}}
    user_id: int | None = None


class FulfillmentSettings(BaseModel):
    wms: list[WmsEndpointSettings] = Field(default_factory=list)  # none: orders stay ready, nothing goes to a warehouse
    cainiao: CainiaoSettings | None = None
    default_carrier: str = "ZTO"  # when the audit's carrier rules chose none
    reconcile_interval_s: float = 15.0  # packages whose send or answer got lost are looked at again
    # the label gate: a waybill (the WMS packs right after) waits at most this long for platform
    # messages already received to be processed, so a cancel among them still stops the box
    label_wait_s: float = 5.0


class StockSyncSettings(BaseModel):
    interval_s: float = 600.0  # WMS import, then sellable stock pushed to every channel
    buffers: dict[str, int] = Field(default_factory=dict)  # channel -> units held back from its listings
    wms: WmsSettings | None = None


class WebhookTarget(BaseModel):
    """An integration that receives OrderHub's signed outgoing webhooks (docs/outbox.md)."""

    url: str
    secret: str


class OutboxSettings(BaseModel):
    batch_size: int = 100
    lease_s: float = 60.0  # a relay that crashed mid-send: its messages are sent again after this
    max_attempts: int = 10  # then the message is dead, its error visible, retried by hand
    base_delay_s: float = 2.0
    max_delay_s: float = 600.0
    breaker_fail_max: int = 5  # failures of one endpoint before its circuit opens
    breaker_reset_s: float = 30.0


class BrokerSettings(BaseModel):
    """Scaled mode (docs/scaling.md): set `broker_url` (ORDERHUB_BROKER_URL) and API nodes publish to
    the broker instead of writing the database inbox; `orderhub worker` processes consume it."""

    partitions: int = 16  # one order's messages always land in one partition, consumed by one worker
    batch_size: int = 500
    lease_s: float = 15.0  # a worker that stops renewing loses its partitions after this
    redeliver_s: float = 30.0  # an unacked message (a crashed worker's) is delivered again after this
    max_deliveries: int = 8  # a message refused this often while the database answers is dead-lettered
    prefix: str = "orderhub"  # stream / subject / topic names


class DegradeSettings(BaseModel):
    """Backpressure: past `lag_threshold` unprocessed messages the non-core switches turn on by
    themselves, and off again below half of it (switches ops set by hand stay as they are)."""

    lag_threshold: int = 50_000
    check_interval_s: float = 5.0


class RetentionSettings(BaseModel):
    """How long finished operational rows stay (services/retention.py); 0 keeps them for ever."""

    inbox_days: float = Field(30.0, ge=0)  # raw platform messages, once processed
    outbox_days: float = Field(30.0, ge=0)  # sent WMS / carrier / platform / webhook messages
    notifications_days: float = Field(365.0, ge=0)  # sent notifications: the order page's history of what the buyer was told
    jobs_days: float = Field(90.0, ge=0)  # finished back-test and import jobs
    interval_s: float = Field(3600.0, gt=0)
    chunk: int = Field(5000, ge=1)  # rows per delete statement (one short transaction each)


class SmsGatewaySettings(BaseModel):
    url: str
    app_key: str
    app_secret: str


class DingTalkRobotSettings(BaseModel):
    url: str
    secret: str | None = None  # the robot's 加签 secret


class SmtpServerSettings(BaseModel):
    host: str
    port: int = 25
    sender: str = "OrderHub <orderhub@localhost>"
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool | None = None
    timeout_s: float = 20.0


class NotificationSettings(BaseModel):
    """Who hears about what, and through which channel (docs/notifications.md)."""

    recipients: dict[str, list[str]] = Field(default_factory=dict)  # audience -> routes, e.g. {"buyer": ["sms"], "cs": ["wecom:cs-group"]}
    limits: dict[str, Any] = Field(default_factory=dict)  # per-recipient rate limits
    sms: SmsGatewaySettings | None = None
    wecom_robots: dict[str, str] = Field(default_factory=dict)  # name -> webhook URL
    dingtalk_robots: dict[str, DingTalkRobotSettings] = Field(default_factory=dict)
    email: SmtpServerSettings | None = None


class Kuaidi100Settings(BaseModel):
    customer: str
    key: str
    salt: str  # signs the subscription pushes: sign = UPPER(md5(param + salt))
    base_url: str = "https://poll.kuaidi100.com"
    # OrderHub's public URL of /api/v1/webhooks/carriers/kuaidi100: each shipped parcel is subscribed
    # with it (carrier.subscribe in the outbox); unset: no subscriptions, tracking relies on polling
    callback_url: str | None = None


class SfSettings(BaseModel):
    checkword: str
    partner_id: str = ""
    base_url: str = "https://bspgw.sf-express.com"
    monthly_card: str = ""  # 月结卡号: what an interception (EXP_RECE_WANTED_INTERCEPT) charges its extra leg to


class CarrierSettings(BaseModel):
    kuaidi100: Kuaidi100Settings | None = None
    sf: SfSettings | None = None


class TrackingSettings(BaseModel):
    poll_after_h: float = 6.0  # a parcel with no push for this long is polled
    stall_check_interval_s: float = 300.0


class AuthSettings(BaseModel):
    """Logins, API keys and the public tracking endpoint (docs/security.md)."""

    token_ttl_h: float = 12.0  # a login lasts this long (one working day), then the console asks again
    login_max_failures: int = 10  # failed logins of one username from one client address …
    login_window_s: float = 300.0  # … within this window: further attempts get 429 until it passes
    track_per_minute: int = 20  # public tracking requests per client address and minute
    # where those counts live: memory:// (this process) or redis://host:port/db, shared by every API node
    track_limit_storage: str = "memory://"


class Settings(BaseModel):
    data_dir: Path = Path("data")
    database_url: str | None = None
    broker_url: str | None = None  # nats://… | redis://… | kafka://… : scaled mode; unset: embedded (database inbox)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    degrade: DegradeSettings = Field(default_factory=DegradeSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    pii_key: str | None = None
    hash_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    shops: list[ShopSettings] = Field(default_factory=list)
    # processing
    batch_size: int = 500
    max_attempts: int = 8  # fetch retries of one inbox row before its items are quarantined
    inbox_lease_s: float = 120.0  # a worker that died mid-batch: its inbox rows are claimed again after this
    audit: bool = True  # run the audit stage (审单) in this process's workers
    stock_sync: StockSyncSettings = Field(default_factory=StockSyncSettings)
    fulfillment: FulfillmentSettings = Field(default_factory=FulfillmentSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    webhooks: dict[str, WebhookTarget] = Field(default_factory=dict)  # endpoint name -> url + secret
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    carriers: CarrierSettings = Field(default_factory=CarrierSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    # incremental pull
    pull_interval_s: float = 10.0
    pull_overlap_s: float = 120.0  # re-read this much of the previous window: platforms index late
    pull_lookback_s: float = 86_400.0  # first sync of a new shop starts this far back
    # the dashboard's on-time ship rate: shipped within this many hours of payment (platforms ask 48 h)
    ship_sla_hours: float = 48.0

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'orderhub.db').as_posix()}"

    def shop_configs(self) -> list[ShopConfig]:
        return [shop.to_shop() for shop in self.shops]


class ConfigError(Exception):
    pass


_ENV = {
    "ORDERHUB_DATA_DIR": "data_dir",
    "ORDERHUB_DATABASE_URL": "database_url",
    "ORDERHUB_BROKER_URL": "broker_url",
    "ORDERHUB_PII_KEY": "pii_key",
    "ORDERHUB_HASH_KEY": "hash_key",
    "ORDERHUB_HOST": "host",
    "ORDERHUB_PORT": "port",
}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file} must be a mapping")
        data.update(loaded)
    for env_name, key in _ENV.items():
        if os.environ.get(env_name):
            data[key] = os.environ[env_name]
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc


def database_url_from_env() -> str:
    return load_settings().resolved_database_url
