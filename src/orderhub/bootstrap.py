"""Wires settings, database, adapters and services into one running OrderHub."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from orderhub.adapters.channels.registry import ChannelRegistry, ShopRegistry
from orderhub.adapters.channels.ship_writeback import ShipSender
from orderhub.adapters.db import migrate, wakeups
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.inbox import InboxWriter, backlog
from orderhub.adapters.broker.transport import Transport, transport_for
from orderhub.adapters.broker.writer import BrokerWriter
from orderhub.adapters.pii_crypto import PiiVault
from orderhub.adapters.carriers.kuaidi100 import SUBSCRIBE_KIND, Kuaidi100, Kuaidi100Config, Kuaidi100Subscriber
from orderhub.adapters.carriers.sf import Sf, SfConfig
from orderhub.adapters.notify.dingtalk import DingTalkRobot, DingTalkRobotSender
from orderhub.adapters.notify.mail import SmtpSender, SmtpSettings
from orderhub.adapters.notify.sms import SmsGatewaySender
from orderhub.adapters.notify.wecom import WeComRobotSender
from orderhub.adapters.waybills.cainiao import CainiaoSettings, CainiaoWaybills
from orderhub.adapters.webhooks import WebhookSender
from orderhub.adapters.wms.stock import HttpWmsStock
from orderhub.config import Settings
from orderhub.services import retention
from orderhub.services.audit import Auditor
from orderhub.services.broker_worker import BrokerWorker
from orderhub.services.switches import LagWatcher, Switches
from orderhub.services.buyer_pii import BuyerPii
from orderhub.services.channel_status import ChannelMonitor
from orderhub.services.fulfillment import Fulfillment, WmsConfig
from orderhub.services.intake import Intake
from orderhub.services.interception import FAST_KINDS
from orderhub.services.late_cancels import KIND as INTERCEPT_KIND
from orderhub.services.late_cancels import CarrierInterceptSender, ShipWriteBackGuard
from orderhub.services.notifications import Notifier, RateLimits, seed_templates
from orderhub.services.outbox import Relay
from orderhub.services.processing import Processor
from orderhub.services.pull import Puller
from orderhub.services.rules import RuleBook
from orderhub.services.stock_sync import StockSync
from orderhub.services.tracking import Tracker, default_stall_rules

log = logging.getLogger(__name__)


def rule_book(engine: Any) -> RuleBook:
    """Every versioned rule set: the audit's, and the stall rules of logistics tracking."""
    return RuleBook(engine, extra_sets={"stall": default_stall_rules})


class Runtime:
    """One OrderHub process: the API's services plus in-process workers (embedded mode)."""

    def __init__(self, settings: Settings, *, channels: ChannelRegistry | None = None, run_migrations: bool = True) -> None:
        self.settings = settings
        self.database_url = settings.resolved_database_url
        if run_migrations:
            migrate.upgrade(self.database_url)
        self.engine = create_engine(self.database_url)
        self.shops = ShopRegistry(settings.shop_configs())
        self.channels = channels or ChannelRegistry.default()
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, connect=3.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        self._wake = asyncio.Event()
        self._audit_wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.vault = PiiVault.from_config(settings.pii_key, settings.hash_key, settings.data_dir)
        self.monitor = ChannelMonitor(self.shops)
        self.pii = BuyerPii(self.vault, self.shops, self.channels, self.http)
        # embedded mode keeps raw messages in the database inbox; scaled mode in the broker (docs/scaling.md)
        self.transport: Transport | None = None
        self.writer: InboxWriter | BrokerWriter
        if settings.broker_url:
            b = settings.broker
            self.transport = transport_for(settings.broker_url, b.partitions, prefix=b.prefix, batch_size=b.batch_size, redeliver_s=b.redeliver_s)
            self.writer = BrokerWriter(self.transport, self.channels.parser)
        else:
            self.writer = InboxWriter(self.engine, on_commit=self._notify)
        self.switches = Switches(self.engine)
        self.intake = Intake(self.writer, self.shops, self.channels, self.monitor)
        self.processor = Processor(
            self.engine, self.shops, self.channels, self.http,
            batch_size=settings.batch_size, max_attempts=settings.max_attempts, pii=self.pii, monitor=self.monitor,
            lease=timedelta(seconds=settings.inbox_lease_s),
        )
        self.puller = Puller(
            self.engine, self.channels, self.http,
            overlap_s=settings.pull_overlap_s, lookback_s=settings.pull_lookback_s, monitor=self.monitor,
        )
        self.rules = rule_book(self.engine)
        self.auditor = Auditor(self.engine, self.rules, batch_size=settings.batch_size)
        wms = settings.stock_sync.wms
        source = HttpWmsStock(wms.base_url, wms.app_key, wms.app_secret, wms.warehouses) if wms else None
        # the registry's adapters: stock pushes share their access tokens with intake and pulls
        self.stock_sync = StockSync(self.engine, self.shops, self.http, source, settings.stock_sync.buffers, adapters=self.channels.sources)
        n = settings.notifications
        self.notifier = Notifier(
            self.engine, recipients=n.recipients, limits=RateLimits.from_settings(n.limits),
            shop_names={(s.channel, s.shop_id): s.name for s in self.shops.all()},
        )
        c = settings.carriers
        self.tracker = Tracker(
            self.engine, self.rules, http=self.http, poll_after=timedelta(hours=settings.tracking.poll_after_h),
            kuaidi100=Kuaidi100(Kuaidi100Config(**c.kuaidi100.model_dump())) if c.kuaidi100 else None,
            sf=Sf(SfConfig(**c.sf.model_dump())) if c.sf else None,
            on_stall=self._on_stall,
        )
        self.outbox_wake = asyncio.Event()
        self.fulfillment = self._fulfillment()
        o = settings.outbox
        self.relay = Relay(
            self.engine, self._senders(),
            batch_size=o.batch_size, lease=timedelta(seconds=o.lease_s), max_attempts=o.max_attempts, base_delay_s=o.base_delay_s,
            max_delay_s=o.max_delay_s, breaker_fail_max=o.breaker_fail_max, breaker_reset_s=o.breaker_reset_s,
        )
        self.relay.defer_people = lambda: self.switches.is_on("defer_notifications")  # the peak: people's messages wait
        self._tasks: list[asyncio.Task[None]] = []
        self._stream_tasks: list[asyncio.Task[None]] = []
        self._duty_tasks: list[asyncio.Task[None]] = []
        self.broker_worker: BrokerWorker | None = None
        self.workers_running = False
        self._listener: wakeups.Listener | None = None

    def _fulfillment(self) -> Fulfillment | None:
        """Packages to the WMS and freezes back (services/fulfillment.py); none while no WMS is configured."""
        f = self.settings.fulfillment
        if not f.wms:
            return None
        waybills = None
        if f.cainiao:
            c = f.cainiao
            waybills = CainiaoWaybills(CainiaoSettings(c.base_url, c.app_key, c.app_secret, c.session, c.sender, c.user_id))
        return Fulfillment(
            self.engine, [WmsConfig(w.name, w.base_url, w.app_key, w.app_secret, tuple(w.warehouses)) for w in f.wms],
            waybills=waybills, http=self.http, notifier=self.notifier, tracker=self.tracker, rules=self.rules,
            wake=self.notify_outbox, default_carrier=f.default_carrier, label_wait_s=f.label_wait_s, unwritten=self.writer.oldest_unwritten,
            vault=self.vault, in_broker=getattr(self.writer, "oldest_in_broker", None),  # scaled mode: a cancel still in the broker
        )

    def _senders(self) -> dict[str, Any]:
        """Who delivers each kind of outbox message (keyed by the kind's family: webhook, notify, wms …)."""
        senders: dict[str, Any] = {"webhook": WebhookSender(self.http, {name: (w.url, w.secret) for name, w in self.settings.webhooks.items()})}
        # ship confirmations to the channels, sharing the adapters' access tokens with intake and pulls; withheld
        # for a package whose cancel is being intercepted at the carrier (services/late_cancels.py)
        senders["platform.ship"] = ShipWriteBackGuard(self.engine, ShipSender(self.http, self.shops, adapters=self.channels.sources))
        # parcels a cancel or a new address came too late for: SF's interception API, any other carrier a task for CS
        cainiao = self.settings.fulfillment.cainiao
        senders[INTERCEPT_KIND] = CarrierInterceptSender(
            self.engine, self.http, {"SF": self.tracker.sf} if self.tracker.sf is not None else {},
            return_to=cainiao.sender if cainiao else None, vault=self.vault, notifier=self.notifier,
        )
        if self.fulfillment is not None:  # packages, freezes, unfreezes, address changes, cancels
            senders["wms"] = self.fulfillment.http_sender(self.http)
        if self.tracker.subscribing:
            senders[SUBSCRIBE_KIND] = Kuaidi100Subscriber(self.tracker.kuaidi100, self.http)  # type: ignore[arg-type]
        n = self.settings.notifications
        # notifications register under their full kinds: the relay only claims what it can send
        if n.sms:
            senders["notify.sms"] = SmsGatewaySender(n.sms.url, n.sms.app_key, n.sms.app_secret, self.vault, self.http)
        if n.wecom_robots:
            senders["notify.wecom"] = WeComRobotSender(n.wecom_robots, self.http)
        if n.dingtalk_robots:
            senders["notify.dingtalk"] = DingTalkRobotSender({k: DingTalkRobot(v.url, v.secret) for k, v in n.dingtalk_robots.items()}, self.http)
        if n.email:
            senders["notify.email"] = SmtpSender(SmtpSettings(**n.email.model_dump()))
        return senders

    def _on_stall(self, conn: Any, order_id: str, code: str, reason: str) -> None:
        """A stalled parcel tells CS and the buyer (in the transaction that opened the ticket)."""
        self.notifier.notify(conn, order_id, "stalled", context={"stall": code, "stall_label": reason, "key": code},
                             audience=("cs", "buyer"), now=datetime.now(UTC))

    def notify_outbox(self) -> None:
        """Wake the relay now (a transaction just wrote outbox rows); safe from worker threads."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.outbox_wake.set)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, *, workers: bool = True, streams: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.rules.ensure_defaults)
        await asyncio.to_thread(seed_templates, self.engine)
        if self.transport is not None:
            await self.transport.start()
        self.writer.start()
        if streams:
            self.start_streams()
        if workers:
            self.start_workers()

    def start_streams(self) -> None:
        """One long-lived connection per (stream channel, app): 淘宝 TMC, 拼多多 PMC. They are
        intake, like the webhooks: they keep running while the workers are paused."""
        apps: dict[tuple[str, str], list] = {}
        for shop in self.shops.all():
            if shop.channel in self.channels.streams:
                apps.setdefault((shop.channel, shop.app_key), []).append(shop)
        for (channel, app_key), shops in apps.items():
            task = asyncio.create_task(self._hold_stream(channel, app_key, shops), name=f"orderhub-stream-{channel}-{app_key}")
            self._stream_tasks.append(task)

    async def _hold_stream(self, channel: str, app_key: str, shops: list) -> None:
        """The adapter reconnects by itself; this only restarts it should it ever fail outright
        (a bug must not leave a channel silently without its connection)."""
        adapter = self.channels.streams[channel]
        while True:
            try:
                await adapter.run(self.http, shops, self.intake)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s message connection for app %s failed; restarting in 5 s", channel, app_key)
                self.intake.connection(channel, app_key, "disconnected", f"client error: {type(exc).__name__}")
                await asyncio.sleep(5.0)

    def start_workers(self) -> None:
        if self.workers_running:
            return
        self.workers_running = True
        if self.engine.dialect.name == "postgresql":
            # rows another process wrote (an API node's inbox rows, a CS cancel's freeze) wake this one at once
            self._listener = wakeups.Listener(self.engine, (wakeups.INBOX, wakeups.OUTBOX), self._woken)
            self._listener.start()
        # the inbox sweep: new rows in embedded mode; in scaled mode retries, pulls, imports, replays
        # and rows a crashed worker had leased
        self._tasks.append(asyncio.create_task(self._work_loop(), name="orderhub-worker"))
        if self.settings.audit:
            self._tasks.append(asyncio.create_task(self._audit_loop(), name="orderhub-audit"))
        self._tasks.append(asyncio.create_task(self.relay.run_forever(wake=self.outbox_wake), name="orderhub-outbox-relay"))
        if self.fulfillment is not None:
            # freezes get a relay lane of their own: they never wait behind a round of package sends
            lane = self.fulfillment.run_freeze_lane(self.fulfillment.http_sender(self.http))
            self._tasks.append(asyncio.create_task(lane, name="orderhub-freeze-lane"))
        if self.transport is None:
            self._start_duties()  # embedded: this process is the whole fleet
        else:
            b = self.settings.broker
            self.broker_worker = BrokerWorker(
                self.engine, self.transport, self.processor, lease_s=b.lease_s, max_deliveries=b.max_deliveries,
                on_batch=self._audit_wake.set, on_duty=self._on_duty,
            )
            self._tasks.append(asyncio.create_task(self.broker_worker.run(), name="orderhub-broker-worker"))

    def _on_duty(self, held: bool) -> None:
        """Scaled mode: one worker of the fleet (the lease holder) runs the singleton duties."""
        if held:
            self._start_duties()
        else:
            tasks, self._duty_tasks = self._duty_tasks, []
            for task in tasks:
                task.cancel()

    def _start_duties(self) -> None:
        """Work that one process of the fleet does: pulls, stock sync, tracking sweeps, WMS
        reconciliation, the lag watcher that flips the degradation switches, and the retention sweep."""
        if self._duty_tasks:
            return
        duties = [
            (self._pull_loop(), "orderhub-puller"),
            (self.stock_sync.run_forever(self.settings.stock_sync.interval_s), "orderhub-stock-sync"),
            (self.tracker.run_forever(self.settings.tracking.stall_check_interval_s,
                                      defer_polls=lambda: self.switches.is_on("defer_tracking_polls")), "orderhub-tracking"),
            (LagWatcher(self.switches, self.lag, self.settings.degrade.lag_threshold).run_forever(self.settings.degrade.check_interval_s),
             "orderhub-lag-watcher"),
            (retention.run_forever(self.engine, self.settings.retention), "orderhub-retention"),
        ]
        if self.fulfillment is not None:
            duties.append((self.fulfillment.run_forever(self.settings.fulfillment.reconcile_interval_s), "orderhub-fulfillment-reconcile"))
        self._duty_tasks = [asyncio.create_task(coro, name=name) for coro, name in duties]

    async def lag(self) -> int:
        """Messages accepted and not processed yet: the inbox backlog, plus the broker's in scaled mode."""
        pending = await asyncio.to_thread(backlog, self.engine)
        if self.transport is not None:
            pending += await self.transport.lag()
        return pending

    def _woken(self, channel: str, payload: str) -> None:
        """Another process committed inbox or outbox rows (wakeups.Listener's thread)."""
        if channel == wakeups.INBOX:
            self._notify()
            return
        self.notify_outbox()
        if self.fulfillment is not None and (payload in FAST_KINDS or payload == wakeups.RECONNECTED):
            self.fulfillment.wake_lane()

    async def stop_workers(self) -> None:
        self.workers_running = False
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await asyncio.to_thread(listener.stop)
        tasks, self._tasks = self._tasks + self._duty_tasks, []
        self._duty_tasks = []
        for task in tasks:
            task.cancel()
        # a task whose cancellation a client library swallowed is cancelled again rather than awaited forever
        while tasks:
            _done, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                log.warning("task %s did not stop within 5 s; cancelling it again", task.get_name())
                task.cancel()
            tasks = list(pending)

    async def stop(self) -> None:
        await self.stop_workers()
        streams, self._stream_tasks = self._stream_tasks, []
        for task in streams:
            task.cancel()
        for task in streams:
            with suppress(asyncio.CancelledError, Exception):
                await task
        self.writer.stop()
        if self.transport is not None:
            try:
                async with asyncio.timeout(10.0):  # a broker that does not answer must not hold the shutdown
                    await self.transport.stop()
            except Exception:
                log.warning("the broker connection did not close cleanly", exc_info=True)
        if self.fulfillment is not None:
            self.fulfillment.close()
        await self.http.aclose()
        self.engine.dispose()

    def notify_work(self) -> None:
        """Wake the workers now (new inbox rows were written outside the group-commit writer)."""
        self._notify()

    def _notify(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- background loops -----------------------------------------------------------------

    async def _work_loop(self) -> None:
        """Processing: platform messages into stored orders. The audit has a loop of its own, so a
        cancel never waits behind the audit of a large batch (interception latency)."""
        while True:
            self._wake.clear()  # before the batch: a message stored during it wakes the next round at once
            try:
                result = await self.processor.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the worker alive; the batch's lease expires and it is retried
                log.exception("processing batch failed")
                await asyncio.sleep(1.0)
                continue
            if result is not None:
                self._audit_wake.set()
            if result is None or result.rows < self.processor.batch_size:
                await _idle(self._wake, 0.5)

    async def _audit_loop(self) -> None:
        """The audit (审单) of what processing made pending; rows are locked and version-checked, so it
        may run beside processing (and beside other processes' audits)."""
        while True:
            self._audit_wake.clear()
            try:
                audited = await asyncio.to_thread(self.auditor.run_once)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit batch failed")
                await asyncio.sleep(1.0)
                continue
            if audited is None or audited.orders < self.auditor.batch_size:
                await _idle(self._audit_wake, 0.5)

    async def _pull_loop(self) -> None:
        while True:
            for shop in self.shops.all():
                if shop.channel in self.channels.pull:
                    try:
                        await self.puller.pull_shop(shop)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("pull of %s/%s failed", shop.channel, shop.shop_id)
            try:
                await self.pii.retry_pending(self.engine)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retrying buyer phone decryption failed")
            self._notify()
            await asyncio.sleep(self.settings.pull_interval_s)

    async def drain(self, timeout: float = 60.0) -> None:
        """Process (and audit, when this process audits) until nothing is due (tests, CLI import)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            result = await self.processor.run_once()
            audited = await asyncio.to_thread(self.auditor.run_once) if self.settings.audit else None
            if result is None and audited is None:
                return
        raise TimeoutError("inbox not drained in time")


async def _idle(wake: asyncio.Event, timeout_s: float) -> None:
    """Wait for `wake` (cleared by the caller before its batch, so a wake during the batch is not
    lost) or `timeout_s`. asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
    cancel that arrives as the wake fires, and the loop would then never stop."""
    with suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await wake.wait()
