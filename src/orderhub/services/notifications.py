"""Notifications: an order event's templates rendered per recipient, one outbox row each, and the order's event log.

`Notifier.notify` runs inside the caller's transaction, the one that makes the change being told
about (shipped, stalled, intercepted, frozen), so a notification exists exactly when the change
commits and the relay sends it after. Nothing here can fail that transaction for a notification's
sake: a template that no longer renders, a buyer without a decrypted phone or a recipient over its
rate limit is written to the order's event log instead of being sent.

Replays are harmless: the idempotency key derives from (order, event, channel, recipient, the
caller's `context["key"]`), so the same event told twice enqueues nothing more and logs nothing more.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from orderhub.adapters.db import audit_log_repo, outbox_repo
from orderhub.adapters.db.tables import notification_templates, order_events, orders, outbox
from orderhub.adapters.notify import templates as tpl
from orderhub.domain.access import Actor, as_actor
from orderhub.domain.errors import ErrorCode, OrderHubError

log = logging.getLogger(__name__)

ACTOR = "notifier"
PEOPLE_KINDS = "notify."  # kind prefix of the channels that reach a person (rate-limited)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ORDER_COLUMNS = (orders.c.id, orders.c.channel, orders.c.shop_id, orders.c.original_id, orders.c.status, orders.c.buyer,
                  orders.c.address, orders.c.shipment, orders.c.carrier, orders.c.warehouse, orders.c.paid, orders.c.phone_hash,
                  orders.c.pii_sealed)
_t = notification_templates.c


# -- rate limits ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: int  # at most this many notifications to one recipient ...
    window: timedelta = timedelta(hours=1)  # ... within this long


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Which limit applies to a notification: its template's, else its channel's, else the default.
    What is counted is every notification that recipient got on a person-facing channel within the
    window (outbox_repo.sent_to_recipient_since), queued ones included; None means unlimited."""

    default: RateLimit | None = RateLimit(5)
    # a robot takes 20 messages a minute (WeCom, DingTalk); integrations need every event
    channels: Mapping[str, RateLimit | None] = field(default_factory=lambda: {
        "wecom": RateLimit(20, timedelta(minutes=1)), "dingtalk": RateLimit(20, timedelta(minutes=1)), "webhook": None})
    templates: Mapping[str, RateLimit | None] = field(default_factory=dict)

    def limit_for(self, template: str, channel: str) -> RateLimit | None:
        if channel != "webhook" and template in self.templates:  # a template's limit is about people, not integrations
            return self.templates[template]
        return self.channels[channel] if channel in self.channels else self.default

    @classmethod
    def from_settings(cls, data: Mapping[str, Any]) -> RateLimits:
        """{"default": {"count": 5, "window_s": 3600}, "channels": {"wecom": {...}}, "templates": {"freeze_alert": null}}"""
        def one(value: Any) -> RateLimit | None:
            return None if value is None else RateLimit(int(value["count"]), timedelta(seconds=float(value.get("window_s", 3600))))

        base = cls()
        return cls(
            default=one(data["default"]) if "default" in data else base.default,
            channels={**base.channels, **{k: one(v) for k, v in (data.get("channels") or {}).items()}},
            templates={k: one(v) for k, v in (data.get("templates") or {}).items()},
        )


# -- recipients ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """"wecom:cs-group" -> a configured robot; "email:cs@shop.example"; "webhook:erp"; "sms" -> the order's buyer."""

    channel: str
    target: str | None

    @classmethod
    def parse(cls, text: str) -> Route:
        channel, _, target = text.partition(":")
        if channel not in tpl.CHANNELS:
            raise ValueError(f"notification route {text!r}: channel must be one of {', '.join(tpl.CHANNELS)}")
        if channel != "sms" and not target:
            raise ValueError(f"notification route {text!r}: {channel} needs a target ({channel}:NAME)")
        return cls(channel, target or None)


@dataclass(frozen=True, slots=True)
class _Recipient:
    key: str  # outbox.recipient: who, for the rate limit (a buyer is the keyed hash of the phone)
    masked: str  # what the event log shows
    endpoint: str  # one circuit breaker each
    kind: str


def _recipient(route: Route, order: Mapping[str, Any], buyer_phone: str) -> _Recipient | None:
    channel, target = route.channel, route.target
    if channel == "sms":
        if not order["phone_hash"] or not order["pii_sealed"]:
            return None
        return _Recipient(order["phone_hash"], buyer_phone or "买家", "sms", "notify.sms")
    if channel == "email":
        return _Recipient(f"email:{target}", f"email:{mask_email(target or '')}", "email", "notify.email")
    if channel == "webhook":
        return _Recipient(f"webhook:{target}", f"webhook:{target}", target or "webhook", "webhook")
    return _Recipient(f"{channel}:{target}", f"{channel}:{target}", f"{channel}:{target}", f"notify.{channel}")


def mask_email(address: str) -> str:
    """"cs-lead@shop.example" -> "c***@shop.example"."""
    local, at, domain = address.partition("@")
    return f"{local[:1]}***{at}{domain}" if at else "***"


def idempotency_key(order_id: str, event: str, channel: str, recipient: str, discriminator: str) -> str:
    return hashlib.sha256("\x1f".join(("notify", order_id, event, channel, recipient, discriminator)).encode()).hexdigest()


# -- the notifier --------------------------------------------------------------------------------


class Notifier:
    def __init__(self, engine: sa.Engine, *, recipients: Mapping[str, Sequence[str]], limits: RateLimits | None = None,
                 shop_names: Mapping[tuple[str, str], str] | None = None) -> None:
        """recipients: audience role -> routes, e.g. {"cs": ["wecom:cs-group"], "warehouse": ["dingtalk:wh-east"], "buyer": ["sms"]};
        shop_names: (channel, shop_id) -> the shop's name, shown as {{ shop }}."""
        self.engine = engine
        self.routes = {role: [Route.parse(r) for r in routes] for role, routes in recipients.items()}
        self.limits = limits or RateLimits()
        self.shop_names = dict(shop_names or {})

    def notify(self, conn: sa.Connection, order_id: str, event: str, *, context: Mapping[str, Any] | None = None,
               audience: Sequence[str] = ("buyer",), now: datetime) -> list[int]:
        """Enqueue `event` for every recipient of `audience` whose channel has an enabled template; the outbox ids."""
        context = dict(context or {})
        order = _load_order(conn, order_id)
        templates = {row["channel"]: row for row in conn.execute(
            sa.select(notification_templates).where(_t.name == event, _t.enabled.is_(True))).mappings()}
        variables = _variables(order, context, self.shop_names.get((order["channel"], order["shop_id"])), now)
        discriminator = str(context.get("key", ""))
        ids: list[int] = []
        told: set[str] = set()
        for route in (r for role in audience for r in self.routes.get(role, ())):
            template = templates.get(route.channel)
            if template is None:
                continue  # this event says nothing on that channel
            outbox_id = self._tell(conn, order, event, route, template, variables, discriminator, told, now)
            if outbox_id is not None:
                ids.append(outbox_id)
        return ids

    def _tell(self, conn: sa.Connection, order: Mapping[str, Any], event: str, route: Route, template: Mapping[str, Any],
              variables: Mapping[str, Any], discriminator: str, told: set[str], now: datetime) -> int | None:
        """One recipient: enqueued, or skipped, held by its limit or unrenderable (each logged on the order), or already told."""
        base = {"channel": route.channel, "template": event, "version": template["version"]}
        recipient = _recipient(route, order, variables["buyer_phone"])
        if recipient is None:
            _log(conn, order, now, "notify_skipped", f"未通知买家（{route.channel}）：没有已解密的买家手机号", base)
            return None
        if recipient.key in told:
            return None  # the same robot or address named for two roles: told once
        told.add(recipient.key)
        key = idempotency_key(order["id"], event, route.channel, recipient.key, discriminator)
        if conn.execute(sa.select(outbox.c.id).where(outbox.c.idempotency_key == key)).first() is not None:
            return None  # a replayed event: already told, already logged
        data = {**base, "recipient": recipient.masked}
        limit = self.limits.limit_for(event, route.channel)
        if limit is not None and _count_since(conn, recipient, now - limit.window) >= limit.count:
            window = int(limit.window.total_seconds())
            _log(conn, order, now, "notify_limited", f"未通知 {recipient.masked}：超过频率限制（{limit.count} 条 / {window} 秒）",
                 {**data, "limit": limit.count, "window_s": window})
            return None
        try:
            payload = _payload(route, recipient, template, variables, order, keep=_identifiers(order, variables))
        except OrderHubError as exc:
            log.warning("notification %s/%s for order %s not rendered: %s", event, route.channel, order["id"], exc.message)
            _log(conn, order, now, "notify_failed", f"通知模板无法渲染：{exc.message}", {**data, "error": exc.message})
            return None
        outbox_id = outbox_repo.enqueue(
            conn, kind=recipient.kind, endpoint=recipient.endpoint, payload=payload, idempotency_key=key, order_id=order["id"],
            recipient=recipient.key, priority=1 if event == "freeze_alert" else 0, now=now,  # the warehouse must stop picking now
        )
        if outbox_id is not None:  # None: a concurrent replay enqueued it since the check above
            _log(conn, order, now, "notified", f"已通知 {recipient.masked}（{route.channel}，模板 {event} v{template['version']}）",
                 {**data, "outbox_id": outbox_id})
        return outbox_id

    def render(self, conn: sa.Connection, name: str, channel: str, order: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[str | None, str]:
        """(subject, body) of one stored template (enabled or not) for an orders row."""
        row = _template_row(conn, name, channel)
        variables = _variables(order, context, self.shop_names.get((order["channel"], order["shop_id"])), datetime.now(UTC))
        return _render(row["subject"], row["body"], variables, keep=_identifiers(order, variables))


def _count_since(conn: sa.Connection, recipient: _Recipient, since: datetime) -> int:
    prefix = "webhook" if recipient.kind == "webhook" else PEOPLE_KINDS
    return outbox_repo.sent_to_recipient_since(conn, recipient.key, since, kind_prefix=prefix)


def _load_order(conn: sa.Connection, order_id: str) -> Mapping[str, Any]:
    row = conn.execute(sa.select(*_ORDER_COLUMNS).where(orders.c.id == order_id)).mappings().first()
    if row is None:
        raise OrderHubError(ErrorCode.NOT_FOUND, f"order {order_id} does not exist", "order_id")
    return row


def _template_row(conn: sa.Connection, name: str, channel: str) -> Mapping[str, Any]:
    row = conn.execute(sa.select(notification_templates).where(_t.name == name, _t.channel == channel)).mappings().first()
    if row is None:
        raise OrderHubError(ErrorCode.NOT_FOUND, f"no notification template {name}/{channel}", "name")
    return row


def _variables(order: Mapping[str, Any], context: Mapping[str, Any], shop_name: str | None, now: datetime) -> dict[str, Any]:
    return {**tpl.order_variables(order, shop_name=shop_name, now=now), **tpl.context_variables(context)}


def _identifiers(order: Mapping[str, Any], variables: Mapping[str, Any]) -> set[str]:
    """Numbers that may look like a mobile number but are not one: never masked."""
    return {str(v) for v in (order.get("original_id"), order.get("id"), variables.get("waybill_no")) if v}


def _render(subject: str | None, body: str, variables: Mapping[str, Any], *, keep: set[str]) -> tuple[str | None, str]:
    rendered_subject = tpl.render_text(subject, variables, field="subject", keep=keep).strip() if subject else None
    return rendered_subject, tpl.render_text(body, variables, field="body", keep=keep).strip()


def _webhook_payload(body: str) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OrderHubError(ErrorCode.TEMPLATE_INVALID, f"body: a webhook template must render to JSON ({exc})", "body") from None
    if not isinstance(data, dict):
        raise OrderHubError(ErrorCode.TEMPLATE_INVALID, "body: a webhook template must render to a JSON object", "body")
    return data


def _payload(route: Route, recipient: _Recipient, template: Mapping[str, Any], variables: Mapping[str, Any],
             order: Mapping[str, Any], *, keep: set[str]) -> dict[str, Any]:
    subject, body = _render(template["subject"], template["body"], variables, keep=keep)
    if route.channel == "webhook":
        return _webhook_payload(body)  # the integration receives the event itself (signed by the outbox's webhook sender)
    payload: dict[str, Any] = {"channel": route.channel, "template": template["name"], "version": template["version"], "body": body}
    if route.channel == "sms":
        payload.update(to_sealed=order["pii_sealed"], to_masked=recipient.masked)  # opened by the SMS sender only
    elif route.channel == "email":
        payload.update(to=route.target, subject=subject)
    else:
        payload.update(target=route.target, msgtype="markdown", subject=subject)
    return payload


def _log(conn: sa.Connection, order: Mapping[str, Any], now: datetime, kind: str, reason: str, data: dict[str, Any]) -> None:
    conn.execute(order_events.insert().values(order_id=order["id"], at=now, actor=ACTOR, kind=kind, reason=reason, data=data))


# -- the template store --------------------------------------------------------------------------


def _insert(conn: sa.Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(notification_templates)


def seed_templates(engine: sa.Engine, author: str = "system") -> int:
    """Add the default templates an install lacks; never touches one that exists (edited or not). How many were added."""
    now = datetime.now(UTC)
    added = 0
    with engine.begin() as conn:
        for default in tpl.DEFAULT_TEMPLATES:
            result = conn.execute(_insert(conn).values(
                name=default.name, channel=default.channel, subject=default.subject, body=default.body, version=1, enabled=True,
                updated_by=author, updated_at=now,
            ).on_conflict_do_nothing(index_elements=[_t.name, _t.channel]).returning(_t.name))
            added += len(result.all())  # RETURNING, not rowcount: psycopg reports -1 for a skipped conflict
    return added


def validate_template(name: str, channel: str, subject: str | None, body: str) -> None:
    """Refuse (TEMPLATE_INVALID, with Jinja's error) what would fail or mislead when sent: unknown
    variables in any branch, syntax errors, a failure on the sample order, webhook bodies that are not JSON."""
    if not _NAME.match(name):
        raise OrderHubError(ErrorCode.TEMPLATE_INVALID, "name: lowercase letters, digits and _ (at most 64)", "name")
    if channel not in tpl.CHANNELS:
        raise OrderHubError(ErrorCode.TEMPLATE_INVALID, f"channel: one of {', '.join(tpl.CHANNELS)}", "channel")
    if not body or not body.strip():
        raise OrderHubError(ErrorCode.TEMPLATE_INVALID, "body: empty", "body")
    if channel == "email" and not (subject and subject.strip()):
        raise OrderHubError(ErrorCode.TEMPLATE_INVALID, "subject: an e-mail needs a subject", "subject")
    known = tpl.known_names(name)
    for text, where in ((subject, "subject"), (body, "body")):
        if text:
            tpl.check_names(text, known, field=where)
    for context in tpl.samples(name):
        variables = _variables(tpl.SAMPLE_ORDER, context, "示例旗舰店", datetime.now(UTC))
        _, rendered = _render(subject, body, variables, keep=set())
        if channel == "webhook":
            _webhook_payload(rendered)


def save_template(engine: sa.Engine, name: str, channel: str, subject: str | None, body: str, *, author: Actor | str,
                  enabled: bool | None = None) -> dict[str, Any]:
    """Create or replace a template after validating it; each save is the next version."""
    if not str(author).strip():
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "say who (author is required)", "author")
    who = as_actor(author)
    author = who.name
    subject = subject or None
    validate_template(name, channel, subject, body)
    now = datetime.now(UTC)
    values = {"subject": subject, "body": body, "updated_by": author.strip(), "updated_at": now}
    for attempt in range(2):
        try:
            with engine.begin() as conn:
                query = sa.select(_t.version).where(_t.name == name, _t.channel == channel)
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update()  # two saves of one template: versions 2 and 3, never 2 twice
                if conn.execute(query).scalar_one_or_none() is None:
                    before = None
                    conn.execute(notification_templates.insert().values(
                        name=name, channel=channel, version=1, enabled=True if enabled is None else enabled, **values))
                else:
                    before = _audited(_template_row(conn, name, channel))
                    extra = {} if enabled is None else {"enabled": enabled}
                    conn.execute(sa.update(notification_templates).where(_t.name == name, _t.channel == channel)
                                 .values(version=_t.version + 1, **values, **extra))
                saved = _plain(_template_row(conn, name, channel))
                audit_log_repo.record(conn, who, "template.save", "template", f"{name}/{channel}", before=before, after=_audited(saved), at=now)
                return saved
        except sa.exc.IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _audited(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("version", "subject", "body", "enabled")}


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in row.items()}  # SQLAlchemy's keys are a str subclass orjson refuses


def list_templates(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect().execution_options(readonly=True) as conn:
        rows = conn.execute(sa.select(notification_templates).order_by(_t.name, _t.channel)).mappings()
        return [_plain(row) for row in rows]


def preview(engine: sa.Engine, name: str, channel: str, order_id: str, context: Mapping[str, Any] | None = None, *,
            shop_names: Mapping[tuple[str, str], str] | None = None) -> dict[str, Any]:
    """What the stored template says for a real order (nothing is sent)."""
    with engine.connect().execution_options(readonly=True) as conn:
        order = _load_order(conn, order_id)
        row = _template_row(conn, name, channel)
    context = dict(context) if context is not None else tpl.samples(name)[0]
    shop = (shop_names or {}).get((order["channel"], order["shop_id"]))
    variables = _variables(order, context, shop, datetime.now(UTC))
    subject, body = _render(row["subject"], row["body"], variables, keep=_identifiers(order, variables))
    return {"name": name, "channel": channel, "version": row["version"], "enabled": row["enabled"], "subject": subject, "body": body}
