"""Which permission each API route needs: one line per (method, path template). docs/security.md.

A new route ships only with its line here: `create_app` refuses to start while any route under
/api/ has none (`check_routes`), and tests/e2e/test_auth_matrix.py calls every line as every role.
PUBLIC routes carry their own authentication (platform, WMS and carrier signatures) or none by
design (health, docs, login, the buyer's tracking page); AUTHENTICATED ones only need a valid login.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from orderhub.domain.access import Permission

P = Permission


class Access(Enum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"


PUBLIC, AUTHENTICATED = Access.PUBLIC, Access.AUTHENTICATED
API_PREFIX = "/api/"  # outside it: the console's static pages, which hold no data

POLICY: dict[tuple[str, str], Permission | Access] = {
    # docs and liveness
    ("GET", "/api/v1/openapi.json"): PUBLIC,
    ("GET", "/api/v1/docs"): PUBLIC,
    ("GET", "/api/v1/health"): PUBLIC,
    # signed platform, WMS and carrier traffic: the signature is the authentication
    ("POST", "/api/v1/webhooks/{channel}"): PUBLIC,
    ("GET", "/api/v1/webhooks/{channel}"): PUBLIC,
    ("POST", "/api/v1/webhooks/wms/{name}"): PUBLIC,
    ("POST", "/api/v1/webhooks/carriers/kuaidi100"): PUBLIC,
    ("POST", "/api/v1/webhooks/carriers/sf"): PUBLIC,
    # logging in, who am I, the buyer's tracking page (order number + last 4 digits, rate-limited)
    ("POST", "/api/v1/auth/login"): PUBLIC,
    ("POST", "/api/v1/auth/logout"): AUTHENTICATED,
    ("GET", "/api/v1/me"): AUTHENTICATED,
    ("GET", "/api/v1/track"): PUBLIC,
    # users, API keys, the audit log
    ("GET", "/api/v1/users"): P.USERS_ADMIN,
    ("POST", "/api/v1/users"): P.USERS_ADMIN,
    ("PATCH", "/api/v1/users/{user_id}"): P.USERS_ADMIN,
    ("GET", "/api/v1/api-keys"): P.USERS_ADMIN,
    ("POST", "/api/v1/api-keys"): P.USERS_ADMIN,
    ("DELETE", "/api/v1/api-keys/{key_id}"): P.USERS_ADMIN,
    ("GET", "/api/v1/audit-log"): P.AUDIT_LOG_READ,
    # orders, customers, the buyer's plaintext
    ("GET", "/api/v1/orders"): P.ORDERS_READ,
    ("GET", "/api/v1/orders/{order_id}"): P.ORDERS_READ,
    ("GET", "/api/v1/orders/{order_id}/events"): P.ORDERS_READ,
    ("GET", "/api/v1/orders/{order_id}/buyer"): P.PII_READ,
    ("GET", "/api/v1/customers/{customer_id}"): P.ORDERS_READ,
    ("GET", "/api/v1/dashboard"): P.DASHBOARD_READ,
    # channels, shops, intake
    ("GET", "/api/v1/channels"): P.CHANNELS_READ,
    ("GET", "/api/v1/shops"): P.CHANNELS_READ,
    ("POST", "/api/v1/shops/{channel}/{shop_id}/test"): P.CHANNELS_WRITE,
    ("GET", "/api/v1/quarantine"): P.QUARANTINE_READ,
    ("POST", "/api/v1/quarantine/{quarantine_id}/replay"): P.QUARANTINE_WRITE,
    ("POST", "/api/v1/imports"): P.IMPORTS_WRITE,
    ("PUT", "/api/v1/import-mappings/{name}"): P.IMPORTS_WRITE,
    ("GET", "/api/v1/import-mappings"): P.CHANNELS_READ,
    ("POST", "/api/v1/workers/pause"): P.OPERATIONS_WRITE,
    ("POST", "/api/v1/workers/resume"): P.OPERATIONS_WRITE,
    # degradation switches and the worker fleet (scaled mode): whoever sees the dashboard sees them
    ("GET", "/api/v1/switches"): P.DASHBOARD_READ,
    ("PUT", "/api/v1/switches/{name}"): P.OPERATIONS_WRITE,
    ("GET", "/api/v1/fleet"): P.DASHBOARD_READ,
    # inventory
    ("GET", "/api/v1/inventory"): P.INVENTORY_READ,
    ("GET", "/api/v1/inventory/check"): P.INVENTORY_READ,
    ("GET", "/api/v1/inventory/{sku}/ledger"): P.INVENTORY_READ,
    ("POST", "/api/v1/inventory/{sku}/adjust"): P.INVENTORY_WRITE,
    ("PUT", "/api/v1/inventory/{sku}/safety"): P.INVENTORY_WRITE,
    ("POST", "/api/v1/inventory/sync"): P.INVENTORY_WRITE,
    # rules
    ("GET", "/api/v1/rules"): P.RULES_READ,
    ("GET", "/api/v1/rules/{name}"): P.RULES_READ,
    ("GET", "/api/v1/rules/{name}/diff"): P.RULES_READ,
    ("GET", "/api/v1/audit-versions"): P.RULES_READ,
    ("PUT", "/api/v1/rules/{name}"): P.RULES_WRITE,
    ("POST", "/api/v1/rules/{name}/dry-run"): P.RULES_WRITE,
    ("POST", "/api/v1/rules/{name}/backtest"): P.RULES_WRITE,
    ("POST", "/api/v1/rules/{name}/backtest-jobs"): P.RULES_WRITE,
    ("POST", "/api/v1/rules/{name}/publish"): P.RULES_PUBLISH,
    ("POST", "/api/v1/rules/{name}/rollback"): P.RULES_PUBLISH,
    ("PUT", "/api/v1/rules/{name}/switches/{rule_id}"): P.RULES_PUBLISH,
    # the exception queue and order actions
    ("GET", "/api/v1/exceptions"): P.ORDERS_READ,
    ("POST", "/api/v1/orders/{order_id}/release"): P.EXCEPTIONS_WRITE,
    ("POST", "/api/v1/orders/{order_id}/resolve"): P.EXCEPTIONS_WRITE,
    ("POST", "/api/v1/orders/{order_id}/hold"): P.EXCEPTIONS_WRITE,
    ("POST", "/api/v1/orders/{order_id}/cancel"): P.EXCEPTIONS_WRITE,
    ("POST", "/api/v1/orders/{order_id}/address"): P.EXCEPTIONS_WRITE,
    ("POST", "/api/v1/orders/merge"): P.ORDERS_WRITE,
    ("POST", "/api/v1/orders/{order_id}/unmerge"): P.ORDERS_WRITE,
    # fulfillment: CS asks for an interception, a supervisor decides the conflicting ones
    ("POST", "/api/v1/orders/{order_id}/intercept"): P.EXCEPTIONS_WRITE,
    ("GET", "/api/v1/interceptions"): P.ORDERS_READ,
    ("POST", "/api/v1/interceptions/{instruction_id}/resolve"): P.FULFILLMENT_WRITE,
    # logistics tracking
    ("GET", "/api/v1/orders/{order_id}/tracking"): P.ORDERS_READ,
    ("GET", "/api/v1/tickets"): P.ORDERS_READ,
    ("POST", "/api/v1/tickets/{ticket_id}/close"): P.TRACKING_WRITE,
    # notification templates
    ("GET", "/api/v1/orders/{order_id}/notifications"): P.ORDERS_READ,
    ("GET", "/api/v1/notification-templates"): P.TEMPLATES_READ,
    ("PUT", "/api/v1/notification-templates/{name}/{channel}"): P.TEMPLATES_WRITE,
    ("POST", "/api/v1/notification-templates/{name}/{channel}/preview"): P.TEMPLATES_READ,
    # long operations: a job is readable by whoever may start its kind (hence one route per kind)
    ("GET", "/api/v1/jobs/backtest/{job_id}"): P.RULES_WRITE,
    ("GET", "/api/v1/jobs/import/{job_id}"): P.IMPORTS_WRITE,
    # the outbox
    ("GET", "/api/v1/outbox"): P.OUTBOX_READ,
    ("POST", "/api/v1/outbox/{message_id}/retry"): P.OUTBOX_WRITE,
}


class PolicyError(RuntimeError):
    """A route without a policy line (or one the policy cannot protect): the app must not start."""


def requirement(method: str, path: str) -> Permission | Access | None:
    return POLICY.get(("GET" if method == "HEAD" else method, path))


def check_routes(routes: Iterable[tuple[str, str, str, bool]]) -> None:
    """`routes`: (method, effective path, path the route itself knows, is a FastAPI route). Every
    API route needs its line; the dependency looks the route up by its own path, so an include
    prefix (which changes the effective one) is refused, and a non-FastAPI route (runs no
    dependency) may only be PUBLIC."""
    problems: list[str] = []
    for method, path, own_path, dependant in routes:
        if method == "HEAD" or not path.startswith(API_PREFIX):
            continue
        rule = requirement(method, path)
        if rule is None:
            problems.append(f"{method} {path}: no line in entrypoints/api/access_policy.py POLICY")
        elif own_path != path:
            problems.append(f"{method} {path}: included with a prefix; put the prefix on the APIRouter instead")
        elif not dependant and rule is not PUBLIC:
            problems.append(f"{method} {path}: not a FastAPI route, so only PUBLIC is possible")
    if problems:
        raise PolicyError("routes without an access policy (fail closed):\n  " + "\n  ".join(problems))
