"""JWT: Verity's own tokens, and external issuers verified through their JWKS.

Nothing here trusts an unverified claim except ``iss``, read only to pick the verifier; the
chosen verifier then checks signature, algorithm (pinned per issuer), ``exp``/``iat``/``nbf``,
``iss`` and ``aud``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK

from errors import Unauthorized

log = logging.getLogger(__name__)

LEEWAY_S = 30
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]


@dataclass(frozen=True)
class Claims:
    subject: str
    issuer: str
    role: str
    email: str | None
    raw: dict[str, Any]


def _reject(exc: Exception) -> Unauthorized:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return Unauthorized("token has expired", code="token_expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return Unauthorized("token is not valid yet (nbf/iat)", code="token_not_yet_valid")
    reason = {
        jwt.InvalidAudienceError: "token audience is not accepted",
        jwt.InvalidIssuerError: "token issuer is not accepted",
        jwt.MissingRequiredClaimError: f"token lacks a required claim: {exc}",
        jwt.InvalidAlgorithmError: "token algorithm is not allowed",
    }
    for kind, message in reason.items():
        if isinstance(exc, kind):
            return Unauthorized(message, code="invalid_token")
    return Unauthorized("invalid token", code="invalid_token")


class OwnTokens:
    """Tokens Verity issues at login: HS256 with a >= 32-byte secret, or RS256/ES256 key pairs."""

    def __init__(
        self,
        *,
        algorithm: str,
        signing_key: Any,
        verifying_key: Any,
        issuer: str,
        audience: str,
        ttl_s: int,
    ) -> None:
        if algorithm not in ("HS256", "RS256", "ES256"):
            raise ValueError(f"unsupported JWT algorithm {algorithm}")
        if algorithm == "HS256" and len(signing_key) < 32:
            raise ValueError("HS256 secret must be at least 32 bytes")
        self.algorithm = algorithm
        self._signing_key = signing_key
        self._verifying_key = verifying_key
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s

    def issue(self, subject: str, *, role: str, email: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": subject,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + self.ttl_s,
            "role": role,
            "email": email,
        }
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm)

    def verify(self, token: str) -> Claims:
        try:
            claims = jwt.decode(
                token,
                self._verifying_key,
                algorithms=[self.algorithm],  # pinned: never taken from the token header
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise _reject(exc) from exc
        return Claims(claims["sub"], claims["iss"], claims.get("role", "user"), claims.get("email"), claims)


@dataclass
class ExternalIssuer:
    """Supabase, Cognito, Firebase, Auth0, ...: tokens signed by keys published as a JWKS."""

    issuer: str
    jwks_url: str
    audience: str
    algorithms: list[str] = field(default_factory=lambda: ["RS256"])


class JwksVerifier:
    """One per external issuer. Keys are cached; an unknown ``kid`` triggers at most one JWKS
    refetch per cooldown, so a flood of forged kids cannot turn into a flood of fetches."""

    def __init__(
        self, config: ExternalIssuer, *, refetch_cooldown_s: float = 60.0, timeout_s: float = 3.0
    ) -> None:
        if not config.algorithms or any(a.upper().startswith("HS") or a == "none" for a in config.algorithms):
            raise ValueError("external issuers need pinned asymmetric algorithms (e.g. RS256, ES256)")
        self.config = config
        self.cooldown_s = refetch_cooldown_s
        self.timeout_s = timeout_s
        self._keys: dict[str, PyJWK] = {}
        self._last_fetch = float("-inf")
        self._lock = threading.Lock()
        self.fetches = 0

    def _fetch(self) -> None:
        with urllib.request.urlopen(self.config.jwks_url, timeout=self.timeout_s) as response:
            document = json.loads(response.read())
        # A broken document (an HTML error page, a bare list) is a failed fetch, not a crash.
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("the JWKS document has no key list")
        keys = {}
        for raw in document["keys"]:
            if not isinstance(raw, dict):
                continue
            try:
                keys[raw.get("kid", "")] = PyJWK(raw)
            except jwt.PyJWTError:
                log.warning("skipping unusable JWKS key", extra={"issuer": self.config.issuer})
        self._keys = keys
        self.fetches += 1

    def _key_for(self, kid: str) -> PyJWK:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._last_fetch >= self.cooldown_s:
                self._last_fetch = time.monotonic()
                try:
                    self._fetch()
                except (OSError, ValueError) as exc:
                    log.warning("JWKS fetch failed", extra={"issuer": self.config.issuer, "error": str(exc)})
            key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("token signed by an unknown key", code="invalid_token")
        return key

    def verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _reject(exc) from exc
        if header.get("alg") not in self.config.algorithms:
            raise Unauthorized("token algorithm is not allowed", code="invalid_token")
        key = self._key_for(str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.config.algorithms,
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise _reject(exc) from exc
        return Claims(claims["sub"], claims["iss"], "user", claims.get("email"), claims)


class TokenVerifier:
    """Routes a bearer token to the verifier of its issuer."""

    def __init__(self, own: OwnTokens, external: list[JwksVerifier]) -> None:
        self.own = own
        self.external = {v.config.issuer: v for v in external}

    def verify(self, token: str) -> Claims:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError as exc:
            raise _reject(exc) from exc
        if not isinstance(issuer, str):  # e.g. a forged list: unhashable, and never an issuer
            raise Unauthorized("token issuer is not accepted", code="invalid_token")
        if issuer == self.own.issuer:
            return self.own.verify(token)
        if issuer in self.external:
            return self.external[issuer].verify(token)
        raise Unauthorized("token issuer is not accepted", code="invalid_token")
