"""The auth matrix: every API route of the real app, called anonymously and as every role.

Anonymous → 401 `unauthenticated` (with WWW-Authenticate) for every route that is not PUBLIC; a
role without the route's permission → 403 `forbidden`; a role with it gets past the check (2xx, or
the route's own 404/409/422 for the dummy ids and empty bodies sent here). The policy (not the
route bodies) decides, so SQLite is enough; both databases are covered by test_auth_api.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from orderhub.adapters.db import auth_repo
from orderhub.bootstrap import Runtime
from orderhub.config import FulfillmentSettings, Settings, WmsEndpointSettings
from orderhub.domain.access import ROLE_PERMISSIONS, Permission, Role
from orderhub.entrypoints.api import auth
from orderhub.entrypoints.api.access_policy import AUTHENTICATED, POLICY, PUBLIC, PolicyError
from orderhub.entrypoints.api.app import create_app
from orderhub.services.auth import Auth

ROUTES = sorted(POLICY)
ROLES = list(Role)
_DUMMY = {"quarantine_id": "999999", "user_id": "999999", "key_id": "999999", "message_id": "999999", "instruction_id": "999999",
          "ticket_id": "999999"}


def url(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: _DUMMY.get(m.group(1), "x"), path)


class Stack:
    def __init__(self, client: TestClient, runtime: Runtime) -> None:
        self.client, self.runtime = client, runtime
        self.auth = Auth(runtime.engine)
        now = datetime.now(UTC)
        with runtime.engine.begin() as conn:
            self.users = {role: auth_repo.insert_user(conn, username=f"m-{role.value}", display_name=None, password_hash="!",
                                                      role=role.value, now=now) for role in ROLES}

    def call(self, method: str, path: str, headers: dict[str, str] | None = None):
        return self.client.request(method, url(path), headers=headers or {})

    def as_role(self, role: Role) -> dict[str, str]:
        # a fresh session per call: POST /auth/logout is in the matrix too
        return {"Authorization": f"Bearer {self.auth.issue_token(self.users[role])}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("matrix")
    # a WMS (never reached: no workers) so the fulfillment routes answer instead of 404 `unknown_channel`
    wms = WmsEndpointSettings(name="main", base_url="http://127.0.0.1:9/wms", app_key="k", app_secret="s")
    runtime = Runtime(Settings(data_dir=Path(data), database_url=f"sqlite:///{data / 'orderhub.db'}", audit=False,
                               fulfillment=FulfillmentSettings(wms=[wms])))
    with TestClient(create_app(runtime, workers=False), client=("127.0.0.9", 50000)) as client:
        yield Stack(client, runtime)


def test_the_policy_covers_exactly_the_apps_api_routes(stack):
    routes = {(method, path) for method, path, _own, _authorized in auth._routes(stack.client.app)
              if method != "HEAD" and path.startswith("/api/")}
    assert routes == set(POLICY), {"without a line": routes - set(POLICY), "stale lines": set(POLICY) - routes}


@pytest.mark.parametrize("method, path", ROUTES)
def test_anonymous_callers_get_401_except_on_public_routes(stack, method, path):
    response = stack.call(method, path)
    if POLICY[(method, path)] is PUBLIC:
        # their own answer (a signature's 401, a validation 422, the docs page), never the login's
        assert response.status_code != 401 or response.json()["code"] != "unauthenticated"
    else:
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthenticated" and response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("role", ROLES, ids=[r.value for r in ROLES])
@pytest.mark.parametrize("method, path", ROUTES)
def test_each_role_gets_403_exactly_where_the_matrix_says(stack, method, path, role):
    rule = POLICY[(method, path)]
    response = stack.call(method, path, stack.as_role(role))
    allowed = rule in (PUBLIC, AUTHENTICATED) or rule in ROLE_PERMISSIONS[role]
    if allowed:
        assert response.status_code not in (401, 403) or response.json().get("code") not in ("unauthenticated", "forbidden"), response.text
        assert response.status_code < 500, response.text
    else:
        assert (response.status_code, response.json()["code"]) == (403, "forbidden"), response.text
        assert isinstance(rule, Permission) and rule.value in response.json()["message"]


_LISTS = [(path, role) for (method, path), rule in sorted(POLICY.items()) for role in ROLES
          if method == "GET" and "{" not in path and rule is not PUBLIC and (rule is AUTHENTICATED or rule in ROLE_PERMISSIONS[role])]


@pytest.mark.parametrize("path, role", _LISTS, ids=[f"{p}-{r.value}" for p, r in _LISTS])
def test_every_list_a_role_may_read_answers_200(stack, path, role):
    response = stack.call("GET", path, stack.as_role(role))
    assert response.status_code == 200, response.text


def test_a_bad_or_expired_token_is_401_and_a_stale_token_does_not_block_logging_in(stack):
    assert stack.call("GET", "/api/v1/me", {"Authorization": "Bearer not-a-token"}).status_code == 401
    assert stack.call("GET", "/api/v1/me", {"X-API-Key": "ohk_not-a-key"}).status_code == 401
    assert stack.call("GET", "/api/v1/me", {"Authorization": "Basic YWRtaW46YWRtaW4="}).status_code == 401
    expired = Auth(stack.runtime.engine, clock=lambda: datetime(2020, 1, 1, tzinfo=UTC)).issue_token(stack.users[Role.ADMIN])
    response = stack.call("GET", "/api/v1/me", {"Authorization": f"Bearer {expired}"})
    assert (response.status_code, response.json()["code"]) == (401, "unauthenticated")
    # the console may still hold its old token when someone logs in again: the public login ignores it
    login = stack.client.post("/api/v1/auth/login", json={"username": "nobody", "password": "whatever1"},
                              headers={"Authorization": f"Bearer {expired}"})
    assert (login.status_code, login.json()["code"]) == (401, "invalid_credentials")


def test_an_anonymous_upload_is_refused_before_its_body_is_read(stack):
    response = stack.client.post("/api/v1/imports", files={"file": ("a.csv", b"x" * 200_000)}, data={"mapping": "m", "channel": "pos"})
    assert (response.status_code, response.json()["code"]) == (401, "unauthenticated")


def test_the_console_pages_outside_the_api_need_no_login(stack):
    assert stack.client.get("/docs/oauth2-redirect").status_code == 200  # FastAPI's own page, not under /api/


def test_the_app_refuses_to_start_with_a_route_that_has_no_policy_line(tmp_path):
    runtime = Runtime(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'orderhub.db'}"))
    app = create_app(runtime, workers=False)
    router = APIRouter(prefix="/api/v1")

    @router.get("/forgotten")
    async def forgotten() -> dict[str, str]:
        return {"secret": "data"}

    app.include_router(router)  # after create_app: the check at startup still sees it
    with pytest.raises(PolicyError, match="GET /api/v1/forgotten"):
        with TestClient(app):
            pass
    with pytest.raises(PolicyError, match="GET /api/v1/forgotten"):
        auth.check(app)
