"""Is each shop's channel delivering? Connection states, last messages, fetch errors and backlog.

A merchant must see when a channel stops delivering: a closed TMC connection, an expired
token, a platform answering 429, a pull stuck behind. `ChannelMonitor` collects what the
intake, the stream clients, the processor and the puller observe (in memory, per process);
`channel_statuses` combines it with the inbox backlog and the pull cursors into one state per
shop: connected, lagging or failing, with the reason.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.registry import ChannelRegistry, ShopRegistry
from orderhub.adapters.db.tables import inbox, sync_cursors

CONNECTED, LAGGING, FAILING = "connected", "lagging", "failing"
# A message waiting longer than this for processing means the channel's orders are late.
LAG_THRESHOLD = timedelta(seconds=60)
# A stream connection down this long (reconnecting with backoff meanwhile) counts as failing.
DISCONNECTED_GRACE = timedelta(seconds=30)
# Fetches failing this many times in a row (after their own retries) count as failing.
FETCH_FAILURES = 3


@dataclass(slots=True)
class _Connection:
    state: str
    since: datetime
    detail: str | None = None


@dataclass(slots=True)
class _Fetches:
    failures: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_ok_at: datetime | None = None


class ChannelMonitor:
    def __init__(self, shops: ShopRegistry) -> None:
        self.shops = shops
        self._lock = threading.Lock()
        self._last_message: dict[tuple[str, str], datetime] = {}
        self._connections: dict[tuple[str, str], _Connection] = {}  # (channel, app key)
        self._fetches: dict[tuple[str, str], _Fetches] = {}

    def _shops_of(self, channel: str, shop_id: str | None, app_key: str | None) -> list[str]:
        if shop_id:
            return [shop_id]
        if app_key:  # a push naming only the app (抖店): it counts for every shop of the app
            return [shop.shop_id for shop in self.shops.by_app_key(channel, app_key)]
        return []

    def message(self, channel: str, shop_id: str | None, app_key: str | None = None, at: datetime | None = None) -> None:
        at = at or datetime.now(UTC)
        with self._lock:
            for shop in self._shops_of(channel, shop_id, app_key):
                self._last_message[(channel, shop)] = at

    def connection(self, channel: str, app_key: str, state: str, detail: str | None = None) -> None:
        now = datetime.now(UTC)
        with self._lock:
            current = self._connections.get((channel, app_key))
            if current is not None and current.state == state:
                current.detail = detail or current.detail
                return
            # "connecting" after a drop keeps the time the connection was lost
            since = current.since if current is not None and state == "connecting" and current.state != CONNECTED else now
            self._connections[(channel, app_key)] = _Connection(state, since, detail)

    def fetch_ok(self, channel: str, shop_id: str) -> None:
        with self._lock:
            entry = self._fetches.setdefault((channel, shop_id), _Fetches())
            entry.failures = 0
            entry.last_ok_at = datetime.now(UTC)

    def fetch_failed(self, channel: str, shop_id: str, error: str) -> None:
        with self._lock:
            entry = self._fetches.setdefault((channel, shop_id), _Fetches())
            entry.failures += 1
            entry.last_error, entry.last_error_at = error, datetime.now(UTC)

    def view(self, shop: ShopConfig) -> dict[str, Any]:
        with self._lock:
            connection = self._connections.get((shop.channel, shop.app_key))
            fetches = self._fetches.get((shop.channel, shop.shop_id))
            return {
                "last_message_at": self._last_message.get((shop.channel, shop.shop_id)),
                "connection": None if connection is None else {
                    "state": connection.state, "since": connection.since, "detail": connection.detail},
                "fetch": None if fetches is None else {
                    "failures": fetches.failures, "last_error": fetches.last_error,
                    "last_error_at": fetches.last_error_at, "last_ok_at": fetches.last_ok_at},
            }


def channel_statuses(
    engine: sa.Engine, shops: ShopRegistry, channels: ChannelRegistry, monitor: ChannelMonitor,
    pull_interval_s: float, now: datetime | None = None,
) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    with engine.connect().execution_options(readonly=True) as conn:
        pending = conn.execute(
            sa.select(inbox.c.channel, inbox.c.shop_id, sa.func.count(), sa.func.min(inbox.c.received_at))
            .where(inbox.c.status != "done").group_by(inbox.c.channel, inbox.c.shop_id)
        ).all()
        cursors = {(r.channel, r.shop_id): r for r in conn.execute(sa.select(sync_cursors))}
    out = []
    for shop in sorted(shops.all(), key=lambda s: (s.channel, s.shop_id)):
        transport = channels.transport(shop.channel)
        # Pushes that name only the app (抖店) wait with no shop: they count for every shop of it.
        rows = [r for r in pending if r.channel == shop.channel and r.shop_id in (shop.shop_id, None)]
        backlog = sum(r[2] for r in rows)
        oldest = min((r[3] for r in rows), default=None)
        view = monitor.view(shop)
        cursor = cursors.get((shop.channel, shop.shop_id))
        last_message = view["last_message_at"]
        state, reason = _state(transport, view, cursor, oldest, now, pull_interval_s)
        out.append({
            "channel": shop.channel, "shop_id": shop.shop_id, "name": shop.name, "transport": transport,
            "state": state, "reason": reason, "last_message_at": last_message, "backlog": backlog,
            "oldest_pending_at": oldest, "connection": view["connection"],
            "last_error": _last_error(view, cursor), "synced_until": cursor.synced_until if cursor else None,
        })
    return out


def _state(transport: str, view: dict[str, Any], cursor: Any, oldest: datetime | None, now: datetime, pull_interval_s: float) -> tuple[str, str | None]:
    connection, fetch = view["connection"], view["fetch"]
    if transport == "stream":
        if connection is None:
            return FAILING, "no connection to the platform's message service yet"
        if connection["state"] != CONNECTED and now - connection["since"] > DISCONNECTED_GRACE:
            return FAILING, f"message connection {connection['state']} since {connection['since']:%H:%M:%S}: {connection['detail'] or ''}".rstrip(": ")
    if fetch is not None and fetch["failures"] >= FETCH_FAILURES:
        return FAILING, f"order API failing ({fetch['failures']} in a row): {fetch['last_error']}"
    if transport == "pull" and cursor is not None and cursor.last_error_at is not None:
        if cursor.last_success_at is None or cursor.last_error_at > cursor.last_success_at:
            return FAILING, f"pull failing: {cursor.last_error}"
    if oldest is not None and now - oldest > LAG_THRESHOLD:
        return LAGGING, f"messages waiting since {oldest:%H:%M:%S}"
    if transport == "pull":
        if cursor is None:
            return LAGGING, "first pull not done yet"
        behind = max(timedelta(seconds=3 * pull_interval_s), LAG_THRESHOLD)
        if now - cursor.synced_until > behind:
            return LAGGING, f"pull synced until {cursor.synced_until:%H:%M:%S}"
    if transport == "stream" and connection is not None and connection["state"] != CONNECTED:
        return LAGGING, f"reconnecting ({connection['detail'] or connection['state']})"
    return CONNECTED, None


def _last_error(view: dict[str, Any], cursor: Any) -> dict[str, Any] | None:
    candidates = []
    if view["fetch"] and view["fetch"]["last_error_at"]:
        candidates.append((view["fetch"]["last_error_at"], view["fetch"]["last_error"]))
    if cursor is not None and cursor.last_error_at is not None:
        candidates.append((cursor.last_error_at, cursor.last_error))
    connection = view["connection"]
    if connection and connection["state"] != CONNECTED and connection["detail"]:
        candidates.append((connection["since"], connection["detail"]))
    if not candidates:
        return None
    at, message = max(candidates, key=lambda c: c[0])
    return {"at": at, "message": message}
