"""Every error leaves the API as {code, message, field} with a fitting HTTP status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from orderhub.entrypoints.api.responses import JsonResponse

from orderhub.domain.errors import ErrorCode, OrderHubError, ThrottledError

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.SIGNATURE_MISSING: 401,
    ErrorCode.SIGNATURE_INVALID: 401,
    ErrorCode.UNKNOWN_SHOP: 401,
    ErrorCode.UNKNOWN_CHANNEL: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.ORDER_STATE: 409,
    ErrorCode.INSUFFICIENT_STOCK: 409,
    ErrorCode.RULE_INVALID: 422,
    ErrorCode.TEMPLATE_INVALID: 422,
    ErrorCode.INTAKE_UNAVAILABLE: 503,
    ErrorCode.WAYBILL_UNAVAILABLE: 503,
    ErrorCode.DEFERRED: 503,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.USER_DISABLED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.USERNAME_TAKEN: 409,
    ErrorCode.LAST_ADMIN: 409,
    ErrorCode.WEAK_PASSWORD: 422,
    ErrorCode.TOO_MANY_ATTEMPTS: 429,
    ErrorCode.RATE_LIMITED: 429,
}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, str | None]:
    return {"code": code, "message": message, "field": field}


def install(app: FastAPI) -> None:
    @app.exception_handler(OrderHubError)
    async def _orderhub_error(_request: Request, exc: OrderHubError) -> JsonResponse:
        status = STATUS_BY_CODE.get(exc.code, 400)
        headers = {"Retry-After": "5"} if status == 503 else None
        if isinstance(exc, ThrottledError):
            headers = {"Retry-After": str(exc.retry_after_s)}
        elif exc.code is ErrorCode.UNAUTHENTICATED:
            headers = {"WWW-Authenticate": "Bearer"}
        body: dict[str, object] = dict(exc.as_dict())
        if getattr(exc, "errors", None):
            body["errors"] = exc.errors  # every bad row of a rejected file, not only the first
        return JsonResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JsonResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return JsonResponse(error_body(ErrorCode.INVALID_REQUEST.value, first.get("msg", "invalid request"), field), status_code=422)
