"""Buyer PII at rest: sealed with authenticated encryption, matched through keyed hashes.

- Sealing uses Fernet (AES-128-CBC + HMAC-SHA256, from the `cryptography` package) through a
  MultiFernet: the first key of ORDERHUB_PII_KEY seals, every listed key opens, so a key is
  rotated by putting the new key first, running `orderhub pii rotate`, then dropping the old one.
- Matching and search use HMAC-SHA256 keyed with ORDERHUB_HASH_KEY over the normalised phone and
  over its last 4 digits: equal phones give equal hashes, and without the key a hash cannot be
  reversed by trying the 10^4 possible last-4 values (or every mobile number). An address a person
  typed is hashed the same way, so two interceptions can tell two addresses apart without either
  being stored in plaintext.
- A message that must carry a street to its receiver (the WMS, a carrier) carries it sealed
  (`sealed`: {"address_detail": …}); `open_address` puts it back into the body just before the send.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from orderhub.domain.pii import SEALED, last4, normalize_phone

log = logging.getLogger(__name__)


class PiiKeyError(Exception):
    pass


class PiiVault:
    def __init__(self, pii_keys: list[str], hash_key: str) -> None:
        if not pii_keys:
            raise PiiKeyError("no PII key: set ORDERHUB_PII_KEY (generate one with `orderhub pii new-key`)")
        try:
            self._fernets = [Fernet(key.strip().encode()) for key in pii_keys]
        except (ValueError, TypeError) as exc:
            raise PiiKeyError("ORDERHUB_PII_KEY must be Fernet keys (32 url-safe base64 bytes), comma-separated") from exc
        self._sealer = MultiFernet(self._fernets)
        if len(hash_key) < 16:
            raise PiiKeyError("ORDERHUB_HASH_KEY must be at least 16 characters")
        self._hash_key = hash_key.encode()

    @classmethod
    def from_config(cls, pii_key: str | None, hash_key: str | None, data_dir: Path) -> PiiVault:
        """Keys from the configuration; without them (the embedded default) keys generated once
        into the data directory, readable by the owner only, so a restart reads what it sealed."""
        pii_key = pii_key or _key_file(data_dir / "pii.key", lambda: Fernet.generate_key().decode())
        hash_key = hash_key or _key_file(data_dir / "hash.key", lambda: os.urandom(32).hex())
        return cls([k for k in pii_key.split(",") if k.strip()], hash_key)

    # -- sealing --------------------------------------------------------------------------

    def seal(self, fields: dict[str, str]) -> str:
        return self._sealer.encrypt(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).decode()

    def open(self, sealed: str) -> dict[str, str]:
        try:
            return orjson.loads(self._sealer.decrypt(sealed.encode()))
        except InvalidToken:
            raise PiiKeyError("sealed PII cannot be opened with the configured keys (tampered, or sealed with a removed key)") from None

    def rotate(self, sealed: str) -> str:
        """Re-seal under the current (first) key."""
        return self._sealer.rotate(sealed.encode()).decode()

    def needs_rotation(self, sealed: str) -> bool:
        try:
            self._fernets[0].decrypt(sealed.encode())
        except InvalidToken:
            return True
        return False

    # -- keyed hashes ------------------------------------------------------------------------

    def _hash(self, purpose: bytes, value: str) -> str:
        return hmac.new(self._hash_key, purpose + b"\x00" + value.encode(), hashlib.sha256).hexdigest()

    def phone_hash(self, phone: str | None) -> str | None:
        normalized = normalize_phone(phone)
        return self._hash(b"phone", normalized) if normalized else None

    def last4_hash(self, phone: str | None) -> str | None:
        """Hash of the last 4 digits of a phone ("13800001234" or just "1234")."""
        digits = last4(phone) if phone and len(phone) > 4 else phone
        return self._hash(b"last4", digits) if digits and digits.isdigit() and len(digits) == 4 else None

    def address_hash(self, address: Mapping[str, Any]) -> str:
        """Hash of a whole plaintext address (its parts trimmed): the same address typed twice gives the same hash."""
        parts = {str(k): str(v).strip() for k, v in address.items() if v is not None and str(v).strip()}
        return self._hash(b"address", orjson.dumps(parts, option=orjson.OPT_SORT_KEYS).decode())

    # -- messages to a receiver that needs the plaintext ----------------------------------------

    def open_address(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`body` as its receiver must get it: the sealed street (`sealed`) put back as the `detail` of
        `address` and of `recipient.address`, the token dropped. A body without one is returned as it is.
        Raises PiiKeyError when the token cannot be opened (tampered, or sealed with a removed key)."""
        if not body.get(SEALED):
            return dict(body)
        street = self.open(str(body[SEALED])).get("address_detail")
        out = {k: v for k, v in body.items() if k != SEALED}
        if isinstance(out.get("address"), Mapping):
            out["address"] = {**out["address"], "detail": street}
        recipient = out.get("recipient")
        if isinstance(recipient, Mapping) and isinstance(recipient.get("address"), Mapping):
            out["recipient"] = {**recipient, "address": {**recipient["address"], "detail": street}}
        return out


def _key_file(path: Path, make: object) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()  # type: ignore[operator]
    # Written whole under a temporary name, then linked into place: two processes starting at once
    # (server and CLI) agree on the first key, and nobody reads a half-written one.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    finally:
        os.unlink(temporary)
    log.warning("generated %s (no key configured); back it up: sealed buyer data cannot be read without it", path.name)
    return value
