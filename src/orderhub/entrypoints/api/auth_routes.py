"""API routes of access: log in and out, who am I, users and API keys (admin), the audit log; and
`install`, which puts authentication on the whole app (entrypoints/api/auth.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field

from orderhub.adapters.db import audit_log_repo
from orderhub.bootstrap import Runtime
from orderhub.entrypoints.api import auth, schemas
from orderhub.entrypoints.api.auth import CREDENTIAL, CurrentActor, CurrentPrincipal, client_ip
from orderhub.entrypoints.api.buyer_routes import build_buyer_router
from orderhub.entrypoints.api.responses import JsonResponse
from orderhub.services import users
from orderhub.services.auth import Auth

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.Error}, 403: {"model": schemas.Error}, 404: {"model": schemas.Error}, 409: {"model": schemas.Error},
    422: {"model": schemas.Error},
}


class Me(BaseModel):
    id: int
    username: str = Field(description="a user's login name; an API key's name")
    display_name: str | None
    role: str = Field(description="admin | ops | cs | warehouse | finance | viewer")
    role_label: str = Field(description="the role in Chinese, e.g. 客服")
    permissions: list[str] = Field(description="what the role may do, e.g. orders:read (the console hides menus by these)")
    kind: str = Field(description="user | api_key")


class Login(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class LoginResult(BaseModel):
    token: str = Field(description="send as Authorization: Bearer <token>")
    token_type: str = "bearer"
    expires_at: str
    user: Me


class User(BaseModel):
    id: int
    username: str
    display_name: str | None
    role: str
    active: bool
    created_at: str
    last_login_at: str | None


class UserPage(BaseModel):
    items: list[User]


class NewUser(BaseModel):
    username: str = Field(description="2-64 of a-z 0-9 . _ @ -; stored lower-case")
    password: str = Field(description="at least 8 characters (422 `weak_password`, field password)")
    role: str
    display_name: str | None = None


class UserChange(BaseModel):
    role: str | None = None
    active: bool | None = None
    password: str | None = Field(None, description="a new password ends the user's sessions")
    display_name: str | None = None


class ApiKey(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    role: str
    created_by: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None
    revoked: bool


class NewApiKey(BaseModel):
    name: str = Field(description="what the integration is, e.g. erp-sync")
    role: str


class CreatedApiKey(ApiKey):
    key: str = Field(description="ohk_…: shown in this answer only, stored as a hash")


class ApiKeyPage(BaseModel):
    items: list[ApiKey]


class AuditEntry(BaseModel):
    id: int
    at: str
    actor: str = Field(description="username, key:<name>[/<on behalf of>], cli:<os user> or system")
    actor_kind: str = Field(description="user | api_key | cli | system | anonymous")
    action: str = Field(description="e.g. login.failed, user.create, pii.reveal, order.release, rule.publish, stock.adjust")
    entity: str
    entity_id: str | None
    before: Any = None
    after: Any = None
    ip: str | None = None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None


def build_auth_router(runtime: Runtime, service: Auth) -> APIRouter:
    router = APIRouter(prefix="/api/v1", responses=_ERRORS)
    engine = runtime.engine

    @router.post("/auth/login", tags=["access"], response_model=LoginResult, summary="Log in: a bearer token for username and password",
                 description="401 `invalid_credentials` for a wrong username or password alike, 401 `user_disabled`; after "
                             f"{service.max_failures} failures of one username from one address within "
                             f"{int(service.window.total_seconds())} s, 429 `too_many_attempts` with Retry-After.")
    async def login(body: Login, request: Request) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(service.login, body.username, body.password, client_ip(request)))

    @router.post("/auth/logout", tags=["access"], status_code=204, summary="Log out: the token stops working on every node")
    async def logout(request: Request, actor: CurrentActor) -> Response:
        await asyncio.to_thread(service.logout, request.scope.get(CREDENTIAL) or "", actor)
        return Response(status_code=204)

    @router.get("/me", tags=["access"], response_model=Me, summary="Who is calling, with the role's permissions")
    async def me(principal: CurrentPrincipal) -> JsonResponse:
        return JsonResponse(principal.me())

    @router.get("/users", tags=["access"], response_model=UserPage, summary="Every user (admin)")
    async def list_users() -> JsonResponse:
        return JsonResponse({"items": await asyncio.to_thread(users.list_users, engine)})

    @router.post("/users", tags=["access"], status_code=201, response_model=User, summary="Create a user (admin)",
                 description="409 `username_taken` (field username); 422 `weak_password` (field password) under 8 characters.")
    async def create_user(body: NewUser, actor: CurrentActor) -> JsonResponse:
        created = await asyncio.to_thread(
            lambda: users.create_user(engine, actor, username=body.username, password=body.password, role=body.role, display_name=body.display_name))
        return JsonResponse(created, status_code=201)

    @router.patch("/users/{user_id}", tags=["access"], response_model=User, summary="Change a user's role, status, password or name (admin)",
                  description="409 `last_admin` when it would leave no active admin.")
    async def update_user(user_id: int, body: UserChange, actor: CurrentActor) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(
            lambda: users.update_user(engine, actor, user_id, role=body.role, active=body.active, password=body.password,
                                      display_name=body.display_name)))

    @router.get("/api-keys", tags=["access"], response_model=ApiKeyPage, summary="API keys for integrations (admin)")
    async def list_keys() -> JsonResponse:
        return JsonResponse({"items": await asyncio.to_thread(users.list_api_keys, engine)})

    @router.post("/api-keys", tags=["access"], status_code=201, response_model=CreatedApiKey, summary="Create an API key (admin)",
                 description="The key (`ohk_…`) is in this answer only. Send it as `Authorization: Bearer ohk_…` or `X-API-Key: ohk_…`.")
    async def create_key(body: NewApiKey, actor: CurrentActor) -> JsonResponse:
        return JsonResponse(await asyncio.to_thread(lambda: users.create_api_key(engine, actor, name=body.name, role=body.role)), status_code=201)

    @router.delete("/api-keys/{key_id}", tags=["access"], status_code=204, summary="Revoke an API key (admin); it stops working at once")
    async def revoke_key(key_id: int, actor: CurrentActor) -> Response:
        await asyncio.to_thread(users.revoke_api_key, engine, actor, key_id)
        return Response(status_code=204)

    @router.get("/audit-log", tags=["access"], response_model=AuditPage, summary="Who changed what: the append-only audit log, newest first")
    async def audit_entries(
        entity: Annotated[str | None, Query(description="e.g. order, rule_set, user, api_key, stock, template, outbox")] = None,
        entity_id: str | None = None,
        actor: Annotated[str | None, Query(description="a username, key:<name>, …")] = None,
        action: Annotated[str | None, Query(description="e.g. login.failed, pii.reveal")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    ) -> JsonResponse:
        def run() -> tuple[list[dict[str, Any]], str | None]:
            with engine.connect().execution_options(readonly=True) as conn:
                return audit_log_repo.list_entries(conn, entity=entity, entity_id=entity_id, actor=actor, action=action, limit=limit, cursor=cursor)

        items, next_cursor = await asyncio.to_thread(run)
        return JsonResponse({"items": items, "next_cursor": next_cursor})

    return router


def install(app: FastAPI, runtime: Runtime) -> None:
    """Logins, users, keys, the audit log and the buyer's routes, then authentication on every
    request. Call after every other router is included: the app is checked here (and at startup)."""
    a = runtime.settings.auth
    service = Auth(runtime.engine, token_ttl=timedelta(hours=a.token_ttl_h), max_failures=a.login_max_failures,
                   window=timedelta(seconds=a.login_window_s))
    app.include_router(build_auth_router(runtime, service))
    app.include_router(build_buyer_router(runtime))
    auth.install(app, service)
