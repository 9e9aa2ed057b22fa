"""The simulator's in-memory platform state: shops, tokens, orders, windows, pushes, stats."""

from __future__ import annotations

import bisect
import itertools
import random
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import orjson

from orderhub.demo import catalogue
from orderhub.demo.shops import DEMO_SHOPS
from orderhub.simulator import douyin, jd, kuaishou, notify, pdd, pii, taobao, wechat_channels, wms, youzan
from orderhub.simulator import model as m
from orderhub.simulator.carriers import CarrierSim
from orderhub.simulator.clock import SimClock
from orderhub.simulator.faults import Faults
from orderhub.simulator.pusher import Push, Pusher
from orderhub.simulator.scenarios import CHANNELS, IdSource, Plan, ScenarioMix, plan_order
from orderhub.simulator.streams import StreamHub
from orderhub.simulator.wms_flow import WmsOrder

# The platform module contract. Each module serves one platform and exports:
#   CHANNEL                        the channel code
#   render(order) -> dict          the order as the platform's order API returns it
#   build_push(shop, order, kind, msg_seq) -> Push | None
#                                  the message the platform sends for an event (None: no
#                                  message); a Push with `stream_key` set goes to the
#                                  platform's message stream instead of an HTTP webhook
#   remember_pii(vault, order)     register the order's PII ciphertexts with their plaintext
#   make_router(sim) -> APIRouter  the platform's endpoints, mounted under /{CHANNEL}
PLATFORMS = {module.CHANNEL: module for module in (douyin, taobao, pdd, jd, youzan, wechat_channels, kuaishou)}
RENDER: dict[str, Callable[[m.SimOrder], dict[str, Any]]] = {ch: module.render for ch, module in PLATFORMS.items()}
BUILD_PUSH = {ch: module.build_push for ch, module in PLATFORMS.items() if hasattr(module, "build_push")}
# The demo catalogue's (item id, SKU id) attributes on each platform: what its stock APIs accept.
LISTING_IDS = {
    "douyin": ("douyin_product_id", "douyin_sku_id"), "taobao": ("taobao_num_iid", "taobao_sku_id"),
    "pdd": ("pdd_goods_id", "pdd_sku_id"), "jd": ("jd_ware_id", "jd_sku_id"), "youzan": ("youzan_item_id", "youzan_sku_id"),
    "wechat_channels": ("wechat_product_id", "wechat_sku_id"), "kuaishou": ("kuaishou_item_id", "kuaishou_sku_id"),
}


@cache
def _listings(channel: str) -> dict[str, tuple[str, str]]:
    """platform SKU id -> (platform item id, merchant SKU code) for the demo catalogue."""
    item_attr, sku_attr = LISTING_IDS[channel]
    return {getattr(s, sku_attr): (getattr(s, item_attr), s.code) for s in catalogue.skus()}


class _Window:
    """Orders of one shop sorted by update time, for window queries with offset/limit."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, str]] = []
        self.orders: list[m.SimOrder] = []
        self.key_of: dict[str, tuple[int, str]] = {}

    def upsert(self, order: m.SimOrder) -> None:
        old = self.key_of.get(order.original_id)
        if old is not None:
            i = bisect.bisect_left(self.keys, old)
            del self.keys[i], self.orders[i]
        key = (order.update_time, order.original_id)
        i = bisect.bisect_left(self.keys, key)
        self.keys.insert(i, key)
        self.orders.insert(i, order)
        self.key_of[order.original_id] = key

    def between(self, start: int, end: int) -> list[m.SimOrder]:
        lo = bisect.bisect_left(self.keys, (start, ""))
        hi = bisect.bisect_right(self.keys, (end, "\uffff"))
        return self.orders[lo:hi]


@dataclass
class Generated:
    orders: list[m.SimOrder]
    pushes: list[Push]


class Simulator:
    """In-memory state of the simulated platforms (thread- and task-safe behind one lock)."""

    def __init__(
        self,
        seed: int = 0,
        shops: list[dict[str, Any]] | None = None,
        clock: Any = None,
        mix: dict[str, Any] | None = None,
        target_url: str | None = None,
        pusher: Pusher | None = None,
        cache_size: int = 20_000,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = clock or SimClock()
        self.shops = list(shops or DEMO_SHOPS)
        self.mix = ScenarioMix.from_dict(mix)
        self.ids = IdSource(self.rng)
        self.target_url = target_url
        self.pusher = pusher or Pusher()
        self.streams = StreamHub()
        self.pusher.streams = self.streams
        self.streams.on_confirm = self.pusher.record_stream_ack
        self.faults = Faults()
        self.held_stream_pushes: list[Push] = []  # prepared with hold_streams, published on release
        self.vault = pii.Vault()
        self.scenario_counts: Counter[str] = Counter()
        self.pushes_made: Counter[str] = Counter()
        self.feed: Any = None  # set by feed.Feed
        self._lock = threading.RLock()
        self._orders: dict[str, dict[str, m.SimOrder]] = {ch: {} for ch in CHANNELS}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._tokens: dict[tuple[str, str], str] = {}
        for shop in self.shops:
            if shop.get("extra", {}).get("access_token"):
                self._tokens[(shop["channel"], shop["extra"]["access_token"])] = shop["shop_id"]
        self._cache: OrderedDict[tuple[str, str], tuple[int, bytes]] = OrderedDict()
        self._cache_size = cache_size
        self._log_seq = itertools.count(1)
        # What each shop's listings show: (channel, shop id, platform SKU id) -> quantity. A
        # listing nobody has set shows 0; every accepted stock-update call is kept in order.
        self._channel_stock: dict[tuple[str, str, str], int] = {}
        self.stock_updates: list[dict[str, Any]] = []
        self.shipments: list[dict[str, Any]] = []  # accepted ship write-backs, in order (simulator/shipments.py)
        self.wms = wms.WmsState(on_shipped=self._hand_over)
        self.notify = notify.NotifyState()  # SMS gateway and robot webhooks: what OrderHub sent
        self.carriers = CarrierSim(seed=seed, clock=self.clock.now, target_url=target_url)  # Kuaidi100 / SF tracks

    # ------------------------------------------------------------ shops and tokens

    def shop(self, channel: str) -> dict[str, Any]:
        return next(s for s in self.shops if s["channel"] == channel)

    def shop_by_app_key(self, channel: str, app_key: str) -> dict[str, Any] | None:
        return next((s for s in self.shops if s["channel"] == channel and s["app_key"] == app_key), None)

    def issue_token(self, channel: str, shop_id: str) -> tuple[str, str]:
        """A fresh access token (and refresh token) for `shop_id`; earlier tokens stay valid."""
        token, refresh = secrets.token_hex(16), secrets.token_hex(16)
        with self._lock:
            self._tokens[(channel, token)] = shop_id
        return token, refresh

    def token_shop(self, channel: str, token: str) -> str | None:
        return self._tokens.get((channel, token)) if token else None

    def revoke_tokens(self, channel: str) -> int:
        """Expire every access token issued for `channel` (configured pre-issued ones included):
        clients must fetch or refresh a token, as after a real expiry. Returns how many."""
        with self._lock:
            gone = [key for key in self._tokens if key[0] == channel]
            for key in gone:
                del self._tokens[key]
        return len(gone)

    def log_id(self) -> str:
        return f"{self.clock.now():010d}SIM{next(self._log_seq):012d}"

    # ------------------------------------------------------------ packages leaving the warehouse

    def _hand_over(self, package: WmsOrder) -> None:
        """The simulated WMS shipped `package`: its carrier takes it at this moment of simulated time, and
        from now on pushes its track to OrderHub as for a subscribed waybill. A package without a
        waybill has nothing to track; one handed over already keeps its track."""
        waybill = package.waybill or {}
        number = str(waybill.get("waybill_no") or "")
        if number and number not in self.carriers.parcels:
            self.carriers.add(number, str(waybill.get("carrier") or package.body.get("carrier") or "ZTO"), self.clock.now())

    # ------------------------------------------------------------ channel stock

    def listing(self, channel: str, sku_id: str, item_id: str | None = None) -> str | None:
        """The merchant SKU behind a platform SKU id (of item `item_id`, when given); None if unknown."""
        found = _listings(channel).get(str(sku_id))
        if found is None or (item_id is not None and found[0] != str(item_id)):
            return None
        return found[1]

    def channel_stock(self, channel: str, shop_id: str, sku_id: str) -> int:
        return self._channel_stock.get((channel, shop_id, str(sku_id)), 0)

    def set_channel_stock(self, channel: str, shop_id: str, sku_id: str, quantity: int, via: str) -> None:
        """The listing now shows `quantity` (`via`: the API method, or "_sim" for a control)."""
        if quantity < 0:
            raise ValueError("stock cannot be negative")
        with self._lock:
            self._channel_stock[(channel, shop_id, str(sku_id))] = quantity
            item_id, sku = _listings(channel).get(str(sku_id), ("", None))
            self.stock_updates.append({"channel": channel, "shop_id": shop_id, "item_id": item_id, "sku_id": str(sku_id),
                                       "sku": sku, "quantity": quantity, "via": via, "at": self.clock.now()})

    def channel_stock_rows(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Every listing whose stock was set: {channel, shop_id, item_id, sku_id, sku, quantity}."""
        with self._lock:
            rows = sorted(self._channel_stock.items())
        out = []
        for (ch, shop_id, sku_id), quantity in rows:
            if channel is None or ch == channel:
                item_id, sku = _listings(ch).get(sku_id, ("", None))
                out.append({"channel": ch, "shop_id": shop_id, "item_id": item_id, "sku_id": sku_id, "sku": sku,
                            "quantity": quantity})
        return out

    # ------------------------------------------------------------ orders

    def get(self, channel: str, original_id: str) -> m.SimOrder | None:
        return self._orders.get(channel, {}).get(original_id)

    def orders(self, channel: str) -> list[m.SimOrder]:
        """Every order of `channel` (a snapshot list)."""
        with self._lock:
            return list(self._orders[channel].values())

    def count(self, channel: str) -> int:
        return len(self._orders[channel])

    def payload(self, order: m.SimOrder) -> bytes:
        """The order's platform payload as JSON bytes (cached until the order changes)."""
        key = (order.channel, order.original_id)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == order.rev:
                self._cache.move_to_end(key)
                return hit[1]
            data = orjson.dumps(RENDER[order.channel](order))
            self._cache[key] = (order.rev, data)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return data

    def render(self, order: m.SimOrder) -> dict[str, Any]:
        """The payload as a dict (tests, control endpoints)."""
        return orjson.loads(self.payload(order))

    def search(
        self, channel: str, shop_id: str, start: int, end: int, offset: int, limit: int,
        states: set[str] | None = None, by_create: bool = False, descending: bool = False,
    ) -> tuple[int, list[m.SimOrder]]:
        """Orders of a shop whose update (or create) time is in [start, end], ascending; a page."""
        with self._lock:
            window = self._windows.get((channel, shop_id))
            if window is None:
                return 0, []
            if by_create:
                hits = sorted((o for o in window.orders if start <= o.create_time <= end),
                              key=lambda o: (o.create_time, o.original_id))
            else:
                hits = window.between(start, end)
            if states is not None:
                hits = [o for o in hits if o.status in states]
            if descending:
                hits = hits[::-1]
            return len(hits), hits[offset:offset + limit]

    def _store(self, order: m.SimOrder) -> None:
        """(Re)index `order` after a change; caller holds the lock."""
        self._orders[order.channel][order.original_id] = order
        if order.visible:
            key = (order.channel, order.shop_id)
            if key not in self._windows:
                self._windows[key] = _Window()
            self._windows[key].upsert(order)
        PLATFORMS[order.channel].remember_pii(self.vault, order)

    def decrypt(self, ciphertext: str) -> str | None:
        """Plaintext behind a platform ciphertext this simulator issued (for a decrypt API)."""
        return self.vault.decrypt(ciphertext)

    # ------------------------------------------------------------ generating orders

    def _pick_channel(self, rng: random.Random, mix: ScenarioMix, channels: list[str] | None) -> str:
        allowed = list(channels) if channels else [ch for ch in CHANNELS if mix.channels.get(ch, 0) > 0]
        weights = [float(mix.channels.get(ch, 0)) for ch in allowed]
        if not any(weights):
            weights = [1.0] * len(allowed)
        return rng.choices(allowed, weights)[0]

    def plan(self, channel: str | None = None, rng: random.Random | None = None, mix: ScenarioMix | None = None,
             start: int | None = None, done_by: int | None = None, channels: list[str] | None = None) -> Plan:
        rng = rng or self.rng
        mix = mix or self.mix
        with self._lock:
            channel = channel or self._pick_channel(rng, mix, channels)
            plan = plan_order(rng, self.ids, channel, self.shop(channel), mix, start=start, done_by=done_by)
            self.scenario_counts.update(plan.order.scenarios)
        return plan

    def apply(self, order: m.SimOrder, event: m.PlannedEvent) -> Push | None:
        """Apply one event to a stored (or new) order; return the push the platform sends, if any."""
        with self._lock:
            m.apply_event(order, event)
            self._store(order)
            return self._push_for(order, event.kind)

    def _push_for(self, order: m.SimOrder, kind: str) -> Push | None:
        build = BUILD_PUSH.get(order.channel)
        if build is None:
            return None
        push = build(self.shop(order.channel), order, kind, self.ids.message())
        if push is not None:
            self.pushes_made[order.channel] += 1
        return push

    def generate(
        self, count: int, channels: list[str] | None = None, mix: dict[str, Any] | None = None,
        seed: int | None = None, rng: random.Random | None = None,
    ) -> Generated:
        """Create `count` orders with their whole timelines played to the end (all in the past).

        Returns the final orders and every push the platforms sent, in delivery order (with the
        planned duplicates and out-of-order pairs).
        """
        rng = rng or (random.Random(seed) if seed is not None else self.rng)
        scen_mix = ScenarioMix.from_dict(mix) if mix else self.mix
        now = self.clock.now()
        orders, timed = [], []
        for n in range(count):
            if scen_mix.start_rate > 0:  # live arrivals: the timeline lies ahead
                start = now + int(scen_mix.start_delay_s + n / scen_mix.start_rate)
                plan = self.plan(rng=rng, mix=scen_mix, start=start, channels=channels)
            else:
                plan = self.plan(rng=rng, mix=scen_mix, done_by=now, channels=channels)
            pushes = []
            with self._lock:
                for ev in plan.events[:1] if scen_mix.first_push else plan.events:
                    m.apply_event(plan.order, ev)
                    push = self._push_for(plan.order, ev.kind)
                    if push is not None:
                        pushes.append((ev, push))
                self._store(plan.order)
            orders.append(plan.order)
            if scen_mix.single_push:
                pushes = pushes[-1:]
            for k, push in enumerate(arrange_pushes(plan.order, plan.events, pushes)):
                timed.append((push.send_at, n, k, push))
        timed.sort(key=lambda item: item[:3])
        return Generated(orders, [item[3] for item in timed])

    def start_feed(self, rate_per_s: float, target_url: str | None) -> Any:
        """Start (or retune) the live feed as a task on the running loop; returns the Feed."""
        from orderhub.simulator.feed import Feed

        if self.feed is not None and self.feed.running:
            self.feed.rate = rate_per_s
            self.feed.target_url = target_url or self.feed.target_url
            return self.feed
        self.feed = Feed(self, rate_per_s, target_url or self.target_url)
        self.feed.start()
        return self.feed

    async def run_feed(self, rate_per_s: float, target_url: str | None) -> None:
        """Run the live feed until stopped (the feed task itself)."""
        feed = self.start_feed(rate_per_s, target_url)
        await feed.wait()

    # ------------------------------------------------------------ reporting

    def scenarios_of(self, channel: str, original_id: str) -> dict[str, Any] | None:
        order = self.get(channel, original_id)
        if order is None:
            return None
        return {"channel": channel, "order_id": original_id, "scenarios": list(order.scenarios),
                "events": [{"kind": kind, "time": t} for t, kind in order.history],
                "update_time": order.update_time}

    def stats(self) -> dict[str, Any]:
        return {
            "orders": {ch: len(self._orders[ch]) for ch in CHANNELS},
            "pushes": {"made": dict(self.pushes_made), **self.pusher.stats.as_dict()},
            "streams": self.streams.stats(),
            "faults": self.faults.as_dict(),
            "scenarios": dict(self.scenario_counts),
            "feed": self.feed.status() if self.feed is not None else None,
            "clock": self.clock.now(),
        }


def arrange_pushes(order: m.SimOrder, events: list[m.PlannedEvent], pushes: list[tuple[m.PlannedEvent, Push]]) -> list[Push]:
    """Delivery order of one order's pushes: the planned duplicate and the late (out-of-order) one.

    A late push is delivered just after the push that follows it; a duplicate is the very same
    signed body sent again a moment later. `send_at` never decreases along the returned list.
    """
    out = [push for _, push in pushes]
    dup = order.extra.get("duplicate")
    if dup is not None:
        target = events[dup]
        for i, (ev, push) in enumerate(pushes):
            if ev is target:
                copy = replace(push, headers=dict(push.headers), send_at=push.send_at + 1)
                out.insert(out.index(push) + 1, copy)
                break
    late = order.extra.get("late")
    if late is not None:
        for i, (ev, push) in enumerate(pushes):
            if ev.kind == late and i + 1 < len(pushes):
                j = out.index(push)
                out.pop(j)
                nxt = pushes[i + 1][1]
                k = out.index(nxt)
                out.insert(k + 1, push)
                break
    for i in range(1, len(out)):
        if out[i].send_at < out[i - 1].send_at:
            out[i].send_at = out[i - 1].send_at
    return out
