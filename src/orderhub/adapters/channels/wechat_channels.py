"""视频号小店 / 微信小店 channel: encrypted pushes, the URL check, token-authorised order API, PII decode.

Wire protocol, worked vectors and every [U] detail: docs/channels/wechat_channels.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from tenacity.wait import wait_base

from orderhub.adapters.channels.base import Authenticated, PushMessage, ShopConfig, ShopDirectory
from orderhub.adapters.channels.http_common import (
    TokenApiClient,
    BadToken,
    CachedToken,
    gather_bounded,
    raise_for_http_status,
)
from orderhub.adapters.channels.wechat_channels_normalize import (
    PII_DECODE,
    normalize_wechat_channels_order,
    unix_seconds,
)
from orderhub.adapters.channels.wechat_crypto import (
    MessageCryptoError,
    aes_key,
    decrypt_message,
    same_signature,
    sha1_signature,
)
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, NormalizationError, SignatureError
from orderhub.domain.order import NormalizedOrder

log = logging.getLogger(__name__)

# Public error codes (developers.weixin.qq.com/doc/store/shop/dev_before/commErrCode.md):
# -1 system error (retry later); 40001 access_token invalid or not latest; 40014 invalid
# access_token; 42001 access_token expired; 45009 daily API quota reached; 45011 minute quota.
BAD_TOKEN_CODES = frozenset({40001, 40014, 42001})
RETRYABLE_CODES = frozenset({-1, 45009, 45011})
# [U] "Not exist" is 100002 across WeChat's shop APIs; 101100 "订单状态错误，不允许执行此操作" is what
# an order-state refusal looks like (the decode API serves paid orders only). Neither is listed
# for these endpoints in the documentation we found.
ORDER_NOT_FOUND_CODES = frozenset({100002})
DECODE_REFUSED_CODES = frozenset({100002, 101100})
PAGE_SIZE = 100  # order/list/get: 每页数量(不超过100)
MAX_LIST_SPAN = timedelta(days=7)  # order/list/get: a time range may not exceed 7 days
TOKEN_PATH = "/cgi-bin/token"
ORDER_GET = "/channels/ec/order/get"
ORDER_LIST = "/channels/ec/order/list/get"
DECODE = "/channels/ec/order/sensitiveinfo/decode"
# Where a push names its order, by event family (order events, after-sale, complaints [U]).
ORDER_ID_HOLDERS = ("order_info", "finder_shop_aftersale_status_update", "complaint_info")
DECODED_FIELDS = {"name": "user_name", "phone": "tel_number"}


class _UnknownOrder(Exception):
    """The platform says the order does not exist for this shop (it is left out, not an error)."""


class WechatChannelsChannel(TokenApiClient):
    """PushChannel + UrlVerifier + OrderSource + PiiSource for 视频号小店 / 微信小店."""

    channel = "wechat_channels"
    ack_body = b"success"
    ack_media_type = "text/plain"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        concurrency: int = 16,
        attempts: int = 3,
        retry_wait: wait_base | None = None,
    ) -> None:
        super().__init__(self._issue_token, clock=clock, concurrency=concurrency, attempts=attempts, retry_wait=retry_wait)

    # -- push -----------------------------------------------------------------------------

    def authenticate(
        self, headers: Mapping[str, str], body: bytes, shops: ShopDirectory, query: Mapping[str, str] | None = None
    ) -> Authenticated:
        """Check msg_signature over (token, timestamp, nonce, Encrypt), decrypt, check the appid.

        The request names no appid before decryption, so each configured shop's token is tried.
        What is kept is the decrypted message with the shop it belongs to (see _kept_body).
        """
        query = query or {}
        given, timestamp, nonce = query.get("msg_signature"), query.get("timestamp"), query.get("nonce")
        if not given:
            raise SignatureError(ErrorCode.SIGNATURE_MISSING, "query parameter msg_signature is missing", "msg_signature")
        if timestamp is None or nonce is None:
            raise SignatureError(ErrorCode.SIGNATURE_MISSING, "query parameters timestamp and nonce are required", "timestamp")
        if query.get("encrypt_type", "aes") != "aes":
            raise SignatureError(ErrorCode.SIGNATURE_INVALID, "only encrypted (encrypt_type=aes) pushes are accepted", "encrypt_type")
        encrypted = _encrypt_field(body)
        signed = [s for s in self._shops(shops) if same_signature(sha1_signature(_token(s), timestamp, nonce, encrypted), given)]
        if not signed:
            raise SignatureError(ErrorCode.SIGNATURE_INVALID, "msg_signature does not match any shop's token", "msg_signature")
        message, shop = _decrypt_for(signed, encrypted, "Encrypt")
        return Authenticated(app_key=shop.app_key, shop_id=shop.shop_id, body=_kept_body(shop, message))

    def verify_url(self, query: Mapping[str, str], shops: ShopDirectory) -> bytes:
        """The GET check of the callback URL: plain mode signs (token, timestamp, nonce) and is
        answered with echostr as is; safe mode signs echostr too (msg_signature) and is answered
        with the decrypted echostr."""
        echostr, timestamp, nonce = query.get("echostr"), query.get("timestamp"), query.get("nonce")
        if not echostr or timestamp is None or nonce is None:
            raise SignatureError(ErrorCode.SIGNATURE_MISSING, "echostr, timestamp and nonce are required", "echostr")
        candidates = self._shops(shops)
        if query.get("msg_signature"):
            # Base64 has no spaces: a "+" that the query string decoding turned into one is restored.
            sealed = echostr.replace(" ", "+")
            given = query["msg_signature"]
            signed = [s for s in candidates if same_signature(sha1_signature(_token(s), timestamp, nonce, sealed), given)]
            if not signed:
                raise SignatureError(ErrorCode.SIGNATURE_INVALID, "msg_signature does not match any shop's token", "msg_signature")
            return _decrypt_for(signed, sealed, "echostr")[0]
        if query.get("signature"):
            given = query["signature"]
            if any(same_signature(sha1_signature(_token(s), timestamp, nonce), given) for s in candidates):
                return echostr.encode()
            raise SignatureError(ErrorCode.SIGNATURE_INVALID, "signature does not match any shop's token", "signature")
        raise SignatureError(ErrorCode.SIGNATURE_MISSING, "query parameter signature or msg_signature is missing", "signature")

    def parse_push(self, body: bytes) -> list[PushMessage]:
        try:
            kept = orjson.loads(body)
        except ValueError:
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "kept push is not JSON", "body") from None
        if not isinstance(kept, dict) or not isinstance(kept.get("shop_id"), str) or not kept["shop_id"]:
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "kept push names no shop (not an authenticated push)", "shop_id")
        message = kept.get("message")
        if not isinstance(message, dict):
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "the decrypted message is not a JSON object", "message")
        event = message.get("Event")
        if not isinstance(event, str) or not event:
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, "message has no Event", "message.Event")
        order_id = _order_id(message)
        if order_id is None:  # product_spu_*, account and other events that name no order
            return []
        return [PushMessage(kept["shop_id"], order_id, event, _event_time(message), message)]

    # -- open API ---------------------------------------------------------------------------

    async def fetch_orders(
        self, http: httpx.AsyncClient, shop: ShopConfig, original_ids: list[str]
    ) -> dict[str, dict[str, Any]]:
        return await gather_bounded((str(i) for i in original_ids), lambda i: self._order(http, shop, i), self._concurrency)

    async def pull_window(
        self, http: httpx.AsyncClient, shop: ShopConfig, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """Order ids updated in [start, end), 7 days per list query, page by page; then each order."""
        start_s, end_s = _epoch(start, "start"), _epoch(end, "end")
        ids: list[str] = []
        chunk_start = start_s
        while chunk_start < end_s:
            chunk_end = min(end_s, chunk_start + int(MAX_LIST_SPAN.total_seconds()))
            ids.extend(await self._list_ids(http, shop, chunk_start, chunk_end))
            chunk_start = chunk_end
        found = await self.fetch_orders(http, shop, ids)
        # The list's range is inclusive [U]; the contract's end is not.
        return [o for o in found.values() if not isinstance(o.get("update_time"), int) or start_s <= o["update_time"] < end_s]

    def normalize(self, raw: dict[str, Any], shop: ShopConfig) -> NormalizedOrder:
        return normalize_wechat_channels_order(raw, shop.shop_id)

    async def decrypt(
        self, http: httpx.AsyncClient, shop: ShopConfig, orders: list[tuple[str, dict[str, str]]], fields: tuple[str, ...]
    ) -> dict[str, dict[str, str]]:
        """One sensitiveinfo/decode call per order (the API takes one order id; each call counts
        against the shop's daily decode quota). Masked values are left out: with a virtual number
        the decoded tel_number is still masked."""
        wanted = [original_id for original_id, pii in orders if pii.get("decode") == PII_DECODE["decode"]]

        async def decode_one(order_id: str) -> dict[str, str] | None:
            try:
                data = await self._call(http, shop, DECODE, {"order_id": order_id}, unknown=DECODE_REFUSED_CODES)
            except _UnknownOrder:
                return None
            plain = _plain_fields(data.get("address_info"), fields)
            return plain or None

        return await gather_bounded(wanted, decode_one, self._concurrency)

    # -- calls, tokens, retries -----------------------------------------------------------------

    async def _order(self, http: httpx.AsyncClient, shop: ShopConfig, order_id: str) -> dict[str, Any] | None:
        # Always masked: OrderHub never receives plaintext in the order payload.
        body = {"order_id": order_id, "encode_sensitive_info": True}
        try:
            data = await self._call(http, shop, ORDER_GET, body, unknown=ORDER_NOT_FOUND_CODES)
        except _UnknownOrder:
            return None
        order = data.get("order")
        return order if isinstance(order, dict) and order else None

    async def _list_ids(self, http: httpx.AsyncClient, shop: ShopConfig, start_s: int, end_s: int) -> list[str]:
        ids: list[str] = []
        next_key = ""
        while True:
            body = {"update_time_range": {"start_time": start_s, "end_time": end_s}, "page_size": PAGE_SIZE, "next_key": next_key}
            data = await self._call(http, shop, ORDER_LIST, body)
            page = data.get("order_id_list") or []
            if not isinstance(page, list):
                raise FetchError("wechat_channels order/list/get: order_id_list is not a list", retryable=False)
            ids.extend(str(i) for i in page if i not in (None, ""))
            following = data.get("next_key")
            if data.get("has_more") is not True:
                return ids
            if not isinstance(following, str) or not following or following == next_key:
                raise FetchError("wechat_channels order/list/get: has_more without a new next_key", retryable=False)
            next_key = following

    async def _call(
        self, http: httpx.AsyncClient, shop: ShopConfig, path: str, body: dict[str, Any], unknown: frozenset[int] = frozenset()
    ) -> dict[str, Any]:
        """One business call with the shop's token, retried on transient failures."""

        async def once() -> dict[str, Any]:
            return await self._tokens.authorised(http, shop, lambda token: self._post(http, shop, path, body, token, unknown))

        return await self._retried(once)

    async def _post(
        self, http: httpx.AsyncClient, shop: ShopConfig, path: str, body: dict[str, Any], token: str, unknown: frozenset[int]
    ) -> dict[str, Any]:
        url = f"{shop.api_base_url.rstrip('/')}{path}"
        try:
            response = await http.post(url, params={"access_token": token}, json=body)
        except httpx.TransportError as exc:
            raise FetchError(f"wechat_channels {path}: {type(exc).__name__}: {exc}", retryable=True) from exc
        reply = _reply(path, response)
        code = reply.get("errcode", 0)
        if code == 0:
            return reply
        detail = f"wechat_channels {path}: errcode {code} {reply.get('errmsg') or ''}".strip()
        if code in BAD_TOKEN_CODES:
            raise BadToken(detail)
        if code in unknown:
            raise _UnknownOrder(detail)
        raise FetchError(detail, retryable=code in RETRYABLE_CODES)

    async def _issue_token(self, http: httpx.AsyncClient, shop: ShopConfig) -> CachedToken:
        """GET /cgi-bin/token (client_credential). Here 40001 / 40125 mean a wrong AppSecret and
        40013 a wrong appid: configuration errors, not worth a retry."""
        url = f"{shop.api_base_url.rstrip('/')}{TOKEN_PATH}"
        params = {"grant_type": "client_credential", "appid": shop.app_key, "secret": shop.app_secret}
        try:
            response = await http.get(url, params=params)
        except httpx.TransportError as exc:
            raise FetchError(f"wechat_channels {TOKEN_PATH}: {type(exc).__name__}: {exc}", retryable=True) from exc
        reply = _reply(TOKEN_PATH, response)
        code = reply.get("errcode", 0)
        if code != 0:
            detail = f"wechat_channels {TOKEN_PATH}: errcode {code} {reply.get('errmsg') or ''}".strip()
            raise FetchError(detail, retryable=code in RETRYABLE_CODES)
        value, expires_in = reply.get("access_token"), reply.get("expires_in")
        if not value or isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
            raise FetchError(f"wechat_channels {TOKEN_PATH}: no access_token/expires_in in the reply", retryable=False)
        # Renew 5 minutes ahead: the platform keeps the old token valid for 5 minutes after a new one.
        return CachedToken(str(value), self._clock() + expires_in - min(300, expires_in // 10))

    def _shops(self, shops: ShopDirectory) -> list[ShopConfig]:
        """This channel's shops with a token and EncodingAESKey. The push names no appid until it
        is decrypted, so the directory must be able to list its shops (ShopRegistry.all())."""
        list_all = getattr(shops, "all", None)
        if not callable(list_all):
            raise TypeError("WeChat pushes name no shop before decryption: the shop directory must offer all()")
        configured = [
            s for s in list_all()
            if s.channel == self.channel and s.extra.get("token") and s.extra.get("encoding_aes_key")
        ]
        if not configured:
            raise SignatureError(ErrorCode.UNKNOWN_SHOP, "no wechat_channels shop has a token and EncodingAESKey", "shop")
        return configured


# -- push helpers ---------------------------------------------------------------------------------


def _token(shop: ShopConfig) -> str:
    return str(shop.extra["token"])


def _encrypt_field(body: bytes) -> str:
    try:
        envelope = orjson.loads(body)
    except ValueError:
        envelope = None
    encrypted = envelope.get("Encrypt") if isinstance(envelope, dict) else None
    if not isinstance(encrypted, str) or not encrypted:
        raise SignatureError(ErrorCode.SIGNATURE_MISSING, "body is not JSON with an Encrypt field", "Encrypt")
    return encrypted


def _decrypt_for(signed: list[ShopConfig], sealed: str, field: str) -> tuple[bytes, ShopConfig]:
    """Decrypt with the first signing shop whose key opens the text and whose appid it names."""
    problems = []
    for shop in signed:
        try:
            message, appid = decrypt_message(aes_key(str(shop.extra["encoding_aes_key"])), sealed)
        except MessageCryptoError as exc:
            problems.append(f"shop {shop.shop_id}: {exc}")
            continue
        if appid == shop.app_key:
            return message, shop
        problems.append(f"shop {shop.shop_id}: encrypted for appid {appid!r}, not {shop.app_key!r}")
    log.warning("wechat_channels %s signed but not usable: %s", field, "; ".join(problems))
    raise SignatureError(ErrorCode.SIGNATURE_INVALID, f"{field} does not decrypt for the shop it is signed for", field)


def _kept_body(shop: ShopConfig, message: bytes) -> bytes:
    """What the inbox keeps: {"appid", "shop_id", "message": <the decrypted JSON, byte for byte>}.

    parse_push only sees this body, and the platform's message names the shop only by its
    original id (gh_…), so the shop found by decryption travels with it. A message that is not a
    JSON object (the platform sends JSON only) is kept as text under "message_text" for quarantine.
    """
    head = orjson.dumps({"appid": shop.app_key, "shop_id": shop.shop_id})[:-1]
    try:
        parsed = orjson.loads(message)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return head + b',"message":' + message + b"}"
    return head + b',"message_text":' + orjson.dumps(message.decode("utf-8", "replace")) + b"}"


def _order_id(message: dict[str, Any]) -> str | None:
    for holder in ORDER_ID_HOLDERS:
        info = message.get(holder)
        if not isinstance(info, dict):
            continue
        order_id = info.get("order_id")
        if isinstance(order_id, bool) or not isinstance(order_id, (int, str)) or not str(order_id).strip():
            if "order_id" in info:
                field = f"message.{holder}.order_id"
                raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"{field} {order_id!r} is not an id", field)
            continue
        return str(order_id).strip()
    return None


def _event_time(message: dict[str, Any]) -> datetime | None:
    if message.get("CreateTime") is None:
        return None
    try:
        return unix_seconds(message["CreateTime"], "message.CreateTime")
    except NormalizationError as exc:
        raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, exc.message, exc.field) from None


# -- API helpers ------------------------------------------------------------------------------------


def _reply(path: str, response: httpx.Response) -> dict[str, Any]:
    raise_for_http_status(f"wechat_channels {path}", response)
    try:
        reply = orjson.loads(response.content)
    except ValueError:
        raise FetchError(f"wechat_channels {path}: reply is not JSON", retryable=True) from None
    if not isinstance(reply, dict):
        raise FetchError(f"wechat_channels {path}: reply is not a JSON object", retryable=True)
    return reply


def _plain_fields(address: Any, fields: tuple[str, ...]) -> dict[str, str]:
    """address_info -> {"phone", "name", "address_detail"} ∩ fields, plaintext only. The detail is
    detail_info plus house_number when the platform gives that separately [U]."""
    if not isinstance(address, dict):
        return {}
    values = {name: address.get(key) for name, key in DECODED_FIELDS.items()}
    detail, house = address.get("detail_info"), address.get("house_number")
    values["address_detail"] = f"{detail}{house}" if isinstance(detail, str) and isinstance(house, str) and house else detail
    return {
        name: value for name, value in values.items()
        if name in fields and isinstance(value, str) and value and "*" not in value
    }


def _epoch(moment: datetime, name: str) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    # Whole seconds: [start, end) holds update time t exactly when ceil(start) <= t < ceil(end).
    return math.ceil(moment.timestamp())
