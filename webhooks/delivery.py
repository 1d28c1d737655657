"""One webhook delivery attempt, and the retry policy around it.

``deliver`` makes exactly one POST and never raises for network trouble: it returns an
``Attempt`` that the worker stores, and ``is_retryable`` / ``retry_delay_s`` decide what happens
next. It connects to the addresses ``resolve_target`` checked, not to the name, so the answer
checked is the answer used (no second DNS lookup to rebind); the name still goes in the ``Host``
header, in TLS SNI and in certificate verification. Redirects are never followed: a 3xx would
send our POST, unchecked, wherever the receiver says.

The whole attempt (connect, TLS, request, answer) is bounded by ``timeout_s``: socket timeouts
alone do not bound a receiver that drips one byte a second, so a timer shuts the socket down at
the deadline.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util.ssl_match_hostname import CertificateError

from errors import InvalidInput
from webhooks.targets import (
    IPAddress,
    Resolver,
    TargetRefused,
    WebhookTarget,
    check_webhook_url,
    resolve_target,
)

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024  # what we read of a receiver's answer; the rest is dropped
REFUSED = "refused: "
INVALID_URL = "invalid url: "
REDIRECT = "redirect not followed"
# CertificateError (a ValueError): the certificate does not name the host.
_NETWORK_ERRORS = (OSError, HTTPException, Urllib3Error, CertificateError)
_RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Attempt:
    """The outcome of one POST: ``ok`` only for a 2xx; ``status`` None when no answer came."""

    ok: bool
    status: int | None
    error: str | None
    duration_ms: float
    at: str  # when the attempt started, ISO-8601 UTC


def deliver(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allowed_hosts: Sequence[str],
    timeout_s: float,
    resolver: Resolver = socket.getaddrinfo,
) -> Attempt:
    """POST ``body`` to ``url`` once, to an address that passed the SSRF check, within ``timeout_s``.

    The URL is checked again (the allow-list may have changed since submission), then resolved and
    checked (``resolve_target``). Each resolved address is tried in order until one connects;
    once connected, the first answer or failure is the attempt's outcome.
    """
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    started = time.monotonic()

    def finish(ok: bool, status: int | None, error: str | None, host: str) -> Attempt:
        attempt = Attempt(ok, status, error, round((time.monotonic() - started) * 1000, 1), at)
        log.info(
            "webhook attempt",
            extra={"webhook_host": host, "status": status, "error": error, "ms": attempt.duration_ms},
        )
        return attempt

    try:
        target = check_webhook_url(url, allowed_hosts)
    except InvalidInput as exc:
        prefix = REFUSED if exc.code == "webhook_target_refused" else INVALID_URL
        return finish(False, None, prefix + exc.message, "")
    try:
        addresses = resolve_target(target, allowed_hosts, resolver)
    except TargetRefused as exc:
        return finish(False, None, REFUSED + str(exc), target.host)
    except (OSError, UnicodeError) as exc:
        return finish(False, None, f"dns: {exc}", target.host)

    with _Deadline(started + timeout_s) as deadline:
        status, error = _post_first_reachable(target, addresses, body, headers, deadline)
    if deadline.fired and status is None:
        error = f"timeout: no answer within {timeout_s:g} s"
    return finish(status is not None and 200 <= status < 300, status, error, target.host)


def is_retryable(attempt: Attempt) -> bool:
    """Whether trying again later may succeed.

    Network errors, timeouts, 408, 425, 429 and 5xx: yes. Any other 4xx (410 Gone above all: the
    receiver says stop) and 3xx (a moved URL stays moved): no. Refused targets and invalid URLs: no,
    they will be refused again.
    """
    if attempt.ok:
        return False
    if attempt.status is None:
        return not (attempt.error or "").startswith((REFUSED, INVALID_URL))
    return attempt.status in _RETRYABLE_STATUSES or attempt.status >= 500


def retry_delay_s(
    attempt: int, base_s: float, cap_s: float = 3600, rng: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    Exponential backoff with *equal* jitter: the ceiling ``min(cap_s, base_s * 2**(attempt-1))``,
    half of it fixed and half random. Jitter spreads the retries of many webhooks that failed
    together (a receiver's outage) so they do not return as one wave; the fixed half, unlike full
    jitter, never retries a struggling receiver almost at once.
    """
    if attempt < 1:
        raise ValueError("attempt counts retries from 1")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 64))
    return ceiling / 2 + rng() * ceiling / 2


class _Deadline:
    """Shuts down the attempt's sockets when time is up, interrupting any blocked read or write.

    It keeps a duplicate of each socket's descriptor: ``shutdown`` on the duplicate ends the
    connection even while TLS has taken over (and detached) the original socket object.
    """

    def __init__(self, at: float) -> None:
        self.at = at
        self.fired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(max(0.0, at - time.monotonic()), self._fire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        dup = sock.dup()
        with self._lock:
            self._sockets.append(dup)
            if self.fired:
                _shutdown(dup)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shutdown(sock)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the other side
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTPConnection(HTTPConnection):
    """urllib3's connection, its socket handed to the deadline as soon as it exists."""

    deadline: _Deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self.deadline.watch(sock)
        return sock


class _WatchedHTTPSConnection(HTTPSConnection):
    deadline: _Deadline

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self.deadline.watch(sock)
        return sock


def _post_first_reachable(
    target: WebhookTarget,
    addresses: Sequence[IPAddress],
    body: bytes,
    headers: dict[str, str],
    deadline: _Deadline,
) -> tuple[int | None, str | None]:
    """(status, error) of the POST on the first address that accepts a connection."""
    error = "no address to connect to"
    for index, address in enumerate(addresses):
        remaining = deadline.remaining()
        if remaining <= 0:
            break
        # Leave the later addresses a share of the time, so one black hole does not use it all.
        conn = _connection(target, address, remaining / (len(addresses) - index), deadline)
        try:
            conn.connect()
        except _NETWORK_ERRORS as exc:
            conn.close()
            error = f"connect {address}: {_describe(exc)}"
            continue
        try:
            conn.timeout = max(deadline.remaining(), 0.001)  # per read; the deadline bounds the sum
            return _exchange(conn, target, body, headers, deadline)
        except _NETWORK_ERRORS as exc:
            kind = "timeout" if isinstance(exc.__cause__ or exc, TimeoutError) else "network"
            return None, f"{kind}: {_describe(exc)}"
        finally:
            conn.close()
    return None, error


def _connection(
    target: WebhookTarget, address: IPAddress, connect_timeout: float, deadline: _Deadline
) -> HTTPConnection:
    """A connection to the checked address itself; for https, SNI and the certificate are the name's."""
    conn: _WatchedHTTPConnection | _WatchedHTTPSConnection
    if target.scheme == "https":
        conn = _WatchedHTTPSConnection(
            str(address),
            target.port,
            timeout=connect_timeout,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
        )
    else:
        conn = _WatchedHTTPConnection(str(address), target.port, timeout=connect_timeout)
    conn.deadline = deadline
    return conn


def _exchange(
    conn: HTTPConnection, target: WebhookTarget, body: bytes, headers: dict[str, str], deadline: _Deadline
) -> tuple[int | None, str | None]:
    """Send the POST, read the status and at most ``MAX_ANSWER_BYTES`` of the answer."""
    sent = {k: v for k, v in headers.items() if k.lower() not in {"host", "content-length"}}
    sent["Host"] = target.host_header
    conn.request("POST", target.path, body=body, headers=sent, preload_content=False)
    response = conn.getresponse()
    if deadline.fired:  # headers cut short by the shutdown parse as complete: not an answer
        raise TimeoutError("the answer's headers did not arrive in time")
    status = response.status
    # The status is the receiver's answer; a body cut short changes nothing.
    with contextlib.suppress(*_NETWORK_ERRORS):
        response.read(MAX_ANSWER_BYTES, decode_content=False)
    if 200 <= status < 300:
        return status, None
    if 300 <= status < 400:
        return status, REDIRECT
    return status, f"HTTP {status}"


def _describe(exc: BaseException) -> str:
    """The underlying error's words: urllib3 wraps them in its connection's repr."""
    cause = exc.__cause__ or exc
    return str(cause) or type(cause).__name__
