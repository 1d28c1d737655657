"""Invites for ``VERITY_SIGNUP_POLICY=invite``: an admin asks for one for an email
(``POST /v1/admin/invites``) and the person signs up with it. Stateless: the invite is the email
and an expiry, signed with a key derived from the JWT secret, so nothing is stored; it admits one
signup because an email can only sign up once."""

from __future__ import annotations

from auth.accounts import derived_key, normalise_email
from auth.sealed import seal, unseal
from config import Settings
from errors import Forbidden

_PURPOSE = b"verity signup invites v1"


def make_invite(settings: Settings, email: str, now: float) -> tuple[str, float]:
    expires_at = now + settings.invite_ttl_s
    claims = {"email": normalise_email(email), "exp": int(expires_at)}
    return seal(derived_key(settings, _PURPOSE), claims), expires_at


def check_invite(settings: Settings, token: str | None, email: str, now: float) -> None:
    """Nothing when ``token`` invites ``email`` and has not expired; 403 ``invite_invalid`` otherwise."""
    refused = Forbidden("signing up needs a valid invite for this email", code="invite_invalid")
    claims = unseal(derived_key(settings, _PURPOSE), token, max_chars=1024)
    if claims is None or claims.get("email") != normalise_email(email):
        raise refused
    if not isinstance(claims.get("exp"), int) or claims["exp"] < now:
        raise Forbidden("the invite has expired; ask for a new one", code="invite_invalid")
