"""API keys: ``vk_live_`` + 32 random bytes in base62 + a CRC32 checksum.

The checksum makes keys scannable by secret scanners and lets a typo be rejected before any
store lookup. At rest only a digest is kept (SHA-256, or HMAC-SHA256 with a server pepper), so a
leaked table does not leak usable keys; lookups go by digest and the final comparison is constant
time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from dataclasses import dataclass

PREFIX = "vk_live_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # ceil(256 / log2(62))
_CHECK_LEN = 6  # ceil(32 / log2(62))
KEY_LENGTH = len(PREFIX) + _BODY_LEN + _CHECK_LEN
DISPLAY_PREFIX_LEN = len(PREFIX) + 6


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")) & 0xFFFFFFFF, _CHECK_LEN)


@dataclass(frozen=True)
class NewKey:
    secret: str  # shown to the user once, never stored
    digest: str
    display_prefix: str


def generate_key(pepper: str | None = None) -> NewKey:
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    secret = PREFIX + body + _checksum(body)
    return NewKey(
        secret=secret, digest=digest_key(secret, pepper), display_prefix=secret[:DISPLAY_PREFIX_LEN]
    )


def well_formed(candidate: str) -> bool:
    """Shape and checksum only: no store access, so typos and junk cost nothing."""
    if len(candidate) != KEY_LENGTH or not candidate.startswith(PREFIX):
        return False
    body, check = candidate[len(PREFIX) : -_CHECK_LEN], candidate[-_CHECK_LEN:]
    if any(c not in _ALPHABET for c in body + check):
        return False
    return hmac.compare_digest(_checksum(body), check)


def digest_key(secret: str, pepper: str | None = None) -> str:
    data = secret.encode("ascii")
    if pepper:
        return hmac.new(pepper.encode(), data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def digests_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
