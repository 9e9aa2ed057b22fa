"""Inbox rows -> canonical orders: parse, fetch, normalize, merge and write, a batch at a time.

One batch is one transaction: orders, lines, events, customers, quarantine rows and the
inbox rows' completion commit together, so a crash anywhere leaves the inbox rows pending
(their lease expires) and the whole batch is simply processed again, idempotently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from orderhub.adapters.channels.base import PushMessage, ShopConfig
from orderhub.adapters.channels.registry import ChannelRegistry, ShopRegistry
from orderhub.adapters.db.engine import is_deadlock
from orderhub.adapters.db.inbox import InboxRow, claim, still_leased
from orderhub.adapters.db.orders_repo import ConcurrentUpdate, LeaseLost, WritePlan, load_identities, load_stored, write_plan
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, NormalizationError, OrderHubError
from orderhub.domain.ids import customer_id, order_id
from orderhub.domain.merge import Change, Outcome, StoredOrder, apply_snapshot, stored_after
from orderhub.domain.order import NormalizedOrder
from orderhub.domain.status import Status
from orderhub.services import fulfillment
from orderhub.services.buyer_pii import BuyerPii, ResolvedPii

log = logging.getLogger(__name__)

# The most telling outcome of a row's items is what the inbox row records.
_OUTCOME_RANK = ["quarantined", "created", "updated", "stale", "unchanged"]
# A backlog of pushes for one shop is fetched as one time window instead of order by order
# when the window is short enough to be cheap (the platform pages 100 orders a call).
_WINDOW_MIN_MESSAGES = 40
_WINDOW_MAX_SPAN = timedelta(seconds=30)
# A platform's API may lag its own pushes a little; a stored snapshot counts as reflecting a
# push only if it was read this long after the push was received.
_PLATFORM_LAG = timedelta(seconds=2)


@dataclass(slots=True)
class _Item:
    row: InboxRow
    seq: int
    source: str  # the adapter that reads it: a channel code, or "file"
    shop_id: str | None
    kind: str  # body | message | order
    payload: Any

    @property
    def position(self) -> tuple[int, int]:
        return (self.row.id, self.seq)


@dataclass(slots=True)
class BatchResult:
    rows: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    retried: int = 0


@dataclass(slots=True)
class _Batch:
    plan: WritePlan = field(default_factory=WritePlan)
    outcomes: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    retry: dict[int, str] = field(default_factory=dict)
    # (arrival position, actor, snapshot, when it was read from the platform or None for files)
    snapshots: list[tuple[tuple[int, int], str, NormalizedOrder, datetime | None]] = field(default_factory=list)


class Processor:
    def __init__(
        self,
        engine: sa.Engine,
        shops: ShopRegistry,
        channels: ChannelRegistry,
        http: httpx.AsyncClient,
        *,
        batch_size: int = 500,
        max_attempts: int = 8,
        pii: BuyerPii | None = None,
        monitor: Any = None,
        lease: timedelta = timedelta(minutes=2),
    ) -> None:
        self.engine = engine
        self.lease = lease  # how long a claimed batch stays this worker's; a crashed worker's rows are taken after it
        self.pii = pii
        self.monitor = monitor  # ChannelMonitor: fetch failures and successes per shop
        self.shops = shops
        self.channels = channels
        self.http = http
        self.batch_size = batch_size
        self.max_attempts = max_attempts

    async def run_once(self) -> BatchResult | None:
        rows = await asyncio.to_thread(claim, self.engine, self.batch_size, self.lease)
        if not rows:
            return None
        return await self.process(rows)

    async def process(self, rows: list[InboxRow]) -> BatchResult:
        for attempt in range(5):
            try:
                return await self._process(rows)
            except LeaseLost as exc:
                # A row's lease ran out mid-batch and another worker has it now: it writes that row, this
                # batch goes again with the rows still ours (nothing was written: quarantine rows, events, once).
                ours = await asyncio.to_thread(still_leased, self.engine, rows)
                log.warning("%s; processing the %d rows still leased again", exc, len(ours))
                if not ours:
                    return BatchResult(outcomes=Counter({"taken_over": len(rows)}))
                rows = ours
            except (ConcurrentUpdate, sa.exc.IntegrityError, sa.exc.OperationalError) as exc:
                if isinstance(exc, sa.exc.OperationalError) and not is_deadlock(exc):
                    raise
                # Another worker wrote one of these orders first: reload and decide again.
                log.info("batch of %d rows retried after a concurrent write (%s)", len(rows), exc)
                await asyncio.sleep(0.05 * (attempt + 1))
        return await self._process(rows)

    # -- the pipeline -------------------------------------------------------------------

    async def _process(self, rows: list[InboxRow]) -> BatchResult:
        batch = _Batch()
        items = [item for row in rows for item in self._expand(row, batch)]
        messages = [item for item in items if item.kind == "message"]
        for item in items:
            if item.kind == "order":
                taken_at = item.row.received_at if item.row.kind == "pull" else None
                self._normalize(item, item.payload, batch, taken_at)
        ids = {order_id(item.source, item.payload.original_id) for item in messages}
        ids.update(order.id for _, _, order, _ in batch.snapshots)
        stored = await asyncio.to_thread(self._load, ids)

        groups: dict[tuple[str, str | None], list[_Item]] = defaultdict(list)
        for item in messages:
            message: PushMessage = item.payload
            if self._reflected(stored.get(order_id(item.source, message.original_id)), item):
                batch.outcomes[item.row.id].append(Outcome.STALE.value)  # already reflected in what we hold
                continue
            groups[(item.source, item.shop_id)].append(item)
        await asyncio.gather(*(self._fetch(source, shop_id, group, batch) for (source, shop_id), group in groups.items()))
        missing = {order.id for _, _, order, _ in batch.snapshots} - stored.keys()
        if missing:
            stored.update(await asyncio.to_thread(self._load, missing))

        snapshots = [order for _, _, order, _ in batch.snapshots]
        resolved = await self.pii.resolve(snapshots, stored) if self.pii is not None else {}
        keys = {(o.channel, o.buyer.platform_buyer_id) for o in snapshots if o.buyer.platform_buyer_id}
        keys.update(("phone", r.phone_hash) for r in resolved.values() if r.phone_hash)
        identities = await asyncio.to_thread(self._load_identities, keys) if keys else {}
        self._merge(stored, batch, resolved, identities)
        now = datetime.now(UTC)
        result = self._finish_rows(rows, batch, now)
        await asyncio.to_thread(self._write, batch.plan, now)
        return result

    def _expand(self, row: InboxRow, batch: _Batch) -> list[_Item]:
        kind = row.kind
        meta = row.meta or {}
        if kind == "replay":
            kind = {"body": "push", "message": "message", "order": "order"}[meta["item_kind"]]
        source = "file" if kind == "file" else meta.get("source", row.channel)
        try:
            if kind == "push":
                messages = self.channels.parser(row.channel).parse_push(row.body)
                return [_Item(row, seq, row.channel, m.shop_id, "message", m) for seq, m in enumerate(messages)]
            if kind == "message":
                message = PushMessage.from_dict(orjson.loads(row.body))
                return [_Item(row, 0, row.channel, message.shop_id, "message", message)]
            if kind in ("pull", "file"):
                raws = orjson.loads(row.body)["orders"]
                return [_Item(row, seq, source, row.shop_id, "order", raw) for seq, raw in enumerate(raws)]
            if kind == "order":
                return [_Item(row, 0, source, row.shop_id, "order", orjson.loads(row.body))]
        except EnvelopeError as exc:
            self._quarantine(_Item(row, 0, row.channel, row.shop_id, "body", row.body), exc, batch)
            return []
        except (KeyError, ValueError, TypeError) as exc:
            error = EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"unreadable {kind} row: {exc}")
            self._quarantine(_Item(row, 0, row.channel, row.shop_id, "body", row.body), error, batch)
            return []
        raise ValueError(f"unknown inbox kind {row.kind!r}")

    @staticmethod
    def _reflected(current: StoredOrder | None, item: _Item) -> bool:
        """Is what this push announces already in the stored order? Then it needs no fetch.

        Platform snapshots are cumulative: a message about a change older than the stored
        snapshot's update time, or received well before that snapshot was read from the
        platform, is already reflected in it.
        """
        if current is None:
            return False
        event_time = item.payload.event_time
        if event_time is not None and event_time < current.updated_at:
            return True
        return current.snapshot_at is not None and item.row.received_at < current.snapshot_at - _PLATFORM_LAG

    def _normalize(self, item: _Item, raw: dict[str, Any], batch: _Batch, taken_at: datetime | None) -> None:
        try:
            if item.source == "file":
                shop = self._shop(raw.get("channel", "file"), raw.get("shop_id") or item.shop_id or "default")
                order = self.channels.file.normalize(raw, shop)
            else:
                shop = self.shops.by_shop(item.source, item.shop_id or "")
                if shop is None:
                    raise NormalizationError(ErrorCode.UNKNOWN_SHOP, f"shop {item.shop_id} is not configured for {item.source}", "shop_id")
                order = self.channels.sources[item.source].normalize(raw, shop)
        except Exception as exc:
            if not isinstance(exc, NormalizationError):  # an adapter bug must not lose the input either
                log.exception("adapter %s failed on an order", item.source)
                exc = NormalizationError(ErrorCode.INVALID_FIELD, f"adapter error: {type(exc).__name__}: {exc}")
            # A fetched order is quarantined as its push message (a replay fetches it afresh),
            # with the snapshot that failed kept beside it for review.
            if item.kind == "message":
                self._quarantine(item, exc, batch, snapshot=raw)
            else:
                self._quarantine(replace(item, kind="order", payload=raw), exc, batch)
            return
        batch.snapshots.append((item.position, self._actor(item), order, taken_at))

    def _shop(self, channel: str, shop_id: str) -> ShopConfig:
        return self.shops.by_shop(channel, shop_id) or ShopConfig(channel, shop_id, shop_id)

    async def _fetch(self, source: str, shop_id: str | None, items: list[_Item], batch: _Batch) -> None:
        shop = self.shops.by_shop(source, shop_id or "")
        if shop is None:
            error = NormalizationError(ErrorCode.UNKNOWN_SHOP, f"shop {shop_id} is not configured for {source}", "shop_id")
            for item in items:
                self._quarantine(item, error, batch)
            return
        adapter = self.channels.sources[source]
        wanted = list(dict.fromkeys(item.payload.original_id for item in items))
        found: dict[str, dict[str, Any]] = {}
        taken_at = datetime.now(UTC)
        try:
            wanted = await self._fetch_window(adapter, shop, items, wanted, batch)
            taken_at = datetime.now(UTC)
            if wanted:
                found = await adapter.fetch_orders(self.http, shop, wanted)
        except FetchError as exc:
            self._fetch_failed(source, shop.shop_id, exc.message)
            for item in items:
                self._retry_or_quarantine(item, exc, batch)
            return
        except Exception as exc:  # an adapter that let a transport error escape: retry later
            log.warning("fetch from %s failed: %s", source, exc)
            self._fetch_failed(source, shop.shop_id, f"{type(exc).__name__}: {exc}")
            for item in items:
                self._retry_or_quarantine(item, FetchError(f"{type(exc).__name__}: {exc}"), batch)
            return
        if self.monitor is not None:
            self.monitor.fetch_ok(source, shop.shop_id)
        for item in items:
            oid = item.payload.original_id
            if oid not in wanted:
                continue  # read in the window
            if oid in found:
                self._normalize(item, found[oid], batch, taken_at)
            else:
                self._retry_or_quarantine(item, FetchError(f"order {oid} not found on {source}"), batch)

    async def _fetch_window(self, adapter: Any, shop: ShopConfig, items: list[_Item], wanted: list[str], batch: _Batch) -> list[str]:
        """Many changes of one shop in a short span: read the span page by page (100 orders a
        call) instead of order by order. Returns the wanted ids the window did not contain."""
        times = sorted(item.payload.event_time for item in items if item.payload.event_time is not None)
        if len(wanted) < _WINDOW_MIN_MESSAGES or len(times) < _WINDOW_MIN_MESSAGES:
            return wanted
        # The middle 90% of the messages' times: a few late or replayed messages must not
        # stretch the window over hours of unrelated orders (they are fetched singly instead).
        cut = len(times) // 20
        start, end = times[cut] - timedelta(seconds=1), times[-1 - cut] + timedelta(seconds=2)
        if end - start > _WINDOW_MAX_SPAN:
            return wanted
        taken_at = datetime.now(UTC)
        raws = await adapter.pull_window(self.http, shop, start, end)
        before = len(batch.snapshots)
        anchor = items[-1]
        for raw in raws:
            # read as an order of this batch: if it cannot be normalised it is quarantined as an order
            self._normalize(replace(anchor, kind="order", payload=raw), raw, batch, taken_at)
        have = {order.original_id for _, _, order, _ in batch.snapshots[before:]}
        return [oid for oid in wanted if oid not in have]

    def _fetch_failed(self, source: str, shop_id: str, error: str) -> None:
        if self.monitor is not None:
            self.monitor.fetch_failed(source, shop_id, error)

    def _retry_or_quarantine(self, item: _Item, error: FetchError, batch: _Batch) -> None:
        if error.retryable and item.row.attempts + 1 < self.max_attempts:
            batch.retry[item.row.id] = error.message
        else:
            self._quarantine(item, error, batch)

    def _merge(
        self, stored: dict[str, StoredOrder], batch: _Batch, resolved: dict[str, ResolvedPii], identities: dict[tuple[str, str], str]
    ) -> None:
        state: dict[str, StoredOrder | None] = dict(stored)
        last_write: dict[str, Change] = {}
        last_seen: dict[str, NormalizedOrder] = {}
        customers_seen: dict[str, int] = {}
        kinds: dict[str, set[str]] = {}  # order id -> kinds of the events this batch logs for it
        plan = batch.plan
        # Snapshots are applied in arrival order so the event log tells the story as it happened.
        for position, actor, order, taken_at in sorted(batch.snapshots, key=lambda s: s[0]):
            previous = state.get(order.id)
            change = apply_snapshot(previous, order, actor)
            batch.outcomes[position[0]].append(change.outcome.value)
            if change.outcome is Outcome.STALE:
                continue
            state[order.id] = stored_after(change, previous)
            last_seen[order.id] = order
            if taken_at is not None:
                known = plan.snapshot_at.get(order.id) or (previous.snapshot_at if previous else None)
                plan.snapshot_at[order.id] = max(known, taken_at) if known else taken_at
            if change.outcome in (Outcome.CREATED, Outcome.UPDATED):
                last_write[order.id] = change
                plan.events.extend((order.id, event) for event in change.events)
                kinds.setdefault(order.id, set()).update(event.kind for event in change.events)
                if change.outcome is Outcome.CREATED:
                    customers_seen[order.id] = 1
        for oid, change in last_write.items():
            final = state[oid]
            assert final is not None
            if change.order.updated_at != final.updated_at:
                change.order = replace(change.order, updated_at=final.updated_at)
            plan.snapshot_at.setdefault(oid, stored[oid].snapshot_at if oid in stored else None)
            cid = self._customer(change, plan, customers_seen.get(oid, 0), stored.get(oid), resolved.get(oid), identities)
            _hand_over(plan, oid, stored[oid].status if oid in stored else None, final.status, kinds.get(oid, set()), change.order.channel)
            if oid in stored:
                plan.updates.append((change, stored[oid].version, cid))
            else:
                plan.creates.append((change, cid))
        for oid in last_seen:
            if oid in resolved:
                plan.pii[oid] = resolved[oid].columns()
        for oid, order in last_seen.items():
            before, final = stored.get(oid), state[oid]
            if oid in last_write or before is None or final is None:
                continue
            newer_snapshot = plan.snapshot_at.get(oid) not in (None, before.snapshot_at)
            if final.updated_at > before.updated_at or newer_snapshot:
                plan.touches.append({
                    "b_id": oid, "b_updated_at": final.updated_at, "b_raw": orjson.dumps(order.raw).decode(),
                    "b_snapshot_at": plan.snapshot_at.get(oid, before.snapshot_at),
                })

    def _customer(
        self, change: Change, plan: WritePlan, new_orders: int, previous: StoredOrder | None,
        pii: ResolvedPii | None, identities: dict[tuple[str, str], str],
    ) -> str | None:
        """One customer across channels: the platform buyer id first, then the phone hash.

        A new customer's id derives from its phone hash when there is one, so two workers meeting
        the same new buyer on two channels at once still create one customer.
        """
        order = change.order
        buyer_id = order.buyer.platform_buyer_id
        phone_hash = pii.phone_hash if pii else (previous.phone_hash if previous else None)
        buyer_key = (order.channel, buyer_id) if buyer_id else None
        phone_key = ("phone", phone_hash) if phone_hash else None

        def known(key: tuple[str, str] | None) -> str | None:
            return (plan.identities.get(key) or identities.get(key)) if key else None

        cid = (previous.customer_id if previous else None) or known(buyer_key) or known(phone_key)
        if cid is None and (phone_key or buyer_key):
            cid = customer_id(*(phone_key or buyer_key))  # type: ignore[misc]
        if cid is None:
            return None
        by_phone = known(phone_key)
        if by_phone is not None and by_phone != cid:
            # The same buyer was first seen as two customers (e.g. an unpaid order whose phone
            # the platform would not decrypt): the phone now links them, so they become one.
            plan.merges[cid] = by_phone
            cid = by_phone
        for key in (buyer_key, phone_key):
            if key and not known(key):
                plan.identities[key] = cid
        plan.customer_channels.setdefault((cid, order.channel), order.created_at)
        entry = plan.customers.get(cid)
        if entry is None:
            plan.customers[cid] = {
                "id": cid, "name": order.buyer.name, "phone": order.buyer.phone, "level": order.buyer.level,
                "order_count": new_orders, "first_seen_at": datetime.now(UTC), "last_order_at": order.created_at,
            }
        else:
            entry["order_count"] += new_orders
            entry["last_order_at"] = max(entry["last_order_at"], order.created_at)
        return cid

    def _quarantine(self, item: _Item, error: OrderHubError, batch: _Batch, snapshot: dict[str, Any] | None = None) -> None:
        if item.kind == "body":
            payload = item.payload
            original_id = None
        elif item.kind == "message":
            m: PushMessage = item.payload
            original_id = m.original_id
            payload = orjson.dumps({**m.as_dict(), "snapshot": snapshot})
        else:
            payload = orjson.dumps(item.payload)
            original_id = _guess_original_id(item.payload)
        batch.plan.quarantined.append({
            "inbox_id": item.row.id,
            "channel": item.source,  # the adapter that reads it again on replay
            "shop_id": item.shop_id,
            "original_id": original_id,
            "item_kind": item.kind,
            "code": error.code.value,
            "message": error.message,
            "field": error.field,
            "payload": payload,
        })
        batch.outcomes[item.row.id].append("quarantined")

    def _finish_rows(self, rows: list[InboxRow], batch: _Batch, now: datetime) -> BatchResult:
        result = BatchResult(rows=len(rows))
        for row in rows:
            outcomes = batch.outcomes.get(row.id, [])
            result.outcomes.update(outcomes)
            if row.id in batch.retry:
                attempts = row.attempts + 1
                delay = min(300.0, 2.0 ** attempts)
                batch.plan.inbox_retry.append({
                    "b_id": row.id, "b_attempts": attempts, "b_next": now + timedelta(seconds=delay), "b_error": batch.retry[row.id],
                    "b_lease": row.lease_until,
                })
                result.retried += 1
                continue
            outcome = min(outcomes, key=_OUTCOME_RANK.index) if outcomes else "empty"
            batch.plan.inbox_done.append({"b_id": row.id, "b_outcome": outcome, "b_lease": row.lease_until})
        return result

    @staticmethod
    def _actor(item: _Item) -> str:
        return "file_import" if item.source == "file" else f"platform:{item.source}"

    def _load(self, ids: set[str]) -> dict[str, StoredOrder]:
        with self.engine.connect().execution_options(readonly=True) as conn:
            return load_stored(conn, ids)

    def _load_identities(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        with self.engine.connect().execution_options(readonly=True) as conn:
            return load_identities(conn, keys)

    def _write(self, plan: WritePlan, now: datetime) -> None:
        with self.engine.begin() as conn:
            write_plan(conn, plan, now)


# What the audit looks at: a change to one of these re-audits an order not yet at the warehouse.
_AUDITED_FIELDS = frozenset({"address_changed", "buyer_message", "seller_remark", "refund", "amounts_changed"})
_BEFORE_WAREHOUSE = frozenset({Status.PAID, Status.ON_HOLD, Status.READY})
_HOLDS_STOCK = frozenset({Status.PAID, Status.ON_HOLD, Status.READY, Status.PICKING})


def _hand_over(plan: WritePlan, oid: str, before: Status | None, after: Status, kinds: set[str], channel: str) -> None:
    """What a platform change means for audit and stock, written in the same transaction.

    An order that may be at the warehouse is also handed to fulfillment, which looks at its packages
    in the write (`fulfillment.take_platform_changes`): if the WMS has them, a cancel, address or
    remark change becomes a freeze instruction instead, and the order is neither re-audited nor given
    its stock back here. Its status event to cancelled is held back until that is known. A cancel that
    came after the order shipped becomes a (too late) instruction too: a carrier interception."""
    actor = f"platform:{channel}"
    if after is Status.PAID and before is not Status.PAID:
        plan.audit.add(oid)
    elif after in _BEFORE_WAREHOUSE and before in _BEFORE_WAREHOUSE and kinds & _AUDITED_FIELDS:
        plan.audit.add(oid)
    elif after in (Status.CANCELLED, Status.CLOSED) and before in _HOLDS_STOCK:
        plan.release[oid] = actor
    elif after in (Status.SHIPPED, Status.DELIVERED, Status.COMPLETED) and before in _HOLDS_STOCK:
        plan.consume[oid] = actor
    ends = (Status.CANCELLED, Status.CLOSED)
    if before is Status.SHIPPED:
        # a cancel the status table refused (the order has shipped): a carrier interception, if it came through our WMS
        refused = any(o == oid and e.kind == "status_conflict" and e.to_status in ends for o, e in plan.events)
        if not refused:
            return
        after = Status.CANCELLED
    elif before not in (Status.READY, Status.PICKING):  # only then may its packages be at the WMS
        return
    held = [e for o, e in plan.events if o == oid and e.kind == "status" and e.to_status in ends] if after in ends else []
    if held:
        plan.events[:] = [(o, e) for o, e in plan.events if o != oid or e not in held]
    plan.wms_changes[oid] = fulfillment.PlatformChange(actor, before.value, after.value, frozenset(kinds), held)
    plan.intercept = fulfillment.take_platform_changes
    if oid not in plan.audit and oid not in plan.release and oid not in plan.consume:
        plan.audit.add(oid)  # so that the hand-over runs at all; taken out again there
        plan.wms_only.add(oid)


def _guess_original_id(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    for key in ("original_id", "order_id", "orderId", "tid", "order_sn"):
        if raw.get(key):
            return str(raw[key])
    info = raw.get("full_order_info", {}).get("order_info", {}) if isinstance(raw.get("full_order_info"), dict) else {}
    return str(info["tid"]) if info.get("tid") else None
