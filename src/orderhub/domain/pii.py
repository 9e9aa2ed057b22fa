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
