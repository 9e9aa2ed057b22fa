"""`orderhub users|api-keys`: accounts and integration keys from the command line, on the database directly.

The first admin comes from here (`orderhub users create-admin`): the API has no anonymous way to
make one. Changes are written to the audit log as `cli:<os user>`.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import click

from orderhub.domain.access import Role
from orderhub.entrypoints.cli import CONFIG, _Group, database, main
from orderhub.entrypoints.offline import cli_actor
from orderhub.services import users as user_service


def _interactive() -> bool:
    return sys.stdin.isatty()


def _password(given: str | None) -> tuple[str, bool]:
    """(password, generated). Asked for when stdin is a terminal; otherwise one is generated and printed once."""
    if given:
        return given, False
    if _interactive():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True), False
    return secrets.token_urlsafe(12), True


def _create(config: Path | None, username: str, role: str, password: str | None, display_name: str | None) -> None:
    chosen, generated = _password(password)
    with database(config) as engine:
        created = user_service.create_user(engine, cli_actor(), username=username, password=chosen, role=role, display_name=display_name)
    click.echo(f"created {created['role']} user {created['username']} (id {created['id']})")
    if generated:
        click.echo(f"password: {chosen}")
        click.echo("(generated: shown once, store it now)", err=True)


@main.group(cls=_Group)
def users() -> None:
    """Console and API accounts: admin 管理员, ops 运营, cs 客服, warehouse 仓管, finance 财务, viewer."""


@users.command("create-admin")
@click.option("--username", default="admin", show_default=True)
@click.option("--password", default=None, help="Default: asked for on a terminal, else generated and printed.")
@click.option("--display-name", default=None)
@CONFIG
def users_create_admin(username: str, password: str | None, display_name: str | None, config: Path | None) -> None:
    """Create an admin (the first one, typically)."""
    _create(config, username, Role.ADMIN.value, password, display_name)


@users.command("create")
@click.option("--username", required=True)
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--password", default=None, help="Default: asked for on a terminal, else generated and printed.")
@click.option("--display-name", default=None)
@CONFIG
def users_create(username: str, role: str, password: str | None, display_name: str | None, config: Path | None) -> None:
    """Create a user with ROLE."""
    _create(config, username, role, password, display_name)


@users.command("list")
@CONFIG
def users_list(config: Path | None) -> None:
    with database(config) as engine:
        found = user_service.list_users(engine)
    if not found:
        click.echo("no users yet: orderhub users create-admin")
    for u in found:
        state = "active" if u["active"] else "disabled"
        click.echo(f"{u['id']:>4}  {u['username']:<20} {u['role']:<10} {state:<8} {u['display_name'] or ''}  last login {u['last_login_at'] or '-'}")


@users.command("set-password")
@click.argument("user_id", type=int)
@click.option("--password", default=None, help="Default: asked for on a terminal, else generated and printed.")
@CONFIG
def users_set_password(user_id: int, password: str | None, config: Path | None) -> None:
    """Give a user a new password (their sessions end)."""
    chosen, generated = _password(password)
    with database(config) as engine:
        changed = user_service.update_user(engine, cli_actor(), user_id, password=chosen)
    click.echo(f"new password for {changed['username']}" + (f": {chosen}" if generated else ""))


@main.group("api-keys", cls=_Group)
def api_keys() -> None:
    """Keys for integrations (Authorization: Bearer ohk_… or X-API-Key: ohk_…)."""


@api_keys.command("create")
@click.option("--name", required=True, help="What the integration is, e.g. erp-sync.")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@CONFIG
def api_keys_create(name: str, role: str, config: Path | None) -> None:
    """Create a key; it is printed once (only its hash is stored)."""
    with database(config) as engine:
        created = user_service.create_api_key(engine, cli_actor(), name=name, role=role)
    click.echo(created["key"])
    click.echo(f"(API key {created['id']} {created['name']}, role {created['role']}: shown once)", err=True)


@api_keys.command("list")
@CONFIG
def api_keys_list(config: Path | None) -> None:
    with database(config) as engine:
        keys = user_service.list_api_keys(engine)
    for k in keys:
        state = f"revoked {k['revoked_at']}" if k["revoked"] else f"last used {k['last_used_at'] or '-'}"
        click.echo(f"{k['id']:>4}  {k['prefix']}…  {k['name']:<20} {k['role']:<10} {state}")


@api_keys.command("revoke")
@click.argument("key_id", type=int)
@CONFIG
def api_keys_revoke(key_id: int, config: Path | None) -> None:
    with database(config) as engine:
        user_service.revoke_api_key(engine, cli_actor(), key_id)
    click.echo(f"API key {key_id} revoked")
