"""The SSRF guard: outbound HTTP only to public addresses, unless an operator allow-lists a target.

Used for webhook and Slack deliveries and for URL inputs. The check happens twice:

1. :func:`check_url` when a URL is accepted (clear error for the client: scheme, host, the
   address it resolves to);
2. :class:`GuardedBackend` at connect time, on the address actually dialled — so a DNS answer
   that changes between the check and the request (DNS rebinding) cannot reach a private host.

Allow-list entries (``MEDIAMILL_URL_ALLOWLIST``, comma-separated): a host name
(``hooks.internal``), a suffix wildcard (``*.corp.example``), an address (``127.0.0.1``) or a
network (``10.0.0.0/8``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from mediamill.errors import UnresolvableHost, UrlRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = ["Allowlist", "GuardedBackend", "UnresolvableHost", "UrlRefused", "check_url", "guarded_client",
           "is_public_ip"]


@dataclass(frozen=True)
class Allowlist:
    """Hosts, host suffixes and networks that are reachable despite the guard."""

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: str | Iterable[str] | None) -> Allowlist:
        """Build from ``"a.example, *.corp, 10.0.0.0/8, 127.0.0.1"`` (or a list of entries)."""
        items = entries.split(",") if isinstance(entries, str) else list(entries or ())
        hosts: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in (i.strip().lower() for i in items):
            if not raw:
                continue
            if raw.startswith("*."):
                suffixes.append(raw[1:])
                continue
            try:
                networks.append(ipaddress.ip_network(raw.strip("[]"), strict=False))
            except ValueError:
                hosts.add(raw.rstrip("."))
        return cls(frozenset(hosts), tuple(suffixes), tuple(networks))

    def allows_host(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return name in self.hosts or any(name.endswith(s) for s in self.suffixes)

    def allows_ip(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks if net.version == ip.version)


def is_public_ip(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses (not private, loopback, link-local, CGNAT…)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return is_public_ip(ip.ipv4_mapped)
    return ip.is_global and not ip.is_multicast


def check_url(url: str, allowlist: Allowlist | str | None = None, *, resolve: bool = True,
              schemes: tuple[str, ...] = ("http", "https")) -> str:
    """Validate an outbound URL; returns it unchanged or raises :class:`UrlRefused`."""
    allow = allowlist if isinstance(allowlist, Allowlist) else Allowlist.parse(allowlist)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:  # unbalanced brackets, an IPv4 address in brackets …
        raise UrlRefused(f"URL is malformed: {exc}") from None
    if parts.scheme.lower() not in schemes:
        raise UrlRefused(f"URL scheme must be {' or '.join(schemes)}, got {parts.scheme or 'none'!r}")
    if not host:
        raise UrlRefused("URL has no host")
    if parts.username or parts.password:
        raise UrlRefused("URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        raise UrlRefused(f"URL has an invalid port: {exc}") from None
    if resolve:
        resolve_allowed(host, port, allow)
    return url


def resolve_allowed(host: str, port: int, allow: Allowlist) -> list[str]:
    """The addresses of ``host`` if every one of them may be contacted; raises UrlRefused otherwise."""
    literal = _literal_ip(host)
    if allow.allows_host(host):
        return [str(literal)] if literal else _resolve(host, port)
    addresses = [str(literal)] if literal else _resolve(host, port)
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not (is_public_ip(ip) or allow.allows_ip(ip)):
            raise UrlRefused(f"{host} resolves to {ip}, a non-public address (to permit it, add it to "
                             "MEDIAMILL_URL_ALLOWLIST)",
                             public_message=f"{host} points to a non-public address (an operator can allow it "
                                            "with MEDIAMILL_URL_ALLOWLIST)")
    return addresses


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:  # ValueError: a label IDNA cannot encode, a NUL in the name
        raise UnresolvableHost(f"cannot resolve {host}: {exc}") from None
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    if not seen:
        raise UnresolvableHost(f"{host} has no address")
    return seen


class GuardedBackend(httpcore.SyncBackend):
    """An httpcore network backend that checks the address it dials (defeats DNS rebinding)."""

    def __init__(self, allowlist: Allowlist) -> None:
        self._allow = allowlist

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        addresses = resolve_allowed(host, port, self._allow)
        last: Exception | None = None
        for address in addresses:
            try:
                # Dial the checked address itself; TLS still uses the original host name for SNI.
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"cannot connect to {host}")


def guarded_client(allowlist: Allowlist | str | None, *, timeout: float = 15.0, proxy: str | None = None,
                   **kwargs: Any) -> httpx.Client:
    """An httpx client that never follows redirects, ignores proxy variables and guards every dial.

    ``proxy`` (``MEDIAMILL_OUTBOUND_PROXY``) is the one way to send requests through a proxy: the
    proxy may then be a private address, and as it resolves the targets itself, the connect-time
    check moves to its egress policy (URLs are still checked before each request).
    """
    allow = allowlist if isinstance(allowlist, Allowlist) else Allowlist.parse(allowlist)
    if proxy:
        allow = Allowlist(allow.hosts | {(urlsplit(proxy).hostname or "").lower()}, allow.suffixes, allow.networks)
    transport = httpx.HTTPTransport(retries=0, proxy=proxy or None)
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        # never fall back to an unguarded client: a new httpx/httpcore layout must fail loudly
        raise RuntimeError("cannot install the SSRF guard on this httpx version")
    pool._network_backend = GuardedBackend(allow)
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False,
                        **kwargs)
