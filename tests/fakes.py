"""In-memory stand-ins for a platform: a push channel and an order API, for pipeline tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from hashlib import md5
from typing import Any

import orjson

from factories import T0, make_order
from orderhub.adapters.channels.base import Authenticated, PushMessage, ShopConfig, ShopDirectory
from orderhub.adapters.channels.registry import ChannelRegistry
from orderhub.domain.errors import EnvelopeError, ErrorCode, FetchError, NormalizationError, SignatureError
from orderhub.domain.order import NormalizedOrder
from orderhub.domain.status import Status

SHOP = ShopConfig("fake", "S1", "假店铺", "fake-app", "fake-secret", "http://127.0.0.1:1")


@dataclass
class FakePlatform:
    """The platform's current orders; `fetch_orders` answers from here like an open API would."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_with: FetchError | None = None
    fetch_calls: int = 0

    def put(self, original_id: str, *, status: str = "paid", updated: int = 0, detail: str = "测试路***", paid: int = 13470, bad: bool = False) -> None:
        self.orders[original_id] = {"id": original_id, "status": status, "updated": updated, "detail": detail, "paid": paid, "bad": bad}


class FakeChannel:
    channel = "fake"
    ack_body = b'{"code":0,"msg":"success"}'
    ack_media_type = "application/json"

    def __init__(self, platform: FakePlatform) -> None:
        self.platform = platform

    @staticmethod
    def sign(body: bytes) -> str:
        return md5(SHOP.app_key.encode() + body + SHOP.app_secret.encode()).hexdigest()

    def authenticate(
        self, headers: Mapping[str, str], body: bytes, shops: ShopDirectory, query: Mapping[str, str] | None = None
    ) -> Authenticated:
        sign = headers.get("x-sign")
        if not sign:
            raise SignatureError(ErrorCode.SIGNATURE_MISSING, "x-sign header missing", "x-sign")
        if sign != self.sign(body):
            raise SignatureError(ErrorCode.SIGNATURE_INVALID, "x-sign does not match", "x-sign")
        return Authenticated(SHOP.app_key, SHOP.shop_id)

    def parse_push(self, body: bytes) -> list[PushMessage]:
        try:
            data = orjson.loads(body)
            return [
                PushMessage(SHOP.shop_id, str(m["id"]), "change", datetime.fromtimestamp(T0.timestamp() + 41 + m["updated"], UTC) if "updated" in m else None, m)
                for m in data["messages"]
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise EnvelopeError(ErrorCode.MALFORMED_ENVELOPE, f"not a fake push envelope: {exc}") from None

    async def fetch_orders(self, http: Any, shop: ShopConfig, original_ids: list[str]) -> dict[str, dict[str, Any]]:
        self.platform.fetch_calls += 1
        if self.platform.fail_with is not None:
            raise self.platform.fail_with
        return {oid: dict(self.platform.orders[oid]) for oid in original_ids if oid in self.platform.orders}

    async def pull_window(self, http: Any, shop: ShopConfig, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return list(self.platform.orders.values())

    def normalize(self, raw: dict[str, Any], shop: ShopConfig) -> NormalizedOrder:
        if raw.get("bad"):
            raise NormalizationError(ErrorCode.UNKNOWN_STATUS, "status 999 is not in the mapping", "status")
        order = make_order(raw["id"], channel="fake", status=Status(raw["status"]), updated=raw["updated"], detail=raw["detail"], paid=raw["paid"])
        return replace(order, shop_id=shop.shop_id, raw=raw)


def fake_registry(platform: FakePlatform) -> ChannelRegistry:
    channel = FakeChannel(platform)
    return ChannelRegistry(push={"fake": channel}, sources={"fake": channel}, pull=set(), file=None)


def push_body(*messages: dict[str, Any]) -> bytes:
    return orjson.dumps({"messages": list(messages)})


class StoredOrdersChannel(FakeChannel):
    """The fake push channel with whole canonical orders on the platform side: a test puts a
    NormalizedOrder in `orders`, pushes its id, and processing stores exactly that order."""

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.orders: dict[str, NormalizedOrder] = {}

    async def fetch_orders(self, http: Any, shop: Any, original_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {oid: {"id": oid} for oid in original_ids if oid in self.orders}

    async def pull_window(self, http: Any, shop: Any, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return []

    def normalize(self, raw: dict[str, Any], shop: Any) -> NormalizedOrder:
        return self.orders[raw["id"]]
