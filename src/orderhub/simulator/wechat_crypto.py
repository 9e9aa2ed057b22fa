"""WeChat message encryption, sending end, as the platform applies it to 视频号小店 pushes.

Written from Tencent's WXBizMsgCrypt description (random(16) + htonl(len) + msg + appid, PKCS#7
to 32-byte blocks, AES-256-CBC with iv = key[:16], base64; msg_signature = sha1 of the sorted
token / timestamp / nonce / Encrypt) without sharing code with OrderHub's receiving end.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def key_of(encoding_aes_key: str) -> bytes:
    key = base64.b64decode(encoding_aes_key + "=")
    if len(key) != 32:
        raise ValueError("an EncodingAESKey is 43 base64 characters")
    return key


def pkcs7_32(data: bytes) -> bytes:
    """Pad to a multiple of 32 bytes with n bytes of value n (1..32), as PKCS7Encoder.encode does."""
    n = 32 - len(data) % 32
    return data + bytes((n,)) * n


def encrypt(encoding_aes_key: str, appid: str, msg: bytes, random16: bytes) -> str:
    """The Encrypt text of `msg` for `appid`; `random16` is the 16-byte random prefix."""
    if len(random16) != 16:
        raise ValueError("the random prefix is 16 bytes")
    key = key_of(encoding_aes_key)
    framed = random16 + struct.pack("!I", len(msg)) + msg + appid.encode()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(pkcs7_32(framed)) + encryptor.finalize()).decode("ascii")


def signature(token: str, timestamp: str, nonce: str, *more: str) -> str:
    """signature (token, timestamp, nonce) or, with Encrypt / echostr, msg_signature."""
    items = sorted([token, timestamp, nonce, *more])
    digest = hashlib.sha1()
    for item in items:
        digest.update(item.encode())
    return digest.hexdigest()
