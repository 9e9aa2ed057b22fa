"""Users, login tokens and API keys in the database (tokens and keys only as SHA-256 hashes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from orderhub.adapters.db.queries import local
from orderhub.adapters.db.tables import api_keys, auth_tokens, users

# -- users ------------------------------------------------------------------------------------------


def user_by_name(conn: sa.Connection, username: str) -> Any:
    return conn.execute(sa.select(users).where(users.c.username == username.lower())).mappings().first()


def user_by_id(conn: sa.Connection, user_id: int, *, lock: bool = False) -> Any:
    query = sa.select(users).where(users.c.id == user_id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).mappings().first()


def insert_user(conn: sa.Connection, *, username: str, display_name: str | None, password_hash: str, role: str, now: datetime) -> int:
    return conn.execute(users.insert().values(
        username=username.lower(), display_name=display_name, password_hash=password_hash, role=role, active=True,
        created_at=now, updated_at=now,
    ).returning(users.c.id)).scalar_one()


def update_user(conn: sa.Connection, user_id: int, values: dict[str, Any], now: datetime) -> None:
    conn.execute(sa.update(users).where(users.c.id == user_id).values(**values, updated_at=now))


def list_users(conn: sa.Connection) -> list[dict[str, Any]]:
    return [user_json(r) for r in conn.execute(sa.select(users).order_by(users.c.id)).mappings()]


def active_admins(conn: sa.Connection, *, lock: bool = False) -> list[int]:
    """Ids of the active admins. With `lock` on PostgreSQL their rows are locked (in id order), so two
    admins demoting each other at once cannot both succeed and leave none."""
    query = sa.select(users.c.id).where(users.c.role == "admin", users.c.active.is_(True)).order_by(users.c.id)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return list(conn.execute(query).scalars())


def count_users(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()


def user_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "username": row["username"], "display_name": row["display_name"], "role": row["role"], "active": row["active"],
        "created_at": local(row["created_at"]), "last_login_at": local(row["last_login_at"]),
    }


# -- login tokens -------------------------------------------------------------------------------------


def insert_token(conn: sa.Connection, token_hash: str, user_id: int, *, now: datetime, expires_at: datetime, ip: str | None) -> None:
    conn.execute(auth_tokens.insert().values(token_hash=token_hash, user_id=user_id, created_at=now, expires_at=expires_at,
                                             last_used_at=now, ip=(ip or None) and ip[:64]))


def token_user(conn: sa.Connection, token_hash: str, now: datetime) -> Any:
    """The active user of an unexpired token, with the token's last use."""
    return conn.execute(
        sa.select(users.c.id, users.c.username, users.c.display_name, users.c.role, auth_tokens.c.last_used_at)
        .join(users, users.c.id == auth_tokens.c.user_id)
        .where(auth_tokens.c.token_hash == token_hash, auth_tokens.c.expires_at > now, users.c.active.is_(True))
    ).mappings().first()


def touch_token(conn: sa.Connection, token_hash: str, now: datetime, older_than: datetime) -> None:
    # conditional: a burst of requests with one token writes last_used_at once, not once each
    conn.execute(sa.update(auth_tokens).where(auth_tokens.c.token_hash == token_hash, auth_tokens.c.last_used_at < older_than)
                 .values(last_used_at=now))


def delete_token(conn: sa.Connection, token_hash: str) -> int:
    return conn.execute(sa.delete(auth_tokens).where(auth_tokens.c.token_hash == token_hash)).rowcount


def delete_user_tokens(conn: sa.Connection, user_id: int) -> int:
    return conn.execute(sa.delete(auth_tokens).where(auth_tokens.c.user_id == user_id)).rowcount


def delete_expired_tokens(conn: sa.Connection, now: datetime) -> int:
    return conn.execute(sa.delete(auth_tokens).where(auth_tokens.c.expires_at <= now)).rowcount


# -- API keys --------------------------------------------------------------------------------------------


def insert_key(conn: sa.Connection, *, name: str, key_hash: str, prefix: str, role: str, created_by: str, now: datetime) -> int:
    return conn.execute(api_keys.insert().values(
        name=name, key_hash=key_hash, prefix=prefix, role=role, created_by=created_by[:64], created_at=now,
    ).returning(api_keys.c.id)).scalar_one()


def active_key(conn: sa.Connection, key_hash: str) -> Any:
    return conn.execute(
        sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.role, api_keys.c.last_used_at)
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
    ).mappings().first()


def touch_key(conn: sa.Connection, key_id: int, now: datetime, older_than: datetime) -> None:
    conn.execute(sa.update(api_keys).where(api_keys.c.id == key_id, sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < older_than))
                 .values(last_used_at=now))


def key_by_id(conn: sa.Connection, key_id: int) -> Any:
    return conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).mappings().first()


def revoke_key(conn: sa.Connection, key_id: int, now: datetime) -> int:
    return conn.execute(sa.update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now)).rowcount


def list_keys(conn: sa.Connection) -> list[dict[str, Any]]:
    return [key_json(r) for r in conn.execute(sa.select(api_keys).order_by(api_keys.c.id)).mappings()]


def key_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "prefix": row["prefix"], "role": row["role"], "created_by": row["created_by"],
        "created_at": local(row["created_at"]), "last_used_at": local(row["last_used_at"]), "revoked_at": local(row["revoked_at"]),
        "revoked": row["revoked_at"] is not None,
    }
