"""After a cancel or a new address came too late (the parcel was packed or has left): the carrier is asked to
bring the parcel back or take it to the new address, and the platform is not told that a cancelled parcel shipped.

- `CarrierInterceptSender` is the relay's sender for `carrier.intercept` (written by
  services/interception.py `carrier_intercept`). SF is asked through its interception API
  (adapters/carriers/sf.py `Sf.intercept`). A carrier OrderHub cannot ask — every carrier tracked
  through Kuaidi100, which has no interception API, or SF without an SF account configured — is not a
  silent success: the order's hold says CS must intercept by hand, CS is notified, and the outbox row
  keeps `{"result": "manual", "reason_code": "carrier_intercept_unsupported"}`. Each answer is kept on
  the instruction (`detail.carrier[waybill]`), in the hold's reason ("快递已拦截，包裹退回中" …) and as an
  order event (`carrier_intercept_accepted | refused | manual`).
- `ShipWriteBackGuard` wraps the `platform.ship` sender. A platform refuses to mark a cancelled order
  shipped, and a buyer who cancelled should not be told a parcel on its way back "has shipped": the
  write-back of a package whose cancel is being intercepted is recorded as sent with `{"skipped": reason}`
  (and an order event) instead of dead-lettering. For a cancel CS made (the platform's order is still
  open) it is sent after all once the carrier refused, or could not be asked: that parcel does reach
  the buyer, and the platform must know.
Docs: docs/fulfillment.md ("Too late: the carrier and the platform").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import sqlalchemy as sa

from orderhub.adapters.carriers.sf import InterceptAnswer, sf_address
from orderhub.adapters.db import outbox_repo
from orderhub.adapters.db import fulfillment_repo as repo
from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage
from orderhub.adapters.pii_crypto import PiiKeyError, PiiVault
from orderhub.domain.fulfillment import InstructionKind, Outcome
from orderhub.domain.merge import HoldCode
from orderhub.domain.pii import SEALED
from orderhub.services.interception import outbox_key

log = logging.getLogger(__name__)

KIND = "carrier.intercept"
SHIP_KIND = "platform.ship"
ACCEPTED, REFUSED, MANUAL = "accepted", "refused", "manual"
UNSUPPORTED = "carrier_intercept_unsupported"  # the stable reason of a carrier OrderHub cannot ask
_PLATFORM_CANCELS = ("cancelled", "closed")  # detail.platform of a cancel the platform made (services/interception.py)
_CARRIER_NAMES = {"SF": "顺丰", "ZTO": "中通", "YTO": "圆通", "YUNDA": "韵达", "STO": "申通", "EMS": "EMS", "JD": "京东", "DBL": "德邦"}


class Interceptor(Protocol):
    """A carrier's interception API (adapters/carriers/sf.py `Sf`)."""

    async def intercept(self, http: httpx.AsyncClient, waybill_no: str, action: str, destination: Mapping[str, Any], *,
                        request_id: str | None = None) -> InterceptAnswer: ...


def _now() -> datetime:
    return datetime.now(UTC)


def _name(carrier: str) -> str:
    return _CARRIER_NAMES.get(carrier.upper(), carrier)


class CarrierInterceptSender:
    """The outbox sender for `carrier.intercept`: the carrier's API where it has one, else a task for CS."""

    def __init__(self, engine: sa.Engine, http: httpx.AsyncClient, interceptors: Mapping[str, Interceptor], *,
                 return_to: Mapping[str, Any] | None = None, vault: PiiVault | None = None, notifier: Any = None,
                 clock: Callable[[], datetime] = _now) -> None:
        """interceptors: carrier code (SF) -> its API; return_to: where a parcel goes back to, {name, mobile,
        address{province, city, district, detail}} (the warehouse's sender, settings fulfillment.cainiao.sender);
        vault: opens a new street CS typed (sealed in the payload); notifier: services.notifications.Notifier."""
        self.engine = engine
        self.http = http
        self.interceptors = {code.upper(): api for code, api in interceptors.items()}
        self.return_to = dict(return_to or {})
        self.vault = vault
        self.notifier = notifier
        self.clock = clock

    async def send(self, message: OutboxMessage) -> dict[str, Any]:
        payload = message.payload or {}
        if message.kind != KIND or not payload.get("waybill_no") or not str(payload.get("instruction_id") or "").isdigit():
            raise DeliveryError(f"not a carrier interception: {message.kind} {payload}", retryable=False)
        carrier = str(payload.get("carrier") or "").upper()
        action = str(payload.get("action") or "return")
        interceptor = self.interceptors.get(carrier)
        destination, why_not = self._destination(payload, action) if interceptor is not None else (None, None)
        if interceptor is None or destination is None:
            why = why_not or _no_api(carrier)
            await self._recorded(payload, MANUAL, UNSUPPORTED, why)
            return {"result": MANUAL, "reason_code": UNSUPPORTED, "reason": why}
        answer = await interceptor.intercept(self.http, str(payload["waybill_no"]), action, destination, request_id=message.idempotency_key)
        result = ACCEPTED if answer.accepted else REFUSED
        await self._recorded(payload, result, answer.code, answer.message)
        return {"result": result, "code": answer.code, "message": answer.message}

    def _destination(self, payload: Mapping[str, Any], action: str) -> tuple[dict[str, str] | None, str | None]:
        """Where the parcel should go: the warehouse (a return), or the new address (a redirect), with its street in full."""
        if action == "return":
            address = self.return_to.get("address")
            if not isinstance(address, Mapping) or not address.get("detail"):
                return None, "没有配置退回地址（fulfillment.cainiao.sender）/ no return address configured"
            return sf_address(address, self.return_to.get("name"), self.return_to.get("mobile")), None
        body = dict(payload)
        if body.get(SEALED):
            if self.vault is None:
                return None, "新地址已加密但没有配置密钥 / the new address is sealed and no PII vault is configured"
            try:
                body = self.vault.open_address(body)
            except PiiKeyError:
                return None, "新地址无法解密 / the new address cannot be opened"
        address = body.get("address")
        if not isinstance(address, Mapping) or not address.get("detail") or "*" in str(address.get("detail")):
            # a platform's new address reaches OrderHub masked: the carrier cannot deliver to 测试路***
            return None, "新地址只有脱敏信息，请人工联系快递改址 / only the masked new address is known"
        return sf_address(address), None

    async def _recorded(self, payload: Mapping[str, Any], result: str, code: str, text: str) -> None:
        try:
            await asyncio.to_thread(self.record, payload, result, code, text)
        except Exception as exc:  # asked again: the carrier answers a repeated interception of a waybill the same way
            raise DeliveryError(f"the carrier's answer could not be recorded: {type(exc).__name__}: {exc}") from exc

    def record(self, payload: Mapping[str, Any], result: str, code: str, text: str) -> str:
        """The carrier's answer on the instruction, the order's hold and its events, and CS told; once per waybill."""
        now = self.clock()
        order_id, iid, waybill = str(payload["order_id"]), int(payload["instruction_id"]), str(payload["waybill_no"])
        carrier, action = str(payload.get("carrier") or "").upper(), str(payload.get("action") or "return")
        with self.engine.begin() as conn:
            order = repo.lock_orders(conn, [order_id]).get(order_id)  # the order first: the global lock order
            row = repo.instruction(conn, iid, lock=True)
            if order is None or row is None:
                return "stale"
            detail = dict(row.detail or {})
            answers = dict(detail.get("carrier") or {})
            if waybill in answers:
                return "stale"  # a resend of an answered request
            answers[waybill] = {"result": result, "action": action, "carrier": carrier, "code": code, "message": text, "at": now.isoformat()}
            detail["carrier"] = answers
            resume = dict(detail.get("ship_skipped") or {}) if result != ACCEPTED and not _platform_cancelled(detail) else {}
            if resume:
                detail["ship_skipped"] = {}
            repo.update_instruction(conn, iid, [row.outcome], detail=detail)
            reason = _hold_reason(result, action, carrier, waybill, text)
            holds = [{**h, "reason": reason} if h.get("instruction") == iid and h.get("code") == HoldCode.INTERCEPT_PENDING.value else h
                     for h in (order.holds or [])]
            repo.save_order(conn, order, {"holds": holds} if holds != list(order.holds or []) else {}, now, actor=f"carrier:{carrier or '?'}",
                            kind=f"carrier_intercept_{result}", reason=reason,
                            data={"instruction": iid, "waybill_no": waybill, "action": action, "code": code, "message": text})
            for package, ship in sorted(resume.items()):
                # CS cancelled, the parcel reaches the buyer after all: the platform must hear that it shipped
                outbox_repo.enqueue(conn, kind=SHIP_KIND, endpoint=f"{ship['channel']}:{ship['shop_id']}"[:64], order_id=order_id, now=now,
                                    payload=ship, idempotency_key=outbox_key(SHIP_KIND, iid, f"{order_id}:{package}"))
                repo.event(conn, order_id, now, actor="fulfillment", kind="ship_writeback_resumed",
                           reason=f"快递未能拦截，包裹将送达买家：补发平台发货回传（包裹 {package}）", data={"instruction": iid, "package_no": int(package)})
            if self.notifier is not None:
                self.notifier.notify(conn, order_id, "intercept_result", audience=("cs",), now=now, context={
                    # too_late: the CS card says to follow up; accepted: nothing to do until the parcel is back
                    "outcome": "carrier_intercept" if result == ACCEPTED else "too_late", "outcome_label": reason,
                    "instruction": row.kind, "key": f"{iid}:carrier:{waybill}:{result}"})
        return "recorded"


def _hold_reason(result: str, action: str, carrier: str, waybill: str, text: str) -> str:
    who, back = f"{_name(carrier)} {waybill}", action == "return"
    if result == ACCEPTED:
        return (f"快递已拦截，包裹退回中（{who}）/ intercepted by the carrier, returning to sender" if back
                else f"快递已受理改址，包裹转寄新地址（{who}）/ the carrier is taking the parcel to the new address")
    if result == REFUSED:
        return f"快递拒绝拦截（{who}：{text}）：包裹将继续派送，请联系买家走售后 / the carrier refused: the parcel goes on to the buyer"
    return f"需人工拦截：{text}。请联系快递网点拦截{'退回' if back else '改址'} {who} / intercept by hand"


def _no_api(carrier: str) -> str:
    if carrier == "SF":
        return "没有配置顺丰账号（carriers.sf），无法调用顺丰拦截接口 / no SF account is configured"
    return (f"{_name(carrier) or '未知快递'}没有可调用的拦截接口（快递100只提供查询与推送，不提供拦截）"
            f" / {carrier or 'this carrier'} has no interception API OrderHub can call")


def _platform_cancelled(detail: Mapping[str, Any]) -> bool:
    return str(detail.get("platform") or "") in _PLATFORM_CANCELS


class ShipWriteBackGuard:
    """The outbox sender for `platform.ship` around the channel's (adapters/channels/ship_writeback.py `ShipSender`):
    the write-back of a package whose cancel is being intercepted is withheld, with the reason kept."""

    def __init__(self, engine: sa.Engine, inner: Any, *, clock: Callable[[], datetime] = _now) -> None:
        self.engine = engine
        self.inner = inner
        self.clock = clock

    async def send(self, message: OutboxMessage) -> dict[str, Any] | None:
        reason = await asyncio.to_thread(self.withheld, message)
        if reason is not None:
            return {"skipped": reason}
        try:
            return await self.inner.send(message)
        except DeliveryError as exc:
            if exc.retryable:
                raise
            # the platform refused; a cancel that reached OrderHub meanwhile explains why (a cancelled order)
            reason = await asyncio.to_thread(self.withheld, message)
            if reason is not None:
                return {"skipped": reason, "platform_said": str(exc)[:500]}
            if message.attempts == 0:
                # the buyer's cancel may be stored and not processed yet: look once more after the first backoff
                raise DeliveryError(f"{exc} (tried once more: the order's cancel may be on its way)", retryable=True) from exc
            raise

    def withheld(self, message: OutboxMessage) -> str | None:
        """Why this write-back must not go, recorded on the order (once), or None."""
        payload = message.payload or {}
        order_id, package = str(payload.get("order_id") or message.order_id or ""), str(payload.get("package_no") or "")
        waybill = str(payload.get("waybill_no") or "")
        with self.engine.connect().execution_options(readonly=True) as conn:
            if not _late_cancels(conn, order_id):
                return None  # the common case costs one read
        now = self.clock()
        with self.engine.begin() as conn:
            repo.lock_orders(conn, [order_id])  # the order first: the global lock order
            cancels = _late_cancels(conn, order_id, lock=True)
            if not cancels:
                return None
            row = cancels[-1]
            detail = dict(row.detail or {})
            answer = (detail.get("carrier") or {}).get(waybill) or {}
            if _platform_cancelled(detail):
                reason = "平台已取消订单，包裹正由快递拦截退回：不回传发货 / the platform cancelled the order: it is not marked shipped"
            elif answer.get("result") in (REFUSED, MANUAL):
                return None  # the parcel reaches the buyer (or CS intercepts it by hand): the platform must know
            else:
                reason = "买家已取消，包裹正由快递拦截退回：暂不回传发货 / cancelled, the parcel is being intercepted: not marked shipped"
            skipped = dict(detail.get("ship_skipped") or {})
            if package in skipped:
                return reason  # a resend of a withheld message: recorded already
            skipped[package] = dict(payload)  # kept: sent after all should the carrier refuse a cancel CS made
            repo.update_instruction(conn, row.id, [row.outcome], detail={**detail, "ship_skipped": skipped})
            repo.event(conn, order_id, now, actor="fulfillment", kind="ship_writeback_skipped", reason=reason,
                       data={"instruction": row.id, "package_no": payload.get("package_no"), "waybill_no": waybill})
            return reason


def _late_cancels(conn: sa.Connection, order_id: str, *, lock: bool = False) -> list[Any]:
    """The order's cancels that came too late for the WMS (or are about to: still pending while a package ships)."""
    return [r for r in repo.instructions_of(conn, order_id, lock=lock)
            if r.kind == InstructionKind.CANCEL.value and r.outcome in (Outcome.TOO_LATE.value, Outcome.PENDING.value)]
