"""Throttles of the unauthenticated routes (signup, login), which spend ~0.2 s of CPU on bcrypt
each and are where passwords are guessed and free accounts farmed.

* Per client address: ``VERITY_AUTH_PER_IP_PER_MIN`` signups + logins a minute.
* Per email: ``VERITY_LOGIN_PER_EMAIL_PER_HOUR`` logins an hour, and after
  ``VERITY_LOGIN_LOCKOUT_AFTER`` consecutive failures the email is locked for
  ``VERITY_LOGIN_LOCKOUT_BASE_S``, doubling with each further failure (at most an hour); a
  successful login clears the failures. A locked email answers 429 whatever the password, so a
  guess made during the lockout tells nothing.
* bcrypt runs on its own bounded pool (``VERITY_BCRYPT_CONCURRENCY``); when
  ``VERITY_BCRYPT_QUEUE`` checks already wait, the next one is shed with 503 + ``Retry-After``
  rather than queued behind them, so a flood cannot take the whole thread pool.

The counters live in the store (``ThrottleStore``): every process and Lambda container shares them.
The client address is the peer's, or, behind ``VERITY_TRUSTED_PROXY_HOPS`` proxies that append to
``X-Forwarded-For``, the address the nearest untrusted hop gave (never a value the client set).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import anyio
from starlette.requests import Request

from config import Settings
from errors import QuotaExceeded, ServiceUnavailable
from store.base import ThrottleStore

T = TypeVar("T")

LOCKOUT_CAP_S = 3600
FAILURES_KEPT_S = 24 * 3600


def client_address(request: Request, trusted_hops: int) -> str:
    peer = request.client.host if request.client else "unknown"
    if trusted_hops <= 0:
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    # The last ``trusted_hops`` entries were appended by our proxies; the one before is what the
    # outermost proxy saw. Anything further left is the client's own claim.
    return hops[-trusted_hops] if len(hops) >= trusted_hops else peer


def _email_key(email: str) -> str:
    # Stored hashed: the throttle table is no list of who tried to log in.
    return "email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


class AuthThrottle:
    def __init__(self, store: ThrottleStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.bcrypt = anyio.CapacityLimiter(settings.bcrypt_concurrency)

    def _refuse(
        self, message: str, retry_after_s: float, code: str = "rate_limited", kind: str | None = None
    ) -> QuotaExceeded:
        seconds = max(1, math.ceil(retry_after_s))
        return QuotaExceeded(
            f"{message}; retry in {seconds} s", code=code, kind=kind, headers={"Retry-After": str(seconds)}
        )

    def check_address(self, address: str, now: datetime) -> None:
        """One signup or login attempt from ``address``; 429 past the per-minute limit."""
        minute = now.strftime("%Y%m%d%H%M")
        allowed, _ = self.store.hit(
            f"ip:{address}", f"auth:{minute}", self.settings.auth_per_ip_per_min, int(now.timestamp()) + 120
        )
        if not allowed:
            raise self._refuse(
                f"too many signups and logins from your address "
                f"({self.settings.auth_per_ip_per_min} a minute)",
                60 - now.second,
                kind="auth_per_address",
            )

    def check_email(self, email: str, now: datetime) -> None:
        """One login attempt for ``email``: 429 while it is locked or past the hourly limit."""
        key = _email_key(email)
        failures, last_at = self.store.failures(key)
        settings = self.settings
        if failures >= settings.login_lockout_after and last_at is not None:
            locked_for = min(
                LOCKOUT_CAP_S, settings.login_lockout_base_s * 2 ** (failures - settings.login_lockout_after)
            )
            remaining = last_at + locked_for - now.timestamp()
            if remaining > 0:
                raise self._refuse(
                    f"this account is locked after {failures} failed logins", remaining, code="login_locked"
                )
        hour = now.strftime("%Y%m%d%H")
        allowed, _ = self.store.hit(
            key, f"login:{hour}", settings.login_per_email_per_hour, int(now.timestamp()) + 7200
        )
        if not allowed:
            raise self._refuse(
                f"too many logins for this email ({settings.login_per_email_per_hour} an hour)",
                3600 - now.minute * 60 - now.second,
                kind="login_per_email",
            )

    def login_failed(self, email: str, now: datetime) -> None:
        self.store.add_failure(_email_key(email), now.timestamp(), int(now.timestamp()) + FAILURES_KEPT_S)

    def login_succeeded(self, email: str) -> None:
        self.store.clear_failures(_email_key(email))

    async def run_bcrypt(self, work: Callable[[], T]) -> T:
        """``work`` (a signup or login, bcrypt inside) on the bounded pool, or 503 when too many
        already wait."""
        if self.bcrypt.statistics().tasks_waiting >= self.settings.bcrypt_queue:
            raise ServiceUnavailable(
                "too many password checks in progress", code="auth_busy", retry_after_s=2
            )
        return await anyio.to_thread.run_sync(work, limiter=self.bcrypt)


def throttle_of_app(state: Any, settings: Settings) -> AuthThrottle:
    """The app's throttle (``state.throttle``). An app given its accounts alone (tests,
    embedders) gets one in the same store, made once on first use."""
    throttle = getattr(state, "throttle", None)
    if throttle is None:
        from store.factory import make_throttle_store

        throttle = state.throttle = AuthThrottle(make_throttle_store(settings), settings)
    return throttle
