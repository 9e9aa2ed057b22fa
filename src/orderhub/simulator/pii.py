"""Buyer PII in the platforms' ciphertext and mask shapes; plaintext stays in the simulator."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

_KEY_INFO = base64.b64encode(b"\n\x06\x08\x01 \x07(\x01\x12>SIMKEY").decode()


def _b64(tag: str, plaintext: str, n: int) -> str:
    return base64.b64encode(hashlib.sha256(f"{tag}:{plaintext}".encode()).digest()[:n]).decode()


@lru_cache(maxsize=8192)
def douyin_phone(phone: str) -> str:
    """抖店 phone ciphertext `$$<index>*<payload>$1$$`; the index part is stable per number."""
    return f"$${_b64('dy-idx', phone, 24)}*{_b64('dy-ct', phone, 30)}{_KEY_INFO}$1$$"


@lru_cache(maxsize=8192)
def douyin_text(text: str) -> str:
    """抖店 name / address ciphertext `##<index>*<payload>#1##`."""
    return f"##{_b64('dy-idx', text, 24)}*{_b64('dy-ct', text, 30)}{_KEY_INFO}#1##"


@lru_cache(maxsize=8192)
def youzan(text: str) -> str:
    """有赞 ciphertext `$<base64>$1$`."""
    return f"${_b64('yz', text, 27)}$1$"


def mask_name(name: str, stars: int | None = None) -> str:
    """"张三" -> "张*" (抖店); JD writes two stars whatever the length ("张**")."""
    return name[:1] + "*" * (len(name) - 1 if stars is None else stars)


def mask_phone_douyin(phone: str) -> str:
    """抖店 mask_post_tel, as in the fixture: first and last digit kept ("1**********0")."""
    return phone[:1] + "*" * 10 + phone[-1:]


def mask_phone_jd(phone: str) -> str:
    """JD mask: "138****0000"."""
    return phone[:3] + "****" + phone[-4:]


class Vault:
    """Ciphertext -> plaintext, for a decrypt API; the payloads never carry the plaintext."""

    def __init__(self) -> None:
        self._plain: dict[str, str] = {}

    def remember(self, ciphertext: str, plaintext: str) -> str:
        self._plain[ciphertext] = plaintext
        return ciphertext

    def decrypt(self, ciphertext: str) -> str | None:
        return self._plain.get(ciphertext)

    def __len__(self) -> int:
        return len(self._plain)
