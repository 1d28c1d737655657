"""Plain ASGI authentication + quota middleware.

Answers 401/403/429/503 itself in the one JSON error shape, puts the ``Principal`` on
``scope["state"]["principal"]``, and adds RateLimit headers to every metered response. Public
paths are listed explicitly; everything else needs ``x-api-key`` or ``Authorization: Bearer``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.accounts import Accounts
from auth.principal import Principal
from auth.quotas import QuotaOutcome, consume, meter_for, settle
from auth.stream_tokens import STREAM_PATH, redeem_stream_token
from auth.throttle import throttle_of_app
from errors import Forbidden, QuotaExceeded, ServiceUnavailable, Unauthorized, VerityError, send_error

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset(
    {
        "/",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/metrics",
        "/v1/models",
        # The public keys that verify signed results: for anyone, like any JWK Set.
        "/.well-known/jwks.json",
        "/v1/auth/signup",
        "/v1/auth/login",
        # Local upload forms carry their own authorisation: an HMAC signature over their policy.
        "/v1/uploads/local",
    }
)
# /static/: the page's script and style sheet (api/web.py), public like the page itself.
PUBLIC_PREFIXES = ("/health", "/docs/", "/static/")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _accounts_of(scope: Scope) -> Accounts:
    accounts: Accounts | None = getattr(scope["app"].state, "accounts", None)
    if accounts is None:
        raise ServiceUnavailable("the service is starting", code="starting")
    return accounts


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


class AuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not is_public(scope["path"]):
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http" or is_public(scope["path"]):  # lifespan, public routes
            await self.app(scope, receive, send)
            return
        outcome: QuotaOutcome | None = None
        try:
            accounts, principal = await self._principal(scope)
            path = scope["path"].rstrip("/") or "/"
            meter = meter_for(scope["method"], path, accounts.settings)
            # Meter only endpoints this app serves: a POST to a route that does not exist
            # is a 404, not a spent request.
            if meter is not None and path in scope["app"].state.route_paths:
                admitted_at = accounts.clock()
                outcome = await anyio.to_thread.run_sync(
                    consume, accounts.store, principal.user, meter, accounts.settings, admitted_at
                )
                if not outcome.decision.allowed:
                    daily = outcome.decision.scope == "daily"
                    what = (
                        f"daily limit of {outcome.decision.daily_limit} units"
                        if daily
                        else f"{meter.endpoint} limit of {meter.per_minute} requests per minute"
                    )
                    raise QuotaExceeded(
                        f"{what} reached; retry in {outcome.retry_after_s} s",
                        code="daily_quota_exceeded" if daily else "rate_limited",
                        headers=outcome.headers,
                    )
        except VerityError as exc:
            await send_error(scope, send, exc)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        if outcome is None:
            await self.app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                settled = await self._settle(accounts, principal, outcome, admitted_at, message, state)
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in settled.headers.items()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_limits)

    @staticmethod
    async def _settle(
        accounts: Accounts,
        principal: Principal,
        outcome: QuotaOutcome,
        admitted_at: datetime,
        start: Message,
        state: dict[str, Any],
    ) -> QuotaOutcome:
        """What the answered request costs: the units its route counted (``state["cost_units"]``,
        1 when it counted none), or nothing for a failure on the server's side (5xx) or a replay
        of a job already submitted. Settling never fails the response: a store error is logged
        and the admission's own count stands."""
        headers = start.get("headers", [])
        replayed = any(k.lower() == b"idempotent-replayed" and v == b"true" for k, v in headers)
        units = 0 if start["status"] >= 500 or replayed else int(state.get("cost_units", 1))
        if units == 1:  # the admission's unit is the whole cost (most images): no store call, no thread
            return outcome
        try:
            return await anyio.to_thread.run_sync(
                settle, accounts.store, principal.user, outcome, units, admitted_at
            )
        except Exception:  # the answer is ready; the count is best effort now
            log.exception("could not settle the cost of a request", extra={"units": units})
            return outcome

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket is authenticated like a request (x-api-key or Bearer in the handshake), or,
        on the stream, by the single-use ``?token=`` of ``POST /v1/stream/token`` (browsers cannot
        set headers on a WebSocket). One that cannot be is refused before it is accepted (close
        1008: the server answers the handshake with 403), never let through to a route."""
        try:
            token = _query_token(scope)
            if token is not None and scope["path"] == STREAM_PATH:
                accounts = _accounts_of(scope)
                counters = throttle_of_app(scope["app"].state, accounts.settings).store
                now = accounts.clock().timestamp()
                principal = await anyio.to_thread.run_sync(
                    redeem_stream_token, accounts, counters, token, now
                )
            else:
                _, principal = await self._principal(scope)
            if scope["path"] == STREAM_PATH and not principal.has_scope("detect"):
                raise Forbidden("this API key lacks the `detect` scope", code="insufficient_scope")
        except VerityError as exc:
            await receive()  # the websocket.connect event, answered by the refusal
            await send({"type": "websocket.close", "code": 1008, "reason": exc.code})
            return
        except Exception:  # a store outage or a bug: refuse the handshake rather than leave it hanging
            log.exception("could not authenticate a WebSocket handshake")
            await receive()
            await send({"type": "websocket.close", "code": 1011, "reason": "internal_error"})
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _principal(self, scope: Scope) -> tuple[Accounts, Principal]:
        """Who sends this request or handshake (x-api-key or Bearer), or a ``VerityError``."""
        accounts = _accounts_of(scope)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return accounts, await anyio.to_thread.run_sync(self._authenticate, accounts, headers)

    @staticmethod
    def _authenticate(accounts: Accounts, headers: dict[str, str]):
        api_key = headers.get("x-api-key")
        authorization = headers.get("authorization", "")
        if api_key:
            return accounts.authenticate_key(api_key.strip())
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return accounts.authenticate_bearer(token.strip())
        raise Unauthorized(
            "authentication required: send x-api-key or Authorization: Bearer", code="unauthenticated"
        )
