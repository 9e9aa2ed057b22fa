"""`orderhub users` and `orderhub api-keys`, and the demo's users, on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from orderhub.adapters.db import migrate
from orderhub.adapters.db.engine import create_engine
from orderhub.adapters.db.tables import audit_log
from orderhub.entrypoints import cli_users
from orderhub.entrypoints.cli import main
from orderhub.entrypoints.serve import DEMO_USERS, seed_demo_users
from orderhub.services import users
from orderhub.services.auth import Auth


@pytest.fixture
def cli(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ORDERHUB_DATABASE_URL", database_url)
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> tuple[int, str]:
        result = runner.invoke(main, list(args), input=input, catch_exceptions=False)
        return result.exit_code, result.output

    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    yield run, engine
    engine.dispose()


def test_create_admin_without_a_terminal_generates_a_password_that_logs_in(cli):
    run, engine = cli
    code, output = run("users", "create-admin")
    assert code == 0, output
    assert "created admin user admin" in output
    password = re.search(r"^password: (\S+)$", output, re.M).group(1)
    assert len(password) >= 12
    login = Auth(engine).login("admin", password, None)
    assert login["user"]["role"] == "admin" and "users:admin" in login["user"]["permissions"]
    with engine.connect().execution_options(readonly=True) as conn:
        [entry] = [e for e in conn.execute(audit_log.select()).mappings() if e["action"] == "user.create"]
    assert entry["actor"].startswith("cli:") and entry["actor_kind"] == "cli" and password not in str(entry)
    code, output = run("users", "create-admin")
    assert code == 1 and "username_taken" in output  # never a second "admin" silently


def test_create_admin_on_a_terminal_asks_for_the_password_twice(cli, monkeypatch):
    run, engine = cli
    monkeypatch.setattr(cli_users, "_interactive", lambda: True)
    code, output = run("users", "create-admin", "--username", "root", input="typed-secret-1\ntyped-secret-1\n")
    assert code == 0, output
    assert "password: " not in output  # nothing generated, nothing printed
    assert Auth(engine).login("root", "typed-secret-1", None)["user"]["username"] == "root"


def test_users_are_created_with_a_role_listed_and_a_weak_password_refused(cli):
    run, engine = cli
    assert run("users", "create", "--username", "wang", "--role", "cs", "--password", "wang-secret-1")[0] == 0
    code, output = run("users", "create", "--username", "li", "--role", "cs", "--password", "short")
    assert code == 1 and "weak_password" in output
    code, output = run("users", "create", "--username", "li", "--role", "root", "--password", "long-enough")
    assert code == 2  # not a role
    code, output = run("users", "list")
    assert code == 0 and re.search(r"wang\s+cs\s+active", output)
    assert run("users", "set-password", str(users.list_users(engine)[0]["id"]), "--password", "another-secret")[0] == 0
    assert Auth(engine).login("wang", "another-secret", None)["user"]["role"] == "cs"


def test_an_api_key_is_printed_once_and_can_be_revoked(cli):
    run, engine = cli
    code, output = run("api-keys", "create", "--name", "bench", "--role", "ops")
    assert code == 0
    key = output.splitlines()[0]
    assert key.startswith("ohk_")
    principal = Auth(engine).authenticate(key)
    assert (principal.kind, principal.role.value) == ("api_key", "ops")
    code, listed = run("api-keys", "list")
    assert "bench" in listed and key not in listed and key[:12] in listed
    assert run("api-keys", "revoke", "1")[0] == 0
    assert Auth(engine).authenticate(key) is None


def test_the_demo_has_one_user_per_role_with_the_passwords_the_readme_lists(cli):
    _run, engine = cli
    seed_demo_users(engine)
    seed_demo_users(engine)  # a restart of the demo creates nobody twice
    assert [(u["username"], u["role"]) for u in users.list_users(engine)] == [(name, role.value) for name, _pw, role, _dn in DEMO_USERS]
    auth = Auth(engine)
    for username, password, role, _display in DEMO_USERS:
        assert auth.login(username, password, None)["user"]["role"] == role.value
