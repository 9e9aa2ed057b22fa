"""Credentials for tests that call the API: an API key or a user's session token (both fast: no argon2), and a secured app."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI

from orderhub.adapters.db import auth_repo
from orderhub.domain.access import Actor, Role
from orderhub.entrypoints.api import auth, errors
from orderhub.entrypoints.api.auth import AUTHORIZE
from orderhub.services import users
from orderhub.services.auth import Auth

TESTS = Actor("tests", "system")


def api_key_headers(engine: sa.Engine, role: Role | str = Role.ADMIN, name: str = "tests") -> dict[str, str]:
    """Authorization headers of a new API key with `role` (admin: everything)."""
    key = users.create_api_key(engine, TESTS, name=name, role=Role(role).value)["key"]
    return {"Authorization": f"Bearer {key}"}


def user_headers(engine: sa.Engine, username: str, role: Role | str) -> dict[str, str]:
    """A user with `role` and a session token for them. The user has no usable password (no argon2
    work per fixture); tests of logging in create users through services.users."""
    with engine.begin() as conn:
        user_id = auth_repo.insert_user(conn, username=username, display_name=None, password_hash="!no-password", role=Role(role).value,
                                        now=datetime.now(UTC))
    return {"Authorization": f"Bearer {Auth(engine).issue_token(user_id)}"}


def secured_app(engine: sa.Engine, *routers: APIRouter) -> FastAPI:
    """A FastAPI app of just `routers`, with the real authentication and access policy in front."""
    app = FastAPI(dependencies=[AUTHORIZE])
    errors.install(app)
    for router in routers:
        app.include_router(router)
    auth.install(app, Auth(engine))
    return app
