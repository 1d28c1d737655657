"""A small blocking WebSocket client over a plain socket, with ``wsproto`` (the WebSocket
implementation the server itself runs with): enough to drive ``/v1/stream`` of a real server
without adding a client library to the project."""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


class WebSocketClient:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
        self.ws = WSConnection(ConnectionType.CLIENT)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._send(Request(host=f"{parts.hostname}:{parts.port}", target=target))
        self._pending: list[Any] = []
        self._text: list[str] = []
        self._bytes = bytearray()
        event = self._next_event()
        if isinstance(event, RejectConnection):
            # The server refused the handshake (an HTTP 403 for a close before accept).
            raise Closed(1008 if event.status_code == 403 else event.status_code, "rejected")
        if not isinstance(event, AcceptConnection):
            raise AssertionError(f"unexpected handshake answer {event!r}")

    def _send(self, event: Any) -> None:
        self.sock.sendall(self.ws.send(event))

    def _next_event(self) -> Any:
        while not self._pending:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self._pending.extend(self.ws.events())
            if not data and not self._pending:
                raise Closed(1006, "connection lost")
        return self._pending.pop(0)

    def receive_json(self) -> dict[str, Any]:
        while True:
            event = self._next_event()
            if isinstance(event, CloseConnection):
                if self.ws.state.name == "REMOTE_CLOSING":
                    self._send(event.response())
                raise Closed(event.code, event.reason or "")
            if isinstance(event, TextMessage):  # the stream speaks JSON text only
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return json.loads(text)

    def send_bytes(self, data: bytes) -> None:
        self._send(BytesMessage(data=data))

    def send_json(self, document: dict[str, Any]) -> None:
        self._send(TextMessage(data=json.dumps(document)))

    def close(self) -> None:
        with contextlib.suppress(OSError, LocalProtocolError):  # already closed, or gone
            self._send(CloseConnection(code=1000))
        self.sock.close()
