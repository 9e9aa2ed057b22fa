"""WeChat message encryption ("安全模式"), receiving end: the sha1 signatures and AES-256-CBC decryption.

The scheme of Tencent's WXBizMsgCrypt samples (sbzhu/weworkapi_python
callback_json_python3/WXBizJsonMsgCrypt.py, "Copyright (c) 1998-2020 Tencent Inc."):

- key = base64decode(EncodingAESKey + "="), 32 bytes; iv = key[:16];
- Encrypt = base64(AES-256-CBC(16 random bytes + 4-byte big-endian length of msg + msg + appid)),
  padded PKCS#7-style to a multiple of 32 bytes (PKCS7Encoder.block_size = 32);
- msg_signature = sha1 hex of the sorted, concatenated (token, timestamp, nonce, Encrypt); the
  plain-mode URL check signs (token, timestamp, nonce) the same way.

The simulator's sending end (simulator/wechat_crypto.py) is written separately on purpose.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_TEXT_LENGTH = 43  # an EncodingAESKey is 43 base64 characters (32 bytes without the "=")
PAD_BLOCK = 32
RANDOM_PREFIX = 16
LENGTH_FIELD = 4


class MessageCryptoError(ValueError):
    """An Encrypt text that does not decrypt to a well-formed message (or a malformed key)."""


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key behind a shop's EncodingAESKey."""
    if len(encoding_aes_key) != KEY_TEXT_LENGTH:
        raise MessageCryptoError(f"EncodingAESKey must be {KEY_TEXT_LENGTH} characters, not {len(encoding_aes_key)}")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError):
        raise MessageCryptoError("EncodingAESKey is not base64") from None
    if len(key) != 32:
        raise MessageCryptoError("EncodingAESKey does not decode to 32 bytes")
    return key


def sha1_signature(*parts: str) -> str:
    """sha1 hex over the parts sorted as strings and concatenated (WXBizMsgCrypt SHA1.getSHA1)."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def same_signature(expected: str, given: str) -> bool:
    """Constant-time, case-insensitive comparison of two hex signatures."""
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("utf-8", "replace"))


def decrypt_message(key: bytes, encrypted: str) -> tuple[bytes, str]:
    """Encrypt text -> (msg bytes, the appid it was encrypted for). Raises MessageCryptoError.

    Unlike the samples, the padding is checked byte by byte and the length field against the
    plaintext, so a damaged text fails here instead of yielding a truncated message.
    """
    try:
        sealed = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise MessageCryptoError("Encrypt is not base64") from None
    if not sealed or len(sealed) % 16:
        raise MessageCryptoError("Encrypt is not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    padded = decryptor.update(sealed) + decryptor.finalize()
    pad = padded[-1]
    if not 1 <= pad <= PAD_BLOCK or padded[-pad:] != bytes([pad]) * pad:
        raise MessageCryptoError("bad padding: wrong key, or a damaged Encrypt")
    plain = padded[:-pad]
    if len(plain) < RANDOM_PREFIX + LENGTH_FIELD:
        raise MessageCryptoError("plaintext is shorter than its header")
    length = int.from_bytes(plain[RANDOM_PREFIX : RANDOM_PREFIX + LENGTH_FIELD], "big")
    start = RANDOM_PREFIX + LENGTH_FIELD
    if start + length > len(plain):
        raise MessageCryptoError("message length field exceeds the plaintext")
    try:
        appid = plain[start + length :].decode("utf-8")
    except UnicodeDecodeError:
        raise MessageCryptoError("the trailing appid is not UTF-8") from None
    return plain[start : start + length], appid
