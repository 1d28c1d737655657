"""Webhooks: the SSRF guard, Standard Webhooks signatures, one delivery attempt, the retry policy.

Real receivers run on loopback only (127.0.0.1, free ports, stopped by each test). Names are
answered by injected fake resolvers; an autouse guard makes sure nothing else happens: every
connection urllib3 opens is recorded, and one to a non-loopback address is stopped before any
packet leaves (it raises ``ConnectionRefusedError`` as a dead host would), and any real DNS lookup
of a name fails the test.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3.util.connection
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import errors
from webhooks import (
    Attempt,
    TargetRefused,
    check_webhook_url,
    deliver,
    is_retryable,
    new_secret,
    refusal_reason,
    resolve_target,
    retry_delay_s,
    sign_headers,
    verify,
)
from webhooks.delivery import REDIRECT

pytestmark = pytest.mark.unit

PUBLIC_V4 = "93.184.216.34"  # only ever handed to the check, never connected to
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REAL_GETADDRINFO = socket.getaddrinfo


# -- the guard: loopback traffic only, no real DNS ---------------------------------------------


@dataclass
class Connections:
    made: list[tuple[str, int]] = field(default_factory=list)
    blocked: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> Connections:
    seen = Connections()
    real_connect = urllib3.util.connection.create_connection

    def guarded_connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address
        if not ipaddress.ip_address(host).is_loopback:
            seen.blocked.append((host, port))
            raise ConnectionRefusedError(f"test guard: no traffic to {host}")
        seen.made.append((host, port))
        return real_connect(address, *args, **kwargs)

    def literal_only(host: str, *args: Any, **kwargs: Any) -> Any:
        ipaddress.ip_address(host)  # ValueError (failing the test) for a name: no real DNS here
        return REAL_GETADDRINFO(host, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", literal_only)
    return seen


def fake_resolver(table: dict[str, list[str] | Callable[[], list[str]]]) -> Callable[..., list[tuple]]:
    """A getaddrinfo stand-in: name -> addresses (or a function giving each call's answer)."""
    calls: list[str] = []

    def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple]:
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = table[host]
        addresses = answer() if callable(answer) else answer
        infos = []
        for address in addresses:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


# -- loopback receivers ------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's getfqdn: no name lookups
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up on a slow handler is what the tests want


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if receiver.delay_s:
            receiver.release.wait(receiver.delay_s)
        if receiver.drip:
            self._drip(receiver.release)
            return
        self.send_response(receiver.status)
        if receiver.location:
            self.send_header("Location", receiver.location)
        self.send_header("Content-Length", str(len(receiver.answer)))
        self.end_headers()
        self.wfile.write(receiver.answer)

    def do_GET(self) -> None:  # a followed 302 would arrive as a GET
        self.do_POST()

    def _drip(self, release: threading.Event) -> None:
        """A status line, then a header one byte at a time: every read succeeds, none ends."""
        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        while not release.wait(0.05):
            try:
                self.wfile.write(b"a")
                self.wfile.flush()
            except OSError:
                return

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Receiver:
    status: int = 204
    delay_s: float = 0.0
    drip: bool = False
    location: str | None = None
    answer: bytes = b""
    host: str = "127.0.0.1"
    port: int = 0
    tls: ssl.SSLContext | None = None
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server_names: list[str | None] = field(default_factory=list)

    def start(self) -> Receiver:
        self._server = _Server((self.host, self.port), _Handler)
        self._server.receiver = self
        if self.tls is not None:
            self.tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)

    def url(self, host: str | None = None, scheme: str = "http", path: str = "/hook") -> str:
        return f"{scheme}://{host or self.host}:{self.port}{path}"


@pytest.fixture
def serve() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


BODY = b'{"type":"detection.completed","id":"det_1"}'


def signed(msg_id: str = "msg_1") -> dict[str, str]:
    return sign_headers(SECRET, msg_id, datetime.now(UTC), BODY)


# -- check_webhook_url: syntax, at submission ------------------------------------------------


def test_a_public_https_url_is_accepted_in_canonical_parts() -> None:
    target = check_webhook_url("https://Hooks.Example.COM./in/verity?tenant=7#frag", [])
    assert (target.scheme, target.host, target.port, target.path, target.ip) == (
        "https",
        "hooks.example.com",
        443,
        "/in/verity?tenant=7",
        None,
    )
    assert target.url == "https://hooks.example.com/in/verity?tenant=7"
    assert check_webhook_url("https://hooks.example.com:8443", []).host_header == "hooks.example.com:8443"
    assert check_webhook_url("https://hooks.example.com", []).path == "/"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "hooks.example.com/in",
        "ftp://hooks.example.com/in",
        "javascript:alert(1)",
        "http://hooks.example.com/in",  # plain http, not allow-listed
        "https://user:pass@hooks.example.com/in",
        "https://token@hooks.example.com/in",
        "https:///in",
        "https://:443/in",
        "https://hooks.example.com:0/in",
        "https://hooks.example.com:65536/in",
        "https://hooks.example.com:https/in",
        "https://hooks.example.com/" + "a" * 2048,
        "https://hooks.example.com/a b",
        "https://hooks.example.com/\r\nX-Injected: 1",
        "https://hooks.example.com\\@evil.example/",
        "https://[::1/in",
        "https://[v1.fe]/in",
        "https://[93.184.216.34]/in",
        "https://[2606:4700::1]x/in",
        "https://[2606:4700::1%25eth0]/in",
        "https://hooks.example.com:1:2/in",
        "https://hooks..example.com/",
        "https://hooks_%2e.example.com/",
        "https://1.2.3.4.5/",
        "https://999.1.1.1/",
        "https://hooks.example.123/",
    ],
)
def test_malformed_urls_are_invalid_webhook_url(url: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        check_webhook_url(url, [])
    assert caught.value.code == "invalid_webhook_url"
    assert errors.ERROR_CODES[caught.value.code][0] == caught.value.status == 422


REFUSED_LITERALS = [
    # loopback, in every spelling a resolver or inet_aton reads as 127.0.0.1
    "127.0.0.1",
    "127.0.0.2",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "0x7f.1",
    "[::1]",
    # IPv6 carrying a refused IPv4
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::7f00:1]",
    "[::ffff:0:7f00:1]",
    "[2002:7f00:1::]",
    "[64:ff9b::a9fe:a9fe]",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    # metadata and link-local
    "169.254.169.254",
    "[fd00:ec2::254]",
    "[fe80::1]",
    "168.63.129.16",
    "192.0.0.192",
    # private, shared, unspecified, multicast, reserved, documentation
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "[fc00::1]",
    "[fec0::1]",
    "100.64.0.1",
    "0.0.0.0",
    "0",
    "[::]",
    "224.0.0.1",
    "[ff02::1]",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.1",
    "198.18.0.1",
    "[2001:db8::1]",
]
REFUSED_NAMES = [
    "localhost",
    "LOCALHOST.",
    "api.localhost",
    "metadata",
    "metadata.google.internal",
    "printer.local",
    "kubernetes.default.svc",
    "intranet",
]


@pytest.mark.parametrize("host", REFUSED_LITERALS + REFUSED_NAMES)
def test_internal_hosts_are_refused_at_submission(host: str) -> None:
    for scheme in ("https", "http"):
        with pytest.raises(errors.InvalidInput) as caught:
            check_webhook_url(f"{scheme}://{host}:8443/hook", [])
        assert caught.value.code == "webhook_target_refused", (scheme, host)
        assert caught.value.status == 422


@pytest.mark.parametrize(
    "host",
    [
        PUBLIC_V4,
        "[2606:4700:4700::1111]",
        f"[::ffff:{PUBLIC_V4}]",
        "[2002:5db8:d822::1]",
        "[64:ff9b::5db8:d822]",
    ],
)
def test_public_ip_literals_are_accepted(host: str) -> None:
    target = check_webhook_url(f"https://{host}/hook", [])
    assert target.ip is not None and refusal_reason(target.ip) is None


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("::ffff:127.0.0.1", ("IPv4-mapped", "loopback")),
        ("169.254.169.254", ("link-local", "metadata")),
        ("fd00:ec2::254", ("private",)),
        ("100.64.0.1", ("carrier-grade NAT",)),
        ("2002:a00:1::", ("6to4", "private")),
        ("224.0.0.251", ("multicast",)),
    ],
)
def test_refusal_reasons_name_the_class(address: str, words: tuple[str, ...]) -> None:
    reason = refusal_reason(ipaddress.ip_address(address))
    assert reason is not None and all(word in reason for word in words), reason


def test_the_allow_list_lets_named_local_hosts_through_over_http() -> None:
    target = check_webhook_url("http://LocalHost:8080/hook", ["localhost"])
    assert (target.scheme, target.host, target.port, target.host_header) == (
        "http",
        "localhost",
        8080,
        "localhost:8080",
    )
    # IP entries match any spelling of the same address; the match is exact otherwise.
    assert check_webhook_url("http://2130706433:9/", [" 127.0.0.1 "]).host == "127.0.0.1"
    assert check_webhook_url("http://[::1]:9/", ["[::1]"]).host_header == "[::1]:9"
    for url, allowed in [
        ("http://127.0.0.2:9/", ["127.0.0.1"]),
        ("https://api.localhost/", ["localhost"]),
        ("https://localhost.evil.example.internal/", ["localhost"]),
    ]:
        with pytest.raises(errors.InvalidInput):
            check_webhook_url(url, allowed)


# -- resolve_target: what the name answers, at delivery ---------------------------------------


def test_a_name_answering_public_addresses_passes_the_check() -> None:
    resolver = fake_resolver({"public.test": [PUBLIC_V4, "2606:4700:4700::1111", PUBLIC_V4]})
    addresses = resolve_target(check_webhook_url("https://public.test/hook", []), [], resolver)
    assert [str(a) for a in addresses] == [PUBLIC_V4, "2606:4700:4700::1111"]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.0.0.2",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.10",
        "fd12:3456::1",
        "169.254.169.254",
        "fd00:ec2::254",
        "fe80::1%eth0",
        "100.100.100.200",
        "0.0.0.0",
        "::",
        "239.255.255.250",
        "ff05::1:3",
        "255.255.255.255",
        "198.51.100.7",
    ],
)
def test_a_name_answering_a_refused_address_is_refused(address: str) -> None:
    target = check_webhook_url("https://rebind.test/hook", [])
    with pytest.raises(TargetRefused) as caught:
        resolve_target(target, [], fake_resolver({"rebind.test": [address]}))
    assert caught.value.host == "rebind.test"
    assert str(ipaddress.ip_address(address)) in caught.value.reason


def test_one_refused_address_among_public_ones_refuses_the_name() -> None:
    target = check_webhook_url("https://mixed.test/hook", [])
    with pytest.raises(TargetRefused):
        resolve_target(target, [], fake_resolver({"mixed.test": [PUBLIC_V4, "127.0.0.1"]}))


def test_an_allow_listed_name_may_resolve_anywhere() -> None:
    target = check_webhook_url("http://hooks.test:8080/", ["HOOKS.TEST"])
    addresses = resolve_target(target, ["HOOKS.TEST"], fake_resolver({"hooks.test": ["127.0.0.1", "::1"]}))
    assert [str(a) for a in addresses] == ["127.0.0.1", "::1"]


def test_ip_literals_are_never_sent_to_the_resolver() -> None:
    resolver = fake_resolver({})
    assert [str(a) for a in resolve_target(check_webhook_url(f"https://{PUBLIC_V4}/", []), [], resolver)] == [
        PUBLIC_V4
    ]
    assert resolver.calls == []  # type: ignore[attr-defined]


def test_resolution_failures_are_oserrors() -> None:
    with pytest.raises(OSError):
        resolve_target(check_webhook_url("https://nowhere.test/", []), [], fake_resolver({}))
    with pytest.raises(OSError):
        resolve_target(check_webhook_url("https://empty.test/", []), [], fake_resolver({"empty.test": []}))


# -- signing -------------------------------------------------------------------------------------


def test_new_secrets_follow_the_standard_webhooks_format() -> None:
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) <= 64
        Webhook(secret)  # the package accepts it


def test_signed_headers_verify_with_the_standard_webhooks_package() -> None:
    secret = new_secret()
    moment = datetime.now(UTC)
    headers = sign_headers(secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", moment, BODY)
    assert headers["webhook-id"] == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    assert headers["webhook-timestamp"] == str(int(moment.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Verity-Webhooks/1"
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    assert verify(secret, {k.title(): v for k, v in headers.items()}, BODY) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, BODY.replace(b"det_1", b"det_2"))
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), headers, BODY)
    with pytest.raises(WebhookVerificationError):
        verify(secret, {**headers, "webhook-id": "msg_other"}, BODY)
    stale = sign_headers(secret, "msg_1", moment - timedelta(minutes=10), BODY)
    with pytest.raises(WebhookVerificationError):
        verify(secret, stale, BODY)


def test_a_naive_timestamp_is_utc_in_header_and_signature() -> None:
    moment = datetime.now(UTC)
    aware = sign_headers(SECRET, "msg_1", moment, BODY)
    assert sign_headers(SECRET, "msg_1", moment.replace(tzinfo=None), BODY) == aware


@pytest.mark.parametrize("msg_id", ["", "msg_1\r\nx-evil: 1", "msg 1", "msg.1", "é"])
def test_unsafe_message_ids_are_refused(msg_id: str) -> None:
    with pytest.raises(ValueError):
        sign_headers(SECRET, msg_id, datetime.now(UTC), BODY)


# -- deliver: one attempt, to loopback receivers ------------------------------------------------


def test_a_delivery_reaches_an_allow_listed_receiver_signed(
    serve: Callable[..., Receiver], connections: Connections
) -> None:
    receiver = serve(status=204)
    resolver = fake_resolver({"hooks.test": ["127.0.0.1"]})
    headers = signed(msg_id="msg_deliver")
    attempt = deliver(
        receiver.url("hooks.test", path="/in?x=1"),
        BODY,
        headers,
        allowed_hosts=["hooks.test"],
        timeout_s=2,
        resolver=resolver,
    )
    assert (attempt.ok, attempt.status, attempt.error) == (True, 204, None)
    assert 0 < attempt.duration_ms < 2000
    assert datetime.fromisoformat(attempt.at).tzinfo is not None and attempt.at.endswith("Z")
    [got] = receiver.received
    assert (got.path, got.body, got.headers["host"]) == ("/in?x=1", BODY, f"hooks.test:{receiver.port}")
    assert got.headers["webhook-id"] == "msg_deliver"
    assert Webhook(SECRET).verify(got.body, got.headers) == json.loads(BODY)  # the receiver's side
    assert connections.made == [("127.0.0.1", receiver.port)] and connections.blocked == []


def test_a_redirect_is_not_followed(serve: Callable[..., Receiver], connections: Connections) -> None:
    elsewhere = serve()
    receiver = serve(status=302, location=elsewhere.url())
    attempt = deliver(receiver.url(), BODY, signed(), allowed_hosts=["127.0.0.1"], timeout_s=2)
    assert (attempt.ok, attempt.status, attempt.error) == (False, 302, REDIRECT)
    assert not is_retryable(attempt)
    assert len(receiver.received) == 1 and elsewhere.received == []
    assert connections.made == [("127.0.0.1", receiver.port)]


def test_a_slow_receiver_fails_within_the_timeout(serve: Callable[..., Receiver]) -> None:
    receiver = serve(delay_s=5)
    started = time.monotonic()
    attempt = deliver(receiver.url(), BODY, signed(), allowed_hosts=["127.0.0.1"], timeout_s=0.3)
    elapsed = time.monotonic() - started
    assert (attempt.ok, attempt.status) == (False, None)
    assert attempt.error is not None and attempt.error.startswith("timeout"), attempt.error
    assert elapsed < 1.0 and attempt.duration_ms < 1000
    assert is_retryable(attempt)


def test_a_receiver_dripping_its_answer_is_cut_off_at_the_timeout(serve: Callable[..., Receiver]) -> None:
    receiver = serve(drip=True)
    started = time.monotonic()
    attempt = deliver(receiver.url(), BODY, signed(), allowed_hosts=["127.0.0.1"], timeout_s=0.4)
    assert time.monotonic() - started < 1.2
    assert (attempt.ok, attempt.status) == (False, None)
    assert attempt.error is not None and attempt.error.startswith("timeout"), attempt.error


@pytest.mark.parametrize(
    ("status", "ok", "retryable"),
    [
        (200, True, False),
        (500, False, True),
        (503, False, True),
        (429, False, True),
        (408, False, True),
        (410, False, False),
        (400, False, False),
        (404, False, False),
    ],
)
def test_the_answer_decides_success_and_retry(
    serve: Callable[..., Receiver], status: int, ok: bool, retryable: bool
) -> None:
    receiver = serve(status=status, answer=b"x" * 200_000)  # a large answer is read in part only
    attempt = deliver(receiver.url(), BODY, signed(), allowed_hosts=["127.0.0.1"], timeout_s=2)
    assert (attempt.ok, attempt.status, is_retryable(attempt)) == (ok, status, retryable)
    assert attempt.error == (None if ok else f"HTTP {status}")


@pytest.mark.parametrize(
    "host", ["127.0.0.2", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::1]", "localhost"]
)
def test_refused_hosts_get_no_connection(
    serve: Callable[..., Receiver], connections: Connections, host: str
) -> None:
    receiver = serve()
    attempt = deliver(receiver.url(host), BODY, signed(), allowed_hosts=[], timeout_s=2)
    assert (attempt.ok, attempt.status) == (False, None)
    assert attempt.error is not None and attempt.error.startswith("refused: "), attempt.error
    assert not is_retryable(attempt)
    assert connections.made == connections.blocked == [] and receiver.received == []


def test_the_metadata_endpoint_is_refused_before_any_connection(connections: Connections) -> None:
    for url, reason in [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fd00:ec2::254]/latest/api/token", "private"),
    ]:
        attempt = deliver(url, BODY, signed(), allowed_hosts=[], timeout_s=2)
        assert attempt.error is not None and attempt.error.startswith("refused: "), attempt.error
        assert reason in attempt.error and not is_retryable(attempt)
    assert connections.made == connections.blocked == []


def test_a_name_resolving_to_loopback_is_refused(
    serve: Callable[..., Receiver], connections: Connections
) -> None:
    receiver = serve()
    resolver = fake_resolver({"rebind.test": ["127.0.0.1"]})
    attempt = deliver(
        receiver.url("rebind.test", scheme="https"),
        BODY,
        signed(),
        allowed_hosts=[],
        timeout_s=2,
        resolver=resolver,
    )
    assert attempt.error is not None and attempt.error.startswith("refused: ") and "loopback" in attempt.error
    assert connections.made == connections.blocked == [] and receiver.received == []


def test_a_public_and_a_loopback_answer_together_are_refused(
    serve: Callable[..., Receiver], connections: Connections
) -> None:
    receiver = serve()
    resolver = fake_resolver({"mixed.test": [PUBLIC_V4, "127.0.0.1"]})
    url = receiver.url("mixed.test", scheme="https")
    attempt = deliver(url, BODY, signed(), allowed_hosts=[], timeout_s=2, resolver=resolver)
    assert attempt.error is not None and attempt.error.startswith("refused: ")
    assert connections.made == connections.blocked == [] and receiver.received == []


def test_rebinding_gains_nothing_the_checked_address_is_the_one_connected(
    serve: Callable[..., Receiver], connections: Connections
) -> None:
    receiver = serve()
    answers = iter([["127.0.0.1"], ["127.0.0.2"]])
    resolver = fake_resolver({"rebind.test": lambda: next(answers)})
    attempt = deliver(
        receiver.url("rebind.test"),
        BODY,
        signed(),
        allowed_hosts=["rebind.test"],
        timeout_s=2,
        resolver=resolver,
    )
    assert attempt.ok
    assert resolver.calls == ["rebind.test"]  # type: ignore[attr-defined]  # one lookup, no second one
    assert connections.made == [("127.0.0.1", receiver.port)]


def test_rebinding_from_public_to_loopback_still_connects_only_to_the_public_answer(
    connections: Connections,
) -> None:
    """Checked: the public answer. Connected: that same address (stopped by the test guard before
    any packet); never the loopback answer a second lookup would have given."""
    answers = iter([[PUBLIC_V4], ["127.0.0.1"]])
    resolver = fake_resolver({"rebind.test": lambda: next(answers)})
    attempt = deliver(
        "https://rebind.test:8443/hook", BODY, signed(), allowed_hosts=[], timeout_s=2, resolver=resolver
    )
    assert (attempt.ok, attempt.status) == (False, None) and is_retryable(attempt)
    assert connections.blocked == [(PUBLIC_V4, 8443)] and connections.made == []


def test_each_checked_address_is_tried_in_order_until_one_connects(
    serve: Callable[..., Receiver], connections: Connections
) -> None:
    receiver = serve()
    resolver = fake_resolver({"hooks.test": ["127.0.0.2", "127.0.0.1"]})  # nothing listens on .2
    attempt = deliver(
        receiver.url("hooks.test"),
        BODY,
        signed(),
        allowed_hosts=["hooks.test"],
        timeout_s=2,
        resolver=resolver,
    )
    assert attempt.ok, attempt.error
    assert connections.made == [("127.0.0.2", receiver.port), ("127.0.0.1", receiver.port)]


def test_dns_failures_and_bad_urls_become_attempts() -> None:
    lost = deliver(
        "https://nowhere.test/", BODY, signed(), allowed_hosts=[], timeout_s=1, resolver=fake_resolver({})
    )
    assert lost.error is not None and lost.error.startswith("dns: ") and is_retryable(lost)
    bad = deliver("ftp://files.example.com/", BODY, signed(), allowed_hosts=[], timeout_s=1)
    assert bad.error is not None and bad.error.startswith("invalid url: ") and not is_retryable(bad)


def test_nothing_listening_is_a_retryable_connect_error(serve: Callable[..., Receiver]) -> None:
    receiver = serve()
    receiver.stop()
    attempt = deliver(receiver.url(), BODY, signed(), allowed_hosts=["127.0.0.1"], timeout_s=1)
    assert attempt.error is not None and attempt.error.startswith("connect 127.0.0.1"), attempt.error
    assert is_retryable(attempt)


# -- https: SNI and the certificate are the name's, not the address's ------------------------------


@dataclass
class Tls:
    ca_file: Path
    contexts: dict[str, ssl.SSLContext]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Verity webhook test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    contexts = {}
    for name in ("hooks.test", "other.test"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = folder / f"{name}.pem"
        pem.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem)
        contexts[name] = context
    return Tls(ca_file, contexts)


def test_https_sends_the_name_in_sni_and_verifies_the_certificate_against_it(
    serve: Callable[..., Receiver], tls: Tls, monkeypatch: pytest.MonkeyPatch, connections: Connections
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))  # trust the test CA, as a system CA
    receiver = serve(tls=tls.contexts["hooks.test"])
    resolver = fake_resolver({"hooks.test": ["127.0.0.1"]})
    url = receiver.url("hooks.test", scheme="https")
    attempt = deliver(url, BODY, signed(), allowed_hosts=["hooks.test"], timeout_s=2, resolver=resolver)
    assert (attempt.ok, attempt.status) == (True, 204), attempt.error
    assert receiver.server_names == ["hooks.test"]
    assert receiver.received[0].headers["host"] == f"hooks.test:{receiver.port}"
    assert connections.made == [("127.0.0.1", receiver.port)]


def test_https_refuses_a_certificate_for_another_name(
    serve: Callable[..., Receiver], tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    receiver = serve(tls=tls.contexts["other.test"])
    resolver = fake_resolver({"hooks.test": ["127.0.0.1"]})
    url = receiver.url("hooks.test", scheme="https")
    attempt = deliver(url, BODY, signed(), allowed_hosts=["hooks.test"], timeout_s=2, resolver=resolver)
    assert (attempt.ok, attempt.status) == (False, None)
    assert attempt.error is not None and "hooks.test" in attempt.error, attempt.error
    assert receiver.received == []


def test_https_refuses_an_untrusted_certificate(serve: Callable[..., Receiver], tls: Tls) -> None:
    receiver = serve(tls=tls.contexts["hooks.test"])  # the test CA is not trusted here
    resolver = fake_resolver({"hooks.test": ["127.0.0.1"]})
    url = receiver.url("hooks.test", scheme="https")
    attempt = deliver(url, BODY, signed(), allowed_hosts=["hooks.test"], timeout_s=2, resolver=resolver)
    assert attempt.error is not None and "CERTIFICATE_VERIFY_FAILED" in attempt.error, attempt.error
    assert receiver.received == []


# -- the retry policy ------------------------------------------------------------------------------


def test_retry_delays_double_with_equal_jitter_up_to_the_cap() -> None:
    assert [retry_delay_s(n, 5, rng=lambda: 1.0) for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert [retry_delay_s(n, 5, rng=lambda: 0.0) for n in range(1, 6)] == [2.5, 5, 10, 20, 40]
    assert retry_delay_s(30, 5, cap_s=3600, rng=lambda: 1.0) == 3600
    assert retry_delay_s(10_000, 5, rng=lambda: 0.5) == 2700  # no overflow for absurd counts
    delays = [retry_delay_s(3, 5) for _ in range(200)]
    assert all(10 <= d <= 20 for d in delays) and len(set(delays)) > 100
    with pytest.raises(ValueError):
        retry_delay_s(0, 5)


def test_what_is_retried() -> None:
    def attempt(status: int | None, error: str | None) -> Attempt:
        return Attempt(ok=False, status=status, error=error, duration_ms=1.0, at="2026-01-01T00:00:00.000Z")

    assert is_retryable(attempt(None, "timeout: no answer within 5 s"))
    assert is_retryable(attempt(None, "connect 203.0.113.9: [Errno 111] Connection refused"))
    assert is_retryable(attempt(None, "dns: Name or service not known"))
    assert is_retryable(attempt(502, "HTTP 502"))
    assert not is_retryable(attempt(None, "refused: rebind.test: resolves to 127.0.0.1: loopback"))
    assert not is_retryable(attempt(None, "invalid url: the webhook URL must use https"))
    assert not is_retryable(attempt(410, "HTTP 410"))
    assert not is_retryable(attempt(301, REDIRECT))
    assert not is_retryable(Attempt(True, 200, None, 1.0, "2026-01-01T00:00:00.000Z"))
