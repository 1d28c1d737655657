"""Where a webhook may go: the SSRF guard.

A webhook URL is chosen by a client but fetched by our servers, from inside our network. Left
unchecked it reaches what the client cannot: loopback services, the cloud metadata endpoint
(169.254.169.254, fd00:ec2::254), private subnets. Two checks, at two moments:

- ``check_webhook_url`` at job submission: syntax only, fast, no DNS. It refuses what is already
  certain from the text: a bad scheme or port, credentials, plain http, an IP literal in a refused
  class (in any spelling ``inet_aton`` accepts: ``2130706433``, ``0x7f000001``, ``0177.0.0.1``,
  ``127.1``) and names that are local by convention (``localhost``, ``*.internal``, one label).
- ``resolve_target`` at delivery: resolves the name once and refuses when *any* address is in a
  refused class. The delivery then connects to exactly those addresses, never resolving again,
  so a name that answers differently a second later (DNS rebinding) gains nothing.

``allowed_hosts`` (``VERITY_WEBHOOK_ALLOWED_HOSTS``) lists hosts exempt from both checks, matched
exactly and case-insensitively: a local receiver during development may be plain http on loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit

from errors import InvalidInput

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# socket.getaddrinfo's shape: (host, port, family=0, type=0, proto=0, flags=0) -> [(family, type,
# proto, canonname, sockaddr)]; tests inject a fake one.
Resolver = Callable[..., list[tuple[Any, ...]]]

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

# Spaces, control characters (header injection) and backslashes (read as "/" by some parsers,
# so "http://a\@b" would mean different hosts to different libraries).
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# A host whose last label is a number is an IPv4 address or nothing (as browsers parse URLs).
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
# host, or [IPv6], then an optional :port: what is left once credentials are refused.
_AUTHORITY = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^\[\]:]+)(?::[0-9]*)?")

# Names that resolve to something local by convention, whatever public DNS says.
_LOCAL_SUFFIXES = (
    "localhost",
    "local",
    "localdomain",
    "internal",
    "intranet",
    "lan",
    "home",
    "corp",
    "arpa",
    "svc",
)

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
_CGNAT = _V4("100.64.0.0/10")
_RFC1918_AND_ULA = (_V4("10.0.0.0/8"), _V4("172.16.0.0/12"), _V4("192.168.0.0/16"), _V6("fc00::/7"))
# Addresses ``ipaddress`` calls global but that are platform services, not receivers.
_PLATFORM = {
    _V4("168.63.129.16/32"): "Azure platform service (WireServer)",
    _V4("192.0.0.0/24"): "IETF protocol assignment (Oracle Cloud metadata lives here)",
}
_NAT64 = _V6("64:ff9b::/96")
_IPV4_COMPATIBLE = _V6("::/96")
_IPV4_TRANSLATED = _V6("::ffff:0:0:0/96")


class TargetRefused(Exception):
    """The webhook's host is, or resolves to, an address we never connect to."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


@dataclass(frozen=True)
class WebhookTarget:
    """A syntactically checked webhook URL, in canonical parts.

    ``host`` is lower-case ASCII (IDNA), without a trailing dot, IPv6 without brackets, and an IP
    literal in its standard spelling (``0x7f000001`` becomes ``127.0.0.1``); ``ip`` is set when
    the host is an IP literal, so that no resolver is ever asked about it.
    """

    scheme: str
    host: str
    port: int
    path: str  # the request target: path and query, never the fragment
    ip: IPAddress | None = None

    @property
    def host_header(self) -> str:
        """The ``Host`` header (and the URL authority): the port only when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.path}"


def check_webhook_url(url: str, allowed_hosts: Sequence[str]) -> WebhookTarget:
    """Validate a webhook URL at submission, without DNS; raise ``InvalidInput`` (422) if not.

    Code ``invalid_webhook_url`` for a malformed URL, ``webhook_target_refused`` for a host we can
    already tell is internal. What a name resolves to is checked at delivery (``resolve_target``).
    """
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise _invalid("the webhook URL must start with https://")
    if "@" in parts.netloc:
        raise _invalid("the webhook URL must not carry credentials (user:password@)")
    if not parts.hostname:
        raise _invalid("the webhook URL has no host")
    if not _AUTHORITY.fullmatch(parts.netloc):
        raise _invalid("the webhook URL's host[:port] does not parse (IPv6 goes in brackets, no zone)")
    host, ip = _canonical_host(parts.hostname)
    if parts.netloc.startswith("[") != isinstance(ip, ipaddress.IPv6Address):
        raise _invalid("the webhook URL's IPv6 host must be in brackets, and only an IPv6 host")
    port = _port(parts, scheme)
    allowed = host_allowed(host, allowed_hosts)
    if not allowed and (reason := refusal_reason(ip) if ip is not None else _name_refusal(host)):
        raise InvalidInput(
            f"the webhook URL points at an address we do not deliver to: {host} ({reason})",
            code="webhook_target_refused",
        )
    if scheme != "https" and not allowed:
        raise _invalid("the webhook URL must use https")
    return WebhookTarget(scheme=scheme, host=host, port=port, path=_request_target(parts), ip=ip)


def resolve_target(
    target: WebhookTarget, allowed_hosts: Sequence[str], resolver: Resolver = socket.getaddrinfo
) -> list[IPAddress]:
    """The addresses to connect to, each checked; the caller must connect to these and no other.

    Raises ``TargetRefused`` when any address is in a refused class (one bad answer among good
    ones is an attack, not noise), unless the host is allow-listed, which may resolve anywhere.
    Resolution failures propagate as ``OSError`` (``socket.gaierror``): they are worth a retry.
    """
    allowed = host_allowed(target.host, allowed_hosts)
    if not allowed and target.ip is None and (reason := _name_refusal(target.host)):
        raise TargetRefused(target.host, reason)
    if target.ip is not None:
        addresses = [target.ip]
    else:
        addresses = _addresses(target.host, resolver(target.host, target.port, type=socket.SOCK_STREAM))
    if not allowed:
        for address in addresses:
            if reason := refusal_reason(address):
                log.warning(
                    "webhook target refused",
                    extra={"webhook_host": target.host, "address": str(address), "reason": reason},
                )
                raise TargetRefused(target.host, f"resolves to {address}: {reason}")
    return addresses


def host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """Exact, case-insensitive match against the allow-list (IP entries in any standard spelling)."""
    return _allow_key(host) in {_allow_key(entry) for entry in allowed_hosts if entry.strip()}


def refusal_reason(ip: IPAddress) -> str | None:
    """Why we never connect to ``ip``, or None for a globally routable address.

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:127.0.0.1``, compatible, translated,
    6to4, NAT64, Teredo) are judged by that IPv4 address. Beyond ``ipaddress``'s ``is_global``,
    multicast, reserved and site-local are refused explicitly: ``ipaddress`` calls some of them
    global.
    """
    if isinstance(ip, ipaddress.IPv6Address) and not (ip.is_unspecified or ip.is_loopback):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            kind, ipv4 = embedded
            reason = refusal_reason(ipv4)
            if reason:
                return f"{kind} {ipv4}, {reason}"
            if kind == "Teredo":
                return "Teredo tunnel, not globally routable"
            return None
    return _address_class(ip)


def _address_class(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (where cloud metadata lives)"
    if ip.is_multicast:
        return "multicast"
    if ip in _CGNAT:
        return "shared address space (carrier-grade NAT)"
    if any(ip in net for net in _RFC1918_AND_ULA):
        return "private"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    for net, reason in _PLATFORM.items():
        if ip in net:
            return reason
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for, with the mechanism's name."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _IPV4_COMPATIBLE:
        return "IPv4-compatible", low32
    if ip in _IPV4_TRANSLATED:
        return "IPv4-translated", low32
    if ip in _NAT64:
        return "NAT64", low32
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    return None


def _name_refusal(host: str) -> str | None:
    """Names that are local whatever they resolve to right now."""
    if "." not in host:
        return "a single-label name, resolved through local search domains"
    suffix = host.rsplit(".", 1)[1]
    if suffix in _LOCAL_SUFFIXES:
        return f"a .{suffix} name is local by convention"
    return None


def _split(url: str) -> SplitResult:
    if not isinstance(url, str) or not url:
        raise _invalid("the webhook URL is empty or not a string")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"the webhook URL is over {MAX_URL_LENGTH} characters")
    if _UNSAFE_CHARS.search(url):
        raise _invalid("the webhook URL holds spaces, control characters or backslashes")
    try:
        return urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" in the host
        raise _invalid(f"the webhook URL does not parse: {exc}") from exc


def _port(parts: SplitResult, scheme: str) -> int:
    try:
        port = parts.port
    except ValueError as exc:  # not a number, or over 65535
        raise _invalid("the webhook URL's port must be 1-65535") from exc
    if port is None:
        return DEFAULT_PORTS[scheme]
    if port == 0:
        raise _invalid("the webhook URL's port must be 1-65535")
    return port


def _canonical_host(hostname: str) -> tuple[str, IPAddress | None]:
    """(canonical host, IP if it is a literal); every IPv4 spelling ``inet_aton`` takes is caught."""
    host = hostname.lower().removesuffix(".")
    if not host:
        raise _invalid("the webhook URL has no host")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return str(ip), ip
    if ":" in host:
        raise _invalid("the webhook URL's IPv6 host does not parse")
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        # 2130706433, 0x7f000001, 0177.0.0.1, 127.1: resolvers read these as 127.0.0.1.
        try:
            ipv4 = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError as exc:
            raise _invalid("the webhook URL's host is neither a name nor an IPv4 address") from exc
        return str(ipv4), ipv4
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise _invalid("the webhook URL's host is not a valid name") from exc
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in ascii_host.split(".")):
        raise _invalid("the webhook URL's host is not a valid name")
    return ascii_host, None


def _request_target(parts: SplitResult) -> str:
    """Path and query as sent on the request line; non-ASCII percent-encoded, the fragment dropped."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return re.sub(r"[^\x21-\x7e]", lambda match: quote(match.group()), target)


def _addresses(host: str, infos: list[tuple[Any, ...]]) -> list[IPAddress]:
    """getaddrinfo's answers as IP addresses, in order, without duplicates."""
    found: list[IPAddress] = []
    for family, _type, _proto, _canonname, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            address = ipaddress.ip_address(sockaddr[0])
        except ValueError as exc:
            raise TargetRefused(host, f"resolves to an unreadable address {sockaddr[0]!r}") from exc
        if address not in found:
            found.append(address)
    if not found:
        raise socket.gaierror(f"{host} resolved to no IPv4 or IPv6 address")
    return found


def _allow_key(host: str) -> str:
    host = host.strip().lower().removesuffix(".").removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_webhook_url")
