"""JWT: Verity's own tokens, and external issuers verified through their JWKS.

Nothing here trusts an unverified claim except ``iss``, read only to pick the verifier; the
chosen verifier then checks signature, algorithm (pinned per issuer), ``exp``/``iat``/``nbf``,
``iss`` and ``aud``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK

from errors import ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)

LEEWAY_S = 30
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]
# Real JWKS documents are a few KiB; a larger answer is a misconfiguration or an attack.
MAX_JWKS_BYTES = 256 * 1024


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


def check_jwks_url(url: str, insecure_hosts: Collection[str] = ()) -> None:
    """A JWKS URL must be https: over plain http anyone on the path could hand us keys and sign
    tokens for any user. ``insecure_hosts`` (``VERITY_JWKS_INSECURE_HOSTS``, tests and local
    development: a loopback issuer) may be plain http. ValueError otherwise."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # e.g. a malformed port or IPv6 literal
        raise ValueError(f"JWKS URL {url!r} is not a URL: {exc}") from exc
    if not host:
        raise ValueError(f"JWKS URL {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"JWKS URL {url!r} must not carry credentials")
    if parts.scheme == "https":
        return
    allowed = {h.strip().lower() for h in insecure_hosts if h.strip()}
    if parts.scheme == "http" and host.lower() in allowed:
        return
    raise ValueError(
        f"JWKS URL {url!r} must be https (plain http only for hosts in VERITY_JWKS_INSECURE_HOSTS, "
        "meant for a loopback issuer in tests and development)"
    )


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects from https to http by default: every hop must pass the same URL
    check as the configured one, or the fetch fails."""

    def __init__(self, insecure_hosts: Collection[str]) -> None:
        super().__init__()
        self.insecure_hosts = insecure_hosts

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        check_jwks_url(newurl, self.insecure_hosts)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class JwksVerifier:
    """One per external issuer, verifying its tokens with the keys its JWKS URL publishes.

    * The URL must be https (see ``check_jwks_url``); redirects are held to the same rule.
    * A fetch reads at most ``max_bytes`` (256 KiB; real documents are a few KiB) within
      ``timeout_s`` in all; anything larger, slower, not JSON, not ``{"keys": [...]}``, or any
      network or HTTP error is a failed fetch, never an exception out of ``verify``.
    * Keys are cached for ``ttl_s`` (``VERITY_JWKS_CACHE_TTL_S``); after that the next token
      refetches the document, even for a known ``kid``, so a key the issuer withdrew stops
      working within the TTL.
    * An unknown ``kid`` triggers at most one refetch per ``refetch_cooldown_s``, and so does a
      failed refetch, so neither a flood of forged kids nor an issuer outage turns into a flood
      of fetches.
    * Stale-if-error: when a refetch fails, the keys of the last good fetch keep verifying for
      at most ``stale_s`` past their TTL (an issuer's brief outage does not log every external
      user out); past that, or with no good fetch yet, tokens are answered 503
      ``issuer_unavailable``. An unknown ``kid`` while the last fetch failed is a 503 too (the
      issuer may have rotated to it); with a healthy fetch it stays 401 ``invalid_token``.
    """

    def __init__(
        self,
        config: ExternalIssuer,
        *,
        refetch_cooldown_s: float = 60.0,
        timeout_s: float = 3.0,
        ttl_s: float = 3600.0,
        stale_s: float = 900.0,
        max_bytes: int = MAX_JWKS_BYTES,
        insecure_hosts: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not config.algorithms or any(a.upper().startswith("HS") or a == "none" for a in config.algorithms):
            raise ValueError("external issuers need pinned asymmetric algorithms (e.g. RS256, ES256)")
        check_jwks_url(config.jwks_url, insecure_hosts)
        self.config = config
        self.cooldown_s = refetch_cooldown_s
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._opener = urllib.request.build_opener(_CheckedRedirects(tuple(insecure_hosts)))
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = float("-inf")  # the last good fetch
        self._last_attempt = float("-inf")
        self._healthy = True  # did the last attempt succeed
        self._lock = threading.Lock()
        self.fetches = 0

    def _download(self) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        request = urllib.request.Request(self.config.jwks_url, headers={"Accept": "application/json"})
        with self._opener.open(request, timeout=self.timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                raise ValueError(f"the JWKS document is larger than {self.max_bytes} bytes")
            body = bytearray()
            # read1: one socket read at a time, so that a server dripping bytes meets the
            # deadline instead of holding the issuer's lock (every token of it waits) for long.
            while chunk := response.read1(64 * 1024):
                body += chunk
                if len(body) > self.max_bytes:
                    raise ValueError(f"the JWKS document is larger than {self.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the JWKS document took longer than {self.timeout_s} s")
        return bytes(body)

    def _fetch(self) -> None:
        document = json.loads(self._download())
        # A broken document (an HTML error page, a bare list) is a failed fetch, not a crash.
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("the JWKS document has no key list")
        keys = {}
        for raw in document["keys"]:
            if not isinstance(raw, dict):
                continue
            try:
                keys[str(raw.get("kid", ""))] = PyJWK(raw)
            except Exception:  # noqa: BLE001 - PyJWTError, or KeyError/TypeError on odd fields
                log.warning("skipping unusable JWKS key", extra={"issuer": self.config.issuer})
        self._keys = keys
        self.fetches += 1

    def _key_for(self, kid: str) -> PyJWK:
        with self._lock:
            now = self._clock()
            expired = now - self._fetched_at >= self.ttl_s
            if (kid not in self._keys or expired) and now - self._last_attempt >= self.cooldown_s:
                self._last_attempt = now
                try:
                    self._fetch()
                except Exception as exc:  # noqa: BLE001 - whatever the issuer or network did: an outage
                    self._healthy = False
                    log.warning(
                        "JWKS fetch failed",
                        extra={"issuer": self.config.issuer, "error": f"{type(exc).__name__}: {exc}"},
                    )
                else:
                    self._healthy, self._fetched_at = True, now
            usable = now - self._fetched_at < self.ttl_s + self.stale_s
            key = self._keys.get(kid) if usable else None
            healthy = self._healthy
            retry_after = self.cooldown_s - (now - self._last_attempt)
        if key is not None:
            return key
        if not healthy:
            # The token may well be good: a 503 to retry, not a 401 telling the client it is bad.
            raise ServiceUnavailable(
                f"the keys of issuer {self.config.issuer} cannot be fetched right now; retry shortly",
                code="issuer_unavailable",
                retry_after_s=max(1, math.ceil(retry_after)),
            )
        raise Unauthorized("token signed by an unknown key", code="invalid_token")

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
