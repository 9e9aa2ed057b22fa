"""Stable error codes: they travel unchanged to the API as {code, message, field}."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # authentication of platform traffic
    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_INVALID = "signature_invalid"
    UNKNOWN_SHOP = "unknown_shop"
    UNKNOWN_CHANNEL = "unknown_channel"
    # payload problems (kept in quarantine)
    MALFORMED_ENVELOPE = "malformed_envelope"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    INVALID_AMOUNT = "invalid_amount"
    AMOUNTS_MISMATCH = "amounts_mismatch"
    UNKNOWN_STATUS = "unknown_status"
    INVALID_TIME = "invalid_time"
    FETCH_FAILED = "fetch_failed"
    # file import
    PRECISION_LOST = "precision_lost"
    UNKNOWN_MAPPING = "unknown_mapping"
    INVALID_FILE = "invalid_file"
    # API
    NOT_FOUND = "not_found"
    INVALID_REQUEST = "invalid_request"
    INVALID_CURSOR = "invalid_cursor"
    CONFLICT = "conflict"
    INTAKE_UNAVAILABLE = "intake_unavailable"
    DEFERRED = "deferred"  # non-core work switched off under load (docs/scaling.md): try again later
    BROKER_DEAD_LETTER = "broker_dead_letter"  # a broker message no worker could take after N deliveries
    RULE_INVALID = "rule_invalid"
    SKU_UNMAPPED = "sku_unmapped"
    ORDER_STATE = "order_state"  # the order's status does not allow this action
    INSUFFICIENT_STOCK = "insufficient_stock"
    TEMPLATE_INVALID = "template_invalid"  # a notification template that does not render (Jinja's error in the message)
    WAYBILL_UNAVAILABLE = "waybill_unavailable"  # the waybill service (菜鸟) could not give a waybill now: ask again
    # logins, roles and API keys (docs/security.md)
    UNAUTHENTICATED = "unauthenticated"  # no, an invalid or an expired token / API key
    FORBIDDEN = "forbidden"  # authenticated, but the role lacks the route's permission
    INVALID_CREDENTIALS = "invalid_credentials"  # wrong username or password (one answer for both)
    USER_DISABLED = "user_disabled"
    TOO_MANY_ATTEMPTS = "too_many_attempts"  # failed logins of one username from one client: wait (Retry-After)
    RATE_LIMITED = "rate_limited"  # the public tracking endpoint, per client address
    USERNAME_TAKEN = "username_taken"
    WEAK_PASSWORD = "weak_password"
    LAST_ADMIN = "last_admin"  # the last active admin cannot be disabled or demoted
    # long operations (services/jobs.py): what a failed job's error says when no other code fits
    JOB_ABANDONED = "job_abandoned"  # the process running it stopped (no heartbeat): start it again
    JOB_FAILED = "job_failed"  # an unexpected error ended it; the message names the error


class OrderHubError(Exception):
    """An error with a stable code, a human message and (optionally) the field at fault."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code.value, "message": self.message, "field": self.field}


class ThrottledError(OrderHubError):
    """Too many requests of one kind: try again after `retry_after_s` seconds."""

    def __init__(self, code: ErrorCode, message: str, retry_after_s: int, field: str | None = None) -> None:
        super().__init__(code, message, field)
        self.retry_after_s = max(1, int(retry_after_s))


class NormalizationError(OrderHubError):
    """A platform payload that cannot become a canonical order; it goes to quarantine."""


class SignatureError(OrderHubError):
    """Platform traffic whose signature is missing or wrong; answered 401, body not kept."""


class EnvelopeError(OrderHubError):
    """An authenticated body that is not the platform's push envelope; kept in quarantine."""


class FetchError(OrderHubError):
    """A platform API call that failed; retried with backoff before it is quarantined."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(ErrorCode.FETCH_FAILED, message)
        self.retryable = retryable
