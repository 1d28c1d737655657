"""``moto_server`` with one change: each request is handled atomically.

Real DynamoDB applies a conditional ``UpdateItem`` atomically per item; moto's threaded server
does not (two threads can both pass ``count < limit``), so the quota race would fail against
moto for a reason that real DynamoDB does not have. Here moto's own WSGI app handles one request
at a time; connections are still accepted concurrently, and the store's several calls per
``consume`` still interleave between requests exactly as they would against DynamoDB.

Run as a script with moto_server's arguments: ``python serial_moto.py -H 127.0.0.1 -p 5000``.
"""

from __future__ import annotations

import threading
from typing import Any

import moto.server

_lock = threading.Lock()


class SerialDispatcher(moto.server.DomainDispatcherApplication):
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        with _lock:
            return list(super().__call__(environ, start_response))


if __name__ == "__main__":
    moto.server.DomainDispatcherApplication = SerialDispatcher  # type: ignore[misc]
    moto.server.main()
