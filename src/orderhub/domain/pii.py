"""Buyer PII as OrderHub handles it: normalised phones and the masks shown to people without access.

Plaintext only ever exists in memory on its way to being sealed (adapters/pii_crypto.py) or
hashed; what is stored and shown is a mask or a keyed hash.
"""

from __future__ import annotations

import re

_NON_DIGITS = re.compile(r"\D+")
# Keys of NormalizedOrder.pii that are OrderHub's own results rather than platform ciphertexts
# (file imports arrive with plaintext, which is sealed and hashed before it is stored).
SEALED, PHONE_HASH, LAST4_HASH = "sealed", "phone_hash", "last4_hash"
RESOLVED_KEYS = frozenset({SEALED, PHONE_HASH, LAST4_HASH})
FIELDS = ("phone", "name", "address_detail")


def normalize_phone(phone: str | None) -> str | None:
    """Digits only, without the +86 / 0086 country prefix; None when too short to be a phone.

    "+86 138-0000-1234" -> "13800001234"; landlines keep their area code ("021-6888 1234" -> "02168881234").
    """
    if not phone:
        return None
    digits = _NON_DIGITS.sub("", phone)
    if len(digits) == 15 and digits.startswith("0086"):
        digits = digits[4:]
    elif len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    return digits if len(digits) >= 7 else None


def last4(phone: str | None) -> str | None:
    normalized = normalize_phone(phone)
    return normalized[-4:] if normalized else None


def mask_phone(phone: str | None) -> str | None:
    """"13800001234" -> "138****1234" (DESIGN.md §4.11)."""
    normalized = normalize_phone(phone)
    if not normalized:
        return None
    if len(normalized) < 8:
        return "*" * (len(normalized) - 4) + normalized[-4:]
    return normalized[:3] + "****" + normalized[-4:]


def mask_name(name: str | None) -> str | None:
    """"张三丰" -> "张*" : the family name only."""
    if not name:
        return None
    return name.strip()[:1] + "*"


def mask_address_detail(detail: str | None) -> str | None:
    """The street part is cut: OrderHub shows province/city/district, the detail only as "***"."""
    return "***" if detail else None


_PHONE_KEYS = frozenset({"phone", "mobile", "tel", "telephone", "receiver_phone", "buyer_phone"})
_NAME_KEYS = frozenset({"name", "receiver_name", "buyer_name"})
_DETAIL_KEYS = frozenset({"detail", "address_detail", "street"})
_SEALED_KEYS = frozenset({"sealed", "to_sealed", "pii_sealed"})


def redact(value: object) -> object:
    """A JSON document with any plaintext buyer PII masked, for people whose role may not see it.

    Orders store masks only, but a few documents carry what a person typed or a warehouse must
    receive (an interception's new address, its WMS message): phones and street details are masked
    wherever they appear, names inside a person record (one with a phone or an address), sealed
    copies dropped. Values that already hold a mask ("*") are kept as they are."""
    if isinstance(value, dict):
        person = any(k in value for k in _PHONE_KEYS) or "address" in value
        out: dict[object, object] = {}
        for key, item in value.items():
            if key in _SEALED_KEYS:
                continue
            if isinstance(item, str) and "*" not in item and (
                key in _PHONE_KEYS or key in _DETAIL_KEYS or (person and key in _NAME_KEYS) or key == "address"
            ):
                if key in _PHONE_KEYS:
                    out[key] = mask_phone(item) or "****"
                elif key in _NAME_KEYS:
                    out[key] = mask_name(item)
                else:
                    out[key] = mask_address_detail(item)
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value
