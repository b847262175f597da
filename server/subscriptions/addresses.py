"""What an address is to this machine: what a host resolves to, whether an address is
local, and whether (address, port) is one of the gateway's own listeners. The callback
policy (callbacks.py) judges callbacks with these."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (host, port) of a listener; an empty host is a wildcard.
Endpoint = tuple[str, int]

# Hosts meaning "every address of this machine".
_WILDCARD_HOSTS: Final = frozenset({"", "*", "0.0.0.0", "::"})
# How long what was learnt about an address (local or not) or an endpoint's host (its DNS
# answer) is reused.
_CACHE_TTL_S: Final = 60.0


def resolve(host: str, port: int, timeout_s: float = 2.0) -> list[IpAddress]:
    """Every address `host` resolves to (an IP literal resolves to itself). Raises
    socket.gaierror, or TimeoutError when the resolver takes longer than `timeout_s`
    (getaddrinfo cannot be cancelled: it finishes in a daemon thread, unheard)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    outcome: list[Any] = []

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            outcome.append(exc)

    resolver = threading.Thread(target=lookup, name="resolve", daemon=True)
    resolver.start()
    resolver.join(timeout_s)
    if not outcome:
        raise TimeoutError(f"resolving {host!r} took longer than {timeout_s:g} s")
    if isinstance(outcome[0], OSError):
        raise outcome[0]
    infos: list[Any] = outcome[0]
    found: list[IpAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def parse_endpoint(text: str) -> Endpoint:
    """`host:port`, `[v6]:port` or `:port` (every address). Raises ValueError."""
    item = text.strip()
    host, colon, port_text = item.rpartition(":")
    if not colon or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"not host:port: {item!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ValueError(f"not an IPv6 address in {item!r} ({exc})") from exc
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets ([::1]:9901), got {item!r}")
    return host, int(port_text)


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """Comma-separated endpoints, e.g. "127.0.0.1:9901,[::1]:6379". Raises ValueError."""
    return tuple(parse_endpoint(item) for item in text.split(",") if item.strip())


def unmapped(address: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# Where IPv6 carries an IPv4 address that a packet to it can end up at (the IPv4-mapped
# ::ffff:0:0/96 is `unmapped`: it *is* the IPv4 address on a dual-stack socket).
# IPv4-compatible (RFC 4291, deprecated; :: and ::1 are themselves, not 0.0.0.0/0.0.0.1).
_IPV4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")
# NAT64 well-known prefix (RFC 6052): the IPv4 address in the last 32 bits.
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: IpAddress) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address embeds, each with how (for a reason text):
    6to4 (2002::/16, bits 16-48), IPv4-compatible (::/96), NAT64 (64:ff9b::/96) and
    Teredo (2001::/32: its server, and its client, which is stored obfuscated). A packet
    to such an address can reach the embedded one through a relay or translator."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    if address.sixtofour is not None:
        return [("a 6to4 address embedding", address.sixtofour)]
    if address.teredo is not None:
        server, client = address.teredo
        return [
            ("a Teredo address whose server is", server),
            ("a Teredo address whose client is", client),
        ]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64:
        return [("a NAT64 address embedding", low32)]
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return [("an IPv4-compatible address embedding", low32)]
    return []


def is_local_address(address: IpAddress) -> bool:
    """Whether connecting to `address` reaches this machine: loopback, unspecified (which
    connects to this machine), or assigned to one of its interfaces, which is exactly
    when a socket can bind to it. (With net.ipv*.ip_nonlocal_bind set every address binds:
    then every address counts as local, which refuses more, never less.)"""
    address = unmapped(address)
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


class GatewayListeners:
    """Matches (address, port) against the gateway's endpoints. Lazily, and cached for
    _CACHE_TTL_S: the DNS answer of each endpoint host and whether an address is local.
    Shared by every thread using the policy."""

    def __init__(self, endpoints: Sequence[Endpoint], dns_timeout_s: float) -> None:
        self._hosts_by_port: dict[int, list[str]] = {}
        for host, port in endpoints:
            self._hosts_by_port.setdefault(port, []).append(host)
        self._dns_timeout_s = dns_timeout_s
        self._lock = threading.Lock()
        self._local: dict[IpAddress, tuple[float, bool]] = {}
        self._resolved: dict[str, tuple[float, frozenset[IpAddress]]] = {}

    def match(self, address: IpAddress, port: int) -> bool:
        """Whether connecting to `address` on `port` reaches one of the endpoints."""
        hosts = self._hosts_by_port.get(port)
        if not hosts:
            return False
        for host in hosts:
            if host in _WILDCARD_HOSTS:
                if self._is_local(address):
                    return True
                continue
            listening = self._addresses(host, port)
            if address in listening:
                return True
            # A listener on this machine is reached on any of its addresses (one bound to
            # 127.0.0.1 is not, but a port the gateway uses is nobody else's either).
            if any(self._is_local(found) for found in listening) and self._is_local(address):
                return True
        return False

    def _is_local(self, address: IpAddress) -> bool:
        now = time.monotonic()
        with self._lock:
            cached = self._local.get(address)
        if cached is not None and now - cached[0] < _CACHE_TTL_S:
            return cached[1]
        local = is_local_address(address)
        with self._lock:
            self._local[address] = (now, local)
        return local

    def _addresses(self, host: str, port: int) -> frozenset[IpAddress]:
        """What `host` resolves to; empty when it does not resolve (now): an endpoint
        that cannot be resolved cannot be matched by address either."""
        now = time.monotonic()
        with self._lock:
            cached = self._resolved.get(host)
        if cached is not None and now - cached[0] < _CACHE_TTL_S:
            return cached[1]
        try:
            found = frozenset(unmapped(a) for a in resolve(host, port, self._dns_timeout_s))
        except (OSError, TimeoutError):
            found = frozenset()
        with self._lock:
            self._resolved[host] = (now, found)
        return found
