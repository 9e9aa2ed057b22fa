"""Response models: they document the public contract in the OpenAPI description."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


# The old `actor` / `author` body fields, kept for compatibility (docs/security.md).
ACTOR_NOTE = "ignored for users: the login is who acts; an API key may name the person it acts for (recorded as key:<name>/<actor>)"


class Error(BaseModel):
    code: str = Field(description="stable error code, e.g. signature_invalid, not_found")
    message: str
    field: str | None = None


class Amounts(BaseModel):
    goods: int = Field(description="Σ unit_price × qty, fen")
    discount: int = Field(description="every reduction the buyer got, fen")
    discount_shop: int | None = Field(description="part borne by the merchant; null where the channel does not say")
    discount_platform: int | None = Field(description="part borne by the platform; null where the channel does not say")
    shipping: int
    paid: int = Field(description="paid = goods − discount + shipping")


class Line(BaseModel):
    sku: str | None
    platform_sku_id: str | None
    platform_line_id: str | None
    title: str
    qty: int
    unit_price: int
    paid: int
    gift: bool
    refund_status: str = Field(description="none | refunding | refunded")


class Customer(BaseModel):
    id: str | None
    name: str | None = Field(description="masked, e.g. 张*")
    phone: str | None = Field(description="masked, e.g. 138****0000")
    level: str | None
    channels: list[str]


class Order(BaseModel):
    id: str = Field(description='md5("<channel>:<original_id>")')
    channel: str
    shop_id: str
    original_id: str
    status: str
    platform_status: dict[str, Any]
    created_at: str
    paid_at: str | None
    updated_at: str = Field(description="the platform's update time; newer wins")
    currency: str
    amounts: Amounts
    customer: Customer
    address: dict[str, Any]
    buyer_message: str | None
    seller_remark: str | None
    lines: list[Line]
    warehouse: str | None
    priority: int
    holds: list[dict[str, Any]]
    tags: list[str]
    shipment: dict[str, Any] | None
    rule_version: str | None = Field(description="the published audit configuration that decided it, e.g. audit@7")
    carrier: str | None = Field(None, description="carrier chosen by the carrier rules (SF, ZTO, EMS …)")
    gifts: list[dict[str, Any]] = Field(default_factory=list, description="gift offers: {rule, sku, qty, reached, shortfall, message}, e.g. 未达赠品门槛：差¥12.50")
    merge_group: str | None = Field(None, description="orders with the same group ship as one package (合单)")
    packages: list[dict[str, Any]] = Field(default_factory=list, description="what is reserved from which warehouse: [{package_no, warehouse, lines: [{line_no, sku, qty, gift, status}]}]")
    audit: dict[str, Any] | None = Field(None, description="audit state (pending / done / short), when, what each rule set decided, holds a person released")
    version: int = Field(description="increments on every change (optimistic concurrency)")


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")


class OrderEvent(BaseModel):
    id: int
    at: str
    actor: str
    kind: str
    from_: str | None = Field(alias="from")
    to: str | None
    reason: str | None
    data: Any = None


class CustomerDetail(BaseModel):
    id: str
    name: str | None
    phone: str | None
    level: str | None
    channels: list[str]
    order_count: int
    first_seen_at: str
    last_order_at: str | None


class QuarantineItem(BaseModel):
    id: int
    inbox_id: int | None
    channel: str
    shop_id: str | None
    original_id: str | None
    item_kind: str = Field(description="body (not the push envelope) | message | order")
    code: str
    message: str
    field: str | None
    created_at: str
    status: str = Field(description="open | replayed")
    replayed_at: str | None
    replay_inbox_id: int | None
    size: int


class QuarantinePage(BaseModel):
    items: list[QuarantineItem]
    next_cursor: int | None


class ReplayResult(BaseModel):
    quarantine_id: int
    replay_inbox_id: int
    result: str = Field(description="processed | quarantined | retrying")
    outcomes: dict[str, int]
    new_quarantine: list[dict[str, Any]]


class ChannelConnection(BaseModel):
    state: str = Field(description="connecting | connected | disconnected")
    since: datetime
    detail: str | None = Field(description="why it dropped, e.g. a close code or an expired token")


class ChannelError(BaseModel):
    at: datetime
    message: str


class ChannelStatus(BaseModel):
    channel: str
    shop_id: str
    name: str
    transport: str = Field(description="push (webhook) | stream (淘宝 TMC, 拼多多 PMC) | pull | file")
    state: str = Field(description="connected | lagging | failing")
    reason: str | None = Field(description="why lagging or failing")
    last_message_at: datetime | None = Field(description="last push, stream message or non-empty pull (this process)")
    backlog: int = Field(description="kept messages of this shop not yet processed")
    oldest_pending_at: datetime | None
    connection: ChannelConnection | None = Field(description="the message connection, for stream channels")
    last_error: ChannelError | None
    synced_until: datetime | None = Field(description="pull channels: orders modified before this are in")


class OrderAction(BaseModel):
    reason: str = Field(description="why (kept in the order's event log)", min_length=1)
    actor: str = Field("api", description=ACTOR_NOTE, max_length=64)
    version: int | None = Field(None, description="the order version you saw; 409 `conflict` if it changed since")


class HoldAction(OrderAction):
    code: str | None = Field(None, description="one hold code; all holds when omitted (release/resolve)")


class AddressEdit(OrderAction):
    province: str
    city: str
    district: str
    detail: str | None = Field(None, description="street detail in plaintext: sealed at rest, only a mask is stored on the order")


class MergeRequest(BaseModel):
    order_ids: list[str] = Field(min_length=2)
    reason: str = Field(min_length=1)
    actor: str = Field("api", description=ACTOR_NOTE, max_length=64)


class ActionResult(BaseModel):
    id: str
    status: str
    version: int


class StockRow(BaseModel):
    sku: str
    warehouse: str
    on_hand: int
    reserved: int
    safety: int
    available: int = Field(description="on_hand − reserved − safety")
    updated_at: str | None = None


class StockPage(BaseModel):
    items: list[StockRow]
    next_cursor: str | None


class StockAdjust(BaseModel):
    warehouse: str
    delta: int = Field(description="units received (+) or written off (−)")
    reason: str = Field(min_length=1)
    actor: str = Field("api", description=ACTOR_NOTE, max_length=64)


class SafetyStock(BaseModel):
    warehouse: str
    safety: int = Field(ge=0)
    actor: str = Field("api", description=ACTOR_NOTE, max_length=64)


class RuleDraft(BaseModel):
    content: dict[str, Any] = Field(description="a GoRules JDM graph (what @gorules/jdm-editor edits)")
    note: str | None = None
    author: str = Field("api", description=ACTOR_NOTE, max_length=64)


class RulePublish(BaseModel):
    note: str | None = None
    author: str = Field("api", description=ACTOR_NOTE, max_length=64)
    version: int | None = Field(None, description="publish this stored version instead of the latest draft (rollback to it)")


class RuleSwitch(BaseModel):
    enabled: bool
    author: str = Field("api", description=ACTOR_NOTE, max_length=64)


class DryRun(BaseModel):
    order_id: str | None = Field(None, description="a stored order …")
    order: dict[str, Any] | None = Field(None, description="… or an order body in the API's shape")
    content: dict[str, Any] | None = Field(None, description="an unsaved draft; default: the set's saved draft")
    version: int | None = Field(None, description="a stored version to try instead")


class Backtest(BaseModel):
    days: float = Field(7, gt=0, le=90)
    limit: int = Field(20_000, ge=1, le=200_000)
    content: dict[str, Any] | None = None
    version: int | None = None


class JobError(BaseModel):
    code: str = Field(description="the error code the operation failed with, e.g. rule_invalid; job_abandoned when its process stopped")
    message: str
    field: str | None = None


class ImportCounts(BaseModel):
    orders: int | None = Field(description="orders in the file")
    processed: int = Field(description="orders the pipeline has processed so far")
    stored: int = Field(description="processed orders now in the store as the file says (new, updated or already identical)")
    quarantined: int = Field(description="processed orders kept in quarantine (GET /quarantine says why)")


class Job(BaseModel):
    """A long operation (back-test, file import) and how far it got (docs/console.md, Long operations)."""

    id: int
    kind: str = Field(description="backtest | import")
    state: str = Field(description="running | done | failed")
    done: int = Field(description="back-test: orders re-decided; import: inbox rows (up to 200 orders each) processed")
    total: int | None = Field(description="what `done` counts up to; null until known")
    percent: int = Field(description="0–100; 100 once done")
    counts: ImportCounts | None = Field(description="import: its orders so far; null for a back-test")
    result: dict[str, Any] | None = Field(description="the report, once done (a back-test's is what POST …/backtest answers)")
    error: JobError | None = Field(description="why it failed, once failed")
    params: dict[str, Any] = Field(description="what was asked (back-test: rule set, days, limit; import: import id, file, rows, orders)")
    created_by: str
    created_at: str
    updated_at: str = Field(description="last progress or heartbeat; a running job silent for 60 s is reported failed (job_abandoned)")
    finished_at: str | None
