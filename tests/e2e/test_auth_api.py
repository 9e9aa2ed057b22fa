"""Logins, users, API keys, PII masking per role, the buyer's tracking endpoint and the audit log,
over real HTTP (uvicorn on a local port), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from auth_helpers import api_key_headers
from orderhub.adapters.channels.file_import import FileChannel
from orderhub.adapters.channels.registry import ChannelRegistry
from orderhub.adapters.db.tables import audit_log, auth_tokens, order_events
from orderhub.bootstrap import Runtime
from orderhub.config import AuthSettings, FulfillmentSettings, Settings, WmsEndpointSettings
from orderhub.demo.pos import HEADER
from orderhub.domain.access import Actor, Role
from orderhub.domain.ids import order_id
from orderhub.domain.errors import OrderHubError
from orderhub.entrypoints.api.access_policy import AUTHENTICATED, POLICY, PUBLIC
from orderhub.entrypoints.api.app import create_app
from orderhub.entrypoints.serve import DEMO_POS_MAPPING
from orderhub.services import users
from orderhub.services.auth import Auth
from servers import QuietServer, listening_socket

# The buyer of the imported store order, in plaintext as the till recorded them.
PHONE, NAME, STREET = "13912345678", "欧阳小明", "幸福路88号3单元"
NEW_STREET = "网商路699号B座"  # what CS types in an address interception
ORDER_NO = "POS-AUTH-0001"
OID = order_id("pos", ORDER_NO)
PLAINTEXT = (PHONE, NAME, STREET, NEW_STREET, "欧阳")
ADMIN = Actor("tests", "system")


@dataclass
class Hub:
    runtime: Runtime
    http: httpx.AsyncClient  # no credentials: every call says who it is
    admin: dict[str, str]

    async def login(self, username: str, password: str, **headers: str) -> httpx.Response:
        return await self.http.post("/api/v1/auth/login", json={"username": username, "password": password}, headers=headers)

    async def user(self, username: str, role: Role | str, password: str = "secret-pass-1") -> dict[str, str]:
        """A user created through the API by the admin, logged in through the API."""
        created = await self.http.post("/api/v1/users", json={"username": username, "password": password, "role": Role(role).value},
                                       headers=self.admin)
        assert created.status_code == 201, created.text
        response = await self.login(username, password)
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    def audit(self, **where: str) -> list[Any]:
        with self.runtime.engine.connect().execution_options(readonly=True) as conn:
            query = sa.select(audit_log).order_by(audit_log.c.id)
            for name, value in where.items():
                query = query.where(audit_log.c[name] == value)
            return list(conn.execute(query).mappings())


@pytest.fixture
async def hub(database_url: str, tmp_path) -> AsyncIterator[Hub]:
    settings = Settings(
        database_url=database_url, data_dir=tmp_path, audit=False,
        auth=AuthSettings(login_max_failures=3, track_per_minute=20),
        # a WMS that is never reached (no workers): interceptions are applied here, as for an order not yet sent
        fulfillment=FulfillmentSettings(wms=[WmsEndpointSettings(name="main", base_url="http://127.0.0.1:9/wms", app_key="k", app_secret="s")]),
    )
    channels = ChannelRegistry.default()
    channels.file = FileChannel()
    runtime = Runtime(settings, channels=channels)
    sock = listening_socket(128)
    server = QuietServer(uvicorn.Config(create_app(runtime, workers=False), log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=10)
    try:
        yield Hub(runtime, http, api_key_headers(runtime.engine))
    finally:
        await http.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


async def store_order(hub: Hub) -> None:
    """One paid store order, imported from the till's CSV with the buyer in plaintext."""
    saved = await hub.http.put("/api/v1/import-mappings/pos-default", json=DEMO_POS_MAPPING, headers=hub.admin)
    assert saved.status_code == 200, saved.text
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerow([ORDER_NO, "2025-03-18 10:00:00", "2025-03-18 10:00:05", "已付款", "SKU-1", "咖啡", 1, "18.00", "0.00", "0.00", "18.00",
                     "VIP0001", NAME, PHONE, "浙江省", "杭州市", "西湖区", STREET, ""])
    response = await hub.http.post("/api/v1/imports", files={"file": ("pos.csv", out.getvalue().encode())},
                                   data={"mapping": "pos-default", "channel": "pos", "shop": "store-01"}, headers=hub.admin)
    assert response.status_code == 202, response.text
    await hub.runtime.drain()


# -- logging in and out -----------------------------------------------------------------------------


async def test_a_login_gives_a_token_that_works_on_every_request_until_logout(hub):
    users.create_user(hub.runtime.engine, ADMIN, username="Wang", password="correct-horse", role="cs", display_name="小王")
    response = await hub.login("wang", "correct-horse")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and len(body["token"]) >= 40
    assert datetime.fromisoformat(body["expires_at"]) - datetime.now(UTC) > timedelta(hours=11)
    assert {k: body["user"][k] for k in ("username", "display_name", "role", "kind")} == {
        "username": "wang", "display_name": "小王", "role": "cs", "kind": "user"}
    token = {"Authorization": f"Bearer {body['token']}"}
    me = (await hub.http.get("/api/v1/me", headers=token)).json()
    assert me == body["user"] and "orders:read" in me["permissions"] and "pii:read" not in me["permissions"]
    with hub.runtime.engine.connect() as conn:  # only the token's hash is stored
        stored = list(conn.execute(sa.select(auth_tokens.c.token_hash)).scalars())
    assert body["token"] not in stored and len(stored) == 1

    assert (await hub.http.post("/api/v1/auth/logout", headers=token)).status_code == 204
    gone = await hub.http.get("/api/v1/me", headers=token)
    assert (gone.status_code, gone.json()["code"]) == (401, "unauthenticated")
    assert [e["action"] for e in hub.audit(actor="wang")] == ["login.succeeded", "logout"]


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer_and_a_disabled_user_is_told_only_with_the_right_password(hub):
    created = users.create_user(hub.runtime.engine, ADMIN, username="li", password="right-password", role="ops")
    wrong = await hub.login("li", "wrong-password")
    unknown = await hub.login("nobody", "wrong-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() and wrong.json()["code"] == "invalid_credentials"
    users.update_user(hub.runtime.engine, ADMIN, created["id"], active=False)
    disabled = await hub.login("li", "right-password")
    assert (disabled.status_code, disabled.json()["code"]) == (401, "user_disabled")
    assert (await hub.login("li", "wrong-password")).json()["code"] == "invalid_credentials"
    failures = hub.audit(action="login.failed")
    assert [(f["entity_id"], f["after"]["reason"]) for f in failures] == [
        ("li", "invalid_credentials"), ("nobody", "invalid_credentials"), ("li", "disabled"), ("li", "invalid_credentials")]


async def test_repeated_failures_of_one_username_from_one_client_are_throttled_and_others_are_not(hub):
    users.create_user(hub.runtime.engine, ADMIN, username="zhao", password="zhao-password", role="cs")
    users.create_user(hub.runtime.engine, ADMIN, username="qian", password="qian-password", role="cs")
    for _ in range(3):  # the fixture allows 3 failures per 5 minutes
        assert (await hub.login("zhao", "guess-guess")).json()["code"] == "invalid_credentials"
    blocked = await hub.login("zhao", "zhao-password")  # even the right password, until the window passes
    assert (blocked.status_code, blocked.json()["code"]) == (429, "too_many_attempts")
    assert 250 <= int(blocked.headers["retry-after"]) <= 301
    assert (await hub.login("qian", "qian-password")).status_code == 200  # another username from the same client
    assert len(hub.audit(action="login.failed", entity_id="zhao")) == 3  # the throttle's count, shared by every API node
    with pytest.raises(OrderHubError, match="too many"):  # another node sees the same count
        Auth(hub.runtime.engine, max_failures=3).login("zhao", "zhao-password", "127.0.0.1")
    # once the window has passed the right password works again
    later = Auth(hub.runtime.engine, max_failures=3, clock=lambda: datetime.now(UTC) + timedelta(minutes=5, seconds=1))
    assert later.login("zhao", "zhao-password", "127.0.0.1")["user"]["username"] == "zhao"


async def test_an_expired_token_is_refused(hub):
    users.create_user(hub.runtime.engine, ADMIN, username="sun", password="sun-password", role="viewer")
    token = (await hub.login("sun", "sun-password")).json()["token"]
    assert (await hub.http.get("/api/v1/orders", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    with hub.runtime.engine.begin() as conn:
        conn.execute(sa.update(auth_tokens).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    response = await hub.http.get("/api/v1/orders", headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.json()["code"], response.headers["www-authenticate"]) == (401, "unauthenticated", "Bearer")


# -- users and API keys -----------------------------------------------------------------------------


async def test_only_an_admin_manages_users_and_the_last_active_admin_stays(hub):
    boss = await hub.user("boss", "admin")
    cs = await hub.user("cs-wang", "cs")
    assert (await hub.http.get("/api/v1/users", headers=cs)).json()["code"] == "forbidden"
    assert (await hub.http.post("/api/v1/users", json={"username": "x1", "password": "long-enough", "role": "admin"}, headers=cs)).status_code == 403
    listed = (await hub.http.get("/api/v1/users", headers=boss)).json()["items"]
    assert [(u["username"], u["role"], u["active"]) for u in listed] == [("boss", "admin", True), ("cs-wang", "cs", True)]
    assert set(listed[0]) == {"id", "username", "display_name", "role", "active", "created_at", "last_login_at"}

    taken = await hub.http.post("/api/v1/users", json={"username": "CS-Wang", "password": "long-enough", "role": "cs"}, headers=boss)
    assert (taken.status_code, taken.json()["code"], taken.json()["field"]) == (409, "username_taken", "username")
    weak = await hub.http.post("/api/v1/users", json={"username": "newbie", "password": "short", "role": "cs"}, headers=boss)
    assert (weak.status_code, weak.json()["field"]) == (422, "password")
    bad_role = await hub.http.post("/api/v1/users", json={"username": "newbie", "password": "long-enough", "role": "root"}, headers=boss)
    assert (bad_role.status_code, bad_role.json()["field"]) == (400, "role")

    boss_id = listed[0]["id"]
    demote = await hub.http.patch(f"/api/v1/users/{boss_id}", json={"role": "ops"}, headers=boss)
    assert (demote.status_code, demote.json()["code"]) == (409, "last_admin")
    disable = await hub.http.patch(f"/api/v1/users/{boss_id}", json={"active": False}, headers=boss)
    assert (disable.status_code, disable.json()["code"]) == (409, "last_admin")
    # with a second admin the first may step down, and a disabled user's sessions end at once
    second = await hub.user("deputy", "admin")
    assert (await hub.http.patch(f"/api/v1/users/{boss_id}", json={"active": False}, headers=second)).json()["active"] is False
    assert (await hub.http.get("/api/v1/me", headers=boss)).status_code == 401
    cs_id = listed[1]["id"]
    changed = await hub.http.patch(f"/api/v1/users/{cs_id}", json={"password": "a-new-password", "role": "warehouse"}, headers=second)
    assert changed.json()["role"] == "warehouse"
    assert (await hub.http.get("/api/v1/me", headers=cs)).status_code == 401  # a new password ends the old sessions
    assert (await hub.login("cs-wang", "a-new-password")).json()["user"]["role"] == "warehouse"
    update = hub.audit(action="user.update", entity_id="cs-wang")[-1]
    assert update["actor"] == "deputy" and update["before"]["role"] == "cs" and update["after"]["role"] == "warehouse"
    assert update["after"]["password_changed"] is True and "a-new-password" not in str(update) and "argon2" not in str(update)


async def test_an_api_key_is_shown_once_works_with_its_role_and_stops_when_revoked(hub):
    created = await hub.http.post("/api/v1/api-keys", json={"name": "erp-sync", "role": "viewer"}, headers=hub.admin)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("ohk_") and created.json()["prefix"] == key[:12]
    listed = (await hub.http.get("/api/v1/api-keys", headers=hub.admin)).json()["items"]
    erp = next(k for k in listed if k["name"] == "erp-sync")
    assert "key" not in erp and key not in str(listed) and erp["revoked"] is False and erp["last_used_at"] is None
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        me = (await hub.http.get("/api/v1/me", headers=headers)).json()
        assert (me["kind"], me["username"], me["role"]) == ("api_key", "erp-sync", "viewer")
    assert (await hub.http.get("/api/v1/orders", headers={"X-API-Key": key})).status_code == 200
    refused = await hub.http.post("/api/v1/workers/pause", headers={"X-API-Key": key})
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    erp = next(k for k in (await hub.http.get("/api/v1/api-keys", headers=hub.admin)).json()["items"] if k["name"] == "erp-sync")
    assert erp["last_used_at"] is not None
    assert (await hub.http.delete(f"/api/v1/api-keys/{erp['id']}", headers=hub.admin)).status_code == 204
    assert (await hub.http.get("/api/v1/orders", headers={"X-API-Key": key})).status_code == 401
    listed = (await hub.http.get("/api/v1/api-keys", headers=hub.admin)).json()["items"]
    assert next(k for k in listed if k["name"] == "erp-sync")["revoked"] is True
    assert [e["action"] for e in hub.audit(entity="api_key", entity_id=str(erp["id"]))] == ["api_key.create", "api_key.revoke"]


# -- who acts, and the audit log ---------------------------------------------------------------------


async def test_order_actions_and_rule_changes_are_recorded_as_the_logged_in_user_whatever_the_body_says(hub):
    await store_order(hub)
    cs = await hub.user("cs-li", "cs")
    held = await hub.http.post(f"/api/v1/orders/{OID}/hold", json={"reason": "买家要求暂缓发货", "actor": "someone-else"}, headers=cs)
    assert held.status_code == 200, held.text
    events = (await hub.http.get(f"/api/v1/orders/{OID}/events", headers=cs)).json()
    assert (events[-1]["kind"], events[-1]["actor"]) == ("hold_placed", "cs-li")
    [entry] = hub.audit(action="order.hold_placed")
    assert (entry["actor"], entry["actor_kind"], entry["entity"], entry["entity_id"]) == ("cs-li", "user", "order", OID)
    assert entry["before"]["status"] == "paid" and entry["after"]["status"] == "on_hold" and entry["after"]["version"] == entry["before"]["version"] + 1
    assert entry["ip"] == "127.0.0.1"
    # an integration's key may name the person it acts for, beside the key
    key = api_key_headers(hub.runtime.engine, Role.CS, name="crm")
    released = await hub.http.post(f"/api/v1/orders/{OID}/release", json={"reason": "已联系买家", "actor": "agent-7"}, headers=key)
    assert released.status_code == 200, released.text
    assert hub.audit(action="order.hold_released")[0]["actor"] == "key:crm/agent-7"

    ops = await hub.user("ops-zhou", "ops")
    rules = (await hub.http.get("/api/v1/rules/holds", headers=ops)).json()
    saved = await hub.http.put("/api/v1/rules/holds", json={"content": rules["content"], "note": "same again", "author": "not-me"}, headers=ops)
    assert saved.status_code == 200, saved.text
    assert saved.json()["author"] == "ops-zhou"
    assert (await hub.http.put("/api/v1/rules/holds", json={"content": rules["content"]}, headers=cs)).status_code == 403

    page = (await hub.http.get("/api/v1/audit-log", params={"entity": "order", "entity_id": OID}, headers=ops)).json()
    assert [i["action"] for i in page["items"]] == ["order.hold_released", "order.hold_placed"]  # newest first
    first = (await hub.http.get("/api/v1/audit-log", params={"limit": 2}, headers=ops)).json()
    rest = (await hub.http.get("/api/v1/audit-log", params={"limit": 500, "cursor": first["next_cursor"]}, headers=ops)).json()
    ids = [i["id"] for i in first["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == len(hub.audit()) and rest["next_cursor"] is None
    assert (await hub.http.get("/api/v1/audit-log", headers=cs)).status_code == 403


async def test_the_audit_log_cannot_be_changed_or_deleted_in_the_database(hub):
    await hub.user("someone", "viewer")
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with hub.runtime.engine.begin() as conn:
            conn.execute(sa.update(audit_log).values(actor="nobody"))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with hub.runtime.engine.begin() as conn:
            conn.execute(sa.delete(audit_log))
    assert hub.audit(action="user.create")[0]["entity_id"] == "someone"


# -- buyer PII --------------------------------------------------------------------------------------


async def _every_readable_response(hub: Hub, headers: dict[str, str], permissions: set[str], ids: dict[str, str]) -> list[tuple[str, str]]:
    """(route, body) of every GET route the caller may call, with the test order's ids filled in."""
    out = []
    for (method, path), rule in POLICY.items():
        if method != "GET" or rule is PUBLIC or (rule is not AUTHENTICATED and rule.value not in permissions):
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x"), path)
        params = {"payload": "true"} if path.endswith("/outbox") else {"order_id": OID} if path.endswith(("/interceptions", "/tickets")) else {}
        response = await hub.http.get(url, params=params, headers=headers)
        out.append((f"{method} {url} {response.status_code}", response.text))
    return out


async def test_no_role_without_pii_read_can_get_the_buyers_plaintext_from_any_endpoint(hub):
    await store_order(hub)
    new_address = {"province": "浙江省", "city": "杭州市", "district": "滨江区", "detail": NEW_STREET}
    asked = await hub.http.post(f"/api/v1/orders/{OID}/intercept", json={"kind": "address", "reason": "买家来电改地址", "address": new_address},
                                headers=hub.admin)
    assert asked.status_code in (200, 202), asked.text
    admin_view = (await hub.http.get("/api/v1/interceptions", params={"order_id": OID}, headers=hub.admin)).json()
    assert NEW_STREET not in str(admin_view)  # what CS typed is stored sealed: lists show its mask, to every role
    order = (await hub.http.get(f"/api/v1/orders/{OID}", headers=hub.admin)).json()
    assert order["address"]["detail"] == "***"  # applied here (nothing at the WMS yet): the mask on the order
    revealed = (await hub.http.get(f"/api/v1/orders/{OID}/buyer", headers=hub.admin)).json()
    assert revealed["address"]["detail"] == NEW_STREET  # the street is in the sealed PII, for the audited reveal (pii:read)
    ids = {"order_id": OID, "customer_id": order["customer"]["id"], "sku": "SKU-1", "name": "holds"}
    for role in (Role.OPS, Role.CS, Role.FINANCE, Role.VIEWER):
        headers = await hub.user(f"who-{role.value}", role)
        me = (await hub.http.get("/api/v1/me", headers=headers)).json()
        seen = await _every_readable_response(hub, headers, set(me["permissions"]), ids)
        assert len(seen) >= 8, seen
        assert any(f"/orders/{OID} 200" in route for route, _ in seen)
        leaks = [(route, secret) for route, body in seen for secret in PLAINTEXT if secret in body]
        assert leaks == [], leaks
        refused = await hub.http.get(f"/api/v1/orders/{OID}/buyer", headers=headers)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    cs_view = (await hub.http.get(f"/api/v1/orders/{OID}", headers=await hub.user("cs-2", "cs"))).json()
    assert cs_view["customer"]["phone"] == "139****5678" and cs_view["customer"]["name"].endswith("*")


async def test_the_warehouse_reads_the_buyer_in_plaintext_and_every_reveal_is_logged_with_who(hub):
    await store_order(hub)
    warehouse = await hub.user("wh-chen", "warehouse")
    response = await hub.http.get(f"/api/v1/orders/{OID}/buyer", headers=warehouse)
    assert response.status_code == 200, response.text
    assert response.json() == {"order_id": OID, "name": NAME, "phone": PHONE,
                               "address": {"province": "浙江省", "city": "杭州市", "district": "西湖区", "detail": STREET}}
    assert response.headers["cache-control"] == "no-store"
    [entry] = hub.audit(action="pii.reveal")
    assert (entry["actor"], entry["entity_id"], entry["after"]["fields"]) == ("wh-chen", OID, ["address_detail", "name", "phone"])
    with hub.runtime.engine.connect() as conn:
        logged = conn.execute(sa.select(order_events.c.actor).where(order_events.c.order_id == OID, order_events.c.kind == "pii_revealed")).all()
    assert [r.actor for r in logged] == ["wh-chen"]
    assert (await hub.http.get("/api/v1/orders/nope/buyer", headers=warehouse)).status_code == 404


# -- the buyer's tracking page ------------------------------------------------------------------------


async def test_a_buyer_tracks_an_order_with_its_number_and_the_phones_last_four_digits_and_sees_nothing_else(hub):
    await store_order(hub)
    found = await hub.http.get("/api/v1/track", params={"order_no": ORDER_NO, "phone_last4": PHONE[-4:]})
    assert found.status_code == 200, found.text
    body = found.json()
    assert body == {"order_no": ORDER_NO, "status": "paid", "status_label": "已付款", "updated_at": body["updated_at"], "parcels": []}
    assert not any(secret in found.text for secret in (*PLAINTEXT, "139****", "1800", "store-01", OID))
    wrong = await hub.http.get("/api/v1/track", params={"order_no": ORDER_NO, "phone_last4": "0000"})
    unknown = await hub.http.get("/api/v1/track", params={"order_no": "POS-NOPE", "phone_last4": PHONE[-4:]})
    assert wrong.status_code == unknown.status_code == 404 and wrong.json() == unknown.json()
    assert wrong.json()["code"] == "not_found"
    assert (await hub.http.get("/api/v1/track", params={"order_no": ORDER_NO, "phone_last4": "12a4"})).status_code == 422


async def test_tracking_is_rate_limited_per_client_address(hub):
    answers = [await hub.http.get("/api/v1/track", params={"order_no": f"N{n}", "phone_last4": "1234"}) for n in range(20)]
    assert {a.status_code for a in answers} == {404}
    limited = await hub.http.get("/api/v1/track", params={"order_no": "N21", "phone_last4": "1234"})
    assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    malformed = await hub.http.get("/api/v1/track", params={"order_no": "N22", "phone_last4": "x"})
    assert malformed.status_code == 429  # counted before the query is validated
