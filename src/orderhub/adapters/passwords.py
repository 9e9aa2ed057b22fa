"""Password hashing with argon2id (argon2-cffi, RFC 9106 low-memory parameters: t=3, m=64 MiB, p=4).

Verifying a password costs ~0.15 s of CPU on purpose; callers run it in a worker thread. Unknown
usernames are verified against a dummy hash so a wrong name and a wrong password take as long.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()
_DUMMY = _hasher.hash("orderhub: no such user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches; with no stored hash (no such user) the same work is done and False returned."""
    try:
        return _hasher.verify(stored_hash or _DUMMY, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """The hash was made with weaker parameters than today's: store a new one after a good login."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
