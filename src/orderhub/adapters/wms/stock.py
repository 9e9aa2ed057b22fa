"""Stock on hand from the WMS: a signed HTTP/JSON API (docs/wms.md) or a CSV/XLSX stock file.

Both give absolute counts, (sku, warehouse, on_hand), which the stock-sync service writes over
OrderHub's on_hand in one transaction. A file with any bad row is refused whole, naming every
bad row, so a half-read file can never zero half the catalogue.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
import orjson
from tenacity.wait import wait_base

from orderhub.adapters.channels.file_mapping import FileImportError
from orderhub.adapters.channels.file_table import read_grid
from orderhub.adapters.channels.http_common import backoff, raise_for_http_status, retrying
from orderhub.domain.errors import ErrorCode, FetchError

StockCount = tuple[str, str, int]  # (merchant SKU, warehouse code, on hand)


class WmsStockSource(Protocol):
    async def counts(self, http: httpx.AsyncClient) -> list[StockCount]:
        """Every (sku, warehouse, on_hand) the WMS reports now. Raises FetchError / FileImportError."""
        ...


# -- HTTP ---------------------------------------------------------------------------------------


def wms_signature(app_secret: str, timestamp: str, payload: bytes) -> str:
    """X-WMS-Signature: hex HMAC-SHA256(app_secret, timestamp + "\\n" + payload), payload being
    the raw query string of a GET or the raw body of a POST, byte for byte as sent."""
    return hmac.new(app_secret.encode(), timestamp.encode() + b"\n" + payload, hashlib.sha256).hexdigest()


class HttpWmsStock:
    """`GET {base}/stock?warehouse=…&page=…&page_size=…`, every page, for each configured warehouse
    (or for all of them in one listing when none is configured)."""

    def __init__(
        self,
        base_url: str,
        app_key: str,
        app_secret: str,
        warehouses: Sequence[str] = (),
        *,
        page_size: int = 200,
        clock: Callable[[], float] = time.time,
        attempts: int = 3,
        retry_wait: wait_base | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._app_key, self._app_secret = app_key, app_secret
        self._warehouses = list(warehouses)
        self._page_size = page_size
        self._clock = clock
        self._attempts = attempts
        self._wait = retry_wait if retry_wait is not None else backoff()

    async def counts(self, http: httpx.AsyncClient) -> list[StockCount]:
        found: dict[tuple[str, str], int] = {}
        for warehouse in self._warehouses or [None]:
            page = 1
            while True:
                data = await retrying(self._attempts, self._wait)(self._page, http, warehouse, page)
                for sku, wh, on_hand in _items(data):
                    found[(sku, wh)] = on_hand
                if data.get("has_more") is not True:
                    break
                page += 1
        return [(sku, wh, on_hand) for (sku, wh), on_hand in found.items()]

    async def _page(self, http: httpx.AsyncClient, warehouse: str | None, page: int) -> dict[str, Any]:
        query = {"page": str(page), "page_size": str(self._page_size)}
        if warehouse is not None:
            query["warehouse"] = warehouse
        url = httpx.URL(f"{self._base}/stock?{urlencode(query)}")
        timestamp = str(int(self._clock()))
        headers = {
            "X-WMS-App-Key": self._app_key,
            "X-WMS-Timestamp": timestamp,
            "X-WMS-Signature": wms_signature(self._app_secret, timestamp, url.query),
        }
        try:
            response = await http.get(url, headers=headers)
        except httpx.TransportError as exc:
            raise FetchError(f"wms GET /stock: {type(exc).__name__}: {exc}", retryable=True) from exc
        if response.status_code == 401:
            raise FetchError(f"wms GET /stock: refused ({_message(response)}); check the WMS app key/secret and clock", retryable=False)
        raise_for_http_status("wms GET /stock", response)
        try:
            reply = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise FetchError("wms GET /stock: reply is not JSON", retryable=True) from None
        if not isinstance(reply, dict) or reply.get("code") != 0 or not isinstance(reply.get("data"), dict):
            raise FetchError(f"wms GET /stock: {_message(response)}", retryable=False)
        return reply["data"]


def _message(response: httpx.Response) -> str:
    try:
        reply = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return f"HTTP {response.status_code}"
    if isinstance(reply, dict):
        return f"HTTP {response.status_code} code {reply.get('code')} {reply.get('message') or ''}".strip()
    return f"HTTP {response.status_code}"


def _items(data: dict[str, Any]) -> list[StockCount]:
    items = data.get("items")
    if not isinstance(items, list):
        raise FetchError("wms GET /stock: data.items is not a list", retryable=False)
    out = []
    for index, item in enumerate(items):
        sku = item.get("sku") if isinstance(item, dict) else None
        warehouse = item.get("warehouse") if isinstance(item, dict) else None
        on_hand = item.get("on_hand") if isinstance(item, dict) else None
        if not isinstance(sku, str) or not sku or not isinstance(warehouse, str) or not warehouse \
                or isinstance(on_hand, bool) or not isinstance(on_hand, int) or on_hand < 0:
            raise FetchError(f"wms GET /stock: items[{index}] is not {{sku, warehouse, on_hand >= 0}}: {item!r}", retryable=False)
        out.append((sku, warehouse, on_hand))
    return out


# -- file ---------------------------------------------------------------------------------------

# Accepted headers per column (English ones compared case-insensitively).
COLUMNS = {
    "sku": ("sku", "商家编码", "sku编码"),
    "warehouse": ("warehouse", "仓库", "仓库编码"),
    "on_hand": ("on_hand", "库存", "在库数量", "实物库存"),
}


class FileWmsStock:
    """A stock file exported by the WMS (or typed in a spreadsheet): CSV in UTF-8 or GBK, or XLSX."""

    def __init__(self, data: bytes, filename: str) -> None:
        self._data, self._filename = data, filename

    @classmethod
    def from_path(cls, path: str | Path) -> FileWmsStock:
        path = Path(path)
        return cls(path.read_bytes(), path.name)

    async def counts(self, http: httpx.AsyncClient | None = None) -> list[StockCount]:
        return read_stock_file(self._data, self._filename)


def read_stock_file(data: bytes, filename: str) -> list[StockCount]:
    """Every row of the file as (sku, warehouse, on_hand); FileImportError (INVALID_FILE) naming
    each bad row (spreadsheet numbering, header = row 1) if any row is bad."""
    grid = read_grid(data, filename)
    while grid and all(_blank(cell) for cell in grid[-1]):
        grid.pop()
    if not grid:
        raise FileImportError(ErrorCode.INVALID_FILE, "文件是空的 / the file is empty")
    position = _columns(grid[0])
    errors: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], int] = {}
    counts: list[StockCount] = []
    for index, cells in enumerate(grid[1:]):
        row = index + 2
        if all(_blank(cell) for cell in cells):
            continue
        values = {name: _text(cells[p] if p < len(cells) else None) for name, p in position.items()}
        problems = [f"{name} 为空 / {name} is empty" for name in ("sku", "warehouse") if not values[name]]
        on_hand = _count(values["on_hand"])
        if on_hand is None:
            problems.append(f"库存须为非负整数 / on_hand must be a whole number >= 0, not {values['on_hand']!r}")
        key = (values["sku"], values["warehouse"])
        if not problems and key in seen:
            problems.append(f"与第{seen[key]}行重复 / repeats row {seen[key]} ({key[0]} @ {key[1]})")
        if problems:
            errors.append({"row": row, "column": None, "code": ErrorCode.INVALID_FILE.value,
                           "message": f"第{row}行 / row {row}: " + "; ".join(problems)})
            continue
        seen[key] = row
        counts.append((key[0], key[1], on_hand))  # type: ignore[arg-type]
    if errors:
        raise FileImportError.from_rows(ErrorCode.INVALID_FILE, errors)
    return counts


def _columns(header: list[Any]) -> dict[str, int]:
    names = [_text(cell).lstrip("\ufeff").lower() for cell in header]
    position: dict[str, int] = {}
    for column, aliases in COLUMNS.items():
        hits = [i for i, name in enumerate(names) if name in aliases]
        if len(hits) != 1:
            problem = "缺少列 / lacks the column" if not hits else "列重复 / repeats the column"
            raise FileImportError(
                ErrorCode.INVALID_FILE,
                f"第1行{problem} {column} ({' / '.join(aliases)}); 文件中的列 columns found: {', '.join(n for n in names if n)}",
                column, [{"row": 1, "column": column, "code": ErrorCode.INVALID_FILE.value, "message": f"第1行 / row 1: {problem} {column}"}],
            )
        position[column] = hits[0]
    return position


def _count(text: str) -> int | None:
    """'12', '12.0' (what a spreadsheet writes for 12) -> 12; anything else (12.5, -1, 1e3, '') -> None."""
    if not text or "e" in text.lower():
        return None
    try:
        number = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    if not number.is_finite() or number < 0 or number != number.to_integral_value():
        return None
    return int(number)


def _blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _text(cell: Any) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell).strip()
