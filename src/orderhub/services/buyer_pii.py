"""Buyer PII: decrypted only when needed, kept sealed, matched and searched through keyed hashes.

Platforms send buyer names, phones and addresses as ciphertext (抖店, 淘宝 OAID, 拼多多 …) and
decrypt them for authorised apps. OrderHub asks for the phone of an order when it first sees the
order or its phone ciphertext changes — the phone is what recognises one customer across channels
and what buyers and CS search by (last 4 digits) — and for more only when a person or a waybill
needs it (`reveal`). Plaintext is sealed before it is stored; it never reaches logs or the API.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from orderhub.adapters.channels.registry import ChannelRegistry, ShopRegistry
from orderhub.adapters.db.orders_repo import merge_customers
from orderhub.adapters.db.tables import customer_identities, orders
from orderhub.adapters.pii_crypto import PiiVault
from orderhub.domain.errors import ErrorCode, FetchError, OrderHubError
from orderhub.domain.merge import StoredOrder
from orderhub.domain.order import NormalizedOrder
from orderhub.domain.pii import FIELDS, LAST4_HASH, PHONE_HASH, RESOLVED_KEYS, SEALED

log = logging.getLogger(__name__)

DONE, PENDING = "done", "pending"
_MATCHING_FIELDS = ("phone",)  # what cross-channel matching and last-4 search need


@dataclass(frozen=True, slots=True)
class ResolvedPii:
    sealed: str | None
    phone_hash: str | None
    last4_hash: str | None
    state: str  # done | pending (the platform could not decrypt now: retried later)

    def columns(self) -> dict[str, Any]:
        return {"sealed": self.sealed, "phone_hash": self.phone_hash, "last4_hash": self.last4_hash, "state": self.state}


class BuyerPii:
    def __init__(self, vault: PiiVault, shops: ShopRegistry, channels: ChannelRegistry, http: httpx.AsyncClient) -> None:
        self.vault = vault
        self.shops = shops
        self.channels = channels
        self.http = http

    def decryptable(self, channel: str) -> bool:
        return hasattr(self.channels.sources.get(channel), "decrypt")

    def needs_decrypt(self, order: NormalizedOrder, stored: StoredOrder | None) -> bool:
        """A phone to learn: the platform sent ciphertext we have not decrypted, or new ciphertext
        (an address change). The same ciphertext is never decrypted twice."""
        ciphers = {k: v for k, v in order.pii.items() if k not in RESOLVED_KEYS}
        if not ciphers or not self.decryptable(order.channel):
            return False
        return stored is None or stored.phone_hash is None or stored.pii != ciphers

    async def resolve(self, snapshots: list[NormalizedOrder], stored: dict[str, StoredOrder]) -> dict[str, ResolvedPii]:
        """Order id -> sealed phone and hashes, for the snapshots whose buyer phone is new to us."""
        out: dict[str, ResolvedPii] = {}
        todo: dict[tuple[str, str], dict[str, NormalizedOrder]] = defaultdict(dict)
        for order in snapshots:
            if SEALED in order.pii or PHONE_HASH in order.pii:  # a file import: sealed at import
                out[order.id] = ResolvedPii(order.pii.get(SEALED), order.pii.get(PHONE_HASH), order.pii.get(LAST4_HASH), DONE)
            elif self.needs_decrypt(order, stored.get(order.id)):
                todo[(order.channel, order.shop_id)][order.id] = order  # the latest snapshot of each order
        results = await asyncio.gather(*(self._decrypt(ch, shop, list(group.values()), _MATCHING_FIELDS) for (ch, shop), group in todo.items()))
        for result in results:
            out.update(result)
        return out

    async def _decrypt(self, channel: str, shop_id: str, group: list[NormalizedOrder], fields: tuple[str, ...]) -> dict[str, ResolvedPii]:
        shop = self.shops.by_shop(channel, shop_id)
        source = self.channels.sources.get(channel)
        pending = ResolvedPii(None, None, None, PENDING)
        if shop is None or source is None:
            return {order.id: pending for order in group}
        try:
            plain = await source.decrypt(self.http, shop, [(o.original_id, o.pii) for o in group], fields)
        except FetchError as exc:
            # Orders are stored without the phone for now; the retry pass asks again later.
            log.warning("decrypting buyer phones of %d %s/%s orders failed: %s", len(group), channel, shop_id, exc.message)
            return {order.id: pending for order in group}
        except Exception as exc:
            log.warning("decrypting buyer phones of %s/%s failed: %s", channel, shop_id, type(exc).__name__)
            return {order.id: pending for order in group}
        return {order.id: self._sealed(plain.get(order.original_id) or {}) for order in group}

    def _sealed(self, plain: dict[str, str]) -> ResolvedPii:
        phone = plain.get("phone")
        if not phone:
            return ResolvedPii(None, None, None, PENDING)
        return ResolvedPii(self.vault.seal(plain), self.vault.phone_hash(phone), self.vault.last4_hash(phone), DONE)

    def seal_plaintext(self, plain: dict[str, str | None]) -> dict[str, str]:
        """Plaintext PII from a file import -> the `pii` entries that replace it before storage."""
        kept = {k: v for k, v in plain.items() if k in FIELDS and v}
        if not kept:
            return {}
        phone = kept.get("phone")
        result = {SEALED: self.vault.seal(kept)}
        if phone and (phone_hash := self.vault.phone_hash(phone)):
            result[PHONE_HASH] = phone_hash
            result[LAST4_HASH] = self.vault.last4_hash(phone) or ""
        return result

    # -- later passes ------------------------------------------------------------------------

    async def retry_pending(self, engine: sa.Engine, limit: int = 200) -> int:
        """Ask the platforms again for phones they could not decrypt; returns how many were resolved."""
        rows = await asyncio.to_thread(_pending_rows, engine, limit)
        if not rows:
            return 0
        groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for row in rows:
            groups[(row.channel, row.shop_id)].append(row)
        resolved = 0
        for (channel, shop_id), group in groups.items():
            orders_ = [_Ciphers(row.id, row.original_id, row.pii or {}) for row in group]
            result = await self._decrypt(channel, shop_id, orders_, _MATCHING_FIELDS)  # type: ignore[arg-type]
            done = {row.id: (row.customer_id, result[row.id]) for row in group if result[row.id].state == DONE}
            if done:
                await asyncio.to_thread(_store_resolved, engine, done)
                resolved += len(done)
        return resolved

    async def reveal(self, engine: sa.Engine, order_id: str, fields: tuple[str, ...] = FIELDS) -> dict[str, str]:
        """The plaintext of `fields` for one order (a waybill, or a person whose role may see it):
        from the sealed copy when it has them, else decrypted by the platform and sealed."""
        row = await asyncio.to_thread(_order_row, engine, order_id)
        if row is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"no order {order_id}", "order_id")
        known = self.vault.open(row.pii_sealed) if row.pii_sealed else {}
        missing = tuple(f for f in fields if f not in known)
        if missing and self.decryptable(row.channel) and row.pii:
            shop = self.shops.by_shop(row.channel, row.shop_id)
            if shop is not None:
                plain = await self.channels.sources[row.channel].decrypt(self.http, shop, [(row.original_id, row.pii)], missing)
                got = plain.get(row.original_id) or {}
                if got:
                    known = {**known, **got}
                    phone = known.get("phone")
                    values = {"pii_sealed": self.vault.seal(known)}
                    if phone:
                        values.update(phone_hash=self.vault.phone_hash(phone), phone_last4_hash=self.vault.last4_hash(phone), pii_state=DONE)
                    await asyncio.to_thread(_update_order, engine, order_id, values)
        return {f: known[f] for f in fields if f in known}

    def rotate(self, engine: sa.Engine, batch: int = 500) -> int:
        """Re-seal every order's PII under the current key (after a new key was put first)."""
        rotated = 0
        last = ""
        while True:
            with engine.connect().execution_options(readonly=True) as conn:
                rows = conn.execute(
                    sa.select(orders.c.id, orders.c.pii_sealed).where(orders.c.pii_sealed.is_not(None), orders.c.id > last)
                    .order_by(orders.c.id).limit(batch)
                ).all()
            if not rows:
                return rotated
            last = rows[-1].id
            changed = [{"b_id": r.id, "b_sealed": self.vault.rotate(r.pii_sealed)} for r in rows if self.vault.needs_rotation(r.pii_sealed)]
            if changed:
                with engine.begin() as conn:
                    conn.execute(sa.update(orders).where(orders.c.id == sa.bindparam("b_id")).values(pii_sealed=sa.bindparam("b_sealed")), changed)
                rotated += len(changed)


@dataclass(frozen=True, slots=True)
class _Ciphers:
    """The part of a stored order a decrypt call needs."""

    id: str
    original_id: str
    pii: dict[str, str]


def _pending_rows(engine: sa.Engine, limit: int) -> list[Any]:
    with engine.connect().execution_options(readonly=True) as conn:
        return list(conn.execute(
            sa.select(orders.c.id, orders.c.channel, orders.c.shop_id, orders.c.original_id, orders.c.pii, orders.c.customer_id)
            .where(orders.c.pii_state == PENDING).order_by(orders.c.id).limit(limit)
        ))


def _order_row(engine: sa.Engine, order_id: str) -> Any:
    with engine.connect().execution_options(readonly=True) as conn:
        return conn.execute(
            sa.select(orders.c.channel, orders.c.shop_id, orders.c.original_id, orders.c.pii, orders.c.pii_sealed)
            .where(orders.c.id == order_id)
        ).first()


def _update_order(engine: sa.Engine, order_id: str, values: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(orders).where(orders.c.id == order_id).values(**values))


def _store_resolved(engine: sa.Engine, done: dict[str, tuple[str | None, ResolvedPii]]) -> None:
    """Write late-decrypted phones; the phone identity joins the order's customer, or, when the
    phone is already another customer's, the two customers become one."""
    with engine.begin() as conn:
        for order_id, (customer_id, pii) in done.items():
            conn.execute(sa.update(orders).where(orders.c.id == order_id).values(
                pii_sealed=pii.sealed, phone_hash=pii.phone_hash, phone_last4_hash=pii.last4_hash, pii_state=DONE))
            if customer_id and pii.phone_hash:
                owner = conn.execute(sa.select(customer_identities.c.customer_id).where(
                    customer_identities.c.channel == "phone", customer_identities.c.buyer_id == pii.phone_hash)).scalar_one_or_none()
                if owner is None:
                    conn.execute(customer_identities.insert().values(channel="phone", buyer_id=pii.phone_hash, customer_id=customer_id))
                elif owner != customer_id:  # the phone shows both are one buyer
                    merge_customers(conn, customer_id, owner)
