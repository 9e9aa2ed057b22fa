"""What buyers and staff may see of an order's buyer: the public tracking answer (order number +
last 4 digits of the phone → status and track, nothing else) and the audited plaintext reveal."""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db import audit_log_repo, tracking_repo
from orderhub.adapters.db.queries import local
from orderhub.adapters.db.tables import order_events, orders
from orderhub.adapters.notify.templates import carrier_name
from orderhub.adapters.pii_crypto import PiiVault
from orderhub.domain.access import Actor
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.logistics import LABELS_ZH as LOGISTICS_ZH
from orderhub.domain.logistics import ParcelState
from orderhub.domain.status import LABELS_ZH, Status
from orderhub.services.buyer_pii import BuyerPii

_NO_MATCH = "没有找到这个订单，请核对订单号和手机号后四位 no order with this number and phone"


def track_for_buyer(engine: sa.Engine, vault: PiiVault, order_no: str, phone_last4: str) -> dict[str, Any]:
    """An unknown order and wrong digits get the same 404 after the same work (no oracle)."""
    wanted = vault.last4_hash(phone_last4) or ""
    with engine.connect().execution_options(readonly=True) as conn:
        candidates = conn.execute(
            sa.select(orders.c.id, orders.c.original_id, orders.c.status, orders.c.modified_at, orders.c.shipment, orders.c.phone_last4_hash)
            .where(orders.c.original_id == order_no.strip()[:64])
        ).all()
        # constant-time comparison of every candidate, then at most one match (an order number is
        # one platform's; two channels with the same number and the same digits are told apart by neither)
        matches = [row for row in candidates if hmac.compare_digest(row.phone_last4_hash or "-", wanted or "+")]
        if len(matches) != 1:
            raise OrderHubError(ErrorCode.NOT_FOUND, _NO_MATCH)
        order = matches[0]
        parcels = tracking_repo.order_parcels(conn, order.id)
        events = tracking_repo.track(conn, [p.waybill_no for p in parcels])
    return {
        "order_no": order.original_id, "status": order.status, "status_label": LABELS_ZH.get(Status(order.status), order.status),
        "updated_at": local(order.modified_at), "parcels": _parcels(parcels, events, order.shipment),
    }


def _parcels(parcels: list[Any], events: list[Any], shipment: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not parcels and shipment and shipment.get("waybill_no"):  # shipped, not tracked (yet): the waybill alone
        state = shipment.get("logistics_status") or ParcelState.NONE.value
        return [_parcel(shipment.get("carrier"), shipment["waybill_no"], state, [])]
    by_waybill: dict[str, list[Any]] = {}
    for event in events:  # newest first already
        by_waybill.setdefault(event.waybill_no, []).append(event)
    return [_parcel(p.carrier, p.waybill_no, p.state, by_waybill.get(p.waybill_no, [])) for p in parcels]


def _parcel(carrier: str | None, waybill_no: str, state: str, events: list[Any]) -> dict[str, Any]:
    return {
        "carrier_code": carrier, "carrier_name": carrier_name(carrier), "waybill_no": waybill_no,
        "logistics_status": state, "logistics_label": _label(state),
        "events": [{"at": local(e.at), "status": e.state, "status_label": _label(e.state), "description": e.description, "location": e.location}
                   for e in events],
    }


def _label(state: str) -> str:
    try:
        return LOGISTICS_ZH[ParcelState(state)]
    except ValueError:
        return state


async def reveal_buyer(engine: sa.Engine, pii: BuyerPii, order_id: str, actor: Actor) -> dict[str, Any]:
    """The buyer's plaintext name, phone and address for a person whose role may see it. The
    audit-log entry and an order event (who looked) are committed before the answer is given."""
    address = await asyncio.to_thread(_address, engine, order_id)
    if address is None:
        raise OrderHubError(ErrorCode.NOT_FOUND, f"order {order_id} does not exist", "order_id")
    plain = await pii.reveal(engine, order_id)
    await asyncio.to_thread(log_reveal, engine, actor, order_id, sorted(plain))
    return {
        "order_id": order_id, "name": plain.get("name"), "phone": plain.get("phone"),
        "address": {"province": address.get("province"), "city": address.get("city"), "district": address.get("district"),
                    "detail": plain.get("address_detail")},
    }


def _address(engine: sa.Engine, order_id: str) -> dict[str, Any] | None:
    with engine.connect().execution_options(readonly=True) as conn:
        return conn.execute(sa.select(orders.c.address).where(orders.c.id == order_id)).scalar_one_or_none()


def log_reveal(engine: sa.Engine, actor: Actor, order_id: str, fields: list[str]) -> None:
    """Who saw which of the buyer's plaintext fields: the audit log and the order's own event log."""
    with engine.begin() as conn:
        audit_log_repo.record(conn, actor, "pii.reveal", "order", order_id, after={"fields": fields})
        conn.execute(order_events.insert().values(
            order_id=order_id, at=datetime.now(UTC), actor=actor.name[:64], kind="pii_revealed",
            reason="查看买家信息 buyer details shown", data={"fields": fields},
        ))
