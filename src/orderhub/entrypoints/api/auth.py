"""Authentication and authorization of every API request, in two steps:

1. `AuthenticationMiddleware` (before routing and before any body is read) finds who is calling
   from `Authorization: Bearer <token | ohk_…>` or `X-API-Key: ohk_…`, and answers 401 at once to an
   anonymous request that cannot be for a PUBLIC route — an anonymous upload is never parsed.
2. `authorize`, a dependency of every FastAPI route (`FastAPI(dependencies=[AUTHORIZE])`), reads the
   route FastAPI actually matched and checks its line in access_policy.POLICY: 401 without a
   principal, 403 `forbidden` without the permission. Only this step grants access; the middleware
   can only refuse. Routes are never checked by hand in their bodies.

`install` adds both to the app and refuses to start it while a route has no policy line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from orderhub.domain.access import Actor, Permission, Principal
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.domain.pii import redact
from orderhub.entrypoints.api import access_policy
from orderhub.entrypoints.api.access_policy import API_PREFIX, AUTHENTICATED, PUBLIC
from orderhub.entrypoints.api.responses import JsonResponse
from orderhub.services.auth import API_KEY_PREFIX, Auth

PRINCIPAL = "orderhub.principal"  # scope keys: who is calling, and the credential they presented
CREDENTIAL = "orderhub.credential"
UNAUTHENTICATED_MESSAGE = "请先登录 login required: send Authorization: Bearer <token> (POST /api/v1/auth/login) or an API key"


def unauthenticated() -> OrderHubError:
    return OrderHubError(ErrorCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


async def authorize(request: Request) -> None:
    """The one authorization check, run for every FastAPI route before its body."""
    if not request.url.path.startswith(API_PREFIX):
        return  # the console's static pages (served outside /api/) hold no data
    route = request.scope.get("route")
    rule = access_policy.requirement(request.method, getattr(route, "path", ""))
    if rule is PUBLIC:
        return
    principal: Principal | None = request.scope.get(PRINCIPAL)
    if principal is None:
        raise unauthenticated()
    if rule is AUTHENTICATED:
        return
    if not isinstance(rule, Permission) or not principal.may(rule):  # no rule at all: fail closed
        raise OrderHubError(ErrorCode.FORBIDDEN, f"没有权限 your role ({principal.role.value}) may not do this"
                            + (f": it needs {rule.value}" if isinstance(rule, Permission) else ""))


AUTHORIZE = Depends(authorize)


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def current_principal(request: Request) -> Principal:
    principal = request.scope.get(PRINCIPAL)
    if principal is None:  # only reachable on a route declared PUBLIC that asks for a principal
        raise unauthenticated()
    return principal


def current_actor(request: Request) -> Actor:
    """Who acts, for the audit log and the order event log: the logged-in user (or API key)."""
    return current_principal(request).actor(client_ip(request))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
CurrentActor = Annotated[Actor, Depends(current_actor)]


def acting(request: Request, on_behalf_of: str | None = None) -> Actor:
    """The actor, naming `on_behalf_of` (a body's old `actor` field) beside an API key; a user's own
    login always wins over what a body says."""
    return current_principal(request).actor(client_ip(request), on_behalf_of)


class AuthenticationMiddleware:
    def __init__(self, app: ASGIApp, *, auth: Auth, fastapi_app: FastAPI) -> None:
        self.app = app
        self.auth = auth
        check(fastapi_app)  # the stack is built on the first event (lifespan startup): routes added late are caught too
        self.public = [(method, compile_path(path)[0]) for (method, path), rule in access_policy.POLICY.items() if rule is PUBLIC]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        credential = _credential(scope)
        principal = await asyncio.to_thread(self.auth.authenticate, credential) if credential else None
        scope[PRINCIPAL] = principal
        scope[CREDENTIAL] = credential if principal is not None else None
        if principal is None and not self._may_be_public(scope):
            response = JsonResponse({"code": ErrorCode.UNAUTHENTICATED.value, "message": UNAUTHENTICATED_MESSAGE, "field": None},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _may_be_public(self, scope: Scope) -> bool:
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        path = scope["path"]
        return any(m == method and regex.match(path) for m, regex in self.public)


def _credential(scope: Scope) -> str | None:
    headers = {k.lower(): v for k, v in scope.get("headers", []) if k.lower() in (b"authorization", b"x-api-key")}
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return key if key.startswith(API_KEY_PREFIX) else None


def _routes(app: FastAPI) -> Iterator[tuple[str, str, str, bool]]:
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path or ""
        authorized = isinstance(route, APIRoute) and any(d.call is authorize for d in context.dependant.dependencies)
        for method in sorted(context.methods or ()):
            yield method, path, getattr(route, "path", path), authorized


def check(app: FastAPI) -> None:
    """Raise access_policy.PolicyError when a route under /api/ has no policy line, or cannot be protected."""
    access_policy.check_routes(_routes(app))


def install(app: FastAPI, auth: Auth) -> None:
    """Authentication on every request; the app is checked now and again when it starts."""
    app.state.auth = auth
    app.add_middleware(AuthenticationMiddleware, auth=auth, fastapi_app=app)
    check(app)
    _describe(app)


def _describe(app: FastAPI) -> None:
    """The OpenAPI description says how to authenticate and which permission each operation needs."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update({
            "bearer": {"type": "http", "scheme": "bearer", "description": "a token from POST /api/v1/auth/login, or an API key ohk_…"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "an API key ohk_…"},
        })
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                rule = access_policy.requirement(method.upper(), path)
                if rule is None or rule is PUBLIC:
                    continue
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                needs = "any logged-in user or API key" if rule is AUTHENTICATED else f"permission `{rule.value}`"
                operation["description"] = f"{operation.get('description', '')}\n\nAccess: {needs}.".strip()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def pii_view(request: Request, value: object) -> object:
    """`value` as the caller may see it: unchanged with `pii:read`, otherwise any plaintext buyer PII masked."""
    principal: Principal | None = request.scope.get(PRINCIPAL)
    return value if principal is not None and principal.may(Permission.PII_READ) else redact(value)


def pii_view_orders(request: Request, items: list[dict]) -> list[dict]:
    """Orders store masks only (an address a person types is masked before it is stored, its street sealed);
    the buyer's address and customer block are still redacted for callers without `pii:read`, in depth."""
    principal: Principal | None = request.scope.get(PRINCIPAL)
    if principal is not None and principal.may(Permission.PII_READ):
        return items
    return [{**o, "address": redact(o.get("address")), "customer": redact(o.get("customer"))} for o in items]
