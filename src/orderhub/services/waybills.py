"""Waybills for the WMS: it asks when it packs (the `waybill_request` callback), and the label is the last gate.

Why at packing and not when the order is queued: the address is final only then (a change before
packing is an interception), no waybill is spent on the many orders cancelled in their first
seconds, and a package waiting for its label cannot be sealed, which closes the race with a cancel
that arrived a moment earlier. One waybill per package from 菜鸟 (adapters/waybills/cainiao.py),
kept on the package: asked again (a retry, a replay), the same waybill comes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from orderhub.adapters.db import inventory_repo
from orderhub.adapters.db import fulfillment_repo as repo
from orderhub.adapters.db.tables import order_lines, skus
from orderhub.adapters.pii_crypto import PiiKeyError
from orderhub.adapters.waybills.cainiao import Waybill, WaybillOrder
from orderhub.domain.errors import ErrorCode, FetchError, OrderHubError
from orderhub.domain.fulfillment import InstructionKind, Outcome, PackageStatus

if TYPE_CHECKING:
    from orderhub.services.fulfillment import Fulfillment, WmsConfig

P = PackageStatus

log = logging.getLogger(__name__)


async def answer(service: Fulfillment, wms: WmsConfig, event: dict[str, Any]) -> dict[str, Any]:
    """The label is the last gate before the box is sealed: first every platform message that arrived
    before the request is processed (a cancel among them is an instruction by then), then no label
    while an instruction for the package is under way (409: the WMS holds the box; the freeze is coming)."""
    code = str(event.get("order_code") or "")
    known, wanted, keys = await service.in_callback_thread(_waybill_need, service, wms, code)
    waybill = None
    if known is None:
        if service.waybills is None or service.http is None:
            raise OrderHubError(ErrorCode.WAYBILL_UNAVAILABLE, "no waybill service is configured", "waybill")
        try:
            waybill = await service.waybills.get_one(service.http, wanted)
        except FetchError as exc:
            raise OrderHubError(ErrorCode.WAYBILL_UNAVAILABLE, exc.message, "waybill") from None
    # The gate: look again (every label_grace_s) until no platform message received so far is waiting
    # to be processed, and grant in the same step; a cancel among them is an instruction by then.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + service.label_wait_s
    while True:
        if service.label_wait_s > 0:
            await asyncio.sleep(service.label_grace_s)  # what was received before now is committed by then
        cutoff = service.clock() if service.label_wait_s > 0 and loop.time() < deadline else None
        if cutoff is not None and await _in_broker(service, keys, cutoff):
            continue  # scaled mode: a message for these orders is still in the broker
        granted = await service.in_callback_thread(_grant, service, wms, code, waybill, cutoff)
        if granted is not None:
            return granted


async def _in_broker(service: Fulfillment, keys: list[tuple[str, str]], cutoff: datetime) -> bool:
    """Is a message received by `cutoff` for one of these orders (channel, original id) still in the broker, not yet
    in the inbox? Only in scaled mode; a broker that does not answer holds no label (the freeze still catches a cancel)."""
    if service.in_broker is None or not keys:
        return False
    bound = max(0.2, service.label_wait_s)  # a broker that hangs must not hold the WMS's packing bench
    try:
        oldest = await asyncio.wait_for(service.in_broker(keys), timeout=bound)
    except Exception as exc:
        log.warning("the label gate could not ask the broker (%s: %s); granting on what the database shows", type(exc).__name__, exc)
        return False
    return oldest is not None and oldest <= cutoff


def _grant(service: Fulfillment, wms: WmsConfig, code: str, waybill: Waybill | None, cutoff: datetime | None) -> dict[str, Any] | None:
    """None while a platform message received by `cutoff` is still unprocessed (or still on its way to
    disk in this process); else the label (or a 409)."""
    if cutoff is not None:
        oldest = service.unwritten()
        if oldest is not None and oldest <= cutoff:
            return None
        with service.engine.connect().execution_options(readonly=True) as conn:
            if repo.inbox_behind(conn, cutoff):
                return None
    return _store_waybill(service, wms, code, waybill)


def _hold_label(conn: sa.Connection, code: str, order_ids: list[str]) -> None:
    for oid in order_ids:
        for row in repo.instructions_of(conn, oid):
            waiting = row.outcome in (Outcome.PENDING, Outcome.FROZEN) or (row.outcome == Outcome.SUPERVISOR and not row.resolved_by)
            if waiting and row.kind != InstructionKind.EXPEDITE:
                raise OrderHubError(ErrorCode.ORDER_STATE, f"指令 #{row.id}（{row.kind}）处理中：包裹 {code} 暂不出面单 / an instruction is under way",
                                    "order_code")


def _waybill_need(service: Fulfillment, wms: WmsConfig, code: str) -> tuple[dict[str, Any] | None, WaybillOrder | None, list[tuple[str, str]]]:
    """The waybill the package has (a retry), or what 菜鸟 needs for a new one; and the package's orders as
    (channel, original id), the broker's partition keys."""
    with service.engine.begin() as conn:
        orders, rows = repo.locked_by_code(conn, wms.name, code)
        live = [r for r in rows if P(r.status) is not P.CANCELLED]
        if not live:
            raise OrderHubError(ErrorCode.ORDER_STATE, f"package {code} was cancelled: no waybill", "order_code")
        _hold_label(conn, code, sorted({r.order_id for r in live}))
        members = [orders[oid] for oid in sorted({r.order_id for r in live})]
        keys = [(m.channel, m.original_id) for m in members]
        if live[0].waybill_no:  # asked again (a retry, a replay): the same waybill
            return {"carrier": live[0].carrier, "waybill_no": live[0].waybill_no}, None, keys
        held = inventory_repo.active_reservations(conn, [m.id for m in members])
        picks = [r for m in members for r in held.get(m.id, []) if r["package_no"] == live[0].package_no]
        titles = {(row.order_id, row.line_no): row.title for row in conn.execute(
            sa.select(order_lines.c.order_id, order_lines.c.line_no, order_lines.c.title).where(order_lines.c.order_id.in_([m.id for m in members])))}
        weights = dict(conn.execute(sa.select(skus.c.code, skus.c.weight_g).where(skus.c.code.in_(sorted({r["sku"] for r in picks})))).all()) if picks else {}
    first = members[0]
    buyer, address = first.buyer or {}, dict(first.address or {})
    # the label needs the receiver as typed: the buyer's sealed PII (a street CS typed, a decrypted phone) is
    # opened here, for the 菜鸟 request only; the masks stand where nothing is sealed
    plain = _opened(service, first.pii_sealed)
    address["detail"] = plain.get("address_detail") or address.get("detail")
    recipient = {"name": plain.get("name") or buyer.get("name"), "mobile": plain.get("phone") or buyer.get("phone"),
                 "address": {"province": address.get("province"), "city": address.get("city"), "district": address.get("district"),
                             "town": "", "detail": address.get("detail")}}
    if (first.pii or {}).get("oaid"):  # 淘宝: 菜鸟 decrypts the receiver from the OAID itself
        recipient.update(oaid=first.pii["oaid"], tid=first.original_id)
    # a new address is a new label: the object id carries (a hash of) the address, so a repeat of the same one is the same waybill
    where = hashlib.sha1(orjson.dumps(address, option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]
    items = tuple((titles.get((m.id, r["line_no"]), r["sku"]), r["qty"]) for m in members for r in held.get(m.id, [])
                  if r["package_no"] == live[0].package_no)
    return None, WaybillOrder(f"{code}:{where}", live[0].carrier or service.default_carrier, first.channel,
                              tuple(m.original_id for m in members), items, sum(weights.get(r["sku"], 0) * r["qty"] for r in picks),
                              recipient), keys


def _opened(service: Fulfillment, sealed: str | None) -> dict[str, Any]:
    if not sealed or service.vault is None:
        return {}
    try:
        return service.vault.open(sealed)
    except PiiKeyError:  # a key that was removed: the label gets the masks, and the log says why
        log.warning("sealed buyer data of a package could not be opened; the waybill request carries the masks")
        return {}


def _store_waybill(service: Fulfillment, wms: WmsConfig, code: str, waybill: Waybill | None) -> dict[str, Any]:
    """The grant, under the package's locks: no label while an instruction is under way (one may have
    come in during the 菜鸟 call or the gate). A new waybill is kept on the package; when two requests
    raced, the first one stored is the one both get."""
    with service.engine.begin() as conn:
        _, rows = repo.locked_by_code(conn, wms.name, code)
        live = [r for r in rows if P(r.status) is not P.CANCELLED]
        if not live:
            raise OrderHubError(ErrorCode.ORDER_STATE, f"package {code} was cancelled: no waybill", "order_code")
        kept = next((r for r in live if r.waybill_no), None)
        if kept is None and waybill is not None:
            for r in live:
                repo.set_values(conn, (r.order_id, r.package_no), service.clock(), waybill_no=waybill.waybill_no, carrier=waybill.carrier)
        _hold_label(conn, code, sorted({r.order_id for r in live}))
    if kept is not None:
        return {"carrier": kept.carrier, "waybill_no": kept.waybill_no}
    assert waybill is not None
    return {"carrier": waybill.carrier, "waybill_no": waybill.waybill_no, "cp_code": waybill.cp_code, "print_data": waybill.print_data}


