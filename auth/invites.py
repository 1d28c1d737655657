"""Invites for ``VERITY_SIGNUP_POLICY=invite``: an admin asks for one for an email
(``POST /v1/admin/invites``) and the person signs up with it. Stateless: the invite is the email
and an expiry, signed with a key derived from the JWT secret, so nothing is stored; it admits one
signup because an email can only sign up once."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from auth.accounts import derived_key, normalise_email
from config import Settings
from errors import Forbidden

_PURPOSE = b"verity signup invites v1"


def _sign(settings: Settings, payload: bytes) -> str:
    return base64.urlsafe_b64encode(
        hmac.new(derived_key(settings, _PURPOSE), payload, hashlib.sha256).digest()
    ).decode()


def make_invite(settings: Settings, email: str, now: float) -> tuple[str, float]:
    expires_at = now + settings.invite_ttl_s
    payload = json.dumps(
        {"email": normalise_email(email), "exp": int(expires_at)}, separators=(",", ":")
    ).encode()
    token = base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + _sign(settings, payload)
    return token, expires_at


def check_invite(settings: Settings, token: str | None, email: str, now: float) -> None:
    """Nothing when ``token`` invites ``email`` and has not expired; 403 ``invite_invalid`` otherwise."""
    refused = Forbidden("signing up needs a valid invite for this email", code="invite_invalid")
    if not token or "." not in token or len(token) > 1024:
        raise refused
    encoded, signature = token.rsplit(".", 1)
    try:
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        raise refused from None
    if not hmac.compare_digest(_sign(settings, payload), signature):
        raise refused
    if not isinstance(claims, dict) or claims.get("email") != normalise_email(email):
        raise refused
    if not isinstance(claims.get("exp"), int) or claims["exp"] < now:
        raise Forbidden("the invite has expired; ask for a new one", code="invite_invalid")
