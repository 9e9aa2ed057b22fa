"""User and API key management (admin only in the API; `orderhub users` on the command line).
Every change is one transaction with its audit-log entry."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters import passwords
from orderhub.adapters.db import audit_log_repo, auth_repo
from orderhub.domain.access import Actor, Role, password_problem
from orderhub.domain.errors import ErrorCode, OrderHubError
from orderhub.services.auth import API_KEY_PREFIX, digest

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")


def _role(value: str, field: str = "role") -> Role:
    try:
        return Role(value)
    except ValueError:
        raise OrderHubError(ErrorCode.INVALID_REQUEST, f"role must be one of {', '.join(r.value for r in Role)}", field) from None


def _password(password: str | None) -> str:
    problem = password_problem(password)
    if problem:
        raise OrderHubError(ErrorCode.WEAK_PASSWORD, problem, "password")
    assert password is not None
    return password


def _display_name(value: str | None) -> str | None:
    value = (value or "").strip()
    if len(value) > 64:
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "display_name may have at most 64 characters", "display_name")
    return value or None


def create_user(engine: sa.Engine, actor: Actor, *, username: str, password: str, role: str, display_name: str | None = None) -> dict[str, Any]:
    name = (username or "").strip().lower()
    if not _USERNAME.match(name):
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "username: 2-64 of a-z 0-9 . _ @ -, starting with a letter or digit", "username")
    wanted = _role(role)
    hashed = passwords.hash_password(_password(password))  # before the transaction: it takes ~0.15 s
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            if auth_repo.user_by_name(conn, name) is not None:
                raise OrderHubError(ErrorCode.USERNAME_TAKEN, f"用户名 {name} 已存在 username {name} is taken", "username")
            user_id = auth_repo.insert_user(conn, username=name, display_name=_display_name(display_name), password_hash=hashed,
                                            role=wanted.value, now=now)
            created = auth_repo.user_json(auth_repo.user_by_id(conn, user_id))
            audit_log_repo.record(conn, actor, "user.create", "user", name, after=created, at=now)
            return created
    except sa.exc.IntegrityError:  # the same name created at the same moment by someone else
        raise OrderHubError(ErrorCode.USERNAME_TAKEN, f"用户名 {name} 已存在 username {name} is taken", "username") from None


def update_user(
    engine: sa.Engine, actor: Actor, user_id: int, *, role: str | None = None, active: bool | None = None, password: str | None = None,
    display_name: str | None = None,
) -> dict[str, Any]:
    """Change role, active, password or display name. The last active admin can be neither disabled
    nor demoted (409 `last_admin`); a new password or a disabled account ends the user's sessions."""
    wanted = _role(role) if role is not None else None
    hashed = passwords.hash_password(_password(password)) if password is not None else None
    now = datetime.now(UTC)
    with engine.begin() as conn:
        # admins first, in id order, then the target: one lock order for every update
        admins = auth_repo.active_admins(conn, lock=True)
        row = auth_repo.user_by_id(conn, user_id, lock=True)
        if row is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"user {user_id} does not exist", "id")
        values: dict[str, Any] = {}
        if wanted is not None and wanted.value != row["role"]:
            values["role"] = wanted.value
        if active is not None and active != row["active"]:
            values["active"] = active
        if display_name is not None:
            values["display_name"] = _display_name(display_name)
        loses_admin = row["id"] in admins and (values.get("role", "admin") != "admin" or values.get("active", True) is False)
        if loses_admin and len(admins) == 1:
            raise OrderHubError(ErrorCode.LAST_ADMIN, "不能停用或降级最后一位管理员 the last active admin cannot be disabled or demoted",
                                "active" if values.get("active") is False else "role")
        before, after = audit_log_repo.changed(row, values)
        if hashed is not None:
            values["password_hash"] = hashed
            after["password_changed"] = True  # never the hash itself
        if values:
            auth_repo.update_user(conn, user_id, values, now)
        if hashed is not None or values.get("active") is False:
            auth_repo.delete_user_tokens(conn, user_id)
        if before or after:
            audit_log_repo.record(conn, actor, "user.update", "user", row["username"], before=before, after=after, at=now)
        return auth_repo.user_json(auth_repo.user_by_id(conn, user_id))


def list_users(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect().execution_options(readonly=True) as conn:
        return auth_repo.list_users(conn)


def create_api_key(engine: sa.Engine, actor: Actor, *, name: str, role: str) -> dict[str, Any]:
    """A new key for an integration: the key itself is in this answer only."""
    label = (name or "").strip()
    if not label or len(label) > 64:
        raise OrderHubError(ErrorCode.INVALID_REQUEST, "name: 1-64 characters", "name")
    wanted = _role(role)
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        key_id = auth_repo.insert_key(conn, name=label, key_hash=digest(key), prefix=key[:12], role=wanted.value, created_by=actor.name, now=now)
        shown = auth_repo.key_json(auth_repo.key_by_id(conn, key_id))
        audit_log_repo.record(conn, actor, "api_key.create", "api_key", key_id, after=shown, at=now)
    return {**shown, "key": key}


def revoke_api_key(engine: sa.Engine, actor: Actor, key_id: int) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = auth_repo.key_by_id(conn, key_id)
        if row is None:
            raise OrderHubError(ErrorCode.NOT_FOUND, f"API key {key_id} does not exist", "id")
        if auth_repo.revoke_key(conn, key_id, now):
            audit_log_repo.record(conn, actor, "api_key.revoke", "api_key", key_id, before={"revoked_at": None},
                                  after={"revoked_at": now}, at=now)


def list_api_keys(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect().execution_options(readonly=True) as conn:
        return auth_repo.list_keys(conn)
