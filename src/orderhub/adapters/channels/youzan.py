"""有赞 Youzan cloud channel: push verification, token-authorised API calls, normalization.

Wire protocol: docs/wire-protocols.md (有赞 section); sources: docs/platforms.md (Youzan).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import httpx
import orjson
from tenacity.wait import wait_base

from orderhub.adapters.channels.base import Authenticated, PushMessage, ShopConfig, ShopDirectory
from orderhub.adapters.channels.push_auth import md5_push_signature, verify_md5_push
from orderhub.adapters.channels.http_common import (
    TokenApiClient,
    BadToken,
    CachedToken,
    gather_bounded,
    raise_for_http_status,
)
from orderhub.adapters.channels.youzan_normalize import SHANGHAI, TIME_FORMAT, normalize_youzan_trade
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError
from orderhub.domain.order import NormalizedOrder

SUCCESS = 200
# 4203 access_token不存在 (wire-protocols.md); 40010/40011 are the older gateway's
# "token missing/expired" and "token invalid" codes (youzan/open-sdk-Csharp Docs/全局错误码.md).
BAD_TOKEN_CODES = frozenset({4203, 40010, 40011})
TRADE_GET = ("youzan.trade.get", "4.0.0")
TRADES_SOLD_GET = ("youzan.trades.sold.get", "4.0.0")
PAGE_SIZE = 100


push_signature = md5_push_signature  # the push signing scheme, kept by name for callers


class _UnknownOrder(Exception):
    pass


class YouzanChannel(TokenApiClient):
    """PushChannel + OrderSource for 有赞云."""

    channel = "youzan"
    ack_body = b'{"code":0,"msg":"success"}'
    ack_media_type = "application/json"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        concurrency: int = 16,
        attempts: int = 3,
        retry_wait: wait_base | None = None,
    ) -> None:
        super().__init__(self._issue_token, clock=clock, concurrency=concurrency, attempts=attempts, retry_wait=retry_wait)

    # -- push ---------------------------------------------------------------------------

    def authenticate(
        self, headers: Mapping[str, str], body: bytes, shops: ShopDirectory, query: Mapping[str, str] | None = None
    ) -> Authenticated:
        return verify_md5_push(self.channel, headers, body, shops, id_header="Client-Id", sign_header="Event-Sign")

    def parse_push(self, body: bytes) -> list[PushMessage]:
        try:
            envelope = orjson.loads(body)
        except ValueError:
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "push body is not JSON", "body") from None
        if not isinstance(envelope, dict):
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "push body is not a JSON object", "body")
        if envelope.get("test") is True:  # the console's connectivity check
            return []
        msg = _decode_msg(envelope.get("msg"))
        tid = envelope.get("id") or msg.get("tid")
        if isinstance(tid, bool) or not isinstance(tid, (str, int)) or not str(tid):
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "push names no trade (id / msg.tid)", "id")
        kdt_id = envelope.get("kdt_id")
        if isinstance(kdt_id, bool) or not isinstance(kdt_id, (str, int)) or not str(kdt_id):
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "push has no kdt_id", "kdt_id")
        kind = envelope.get("type")
        if not isinstance(kind, str) or not kind:
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "push has no type", "type")
        raw = dict(envelope)
        if msg:
            raw["msg_decoded"] = msg
        return [
            PushMessage(
                shop_id=str(kdt_id),
                original_id=str(tid),
                kind=kind,
                event_time=_version_time(envelope.get("version")),
                raw=raw,
            )
        ]

    # -- open API -------------------------------------------------------------------------

    async def fetch_orders(
        self, http: httpx.AsyncClient, shop: ShopConfig, original_ids: list[str]
    ) -> dict[str, dict[str, Any]]:

        async def fetch_one(tid: str) -> dict[str, Any] | None:
            try:
                data = await self._call(http, shop, TRADE_GET, {"tid": tid})
            except _UnknownOrder:
                return None
            found = isinstance(data.get("full_order_info"), dict) and data["full_order_info"]
            return data if found else None

        return await gather_bounded((str(i) for i in original_ids), fetch_one, self._concurrency)

    async def pull_window(
        self, http: httpx.AsyncClient, shop: ShopConfig, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        trades: list[dict[str, Any]] = []
        page_no = 1
        while True:
            params = {
                "start_update": _beijing(start, "start"),
                "end_update": _beijing(end, "end"),
                "page_no": page_no,
                "page_size": PAGE_SIZE,
            }
            data = await self._call(http, shop, TRADES_SOLD_GET, params)
            batch = data.get("full_order_info_list") or []
            if not isinstance(batch, list):
                raise FetchError("youzan trades.sold.get: full_order_info_list is not a list", retryable=False)
            trades.extend(t for t in batch if isinstance(t, dict))
            total = data.get("total_results")
            if not batch or len(batch) < PAGE_SIZE or (isinstance(total, int) and page_no * PAGE_SIZE >= total):
                return trades
            page_no += 1

    def normalize(self, raw: dict[str, Any], shop: ShopConfig) -> NormalizedOrder:
        return normalize_youzan_trade(raw, shop.shop_id)

    # -- calls, tokens, retries -------------------------------------------------------------

    async def _call(
        self, http: httpx.AsyncClient, shop: ShopConfig, api: tuple[str, str], params: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._retried(self._call_once, http, shop, api, params)

    async def _call_once(
        self, http: httpx.AsyncClient, shop: ShopConfig, api: tuple[str, str], params: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._tokens.authorised(http, shop, lambda token: self._request(http, shop, api, params, token))

    async def _issue_token(self, http: httpx.AsyncClient, shop: ShopConfig) -> CachedToken:
        body = {
            "client_id": shop.app_key,
            "client_secret": shop.app_secret,
            "authorize_type": "silent",
            "grant_id": shop.shop_id,  # the kdt_id that authorised this app
            "refresh": False,
        }
        url = f"{shop.api_base_url.rstrip('/')}/auth/token"
        data = await self._post(http, "auth/token", url, body)
        value, expires_ms = data.get("access_token"), data.get("expires")
        if not value or isinstance(expires_ms, bool) or not isinstance(expires_ms, int):
            raise FetchError("youzan auth/token: no access_token/expires in the reply", retryable=False)
        now = self._clock()
        lifetime = expires_ms / 1000 - now
        # Refresh a little before expiry so an in-flight call never carries a dead token.
        return CachedToken(str(value), now + lifetime - min(300.0, max(lifetime, 0) / 10))

    async def _request(
        self, http: httpx.AsyncClient, shop: ShopConfig, api: tuple[str, str], params: dict[str, Any], token: str
    ) -> dict[str, Any]:
        name, version = api
        url = f"{shop.api_base_url.rstrip('/')}/api/{name}/{version}"
        return await self._post(http, name, url, params, query={"access_token": token})

    async def _post(
        self, http: httpx.AsyncClient, name: str, url: str, body: dict[str, Any], query: dict[str, str] | None = None
    ) -> dict[str, Any]:
        try:
            response = await http.post(url, params=query, json=body)
        except httpx.TransportError as exc:
            raise FetchError(f"youzan {name}: {type(exc).__name__}: {exc}", retryable=True) from exc
        return _check_reply(name, response)


def _check_reply(name: str, response: httpx.Response) -> dict[str, Any]:
    raise_for_http_status(f"youzan {name}", response)
    try:
        reply = orjson.loads(response.content)
    except ValueError:
        raise FetchError(f"youzan {name}: reply is not JSON", retryable=True) from None
    if not isinstance(reply, dict):
        raise FetchError(f"youzan {name}: reply is not a JSON object", retryable=True)
    code = reply.get("code")
    if reply.get("success") is True and code in (SUCCESS, None):
        data = reply.get("data")
        return data if isinstance(data, dict) else {}
    message = str(reply.get("message") or reply.get("msg") or "")
    detail = f"youzan {name}: code {code} {message}".strip()
    if code in BAD_TOKEN_CODES:
        raise BadToken(detail)
    words = message.lower()
    if "限流" in words or "频繁" in words or "rate limit" in words:  # [U] no documented code
        raise FetchError(detail, retryable=True)
    about_trade = "订单" in words or "交易" in words or "trade" in words or "order" in words
    if about_trade and ("不存在" in words or "not exist" in words or "not found" in words):
        raise _UnknownOrder(detail)
    raise FetchError(detail, retryable=False)


def _decode_msg(msg: Any) -> dict[str, Any]:
    """`msg` is URL-encoded JSON ({"tid", "status", ...}); anything else reads as empty."""
    if not isinstance(msg, str) or not msg:
        return {}
    try:
        decoded = json.loads(unquote_plus(msg))
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _version_time(version: Any) -> datetime | None:
    if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
        return None
    try:
        return datetime.fromtimestamp(version, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"version {version} is not a unix time", "version") from None


def _beijing(moment: datetime, name: str) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(SHANGHAI).strftime(TIME_FORMAT)
