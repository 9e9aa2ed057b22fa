"""淘宝/天猫 channel: TMC message stream, signed TOP API calls, OAID decrypt, normalization.

Transport, signing vectors and every unconfirmed [U] detail: docs/channels/taobao.md. The [U]
choices are the constants of this module and of taobao_tmc.py.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from tenacity.wait import wait_base

from orderhub.adapters.channels.base import PushMessage, ShopConfig, StreamSink
from orderhub.adapters.channels.http_common import (
    TokenApiClient,
    BadToken,
    CachedToken,
    gather_bounded,
    raise_for_http_status,
)
from orderhub.adapters.channels.taobao_normalize import SHANGHAI, TIME_FORMAT, cst_time, normalize_taobao_trade
from orderhub.adapters.channels.taobao_tmc import TmcClient, TmcMessage, TmcSettings
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, NormalizationError
from orderhub.domain.order import NormalizedOrder

log = logging.getLogger(__name__)

CHANNEL = "taobao"
ROUTER_PATH = "/router/rest"
API_VERSION = "2.0"
FULLINFO = "taobao.trade.fullinfo.get"
INCREMENT = "taobao.trades.sold.increment.get"
OAID_DECRYPT = "taobao.top.oaid.decrypt"
TOKEN_REFRESH = "taobao.top.auth.token.refresh"
PAGE_SIZE = 100  # increment.get: page_size 1..100
MAX_SPAN = timedelta(days=1)  # increment.get: end_modified - start_modified <= 1 day
# bububa/opentaobao TaobaoTopOaidDecryptAPIRequest: "解密请求列表，最多支持20个" (the brief guessed 100).
DECRYPT_BATCH = 20
DECRYPT_SCENE = "1005"  # 线下门店发货 (ReceiverQuery.scene); [U] which scene an OMS should declare
# TMC endpoints (FORMATS.md §2) by the API host they belong with.
TMC_URLS = {"eco.taobao.com": "ws://mc.api.taobao.com/", "gw.api.taobao.com": "ws://mc.api.taobao.com/",
            "gw.api.tbsandbox.com": "ws://mc.api.tbsandbox.com/"}

# Every field the normaliser reads (TOP returns only the fields asked for).
TRADE_FIELDS = ",".join([
    "tid", "status", "type", "title", "seller_nick", "buyer_nick", "buyer_open_uid", "created", "pay_time", "modified",
    "end_time", "consign_time", "total_fee", "discount_fee", "adjust_fee", "post_fee", "payment", "received_payment",
    "buyer_message", "seller_memo", "shipping_type", "receiver_name", "receiver_mobile", "receiver_phone",
    "receiver_state", "receiver_city", "receiver_district", "receiver_town", "receiver_address", "receiver_zip",
    "receiver_country", "oaid", "orders",
])

# TOP error codes (system-level list quoted on blog.unvs.cn/archives/taobao-oauth-top-error-code.html
# and the cnblogs "淘宝错误一览表"): 26 Missing Session, 27 Invalid Session, 25 Invalid Signature,
# 7 App Call Limited, 8 App Call Exceeds Limited Frequency, 10 Service Currently Unavailable,
# 15 Remote Service Error (its `isp.*` sub codes are server faults: "隔一段时间再重试").
CODES_BAD_SESSION = frozenset({26, 27})
CODES_RETRYABLE = frozenset({7, 8, 10})
SUB_CODES_BAD_SESSION = ("invalid-sessionkey", "session-expired", "session-not-exist")
# [U] sub codes for "no such trade" on fullinfo.get; the simulator answers isv.trade-not-exist.
SUB_CODES_UNKNOWN_TRADE = ("trade-not-exist", "trade-is-not-exist", "invalid-tid")


def top_sign(params: Mapping[str, str], app_secret: str, sign_method: str = "md5") -> str:
    """The TOP `sign`: over k1v1k2v2… (keys sorted, `sign` left out), UTF-8, upper-case hex.

    md5: md5(secret + text + secret); hmac: HMAC-MD5(secret, text); hmac-sha256: HMAC-SHA256(secret, text).
    """
    text = "".join(f"{key}{params[key]}" for key in sorted(params) if key != "sign")
    if sign_method == "md5":
        return hashlib.md5(f"{app_secret}{text}{app_secret}".encode()).hexdigest().upper()
    if sign_method == "hmac":
        return hmac.new(app_secret.encode(), text.encode(), hashlib.md5).hexdigest().upper()
    if sign_method == "hmac-sha256":
        return hmac.new(app_secret.encode(), text.encode(), hashlib.sha256).hexdigest().upper()
    raise ValueError(f"unsupported sign_method {sign_method!r}")


def tmc_url(shop: ShopConfig) -> str:
    """extra["tmc_url"], else the TMC endpoint that goes with the API base URL:
    http://host:port/taobao -> ws://host:port/taobao/tmc (the simulator), eco.taobao.com -> TMC."""
    explicit = shop.extra.get("tmc_url")
    if explicit:
        return str(explicit)
    parts = urlsplit(shop.api_base_url)
    if parts.hostname in TMC_URLS:
        return TMC_URLS[parts.hostname]
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/tmc", "", ""))


def response_key(method: str) -> str:
    """taobao.trade.fullinfo.get -> trade_fullinfo_get_response."""
    return method.removeprefix("taobao.").replace(".", "_") + "_response"


class _UnknownTrade(Exception):
    """The platform says the tid does not exist (the order is left out, not an error)."""


class TaobaoChannel(TokenApiClient):
    """StreamChannel + OrderSource + PiiSource for 淘宝/天猫 (TOP + TMC)."""

    channel = CHANNEL

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sign_method: str = "md5",
        concurrency: int = 16,
        attempts: int = 3,
        retry_wait: wait_base | None = None,
        tmc_settings: TmcSettings | None = None,
    ) -> None:
        super().__init__(self._refresh_session, clock=clock, concurrency=concurrency, attempts=attempts, retry_wait=retry_wait)
        self._sign_method = sign_method
        self._tmc_settings = tmc_settings
        # Refresh tokens rotate: the newest one the platform gave, per (app key, shop).
        self._refresh_tokens: dict[tuple[str, str], str] = {}

    # -- TMC stream -------------------------------------------------------------------------

    async def run(self, http: httpx.AsyncClient, shops: list[ShopConfig], sink: StreamSink) -> None:
        """Hold the TMC connection of the app the shops share; keep each message, then confirm it."""
        if not shops:
            raise ValueError("taobao TMC needs at least one shop")
        shop = shops[0]
        client = TmcClient(
            tmc_url(shop), shop.app_key, shop.app_secret, str(shop.extra.get("group_name", "default")),
            settings=self._tmc_settings, clock_ms=lambda: int(self._clock() * 1000),
        )

        async def deliver(message: TmcMessage) -> None:
            shop_id = str(message.user_id) if message.user_id is not None else None
            await sink.keep(CHANNEL, shop_id, message.body(), {"app_key": shop.app_key, "message_id": message.id})

        def report(state: str, detail: str | None) -> None:
            sink.connection(CHANNEL, shop.app_key, state, detail)

        await client.run(deliver, report)

    def parse_push(self, body: bytes) -> list[PushMessage]:
        try:
            message = orjson.loads(body)
        except ValueError:
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "TMC message is not JSON", "body") from None
        if not isinstance(message, dict):
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "TMC message is not a JSON object", "body")
        topic, user_id = message.get("topic"), message.get("user_id")
        if not isinstance(topic, str) or not topic:
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "TMC message has no topic", "topic")
        if isinstance(user_id, bool) or not isinstance(user_id, (int, str)) or not str(user_id):
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "TMC message has no user_id", "user_id")
        content = message.get("content")
        if isinstance(content, str):
            try:
                content = orjson.loads(content)
            except ValueError:
                raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "content is not JSON", "content") from None
        if not isinstance(content, dict):
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "content is not a JSON object", "content")
        tid = content.get("tid")
        if tid in (None, "") or isinstance(tid, bool):
            return []  # not about a trade (item, logistics … topics)
        if not isinstance(tid, (int, str)):
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"content.tid {tid!r} is not an id", "content.tid")
        return [PushMessage(shop_id=str(user_id), original_id=str(tid), kind=topic,
                            event_time=_event_time(content, message), raw=message)]

    # -- TOP API ----------------------------------------------------------------------------

    async def fetch_orders(
        self, http: httpx.AsyncClient, shop: ShopConfig, original_ids: list[str]
    ) -> dict[str, dict[str, Any]]:

        async def fetch_one(tid: str) -> dict[str, Any] | None:
            try:
                reply = await self._call(http, shop, FULLINFO, {"tid": tid, "fields": TRADE_FIELDS})
            except _UnknownTrade:
                return None
            trade = reply.get("trade")
            return trade if isinstance(trade, dict) and trade else None

        return await gather_bounded((str(i) for i in original_ids), fetch_one, self._concurrency)

    async def pull_window(
        self, http: httpx.AsyncClient, shop: ShopConfig, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """Trades modified in [start, end), in spans of at most a day. TOP lists newest first and
        says to page from the last page back (taobao.trades.sold.increment.get doc): a trade
        modified meanwhile leaves the window and only shifts pages already read."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        found: dict[str, dict[str, Any]] = {}
        span_start = start
        while span_start < end:
            span_end = min(end, span_start + MAX_SPAN)
            for trade in await self._pull_span(http, shop, span_start, span_end):
                found[str(trade.get("tid"))] = trade
            span_start = span_end
        return [trade for trade in found.values() if _modified_in(trade, start, end)]

    async def _pull_span(self, http: httpx.AsyncClient, shop: ShopConfig, start: datetime, end: datetime) -> list[dict[str, Any]]:
        base = {"start_modified": _cst(start), "end_modified": _cst(end), "use_has_next": "false", "fields": TRADE_FIELDS}
        head = await self._call(http, shop, INCREMENT, {**base, "page_no": "1", "page_size": "1", "fields": "tid"})
        total = head.get("total_results")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise FetchError("taobao trades.sold.increment.get: no total_results in the reply", retryable=False)
        trades: list[dict[str, Any]] = []
        for page_no in range(-(-total // PAGE_SIZE), 0, -1):
            reply = await self._call(http, shop, INCREMENT, {**base, "page_no": str(page_no), "page_size": str(PAGE_SIZE)})
            trades.extend(t for t in _unwrap(reply.get("trades"), "trade") if isinstance(t, dict))
        return trades

    def normalize(self, raw: dict[str, Any], shop: ShopConfig) -> NormalizedOrder:
        return normalize_taobao_trade(raw, shop.shop_id)

    # -- OAID decrypt -------------------------------------------------------------------------

    async def decrypt(
        self, http: httpx.AsyncClient, shop: ShopConfig, orders: list[tuple[str, dict[str, str]]], fields: tuple[str, ...]
    ) -> dict[str, dict[str, str]]:
        """Receiver plaintext through taobao.top.oaid.decrypt, 20 (oaid, tid) pairs per call."""
        queries = [{"oaid": pii["oaid"], "tid": tid, "scene": DECRYPT_SCENE} for tid, pii in orders if pii.get("oaid")]
        batches = [queries[i : i + DECRYPT_BATCH] for i in range(0, len(queries), DECRYPT_BATCH)]

        async def decrypt_batch(index: int) -> list[dict[str, Any]]:
            query_list = orjson.dumps(batches[index]).decode()
            reply = await self._call(http, shop, OAID_DECRYPT, {"query_list": query_list})
            return [r for r in _unwrap(reply.get("receiver_list"), "receiver") if isinstance(r, dict)]

        found = await gather_bounded(range(len(batches)), decrypt_batch, self._concurrency)
        plain: dict[str, dict[str, str]] = {}
        for receivers in found.values():
            for receiver in receivers:
                values = {"phone": receiver.get("mobile") or receiver.get("phone"), "name": receiver.get("name"),
                          "address_detail": receiver.get("address_detail")}
                wanted = {f: str(values[f]) for f in fields if values.get(f)}
                if receiver.get("tid") not in (None, "") and wanted:
                    plain[str(receiver["tid"])] = wanted
        return plain

    # -- calls, sessions, retries -------------------------------------------------------------

    async def _call(self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: dict[str, str]) -> dict[str, Any]:
        """One business call with the shop's session, retried on transient failures."""
        return await self._retried(self._call_once, http, shop, method, params)

    async def _call_once(self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: dict[str, str]) -> dict[str, Any]:
        return await self._tokens.authorised(http, shop, lambda session: self._request(http, shop, method, params, session))

    async def _refresh_session(self, http: httpx.AsyncClient, shop: ShopConfig) -> CachedToken:
        """A new session from the shop's refresh token; without one nothing can be done here."""
        key = (shop.app_key, shop.shop_id)
        refresh_token = self._refresh_tokens.get(key) or shop.extra.get("refresh_token")
        if not refresh_token:
            raise FetchError(
                f"taobao shop {shop.shop_id}: the session key was refused and there is no refresh token;"
                " the shop must be re-authorised", retryable=False)
        reply = await self._request(http, shop, TOKEN_REFRESH, {"refresh_token": str(refresh_token)}, session=None)
        try:
            result = orjson.loads(reply.get("token_result") or b"")
            session, expires_in = str(result["access_token"]), int(result["expires_in"])
        except (ValueError, KeyError, TypeError):
            raise FetchError("taobao token refresh: no access_token/expires_in in token_result", retryable=False) from None
        if result.get("refresh_token"):
            self._refresh_tokens[key] = str(result["refresh_token"])
        margin = min(300, expires_in // 10)  # never send a session about to expire
        return CachedToken(session, self._clock() + expires_in - margin)

    async def _request(
        self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: dict[str, str], session: str | None
    ) -> dict[str, Any]:
        form = {
            "method": method,
            "app_key": shop.app_key,
            "timestamp": datetime.fromtimestamp(self._clock(), SHANGHAI).strftime(TIME_FORMAT),
            "format": "json",
            "v": API_VERSION,
            "sign_method": self._sign_method,
        }
        if session is not None:
            form["session"] = session
        form |= {key: value for key, value in params.items() if value not in (None, "")}
        form["sign"] = top_sign(form, shop.app_secret, self._sign_method)
        try:
            response = await http.post(f"{shop.api_base_url.rstrip('/')}{ROUTER_PATH}", data=form)
        except httpx.TransportError as exc:
            raise FetchError(f"taobao {method}: {type(exc).__name__}: {exc}", retryable=True) from exc
        return _check_reply(method, response)


def _check_reply(method: str, response: httpx.Response) -> dict[str, Any]:
    raise_for_http_status(f"taobao {method}", response)
    try:
        reply = orjson.loads(response.content)  # exact for 64-bit tids
    except ValueError:
        raise FetchError(f"taobao {method}: reply is not JSON", retryable=True) from None
    if not isinstance(reply, dict):
        raise FetchError(f"taobao {method}: reply is not a JSON object", retryable=True)
    error = reply.get("error_response")
    if isinstance(error, dict):
        _raise_top_error(method, error)
    body = reply.get(response_key(method))
    if not isinstance(body, dict):
        raise FetchError(f"taobao {method}: no {response_key(method)} in the reply", retryable=False)
    return body


def _raise_top_error(method: str, error: dict[str, Any]) -> None:
    try:
        code = int(error.get("code"))
    except (TypeError, ValueError):
        code = -1
    sub_code = str(error.get("sub_code") or "")
    detail = (f"taobao {method}: {code} {error.get('msg') or ''} {sub_code} {error.get('sub_msg') or ''}"
              f" (request_id {error.get('request_id') or '-'})")
    detail = " ".join(detail.split())
    if code in CODES_BAD_SESSION or any(word in sub_code for word in SUB_CODES_BAD_SESSION):
        raise BadToken(detail)
    if any(word in sub_code for word in SUB_CODES_UNKNOWN_TRADE):
        raise _UnknownTrade(detail)
    retryable = (
        code in CODES_RETRYABLE
        or sub_code.startswith("isp.")
        or sub_code.endswith("-service-unavailable")
        or "limited" in sub_code
    )
    raise FetchError(detail, retryable=retryable)


def _unwrap(value: Any, item: str) -> list[Any]:
    """TOP wraps lists ({"trade": [...]}); a bare list is accepted too [U for receiver_list]."""
    if isinstance(value, dict):
        value = value.get(item)
    return value if isinstance(value, list) else []


def _event_time(content: dict[str, Any], message: dict[str, Any]) -> datetime | None:
    for source, name in ((content, "modified"), (message, "pub_time")):
        if source.get(name) not in (None, ""):
            try:
                return cst_time(source[name], name)
            except NormalizationError as exc:
                raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, exc.message, exc.field) from None
    return None


def _cst(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime(TIME_FORMAT)


def _modified_in(trade: dict[str, Any], start: datetime, end: datetime) -> bool:
    """Keep [start, end): TOP's end bound is inclusive, the pull contract's is not."""
    try:
        modified = cst_time(trade.get("modified"), "modified")
    except NormalizationError:
        return True  # let the normaliser quarantine it with the reason
    return modified is None or start.astimezone(UTC) <= modified < end.astimezone(UTC)
