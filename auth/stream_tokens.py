"""Stream tokens: how a browser authenticates a WebSocket, which cannot carry headers.

``POST /v1/stream/token`` (an API key or a JWT, like any route) gives a short-lived token for one
connection: ``/v1/stream?token=...``. The token is the caller's id, key id, scopes and expiry,
signed with a key derived from the JWT secret (like invites), so any instance can check it; it
is single use through the store's atomic counters (the ones that throttle logins), shared by
every instance, so a token seen in a log or a proxy cannot open a second session. Redeeming it
checks the account (and the key it came from) again: a disabled account or a revoked key stops
at the handshake.
"""

from __future__ import annotations

import secrets
from typing import Any

from auth.accounts import Accounts, derived_key
from auth.principal import Principal
from auth.sealed import seal, unseal
from config import Settings
from errors import Unauthorized
from store.base import ThrottleStore

STREAM_PATH = "/v1/stream"
_PURPOSE = b"verity stream tokens v1"
MAX_TOKEN_CHARS = 2048


def issue_stream_token(settings: Settings, principal: Principal, now: float) -> tuple[str, int]:
    """(token, seconds it stays valid) for one stream connection of ``principal``."""
    claims = {
        "sub": principal.user_id,
        "key": principal.key_id,
        "method": principal.method,
        "scopes": sorted(principal.scopes),
        "exp": int(now) + settings.stream_token_ttl_s,
        "jti": secrets.token_urlsafe(16),
    }
    return seal(derived_key(settings, _PURPOSE), claims), settings.stream_token_ttl_s


def _claims(settings: Settings, token: str | None, now: float) -> dict[str, Any]:
    claims = unseal(derived_key(settings, _PURPOSE), token, max_chars=MAX_TOKEN_CHARS)
    if claims is None or not isinstance(claims.get("exp"), int):
        raise Unauthorized("a stream needs ?token= from POST /v1/stream/token", code="invalid_stream_token")
    if claims["exp"] < now:
        raise Unauthorized("the stream token has expired; ask for a new one", code="invalid_stream_token")
    return claims


def redeem_stream_token(
    accounts: Accounts, counters: ThrottleStore, token: str | None, now: float
) -> Principal:
    """The caller the token was issued to, once (``counters``: the shared atomic counters);
    ``Unauthorized`` for a bad, expired or used token, and the account's own refusals (disabled,
    deleted, key revoked). Blocking (the store)."""
    claims = _claims(accounts.settings, token, now)
    allowed, _ = counters.hit(
        f"stream-token:{claims['jti']}", "use", limit=1, expires_at=claims["exp"] + 3600
    )
    if not allowed:
        raise Unauthorized("this stream token was used already", code="invalid_stream_token")
    user = accounts.active_user(accounts.store.get_user(str(claims["sub"])))
    key_id = claims.get("key")
    if key_id is not None and not accounts.key_in_force(user.id, str(key_id)):
        raise Unauthorized("the API key this token came from has been revoked", code="revoked_api_key")
    return Principal(
        user=user,
        method="api_key" if claims.get("method") == "api_key" else "jwt",
        key_id=key_id,
        scopes=frozenset(str(scope) for scope in claims.get("scopes", [])),
    )
