"""Notification templates: Jinja2 in a sandbox, the default Chinese texts, and the variables an order offers.

Ops edit templates in the console, so they render in Jinja's immutable sandbox (no access to
Python internals, no mutation of the variables, bounded repetition) with StrictUndefined: a
misspelt variable is refused when the template is saved — every variable a template names, in
every branch, must be one OrderHub supplies — not discovered when a buyer should have been told.

The variables are masked by construction: the buyer's name and phone as the platform masked
them, the address cut after the district. A rendered text is scanned once more for anything
shaped like a mobile number, which is masked too, in case a caller's context carried one in.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2 import StrictUndefined, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.pii import mask_name, mask_phone
from orderhub.domain.status import LABELS_ZH

SHANGHAI = ZoneInfo("Asia/Shanghai")
CHANNELS = ("sms", "wecom", "dingtalk", "email", "webhook")
MAX_REPEAT = 10_000  # "x" * n in a template: beyond this it is a mistake (or an attempt to exhaust memory)

CHANNEL_NAMES_ZH = {
    "douyin": "抖店", "taobao": "淘宝", "tmall": "天猫", "jd": "京东", "pdd": "拼多多", "youzan": "有赞",
    "wechat_channels": "视频号小店", "kuaishou": "快手", "pos": "门店", "file": "文件导入",
}
# Carrier codes as the carrier rules name them (SF, ZTO ...) and as platforms do (抖店 shunfeng ...).
CARRIER_NAMES_ZH = {
    "sf": "顺丰速运", "shunfeng": "顺丰速运", "zto": "中通快递", "zhongtong": "中通快递", "yto": "圆通速递",
    "yuantong": "圆通速递", "yd": "韵达快递", "yunda": "韵达快递", "sto": "申通快递", "shentong": "申通快递",
    "jd": "京东快递", "ems": "邮政EMS", "youzhengguonei": "邮政快递包裹", "dbl": "德邦快递", "debangwuliu": "德邦快递",
    "jt": "极兔速递", "jtexpress": "极兔速递", "cainiao": "菜鸟速递",
}
LOGISTICS_LABELS_ZH = {
    "none": "待揽收", "collected": "已揽收", "in_transit": "运输中", "out_for_delivery": "派件中", "delivered": "已签收",
    "stalled": "滞留", "returned": "退回", "rejected": "拒收", "lost": "丢失", "damaged": "破损",
    "address_issue": "地址异常", "customs": "清关异常",
}
# The stall rules (tracking) by the names they fire under, with or without the ticket's "stall_" prefix.
STALL_LABELS_ZH = {
    "no_first_scan": "发货后长时间未揽收", "in_transit": "运输途中长时间未更新", "no_update": "运输途中长时间未更新",
    "no_update_24h": "超过24小时无物流更新", "no_update_48h": "超过48小时无物流更新",
    "scan_before_ship": "揽收时间晚于发货时间超过2小时", "ship_before_scan": "揽收时间晚于发货时间超过2小时",
}
OUTCOME_LABELS_ZH = {
    "intercepted": "拦截成功", "too_late": "拦截未成功：包裹已打包或已发出", "address_updated": "地址已更新",
    "remark_updated": "备注已更新", "carrier_intercept": "已申请快递拦截", "return": "已转退货处理",
}
INSTRUCTION_LABELS_ZH = {
    "cancel": "取消订单", "address": "修改地址", "address_change": "修改地址", "remark": "修改备注", "remark_change": "修改备注",
}

# What each event's caller puts in `context` (besides "key"), with a sample used to validate templates.
EVENT_CONTEXT: dict[str, dict[str, Any]] = {
    "shipped": {},
    "delivered": {},
    "stalled": {"stall": "no_first_scan", "hours": 24},
    "intercept_result": {"outcome": "intercepted", "instruction": "cancel"},
    "freeze_alert": {"instruction": "cancel", "reason": "买家申请取消"},
}
_OUTCOME_SAMPLES = (("intercepted", "cancel"), ("too_late", "cancel"), ("address_updated", "address"))

# A shipped 抖店 order as the orders table holds it: what a template is rendered against when it is saved.
SAMPLE_ORDER: dict[str, Any] = {
    "id": "5d41402abc4b2a76b9719d911017c592", "channel": "douyin", "shop_id": "88880001", "original_id": "4951234567890123456",
    "status": "shipped", "buyer": {"name": "张*", "phone": "138****0000"},
    "address": {"province": "浙江省", "city": "杭州市", "district": "西湖区", "detail": "***"},
    "shipment": {"carrier": "SF", "waybill_no": "SF1234567890123", "logistics_status": "in_transit"},
    "carrier": "SF", "warehouse": "WH-EAST", "paid": 13470,
}


@dataclass(frozen=True, slots=True)
class DefaultTemplate:
    name: str
    channel: str
    subject: str | None
    body: str


def _webhook(event: str, *extra: str) -> str:
    fields = ["order_id", "order_no", "channel", "shop_id", "status", "carrier", "waybill_no", "logistics_status", *extra]
    inner = ", ".join(f'"{f}": {{{{ {f}|tojson }}}}' for f in fields)
    return '{"event": "' + event + '", ' + inner + "}"


_CS_CARD = (
    "> 订单：{{ order_no }}（{{ channel_name }} · {{ shop }}）\n"
    "> 快递：{{ carrier_name }} {{ waybill_no }}\n"
    "> 买家：{{ buyer_name }} {{ buyer_phone }}\n"
    "> 收货地：{{ province }}{{ city }}{{ district }}\n"
)
_FREEZE = (
    "### <font color=\"warning\">冻结指令：{{ instruction_label }}</font>\n"
    "> 订单：{{ order_no }}（{{ channel_name }} · {{ shop }}）\n"
    "> 仓库：{{ warehouse }}\n"
    "> 时间：{{ time }}\n"
    "{% if reason is defined and reason %}> 原因：{{ reason }}\n{% endif %}"
    "请立即停止拣货/打包该订单；已打包的请在WMS中回报。"
)
_INTERCEPT_CS = (
    "### 拦截结果：{{ outcome_label }}\n"
    "> 指令：{{ instruction_label }}\n" + _CS_CARD +
    "{% if outcome == 'too_late' %}包裹已打包或已发出，已转快递拦截/退货处理，请跟进。{% else %}无需进一步处理。{% endif %}"
)
_STALLED_CS = "### 物流异常：{{ stall_label }}\n" + _CS_CARD + "> 物流状态：{{ logistics_label }}\n请客服跟进并联系快递核实。"

DEFAULT_TEMPLATES: tuple[DefaultTemplate, ...] = (
    DefaultTemplate("shipped", "sms", None,
                    "【{{ shop }}】亲，您在{{ channel_name }}购买的订单{{ order_no }}已发货，{{ carrier_name }}运单号{{ waybill_no }}，请留意查收。"),
    DefaultTemplate("shipped", "webhook", None, _webhook("shipped")),
    DefaultTemplate("stalled", "sms", None,
                    "【{{ shop }}】亲，您的订单{{ order_no }}（{{ carrier_name }} {{ waybill_no }}）物流暂时没有更新，"
                    "我们已联系快递加急处理，给您带来不便敬请谅解。"),
    DefaultTemplate("stalled", "wecom", None, _STALLED_CS),
    DefaultTemplate("stalled", "dingtalk", "物流异常：{{ order_no }}", _STALLED_CS),
    DefaultTemplate("stalled", "email", "【物流异常】订单{{ order_no }}：{{ stall_label }}",
                    "物流异常：{{ stall_label }}\n\n订单：{{ order_no }}（{{ channel_name }} · {{ shop }}）\n"
                    "快递：{{ carrier_name }} {{ waybill_no }}（{{ logistics_label }}）\n买家：{{ buyer_name }} {{ buyer_phone }}\n"
                    "收货地：{{ province }}{{ city }}{{ district }}\n\n请客服跟进并联系快递核实。\n— OrderHub 订单中枢"),
    DefaultTemplate("stalled", "webhook", None, _webhook("stalled", "stall")),
    DefaultTemplate("delivered", "sms", None,
                    "【{{ shop }}】亲，您的订单{{ order_no }}已签收（{{ carrier_name }} {{ waybill_no }}），如有任何问题请联系客服。"),
    DefaultTemplate("delivered", "webhook", None, _webhook("delivered")),
    DefaultTemplate("intercept_result", "sms", None,
                    "【{{ shop }}】{% if outcome == 'intercepted' %}您的订单{{ order_no }}已成功取消，款项将按原路退回。"
                    "{% elif outcome == 'address_updated' %}您的订单{{ order_no }}收货地址已更新为{{ province }}{{ city }}{{ district }}。"
                    "{% else %}您的订单{{ order_no }}已发出，我们已为您申请快递拦截，包裹退回后将为您处理退款。{% endif %}"),
    DefaultTemplate("intercept_result", "wecom", None, _INTERCEPT_CS),
    DefaultTemplate("intercept_result", "dingtalk", "拦截结果：{{ order_no }}", _INTERCEPT_CS),
    DefaultTemplate("intercept_result", "email", "【拦截结果】订单{{ order_no }}：{{ outcome_label }}",
                    "拦截结果：{{ outcome_label }}\n指令：{{ instruction_label }}\n\n订单：{{ order_no }}（{{ channel_name }} · {{ shop }}）\n"
                    "快递：{{ carrier_name }} {{ waybill_no }}\n买家：{{ buyer_name }} {{ buyer_phone }}\n\n"
                    "{% if outcome == 'too_late' %}包裹已打包或已发出，已转快递拦截/退货处理，请跟进。{% else %}无需进一步处理。{% endif %}\n\n"
                    "— OrderHub 订单中枢"),
    DefaultTemplate("intercept_result", "webhook", None, _webhook("intercept_result", "outcome", "instruction")),
    DefaultTemplate("freeze_alert", "wecom", None, _FREEZE),
    DefaultTemplate("freeze_alert", "dingtalk", "冻结指令：{{ order_no }}", _FREEZE),
)


# -- the sandbox --------------------------------------------------------------------------------


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, which also refuses huge repetitions ("x" * 10**9) and powers."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise jinja2.sandbox.SecurityError("exponent too large")
        if operator == "*":
            count = right if isinstance(left, str | list | tuple) else left if isinstance(right, str | list | tuple) else None
            if isinstance(count, int) and count > MAX_REPEAT:
                raise jinja2.sandbox.SecurityError(f"repetition over {MAX_REPEAT}")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def _problem(field: str, exc: Exception) -> OrderHubError:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return OrderHubError(ErrorCode.TEMPLATE_INVALID, f"{field} 第{exc.lineno}行 / line {exc.lineno}: {exc.message}", field)
    return OrderHubError(ErrorCode.TEMPLATE_INVALID, f"{field}: {type(exc).__name__}: {exc}", field)


def render_text(source: str, variables: Mapping[str, Any], *, field: str = "body", keep: Collection[str] = ()) -> str:
    """The rendered text, mobile numbers masked (except the identifiers in `keep`). Raises
    OrderHubError(TEMPLATE_INVALID) naming the field and Jinja's error."""
    try:
        text = _compiled(source).render(variables)
    except Exception as exc:  # syntax, undefined, sandbox, and errors the template's own expressions raise
        raise _problem(field, exc) from None
    return mask_mobiles(text, keep)


def check_names(source: str, known: Collection[str], *, field: str) -> None:
    """Every variable the template names, in any branch, must be one OrderHub supplies."""
    try:
        names = meta.find_undeclared_variables(_ENV.parse(source))
    except jinja2.TemplateSyntaxError as exc:
        raise _problem(field, exc) from None
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise OrderHubError(ErrorCode.TEMPLATE_INVALID, f"{field}: '{unknown[0]}' is undefined (known: {', '.join(sorted(known))})", field)


_MOBILE = re.compile(r"(?<![\d*])(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)")


def mask_mobiles(text: str, keep: Collection[str] = ()) -> str:
    """"13800001234" anywhere in the text -> "138****1234", unless it is one of `keep` (an order or waybill number)."""
    return _MOBILE.sub(lambda m: m.group(0) if m.group(0) in keep else mask_phone(m.group(0)) or "***", text)


# -- variables ----------------------------------------------------------------------------------


def channel_name(code: str | None) -> str:
    return CHANNEL_NAMES_ZH.get(code or "", code or "")


def carrier_name(code: str | None) -> str:
    return CARRIER_NAMES_ZH.get((code or "").lower(), code or "")


def local_time(value: datetime) -> str:
    return value.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _masked_phone(phone: str | None) -> str:
    if not phone:
        return ""
    return phone if "*" in phone else mask_phone(phone) or "***"


def order_variables(order: Mapping[str, Any], *, shop_name: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """What every template may use, from an orders row (or SAMPLE_ORDER); nothing here is plaintext PII."""
    buyer = order.get("buyer") or {}
    address = order.get("address") or {}
    shipment = order.get("shipment") or {}
    carrier = shipment.get("carrier") or order.get("carrier") or ""
    status = order.get("status") or ""
    logistics = shipment.get("logistics_status") or ""
    paid = order.get("paid")
    return {
        "order_id": order["id"], "order_no": order["original_id"],
        "channel": order["channel"], "channel_name": channel_name(order["channel"]),
        "shop_id": order["shop_id"], "shop": shop_name or order["shop_id"],
        "buyer_name": mask_name(buyer.get("name")) or "买家", "buyer_phone": _masked_phone(buyer.get("phone")),
        "province": address.get("province") or "", "city": address.get("city") or "", "district": address.get("district") or "",
        "status": status, "status_label": LABELS_ZH.get(status, status),  # type: ignore[call-overload]
        "carrier": carrier, "carrier_name": carrier_name(carrier), "waybill_no": shipment.get("waybill_no") or "",
        "logistics_status": logistics, "logistics_label": LOGISTICS_LABELS_ZH.get(logistics, logistics),
        "warehouse": order.get("warehouse") or "",
        "paid_yuan": f"{paid // 100}.{paid % 100:02d}" if isinstance(paid, int) else "",
        "time": local_time(now or datetime.now(UTC)),
    }


def context_variables(context: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's context (less its idempotency discriminator "key"), times shown in Asia/Shanghai
    and codes given their Chinese labels (stall -> stall_label, outcome -> outcome_label, ...)."""
    out = {k: (local_time(v) if isinstance(v, datetime) else v) for k, v in context.items() if k != "key"}
    for code, labels, label in (("stall", STALL_LABELS_ZH, "stall_label"), ("outcome", OUTCOME_LABELS_ZH, "outcome_label"),
                                ("instruction", INSTRUCTION_LABELS_ZH, "instruction_label")):
        if code in context and label not in context:
            value = str(context[code])
            out[label] = labels.get(value.removeprefix("stall_"), value)
    return out


def known_names(name: str) -> set[str]:
    """Variable names a template of event `name` may use."""
    contexts = [EVENT_CONTEXT[name]] if name in EVENT_CONTEXT else list(EVENT_CONTEXT.values())
    names = set(order_variables(SAMPLE_ORDER))
    for context in contexts:
        names |= set(context_variables(context))
    return names


def samples(name: str) -> list[dict[str, Any]]:
    """Sample contexts an event's template is rendered with on save (every intercept outcome)."""
    base = EVENT_CONTEXT.get(name, {})
    if name == "intercept_result":
        return [{**base, "outcome": outcome, "instruction": instruction} for outcome, instruction in _OUTCOME_SAMPLES]
    if name in EVENT_CONTEXT:
        return [dict(base)]
    merged: dict[str, Any] = {}
    for context in EVENT_CONTEXT.values():
        merged.update(context)
    return [merged]
