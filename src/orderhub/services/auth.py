"""Logins and the credentials of every API request: session tokens and API keys.

Everything lives in the database (tokens and keys as SHA-256 hashes: both are 256-bit random
strings, so a fast hash suffices; passwords get argon2id), so any number of API nodes share the
sessions and a logout or a disabled user takes effect on all of them at the next request.
Failed logins are throttled per username and client address by counting the audit log's
`login.failed` entries, which every node writes and reads alike.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orderhub.adapters import passwords
from orderhub.adapters.db import audit_log_repo, auth_repo
from orderhub.adapters.db.queries import local
from orderhub.domain.access import Actor, Principal, Role
from orderhub.domain.errors import ErrorCode, OrderHubError, ThrottledError

API_KEY_PREFIX = "ohk_"
TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often per token / key


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, digest(token)


class Auth:
    def __init__(self, engine: sa.Engine, *, token_ttl: timedelta = timedelta(hours=12), max_failures: int = 10,
                 window: timedelta = timedelta(minutes=5), clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.token_ttl = token_ttl
        self.max_failures = max_failures
        self.window = window
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- every request ---------------------------------------------------------------------------

    def authenticate(self, credential: str) -> Principal | None:
        """The principal a bearer token or API key stands for; None when it is unknown, expired,
        revoked or its user disabled."""
        if not credential or len(credential) > 512:
            return None
        now = self.clock()
        hashed = digest(credential)
        with self.engine.connect().execution_options(readonly=True) as conn:
            if credential.startswith(API_KEY_PREFIX):
                row = auth_repo.active_key(conn, hashed)
                found = _principal("api_key", row["id"], row["name"], row["name"], row["role"]) if row else None
            else:
                row = auth_repo.token_user(conn, hashed, now)
                found = _principal("user", row["id"], row["username"], row["display_name"], row["role"]) if row else None
        if found is not None and (row["last_used_at"] is None or row["last_used_at"] < now - TOUCH_EVERY):
            with self.engine.begin() as conn:
                if found.kind == "api_key":
                    auth_repo.touch_key(conn, found.id, now, now - TOUCH_EVERY)
                else:
                    auth_repo.touch_token(conn, hashed, now, now - TOUCH_EVERY)
        return found

    # -- logging in and out ------------------------------------------------------------------------

    def login(self, username: str, password: str, ip: str | None) -> dict[str, Any]:
        """A session token for a good username and password. Wrong name or wrong password: the same
        401 `invalid_credentials` after the same argon2 work; a disabled user is told so only after
        giving the right password. Too many failures from one address: 429 `too_many_attempts`."""
        name = (username or "").strip().lower()[:64]
        now = self.clock()
        with self.engine.connect().execution_options(readonly=True) as conn:
            failures = audit_log_repo.recent_failures(conn, "login.failed", name, ip, now - self.window)
            user = auth_repo.user_by_name(conn, name) if name else None
        if len(failures) >= self.max_failures:
            wait = (failures[-self.max_failures] + self.window - now).total_seconds()
            raise ThrottledError(ErrorCode.TOO_MANY_ATTEMPTS, "登录失败次数过多，请稍后再试 too many failed logins: try again later",
                                 int(wait) + 1, "password")
        good = passwords.verify_password(user["password_hash"] if user else None, password or "")
        if not good or not user["active"]:
            with self.engine.begin() as conn:
                audit_log_repo.record(conn, Actor(name or "?", "anonymous", ip), "login.failed", "user", name,
                                      after={"reason": "disabled" if good else "invalid_credentials"}, at=now)
            if good:
                raise OrderHubError(ErrorCode.USER_DISABLED, "该账号已停用 this user is disabled", "username")
            raise OrderHubError(ErrorCode.INVALID_CREDENTIALS, "用户名或密码错误 wrong username or password", "password")
        token, hashed = new_token()
        expires_at = now + self.token_ttl
        values: dict[str, Any] = {"last_login_at": now}
        if passwords.needs_rehash(user["password_hash"]):
            values["password_hash"] = passwords.hash_password(password)
        with self.engine.begin() as conn:
            auth_repo.delete_expired_tokens(conn, now)
            auth_repo.insert_token(conn, hashed, user["id"], now=now, expires_at=expires_at, ip=ip)
            auth_repo.update_user(conn, user["id"], values, now)
            audit_log_repo.record(conn, Actor(user["username"], "user", ip), "login.succeeded", "user", name, at=now)
        principal = _principal("user", user["id"], user["username"], user["display_name"], user["role"])
        assert principal is not None
        return {"token": token, "token_type": "bearer", "expires_at": local(expires_at), "user": principal.me()}

    def issue_token(self, user_id: int, ip: str | None = None) -> str:
        """A session token without a password (tests, and a future single sign-on)."""
        token, hashed = new_token()
        now = self.clock()
        with self.engine.begin() as conn:
            auth_repo.insert_token(conn, hashed, user_id, now=now, expires_at=now + self.token_ttl, ip=ip)
        return token

    def logout(self, credential: str, actor: Actor) -> None:
        """Revokes the session token presented; an API key is revoked through DELETE /api-keys/{id} only."""
        if credential.startswith(API_KEY_PREFIX):
            return
        with self.engine.begin() as conn:
            if auth_repo.delete_token(conn, digest(credential)):
                audit_log_repo.record(conn, actor, "logout", "user", actor.name)


def _principal(kind: str, id_: int, username: str, display_name: str | None, role: str) -> Principal | None:
    try:
        return Principal(kind, id_, username, display_name, Role(role))
    except ValueError:  # a role this version does not know (a newer release wrote it): no access
        return None
