"""Kuaidi100 (快递100): the subscription request (poll), its pushes (form `param` + `sign`) and the real-time
query API (poll/query.do).

Sources (docs/logistics.md): the official SDK kuaidi100-api/java-demo (`SignUtils`, `Subscribe.callBackUrl`,
`SubscribePushResult`, `QueryTrackResp`), the official php-demo `subscribe.php` (form `schema=json` +
`param{company, number, key, parameters{callbackurl, salt, resultv2}}`) and python-demo `synquery.py`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson

from orderhub.adapters.carriers.base import clip, parse_local_time
from orderhub.adapters.db.outbox_repo import DeliveryError, OutboxMessage
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, SignatureError
from orderhub.domain.logistics import KUAIDI100_STATES, CarrierTrack, ParcelState, Scan, kuaidi100_state, refine_problem

# What Kuaidi100 wants back from a push; anything else is a failed push, retried later.
PUSH_REPLY = orjson.dumps({"result": True, "returnCode": "200", "message": "成功"})
DEFAULT_BASE_URL = "https://poll.kuaidi100.com"
QUERY_PATH = "/poll/query.do"
SUBSCRIBE_PATH = "/poll"
SUBSCRIBE_KIND = "carrier.subscribe"  # the outbox kind of a subscription request
# Subscription answers: 200 提交成功; 501 重复订阅 (already subscribed: as good as 200); 500 服务器错误 and
# 502 服务器繁忙 are worth retrying; 600 / 601 (not a valid subscriber, key expired), 700 (bad request) and
# 701 (company refused) are refused for good until someone fixes the account or the message.
SUBSCRIBED = {"200", "501"}
RETRY_SUBSCRIBE = {"500", "502"}
NO_RESULT = "500"  # 查询无结果，请隔段时间再查: nothing yet, not an error

# Kuaidi100 company codes (lowercase) of OrderHub's carriers (CompanyConstant in the SDK; DBL [U]).
COM_BY_CARRIER: dict[str, str] = {
    "SF": "shunfeng", "ZTO": "zhongtong", "YTO": "yuantong", "YUNDA": "yunda", "STO": "shentong",
    "EMS": "ems", "JD": "jd", "DBL": "debangwuliu",
}  # fmt: skip
CARRIER_BY_COM: dict[str, str] = {com: carrier for carrier, com in COM_BY_CARRIER.items()}


def company_code(carrier: str) -> str:
    """Kuaidi100's company code of an OrderHub carrier code (an unknown one passes as its lowercase)."""
    return COM_BY_CARRIER.get(carrier.upper(), carrier.lower())


def sign(text: str) -> str:
    """Kuaidi100 signs everything the same way: upper-case hex MD5."""
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


def push_sign(param: str, salt: str) -> str:
    return sign(param + salt)


def query_sign(param: str, key: str, customer: str) -> str:
    return sign(param + key + customer)


def verify_push(body: bytes, salt: str) -> str:
    """The `param` string exactly as received (form-decoded), once its `sign` matches; else SignatureError."""
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    param = (form.get("param") or [None])[-1]
    given = (form.get("sign") or [""])[-1].strip()
    if param is None:
        raise SignatureError(ErrorCode.SIGNATURE_MISSING, "form field param is missing", "param")
    if not given:
        raise SignatureError(ErrorCode.SIGNATURE_MISSING, "form field sign is missing", "sign")
    if not hmac.compare_digest(push_sign(param, salt).encode(), given.upper().encode("utf-8", "replace")):
        raise SignatureError(ErrorCode.SIGNATURE_INVALID, "sign does not match param", "sign")
    return param


def parse_push(param: str) -> CarrierTrack:
    """The waybill and its scans from a push's `param` (`lastResult` is the whole track, newest first).

    A push with `status` abort ("3天查询无记录") carries no scans: the parcel is simply still silent.
    """
    try:
        data = orjson.loads(param)
    except orjson.JSONDecodeError:
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "param is not JSON", "param") from None
    result = data.get("lastResult") if isinstance(data, dict) else None
    if not isinstance(result, dict):
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "param has no lastResult object", "lastResult")
    return parse_result(result)


def parse_result(result: dict[str, Any]) -> CarrierTrack:
    """`lastResult` of a push, or a query answer (the same shape): waybill `nu`, company `com`, `data[]` newest first."""
    waybill = str(result.get("nu") or "").strip()
    if not waybill:
        raise EnvelopeError(ErrorCode.MISSING_FIELD, "the result names no waybill (nu)", "nu")
    com = str(result.get("com") or "").strip().lower()
    items = result.get("data") or []
    if not isinstance(items, list):
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "data is not a list", "data")
    scans = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"data[{index}] is not an object", f"data[{index}]")
        scans.append(_scan(item, result if index == 0 else None, index))
    scans.reverse()  # oldest first: scans at one time then keep the carrier's order
    return CarrierTrack(waybill, CARRIER_BY_COM.get(com, com.upper()), tuple(scans))


def _scan(item: dict[str, Any], newest_of: dict[str, Any] | None, index: int) -> Scan:
    context = str(item.get("context") or "")
    code = str(item.get("statusCode") or "").strip()
    name = str(item.get("status") or "").strip()
    state = kuaidi100_state(code, name, context)
    if state is None:
        # Without resultv2 a scan has no state of its own: the newest one has the parcel's, the older ones
        # are history on the way (their order still decides nothing: the newest is applied last).
        overall = str((newest_of or {}).get("state") or "").strip()
        state = KUAIDI100_STATES.get(overall, ParcelState.IN_TRANSIT) if newest_of else ParcelState.IN_TRANSIT
        if overall == "2":
            state = refine_problem(context)
        code = overall if newest_of else ""
    at = parse_local_time(item.get("ftime") or item.get("time"), f"data[{index}].ftime")
    return Scan(at, state, clip(code or name, 32), context.strip(), clip(item.get("areaName"), 128))


@dataclass(frozen=True, slots=True)
class Kuaidi100Config:
    customer: str  # 公司编号, for the query API
    key: str  # 授权key, for the query API
    salt: str  # given at subscription; every push is signed with it
    base_url: str = DEFAULT_BASE_URL
    callback_url: str | None = None  # where Kuaidi100 pushes (OrderHub's /api/v1/webhooks/carriers/kuaidi100); none: no subscriptions


class Kuaidi100:
    """Push verification and the polling query of one Kuaidi100 account."""

    name = "kuaidi100"

    def __init__(self, config: Kuaidi100Config) -> None:
        self.config = config

    def read_push(self, body: bytes) -> CarrierTrack:
        return parse_push(verify_push(body, self.config.salt))

    def query_form(self, carrier: str, waybill_no: str) -> dict[str, str]:
        com = company_code(carrier)
        # resultv2=4 asks for the 高级状态 statusCode of each scan [U: value from the SDK comments]
        param = orjson.dumps({"com": com, "num": waybill_no, "resultv2": "4"}).decode()
        return {"customer": self.config.customer, "sign": query_sign(param, self.config.key, self.config.customer), "param": param}

    def subscribe_form(self, carrier: str, waybill_no: str) -> dict[str, str]:
        com = company_code(carrier)
        parameters = {"callbackurl": self.config.callback_url or "", "salt": self.config.salt, "resultv2": "4"}
        param = orjson.dumps({"company": com, "number": waybill_no, "key": self.config.key, "parameters": parameters}).decode()
        return {"schema": "json", "param": param}

    async def subscribe(self, http: httpx.AsyncClient, carrier: str, waybill_no: str) -> dict[str, Any]:
        """Ask Kuaidi100 to push this waybill's track to OrderHub. Raises DeliveryError (the outbox retries
        what is worth retrying and dead-letters the rest, with Kuaidi100's code in the error)."""
        if not self.config.callback_url:
            raise DeliveryError("kuaidi100 callback_url is not configured: nowhere to push to", retryable=False)
        url = self.config.base_url.rstrip("/") + SUBSCRIBE_PATH
        try:
            response = await http.post(url, data=self.subscribe_form(carrier, waybill_no))
        except httpx.HTTPError as exc:
            raise DeliveryError(f"kuaidi100 subscribe failed: {type(exc).__name__}: {exc}") from None
        server_trouble = response.status_code >= 500 or response.status_code == 429
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise DeliveryError(f"kuaidi100 subscribe answered HTTP {response.status_code} without JSON", retryable=server_trouble) from None
        data = data if isinstance(data, dict) else {}
        code = str(data.get("returnCode") or "")
        if code in SUBSCRIBED:
            return {"returnCode": code, "message": data.get("message")}
        raise DeliveryError(f"kuaidi100 subscribe refused: {code or response.status_code} {data.get('message')}",
                            retryable=code in RETRY_SUBSCRIBE or server_trouble)

    async def query(self, http: httpx.AsyncClient, carrier: str, waybill_no: str) -> CarrierTrack | None:
        """The whole track as Kuaidi100 knows it now; None while it knows nothing of the waybill."""
        url = self.config.base_url.rstrip("/") + QUERY_PATH
        try:
            response = await http.post(url, data=self.query_form(carrier, waybill_no))
        except httpx.HTTPError as exc:
            raise FetchError(f"kuaidi100 query failed: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise FetchError(f"kuaidi100 query answered HTTP {response.status_code}")
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise FetchError(f"kuaidi100 query answered HTTP {response.status_code} without JSON") from None
        if not isinstance(data, dict):
            raise FetchError("kuaidi100 query answered something other than an object", retryable=False)
        if data.get("result") is False or (data.get("returnCode") and not data.get("nu")):
            if str(data.get("returnCode")) == NO_RESULT:
                return None
            raise FetchError(f"kuaidi100 query refused: {data.get('returnCode')} {data.get('message')}", retryable=False)
        try:
            return parse_result(data)
        except EnvelopeError as exc:
            raise FetchError(f"kuaidi100 query answer unreadable: {exc.message}", retryable=False) from None


class Kuaidi100Subscriber:
    """The outbox sender for `carrier.subscribe`: one waybill's subscription request."""

    def __init__(self, client: Kuaidi100, http: httpx.AsyncClient) -> None:
        self._client = client
        self._http = http

    async def send(self, message: OutboxMessage) -> dict[str, Any]:
        payload = message.payload or {}
        if message.kind != SUBSCRIBE_KIND or not payload.get("waybill_no") or not payload.get("carrier"):
            raise DeliveryError(f"not a kuaidi100 subscription: {message.kind} {payload}", retryable=False)
        return await self._client.subscribe(self._http, str(payload["carrier"]), str(payload["waybill_no"]))
