"""Callback safety: which URLs the gateway may POST notifications to, checked on the
addresses a host resolves to, at creation and again at every new delivery connection.

Server-side request forgery is the risk: a subscription is a way to make the gateway send
HTTP requests to an address of the client's choosing, from inside the operator's network.
So, by default (the production posture):

- only `https` callbacks (`NETWEAVE_CALLBACK_ALLOW_HTTP=1` allows plain http);
- every address the host resolves to must be globally routable: loopback, link-local
  (169.254.0.0/16 with the cloud metadata service at 169.254.169.254, fe80::/10),
  unspecified, multicast, reserved and private ranges (10/8, 172.16/12, 192.168/16,
  100.64/10, fc00::/7 ...) are refused. `NETWEAVE_CALLBACK_ALLOW_PRIVATE=1` admits the
  private ranges (an SMO in the same data centre) but never loopback or link-local;
  `NETWEAVE_CALLBACK_ALLOWED_CIDRS` admits exactly the listed networks, whatever their
  category (development: `127.0.0.0/8,::1/128`);
- an IPv6 address that embeds an IPv4 address (6to4, NAT64, Teredo, IPv4-compatible:
  addresses.embedded_ipv4) is judged as that IPv4 address too, first, since a relay or
  translator delivers to it; allowing the IPv6 range does not admit the IPv4 inside. (An
  IPv4-mapped address, ::ffff:a.b.c.d, is judged as a.b.c.d only: it is that address.)

TLS: callbacks are verified against the system trust store, or against exactly the PEM
bundle `NETWEAVE_CALLBACK_CA_BUNDLE` names (it replaces the system store), at creation
(the probe) and at delivery alike. A certificate that fails verification is reported as
such (`certificate_problem`), never as a timeout. Redirects are never followed: a 3xx is
reported with where it pointed (`redirect_problem`).

A host that does not resolve at creation is accepted (split-horizon DNS, an SMO deployed
later): there is no address to judge yet, and the check that protects is the one at
delivery, which connects to the very address it checked (`open_connection`), so a DNS
answer that changes between check and connect (rebinding) cannot slip through. The
optional reachability probe (`NETWEAVE_CALLBACK_PROBE=1`) refuses such hosts at creation.

Whatever the allow-lists say, a callback never reaches the gateway's own listeners (Envoy's
admin and REST listeners, the core's gRPC and ops ports, the notifier's ops port, Redis,
the adapters): a POST to Envoy's `/quitquitquit` would stop the edge. Each process adds
the listeners it knows of (its own ports, Redis); `NETWEAVE_GATEWAY_ENDPOINTS` names the
others (`host:port,[v6]:port,...`). An endpoint on a wildcard, loopback or local address
protects its port on every address of this machine; one on another host protects its port
on the addresses that host resolves to (addresses.py). This is checked before the
allow-lists, on the very address connected to, at creation and at every delivery connection.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final
from urllib.parse import urlsplit

from netweave import settings
from netweave.redaction import redact_url
from server.subscriptions.addresses import (
    Endpoint,
    GatewayListeners,
    IpAddress,
    IpNetwork,
    embedded_ipv4,
    parse_endpoints,
    resolve,
    unmapped,
)

# Shared address space (carrier-grade NAT): not private in Python's sense, never public.
_SHARED_ADDRESS_SPACE: Final = ipaddress.ip_network("100.64.0.0/10")
# A redirect's Location is client-controlled text: this much of it goes into a reason.
_MAX_LOCATION_SHOWN: Final = 200


class CallbackRefused(Exception):
    """A callback the policy does not allow; the message says precisely why."""


def parse_cidrs(text: str) -> tuple[IpNetwork, ...]:
    """Comma-separated networks, e.g. "127.0.0.0/8,::1/128". Raises ValueError."""
    networks = []
    for item in text.split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"not a network: {item.strip()!r} ({exc})") from exc
    return tuple(networks)


@dataclass(frozen=True)
class CallbackPolicy:
    """Where notifications may go. The defaults are the production posture."""

    allow_http: bool = False
    allow_private: bool = False
    allowed_networks: tuple[IpNetwork, ...] = field(default_factory=tuple)
    # Creation: GET the callback and require a 2xx within probe_timeout_s.
    probe: bool = False
    probe_timeout_s: float = 5.0
    # A DNS answer slower than this counts as "does not resolve now" (creation must not
    # hang on a slow resolver; delivery checks again).
    dns_timeout_s: float = 2.0
    # The gateway's own listeners, refused whatever the allow-lists say (module docstring).
    gateway_endpoints: tuple[Endpoint, ...] = field(default_factory=tuple)
    # PEM file of the CAs callbacks' certificates are verified against; empty: the system
    # trust store. Read once, when first needed: a changed bundle needs a restart.
    ca_bundle: str = ""
    _listeners: GatewayListeners = field(init=False, repr=False, compare=False)
    # The verifying TLS context, built on first use (loading a trust store takes ms).
    _tls: list[ssl.SSLContext] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # What the endpoints resolve to, and which addresses are local, learnt lazily.
        object.__setattr__(
            self, "_listeners", GatewayListeners(self.gateway_endpoints, self.dns_timeout_s)
        )
        object.__setattr__(self, "_tls", [])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CallbackPolicy:
        """The policy of NETWEAVE_CALLBACK_* and NETWEAVE_GATEWAY_ENDPOINTS in `environ`
        (default: the process environment). The CA bundle is loaded here, so a wrong path
        or a file without a certificate stops the process at start, naming the variable."""
        ca_bundle = settings.CALLBACK_CA_BUNDLE.read(environ).strip()
        if ca_bundle:
            try:
                callback_tls_context(ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"{settings.CALLBACK_CA_BUNDLE.name}: cannot load {ca_bundle!r}: {exc}"
                ) from exc
        return cls(
            allow_http=settings.CALLBACK_ALLOW_HTTP.read(environ),
            allow_private=settings.CALLBACK_ALLOW_PRIVATE.read(environ),
            allowed_networks=settings.CALLBACK_ALLOWED_CIDRS.read_as(parse_cidrs, environ),
            probe=settings.CALLBACK_PROBE.read(environ),
            probe_timeout_s=settings.CALLBACK_PROBE_TIMEOUT_S.read(environ),
            dns_timeout_s=settings.CALLBACK_DNS_TIMEOUT_S.read(environ),
            gateway_endpoints=settings.GATEWAY_ENDPOINTS.read_as(parse_endpoints, environ),
            ca_bundle=ca_bundle,
        )

    @classmethod
    def development(cls) -> CallbackPolicy:
        """What `make run` and the tests use: http and loopback receivers allowed."""
        return cls(allow_http=True, allowed_networks=parse_cidrs("127.0.0.0/8,::1/128"))

    def with_gateway_endpoints(self, endpoints: Iterable[Endpoint]) -> CallbackPolicy:
        """A copy that also refuses `endpoints` (a process's own listeners). Port 0 (a
        port picked at start, not known yet) is left out."""
        added = list(self.gateway_endpoints)
        for host, port in endpoints:
            endpoint = (host.strip("[]"), port)
            if port and endpoint not in added:
                added.append(endpoint)
        return replace(self, gateway_endpoints=tuple(added))

    def scheme_problem(self, scheme: str) -> str | None:
        if scheme == "https" or (scheme == "http" and self.allow_http):
            return None
        if scheme == "http":
            return "must use https (plain http callbacks are not allowed by this gateway)"
        return f"must be an http or https URL, got scheme {scheme!r}"

    def tls_context(self) -> ssl.SSLContext:
        """The context that verifies callbacks' certificates (`ca_bundle` or the system
        trust store), shared by every connection; no client certificate."""
        if not self._tls:
            self._tls.append(callback_tls_context(self.ca_bundle))
        return self._tls[0]

    def address_problem(self, address: IpAddress, port: int | None = None) -> str | None:
        """Why the gateway must not connect to `address` (on `port`), or None."""
        address = unmapped(address)
        for embedding, embedded in embedded_ipv4(address):
            problem = self._own_problem(embedded, port)
            if problem is not None:
                return f"resolves to {address}, {embedding} {problem}"
        problem = self._own_problem(address, port)
        return None if problem is None else f"resolves to {problem}"

    def _own_problem(self, address: IpAddress, port: int | None) -> str | None:
        """What `address` itself is, when the gateway must not connect to it: "<address>,
        a loopback address", "<address>:<port>, one of the gateway's own listeners"."""
        if port is not None and self._listeners.match(address, port):
            shown = f"[{address}]" if address.version == 6 else str(address)
            return f"{shown}:{port}, one of the gateway's own listeners"
        if any(address in network for network in self.allowed_networks):
            return None
        category = _category(address)
        if category is None:
            return None
        if category == "private" and self.allow_private:
            return None
        return f"{address}, a {category} address"

    def check_url(self, url: str) -> tuple[str, int, list[IpAddress]]:
        """(host, port, allowed addresses) of `url`; raises CallbackRefused. The addresses
        are empty when the host does not resolve (see the module docstring)."""
        parts = urlsplit(url)
        problem = self.scheme_problem(parts.scheme.lower())
        if problem is not None:
            raise CallbackRefused(problem)
        host = parts.hostname or ""
        if not host:
            raise CallbackRefused("must name a host")
        try:
            port = parts.port
        except ValueError:
            raise CallbackRefused("has an invalid port") from None
        if port is None:
            port = 443 if parts.scheme.lower() == "https" else 80
        try:
            addresses = resolve(host, port, self.dns_timeout_s)
        except (socket.gaierror, TimeoutError):
            return host, port, []
        for address in addresses:
            problem = self.address_problem(address, port)
            if problem is not None:
                raise CallbackRefused(f"host {host!r} {problem}")
        return host, port, addresses


def callback_tls_context(ca_bundle: str) -> ssl.SSLContext:
    """A client context verifying against exactly `ca_bundle` (a PEM file), or the system
    trust store when it is empty. Raises OSError or ssl.SSLError for an unusable bundle."""
    return ssl.create_default_context(cafile=ca_bundle or None)


def trust_description(ca_bundle: str) -> str:
    return f"the CA bundle {ca_bundle}" if ca_bundle else "the system trust store"


def certificate_problem(error: ssl.SSLCertVerificationError, ca_bundle: str) -> str:
    """A certificate that failed verification, in the words used at creation (the probe),
    in the notifier's log and in the dead letter alike."""
    why = error.verify_message or error.reason or str(error)
    return (
        f"TLS certificate verification failed: {why} (trusted: {trust_description(ca_bundle)};"
        " NETWEAVE_CALLBACK_CA_BUNDLE names the CAs callbacks are verified against)"
    )


def redirect_problem(status: int, location: str | None, answered: str = "answered") -> str:
    """A 3xx, with where it pointed (credentials masked, shortened): not followed, since
    the policy checked this URL, not the one it points to."""
    if not location:
        return f"{answered} {status}; redirects are not followed"
    shown = "".join(c if c.isprintable() else "?" for c in location[:_MAX_LOCATION_SHOWN])
    more = "..." if len(location) > _MAX_LOCATION_SHOWN else ""
    return (
        f"{answered} {status} (redirect to {redact_url(shown)}{more}); redirects are not followed"
    )


def _category(address: IpAddress) -> str | None:
    """The non-public category an address belongs to, or None if it is public."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE:
        return "private"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


class PinnedConnection(http.client.HTTPSConnection):
    """An HTTP(S) connection to one already-checked address: the Host header, SNI and
    certificate verification use the URL's host name, the socket goes to `address`.
    Plain http when `tls` is None."""

    def __init__(
        self,
        host: str,
        port: int,
        address: IpAddress,
        *,
        timeout: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=tls or ssl.create_default_context())
        self._address = address
        self._tls = tls
        if tls is None:
            self.default_port = 80

    def connect(self) -> None:
        sock = socket.create_connection((str(self._address), self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


def open_connection(
    url: str,
    policy: CallbackPolicy,
    *,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> PinnedConnection:
    """A connection (not yet connected) to the first allowed address of `url`'s host,
    verified with `tls` (default: the policy's context). Raises CallbackRefused (policy)
    or OSError (the host does not resolve)."""
    host, port, addresses = policy.check_url(url)
    if not addresses:
        raise OSError(f"host {host!r} does not resolve (now)")
    secure = urlsplit(url).scheme.lower() == "https"
    return PinnedConnection(
        host,
        port,
        addresses[0],
        timeout=timeout,
        tls=(tls or policy.tls_context()) if secure else None,
    )


def request_target(url: str) -> str:
    """The path and query of `url`, as sent in the request line."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def probe(url: str, policy: CallbackPolicy, tls: ssl.SSLContext | None = None) -> str | None:
    """GET the callback (ETSI "test the notification endpoint"): None if it answered 2xx
    within the probe timeout, else why not. A certificate that does not verify and a
    redirect are said to be that."""
    try:
        connection = open_connection(url, policy, timeout=policy.probe_timeout_s, tls=tls)
    except CallbackRefused as refused:
        return str(refused)
    except OSError as exc:
        return f"is unreachable: {exc}"
    try:
        connection.request("GET", request_target(url), headers={"User-Agent": USER_AGENT})
        response = connection.getresponse()
        response.read()
    except ssl.SSLCertVerificationError as exc:
        return certificate_problem(exc, policy.ca_bundle)
    except ssl.SSLError as exc:
        return f"failed the TLS handshake of the validation GET: {exc}"
    except (OSError, http.client.HTTPException) as exc:
        return f"did not answer the validation GET within {policy.probe_timeout_s:g} s: {exc}"
    finally:
        connection.close()
    if 300 <= response.status < 400:
        answered = "answered the validation GET with"
        return redirect_problem(response.status, response.getheader("Location"), answered)
    if not 200 <= response.status < 300:
        return f"answered the validation GET with {response.status}, expected 2xx"
    return None


USER_AGENT: Final = "netweave-notifier/1"


def describe(policy: CallbackPolicy) -> dict[str, object]:
    """The policy for logs (no secrets in it)."""
    networks: Sequence[IpNetwork] = policy.allowed_networks
    return {
        "allow_http": policy.allow_http,
        "allow_private": policy.allow_private,
        "allowed_networks": [str(n) for n in networks],
        "gateway_endpoints": [
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            for host, port in policy.gateway_endpoints
        ],
        "probe": policy.probe,
        "ca_bundle": policy.ca_bundle or "system",
    }
