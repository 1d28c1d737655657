"""Plain ASGI middleware: request metrics, request ids, and a body-size cap enforced before the
body is read."""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Iterable

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import metrics
from config import Settings
from errors import NotFound, TooLarge, Unauthorized, VerityError, send_error
from logs import request_id_var
from store.ids import new_id

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SET_HERE = {b"x-request-id", b"x-content-type-options"}


def route_template(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """The template of the route ``scope`` goes to (``/v1/jobs/{job_id}``), matched as the router
    would, so that a request answered before routing (401, 429, 413) is labelled too; a path of no
    route is ``metrics.UNMATCHED_ROUTE``. A metric label must never be the raw path: ids would
    make one series per job, key or user, and anyone could add series by sending paths."""
    partial: BaseRoute | None = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _template_of(route)
        if match is Match.PARTIAL and partial is None:
            partial = route  # the path is a route's, the method is not (a 405)
    return _template_of(partial) if partial is not None else metrics.UNMATCHED_ROUTE


def _template_of(route: BaseRoute) -> str:
    path = getattr(route, "path", None) or metrics.UNMATCHED_ROUTE
    return f"{path}/{{path}}" if isinstance(route, Mount) else path


class MetricsMiddleware:
    """Outermost: one ``verity_request_duration_seconds`` observation per HTTP request (route
    template, method, status) once its answer is sent, and a media or quota rejection counted
    from the error code the error renderers left in the request's state (``errors.note_error``).
    The routes come from ``app.state.template_routes`` (``api.app.create_app``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the live stream counts its sessions and frames itself
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # Matched before the app runs: routing rewrites the scope (a mount's root_path).
        route = route_template(getattr(scope["app"].state, "template_routes", ()), scope)
        state = scope.setdefault("state", {})
        status = 500  # an exception that escapes every handler is answered 500 outside

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            metrics.request_answered(
                route,
                scope["method"],
                status,
                time.perf_counter() - started,
                state.get("error_code"),
                state.get("quota_kind"),
            )


METRICS_PATH = "/metrics"


def metrics_refusal(settings: Settings, headers: dict[str, str]) -> VerityError | None:
    """Why a scrape of ``/metrics`` may not read it, or None: 404 with ``VERITY_METRICS_ENABLED``
    off, 401 without ``Authorization: Bearer <VERITY_METRICS_TOKEN>`` when a token is set (compared
    in constant time). The series carry no user data; the token keeps traffic figures private."""
    if not settings.metrics_enabled:
        return NotFound(f"no route {METRICS_PATH}", code="route_not_found")
    expected = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not expected:
        return None
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return Unauthorized(f"{METRICS_PATH} needs Authorization: Bearer <token>", code="unauthenticated")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return Unauthorized(f"wrong token for {METRICS_PATH}", code="invalid_token")
    return None


class MetricsGuard:
    """On the BentoML API service (``service.py``): BentoML answers ``/metrics`` itself, ahead of
    the mounted app and its middleware, so the guard sits on the service, in front of its route."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == METRICS_PATH:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            refusal = metrics_refusal(self.settings, headers)
            if refusal is not None:
                await send_error(scope, send, refusal)
                return
        await self.app(scope, receive, send)


class RequestIdMiddleware:
    """Honours a sane client ``x-request-id`` or makes one; echoes it on every response, with
    ``X-Content-Type-Options: nosniff`` (and ``Cache-Control: no-store`` on ``/v1/`` answers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        # API answers are per caller (keys shown once, tokens, results): no cache may keep them.
        no_store = scope["path"].startswith("/v1/")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _SET_HERE]
                headers += [(b"x-request-id", request_id.encode()), (b"x-content-type-options", b"nosniff")]
                if no_store:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodySizeLimitMiddleware:
    """413 before reading when Content-Length is over the route's cap; otherwise counts the
    streamed bytes and stops at the cap, so a chunked upload cannot exhaust memory either."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length > limit:
                # Connection: close, since the unread body would otherwise be taken for the next request.
                too_large = TooLarge(f"request body is {length} bytes; the limit is {limit}")
                await send_error(scope, send, too_large, {"connection": "close"})
                return
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, capped_receive, send)
