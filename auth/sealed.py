"""Signed, stateless tokens: JSON claims and an HMAC-SHA256 of them under a key derived for one
purpose (``auth.accounts.derived_key``), as ``base64url(claims).base64url(signature)``. Signup
invites and stream tokens are made this way; what the claims mean is their modules' business."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any


def _signature(key: bytes, payload: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()).decode()


def seal(key: bytes, claims: dict[str, Any]) -> str:
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + _signature(key, payload)


def unseal(key: bytes, token: str | None, *, max_chars: int) -> dict[str, Any] | None:
    """The claims of a token sealed with ``key``; None for anything else (missing, too long,
    malformed, or signed with another key)."""
    if not token or "." not in token or len(token) > max_chars:
        return None
    encoded, signature = token.rsplit(".", 1)
    try:
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(_signature(key, payload).encode(), signature.encode()):
        return None
    return claims if isinstance(claims, dict) else None
