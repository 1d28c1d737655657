"""A real JWKS endpoint for tests: ``http.server`` on 127.0.0.1 in a thread, counting fetches."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

log = logging.getLogger(__name__)


class JwksEndpoint:
    """A JWKS document served by ``http.server`` on 127.0.0.1; counts every GET."""

    def __init__(self) -> None:
        self.document: Any = {"keys": []}
        self.raw: bytes | None = None  # served instead of the document when set
        self.status = 200
        self.send_length = True  # False: no Content-Length, the body ends when the connection closes
        self.redirect_to: str | None = None  # answer 302 to this location instead
        self.fetches = 0
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with endpoint._lock:
                    endpoint.fetches += 1
                if endpoint.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("location", endpoint.redirect_to)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = endpoint.raw if endpoint.raw is not None else json.dumps(endpoint.document).encode()
                self.send_response(endpoint.status)
                self.send_header("content-type", "application/json")
                if endpoint.send_length:
                    self.send_header("content-length", str(len(body)))
                else:
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("jwks endpoint: " + format, *args)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reset(self, keys: list[dict[str, Any]]) -> None:
        self.document, self.raw, self.status, self.fetches = {"keys": keys}, None, 200, 0
        self.send_length, self.redirect_to = True, None


@contextmanager
def serving() -> Iterator[JwksEndpoint]:
    served = JwksEndpoint()
    served.thread.start()
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()
        served.thread.join(timeout=5)


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "RS256", "use": "sig"}
