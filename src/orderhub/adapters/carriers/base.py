"""What both carrier adapters share: local carrier times, header lookup, and the push refusal errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from orderhub.domain.errors import ErrorCode, EnvelopeError

SHANGHAI = ZoneInfo("Asia/Shanghai")
LOCAL_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # both carriers send Beijing time without a zone


def parse_local_time(text: object, field: str) -> datetime:
    """ "2025-03-18 18:20:11" (Asia/Shanghai) -> an aware UTC datetime."""
    try:
        return datetime.strptime(str(text).strip(), LOCAL_TIME_FORMAT).replace(tzinfo=SHANGHAI).astimezone(UTC)
    except ValueError:
        raise EnvelopeError(ErrorCode.INVALID_TIME, f"{field} is not 'yyyy-MM-dd HH:mm:ss': {text!r}", field) from None


def format_local_time(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime(LOCAL_TIME_FORMAT)


def header(headers: Mapping[str, str], name: str) -> str:
    """A header by name, any case (Starlette's Headers are case-insensitive; a plain dict is not)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value or ""


def clip(text: object, limit: int) -> str:
    """Carrier text cut to the column it goes in (SQLite does not enforce VARCHAR lengths; PostgreSQL does)."""
    value = "" if text is None else str(text).strip()
    return value[:limit]
