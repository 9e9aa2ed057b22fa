"""快手小店 Kuaishou shop channel: signed open-API calls, token refresh, pulling and fetching orders.

OrderHub pulls 快手 orders (open.order.cursor.list by update time, open.order.detail by number);
the wire protocol, a worked signing vector and every unconfirmed [U] choice are in
docs/channels/kuaishou.md. The [U] choices are the constants at the top of this module and of
kuaishou_normalize.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from tenacity.wait import wait_base

from orderhub.adapters.channels.base import ShopConfig
from orderhub.adapters.channels.http_common import (
    TokenApiClient,
    BadToken,
    CachedToken,
    gather_bounded,
    raise_for_http_status,
)
from orderhub.adapters.channels.kuaishou_normalize import normalize_kuaishou_order
from orderhub.domain.errors import FetchError
from orderhub.domain.order import NormalizedOrder

# -- the wire, as documented (API调用说明, doc id 401853) ------------------------------------
API_VERSION = "1"
SIGN_MD5, SIGN_HMAC_SHA256 = "MD5", "HMAC_SHA256"
# The parameters that enter the signature (the official SignUtils.getSignParam); `sign` is not one.
SIGNED_PARAMS = ("access_token", "appkey", "method", "param", "signMethod", "timestamp", "version")
LIST_METHOD, DETAIL_METHOD = "open.order.cursor.list", "open.order.detail"
REFRESH_PATH = "/oauth2/refresh_token"
SUCCESS = 1
NO_MORE = "nomore"  # the cursor value that ends a listing

# -- open.order.cursor.list parameters ---------------------------------------------------------
PAGE_SIZE = 50  # 最多一页50条 (an integrator's comment says 100 [U])
MAX_SPAN_MS = 7 * 24 * 3600 * 1000  # 与开始时间的时间范围不大于7天
VIEW_ALL = 1  # orderViewStatus 1 = 全部
QUERY_BY_UPDATE_TIME = 2  # queryType 2 = 按更新时间查找
SORT_ASCENDING = 2  # sort: 1 时间降序, 2 时间升序 [U: one integrator reads them the other way round]
CPS_ALL = 0  # cpsType 0 = 全部 (normal and distribution orders)
FETCH_CONCURRENCY = 16

# -- gateway failure codes [U] -------------------------------------------------------------------
# No official code table for the gateway was found; these follow an integrator SDK's mapping
# (whalesky-labs/kwaishop-php-sdk ResponseParser) and the FAQ texts quoted below. The texts are
# checked as well, so a code that differs on the live platform is still classified.
TOKEN_CODES = frozenset({21, 24})  # 鉴权失败 / TOKEN过期 (FAQ K0004)
SIGN_CODES = frozenset({27, 28})  # 验签失败 / 签名校验失败 (FAQ K1004)
PERMISSION_CODES = frozenset({22, 25, 26})  # token中无scope权限 and the like: re-authorising helps, refreshing does not
RATE_LIMIT_CODES = frozenset({15, 16, 17, 1016, 1017, 802000})  # Exceed qps/quota limit (FAQ K1008)
_TOKEN_WORDS = ("token过期", "token 过期", "access_token", "鉴权失败", "token expired", "invalid token")
_RATE_WORDS = ("exceed qps limit", "exceed quota limit", "限流", "频率")
_BUSY_WORDS = ("系统繁忙", "服务繁忙", "系统异常", "服务异常", "timeout", "超时", "unavailable")
REAUTHORISE = "the merchant must re-authorise the app in 快手小店 (授权已失效，请重新授权)"


def sign_text(params: Mapping[str, str], sign_secret: str) -> str:
    """The string that is signed: the signed parameters sorted by name as k=v joined with '&', then
    '&signSecret=<signSecret>' (parameters without a value are left out)."""
    present = sorted(key for key in SIGNED_PARAMS if params.get(key) is not None)
    return "&".join(f"{key}={params[key]}" for key in present) + f"&signSecret={sign_secret}"


def request_sign(params: Mapping[str, str], sign_secret: str, sign_method: str) -> str:
    """MD5: lowercase hex; HMAC_SHA256: base64 of HMAC-SHA256 keyed with the signSecret (UTF-8)."""
    text = sign_text(params, sign_secret).encode()
    if sign_method == SIGN_HMAC_SHA256:
        return base64.b64encode(hmac.new(sign_secret.encode(), text, hashlib.sha256).digest()).decode()
    if sign_method == SIGN_MD5:
        return hashlib.md5(text).hexdigest()
    raise ValueError(f"unsupported signMethod {sign_method!r}")


def param_json(params: Mapping[str, Any]) -> str:
    """Business parameters as the `param` string: compact, keys sorted, UTF-8 kept (it is signed as sent)."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def gateway_url(base_url: str, method: str) -> str:
    """open.order.cursor.list -> {base}/open/order/cursor/list."""
    return f"{base_url.rstrip('/')}/{method.replace('.', '/')}"


def signed_query(
    shop: ShopConfig, method: str, params: Mapping[str, Any], token: str, timestamp_ms: int, sign_method: str
) -> dict[str, str]:
    """Every query parameter of one call, `sign` included."""
    sign_secret = shop.extra.get("sign_secret")
    if not sign_secret:
        raise FetchError(f"kuaishou shop {shop.shop_id}: extra.sign_secret is not configured", retryable=False)
    query = {
        "appkey": shop.app_key,
        "method": method,
        "version": API_VERSION,
        "param": param_json(params),
        "access_token": token,
        "timestamp": str(timestamp_ms),
        "signMethod": sign_method,
    }
    query["sign"] = request_sign(query, str(sign_secret), sign_method)
    return query


class _UnknownOrder(Exception):
    """The platform says the order number does not exist (the order is left out, not an error)."""


class KuaishouChannel(TokenApiClient):
    """OrderSource for 快手小店 (pull only: OrderHub does not take 快手's message pushes)."""

    channel = "kuaishou"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sign_method: str = SIGN_HMAC_SHA256,
        concurrency: int = FETCH_CONCURRENCY,
        attempts: int = 3,
        retry_wait: wait_base | None = None,
    ) -> None:
        super().__init__(self._refresh_access_token, clock=clock, concurrency=concurrency, attempts=attempts, retry_wait=retry_wait)
        self._sign_method = sign_method
        # 快手 rotates the refresh token on every refresh (the old one dies within minutes), so
        # the newest one is kept here; it starts as the configured extra.refresh_token.
        self._refresh_tokens: dict[tuple[str, str], str] = {}

    # -- OrderSource -----------------------------------------------------------------------

    async def pull_window(
        self, http: httpx.AsyncClient, shop: ShopConfig, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """Every order updated in [start, end), all pages; spans over 7 days are split."""
        begin_ms, end_ms = _epoch_ms(start, "start"), _epoch_ms(end, "end")
        found: dict[str, dict[str, Any]] = {}
        for lo, hi in _spans(begin_ms, end_ms, MAX_SPAN_MS):
            async for order in self._list_span(http, shop, lo, hi):
                # Both bounds are inclusive on the platform [U]; the contract's end is exclusive.
                # An order updated while we page can come twice: the later copy wins.
                if begin_ms <= _update_ms(order) < end_ms:
                    found[_oid(order)] = order
        return list(found.values())

    async def fetch_orders(
        self, http: httpx.AsyncClient, shop: ShopConfig, original_ids: list[str]
    ) -> dict[str, dict[str, Any]]:
        """open.order.detail per order number, at most `concurrency` calls in flight."""

        async def fetch_one(order_id: str) -> dict[str, Any] | None:
            if not order_id.isdigit():
                return None  # 快手 order numbers are integers; anything else cannot exist
            try:
                data = await self._call(http, shop, DETAIL_METHOD, {"oid": int(order_id)})
            except _UnknownOrder:
                return None
            return data if isinstance(data.get("orderBaseInfo"), dict) else None

        return await gather_bounded((str(i) for i in original_ids), fetch_one, self._concurrency)

    def normalize(self, raw: dict[str, Any], shop: ShopConfig) -> NormalizedOrder:
        return normalize_kuaishou_order(raw, shop.shop_id)

    # -- listing -----------------------------------------------------------------------------

    async def _list_span(
        self, http: httpx.AsyncClient, shop: ShopConfig, begin_ms: int, end_ms: int
    ) -> AsyncIterator[dict[str, Any]]:
        cursor = ""
        while True:
            params = {
                "orderViewStatus": VIEW_ALL,
                "pageSize": PAGE_SIZE,
                "sort": SORT_ASCENDING,
                "queryType": QUERY_BY_UPDATE_TIME,
                "beginTime": begin_ms,
                "endTime": end_ms,
                "cpsType": CPS_ALL,
                "cursor": cursor,
            }
            data = await self._call(http, shop, LIST_METHOD, params)
            orders = data.get("orderList") or []
            if not isinstance(orders, list):
                raise FetchError(f"kuaishou {LIST_METHOD}: orderList is not a list", retryable=False)
            for order in orders:
                if not isinstance(order, dict) or not isinstance(order.get("orderBaseInfo"), dict):
                    raise FetchError(f"kuaishou {LIST_METHOD}: an orderList entry has no orderBaseInfo", retryable=False)
                yield order
            following = data.get("cursor")
            if following in (None, "", NO_MORE):
                return
            if following == cursor:
                raise FetchError(f"kuaishou {LIST_METHOD}: the cursor does not advance ({cursor!r})", retryable=False)
            cursor = str(following)

    # -- calls, tokens, retries ----------------------------------------------------------------

    async def _call(self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One business call with a token, retried on transient failures; returns `data`."""
        return await self._retried(self._call_once, http, shop, method, params)

    async def _call_once(
        self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._tokens.authorised(http, shop, lambda token: self._request(http, shop, method, params, token))

    async def _request(
        self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: dict[str, Any], token: str
    ) -> dict[str, Any]:
        query = signed_query(shop, method, params, token, int(self._clock() * 1000), self._sign_method)
        try:
            response = await http.get(gateway_url(shop.api_base_url, method), params=query)
        except httpx.TransportError as exc:
            raise FetchError(f"kuaishou {method}: {type(exc).__name__}: {exc}", retryable=True) from exc
        return _check_reply(method, response)

    async def _refresh_access_token(self, http: httpx.AsyncClient, shop: ShopConfig) -> CachedToken:
        """oauth2/refresh_token with the shop's newest refresh token (called once the access token is refused)."""
        key = (shop.app_key, shop.shop_id)
        refresh_token = self._refresh_tokens.get(key) or shop.extra.get("refresh_token")
        if not refresh_token:
            raise FetchError(
                f"kuaishou shop {shop.shop_id}: the access token was refused and no refresh token is configured; {REAUTHORISE}",
                retryable=False,
            )
        form = {"grant_type": "refresh_token", "refresh_token": str(refresh_token), "app_id": shop.app_key,
                "app_secret": shop.app_secret}
        try:
            response = await http.post(shop.api_base_url.rstrip("/") + REFRESH_PATH, data=form)
        except httpx.TransportError as exc:
            raise FetchError(f"kuaishou refresh_token: {type(exc).__name__}: {exc}", retryable=True) from exc
        raise_for_http_status("kuaishou refresh_token", response)
        reply = _json_object("refresh_token", response)
        if reply.get("result") != SUCCESS:
            # 100200102 access_denied: refresh token expired, already used, or authorisation revoked.
            detail = f"{reply.get('result')} {reply.get('error') or ''} {reply.get('error_msg') or ''}".strip()
            retryable = reply.get("result") == 100200500  # server_error
            raise FetchError(f"kuaishou shop {shop.shop_id}: refresh_token refused ({detail}); {REAUTHORISE}",
                             retryable=retryable)
        value, expires_in = reply.get("access_token"), reply.get("expires_in")
        if not value or not isinstance(expires_in, int):
            raise FetchError("kuaishou refresh_token: no access_token/expires_in in the reply", retryable=False)
        if reply.get("refresh_token"):
            self._refresh_tokens[key] = str(reply["refresh_token"])
        # Refresh a little before expiry so an in-flight call never carries a dead token.
        return CachedToken(str(value), self._clock() + expires_in - min(600, expires_in // 10))


def _check_reply(method: str, response: httpx.Response) -> dict[str, Any]:
    raise_for_http_status(f"kuaishou {method}", response)
    reply = _json_object(method, response)
    code = reply.get("result")
    if code == SUCCESS:
        data = reply.get("data")
        return data if isinstance(data, dict) else {}
    text = " ".join(str(reply.get(k) or "") for k in ("error_msg", "msg", "sub_msg", "code", "sub_code")).strip()
    detail = f"kuaishou {method}: result {code} {text}".strip()
    words = text.lower()
    if code in SIGN_CODES or "签名" in words or "验签" in words:
        raise FetchError(detail, retryable=False)
    if code in PERMISSION_CODES:
        raise FetchError(f"{detail}; {REAUTHORISE}", retryable=False)
    if code in TOKEN_CODES or any(word in words for word in _TOKEN_WORDS):
        raise BadToken(detail)
    if code in RATE_LIMIT_CODES or any(word in words for word in _RATE_WORDS + _BUSY_WORDS):
        raise FetchError(detail, retryable=True)
    if ("订单" in words or "order" in words) and ("不存在" in words or "not exist" in words or "not found" in words):
        raise _UnknownOrder(detail)
    raise FetchError(detail, retryable=False)


def _json_object(what: str, response: httpx.Response) -> dict[str, Any]:
    try:
        reply = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        # A gateway or proxy page rather than the platform's JSON: most likely transient.
        raise FetchError(f"kuaishou {what}: reply is not JSON", retryable=True) from None
    if not isinstance(reply, dict):
        raise FetchError(f"kuaishou {what}: reply is not a JSON object", retryable=True)
    return reply


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _spans(begin_ms: int, end_ms: int, limit_ms: int) -> Iterator[tuple[int, int]]:
    """[begin, end) cut into consecutive spans of at most `limit_ms` each."""
    lo = begin_ms
    while lo < end_ms:
        hi = min(lo + limit_ms, end_ms)
        yield lo, hi
        lo = hi


def _epoch_ms(moment: datetime, name: str) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return (moment - _EPOCH) // timedelta(milliseconds=1)  # exact, no float rounding


def _oid(order: dict[str, Any]) -> str:
    oid = order["orderBaseInfo"].get("oid")
    if oid in (None, ""):
        raise FetchError(f"kuaishou {LIST_METHOD}: an order has no oid", retryable=False)
    return str(oid)


def _update_ms(order: dict[str, Any]) -> int:
    base = order["orderBaseInfo"]
    value = base.get("updateTime") or base.get("createTime")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FetchError(f"kuaishou {LIST_METHOD}: order {base.get('oid')} has no updateTime", retryable=False) from None
