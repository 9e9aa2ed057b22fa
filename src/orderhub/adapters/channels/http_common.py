"""What the channels' open-API clients share: header lookup, retries, bounded fan-out, token caching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential
from tenacity.wait import wait_base

from orderhub.adapters.channels.base import ShopConfig
from orderhub.domain.errors import FetchError

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup for plain dicts and Starlette Headers alike."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def raise_for_http_status(what: str, response: httpx.Response) -> None:
    """429 and 5xx are worth retrying; any other 4xx means our request is wrong: retrying won't help."""
    status = response.status_code
    if status == 429 or status >= 500:
        raise FetchError(f"{what}: HTTP {status}", retryable=True)
    if status >= 400:
        raise FetchError(f"{what}: HTTP {status}", retryable=False)


# -- retries ------------------------------------------------------------------------------------


def backoff(wait_min: float = 0.05, wait_max: float = 0.5) -> wait_base:
    """Waits from `wait_min` seconds doubling up to `wait_max`: short, as the caller retries later too."""
    return wait_exponential(multiplier=wait_min, min=wait_min, max=wait_max)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, FetchError) and exc.retryable


def retrying(attempts: int, wait: wait_base) -> AsyncRetrying:
    """Up to `attempts` tries of a call, again only after a retryable FetchError; the last failure is re-raised.

    Use as `await retrying(attempts, wait)(fn, *args)`.
    """
    return AsyncRetrying(
        stop=stop_after_attempt(attempts), wait=wait, retry=retry_if_exception(_retryable), reraise=True
    )


# -- fan-out ------------------------------------------------------------------------------------


async def gather_bounded(
    ids: Iterable[K],
    fetch_one: Callable[[K], Awaitable[T | None]],
    concurrency: int,
    *,
    wait_for_all: bool = True,
) -> dict[K, T]:
    """`fetch_one` for each distinct id, at most `concurrency` in flight; the ids it found (None: not found).

    With `wait_for_all`, every fetch ends before a failure is raised, and a permanent FetchError is
    raised in preference to a transient one (it says more about what to fix). Without it, the first
    failure is raised as soon as it happens and the other fetches are left running.
    """
    gate = asyncio.Semaphore(concurrency)

    async def gated(one_id: K) -> tuple[K, T | None]:
        async with gate:
            return one_id, await fetch_one(one_id)

    calls = (gated(one_id) for one_id in dict.fromkeys(ids))
    if not wait_for_all:
        found = await asyncio.gather(*calls)
        return {one_id: value for one_id, value in found if value is not None}
    results = await asyncio.gather(*calls, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        permanent = [f for f in failures if isinstance(f, FetchError) and not f.retryable]
        raise (permanent or failures)[0]
    return {one_id: value for one_id, value in results if value is not None}  # type: ignore[misc]


# -- access tokens ------------------------------------------------------------------------------


class BadToken(FetchError):
    """The platform refused the access token; TokenCache.authorised refreshes it and tries once more."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(slots=True)
class CachedToken:
    value: str
    refresh_at: float  # clock seconds after which a new token is issued


class TokenCache:
    """Access tokens by (app_key, shop_id), one instance per channel object.

    A shop's pre-issued token (`extra["access_token"]`) is used until the platform refuses it;
    from then on, and for shops without one, `issue` is called for a token that is reused until
    its refresh time. Concurrent callers share one `issue` call per shop.
    """

    def __init__(
        self,
        issue: Callable[[httpx.AsyncClient, ShopConfig], Awaitable[CachedToken]],
        clock: Callable[[], float],
    ) -> None:
        self._issue = issue
        self._clock = clock
        self._tokens: dict[tuple[str, str], CachedToken] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._refused_preissued: set[tuple[str, str]] = set()

    async def authorised(self, http: httpx.AsyncClient, shop: ShopConfig, call: Callable[[str], Awaitable[T]]) -> T:
        """`call(token)`; if it raises BadToken, the token is dropped and the call made once more with a new one."""
        token = await self.get(http, shop)
        try:
            return await call(token)
        except BadToken:
            self.drop(shop, token)
            token = await self.get(http, shop)
            return await call(token)

    async def get(self, http: httpx.AsyncClient, shop: ShopConfig) -> str:
        key = (shop.app_key, shop.shop_id)
        preissued = shop.extra.get("access_token")
        if preissued and key not in self._refused_preissued:
            return str(preissued)
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._tokens.get(key)
            if cached is not None and self._clock() < cached.refresh_at:
                return cached.value
            issued = await self._issue(http, shop)
            self._tokens[key] = issued
            return issued.value

    def drop(self, shop: ShopConfig, refused: str) -> None:
        key = (shop.app_key, shop.shop_id)
        # Concurrent calls may all see the same refusal; only the first drops the token, so a
        # fresh one fetched meanwhile is kept.
        cached = self._tokens.get(key)
        if cached is not None and cached.value == refused:
            del self._tokens[key]
        if refused == shop.extra.get("access_token"):
            self._refused_preissued.add(key)


class TokenApiClient:
    """What every token-authorised platform API client shares: an injectable clock, bounded
    concurrency for per-order fetches, retries with backoff, and the per-shop token cache fed
    by the platform's own way of issuing a token (`issue_token`)."""

    def __init__(
        self,
        issue_token: Callable[[httpx.AsyncClient, ShopConfig], Awaitable[CachedToken]],
        *,
        clock: Callable[[], float] = time.time,
        concurrency: int = 16,
        attempts: int = 3,
        retry_wait: wait_base | None = None,
    ) -> None:
        self._clock = clock
        self._concurrency = concurrency
        self._attempts = attempts
        self._retry_wait = retry_wait if retry_wait is not None else backoff()
        self._tokens = TokenCache(issue_token, clock)

    async def _retried(self, call: Callable[..., Awaitable[T]], *args: object) -> T:
        """`call(*args)`, retried on retryable FetchErrors with this client's backoff."""
        return await retrying(self._attempts, self._retry_wait)(call, *args)
