"""Plain ASGI middleware: request ids, and a body-size cap enforced before the body is read."""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from errors import TooLarge, send_error
from logs import request_id_var
from store.ids import new_id

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SET_HERE = {b"x-request-id", b"x-content-type-options"}


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
