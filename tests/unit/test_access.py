"""The role → permission matrix as data, who an actor is, masking for roles without pii:read, the tracking rate limit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orderhub.domain.access import ROLE_PERMISSIONS, Permission, Principal, Role, password_problem
from orderhub.domain.pii import redact
from orderhub.entrypoints.api.access_policy import AUTHENTICATED, POLICY, PUBLIC, PolicyError, check_routes
from orderhub.entrypoints.api.rate_limit import RateLimiter

P = Permission


def test_admin_may_do_everything_and_every_permission_is_used_by_some_route():
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    required = {rule for rule in POLICY.values() if isinstance(rule, Permission)}
    assert set(Permission) - required == set(), "a permission no route asks for"


def test_only_admin_and_warehouse_may_read_plaintext_buyer_data():
    assert {role for role, perms in ROLE_PERMISSIONS.items() if P.PII_READ in perms} == {Role.ADMIN, Role.WAREHOUSE}


def test_only_admin_manages_users_and_api_keys():
    assert {role for role, perms in ROLE_PERMISSIONS.items() if P.USERS_ADMIN in perms} == {Role.ADMIN}


@pytest.mark.parametrize("role, granted, refused", [
    (Role.OPS, {P.ORDERS_WRITE, P.RULES_PUBLISH, P.INVENTORY_WRITE, P.OPERATIONS_WRITE, P.AUDIT_LOG_READ, P.QUARANTINE_WRITE},
     {P.PII_READ, P.USERS_ADMIN}),
    (Role.CS, {P.ORDERS_READ, P.EXCEPTIONS_WRITE, P.TRACKING_WRITE, P.TEMPLATES_READ},
     {P.PII_READ, P.USERS_ADMIN, P.RULES_WRITE, P.RULES_PUBLISH, P.OUTBOX_WRITE, P.ORDERS_WRITE, P.AUDIT_LOG_READ, P.TEMPLATES_WRITE}),
    (Role.WAREHOUSE, {P.ORDERS_READ, P.INVENTORY_WRITE, P.FULFILLMENT_WRITE, P.TRACKING_WRITE, P.PII_READ},
     {P.USERS_ADMIN, P.RULES_WRITE, P.EXCEPTIONS_WRITE}),
    (Role.FINANCE, {P.ORDERS_READ, P.INVENTORY_READ}, {P.PII_READ, P.INVENTORY_WRITE, P.EXCEPTIONS_WRITE, P.USERS_ADMIN}),
    (Role.VIEWER, {P.ORDERS_READ, P.RULES_READ, P.OUTBOX_READ, P.QUARANTINE_READ, P.CHANNELS_READ},
     {P.PII_READ, P.USERS_ADMIN, P.AUDIT_LOG_READ} | {p for p in Permission if p.value.endswith(":write") or p is P.RULES_PUBLISH}),
])
def test_each_role_has_what_its_job_needs_and_nothing_dangerous(role, granted, refused):
    assert granted <= ROLE_PERMISSIONS[role]
    assert not refused & ROLE_PERMISSIONS[role]


def test_the_permission_strings_the_console_hides_menus_by_are_stable():
    assert {p.value for p in Permission} >= {
        "dashboard:read", "orders:read", "orders:write", "pii:read", "exceptions:write", "rules:read", "rules:write", "rules:publish",
        "inventory:read", "inventory:write", "fulfillment:write", "tracking:write", "channels:read", "channels:write", "templates:read",
        "templates:write", "outbox:read", "outbox:write", "quarantine:read", "quarantine:write", "imports:write", "operations:write",
        "audit_log:read", "users:admin",
    }


def test_a_user_is_who_they_logged_in_as_whatever_the_body_says_and_a_key_names_whom_it_acts_for():
    user = Principal("user", 1, "wang", "王", Role.CS)
    key = Principal("api_key", 7, "erp-sync", "erp-sync", Role.OPS)
    assert user.actor("10.0.0.1", on_behalf_of="boss").name == "wang"
    assert (user.actor().kind, key.actor().kind) == ("user", "api_key")
    assert key.actor().name == "key:erp-sync"
    assert key.actor(on_behalf_of="li").name == "key:erp-sync/li"
    assert key.actor(on_behalf_of="api").name == "key:erp-sync"  # the old default body value names nobody


def test_me_lists_the_roles_permissions_as_strings():
    me = Principal("user", 3, "cs1", None, Role.CS).me()
    assert me["kind"] == "user" and me["role"] == "cs" and me["role_label"] == "客服"
    assert "orders:read" in me["permissions"] and "pii:read" not in me["permissions"]


def test_passwords_need_eight_characters():
    assert password_problem("1234567") and password_problem(None) and password_problem("")
    assert password_problem("12345678") is None


def test_redact_masks_plaintext_phones_names_and_street_details_and_keeps_masks():
    document = {
        "recipient": {"name": "王小明", "phone": "13912345678", "address": {"province": "浙江省", "detail": "幸福路88号"}},
        "buyer": {"name": "张*", "phone": "138****0000"},
        "items": [{"title": "测试纯棉T恤", "qty": 2, "name": "not a person"}],
        "to_sealed": "gAAAA…",
        "address": "上海市青浦区华新镇演示路1号",
    }
    shown = redact(document)
    text = str(shown)
    assert "13912345678" not in text and "王小明" not in text and "幸福路88号" not in text and "演示路" not in text
    assert "to_sealed" not in shown
    assert shown["recipient"] == {"name": "王*", "phone": "139****5678", "address": {"province": "浙江省", "detail": "***"}}
    assert shown["buyer"] == {"name": "张*", "phone": "138****0000"}
    assert shown["items"] == document["items"]  # a product is not a person


def test_a_route_without_a_policy_line_stops_the_app():
    with pytest.raises(PolicyError, match="GET /api/v1/brand-new: no line"):
        check_routes([("GET", "/api/v1/orders", "/api/v1/orders", True), ("GET", "/api/v1/brand-new", "/api/v1/brand-new", True)])
    with pytest.raises(PolicyError, match="included with a prefix"):
        check_routes([("GET", "/api/v1/orders", "/orders", True)])
    with pytest.raises(PolicyError, match="only PUBLIC"):
        check_routes([("GET", "/api/v1/orders", "/api/v1/orders", False)])
    check_routes([("GET", "/", "/", False), ("GET", "/assets/app.js", "/assets/app.js", False)])  # the console's pages
    assert POLICY[("GET", "/api/v1/health")] is PUBLIC and POLICY[("GET", "/api/v1/me")] is AUTHENTICATED


def test_the_tracking_rate_limit_is_a_moving_window_per_client():
    limiter = RateLimiter(3, 60)  # memory:// (tests/integration/test_track_rate_limit.py: Redis shared by nodes)
    assert [limiter.hit("a") for _ in range(3)] == [None, None, None]
    wait = limiter.hit("a")
    assert wait is not None and 58.0 < wait <= 60.0  # until the first of the three leaves the window
    assert limiter.hit("b") is None  # another client has its own window


def test_the_matrix_in_docs_security_md_is_the_one_in_the_code():
    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text(encoding="utf-8")
    header = next(line for line in doc.splitlines() if line.startswith("| permission |"))
    roles = [Role(cell.split()[0]) for cell in header.strip("|").split("|")[1:]]
    documented: dict[Role, set[str]] = {role: set() for role in roles}
    for line in doc.splitlines():
        match = re.match(r"\| `([a-z_]+:[a-z]+)`[^|]*\|(.*)\|$", line)
        if match:
            for role, cell in zip(roles, match.group(2).split("|"), strict=True):
                if cell.strip() == "✓":
                    documented[role].add(match.group(1))
    assert documented == {role: {p.value for p in ROLE_PERMISSIONS[role]} for role in Role}
