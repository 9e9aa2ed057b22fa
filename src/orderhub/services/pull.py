"""Scheduled incremental pull for channels without push (JD): windows by modified time."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.registry import ChannelRegistry
from orderhub.adapters.db.inbox import append_rows
from orderhub.adapters.db.tables import sync_cursors
from orderhub.domain.errors import FetchError

log = logging.getLogger(__name__)

_PAGE = 100  # orders per inbox row
_MAX_WINDOW = timedelta(hours=1)  # platforms cap the span of one search


@dataclass(frozen=True, slots=True)
class PullResult:
    shop: str
    orders: int
    synced_until: datetime | None
    error: str | None = None


class Puller:
    """Reads each pull shop's orders modified since its cursor into the inbox.

    The cursor advances in the same transaction that stores the pulled pages, so a crash or
    a platform outage never leaves a gap: the next run starts where the last stored window
    ended, minus an overlap for the platform's late indexing (duplicates are harmless).
    """

    def __init__(
        self, engine: sa.Engine, channels: ChannelRegistry, http: httpx.AsyncClient, *,
        overlap_s: float, lookback_s: float, monitor: Any = None,
    ) -> None:
        self.engine = engine
        self.monitor = monitor  # ChannelMonitor: when orders last arrived
        self.channels = channels
        self.http = http
        self.overlap = timedelta(seconds=overlap_s)
        self.lookback = timedelta(seconds=lookback_s)

    async def pull_shop(self, shop: ShopConfig, now: datetime | None = None) -> PullResult:
        now = now or datetime.now(UTC)
        adapter = self.channels.sources[shop.channel]
        cursor = await asyncio.to_thread(self._cursor, shop)
        start = (cursor - self.overlap) if cursor else (now - self.lookback)
        total = 0
        while start < now:
            end = min(start + _MAX_WINDOW, now)
            try:
                raws = await adapter.pull_window(self.http, shop, start, end)
            except FetchError as exc:
                await asyncio.to_thread(self._record_error, shop, exc.message, now, start)
                log.warning("pull %s/%s failed: %s", shop.channel, shop.shop_id, exc.message)
                return PullResult(shop.shop_id, total, cursor, exc.message)
            await asyncio.to_thread(self._store, shop, raws, end)
            if raws and self.monitor is not None:
                self.monitor.message(shop.channel, shop.shop_id)
            total += len(raws)
            cursor = end
            start = end
        return PullResult(shop.shop_id, total, cursor)

    def _cursor(self, shop: ShopConfig) -> datetime | None:
        with self.engine.connect().execution_options(readonly=True) as conn:
            return conn.execute(
                sa.select(sync_cursors.c.synced_until).where(
                    sync_cursors.c.channel == shop.channel, sync_cursors.c.shop_id == shop.shop_id
                )
            ).scalar_one_or_none()

    def _store(self, shop: ShopConfig, raws: list[dict], until: datetime) -> None:
        rows = [
            {"channel": shop.channel, "shop_id": shop.shop_id, "kind": "pull", "body": orjson.dumps({"orders": raws[i : i + _PAGE]})}
            for i in range(0, len(raws), _PAGE)
        ]
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            if rows:
                append_rows(conn, rows)
            self._upsert_cursor(conn, shop, {"synced_until": until, "last_success_at": now, "last_error": None})

    def _record_error(self, shop: ShopConfig, error: str, now: datetime, start: datetime) -> None:
        """Keep the failure for GET /api/v1/channels. A shop whose very first pull fails gets a
        cursor at the window it tried, so the next run starts there (nothing is skipped)."""
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(sync_cursors.c.channel).where(sync_cursors.c.channel == shop.channel, sync_cursors.c.shop_id == shop.shop_id)
            ).first()
            if exists:
                conn.execute(
                    sa.update(sync_cursors)
                    .where(sync_cursors.c.channel == shop.channel, sync_cursors.c.shop_id == shop.shop_id)
                    .values(last_error=error, last_error_at=now)
                )
            else:
                conn.execute(sync_cursors.insert().values(
                    channel=shop.channel, shop_id=shop.shop_id, synced_until=start + self.overlap, last_error=error, last_error_at=now))

    @staticmethod
    def _upsert_cursor(conn: sa.Connection, shop: ShopConfig, values: dict) -> None:
        updated = conn.execute(
            sa.update(sync_cursors)
            .where(sync_cursors.c.channel == shop.channel, sync_cursors.c.shop_id == shop.shop_id)
            .values(**values)
        ).rowcount
        if not updated:
            conn.execute(sync_cursors.insert().values(channel=shop.channel, shop_id=shop.shop_id, **values))
