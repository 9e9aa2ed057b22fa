"""The simulated platforms' side of ship write-back: a seller's shipment recorded on a platform order.

Each platform module reads its own ship API's parameters (and checks its signature or token as
for every call), turns its carrier code into the simulator's carrier, then calls `ship`; the
answer tells it which of its own replies to give. Idempotent as the platforms are: the same
waybill told twice, or a shipment for an order that has already gone, is "already shipped", and
nothing is recorded twice. An order becomes shipped (status, waybill on its order API, the
platform's "shipped" message) once every line not refunded is in a package; until then the
packages are kept but the order still reads as paid [U: platforms show 部分发货 in between].

Every accepted shipment is kept in `sim.shipments` (GET /_sim/shipments), so tests can assert
what each platform was told.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orderhub.simulator import model as m
from orderhub.simulator.pusher import Push

if TYPE_CHECKING:
    from orderhub.simulator.state import Simulator

# The simulator's carriers (抖店's company codes, as its generated orders use) and their names.
CARRIER_NAMES = {
    "shunfeng": "顺丰速运", "zhongtong": "中通快递", "yuantong": "圆通速递", "yunda": "韵达快递",
    "shentong": "申通快递", "ems": "EMS", "jd": "京东快递", "debangkuaidi": "德邦快递",
}
# Each carrier checks its own number format; the simulator only refuses what no carrier issues
# (spaces, punctuation, too short or long) [U].
WAYBILL = re.compile(r"[A-Za-z0-9]{8,32}")

SHIPPED, ALREADY, UNKNOWN, CANCELLED, UNPAID, BAD_WAYBILL, BAD_CARRIER, BAD_LINES, NOT_SHIPPED = (
    "shipped", "already_shipped", "unknown_order", "cancelled", "unpaid", "bad_waybill", "bad_carrier", "bad_lines",
    "not_shipped")

_announcing: set[asyncio.Task[Any]] = set()  # pushes on their way (kept so they are not collected)


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str  # one of the constants above
    order: m.SimOrder | None = None
    detail: str = ""


def ship(
    sim: Simulator, channel: str, shop_id: str, original_id: str, *, carrier: str | None, platform_carrier: Any,
    waybill_no: str, line_ids: list[str] | None, via: str, jd_logistics_id: str = "", append: bool = False,
) -> Outcome:
    """Record one package (`line_ids` None: every line still to ship) on the shop's order.

    `carrier` is the simulator's carrier for the code the platform was sent (None: the platform
    knows no such code); `append` adds a further package to an order already shipped (快手 追加包裹).
    """
    order = sim.get(channel, original_id)
    if order is None or order.shop_id != shop_id or not order.visible:
        return Outcome(UNKNOWN, detail=original_id)
    if order.status in (m.CANCELLED, m.CLOSED):
        return Outcome(CANCELLED, order)
    if order.status == m.UNPAID:
        return Outcome(UNPAID, order)
    if carrier not in CARRIER_NAMES:
        return Outcome(BAD_CARRIER, order, str(platform_carrier))
    if not WAYBILL.fullmatch(waybill_no):
        return Outcome(BAD_WAYBILL, order, waybill_no)
    packages: list[dict[str, Any]] = order.extra.setdefault("packages", [])
    if any(p["waybill_no"] == waybill_no for p in packages):
        return Outcome(ALREADY, order, waybill_no)  # the same parcel, told again
    shipped_lines: set[str] = order.extra.setdefault("shipped_lines", set())
    known = {line.line_id for line in order.lines}
    if line_ids is not None and (not line_ids or not set(line_ids) <= known):
        return Outcome(BAD_LINES, order, ",".join(sorted(set(line_ids) - known)))
    fully_shipped = order.status in (m.SHIPPED, m.COMPLETED)
    open_lines = {line.line_id for line in order.lines if line.refund != m.REFUNDED} - shipped_lines
    if append:
        if not fully_shipped:
            return Outcome(NOT_SHIPPED, order)
        lines = sorted(set(line_ids or known))
    else:
        wanted = set(open_lines) if line_ids is None else set(line_ids) - shipped_lines
        if fully_shipped or not wanted:
            return Outcome(ALREADY, order)
        lines = sorted(wanted)
        shipped_lines.update(wanted)
        open_lines -= wanted
    packages.append({"carrier": carrier, "waybill_no": waybill_no, "jd_logistics_id": jd_logistics_id})
    push = None
    if not fully_shipped and not open_lines:
        first = packages[0]
        shipment = m.Shipment(first["carrier"], CARRIER_NAMES[first["carrier"]], first["waybill_no"], first["jd_logistics_id"])
        push = sim.apply(order, m.PlannedEvent(sim.clock.now(), m.SHIP, {"shipment": shipment}))
    sim.shipments.append({
        "channel": channel, "shop_id": shop_id, "order_id": original_id, "via": via, "carrier": str(platform_carrier),
        "carrier_code": carrier, "waybill_no": waybill_no, "lines": lines,
        "order_shipped": order.status in (m.SHIPPED, m.COMPLETED), "at": sim.clock.now(),
    })
    _announce(sim, push)
    return Outcome(SHIPPED, order)


def _announce(sim: Simulator, push: Push | None) -> None:
    """Send the platform's "shipped" message as its platform would: on the message stream, or as
    a webhook to OrderHub (when the simulator has a target) — in the background, after the reply."""
    if push is None or not (push.stream_key or sim.target_url):
        return
    task = asyncio.get_running_loop().create_task(sim.pusher.deliver(push, sim.target_url or ""))
    _announcing.add(task)
    task.add_done_callback(_announcing.discard)
