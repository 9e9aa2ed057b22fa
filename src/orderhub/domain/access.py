"""Who may do what: roles, permissions, the role → permission matrix, and who did something.

The matrix is data (docs/security.md shows it as a table); the API checks one permission per
route (entrypoints/api/access_policy.py), the console hides menus by the same strings (GET /me).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OPS = "ops"  # 运营
    CS = "cs"  # 客服
    WAREHOUSE = "warehouse"  # 仓管
    FINANCE = "finance"  # 财务
    VIEWER = "viewer"


ROLE_LABELS_ZH: dict[Role, str] = {
    Role.ADMIN: "管理员",
    Role.OPS: "运营",
    Role.CS: "客服",
    Role.WAREHOUSE: "仓管",
    Role.FINANCE: "财务",
    Role.VIEWER: "只读",
}


class Permission(StrEnum):
    """Stable strings: the console hides its menus by them."""

    DASHBOARD_READ = "dashboard:read"
    ORDERS_READ = "orders:read"
    ORDERS_WRITE = "orders:write"  # merge / unmerge
    PII_READ = "pii:read"  # plaintext buyer name, phone and street address
    EXCEPTIONS_WRITE = "exceptions:write"  # release / resolve / hold / cancel / address, CS interceptions
    RULES_READ = "rules:read"
    RULES_WRITE = "rules:write"  # drafts, dry runs, back-tests
    RULES_PUBLISH = "rules:publish"  # publish, roll back, rule switches
    INVENTORY_READ = "inventory:read"
    INVENTORY_WRITE = "inventory:write"
    FULFILLMENT_WRITE = "fulfillment:write"  # a supervisor's decision on a conflicting interception
    TRACKING_WRITE = "tracking:write"  # close exception tickets
    CHANNELS_READ = "channels:read"
    CHANNELS_WRITE = "channels:write"
    TEMPLATES_READ = "templates:read"
    TEMPLATES_WRITE = "templates:write"
    OUTBOX_READ = "outbox:read"
    OUTBOX_WRITE = "outbox:write"
    QUARANTINE_READ = "quarantine:read"
    QUARANTINE_WRITE = "quarantine:write"
    IMPORTS_WRITE = "imports:write"  # file imports and their column mappings
    OPERATIONS_WRITE = "operations:write"  # pause / resume the workers
    AUDIT_LOG_READ = "audit_log:read"
    USERS_ADMIN = "users:admin"  # users and API keys


P = Permission
_READ_NON_PII = frozenset({
    P.DASHBOARD_READ, P.ORDERS_READ, P.RULES_READ, P.INVENTORY_READ, P.CHANNELS_READ, P.TEMPLATES_READ, P.OUTBOX_READ, P.QUARANTINE_READ,
})

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPS: _READ_NON_PII | {
        P.ORDERS_WRITE, P.EXCEPTIONS_WRITE, P.RULES_WRITE, P.RULES_PUBLISH, P.INVENTORY_WRITE, P.FULFILLMENT_WRITE, P.TRACKING_WRITE,
        P.CHANNELS_WRITE, P.TEMPLATES_WRITE, P.OUTBOX_WRITE, P.QUARANTINE_WRITE, P.IMPORTS_WRITE, P.OPERATIONS_WRITE, P.AUDIT_LOG_READ,
    },
    # CS answers "where is it", changes what the buyer asks for; stock levels answer "when will it ship"
    Role.CS: frozenset({P.DASHBOARD_READ, P.ORDERS_READ, P.EXCEPTIONS_WRITE, P.TRACKING_WRITE, P.TEMPLATES_READ, P.INVENTORY_READ}),
    # the warehouse prints labels and re-ships: the one role besides admin that sees the buyer's address
    Role.WAREHOUSE: frozenset({P.DASHBOARD_READ, P.ORDERS_READ, P.INVENTORY_READ, P.INVENTORY_WRITE, P.FULFILLMENT_WRITE, P.TRACKING_WRITE,
                               P.PII_READ}),
    Role.FINANCE: frozenset({P.DASHBOARD_READ, P.ORDERS_READ, P.INVENTORY_READ}),
    # read-only, no PII; not the audit log either (it names staff and their IP addresses)
    Role.VIEWER: _READ_NON_PII,
}

MIN_PASSWORD_LENGTH = 8


def password_problem(password: str | None) -> str | None:
    """Why a password is refused, or None. Length is what matters against guessing (NIST 800-63B)."""
    if not password or len(password) < MIN_PASSWORD_LENGTH:
        return f"the password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > 256:
        return "the password may have at most 256 characters"
    return None


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something, as the audit log and the order event log record it.

    `name` is what event logs show: a username, `key:<api key name>` (with `/<on behalf of>` when an
    integration names the person it acts for), `cli:<os user>` or `system`."""

    name: str
    kind: str = "system"  # user | api_key | cli | system
    ip: str | None = None

    def __str__(self) -> str:
        return self.name


SYSTEM = Actor("system")


def as_actor(who: Actor | str) -> Actor:
    """Services accept an Actor or, from older callers and background jobs, a plain name."""
    return who if isinstance(who, Actor) else Actor(who or "system")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a logged-in user or an API key."""

    kind: str  # user | api_key
    id: int
    username: str  # the user's name; for a key its name
    display_name: str | None
    role: Role

    @property
    def permissions(self) -> frozenset[Permission]:
        return ROLE_PERMISSIONS[self.role]

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions

    def actor(self, ip: str | None = None, on_behalf_of: str | None = None) -> Actor:
        """Users are who they logged in as (a name in the request body is ignored); an integration's
        key may name the person it acts for, recorded beside the key, never instead of it."""
        if self.kind == "user":
            return Actor(self.username, "user", ip)
        name = f"key:{self.username}"
        if on_behalf_of and on_behalf_of.strip() and on_behalf_of.strip() != "api":
            name = f"{name}/{on_behalf_of.strip()}"
        return Actor(name[:64], "api_key", ip)

    def me(self) -> dict[str, object]:
        return {
            "id": self.id, "username": self.username, "display_name": self.display_name, "role": self.role.value,
            "role_label": ROLE_LABELS_ZH[self.role], "permissions": sorted(p.value for p in self.permissions), "kind": self.kind,
        }
