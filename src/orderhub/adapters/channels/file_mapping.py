"""A saved, named column mapping for CSV/XLSX order files, and the error file import raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.status import PLATFORM_IMPLIED, Status

# Canonical fields a file column can feed, in the order the console shows them.
CANONICAL_FIELDS: tuple[str, ...] = (
    "order_no", "created_at", "paid_at", "updated_at", "status", "shop_id",
    "sku", "title", "qty", "unit_price", "line_paid", "gift",
    "discount", "shipping", "paid",
    "buyer_id", "receiver_name", "receiver_phone", "province", "city", "district", "address",
    "buyer_message", "seller_remark",
)  # fmt: skip
REQUIRED_FIELDS: frozenset[str] = frozenset({"order_no", "created_at", "qty", "unit_price"})
# Columns whose values are identifiers: a spreadsheet must never round them.
ID_FIELDS: frozenset[str] = frozenset({"order_no", "sku", "buyer_id", "receiver_phone"})
_KEYS = ("name", "channel", "columns", "status_values", "default_status", "time_format", "timezone")


class FileImportError(OrderHubError):
    """A file (or mapping) that cannot be imported; `errors` lists every bad row found.

    Each entry is {"row": spreadsheet row number (header = 1) or None, "column": header text,
    "code": ErrorCode value, "message": 中文 + English}.
    """

    def __init__(
        self, code: ErrorCode, message: str, field: str | None = None, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(code, message, field)
        self.errors: list[dict[str, Any]] = errors or []

    @classmethod
    def from_rows(cls, code: ErrorCode, errors: list[dict[str, Any]]) -> FileImportError:
        shown = "\n".join(e["message"] for e in errors[:20])
        more = f"\n… 另有 {len(errors) - 20} 处 / {len(errors) - 20} more" if len(errors) > 20 else ""
        summary = f"文件有 {len(errors)} 处错误 / {len(errors)} problem(s) in the file:\n{shown}{more}"
        return cls(code, summary, errors[0].get("column"), errors)


def _invalid(message: str, field: str) -> FileImportError:
    return FileImportError(ErrorCode.INVALID_FIELD, message, field)


@dataclass(frozen=True)
class ColumnMapping:
    """Which header of the file feeds which canonical field; saved by name as JSON/YAML."""

    name: str
    channel: str
    columns: dict[str, str]  # canonical field -> header text in the file
    status_values: dict[str, str] = field(default_factory=dict)  # file value -> canonical status
    default_status: str = Status.PAID.value
    time_format: str | None = None  # strptime format, e.g. "%Y/%m/%d %H:%M"; else ISO and common forms
    timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        # Own copies, so a caller mutating its dict cannot change a validated mapping.
        object.__setattr__(self, "columns", {str(k): str(v).strip() for k, v in dict(self.columns).items()})
        object.__setattr__(self, "status_values", {str(k).strip(): str(v) for k, v in dict(self.status_values).items()})
        self._validate()

    def _validate(self) -> None:
        if not self.name or not self.name.strip():
            raise _invalid("映射名称不能为空 / mapping name is empty", "name")
        if not self.channel or not self.channel.strip() or ":" in self.channel:
            raise _invalid(f"渠道代码无效 / invalid channel code {self.channel!r}", "channel")
        unknown = sorted(set(self.columns) - set(CANONICAL_FIELDS))
        if unknown:
            raise _invalid(f"未知字段 / unknown canonical field(s): {', '.join(unknown)}", f"columns.{unknown[0]}")
        missing = sorted(REQUIRED_FIELDS - set(self.columns))
        if missing:
            raise _invalid(f"缺少必填字段映射 / required field(s) not mapped: {', '.join(missing)}", f"columns.{missing[0]}")
        for canonical, header in self.columns.items():
            if not header:
                raise _invalid(f"字段 {canonical} 的列名为空 / empty header for {canonical}", f"columns.{canonical}")
        allowed = {status.value for status in PLATFORM_IMPLIED}
        for value, status in self.status_values.items():
            if status not in allowed:
                raise _invalid(
                    f"状态值 {value!r} 映射到未知状态 {status!r} / {value!r} maps to unknown status {status!r} "
                    f"(allowed: {', '.join(sorted(allowed))})",
                    "status_values",
                )
        if self.default_status not in allowed:
            raise _invalid(f"默认状态无效 / invalid default_status {self.default_status!r}", "default_status")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise _invalid(f"时区无效 / unknown timezone {self.timezone!r}", "timezone") from None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def id_headers(self) -> set[str]:
        """Header texts of the identifier columns (never rounded, never scientific notation)."""
        return {header for canonical, header in self.columns.items() if canonical in ID_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channel": self.channel,
            "columns": dict(self.columns),
            "status_values": dict(self.status_values),
            "default_status": self.default_status,
            "time_format": self.time_format,
            "timezone": self.timezone,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnMapping:
        if not isinstance(data, Mapping):
            raise _invalid("映射必须是对象 / a mapping must be an object", "mapping")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise _invalid(f"未知键 / unknown key(s): {', '.join(unknown)}", unknown[0])
        for key in ("name", "channel", "columns"):
            if key not in data:
                raise _invalid(f"缺少 {key} / {key} is missing", key)
        for key in ("columns", "status_values"):
            if key in data and data[key] is not None and not isinstance(data[key], Mapping):
                raise _invalid(f"{key} 必须是对象 / {key} must be an object", key)
        return cls(
            name=str(data["name"]),
            channel=str(data["channel"]),
            columns=dict(data["columns"]),
            status_values=dict(data.get("status_values") or {}),
            default_status=str(data.get("default_status") or Status.PAID.value),
            time_format=data.get("time_format") or None,
            timezone=str(data.get("timezone") or "Asia/Shanghai"),
        )
