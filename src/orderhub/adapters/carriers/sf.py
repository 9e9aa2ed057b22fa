"""SF Express (顺丰/丰桥): the route push (`{"Body":{"WaybillRoute":[…]}}`), the route query EXP_RECE_SEARCH_ROUTES
and the interception EXP_RECE_WANTED_INTERCEPT (截单转寄 / 退回: a parcel on its way sent back or to a new address).

How SF signs a route push is not confirmed anywhere we could read (FORMATS.md §6). This module,
and only this module, assumes the closest documented 丰桥 scheme: the legacy BSP `verifyCode`
(base64 of the MD5 of the body followed by the checkword), sent as `msgDigest` in the query string
or a header. The query API is signed as documented: msgDigest = base64(md5(urlencode(msgData +
timestamp + checkword))), Java URLEncoder style, and so is the interception, through the same
`/std/service` (FORMATS.md documents no interception API: its fields come from SF's SDK request
template 18.wanted_intercept.json as third-party code reproduces it, the service code values from
one third-party SDK [C3/U]). docs/logistics.md has the sources.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
import orjson

from orderhub.adapters.carriers.base import clip, header, parse_local_time
from orderhub.adapters.db.outbox_repo import DeliveryError
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, SignatureError
from orderhub.domain.logistics import CarrierTrack, Scan, sf_state

CARRIER = "SF"
PUSH_REPLY = orjson.dumps({"return_code": "0000", "return_msg": "成功"})
DIGEST_FIELD = "msgDigest"  # where the push digest travels (query parameter, else header) [U]
DEFAULT_BASE_URL = "https://bspgw.sf-express.com"
SERVICE_PATH = "/std/service"
SEARCH_ROUTES = "EXP_RECE_SEARCH_ROUTES"
MAX_PER_QUERY = 10  # 8003 查询单号超过最大限制
INTERCEPT = "EXP_RECE_WANTED_INTERCEPT"
# serviceCode of an interception: 1 转寄 (to a new address), 2 退回 (back to the sender) [C3: one third-party SDK]
INTERCEPT_SERVICE = {"redirect": "1", "return": "2"}
ROLE_SENDER = "1"  # who asks: the sender (寄方) [C3]
PAY_SENDER_MONTHLY, PAY_SENDER_CASH = "4", "1"  # who pays the extra leg: the sender, on its monthly account or in cash [C3]
# 统一接入平台 answers (丰桥 overview [C3]): worth another try later, the others need the account or the request fixed
RETRY_API_CODES = {"A1002", "A1005", "A1009", "A1099"}  # timestamp expired, rate limited, service unreachable, system error


def push_digest(body: bytes, checkword: str) -> str:
    return base64.b64encode(hashlib.md5(body + checkword.encode("utf-8")).digest()).decode()


def verify_push(body: bytes, headers: Mapping[str, str], query: Mapping[str, str], checkword: str) -> None:
    given = (query.get(DIGEST_FIELD) or header(headers, DIGEST_FIELD)).strip()
    if not given:
        raise SignatureError(ErrorCode.SIGNATURE_MISSING, f"{DIGEST_FIELD} is missing (query parameter or header)", DIGEST_FIELD)
    if not hmac.compare_digest(push_digest(body, checkword).encode(), given.encode("utf-8", "replace")):
        raise SignatureError(ErrorCode.SIGNATURE_INVALID, f"{DIGEST_FIELD} does not match the body", DIGEST_FIELD)


def parse_push(body: bytes) -> list[CarrierTrack]:
    """One track per waybill named in the push (SF sends new route nodes only, not the whole history)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "the route push is not JSON") from None
    routes = ((data.get("Body") if isinstance(data, dict) else None) or {}).get("WaybillRoute")
    if not isinstance(routes, list):
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "the route push has no Body.WaybillRoute list", "Body.WaybillRoute")
    by_waybill: dict[str, list[Scan]] = {}
    for index, route in enumerate(routes):
        if not isinstance(route, dict) or not str(route.get("mailno") or "").strip():
            raise EnvelopeError(ErrorCode.MISSING_FIELD, f"WaybillRoute[{index}] names no mailno", f"WaybillRoute[{index}].mailno")
        by_waybill.setdefault(str(route["mailno"]).strip(), []).append(_scan(route, f"WaybillRoute[{index}]"))
    return [CarrierTrack(waybill, CARRIER, tuple(scans)) for waybill, scans in by_waybill.items()]


def _scan(route: dict[str, Any], where: str) -> Scan:
    code = str(route.get("opCode") or "").strip()
    remark = str(route.get("remark") or "").strip()
    reason = str(route.get("reasonName") or "").strip()
    at = parse_local_time(route.get("acceptTime"), f"{where}.acceptTime")
    return Scan(at, sf_state(code, f"{remark} {reason}"), clip(code, 32), remark, clip(route.get("acceptAddress"), 128))


def java_urlencode(text: str) -> str:
    """What Java's URLEncoder.encode(text, "UTF-8") gives (the SF SDK signs that): space as +, and
    only letters, digits and . - * _ left as they are (Python would keep ~ too)."""
    return quote_plus(text, safe="*").replace("~", "%7E")


def api_digest(msg_data: str, timestamp: str, checkword: str) -> str:
    signed = java_urlencode(msg_data + timestamp + checkword)
    return base64.b64encode(hashlib.md5(signed.encode("utf-8")).digest()).decode()


@dataclass(frozen=True, slots=True)
class SfConfig:
    checkword: str  # 校验码: signs pushes and queries
    partner_id: str = ""  # 顾客编码 (partnerID), for the query API
    base_url: str = DEFAULT_BASE_URL
    monthly_card: str = ""  # 月结卡号: an interception's extra leg is charged to it (else the sender pays cash)


@dataclass(frozen=True, slots=True)
class InterceptAnswer:
    """What SF said to an interception: accepted, or refused with its errorCode and errorMsg (signed for already, …)."""

    accepted: bool
    code: str
    message: str


def sf_address(address: Mapping[str, Any], contact: str | None = None, phone: str | None = None) -> dict[str, str]:
    """OrderHub's address {province, city, district, detail} as SF's newDestAddress {province, city, county, address, contact, phone}."""
    out = {"province": str(address.get("province") or ""), "city": str(address.get("city") or ""),
           "county": str(address.get("district") or ""), "address": str(address.get("detail") or "")}
    if contact:
        out["contact"] = contact
    if phone:
        out["phone"] = phone
    return out


class Sf:
    """Route push verification and the route query of one SF (丰桥) account."""

    name = "sf"

    def __init__(self, config: SfConfig) -> None:
        self.config = config

    def read_push(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> list[CarrierTrack]:
        verify_push(body, headers, query, self.config.checkword)
        return parse_push(body)

    def query_form(self, waybills: list[str], timestamp: str | None = None) -> dict[str, str]:
        msg_data = orjson.dumps({"language": "0", "trackingType": "1", "trackingNumber": waybills, "methodType": "1"}).decode()
        timestamp = timestamp or str(int(time.time() * 1000))
        return {
            "partnerID": self.config.partner_id, "requestID": uuid.uuid4().hex, "serviceCode": SEARCH_ROUTES,
            "timestamp": timestamp, "msgDigest": api_digest(msg_data, timestamp, self.config.checkword), "msgData": msg_data,
        }  # fmt: skip

    async def query(self, http: httpx.AsyncClient, waybills: list[str]) -> list[CarrierTrack]:
        """Every route node SF has for up to 10 waybills (all of them, not only new ones)."""
        url = self.config.base_url.rstrip("/") + SERVICE_PATH
        try:
            response = await http.post(url, data=self.query_form(waybills[:MAX_PER_QUERY]))
        except httpx.HTTPError as exc:
            raise FetchError(f"SF route query failed: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise FetchError(f"SF route query answered HTTP {response.status_code}", retryable=response.status_code >= 500)
        try:
            outer = orjson.loads(response.content)
            if outer.get("apiResultCode") != "A1000":
                raise FetchError(f"SF refused the route query: {outer.get('apiResultCode')} {outer.get('apiErrorMsg')}", retryable=False)
            inner = orjson.loads(outer.get("apiResultData") or "{}")
        except (orjson.JSONDecodeError, AttributeError):
            raise FetchError("SF route query answer is not the documented JSON", retryable=False) from None
        if not inner.get("success") or inner.get("errorCode") not in ("S0000", None):
            raise FetchError(f"SF route query failed: {inner.get('errorCode')} {inner.get('errorMsg')}", retryable=False)
        tracks = []
        try:
            for resp in (inner.get("msgData") or {}).get("routeResps") or []:
                waybill = str(resp.get("mailNo") or "").strip()
                if waybill:
                    routes = [_scan(r, f"routeResps[{waybill}]") for r in resp.get("routes") or [] if isinstance(r, dict)]
                    tracks.append(CarrierTrack(waybill, CARRIER, tuple(routes)))
        except EnvelopeError as exc:
            raise FetchError(f"SF route query answer unreadable: {exc.message}", retryable=False) from None
        return tracks

    def intercept_form(self, waybill_no: str, action: str, destination: Mapping[str, Any], timestamp: str | None = None,
                       request_id: str | None = None) -> dict[str, str]:
        """The signed form of one interception: `action` return (to `destination`, the sender's address) or redirect
        (to the buyer's new address), as SF's template 18.wanted_intercept.json has it [C3]."""
        body: dict[str, Any] = {
            "waybillNo": waybill_no, "serviceCode": INTERCEPT_SERVICE[action], "role": ROLE_SENDER,
            "payMode": PAY_SENDER_MONTHLY if self.config.monthly_card else PAY_SENDER_CASH,
            "newDestAddress": dict(destination), "cancel": False,
        }
        if self.config.monthly_card:
            body["monthlyCardNo"] = self.config.monthly_card
        msg_data = orjson.dumps(body).decode()
        timestamp = timestamp or str(int(time.time() * 1000))
        return {
            "partnerID": self.config.partner_id, "requestID": request_id or uuid.uuid4().hex, "serviceCode": INTERCEPT,
            "timestamp": timestamp, "msgDigest": api_digest(msg_data, timestamp, self.config.checkword), "msgData": msg_data,
        }  # fmt: skip

    async def intercept(self, http: httpx.AsyncClient, waybill_no: str, action: str, destination: Mapping[str, Any], *,
                        request_id: str | None = None) -> InterceptAnswer:
        """Ask SF to send a parcel back (`return`) or to a new address (`redirect`). SF's own no (the parcel is signed
        for, or past the point of no return) is an answer; a request SF could not take raises DeliveryError,
        retryable for transport trouble, 5xx and the platform's passing errors (RETRY_API_CODES), final otherwise
        (a wrong checkword or partner, a service not opened for the account)."""
        if action not in INTERCEPT_SERVICE:
            raise DeliveryError(f"SF interception: unknown action {action!r} (return | redirect)", retryable=False)
        url = self.config.base_url.rstrip("/") + SERVICE_PATH
        try:
            response = await http.post(url, data=self.intercept_form(waybill_no, action, destination, request_id=request_id))
        except httpx.HTTPError as exc:
            raise DeliveryError(f"SF interception failed: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise DeliveryError(f"SF interception answered HTTP {response.status_code}",
                                retryable=response.status_code >= 500 or response.status_code == 429)
        try:
            outer = orjson.loads(response.content)
            code = str(outer.get("apiResultCode") or "")
            if code != "A1000":
                raise DeliveryError(f"SF refused the interception request: {code} {outer.get('apiErrorMsg') or ''}".rstrip(),
                                    retryable=code in RETRY_API_CODES)
            inner = orjson.loads(outer.get("apiResultData") or "{}")
        except (orjson.JSONDecodeError, AttributeError):
            raise DeliveryError("SF interception answer is not the documented JSON", retryable=False) from None
        if not isinstance(inner, dict):
            raise DeliveryError("SF interception answer is not the documented JSON", retryable=False)
        if inner.get("success") is True:
            return InterceptAnswer(True, str(inner.get("errorCode") or "S0000"), str(inner.get("errorMsg") or ""))
        return InterceptAnswer(False, str(inner.get("errorCode") or ""), str(inner.get("errorMsg") or "SF refused the interception"))
