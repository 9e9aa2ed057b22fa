"""The audit decision (审单): what the rule sets see of an order, and how their outputs become one Decision.

Pure functions over plain data. The rules engine adapter evaluates each rule set on
`order_context` (and the split set on `line_context` per line) and hands the raw outputs to
`decide`, which never fails: a set that said nothing simply has no opinion.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

RULE_SETS: tuple[str, ...] = ("routing", "priority", "holds", "gifts", "carrier", "split")

# Asia/Shanghai has had no daylight saving since 1991: a fixed offset is exact and cheaper than zoneinfo.
_SHANGHAI = timezone(timedelta(hours=8))

_PROVINCES = (
    "北京", "天津", "上海", "重庆", "河北", "山西", "辽宁", "吉林", "黑龙江", "江苏", "浙江", "安徽", "福建", "江西",
    "山东", "河南", "湖北", "湖南", "广东", "海南", "四川", "贵州", "云南", "陕西", "甘肃", "青海", "台湾",
    "内蒙古", "广西", "西藏", "宁夏", "新疆", "香港", "澳门",
)  # fmt: skip
_PROVINCE_SUFFIXES = ("特别行政区", "自治区", "省", "市", "维吾尔族", "维吾尔", "壮族", "回族")
_GIFT_KINDS = frozenset({"spend", "qty", "level"})
_VIP = re.compile(r"\s*(?:vip|lv|v|l)?\s*(\d{1,3})\s*(?:级)?\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class AuditLine:
    line_no: int
    sku: str | None  # merchant SKU (resolved); None = unmapped
    title: str
    qty: int
    unit_price: int  # fen
    paid: int  # fen, the line's share of what the buyer paid
    gift: bool = False
    category: str | None = None  # from the catalogue: "服装" "家居" "美妆" "食品" "数码配件" "母婴" "运动户外"
    cost: int | None = None  # unit cost in fen, None if unknown
    weight_g: int = 0
    presale: bool = False
    refunding: bool = False


@dataclass(frozen=True, slots=True)
class AuditOrder:
    id: str
    channel: str
    shop_id: str
    created_at: datetime
    paid_at: datetime | None
    goods: int
    discount: int
    shipping: int
    paid: int
    province: str | None  # as the platform gave it: "新疆维吾尔自治区", "上海", "上海市"
    city: str | None
    district: str | None
    address_detail: str | None  # masked text
    buyer_level: str | None  # platform member level text: "V3", "3", "黄金会员"... or None
    buyer_message: str | None
    seller_remark: str | None
    lines: tuple[AuditLine, ...]
    customer_channels: tuple[str, ...] = ()
    customer_order_count: int = 0


@lru_cache(maxsize=512)
def province_short(province: str | None) -> str:
    """ "新疆维吾尔自治区" -> "新疆", "上海市" -> "上海", "广西壮族自治区" -> "广西"; "" when unknown."""
    if not province:
        return ""
    text = province.strip()
    for short in _PROVINCES:
        if text.startswith(short):
            return short
    stripped = True
    while stripped:  # a province we do not list: strip administrative suffixes until none is left
        stripped = False
        for suffix in _PROVINCE_SUFFIXES:
            if len(text) > len(suffix) and text.endswith(suffix):
                text, stripped = text[: -len(suffix)], True
    return text


@lru_cache(maxsize=512)
def vip_level(level: str | None) -> int:
    """ "V3" -> 3, "3" -> 3, "VIP5" -> 5; a level without a number ("黄金会员") or none -> 0."""
    if not level:
        return 0
    match = _VIP.fullmatch(level)
    return int(match.group(1)) if match else 0


def order_context(order: AuditOrder) -> dict[str, Any]:
    """The JSON every order-level rule set sees (fields documented in docs/rules.md)."""
    qty = weight_g = unmapped = below_cost = presale = refunding = 0
    categories: list[str] = []
    skus: list[str] = []
    for line in order.lines:
        if not line.gift:
            qty += line.qty
            if line.cost is not None and line.paid < line.cost * line.qty:
                below_cost += 1
        weight_g += line.weight_g * line.qty
        if line.sku is None:
            unmapped += 1
        elif line.sku not in skus:
            skus.append(line.sku)
        if line.category and line.category not in categories:
            categories.append(line.category)
        presale += line.presale
        refunding += line.refunding
    paid_at = order.paid_at
    return {
        "channel": order.channel,
        "shop_id": order.shop_id,
        "amount": order.paid / 100,
        "goods_amount": order.goods / 100,
        "paid_fen": order.paid,
        "goods_fen": order.goods,
        "discount_fen": order.discount,
        "shipping_fen": order.shipping,
        "province": order.province or "",
        "province_short": province_short(order.province),
        "city": order.city or "",
        "district": order.district or "",
        "address_complete": bool(
            order.province and order.city and order.district and order.address_detail and order.address_detail.strip()
        ),
        "buyer_level": order.buyer_level or "",
        "vip_level": vip_level(order.buyer_level),
        "buyer_message": order.buyer_message or "",
        "seller_remark": order.seller_remark or "",
        "qty": qty,
        "line_count": len(order.lines),
        "categories": categories,
        "skus": skus,
        "unmapped_lines": unmapped,
        "weight_kg": weight_g / 1000,
        "below_cost_lines": below_cost,
        "paid_hour": paid_at.astimezone(_SHANGHAI).hour if paid_at is not None else -1,
        "multi_channel": len(order.customer_channels) > 1,
        "customer_order_count": order.customer_order_count,
        "presale_lines": presale,
        "refunding_lines": refunding,
    }


def line_context(order: AuditOrder, line: AuditLine) -> dict[str, Any]:
    """What the split set sees for one line ("" for an unmapped SKU or unknown category)."""
    return {
        "channel": order.channel,
        "line_no": line.line_no,
        "sku": line.sku or "",
        "category": line.category or "",
        "qty": line.qty,
        "weight_kg": line.weight_g * line.qty / 1000,
        "presale": line.presale,
        "gift": line.gift,
    }


@dataclass(frozen=True, slots=True)
class Hold:
    code: str
    reason: str
    rule: str  # "<set>:<row _id>"


@dataclass(frozen=True, slots=True)
class Warning:
    """Shown on the order; does not stop it (e.g. remote_area)."""

    code: str
    reason: str
    rule: str


@dataclass(frozen=True, slots=True)
class GiftDecision:
    rule: str
    sku: str
    qty: int
    reached: bool
    shortfall: int  # fen (spend), units (qty) or levels (level); 0 when reached
    message: str  # "满¥199赠 帆布袋×1" / "未达赠品门槛：差¥12.50"


@dataclass(frozen=True, slots=True)
class Decision:
    warehouse: str | None
    priority: int
    holds: tuple[Hold, ...]
    warnings: tuple[Warning, ...]
    gifts: tuple[GiftDecision, ...]
    carrier: str | None
    tags: tuple[str, ...]
    separate_lines: dict[int, str]  # line_no -> package reason ("presale", "oversized")
    fired: tuple[str, ...]  # every "<set>:<row _id>" that matched, in set order

    @property
    def held(self) -> bool:
        return bool(self.holds)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able; what orders.decisions stores and the API shows."""
        return {
            "warehouse": self.warehouse,
            "priority": self.priority,
            "holds": [{"code": h.code, "reason": h.reason, "rule": h.rule} for h in self.holds],
            "warnings": [{"code": w.code, "reason": w.reason, "rule": w.rule} for w in self.warnings],
            "gifts": [
                {"rule": g.rule, "sku": g.sku, "qty": g.qty, "reached": g.reached, "shortfall": g.shortfall, "message": g.message}
                for g in self.gifts
            ],
            "carrier": self.carrier,
            "tags": list(self.tags),
            "separate_lines": {str(no): reason for no, reason in self.separate_lines.items()},
            "fired": list(self.fired),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """The inverse of `as_dict` (for comparing a stored decision with a back-test's)."""
        return cls(
            warehouse=data.get("warehouse"),
            priority=int(data.get("priority") or 0),
            holds=tuple(Hold(h["code"], h.get("reason", ""), h.get("rule", "")) for h in data.get("holds", ())),
            warnings=tuple(Warning(w["code"], w.get("reason", ""), w.get("rule", "")) for w in data.get("warnings", ())),
            gifts=tuple(
                GiftDecision(g["rule"], g["sku"], int(g["qty"]), bool(g["reached"]), int(g["shortfall"]), g["message"])
                for g in data.get("gifts", ())
            ),
            carrier=data.get("carrier"),
            tags=tuple(data.get("tags", ())),
            separate_lines={int(no): reason for no, reason in (data.get("separate_lines") or {}).items()},
            fired=tuple(data.get("fired", ())),
        )


def _rows(result: Any) -> list[dict[str, Any]]:
    """A set's output as matched rows: "collect" gives a list, "first" a dict ({} = nothing matched)."""
    if isinstance(result, dict):
        return [result] if result else []
    if isinstance(result, list):
        return [row for row in result if isinstance(row, dict) and row]
    return []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any, default: float = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return value


def decide(order: AuditOrder, outputs: Mapping[str, Any], line_outputs: Mapping[int, Any]) -> Decision:
    """Turn the rule sets' raw outputs into one Decision. Total: missing or odd outputs mean "no opinion"."""
    fired: list[str] = []

    warehouse = None
    for row in _rows(outputs.get("routing"))[:1]:
        warehouse = _text(row.get("warehouse"))
        fired.append(f"routing:{row.get('rule', '?')}")

    priority = None
    for row in _rows(outputs.get("priority")):
        value = int(_number(row.get("priority")))
        priority = value if priority is None else max(priority, value)
        fired.append(f"priority:{row.get('rule', '?')}")

    holds: list[Hold] = []
    warnings: list[Warning] = []
    tags: list[str] = []
    for row in _rows(outputs.get("holds")):
        rule = f"holds:{row.get('rule', '?')}"
        fired.append(rule)
        action = row.get("action") or "hold"
        code = _text(row.get("code")) or str(row.get("rule", "manual"))
        reason = row.get("reason") if isinstance(row.get("reason"), str) else ""
        if action == "tag":
            if code not in tags:
                tags.append(code)
        elif action == "warn":
            if all(w.code != code for w in warnings):
                warnings.append(Warning(code, reason, rule))
        elif all(h.code != code for h in holds):  # anything else holds: a typo must not wave an order through
            holds.append(Hold(code, reason, rule))

    gift_rows = _rows(outputs.get("gifts"))
    fired.extend([f"gifts:{row.get('rule', '?')}" for row in gift_rows])
    gifts = _gifts(order, gift_rows) if gift_rows else ()

    carrier = None
    for row in _rows(outputs.get("carrier"))[:1]:
        carrier = _text(row.get("carrier"))
        fired.append(f"carrier:{row.get('rule', '?')}")

    separate: dict[int, str] = {}
    if len(order.lines) > 1:
        for line_no, result in line_outputs.items():
            for row in _rows(result)[:1]:
                package = _text(row.get("package"))
                if package:
                    separate[line_no] = package
                rule = f"split:{row.get('rule', '?')}"
                if rule not in fired:
                    fired.append(rule)

    return Decision(
        warehouse=warehouse,
        priority=priority or 0,
        holds=tuple(holds),
        warnings=tuple(warnings),
        gifts=gifts,
        carrier=carrier,
        tags=tuple(tags),
        separate_lines=separate,
        fired=tuple(fired),
    )


def _yuan(fen: int) -> str:
    whole, cents = divmod(fen, 100)
    return f"{whole}.{cents:02d}"


@lru_cache(maxsize=256)
def _reached_message(kind: str, need: int, name: str, qty: int) -> str:
    if kind == "spend":
        label = f"满¥{need // 100}" if need % 100 == 0 else f"满¥{_yuan(need)}"
    else:
        label = f"满{need}件" if kind == "qty" else f"会员等级V{need}"
    return f"{label}赠 {name}×{qty}"


def _shortfall_message(kind: str, shortfall: int) -> str:
    if kind == "spend":
        return f"未达赠品门槛：差¥{_yuan(shortfall)}"
    if kind == "qty":
        return f"未达赠品门槛：差{shortfall}件"
    return f"未达赠品门槛：会员等级差{shortfall}级"


def _gifts(order: AuditOrder, rows: list[dict[str, Any]]) -> tuple[GiftDecision, ...]:
    """Compare each offer's threshold with the order: every reached tier, plus the nearest unreached one.

    Rows with the same `offer` (default: their `kind`) are tiers of one offer; a buyer short of
    several tiers is told only about the nearest, which is the one worth aiming for.
    """
    offers: dict[tuple[str, str], list[tuple[int, str, int, dict[str, Any]]]] = {}
    for row in rows:
        kind = row.get("kind") or "spend"
        sku = row.get("sku")
        if kind not in _GIFT_KINDS or not sku or not isinstance(sku, str):
            continue
        threshold = _number(row.get("threshold"))
        need = round(threshold * 100) if kind == "spend" else math.ceil(threshold)  # units and levels round up
        qty = row.get("qty", 1)
        qty = max(1, int(qty)) if isinstance(qty, int | float) and not isinstance(qty, bool) else 1
        tiers = offers.get((kind, row.get("offer") or kind))
        if tiers is None:
            offers[(kind, row.get("offer") or kind)] = [(need, sku, qty, row)]
        else:
            tiers.append((need, sku, qty, row))
    if not offers:
        return ()
    have = {"spend": order.paid - order.shipping, "qty": 0, "level": vip_level(order.buyer_level)}
    if any(kind == "qty" for kind, _ in offers):
        have["qty"] = sum(line.qty for line in order.lines if not line.gift)
    decisions: list[GiftDecision] = []
    for (kind, _), tiers in offers.items():
        if len(tiers) > 1:
            tiers.sort(key=_tier_need)
        for need, sku, qty, row in tiers:
            shortfall = need - have[kind]
            if shortfall <= 0:
                name = row.get("name") or sku
                message = _reached_message(kind, need, name if isinstance(name, str) else sku, qty)
                decisions.append(GiftDecision(f"gifts:{row.get('rule', '?')}", sku, qty, True, 0, message))
            else:
                message = _shortfall_message(kind, shortfall)
                decisions.append(GiftDecision(f"gifts:{row.get('rule', '?')}", sku, qty, False, shortfall, message))
                break
    return tuple(decisions)


def _tier_need(tier: tuple[int, str, int, dict[str, Any]]) -> int:
    return tier[0]
