"""抖店 Douyin shop channel: push verification, signed open-API calls, normalization.

Wire protocol: docs/wire-protocols.md (抖店 section); sources and a worked signing vector:
docs/platforms.md (Douyin).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import httpx
import orjson
from tenacity.wait import wait_base

from orderhub.adapters.channels.base import Authenticated, PushMessage, ShopConfig, ShopDirectory
from orderhub.adapters.channels.douyin_normalize import normalize_douyin_order, unix_seconds
from orderhub.adapters.channels.push_auth import md5_push_signature, verify_md5_push
from orderhub.adapters.channels.http_common import (
    TokenApiClient,
    BadToken,
    CachedToken,
    gather_bounded,
    raise_for_http_status,
)
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, NormalizationError
from orderhub.domain.order import NormalizedOrder

API_VERSION = "2"
SUCCESS = 10000
# Failure codes as the simulator serves them (wire-protocols.md); the live platform's numbers
# for these cases are not confirmed [U], so sub_code words are checked as well.
CODE_SIGNATURE_INVALID = 30001
CODE_BAD_TOKEN = 30002
CODE_RATE_LIMITED = 30003
CODE_SERVICE_UNAVAILABLE = 20000  # 服务暂不可用 [U]
VERIFICATION_TAG = "0"
# The message's own time, most specific first: an update beats the event-specific stamps.
EVENT_TIME_FIELDS = ("update_time", "cancel_time", "pay_time", "create_time")
PAGE_SIZE = 100
# order.batchDecrypt takes at most this many ciphers a call [U: the limit integrators quote]
DECRYPT_BATCH = 50


def canonical_param_json(params: Mapping[str, Any]) -> str:
    """Business params as 抖店 signs them: keys sorted at every level, no spaces, UTF-8 kept."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sign_request(
    app_key: str, app_secret: str, method: str, param_json: str, timestamp: str, sign_method: str = "hmac-sha256"
) -> str:
    """The `sign` query parameter of an open-API call (wire-protocols.md)."""
    message = (
        f"{app_secret}app_key{app_key}method{method}param_json{param_json}"
        f"timestamp{timestamp}v{API_VERSION}{app_secret}"
    ).encode()
    if sign_method == "hmac-sha256":
        return hmac.new(app_secret.encode(), message, hashlib.sha256).hexdigest()
    if sign_method == "md5":
        return hashlib.md5(message).hexdigest()
    raise ValueError(f"unsupported sign_method {sign_method!r}")


push_signature = md5_push_signature  # the push signing scheme, kept by name for callers


class _UnknownOrder(Exception):
    """The platform says the order number does not exist (the order is left out, not an error)."""


class DouyinChannel(TokenApiClient):
    """PushChannel + OrderSource for 抖店."""

    channel = "douyin"
    ack_body = b'{"code":0,"msg":"success"}'
    ack_media_type = "application/json"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sign_method: str = "hmac-sha256",
        concurrency: int = 16,
        attempts: int = 3,
        retry_wait: wait_base | None = None,
    ) -> None:
        # Tokens are per instance: a shop whose pre-issued token is refused uses token.create from then on.
        super().__init__(self._create_token, clock=clock, concurrency=concurrency, attempts=attempts, retry_wait=retry_wait)
        self._sign_method = sign_method

    # -- push ---------------------------------------------------------------------------

    def authenticate(
        self, headers: Mapping[str, str], body: bytes, shops: ShopDirectory, query: Mapping[str, str] | None = None
    ) -> Authenticated:
        return verify_md5_push(self.channel, headers, body, shops, id_header="app-id", sign_header="event-sign")

    def parse_push(self, body: bytes) -> list[PushMessage]:
        try:
            envelope = orjson.loads(body)
        except ValueError:
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "push body is not JSON", "body") from None
        if not isinstance(envelope, list):
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "push body is not a JSON array of messages", "body")
        messages = []
        for index, item in enumerate(envelope):
            message = _parse_message(item, f"[{index}]")
            if message is not None:
                messages.append(message)
        return messages

    # -- open API -------------------------------------------------------------------------

    async def fetch_orders(
        self, http: httpx.AsyncClient, shop: ShopConfig, original_ids: list[str]
    ) -> dict[str, dict[str, Any]]:

        async def fetch_one(order_id: str) -> dict[str, Any] | None:
            try:
                data = await self._call(http, shop, "order.orderDetail", {"shop_order_id": order_id})
            except _UnknownOrder:
                return None
            detail = data.get("shop_order_detail")
            return detail if isinstance(detail, dict) and detail else None

        return await gather_bounded((str(i) for i in original_ids), fetch_one, self._concurrency)

    async def pull_window(
        self, http: httpx.AsyncClient, shop: ShopConfig, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        start_s, end_s = _epoch(start, "start"), _epoch(end, "end")
        orders: list[dict[str, Any]] = []
        page = 0
        while True:
            params = {
                "page": page,
                "size": PAGE_SIZE,
                "update_time_start": start_s,
                "update_time_end": end_s,
                "order_by": "update_time",
                "order_asc": True,
            }
            data = await self._call(http, shop, "order.searchList", params)
            batch = data.get("shop_order_list") or []
            if not isinstance(batch, list):
                raise FetchError("douyin order.searchList: shop_order_list is not a list", retryable=False)
            orders.extend(o for o in batch if isinstance(o, dict) and _in_window(o, start_s, end_s))
            total = data.get("total")
            page += 1
            if not batch or len(batch) < PAGE_SIZE or (isinstance(total, int) and page * PAGE_SIZE >= total):
                return orders

    def normalize(self, raw: dict[str, Any], shop: ShopConfig) -> NormalizedOrder:
        return normalize_douyin_order(raw, shop.shop_id)

    # -- buyer PII ---------------------------------------------------------------------------

    async def decrypt(
        self, http: httpx.AsyncClient, shop: ShopConfig, orders: list[tuple[str, dict[str, str]]], fields: tuple[str, ...]
    ) -> dict[str, dict[str, str]]:
        """order.batchDecrypt: `cipher_infos` of {auth_id: the order id, cipher_text}, at most
        DECRYPT_BATCH a call; each answer carries its own err_no (0 = decrypted)."""
        wanted = [(oid, f, pii[f]) for oid, pii in orders for f in fields if pii.get(f)]
        out: dict[str, dict[str, str]] = {}
        for start in range(0, len(wanted), DECRYPT_BATCH):
            chunk = wanted[start : start + DECRYPT_BATCH]
            params = {"cipher_infos": [{"auth_id": oid, "cipher_text": cipher} for oid, _, cipher in chunk]}
            data = await self._call(http, shop, "order.batchDecrypt", params)
            custom = data.get("custom_err")
            if isinstance(custom, dict) and custom.get("err_code") not in (0, None):
                raise FetchError(f"douyin order.batchDecrypt: {custom.get('err_code')} {custom.get('err_msg')}", retryable=True)
            by_cipher = {
                (str(i.get("auth_id")), i.get("cipher_text")): i.get("decrypt_text")
                for i in data.get("decrypt_infos") or [] if isinstance(i, dict) and i.get("err_no") == 0 and i.get("decrypt_text")
            }
            for oid, field_name, cipher in chunk:
                plain = by_cipher.get((oid, cipher))
                if plain:
                    out.setdefault(oid, {})[field_name] = plain
        return out

    # -- calls, tokens, retries -------------------------------------------------------------

    async def _call(self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: dict[str, Any]) -> dict:
        """One business call with a token, retried on transient failures; returns `data`."""
        return await self._retried(self._call_once, http, shop, method, params)

    async def _call_once(
        self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._tokens.authorised(http, shop, lambda token: self._request(http, shop, method, params, token))

    async def _create_token(self, http: httpx.AsyncClient, shop: ShopConfig) -> CachedToken:
        params = {"code": "", "grant_type": "authorization_self", "shop_id": shop.shop_id}
        data = await self._request(http, shop, "token.create", params, token=None)
        value, expires_in = data.get("access_token"), data.get("expires_in")
        if not value or not isinstance(expires_in, int):
            raise FetchError("douyin token.create: no access_token/expires_in in the reply", retryable=False)
        # Refresh a little before expiry so an in-flight call never carries a dead token.
        margin = min(300, expires_in // 10)
        return CachedToken(str(value), self._clock() + expires_in - margin)

    async def _request(
        self, http: httpx.AsyncClient, shop: ShopConfig, method: str, params: dict[str, Any], token: str | None
    ) -> dict[str, Any]:
        param_json = canonical_param_json(params)
        timestamp = str(int(self._clock()))
        query = {"app_key": shop.app_key, "method": method}
        if token is not None:
            query["access_token"] = token
        query |= {
            "param_json": param_json,
            "timestamp": timestamp,
            "v": API_VERSION,
            "sign_method": self._sign_method,
            "sign": sign_request(shop.app_key, shop.app_secret, method, param_json, timestamp, self._sign_method),
        }
        url = f"{shop.api_base_url.rstrip('/')}/{method.replace('.', '/')}"
        try:
            response = await http.post(
                url, params=query, content=param_json.encode(), headers={"Content-Type": "application/json"}
            )
        except httpx.TransportError as exc:
            raise FetchError(f"douyin {method}: {type(exc).__name__}: {exc}", retryable=True) from exc
        return _check_reply(method, response)


def _check_reply(method: str, response: httpx.Response) -> dict[str, Any]:
    raise_for_http_status(f"douyin {method}", response)
    try:
        reply = orjson.loads(response.content)  # exact for 64-bit ids, and several times faster than json
    except ValueError:
        raise FetchError(f"douyin {method}: reply is not JSON", retryable=True) from None
    if not isinstance(reply, dict):
        raise FetchError(f"douyin {method}: reply is not a JSON object", retryable=True)
    code = reply.get("code")
    if code == SUCCESS:
        data = reply.get("data")
        return data if isinstance(data, dict) else {}
    sub_code = str(reply.get("sub_code") or "")
    detail = f"douyin {method}: code {code} {sub_code} {reply.get('sub_msg') or reply.get('msg') or ''}".strip()
    words = f"{sub_code} {reply.get('sub_msg') or ''} {reply.get('msg') or ''}".lower()
    if code == CODE_BAD_TOKEN or "access-token" in sub_code:
        raise BadToken(detail)
    if code in (CODE_RATE_LIMITED, CODE_SERVICE_UNAVAILABLE) or "rate-limit" in words or "限流" in words:
        raise FetchError(detail, retryable=True)
    if code != CODE_SIGNATURE_INVALID and _says_order_unknown(words):
        raise _UnknownOrder(detail)
    raise FetchError(detail, retryable=False)


def _says_order_unknown(words: str) -> bool:
    about_order = "订单" in words or "order" in words
    missing = "不存在" in words or "not exist" in words or "not found" in words or "not-exist" in words
    return about_order and missing


def _parse_message(item: Any, path: str) -> PushMessage | None:
    if not isinstance(item, dict):
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"message {path} is not an object", path)
    tag = item.get("tag")
    if tag is None or isinstance(tag, bool):
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"message {path} has no tag", f"{path}.tag")
    tag = str(tag)
    if tag == VERIFICATION_TAG:  # the platform's URL check, not an order event
        return None
    data = item.get("data")
    if isinstance(data, str):
        try:
            data = orjson.loads(data)
        except ValueError:
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"{path}.data is not JSON", f"{path}.data") from None
    if not isinstance(data, dict):
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"{path}.data is not an object", f"{path}.data")
    p_id, shop_id = data.get("p_id"), data.get("shop_id")
    if isinstance(p_id, bool) or not isinstance(p_id, (int, str)) or not str(p_id):
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"{path}.data.p_id is missing", f"{path}.data.p_id")
    if isinstance(shop_id, bool) or not isinstance(shop_id, (int, str)) or not str(shop_id):
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"{path}.data.shop_id is missing", f"{path}.data.shop_id")
    return PushMessage(
        shop_id=str(shop_id),
        original_id=str(p_id),
        kind=tag,
        event_time=_event_time(data, path),
        raw={**item, "data": data},
    )


def _event_time(data: dict[str, Any], path: str) -> datetime | None:
    for name in EVENT_TIME_FIELDS:
        if data.get(name) not in (None, 0, ""):
            try:
                return unix_seconds(data[name], f"{path}.data.{name}")
            except NormalizationError as exc:
                raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, exc.message, exc.field) from None
    return None


def _epoch(moment: datetime, name: str) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return int(moment.timestamp())


def _in_window(order: dict[str, Any], start_s: int, end_s: int) -> bool:
    """Keep [start, end): the platform's end bound is inclusive, the contract's is not."""
    updated = order.get("update_time")
    return not isinstance(updated, int) or start_s <= updated < end_s
