"""The schema, as SQLAlchemy Core tables. Alembic migrations must match it (`alembic check`)."""

from __future__ import annotations

import sqlalchemy as sa

from orderhub.adapters.db.types import BigId, Json, UtcDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Raw platform traffic, stored durably before the platform is acknowledged.
inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("shop_id", sa.String(64)),
    sa.Column("kind", sa.String(16), nullable=False),  # push | pull | file | replay
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("meta", Json),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),  # pending | processing | done
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime),
    sa.Column("lease_until", UtcDateTime),
    sa.Column("outcome", sa.String(16)),
    sa.Column("processed_at", UtcDateTime),
    sa.Column("error", sa.Text),
    # scaled mode: the broker message this row came from; a redelivery finds its row instead of adding one
    sa.Column("broker_key", sa.String(64)),
    sa.Index("ix_inbox_status_id", "status", "id"),
    sa.UniqueConstraint("broker_key"),
)

# An order with a hold: `holds` is a JSON array, "[]" when there is none. A partial index's condition, and
# the queries' condition word for word (a planner matches them as written, with the literal, not a parameter).
HELD_SQL = "CAST(holds AS TEXT) != '[]'"

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("shop_id", sa.String(64), nullable=False),
    sa.Column("original_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("platform_status", Json, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("paid_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("goods", sa.BigInteger, nullable=False),
    sa.Column("discount", sa.BigInteger, nullable=False),
    sa.Column("discount_shop", sa.BigInteger),
    sa.Column("discount_platform", sa.BigInteger),
    sa.Column("shipping", sa.BigInteger, nullable=False),
    sa.Column("paid", sa.BigInteger, nullable=False),
    sa.Column("customer_id", sa.String(32)),
    sa.Column("buyer", Json, nullable=False),
    sa.Column("address", Json, nullable=False),
    sa.Column("buyer_message", sa.Text),
    sa.Column("seller_remark", sa.Text),
    sa.Column("warehouse", sa.String(32)),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("holds", Json, nullable=False),
    sa.Column("tags", Json, nullable=False),
    sa.Column("shipment", Json),
    sa.Column("rule_version", sa.String(32)),
    # Audit (services/audit.py): pending when the order needs (re-)auditing; what it decided.
    sa.Column("audit_state", sa.String(16)),  # pending | done | null (nothing to audit)
    sa.Column("audited_at", UtcDateTime),
    sa.Column("carrier", sa.String(32)),  # chosen by the carrier rules; shipment names the real one
    sa.Column("gifts", Json),  # [{rule, sku, qty, reached, shortfall, message}]
    sa.Column("decisions", Json),  # what each rule set said, for the order page
    sa.Column("released_holds", Json),  # hold codes a person released: re-audit keeps them off
    sa.Column("merge_group", sa.String(32)),  # orders shipped as one package (合单)
    sa.Column("pii", Json, nullable=False),  # platform ciphertexts, as the platform sent them
    # Decrypted buyer PII, sealed (adapters/pii_crypto.py), and keyed hashes for matching/search.
    sa.Column("pii_sealed", sa.Text),
    sa.Column("phone_hash", sa.String(64)),
    sa.Column("phone_last4_hash", sa.String(64)),
    sa.Column("pii_state", sa.String(16)),  # null: nothing to decrypt | done | pending (retry)
    sa.Column("content_hash", sa.String(32), nullable=False),
    # When the stored platform snapshot was read from the platform's API: a push received
    # before then is already reflected in it and needs no fetch.
    sa.Column("snapshot_at", UtcDateTime),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("ingested_at", UtcDateTime, nullable=False),
    sa.Column("modified_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("paid = goods - discount + shipping", name="amounts_add_up"),
    sa.UniqueConstraint("channel", "original_id"),
    sa.Index("ix_orders_created_at_id", "created_at", "id"),
    sa.Index("ix_orders_shop", "channel", "shop_id"),
    sa.Index("ix_orders_status", "status"),
    sa.Index("ix_orders_paid_at", "paid_at"),
    # the exception queue and its counts: the few orders with a hold, newest first (queries.HELD, the same text)
    sa.Index("ix_orders_held", "created_at", "id", postgresql_where=sa.text(HELD_SQL), sqlite_where=sa.text(HELD_SQL)),
    sa.Index("ix_orders_customer_id", "customer_id"),
    sa.Index("ix_orders_original_id", "original_id"),
    sa.Index("ix_orders_phone_last4_hash", "phone_last4_hash"),
    sa.Index("ix_orders_phone_hash", "phone_hash"),
    sa.Index("ix_orders_pii_state", "pii_state"),
    sa.Index("ix_orders_audit_state", "audit_state"),
    sa.Index("ix_orders_merge_group", "merge_group"),
)

order_lines = sa.Table(
    "order_lines",
    metadata,
    sa.Column("order_id", sa.String(32), sa.ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("line_no", sa.Integer, primary_key=True),
    sa.Column("sku", sa.String(64)),
    sa.Column("platform_sku_id", sa.String(64)),
    sa.Column("platform_line_id", sa.String(64)),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("qty", sa.Integer, nullable=False),
    sa.Column("unit_price", sa.BigInteger, nullable=False),
    sa.Column("paid", sa.BigInteger, nullable=False),
    sa.Column("gift", sa.Boolean, nullable=False),
    sa.Column("refund_status", sa.String(16), nullable=False),
    sa.CheckConstraint("qty > 0", name="qty_positive"),
    sa.Index("ix_order_lines_sku", "sku"),
)

# Append-only: every status change and every change by a person or rule.
order_events = sa.Table(
    "order_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(32), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("from_status", sa.String(20)),
    sa.Column("to_status", sa.String(20)),
    sa.Column("reason", sa.Text),
    sa.Column("data", Json),
    sa.Index("ix_order_events_order_id_id", "order_id", "id"),
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64)),  # masked
    sa.Column("phone", sa.String(32)),  # masked
    sa.Column("level", sa.String(16)),
    sa.Column("order_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("first_seen_at", UtcDateTime, nullable=False),
    sa.Column("last_order_at", UtcDateTime),
)

# How a buyer is recognised: (channel, platform buyer id), or ("phone", keyed phone hash) for
# matching across channels. First writer wins; an identity never moves to another customer.
customer_identities = sa.Table(
    "customer_identities",
    metadata,
    sa.Column("channel", sa.String(32), primary_key=True),
    sa.Column("buyer_id", sa.String(128), primary_key=True),
    sa.Column("customer_id", sa.String(32), nullable=False, index=True),
)

# The channels a customer has bought on (one row each, so concurrent writers only ever add).
customer_channels = sa.Table(
    "customer_channels",
    metadata,
    sa.Column("customer_id", sa.String(32), primary_key=True),
    sa.Column("channel", sa.String(32), primary_key=True),
    sa.Column("first_order_at", UtcDateTime),
)

# Authenticated input that could not be processed: kept with the reason, replayable.
quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("inbox_id", sa.BigInteger),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("shop_id", sa.String(64)),
    sa.Column("original_id", sa.String(64)),
    sa.Column("item_kind", sa.String(16), nullable=False),  # body | message | order
    sa.Column("code", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("field", sa.String(128)),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),  # open | replayed
    sa.Column("replayed_at", UtcDateTime),
    sa.Column("replay_inbox_id", sa.BigInteger),
    sa.Index("ix_quarantine_status_id", "status", "id"),
)

# Incremental pull: where each pull channel's shop got to.
sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    sa.Column("channel", sa.String(32), primary_key=True),
    sa.Column("shop_id", sa.String(64), primary_key=True),
    sa.Column("synced_until", UtcDateTime, nullable=False),
    sa.Column("last_success_at", UtcDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", UtcDateTime),
)

import_mappings = sa.Table(
    "import_mappings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("mapping", Json, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

imports = sa.Table(
    "imports",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("mapping_name", sa.String(64), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("orders", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# The merchant's catalogue: warehouses and SKUs (stock per warehouse arrives with inventory).
warehouses = sa.Table(
    "warehouses",
    metadata,
    sa.Column("code", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("city", sa.String(64)),
)

skus = sa.Table(
    "skus",
    metadata,
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("category", sa.String(32)),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("cost", sa.BigInteger, nullable=False),
    sa.Column("weight_g", sa.Integer, nullable=False),
    sa.Column("presale", sa.Boolean, nullable=False, server_default=sa.false()),  # ships later: split off
    sa.CheckConstraint("price >= 0 AND cost >= 0", name="money_not_negative"),
)

# -- inventory (DESIGN.md §4.3) ---------------------------------------------------------------

# Stock per SKU per warehouse. `reserved` only ever moves through conditional UPDATEs whose
# rowcount is checked (adapters/db/inventory_repo.py); the CHECK is the last guard.
stock = sa.Table(
    "stock",
    metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("warehouse", sa.String(32), primary_key=True),
    sa.Column("on_hand", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reserved", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("safety", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("on_hand >= 0 AND reserved >= 0 AND safety >= 0 AND reserved <= on_hand", name="never_oversold"),
)

# One row per order line (or gift) and warehouse it is reserved in; `reserved` of a stock row
# is always the sum of its active reservations (checked by inventory_repo.check_invariant).
reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(32), nullable=False),
    sa.Column("line_no", sa.Integer, nullable=False),  # the order line; gifts count from 1000
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("warehouse", sa.String(32), nullable=False),
    sa.Column("qty", sa.BigInteger, nullable=False),
    sa.Column("package_no", sa.Integer, nullable=False, server_default="1"),
    sa.Column("gift", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("status", sa.String(16), nullable=False),  # active | released | consumed
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime),
    sa.CheckConstraint("qty > 0", name="qty_positive"),
    sa.Index("ix_reservations_order_id", "order_id"),
    sa.Index("ix_reservations_sku_warehouse_status", "sku", "warehouse", "status"),
)

# Append-only: every movement of on_hand or reserved, with who, why and the order.
stock_ledger = sa.Table(
    "stock_ledger",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("warehouse", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # reserve | release | consume | receive | adjust | sync | safety
    sa.Column("on_hand_delta", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("reserved_delta", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("order_id", sa.String(32)),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Index("ix_stock_ledger_sku_id", "sku", "id"),
)

# A channel's item/SKU id or 商家编码 -> the merchant SKU, where the platform line does not
# carry the merchant code itself.
sku_mappings = sa.Table(
    "sku_mappings",
    metadata,
    sa.Column("channel", sa.String(32), primary_key=True),
    sa.Column("platform_sku_id", sa.String(64), primary_key=True),
    sa.Column("sku", sa.String(64), nullable=False),
    # the platform's item (product, goods, ware) id the SKU belongs to: stock updates name both
    sa.Column("platform_item_id", sa.String(64)),
    sa.Index("ix_sku_mappings_sku", "sku"),
)

# The last sellable quantity pushed to each channel shop per SKU: unchanged ones are not
# pushed again, and a failing push stays visible.
stock_pushes = sa.Table(
    "stock_pushes",
    metadata,
    sa.Column("channel", sa.String(32), primary_key=True),
    sa.Column("shop_id", sa.String(64), primary_key=True),
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("pushed_at", UtcDateTime),
    sa.Column("status", sa.String(16), nullable=False),  # ok | failed
    sa.Column("error", sa.Text),
)

# -- rules (DESIGN.md §4.2) ---------------------------------------------------------------------

# Every version of every rule set (a GoRules JDM graph); drafts are edited, published ones never.
rule_sets = sa.Table(
    "rule_sets",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # draft | published | retired
    sa.Column("content", Json, nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("author", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("published_at", UtcDateTime),
)

# The audit configuration: which version of each set is live and which single rules are
# switched off. Publishing a set or flipping a switch writes the next row; orders record it.
audit_versions = sa.Table(
    "audit_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sets", Json, nullable=False),  # {set name: rule set version}
    sa.Column("disabled", Json, nullable=False),  # ["<set>:<rule id>", ...]
    sa.Column("author", sa.String(64), nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# -- delivery to external systems (DESIGN.md §4.4, §4.8) ----------------------------------------

# Every message to a WMS, carrier, platform or notification channel, written in the same
# transaction as the change that causes it and relayed after commit (services/outbox.py).
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),  # e.g. wms.order, wms.freeze, platform.ship, notify.sms, webhook
    sa.Column("endpoint", sa.String(64), nullable=False),  # where it goes; one circuit breaker per endpoint
    sa.Column("order_id", sa.String(32)),
    sa.Column("recipient", sa.String(128)),  # notifications: who (a keyed hash for phones), for rate limits
    sa.Column("payload", Json, nullable=False),
    sa.Column("idempotency_key", sa.String(64), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),  # higher first
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),  # pending | sending | sent | dead
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("lease_until", UtcDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("response", Json),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("sent_at", UtcDateTime),
    sa.UniqueConstraint("idempotency_key"),
    sa.Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    sa.Index("ix_outbox_order_id", "order_id"),
    sa.Index("ix_outbox_recipient_created_at", "recipient", "created_at"),
)

# Message templates (Jinja2), Chinese by default; versioned by an updated row's version.
notification_templates = sa.Table(
    "notification_templates",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # e.g. shipped, stalled, delivered, intercept_result, freeze_alert
    sa.Column("channel", sa.String(16), primary_key=True),  # sms | wecom | dingtalk | email | webhook
    sa.Column("subject", sa.Text),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("updated_by", sa.String(64), nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# -- logistics tracking (DESIGN.md §4.5) ---------------------------------------------------------

# One row per parcel (waybill): where it is on the logistics state machine.
parcels = sa.Table(
    "parcels",
    metadata,
    sa.Column("waybill_no", sa.String(64), primary_key=True),
    sa.Column("carrier", sa.String(32), nullable=False),
    sa.Column("order_id", sa.String(32)),
    sa.Column("package_no", sa.Integer),
    sa.Column("state", sa.String(24), nullable=False),  # none | collected | in_transit | out_for_delivery | delivered | <exception sub-state>
    sa.Column("shipped_at", UtcDateTime),
    sa.Column("first_scan_at", UtcDateTime),
    sa.Column("last_event_at", UtcDateTime),
    sa.Column("stall", sa.String(32)),  # the stall rule that fired, while it holds
    sa.Column("subscribed_at", UtcDateTime),
    sa.Column("polled_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_parcels_order_id", "order_id"),
    sa.Index("ix_parcels_state", "state"),
)

# Every carrier scan once (replays are harmless): the order's track, newest first.
tracking_events = sa.Table(
    "tracking_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("waybill_no", sa.String(64), nullable=False),
    sa.Column("carrier", sa.String(32), nullable=False),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("state", sa.String(24), nullable=False),
    sa.Column("carrier_code", sa.String(32)),  # the carrier's own status / opCode
    sa.Column("description", sa.Text),
    sa.Column("location", sa.String(128)),
    sa.Column("source", sa.String(16), nullable=False),  # push | poll
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("waybill_no", "at", "carrier_code", "description"),
    sa.Index("ix_tracking_events_waybill_no_at", "waybill_no", "at"),
)

# Exception tickets (stalled parcels and the like) for CS, one open ticket per order and kind.
tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # e.g. stall_no_first_scan, stall_in_transit, scan_before_ship
    sa.Column("status", sa.String(16), nullable=False),  # open | closed
    sa.Column("detail", Json),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("closed_at", UtcDateTime),
    sa.Column("closed_by", sa.String(64)),
    sa.Index("ix_tickets_status_kind", "status", "kind"),
    sa.Index("ix_tickets_order_id", "order_id"),
)

# -- fulfillment (DESIGN.md §4.4) ------------------------------------------------------------------

# One row per package sent to a WMS: where it is between ready and shipped.
fulfillments = sa.Table(
    "fulfillments",
    metadata,
    sa.Column("order_id", sa.String(32), primary_key=True),
    sa.Column("package_no", sa.Integer, primary_key=True),
    sa.Column("warehouse", sa.String(32), nullable=False),
    sa.Column("wms", sa.String(32), nullable=False),  # which WMS (settings name)
    sa.Column("wms_order_no", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),  # queued | accepted | picking | packed | shipped | frozen | cancelled
    sa.Column("carrier", sa.String(32)),
    sa.Column("waybill_no", sa.String(64)),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("queued_at", UtcDateTime, nullable=False),
    sa.Column("accepted_at", UtcDateTime),
    sa.Column("packed_at", UtcDateTime),
    sa.Column("shipped_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_fulfillments_status", "status"),
    sa.Index("ix_fulfillments_waybill_no", "waybill_no"),
)

# Freeze instructions (拦截): a cancel, address or remark change becomes one, sent to the WMS at once.
freeze_instructions = sa.Table(
    "freeze_instructions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # cancel | address | remark | expedite
    sa.Column("source", sa.String(64), nullable=False),  # platform:douyin, cs:wang …
    sa.Column("requested_at", UtcDateTime, nullable=False),  # when the change arrived (the platform message's receipt)
    sa.Column("sent_at", UtcDateTime),
    sa.Column("answered_at", UtcDateTime),
    sa.Column("outcome", sa.String(16), nullable=False),  # pending | frozen | refused | supervisor | applied | too_late
    sa.Column("detail", Json),
    sa.Column("resolved_by", sa.String(64)),
    sa.Index("ix_freeze_instructions_order_id", "order_id"),
    sa.Index("ix_freeze_instructions_outcome", "outcome"),
)

# -- logins, API keys and the audit log (DESIGN.md §4.11, docs/security.md) ------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False),  # stored lower-case: one account per name
    sa.Column("display_name", sa.String(64)),
    sa.Column("password_hash", sa.String(255), nullable=False),  # argon2id (adapters/passwords.py)
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("last_login_at", UtcDateTime),
    sa.UniqueConstraint("username"),
)

# Login sessions: only the SHA-256 of the bearer token is stored, so a copy of the database
# opens no session. In the database (not in a process) so every API node knows every session.
auth_tokens = sa.Table(
    "auth_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("last_used_at", UtcDateTime),
    sa.Column("ip", sa.String(64)),
    sa.Index("ix_auth_tokens_user_id", "user_id"),
    sa.Index("ix_auth_tokens_expires_at", "expires_at"),
)

# Keys for integrations (`ohk_…`): shown once, stored as SHA-256; revoked, never deleted.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),  # the first characters, to tell keys apart in the list
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("last_used_at", UtcDateTime),
    sa.Column("revoked_at", UtcDateTime),
    sa.UniqueConstraint("key_hash"),
)

# Append-only: who changed what, when, before and after (users, logins, PII reveals, rules, order
# actions, stock, templates, outbox, quarantine, interceptions, workers). Written in the
# transaction of the change; triggers refuse UPDATE and DELETE (migration 0008).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("actor_kind", sa.String(16), nullable=False),  # user | api_key | cli | system | anonymous
    sa.Column("action", sa.String(48), nullable=False),  # e.g. user.create, login.failed, order.release, rule.publish
    sa.Column("entity", sa.String(32), nullable=False),  # user | api_key | order | rule_set | stock | template | outbox | …
    sa.Column("entity_id", sa.String(128)),
    sa.Column("before", Json),
    sa.Column("after", Json),
    sa.Column("ip", sa.String(64)),
    sa.Index("ix_audit_log_entity_entity_id_id", "entity", "entity_id", "id"),
    sa.Index("ix_audit_log_actor_id", "actor", "id"),
    sa.Index("ix_audit_log_action_entity_id_at", "action", "entity_id", "at"),
)


# Scaled mode: which worker owns which broker partition, and the singleton duties (pulls, stock
# sync, tracking sweeps) that one worker of the fleet runs. A lease not renewed in time is free.
worker_leases = sa.Table(
    "worker_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # partition:<n> | duty:<name>
    sa.Column("owner", sa.String(128)),
    sa.Column("lease_until", UtcDateTime),
)

# Workers announce themselves here (a partition's fair share depends on how many are alive).
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("seen_at", UtcDateTime, nullable=False),
    sa.Column("stats", Json),
)

# Degradation switches: non-core work deferred under load, set by the lag watcher or by hand.
switches = sa.Table(
    "switches",
    metadata,
    sa.Column("name", sa.String(48), primary_key=True),
    sa.Column("on", sa.Boolean, nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),  # auto (the lag watcher may flip it) | manual (held by ops)
    sa.Column("reason", sa.Text),
    sa.Column("set_by", sa.String(64), nullable=False),
    sa.Column("set_at", UtcDateTime, nullable=False),
)

# -- long operations the console follows (docs/console.md "Long operations") ---------------------

# One row per back-test or file import: its progress, then its report or its error. A running
# back-test's process refreshes `updated_at` (progress, heartbeat); a row left running by a process
# that is gone goes stale and is reported failed (services/jobs.py). An import's progress is read
# from its inbox rows; the row keeps the final counts.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # backtest | import
    sa.Column("state", sa.String(16), nullable=False),  # running | done | failed
    sa.Column("done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("total", sa.Integer),  # null until known
    sa.Column("params", Json),  # what was asked: the rule set and days; the import and its inbox rows
    sa.Column("result", Json),  # the final report
    sa.Column("error", Json),  # {code, message, field} of a failed job
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
)
