"""Verification of pushes signed md5(app id + raw body + app secret), as 抖店 and 有赞 sign them."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from orderhub.adapters.channels.base import Authenticated, ShopDirectory
from orderhub.adapters.channels.http_common import header_value
from orderhub.domain.errors import ErrorCode, SignatureError


def md5_push_signature(app_id: str, body: bytes, app_secret: str) -> str:
    """md5 hex over app id + the exact body bytes + app secret."""
    return hashlib.md5(app_id.encode() + body + app_secret.encode()).hexdigest()


def verify_md5_push(
    channel: str, headers: Mapping[str, str], body: bytes, shops: ShopDirectory, *, id_header: str, sign_header: str
) -> Authenticated:
    """Find the app named by `id_header` and check `sign_header` against each of its secrets.

    The comparison is case-insensitive and constant-time. All shops of one app share its
    secret; checking each distinct one costs nothing and keeps a half-edited configuration
    from rejecting every push. The headers name only the app: each message names its shop.
    """
    app_id = header_value(headers, id_header)
    signature = header_value(headers, sign_header)
    if not app_id:
        raise SignatureError(ErrorCode.SIGNATURE_MISSING, f"header {id_header} is missing", id_header)
    if not signature:
        raise SignatureError(ErrorCode.SIGNATURE_MISSING, f"header {sign_header} is missing", sign_header)
    app_shops = shops.by_app_key(channel, app_id)
    if not app_shops:
        raise SignatureError(ErrorCode.UNKNOWN_SHOP, f"no {channel} shop is served by app {app_id}", id_header)
    given = signature.strip().lower().encode("utf-8", "replace")
    for secret in dict.fromkeys(shop.app_secret for shop in app_shops):
        if hmac.compare_digest(md5_push_signature(app_id, body, secret).encode(), given):
            return Authenticated(app_key=app_id, shop_id=None)
    raise SignatureError(ErrorCode.SIGNATURE_INVALID, f"{sign_header} does not match the body", sign_header)
