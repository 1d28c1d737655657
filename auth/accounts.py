"""Account operations shared by the routes, the middleware and the ops CLI."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from auth import api_keys, passwords
from auth.principal import Principal
from auth.quotas import Clock, utc_now
from auth.tokens import Claims, ExternalIssuer, JwksVerifier, OwnTokens, TokenVerifier
from config import Settings
from errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from store.base import Store
from store.ids import new_id
from store.records import SCOPES, ApiKey, User, key_scopes, role_scopes

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
# Characters an unquoted address never holds (RFC 5322 specials and quotes): an address with them
# is markup or a header injection waiting for the first page or mail that shows it.
_SPECIALS = frozenset('<>()[]\\,;:"')
MAX_KEY_NAME = 64
MAX_GRACE_S = 7 * 86400
# Verifying against a real hash when the email is unknown keeps login timing uniform.


@functools.cache
def _dummy_hash() -> str:
    """What an unknown email's password is checked against: a hash of the real cost, so that the
    answer takes as long as for a real account (a cheaper one would tell which emails exist)."""
    return passwords.hash_password("not-a-real-password")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 254 or not email.isprintable() or _SPECIALS & set(email):
        raise InvalidInput("email is not a valid address", code="invalid_email")
    return email


def development_secret(path: Path) -> bytes:
    """Development only: a random secret made once and kept beside the SQLite file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def derived_key(settings: Settings, purpose: bytes) -> bytes:
    """An HMAC key for one purpose (upload forms, invites), derived from the JWT secret, or in
    development from the development secret: no extra secret to manage, none with a default."""
    if settings.jwt_secret is not None:
        base = settings.jwt_secret.get_secret_value().encode()
    else:
        base = development_secret(settings.dev_secret_path)  # type: ignore[arg-type]
    return hmac.new(base, purpose, hashlib.sha256).digest()


def build_token_verifier(settings: Settings) -> tuple[OwnTokens, TokenVerifier]:
    if settings.jwt_algorithm == "HS256":
        if settings.jwt_secret is not None:
            secret = settings.jwt_secret.get_secret_value().encode()
        elif settings.environment in ("development", "test"):
            secret = development_secret(settings.dev_secret_path)
        else:
            raise ValueError("VERITY_JWT_SECRET is required outside development")
        signing, verifying = secret, secret
    else:
        if not (settings.jwt_private_key_path and settings.jwt_public_key_path):
            raise ValueError(
                f"{settings.jwt_algorithm} needs VERITY_JWT_PRIVATE_KEY_PATH and _PUBLIC_KEY_PATH"
            )
        signing = settings.jwt_private_key_path.read_bytes()
        verifying = settings.jwt_public_key_path.read_bytes()
    own = OwnTokens(
        algorithm=settings.jwt_algorithm,
        signing_key=signing,
        verifying_key=verifying,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_s=settings.jwt_ttl_s,
    )
    # A JWKS URL that is not https (nor an allow-listed http host) is a ValueError here, at start.
    external = [
        JwksVerifier(
            ExternalIssuer(**cfg),
            refetch_cooldown_s=settings.jwks_refetch_cooldown_s,
            ttl_s=settings.jwks_cache_ttl_s,
            insecure_hosts=settings.jwks_insecure_hosts,
        )
        for cfg in settings.jwt_external_issuers
    ]
    return own, TokenVerifier(own, external)


class Accounts:
    def __init__(self, store: Store, settings: Settings, *, clock: Clock = utc_now) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.own_tokens, self.tokens = build_token_verifier(settings)
        self._pepper = settings.api_key_pepper.get_secret_value() if settings.api_key_pepper else None

    # ------------------------------------------------------------------------------------------
    def _new_key(self, user_id: str, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
        name = name.strip() or "default"
        if len(name) > MAX_KEY_NAME:
            raise InvalidInput(f"key name is longer than {MAX_KEY_NAME} characters", code="invalid_key_name")
        generated = api_keys.generate_key(self._pepper)
        record = ApiKey(
            id=new_id("key"),
            user_id=user_id,
            name=name,
            digest=generated.digest,
            display_prefix=generated.display_prefix,
            created_at=_iso(self.clock()),
            scopes=scopes,
        )
        return record, generated.secret

    def signup(self, email: str, password: str, *, role: str = "user") -> tuple[User, ApiKey, str]:
        user = User(
            id=new_id("usr"),
            email=normalise_email(email),
            password_hash=passwords.hash_password(password),
            created_at=_iso(self.clock()),
            role=role,  # type: ignore[arg-type]
        )
        key, secret = self._new_key(user.id, "default", list(role_scopes(user.role)))
        self.store.create_user(user, key)
        return user, key, secret

    def login(self, email: str, password: str) -> dict[str, Any]:
        try:
            address = normalise_email(email)
        except InvalidInput:
            address = ""
        user = self.store.get_user_by_email(address) if address else None
        # Accounts of external issuers store "!" (no password): checked against the dummy too, in
        # the same time, so that no answer says which kind of account an email has.
        has_password = user is not None and passwords.is_password_hash(user.password_hash)
        ok = passwords.verify_password(password, user.password_hash if has_password else _dummy_hash())
        if user is None or not has_password or not ok:
            raise Unauthorized("email or password is wrong", code="invalid_credentials")
        if user.disabled:
            raise Forbidden("this account is disabled", code="account_disabled")
        token = self.own_tokens.issue(user.id, role=user.role, email=user.email)
        return {"access_token": token, "token_type": "bearer", "expires_in": self.settings.jwt_ttl_s}

    # authentication --------------------------------------------------------------------------
    def key_in_force(self, user_id: str, key_id: str) -> bool:
        """Whether the user's key ``key_id`` still authenticates (not revoked, not past a roll's
        grace period): for credentials derived from a key, such as stream tokens."""
        now = _iso(self.clock())
        return any(
            key.id == key_id and key.revoked_at is None and (key.expires_at is None or key.expires_at > now)
            for key in self.store.list_keys(user_id)
        )

    def active_user(self, user: User | None) -> User:
        """``user`` if it exists and is not disabled; else the refusal a request would get."""
        if user is None:
            raise Unauthorized("the account no longer exists", code="invalid_credentials")
        if user.disabled:
            raise Forbidden("this account is disabled", code="account_disabled")
        return user

    def authenticate_key(self, secret: str) -> Principal:
        if not api_keys.well_formed(secret):  # checksum first: no store lookup for typos
            raise Unauthorized("API key is malformed (bad checksum)", code="invalid_api_key")
        digest = api_keys.digest_key(secret, self._pepper)
        key = self.store.get_key_by_digest(digest)
        if key is None or not api_keys.digests_match(key.digest, digest):
            raise Unauthorized("API key is not valid", code="invalid_api_key")
        now = _iso(self.clock())
        if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
            raise Unauthorized("API key has been revoked", code="revoked_api_key")
        user = self.active_user(self.store.get_user(key.user_id))
        if key.last_used_at is None or key.last_used_at[:16] != now[:16]:
            self.store.touch_key(key.id, key.digest, now)  # at most one write per key per minute
        scopes = frozenset(key_scopes(key.scopes, user.role))
        return Principal(user=user, method="api_key", key_id=key.id, scopes=scopes)

    def authenticate_bearer(self, token: str) -> Principal:
        claims = self.tokens.verify(token)
        if claims.issuer == self.own_tokens.issuer:
            return self._session(self.active_user(self.store.get_user(claims.subject)))
        # External issuer: one Verity account per (issuer, subject), made on first sight.
        user_id = "usr_ext_" + hashlib.sha256(f"{claims.issuer}|{claims.subject}".encode()).hexdigest()[:24]
        user = self.store.get_user(user_id)
        if user is None:
            user = self._create_external(user_id, claims)
        return self._session(self.active_user(user))

    @staticmethod
    def _session(user: User) -> Principal:
        """A login session (a JWT) keeps every right of its role: scopes limit keys only."""
        return Principal(user=user, method="jwt", scopes=frozenset(role_scopes(user.role)))

    def _create_external(self, user_id: str, claims: Claims) -> User | None:
        """The account of an external identity. Its ``email`` claim is kept only when the issuer
        says it verified it (``email_verified``): many issuers let a user type any address, and
        an unverified claim would let one take the address of someone else (or squat it before
        they sign up). Otherwise, and when the verified address belongs to another account
        already, the account gets a synthetic address that cannot collide."""
        synthetic = f"{claims.subject}@{user_id}.external".lower()
        flag = claims.raw.get("email_verified")
        verified = flag is True or flag == "true"  # some issuers (Cognito) send the string
        addresses = [synthetic]
        if verified and isinstance(claims.email, str):
            with contextlib.suppress(InvalidInput):  # held to the same rules as a signup's address
                addresses.insert(0, normalise_email(claims.email))
        for email in addresses:
            user = User(id=user_id, email=email, password_hash="!", created_at=_iso(self.clock()))
            try:
                self.store.create_user(user, None)
                return user
            except Conflict:
                existing = self.store.get_user(user_id)
                if existing is not None:  # a concurrent first request created it
                    return existing
                # else: the address belongs to another account; try the next one
        return None

    # keys ------------------------------------------------------------------------------------
    def create_key(
        self,
        user: User,
        name: str,
        *,
        scopes: Collection[str] | None = None,
        within: Collection[str] | None = None,
        replaces_one: bool = False,
    ) -> tuple[ApiKey, str]:
        """A new key; at most ``VERITY_MAX_KEYS_PER_USER`` unrevoked ones (a roll's successor,
        ``replaces_one``, does not count: the key it replaces is on its way out).

        ``scopes`` (default: ``within``, else every scope of the user's role) must be known, and
        `admin` only for an admin. ``within`` is what the caller holds: a key may grant only
        scopes it has itself, or a `keys`-only key would mint a key that detects or reads."""
        granted = self._scopes_for(user, scopes, within)
        if not replaces_one:
            live = sum(1 for k in self.store.list_keys(user.id) if k.revoked_at is None)
            if live >= self.settings.max_keys_per_user:
                raise Conflict(
                    f"at most {self.settings.max_keys_per_user} keys per account; revoke one first",
                    code="too_many_keys",
                )
        key, secret = self._new_key(user.id, name, granted)
        self.store.add_key(key)
        return key, secret

    @staticmethod
    def _scopes_for(user: User, asked: Collection[str] | None, within: Collection[str] | None) -> list[str]:
        allowed = role_scopes(user.role)
        if asked is None:
            asked = [s for s in allowed if within is None or s in within]
        unknown = sorted(set(asked) - set(SCOPES))
        if unknown:
            raise InvalidInput(
                f"unknown scopes {unknown}; a key's scopes are among {list(SCOPES)}", code="invalid_scope"
            )
        if not asked:
            raise InvalidInput("a key needs at least one scope", code="invalid_scope")
        if "admin" in asked and "admin" not in allowed:
            raise InvalidInput("the admin scope is for admin accounts only", code="invalid_scope")
        beyond = sorted(set(asked) - set(within if within is not None else allowed))
        if beyond:
            raise Forbidden(
                f"a key can grant only scopes its maker holds; missing {beyond}", code="insufficient_scope"
            )
        return [s for s in SCOPES if s in asked]  # the canonical order, without duplicates

    def revoke_key(self, user: User, key_id: str) -> ApiKey:
        key = self.store.revoke_key(user.id, key_id, _iso(self.clock()))
        if key is None:
            raise NotFound("no such key", code="key_not_found")
        return key

    def roll_key(
        self, user: User, key_id: str, grace_s: int, *, within: Collection[str] | None = None
    ) -> tuple[ApiKey, str, ApiKey]:
        """A successor with the rolled key's scopes, shown once; ``within`` is what the caller
        holds, which must cover them (a roll hands over a key as strong as the old one)."""
        if not 0 <= grace_s <= MAX_GRACE_S:
            raise InvalidInput(f"grace_seconds must be between 0 and {MAX_GRACE_S}", code="invalid_grace")
        old = next((k for k in self.store.list_keys(user.id) if k.id == key_id), None)
        # A key that was already rolled (expires_at set) has its successor: rolling it again would
        # push its expires_at out, keeping the old key alive for ever or reviving an expired one.
        if old is None or old.revoked_at is not None or old.expires_at is not None:
            raise NotFound("no such active key", code="key_not_found")
        new, secret = self.create_key(
            user, old.name, scopes=key_scopes(old.scopes, user.role), within=within, replaces_one=True
        )
        now = self.clock()
        expires = None if grace_s == 0 else _iso(now + timedelta(seconds=grace_s))
        rolled = self.store.revoke_key(user.id, key_id, _iso(now), expires_at=expires, only_active=True)
        if rolled is None:  # a concurrent roll (or revoke) won: its successor is the one
            self.store.revoke_key(user.id, new.id, _iso(now))
            raise NotFound("no such active key", code="key_not_found")
        return new, secret, rolled
