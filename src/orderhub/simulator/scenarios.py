"""The order generator: which orders happen, with what lines, money and timeline.

`plan_order` draws one order and its whole timeline (create → pay → cancel / ship / refund …)
from a seeded `random.Random`; nothing here touches the simulator state or the clock, so the
same seed always plans the same orders.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields

from orderhub.demo.catalogue import Customer, customers, make_address, skus
from orderhub.simulator import model as m
from orderhub.simulator.amounts import cst, split_by_weight

CHANNELS = ("douyin", "taobao", "pdd", "jd", "youzan", "wechat_channels", "kuaishou")
# Channels that announce changes by message (HTTP push, or a message stream for 淘宝 TMC and
# 拼多多 PMC); JD and 快手 have none here: OrderHub pulls them.
PUSH_CHANNELS = ("douyin", "taobao", "pdd", "youzan", "wechat_channels")
STREAM_CHANNELS = ("taobao", "pdd")
# Sellers see an order only once it is paid (JD; 拼多多 once the group is confirmed).
PAID_ONLY = ("jd", "pdd")
# One SKU per order (快手小店 orders carry a single item).
SINGLE_LINE = ("kuaishou",)


@dataclass
class ScenarioMix:
    """How often each scenario happens (probabilities per order of a channel it applies to)."""

    multi_sku: float = 0.30
    gift: float = 0.10
    coupon_shop: float = 0.35
    coupon_platform: float = 0.25  # 抖店 / JD only (有赞 coupons are the shop's)
    shipping_fee: float = 0.15
    buyer_message: float = 0.15
    unpaid_closed: float = 0.03  # not JD: JD shows sellers paid orders only
    cancel_after_pay: float = 0.05
    address_change: float = 0.03  # 抖店 (tag 105) and JD
    refund: float = 0.03  # 抖店 / 有赞; full before shipping, or one line
    shipped: float = 0.45
    completed: float = 0.40  # of the shipped ones
    duplicate_push: float = 0.05
    out_of_order: float = 0.03
    balance_used: float = 0.10  # JD
    # One push per order (its latest state), no duplicates or out-of-order pairs: for latency runs.
    single_push: bool = False
    # A generated history ends up to this many seconds before `done_by` (a peak: a few minutes).
    spread_s: float = 6 * 3600
    # Live arrivals instead of history: order n is created at now + start_delay_s + n / start_rate
    # (its timeline lies ahead), and with first_push only its creation is pushed. For latency runs.
    start_rate: float = 0.0
    start_delay_s: float = 0.0
    first_push: bool = False
    channels: dict[str, float] = field(default_factory=lambda: {
        "douyin": 0.25, "taobao": 0.20, "pdd": 0.15, "jd": 0.12, "youzan": 0.10, "wechat_channels": 0.10, "kuaishou": 0.08})

    @classmethod
    def from_dict(cls, data: dict | None) -> ScenarioMix:
        mix = cls()
        for f in fields(cls):
            if data and f.name in data:
                value = data[f.name]
                setattr(mix, f.name, dict(value) if f.name == "channels" else bool(value) if f.name in ("single_push", "first_push")
                        else float(value))
        return mix


SCENARIOS = (
    "plain", "multi_sku", "gift", "coupon_shop", "coupon_platform", "shipping_fee", "remote_area",
    "buyer_message", "unpaid_closed", "cancel_after_pay", "address_change", "refund_full",
    "refund_partial", "shipped", "completed", "duplicate_push", "out_of_order", "balance_used",
)

BUYER_MESSAGES = [
    "请尽快发货", "不要放快递柜", "送人的，不要放价格单", "请用顺丰发货", "工作日白天送，周末不在家",
    "包装结实一点，谢谢", "到了打电话", "麻烦多送点小样", "发货前请确认颜色", "放门卫室就行",
]
CANCEL_REASONS = ["不想要了", "拍错了/多拍了", "地址信息填写错误", "协商一致退款", "其他渠道价格更低"]
CARRIERS = [  # (抖店 company code, name, JD logisticsId, waybill prefix, digits)
    ("shunfeng", "顺丰速运", "467", "SF", 13),
    ("zhongtong", "中通快递", "1499", "7", 13),
    ("yuantong", "圆通速递", "463", "YT", 13),
    ("yunda", "韵达快递", "1327", "43", 13),
    ("jd", "京东快递", "2087", "JDVA", 11),
]
_SHOP_COUPONS = [300, 500, 1000, 1500, 2000, 3000, 5000]
_PLATFORM_COUPONS = [200, 300, 500, 800, 1000, 1500]
_POST_FEES = [600, 800, 1000, 1200]
_REMOTE_POST_FEES = [1500, 2000, 2500]


class IdSource:
    """Platform-looking, unique order / line / message numbers for one simulator.

    Sequence numbers are scrambled by a bijection mod 10^k (multiplier coprime with 10), so ids
    look random but can never collide within a run.
    """

    def __init__(self, rng: random.Random) -> None:
        self.order_seq = 0
        self.line_seq = 0
        self.msg_seq = 0
        self._salt = rng.randrange(10**17)

    def _scramble(self, n: int, digits: int) -> str:
        return f"{(n * 7_919_393 + self._salt) % 10**digits:0{digits}d}"

    def next_order(self) -> int:
        self.order_seq += 1
        return self.order_seq

    def douyin_order(self, seq: int, rng: random.Random) -> str:
        return f"49{self._scramble(seq, 15)}{rng.randrange(100):02d}"

    def douyin_line(self, order_id: str, i: int) -> str:
        return f"69{order_id[2:17]}{i + 1:02d}"

    def youzan_order(self, seq: int, created_cst: str) -> str:
        return "E" + created_cst.replace("-", "").replace(" ", "").replace(":", "") + self._scramble(seq, 9)

    def youzan_line(self) -> str:
        self.line_seq += 1
        return "16" + self._scramble(self.line_seq, 17)

    def jd_order(self, seq: int) -> str:
        return "3" + self._scramble(seq, 11)

    def taobao_order(self, seq: int, rng: random.Random) -> str:
        return f"4{self._scramble(seq, 16)}{rng.randrange(100):02d}"

    def pdd_order(self, seq: int, created_cst: str) -> str:
        return f"{created_cst[2:10].replace('-', '')}-{self._scramble(seq, 15)}"

    def wechat_order(self, seq: int) -> str:
        return "37" + self._scramble(seq, 17)

    def kuaishou_order(self, seq: int) -> str:
        return "21" + self._scramble(seq, 14)

    def message(self) -> str:
        self.msg_seq += 1
        return "74" + self._scramble(self.msg_seq, 17)


@dataclass
class Plan:
    order: m.SimOrder
    events: list[m.PlannedEvent]


def _pick_lines(rng: random.Random, mix: ScenarioMix, scen: list[str], channel: str) -> list[tuple]:
    catalogue = skus()
    n = rng.choice((2, 2, 2, 3, 3, 4)) if rng.random() < mix.multi_sku and channel not in SINGLE_LINE else 1
    if n > 1:
        scen.append("multi_sku")
    chosen = rng.sample(catalogue, n)
    out = []
    for sku in chosen:
        r = rng.random()
        qty = 1 if r < 0.7 else 2 if r < 0.9 else rng.randint(3, 5)
        out.append((sku, qty))
    return out


def _payment_no(rng: random.Random, pay_type: int, t: int) -> str:
    if pay_type == 2:
        return cst(t)[:10].replace("-", "") + "22001" + f"{rng.randrange(10**15):015d}"
    return "4200" + f"{rng.randrange(10**24):024d}"


def plan_order(
    rng: random.Random, ids: IdSource, channel: str, shop: dict, mix: ScenarioMix,
    start: int | None = None, done_by: int | None = None,
) -> Plan:
    """Draw one order of `channel` and its whole timeline.

    Either the order is created at `start` (a live order whose events lie ahead), or its whole
    timeline is placed to end before `done_by` (a history generated at once: nothing in the future).
    """
    scen: list[str] = []
    customer: Customer = rng.choice(customers())
    if customer.region.remote:
        scen.append("remote_area")
    picked = _pick_lines(rng, mix, scen, channel)
    seq = ids.next_order()
    lines = [m.SimLine(line_id="", sku=sku, qty=qty, unit_price=sku.price) for sku, qty in picked]
    if rng.random() < mix.gift and channel not in SINGLE_LINE:
        gifts = [s for s in skus() if s.price <= 4000 and s not in {p[0] for p in picked}]
        lines.append(m.SimLine(line_id="", sku=rng.choice(gifts), qty=1, unit_price=0, gift=True))
        scen.append("gift")

    goods = sum(line.goods for line in lines)
    shop_coupon = platform_coupon = 0
    if rng.random() < mix.coupon_shop:
        options = [c for c in _SHOP_COUPONS if c * 4 <= goods]
        if options:
            shop_coupon = rng.choice(options)
            scen.append("coupon_shop")
    if channel != "youzan" and rng.random() < mix.coupon_platform:
        options = [c for c in _PLATFORM_COUPONS if c * 5 <= goods]
        if options:
            platform_coupon = rng.choice(options)
            scen.append("coupon_platform")
    weights = [line.goods for line in lines]
    for line, s, p in zip(lines, split_by_weight(shop_coupon, weights), split_by_weight(platform_coupon, weights)):
        line.discount_shop, line.discount_platform = s, p

    post = 0
    if customer.region.remote and rng.random() < 0.7:
        post = rng.choice(_REMOTE_POST_FEES)
    elif rng.random() < mix.shipping_fee:
        post = rng.choice(_POST_FEES)
    if post:
        scen.append("shipping_fee")

    message = ""
    if rng.random() < mix.buyer_message:
        message = rng.choice(BUYER_MESSAGES)
        scen.append("buyer_message")

    events = _timeline(rng, order_lines=lines, channel=channel, customer=customer, mix=mix, scen=scen)
    if start is None:
        start = (done_by or 0) - events[-1].at - rng.randint(0, int(mix.spread_s))
    for ev in events:
        ev.at += start
    pay_type = 1 if rng.random() < 0.65 else 2
    order = m.SimOrder(
        channel=channel, shop_id=shop["shop_id"], shop_name=shop["name"], original_id="",
        customer=customer,
        address=m.Address(customer.region, customer.street, customer.street_code, customer.road, customer.detail),
        lines=lines, post_amount=post, buyer_message=message, pay_type=pay_type,
        payment_no=_payment_no(rng, pay_type, start),
    )
    if channel == "jd" and rng.random() < mix.balance_used:
        order.balance_used = min(order.paid - 1, rng.choice((500, 1000, 2000)))
        if order.balance_used > 0:
            scen.append("balance_used")
        else:
            order.balance_used = 0
    order.extra = {"msg_uuid_salt": rng.getrandbits(64), "book_key": rng.getrandbits(128)}

    if any(ev.kind == m.PAY for ev in events) and "out_of_order" in scen:
        order.extra["late"] = m.PAY  # the paid push arrives after the next one (cancel / ship)
    _assign_ids(rng, ids, order, seq, start)
    if rng.random() < mix.duplicate_push and channel in PUSH_CHANNELS and not (mix.single_push or mix.first_push):
        order.extra["duplicate"] = rng.randrange(len(events))
        scen.append("duplicate_push")
    order.scenarios = scen or ["plain"]
    return Plan(order, events)


def _assign_ids(rng: random.Random, ids: IdSource, order: m.SimOrder, seq: int, start: int) -> None:
    if order.channel == "douyin":
        order.original_id = ids.douyin_order(seq, rng)
        for i, line in enumerate(order.lines):
            line.line_id = ids.douyin_line(order.original_id, i)
    elif order.channel == "youzan":
        order.original_id = ids.youzan_order(seq, cst(start))
        for line in order.lines:
            line.line_id = ids.youzan_line()
    elif order.channel == "taobao":
        order.original_id = ids.taobao_order(seq, rng)
        for i, line in enumerate(order.lines):  # a one-line trade's oid is its tid
            line.line_id = order.original_id if len(order.lines) == 1 else f"{order.original_id[:-2]}{i + 1:02d}"
    elif order.channel == "pdd":
        order.original_id = ids.pdd_order(seq, cst(start))
        for line in order.lines:
            line.line_id = line.sku.pdd_sku_id
    elif order.channel == "wechat_channels":
        order.original_id = ids.wechat_order(seq)
        for line in order.lines:
            line.line_id = line.sku.wechat_sku_id
    elif order.channel == "kuaishou":
        order.original_id = ids.kuaishou_order(seq)
        for line in order.lines:
            line.line_id = order.original_id
    else:
        order.original_id = ids.jd_order(seq)
        for line in order.lines:
            line.line_id = line.sku.jd_sku_id


def _timeline(
    rng: random.Random, order_lines: list[m.SimLine], channel: str, customer: Customer, mix: ScenarioMix,
    scen: list[str],
) -> list[m.PlannedEvent]:
    """The order's events with times relative to its creation (0)."""
    start = 0
    ev = [m.PlannedEvent(start, m.CREATE)]
    r = rng.random()
    out_of_order = channel in PUSH_CHANNELS and not (mix.single_push or mix.first_push) and rng.random() < mix.out_of_order
    if channel not in PAID_ONLY and not out_of_order and r < mix.unpaid_closed:
        ev.append(m.PlannedEvent(start + 1800, m.CLOSE))
        scen.append("unpaid_closed")
        return ev
    pay = start + rng.randint(5, 90)
    ev.append(m.PlannedEvent(pay, m.PAY))
    r -= mix.unpaid_closed if channel not in PAID_ONLY else 0
    cancel = (out_of_order and channel == "douyin") or (0 <= r < mix.cancel_after_pay)
    if cancel:
        ev.append(m.PlannedEvent(pay + rng.randint(20, 40), m.CANCEL, {"reason": rng.choice(CANCEL_REASONS)}))
        scen.append("cancel_after_pay")
    t = pay + rng.randint(60, 600)
    if not cancel and channel != "youzan" and rng.random() < mix.address_change:
        street, street_code, road, detail = make_address(rng, customer.region)
        ev.append(m.PlannedEvent(t, m.ADDRESS_CHANGE, {"address": m.Address(customer.region, street, street_code, road, detail)}))
        scen.append("address_change")
        t += rng.randint(60, 600)
    refund_full = False
    if not cancel and channel != "jd" and rng.random() < mix.refund:
        payable = [i for i, line in enumerate(order_lines) if not line.gift]
        refund_full = len(payable) < 2 or rng.random() < 0.3
        refund_lines = list(range(len(order_lines))) if refund_full else [rng.choice(payable)]
        ref_id = f"{rng.randrange(10**18):018d}"
        ev.append(m.PlannedEvent(t, m.REFUND_CREATE, {"refund_id": ref_id, "full": refund_full, "lines": refund_lines}))
        t += rng.randint(60, 1800)
        ev.append(m.PlannedEvent(t, m.REFUND_SUCCESS))
        scen.append("refund_full" if refund_full else "refund_partial")
    if not cancel and not refund_full and (out_of_order or rng.random() < mix.shipped):
        ship = max(t, pay + rng.randint(3600, 20 * 3600))
        carrier, name, jd_logistics, prefix, digits = rng.choice(CARRIERS)
        shipment = m.Shipment(carrier, name, prefix + f"{rng.randrange(10**digits):0{digits}d}", jd_logistics)
        ev.append(m.PlannedEvent(ship, m.SHIP, {"shipment": shipment}))
        scen.append("shipped")
        if rng.random() < mix.completed:
            ev.append(m.PlannedEvent(ship + rng.randint(86400, 4 * 86400), m.COMPLETE))
            scen.append("completed")
    if out_of_order:
        scen.append("out_of_order")
    return ev
