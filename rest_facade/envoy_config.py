"""Render Envoy's configuration from the one template, `envoy/gateway.yaml.in`.

Development and production differ only in the values of an `EnvoyConfig`; the structure of
the config (filters, their order, every comment on why) lives in the template. The
ProblemDetails mappers are inlined; the REST shaper is a compiled module (envoy/modules/shaper.c)
the rendered file names by absolute path.
"""

from __future__ import annotations

import http
import json
import os
import re
import string
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import yaml

from netweave.headers import (
    CLIENT_CERT_HEADER,
    CORRELATION_ID_HEADER,
    CORRELATION_ID_PATTERN,
    EDGE_MARKER_HEADER,
    IDENTITY_HEADERS,
    IGNORED_QUERY_HEADER,
    JWT_PAYLOAD_HEADER,
    REQUEST_ID_HEADER,
    TELEMETRY_FIELDS,
    TELEMETRY_SEPARATOR,
)
from netweave.settings import ACCESS_LOG_REQUESTS
from rest_facade import (
    edge_limits,
    envoy_modules,
    envoy_routes,
    envoy_sds,
    envoy_tracing,
    openapi,
)
from rest_facade.edge_limits import ConnectionLimits
from rest_facade.envoy_routes import header_value_option
from rest_facade.envoy_sds import FileSecret
from rest_facade.envoy_tracing import GRPC_UPSTREAM_PROTOCOL, EdgeTracing
from rest_facade.http_rules import HttpRule, read_rules, services_with_rules

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "envoy" / "gateway.yaml.in"

# Envoy's file access logger writes here when no path is given (container-friendly).
STDOUT = Path("/dev/stdout")

# Statuses Envoy itself produces (transcoder, HCM, router, later JWT and rate limiting),
# each mapped to a ProblemDetails with the standard reason phrase as title.
LOCAL_REPLY_STATUSES = (400, 401, 403, 404, 405, 408, 413, 415, 429, 431, 500, 502, 503, 504)
# 5xx details are fixed: Envoy's own text for them describes upstream internals (a core
# that is down gives "upstream connect error or disconnect/reset before headers. reset
# reason: remote connection failure"). 4xx details keep Envoy's text, which tells the client
# what was wrong with its request ('Could not find field "typo" in the type ...').
SERVER_ERROR_DETAILS = {
    500: "the gateway failed to process the request",
    502: "the inventory service sent an invalid response",
    503: "the inventory service is unavailable; retry later",
    504: "the inventory service did not answer in time; retry later",
}
GENERIC_SERVER_ERROR_DETAIL = "the gateway could not complete the request"
# Envoy's response code details name the check that failed (e.g. "http1.codec_error"); they
# are about the request only, as nothing upstream happened yet.
PRE_FILTER_DETAIL = "the request is malformed (%RESPONSE_CODE_DETAILS%)"
# The largest REST request body (1 MiB): the transcoder's max_request_body_size, and the
# REST shaper's 413 limit (the transcoder's caps only its internal buffer).
MAX_REQUEST_BODY_BYTES = 1_048_576
# Verified bearer tokens each Envoy worker keeps (jwt_authn's jwt_cache_config), so a
# client's repeated token is not verified again on every call.
JWT_CACHE_SIZE = 1000
# Where the REST shaper (envoy/modules/shaper.c) records "this is a REST request", the
# path, the core's grpc_status...: its filter config names it.
REST_METADATA_NAMESPACE = "netweave.rest"
# Where the request context filter records the query as it let it pass (credentials
# redacted), which the access log reads (envoy/gateway.yaml.in).
GUARD_NAMESPACE = "netweave.request_guard"
# Where the client's x-request-id waits for the request context filter: Envoy replaces
# x-request-id with its own for every external request (it cannot be trusted as is).
CLIENT_REQUEST_ID_HEADER = "x-netweave-client-request-id"
# Dynamic metadata the request context filter writes (correlation_id, route).
CONTEXT_NAMESPACE = envoy_routes.CONTEXT_FILTER
# The stats listener (EnvoyConfig.stats_port), as named in the rendered config.
STATS_LISTENER = "envoy_stats"
# Envoy's cluster for its admin API (the Unix socket), reached only by the stats listener.
ADMIN_CLUSTER = "envoy_admin"
# The admin endpoints the stats listener serves (GET only); everything else is a 404.
STATS_PATHS = ("/stats/prometheus", "/ready")
# The core's edge telemetry listener (server/edge_telemetry.py): OTLP access log records.
TELEMETRY_CLUSTER = "netweave_edge_telemetry"
# The service whose health Envoy checks on each core (serving once the inventory is loaded).
INVENTORY_HEALTH_SERVICE = "o2ims.inventory.v1.InventoryService"
# Where Envoy's admin API listens unless configured otherwise (a Unix socket; in a pod, an
# emptyDir that only Envoy's container mounts).
DEFAULT_ADMIN_SOCKET = Path("/run/netweave/envoy-admin.sock")
# Where the SDS resource files are (rest_facade/envoy_sds.py) when a config is rendered
# without a place for them (`render` alone; `write` puts them beside the config).
DEFAULT_SDS_DIR = Path("/run/netweave/envoy-sds")
# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_UNIX_SOCKET_PATH = 107

# Headers Envoy sets (the core reads netweave.headers.IDENTITY_HEADERS, server/auth);
# whatever a client sent under these names is dropped first. CLIENT_ID_HEADER is no longer
# set (the rate limiter computes the identity itself) but still dropped: a core or a log
# must never take a client-sent one for Envoy's.
CLIENT_ID_HEADER = "x-netweave-client-id"
STRIPPED_HEADERS = (*IDENTITY_HEADERS, CLIENT_ID_HEADER, IGNORED_QUERY_HEADER)
JWT_PROVIDER = "o2ims"
# jwt_authn puts the verified payload here (namespace = the filter name); the rate limiter
# reads its `sub` (CLIENT_IDENTITY_EXPRESSION).
JWT_METADATA_KEY = "payload"
JWT_REALM = "o2ims"
WWW_AUTHENTICATE = f'Bearer realm="{JWT_REALM}", error="invalid_token"'
RATE_LIMIT_DESCRIPTOR_KEY = "client"
# A caller's identity for its rate-limit bucket, computed by the local rate limiter from the
# channel only (the TLS connection and jwt_authn's verified payload, never a request
# header), as two descriptor entries, its kind and its value (CEL here cannot concatenate
# strings): a verified client certificate's first URI SAN ("uri"), else its subject
# ("subject"); otherwise a verified bearer token's `sub` claim, a non-empty string ("jwt").
# Otherwise none: the expressions fail, and the request draws from the default bucket.
# ClientLimit.identity spells them "<uri>", "subject:<subject>" and "jwt:<sub>".
# (`has` and != '': Envoy gives no URI SAN but an empty subject without a certificate. The last
# branch fails on purpose, a namespace nothing writes: CEL has no literal for "no value".)
RATE_LIMIT_KIND_KEY = "client_kind"
_TOKEN_SUBJECT = (
    f"metadata.filter_metadata['envoy.filters.http.jwt_authn']['{JWT_METADATA_KEY}']['sub']"
)
_NO_IDENTITY = "metadata.filter_metadata['netweave.no_client_identity']['none']"


def _present(field: str) -> str:
    return f"has({field}) && {field} != ''"


def _identity_expression(uri: str, subject: str, token: str) -> str:
    return (
        f"{_present('connection.uri_san_peer_certificate')} ? {uri}"
        f" : {_present('connection.subject_peer_certificate')} ? {subject}"
        f" : type({_TOKEN_SUBJECT}) == string && {_TOKEN_SUBJECT} != '' ? {token}"
        f" : {_NO_IDENTITY}"
    )


CLIENT_KIND_EXPRESSION = _identity_expression("'uri'", "'subject'", "'jwt'")
CLIENT_IDENTITY_EXPRESSION = _identity_expression(
    "connection.uri_san_peer_certificate", "connection.subject_peer_certificate", _TOKEN_SUBJECT
)


@dataclass(frozen=True)
class JwtConfig:
    """OAuth2 bearer tokens, verified by Envoy's jwt_authn.

    Exactly one of `jwks_path` (a local JWKS file) or `jwks_uri` (fetched and cached by
    Envoy) gives the signing keys. `required=False`: a request without a token passes
    (mTLS may identify it), but a request WITH a token that does not verify is still a 401.

    Tokens are read from the `Authorization: Bearer` header only (never a query parameter,
    which ends up in logs), must carry `exp`, and may live at most `max_lifetime_s`: a token
    that leaked is not usable forever.
    """

    issuer: str
    audiences: tuple[str, ...]
    jwks_path: Path | None = None
    jwks_uri: str | None = None
    required: bool = True
    # How long Envoy caches a remote JWKS.
    jwks_cache_seconds: int = 300
    # The longest lifetime a token may have (jwt_authn max_lifetime; 24 h by default).
    max_lifetime_s: int = 86_400

    def __post_init__(self) -> None:
        if (self.jwks_path is None) == (self.jwks_uri is None):
            raise ValueError("JwtConfig needs exactly one of jwks_path or jwks_uri")
        if self.max_lifetime_s < 1:
            raise ValueError("max_lifetime_s must be at least 1 second")
        if not self.audiences:
            raise ValueError("JwtConfig needs at least one audience")
        if self.jwks_uri is not None:
            parsed = urllib.parse.urlsplit(self.jwks_uri)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"jwks_uri {self.jwks_uri!r} is not an http(s) URL")


@dataclass(frozen=True)
class ClientLimit:
    """A token bucket for one client identity (see RateLimitConfig)."""

    identity: str
    tokens_per_fill: int
    fill_interval_s: float = 1.0
    max_tokens: int | None = None


@dataclass(frozen=True)
class RateLimitConfig:
    """Per-client token buckets in Envoy (local rate limit, per Envoy process).

    A client's identity is the URI SAN of its certificate (e.g.
    `spiffe://netweave.local/client/smo-north`) when it presented one (`subject:<subject>`
    for a certificate without one), else `jwt:<sub>` of its verified token; Envoy takes it
    from the TLS connection and the verified token only (CLIENT_IDENTITY_EXPRESSION).
    Each distinct identity gets its own bucket of `tokens_per_fill` per `fill_interval_s`
    (burst `max_tokens`, default `tokens_per_fill`), unless `per_client` names it.
    Requests with neither share one anonymous bucket of the same size.
    """

    tokens_per_fill: int = 100
    fill_interval_s: float = 1.0
    max_tokens: int | None = None
    per_client: tuple[ClientLimit, ...] = ()
    # LRU bound on the number of per-client buckets Envoy keeps.
    max_dynamic_descriptors: int = 10000

    def __post_init__(self) -> None:
        buckets: list[RateLimitConfig | ClientLimit] = [self, *self.per_client]
        for bucket in buckets:
            if bucket.tokens_per_fill < 1:
                raise ValueError("tokens_per_fill must be at least 1")
            if bucket.fill_interval_s < 0.05:
                raise ValueError("fill_interval_s must be at least 0.05 (Envoy's minimum)")
            if bucket.max_tokens is not None and bucket.max_tokens < 1:
                raise ValueError("max_tokens must be at least 1")


@dataclass(frozen=True)
class CoreTls:
    """Envoy's side of the mutual TLS to the core's edge listener: Envoy's own certificate
    (its URI SAN is the core's NETWEAVE_EDGE_PEER_URI), the CA that signed the core's
    server certificate, and the URI SAN that certificate must carry."""

    cert: Path
    key: Path
    ca: Path
    core_uri: str
    # The name Envoy sends in SNI (and what the core's certificate is issued for).
    server_name: str = "localhost"

    def __post_init__(self) -> None:
        if not self.core_uri:
            raise ValueError("CoreTls needs the core certificate's URI SAN (core_uri)")


@dataclass(frozen=True)
class EnvoyConfig:
    """The values that differ between deployments of the Envoy edge.

    Ports may be 0 (except the core's): the kernel picks one and `start_envoy` reads the
    bound port back from the admin API. Paths are made absolute without resolving symlinks:
    Kubernetes mounts Secrets through `..data` symlinks that must stay followable after a
    rotation.
    """

    listen_port: int
    core_port: int
    descriptor_path: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    listen_host: str = "127.0.0.1"
    core_host: str = "127.0.0.1"
    # Every core replica Envoy balances over, (host, port) each (host: an IP, or a DNS name
    # resolved and followed); empty: (core_host, core_port) alone. Idempotent reads retry
    # on another replica (rest_facade/envoy_routes.py).
    core_endpoints: tuple[tuple[str, int], ...] = ()
    # Envoy's gRPC health check of each core: a core reporting NOT_SERVING (draining on
    # SIGTERM) gets no new requests after interval x unhealthy threshold + timeout
    # (`core_detection_s`), which the core's drain period must exceed.
    core_health_interval_s: float = 5.0
    core_health_timeout_s: float = 1.0
    core_unhealthy_threshold: int = 2
    # Envoy's admin API: a Unix socket (mode 0600), never a TCP port.
    admin_socket: Path = DEFAULT_ADMIN_SOCKET
    # Connection caps and timeouts (rest_facade/edge_limits.py).
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    # False: validate a client certificate when one is presented. True: demand one.
    require_client_certificate: bool = False
    # None: the access log goes to Envoy's stdout.
    access_log_path: Path | None = None
    # Which requests it records: "failures" (access_log_filter: a status of 400 or more, a
    # gRPC status other than OK, a response flag, or access_log_slow_ms or slower) or "all".
    # Successes are most of the traffic and the core audits each call that reaches it, so
    # formatting and writing their lines is edge CPU spent on every read for little.
    access_log_requests: str = "failures"
    access_log_slow_ms: int = 1000
    # The gRPC services published through the edge (REST and native gRPC). None: every
    # service of the descriptor set that has HTTP rules. Services left out answer 404.
    services: tuple[str, ...] | None = None
    # URI SAN prefixes a client certificate must match (one of); empty: any the CA signed.
    client_san_allow_list: tuple[str, ...] = ()
    # OAuth2 bearer tokens; None: no token checks (today's behaviour).
    jwt: JwtConfig | None = None
    # Per-client token buckets; None: no rate limiting.
    rate_limit: RateLimitConfig | None = None
    # Mutual TLS to the core's edge listener (where alone the core believes the identity
    # Envoy forwards). None: plaintext, for a test core only; a real core then refuses
    # every call that carries the edge's marker on its internal listener.
    core_tls: CoreTls | None = None
    # True: a query parameter a path does not know is a 400. False (default): it is dropped
    # before the transcoder and counted by the core (o2ims_ignored_query_parameters_total).
    strict_query_parameters: bool = False
    # Where Envoy writes audit records of the calls it refuses itself (401, 429); None: none.
    audit_log_path: Path | None = None
    # The core's edge telemetry listener (server/edge_telemetry.py), on every core's host:
    # every REST request's access log record goes to a healthy core over the mutual TLS of
    # core_tls, for o2ims_http_requests_total and o2ims_http_request_duration_seconds.
    # None: not sent.
    telemetry_port: int | None = None
    # Each core's telemetry port, in the order of `cores()`, where cores share a host (a dev
    # stack); empty: telemetry_port on every core (Kubernetes: a core per pod). Unused
    # while telemetry_port is None.
    core_telemetry_ports: tuple[int, ...] = ()
    # A plain-HTTP listener for Prometheus serving only GET /stats/prometheus and /ready
    # of the admin API. None: none (the stats stay on the admin socket). 0: a free port.
    stats_port: int | None = None
    # Its address; None: listen_host. Pods: 0.0.0.0 so Prometheus can reach it.
    stats_host: str | None = None
    # OpenTelemetry traces to a collector (rest_facade/envoy_tracing.py); None: off.
    tracing: EdgeTracing | None = None
    # Where the SDS resource files naming the certificates are (rest_facade/envoy_sds.py;
    # written by `write`). None: `sds/` beside the rendered config (DEFAULT_SDS_DIR for
    # `render` alone). Envoy re-reads each certificate when its directory changes.
    sds_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.access_log_requests not in ACCESS_LOG_REQUESTS:
            raise ValueError(
                f"access_log_requests is one of {ACCESS_LOG_REQUESTS}, "
                f"not {self.access_log_requests!r}"
            )
        if self.access_log_slow_ms < 1:
            raise ValueError(
                "access_log_slow_ms (NETWEAVE_ENVOY_ACCESS_LOG_SLOW_MS) must be at least 1, "
                f"not {self.access_log_slow_ms}"
            )
        if isinstance(self.client_san_allow_list, str):
            raise TypeError("client_san_allow_list is a tuple of prefixes, not a string")
        if any(not prefix for prefix in self.client_san_allow_list):
            raise ValueError("client_san_allow_list has an empty prefix (it would allow all)")
        for name in ("listen_port", "core_port", "telemetry_port", "stats_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name} {port} is not a TCP port")
        if self.telemetry_port is not None:
            if self.telemetry_port == 0:
                raise ValueError("telemetry_port must be a real port")
            if self.core_tls is None:
                # The core believes what arrives there: only over Envoy's mutual TLS.
                raise ValueError("telemetry_port needs core_tls (the core's edge mutual TLS)")
        if self.core_telemetry_ports:
            if len(self.core_telemetry_ports) != len(cores(self)):
                raise ValueError("core_telemetry_ports needs one port per core endpoint")
            if not all(0 < port <= 65535 for port in self.core_telemetry_ports):
                raise ValueError(f"core_telemetry_ports {self.core_telemetry_ports} not all real")
        if self.core_port == 0:
            raise ValueError("core_port must be a real port")
        for host, port in self.core_endpoints:
            if not host or not 0 < port <= 65535:
                raise ValueError(f"core endpoint {host}:{port} is not a host and a real port")
        if min(self.core_health_interval_s, self.core_health_timeout_s) <= 0:
            raise ValueError("the core health check's interval and timeout must be > 0")
        if self.core_unhealthy_threshold < 1:
            raise ValueError("core_unhealthy_threshold must be >= 1")
        admin_socket = os.fsencode(os.path.abspath(self.admin_socket))
        if len(admin_socket) > MAX_UNIX_SOCKET_PATH:
            raise ValueError(
                f"admin_socket {self.admin_socket} is {len(admin_socket)} bytes long: a Unix "
                f"socket path has at most {MAX_UNIX_SOCKET_PATH}"
            )


def cores(config: EnvoyConfig) -> tuple[tuple[str, int], ...]:
    """The (host, port) of every core replica Envoy balances over."""
    return config.core_endpoints or ((config.core_host, config.core_port),)


def telemetry_endpoints(config: EnvoyConfig) -> tuple[tuple[str, int], ...]:
    """The (host, port) of every core's edge telemetry listener, in the order of `cores()`;
    empty when the edge sends no telemetry."""
    if config.telemetry_port is None:
        return ()
    ports = config.core_telemetry_ports or (config.telemetry_port,) * len(cores(config))
    return tuple((host, port) for (host, _), port in zip(cores(config), ports, strict=True))


def core_detection_s(config: EnvoyConfig) -> float:
    """The longest Envoy keeps sending new requests to a core that reports NOT_SERVING:
    what the core's drain period (NETWEAVE_SHUTDOWN_DRAIN_SECONDS) must exceed."""
    return config.core_health_interval_s * config.core_unhealthy_threshold + (
        config.core_health_timeout_s
    )


def render(config: EnvoyConfig, sds_dir: Path | None = None) -> str:
    """The Envoy configuration for `config`, as YAML text. Its certificates are SDS secrets
    in resource files under `sds_dir` (default: config.sds_dir, else DEFAULT_SDS_DIR), which
    `envoy_sds.write_resources(sds_secrets(config), ...)` writes."""
    config = replace(config, sds_dir=sds_dir or config.sds_dir or DEFAULT_SDS_DIR)
    template_text = TEMPLATE_PATH.read_text()
    template = string.Template(template_text)
    values = _template_values(config, template_text)
    placeholders = set(template.get_identifiers())
    missing = placeholders - values.keys()
    unused = values.keys() - placeholders
    if missing or unused:
        raise RuntimeError(f"template/renderer drift: missing {missing}, unused {unused}")
    return template.substitute(values)


def write(config: EnvoyConfig, path: Path) -> Path:
    """Render `config` into `path` (parents created), and its SDS resource files into
    config.sds_dir (default: `sds/` beside `path`); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sds_dir = config.sds_dir or path.parent / "sds"
    envoy_sds.write_resources(sds_secrets(config), sds_dir)
    path.write_text(render(config, sds_dir))
    return path


def sds_secrets(config: EnvoyConfig) -> list[FileSecret]:
    """The SDS secrets of `config`: the listener's certificate and the CA of client
    certificates; with core_tls, Envoy's client certificate and the CA of the core's."""
    found = [
        FileSecret(envoy_sds.SERVER_CERTIFICATE, config.server_cert, config.server_key),
        FileSecret(envoy_sds.CLIENT_CA, config.client_ca),
    ]
    if config.core_tls is not None:
        found += [
            FileSecret(
                envoy_sds.CORE_CLIENT_CERTIFICATE, config.core_tls.cert, config.core_tls.key
            ),
            FileSecret(envoy_sds.CORE_CA, config.core_tls.ca),
        ]
    return found


def _secret_reference(config: EnvoyConfig, name: str) -> dict[str, Any]:
    assert config.sds_dir is not None  # render() sets it
    for secret in sds_secrets(config):
        if secret.name == name:
            return secret.reference(config.sds_dir)
    raise KeyError(name)


# --- implementation ------------------------------------------------------------------


def _template_values(config: EnvoyConfig, template_text: str) -> dict[str, str]:
    access_log = config.access_log_path or STDOUT
    # Scalars are JSON-quoted: JSON strings are valid YAML, whatever the path contains.
    scalars: dict[str, str] = {
        "listen_host": json.dumps(config.listen_host),
        "listen_port": str(config.listen_port),
        "admin_socket": _path(config.admin_socket),
        "core_lb_endpoints": json.dumps(
            [
                {"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}}
                for h, p in cores(config)
            ]
        ),
        "descriptor_path": _path(config.descriptor_path),
        "server_certificate_sds": json.dumps(
            [_secret_reference(config, envoy_sds.SERVER_CERTIFICATE)]
        ),
        "client_ca_sds": json.dumps(_secret_reference(config, envoy_sds.CLIENT_CA)),
        "client_validation": json.dumps(_client_validation(config)),
        "require_client_certificate": "true" if config.require_client_certificate else "false",
        "access_log_path": _path(access_log),
        "access_log_filter": json.dumps(access_log_filter(config)),
        "client_request_id_header": json.dumps(CLIENT_REQUEST_ID_HEADER),
        "client_request_id_value": json.dumps(f"%REQ({REQUEST_ID_HEADER})%"),
        **edge_limits.template_values(config.connection_limits),
    }
    rules = served_rules(config)
    openapi_json = openapi.render_json(openapi.build_document(config.descriptor_path, rules))
    path_keys = openapi.path_keys(config.descriptor_path, rules)
    scalars["transcoded_services"] = json.dumps(services_with_rules(rules))
    scalars["max_request_body_bytes"] = str(MAX_REQUEST_BODY_BYTES)
    # Room for the document plus the other direct responses (short ProblemDetails texts).
    scalars["max_direct_response_body_size_bytes"] = str(len(openapi_json.encode()) + 4096)
    blocks = {
        "routes": _yaml_block(envoy_routes.routes(rules, openapi_json, path_keys)),
        "shaper_filter": _yaml_block([shaper_filter(config)]),
        "local_reply_mappers": _yaml_block(
            _auth_reply_mappers(config) + _timeout_reply_mappers() + _local_reply_mappers()
        ),
        "auth_filters": _auth_filters(config),
        "jwks_clusters": _jwks_clusters(config),
        "audit_access_log": _audit_access_log(config),
        "telemetry_access_log": _telemetry_access_log(config),
        "telemetry_clusters": _telemetry_clusters(config),
        "core_health_checks": _yaml_block(_core_health_checks(config)),
        "stats_listeners": _stats_listeners(config),
        "http_tracing": _optional_block(envoy_tracing.http_tracing(config.tracing)),
        "trace_clusters": _optional_block(envoy_tracing.collector_clusters(config.tracing)),
        "admin_clusters": _admin_clusters(config),
        "core_transport_socket": _core_transport_socket(config),
        "source_limit_filter": _source_limit_filter(config),
    }
    scalars["edge_request_headers"] = json.dumps(
        [header_value_option(EDGE_MARKER_HEADER, "1"), _client_certificate_header()]
    )
    for name, text in blocks.items():
        scalars[name] = _indent_continuation(text, _placeholder_indent(template_text, name))
    return scalars


def served_rules(config: EnvoyConfig) -> list[HttpRule]:
    """The HTTP rules of the services `config` publishes, read from its descriptor set."""
    rules = read_rules(config.descriptor_path)
    if config.services is None:
        return rules
    unknown = set(config.services) - set(services_with_rules(rules))
    if unknown:
        raise ValueError(f"services without HTTP rules in {config.descriptor_path}: {unknown}")
    return [rule for rule in rules if rule.service in config.services]


def _duration(seconds: float) -> str:
    """A protobuf Duration in YAML: seconds with a unit, millisecond precision."""
    return f"{round(seconds, 3):g}s"


def _yaml_block(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=1000)


def _optional_block(value: Any) -> str:
    """`value` as a YAML block, or nothing for None or an empty list."""
    return _yaml_block(value) if value else ""


def _path(path: Path) -> str:
    return json.dumps(os.path.abspath(path))


def _placeholder_indent(template_text: str, name: str) -> int:
    """The column of a block placeholder, which must stand alone on its line."""
    match = re.search(rf"^( *)\$\{{{name}\}}$", template_text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"block placeholder ${{{name}}} must stand alone on a line")
    return len(match.group(1))


def _indent_continuation(text: str, indent: int) -> str:
    """Indent every line but the first (which takes the placeholder's place)."""
    lines = text.rstrip("\n").split("\n")
    pad = " " * indent
    return "\n".join([lines[0], *[pad + line if line else "" for line in lines[1:]]])


def _client_validation(config: EnvoyConfig) -> dict[str, Any]:
    """What the listener checks in a client certificate beside the CA (an SDS secret)."""
    if not config.client_san_allow_list:
        return {}
    return {
        "match_typed_subject_alt_names": [
            {"san_type": "URI", "matcher": {"prefix": prefix}}
            for prefix in config.client_san_allow_list
        ]
    }


def shaper_settings(*, strict_query: bool) -> str:
    """The REST shaper's configuration (envoy/modules/shaper.c), `key=value` lines: every
    value it needs from the Python side."""
    settings = {
        # REST bodies above this are refused with 413 (the transcoder's own limit is on its
        # internal buffer, and a long JSON string passes it): the transcoder's value.
        "max_request_body_bytes": str(MAX_REQUEST_BODY_BYTES),
        # Strict: an unknown query parameter is a 400 (else it is dropped and counted).
        "strict_query": "true" if strict_query else "false",
        "rest_namespace": REST_METADATA_NAMESPACE,
        # Route metadata (rest_facade/envoy_routes.py) is read under the filter's name.
        "route_namespace": envoy_routes.SHAPER_FILTER,
        "ignored_query_header": IGNORED_QUERY_HEADER,
        # A 401 from the core (neither certificate nor token) names the scheme to use.
        "unauthorized_challenge": f'Bearer realm="{JWT_REALM}"',
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def shaper_filter(config: EnvoyConfig) -> dict[str, Any]:
    """The REST shaper (envoy/modules/shaper.c) as an HTTP filter of the edge."""
    module = envoy_modules.module_path(envoy_modules.SHAPER)
    return {
        "name": envoy_routes.SHAPER_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3."
            "DynamicModuleFilter",
            "dynamic_module_config": {
                # A path, not a name: no ENVOY_DYNAMIC_MODULES_SEARCH_PATH to get right.
                "module": {"local": {"filename": os.path.abspath(module)}},
            },
            "filter_name": envoy_modules.SHAPER,
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": shaper_settings(strict_query=config.strict_query_parameters),
            },
        },
    }


def _source_limit_filter(config: EnvoyConfig) -> str:
    filters = edge_limits.source_limit_filters(config.connection_limits)
    return _yaml_block(filters) if filters else ""


def _auth_filters(config: EnvoyConfig) -> str:
    filters: list[dict[str, Any]] = [
        # Before anything can refuse the request: its correlation id (returned on every
        # response, local replies included) and its route template. Then, in the same
        # native filter, CONNECT and credentials in the URL are refused (the latter
        # redacted) before any filter reads them or any log line can hold them.
        # The same filter drops whatever a client sent under a name only Envoy may assert
        # (STRIPPED_HEADERS) before any filter reads the request, and on the way out it gives
        # every reply from later filters or the core the request's correlation id and a 429
        # its Retry-After. The verified client certificate is set for the core by the
        # virtual host (edge_request_headers), from the TLS connection itself.
        request_context_filter(),
    ]
    if config.jwt is not None:
        filters.append(_jwt_filter(config.jwt))
    # The caller's identity for the rate limiter is computed by the limiter itself
    # (CLIENT_IDENTITY_EXPRESSION): no filter, no header.
    if config.rate_limit is not None:
        filters.append(_rate_limit_filter(config.rate_limit))
    return _yaml_block(filters)


def _client_certificate_header() -> dict[str, Any]:
    """x-netweave-client-cert: the client certificate of the TLS connection, URL-encoded PEM
    (what the core parses, netweave/headers.py CLIENT_CERT_HEADER), replacing any value (a
    client's copy is dropped before by the request context filter). The listener refuses a
    certificate its CA does not verify at the handshake, so one that is there is verified.
    Without one the value is empty and no header is added (keep_empty_value is false)."""
    return header_value_option(CLIENT_CERT_HEADER, "%DOWNSTREAM_PEER_CERT%")


def _jwt_filter(jwt: JwtConfig) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "issuer": jwt.issuer,
        "audiences": list(jwt.audiences),
        # The Authorization header is not forwarded: the core gets the verified claims.
        "forward": False,
        "forward_payload_header": JWT_PAYLOAD_HEADER,
        "payload_in_metadata": JWT_METADATA_KEY,
        "clock_skew_seconds": 60,
        # The header only. Without this jwt_authn also reads ?access_token=, and a URL ends
        # up in access logs (the request guard refuses such requests before this filter).
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        # A token without `exp` would be valid forever; one may live at most max_lifetime.
        "require_expiration": True,
        "max_lifetime": f"{jwt.max_lifetime_s}s",
        # A client sends the same token on every call until it expires: verify its signature
        # once (the RSA/ECDSA check was ~150 us of Envoy CPU per call) and keep the verified
        # token, per worker, for its next calls. A cached token is still refused once its
        # `exp` (with the clock skew) has passed, and its issuer, audiences and lifetime
        # were checked when it was cached. Bounded: least recently used tokens go first.
        "jwt_cache_config": {"jwt_cache_size": JWT_CACHE_SIZE},
    }
    if jwt.jwks_path is not None:
        provider["local_jwks"] = {"filename": os.path.abspath(jwt.jwks_path)}
    else:
        assert jwt.jwks_uri is not None
        provider["remote_jwks"] = {
            "http_uri": {"uri": jwt.jwks_uri, "cluster": "jwks", "timeout": "5s"},
            "cache_duration": f"{jwt.jwks_cache_seconds}s",
            # Fetch at start-up, not on the first request (which would otherwise wait).
            "async_fetch": {"fast_listener": False},
            "retry_policy": {"num_retries": 3},
        }
    requires: dict[str, Any] = {"provider_name": JWT_PROVIDER}
    if not jwt.required:
        # No token: pass. A token that fails verification: 401 (allow_missing, unlike
        # allow_missing_or_failed).
        requires = {"requires_any": {"requirements": [requires, {"allow_missing": {}}]}}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3."
            "JwtAuthentication",
            "providers": {JWT_PROVIDER: provider},
            "rules": [{"match": {"prefix": "/"}, "requires": requires}],
        },
    }


# The same fields as the core's audit records (server/auth/audit.py).
_EDGE_AUDIT_FORMAT: dict[str, str] = {
    "ts": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    "audit": "o2ims",
    "source": "edge",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "correlation_id": f"%DYNAMIC_METADATA({CONTEXT_NAMESPACE}:correlation_id)%",
    "client": "%DOWNSTREAM_PEER_URI_SAN%",
    "certificate_subject": "%DOWNSTREAM_PEER_SUBJECT%",
    "token_subject": f"%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:{JWT_METADATA_KEY}:sub)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "status": "%RESPONSE_CODE%",
    "decision": "deny",
    "reason": "%RESPONSE_CODE_DETAILS%",
    "client_ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
}


def access_log_filter(config: EnvoyConfig) -> dict[str, Any] | None:
    """The main access log's filter: None (every request) or the failures and slow ones.

    An or_filter stops at its first true filter; a success (most requests) runs all four,
    each a comparison of what the stream already holds, against ~20 us of CPU per request to
    format and write its JSON line (docs/performance.md, "The edge's access log").
    """
    if config.access_log_requests == "all":
        return None
    return {
        "or_filter": {
            "filters": [
                _status_filter("GE", 400),
                # No flags listed: any flag (upstream reset, no healthy core, timeout...).
                {"response_flag_filter": {}},
                # A native gRPC error travels in an HTTP 200. Only for native gRPC: a REST
                # response has no grpc-status, and Envoy's guess from its HTTP status calls a
                # 200 UNKNOWN (a REST error is a 4xx/5xx, caught above).
                {
                    "and_filter": {
                        "filters": [
                            *_native_grpc_request(),
                            {"grpc_status_filter": {"statuses": ["OK"], "exclude": True}},
                        ]
                    }
                },
                {
                    "duration_filter": {
                        "comparison": {
                            "op": "GE",
                            "value": {
                                "default_value": config.access_log_slow_ms,
                                "runtime_key": "netweave.access_log.slow_ms",
                            },
                        }
                    }
                },
            ]
        }
    }


def _audit_access_log(config: EnvoyConfig) -> str:
    if config.audit_log_path is None:
        return ""
    # The refusals of jwt_authn (401, 403) and the rate limit (429). The status comparison
    # comes first: an and_filter stops at its first false filter, so the ~all requests that
    # succeed never evaluate the CEL expression.
    refused_here = {
        "and_filter": {
            "filters": [
                _status_filter("GE", 401),
                _cel_filter(
                    "response.code_details.startsWith('jwt_authn') || "
                    "response.code_details == 'local_rate_limited'"
                ),
            ]
        }
    }
    return _yaml_block(
        [
            {
                "name": "envoy.access_loggers.file",
                "filter": refused_here,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3."
                    "FileAccessLog",
                    "path": os.path.abspath(config.audit_log_path),
                    "log_format": {"json_format": _EDGE_AUDIT_FORMAT},
                },
            }
        ]
    )


def _core_transport_socket(config: EnvoyConfig) -> str:
    if config.core_tls is None:
        return ""
    return _yaml_block(_core_tls_socket(config))


def _core_tls_socket(config: EnvoyConfig) -> dict[str, Any]:
    tls = config.core_tls
    assert tls is not None
    return {
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                "UpstreamTlsContext",
                "sni": tls.server_name,
                "common_tls_context": {
                    # gRPC requires h2 by ALPN over TLS.
                    "alpn_protocols": ["h2"],
                    # Envoy upstream defaults to TLS 1.2 at most; the channel is ours.
                    "tls_params": {
                        "tls_minimum_protocol_version": "TLSv1_3",
                        "tls_maximum_protocol_version": "TLSv1_3",
                    },
                    # Envoy's own identity: the only certificate the core's edge
                    # listener accepts. Both files through SDS: re-read when renewed.
                    "tls_certificate_sds_secret_configs": [
                        _secret_reference(config, envoy_sds.CORE_CLIENT_CERTIFICATE)
                    ],
                    "combined_validation_context": {
                        # The core, not merely some holder of a certificate of that CA.
                        "default_validation_context": {
                            "match_typed_subject_alt_names": [
                                {"san_type": "URI", "matcher": {"exact": tls.core_uri}}
                            ]
                        },
                        "validation_context_sds_secret_config": _secret_reference(
                            config, envoy_sds.CORE_CA
                        ),
                    },
                },
            },
        }
    }


def request_context_filter() -> dict[str, Any]:
    """The first HTTP filter (envoy/modules/request_context.c), named CONTEXT_NAMESPACE: the
    routes' `route` metadata is written under that name (envoy_routes.CONTEXT_FILTER)."""
    module = envoy_modules.module_path(envoy_modules.REQUEST_CONTEXT)
    return {
        "name": CONTEXT_NAMESPACE,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3."
            "DynamicModuleFilter",
            "dynamic_module_config": {
                # A path, not a name: no ENVOY_DYNAMIC_MODULES_SEARCH_PATH to get right.
                "module": {"local": {"filename": os.path.abspath(module)}},
            },
            "filter_name": envoy_modules.REQUEST_CONTEXT,
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": request_context_settings(),
            },
        },
    }


def request_context_settings() -> str:
    """The request context filter's configuration, `key=value` lines: the header names and
    the well-formed id test of netweave/headers.py, the metadata namespaces it writes (and
    reads the route template under), and the headers it drops from every request
    (STRIPPED_HEADERS, comma-separated)."""
    first, rest, max_length = id_characters(CORRELATION_ID_PATTERN)
    settings = {
        "correlation_id_header": CORRELATION_ID_HEADER,
        "request_id_header": REQUEST_ID_HEADER,
        "client_request_id_header": CLIENT_REQUEST_ID_HEADER,
        "context_namespace": CONTEXT_NAMESPACE,
        "guard_namespace": GUARD_NAMESPACE,
        "rest_namespace": REST_METADATA_NAMESPACE,
        "id_first_characters": first,
        "id_characters": rest,
        "id_max_length": str(max_length),
        "stripped_headers": ",".join(sorted(STRIPPED_HEADERS)),
    }
    for key, value in settings.items():
        if not value or "\n" in value:
            raise ValueError(f"request context setting {key}={value!r} cannot be rendered")
    return "".join(f"{key}={value}\n" for key, value in settings.items())


# The shape of CORRELATION_ID_PATTERN the request context filter tests: a first character,
# then up to N more, each from a character class.
_ID_PATTERN_SHAPE = re.compile(r"\^\[([^\]\\]+)\]\[([^\]\\]+)\]\{0,(\d+)\}\$")
# The longest id the filter accepts (envoy/modules/request_context.c ID_LENGTH_LIMIT).
ID_LENGTH_LIMIT = 1024


def id_characters(pattern: str) -> tuple[str, str, int]:
    """The characters an id may start with, those it may continue with (each spelled out,
    sorted) and its maximum length, which together accept what the regex `pattern`
    (`^[first][rest]{0,N}$`) accepts. Any other shape is refused: rendering never guesses."""
    match = _ID_PATTERN_SHAPE.fullmatch(pattern)
    if match is None:
        raise ValueError(f"cannot test ids against {pattern!r}: expected ^[..][..]{{0,N}}$")
    first, rest, extra = match.groups()
    max_length = 1 + int(extra)
    if max_length > ID_LENGTH_LIMIT:
        raise ValueError(f"ids of up to {max_length} characters: the filter's limit is 1024")
    return _class_characters(first), _class_characters(rest), max_length


def _class_characters(regex_class: str) -> str:
    """A regex character class body (`A-Za-z0-9._:-`, no escapes) as the characters it holds:
    `x-y` is a range (as in a regex), a `-` first or last is itself."""
    if regex_class.startswith("^"):
        raise ValueError(f"negated class [{regex_class}] is not supported")
    chars: set[str] = set()
    index = 0
    while index < len(regex_class):
        if index + 2 < len(regex_class) and regex_class[index + 1] == "-":
            low, high = regex_class[index], regex_class[index + 2]
            if low > high:
                raise ValueError(f"bad range {low}-{high} in [{regex_class}]")
            chars.update(chr(code) for code in range(ord(low), ord(high) + 1))
            index += 3
            continue
        chars.add(regex_class[index])
        index += 1
    if not all(" " < char < "\x7f" for char in chars):
        raise ValueError(f"[{regex_class}] holds characters other than visible ASCII")
    return "".join(sorted(chars))


# What the edge tells the core about each REST request (server/edge_telemetry.py reads
# the record's body, netweave/headers.py TELEMETRY_FIELDS): the client's method, the path
# template ("-": no REST path matched), the status and the time from the request's first
# byte to the response's last, in microseconds (p99 < 5 ms must be readable); %DURATION%
# (ms) when the response was not sent to its end (the client went away). None of them can
# hold the separator: a method is an HTTP token, a template is ours, the rest are numbers.
TELEMETRY_COMMANDS: Final[Mapping[str, str]] = {
    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
    "route": f"%DYNAMIC_METADATA({CONTEXT_NAMESPACE}:route)%",
    "code": "%RESPONSE_CODE%",
    "duration_us": "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
    "duration_ms": "%DURATION%",
}
TELEMETRY_BODY: Final = TELEMETRY_SEPARATOR.join(
    TELEMETRY_COMMANDS[field] for field in TELEMETRY_FIELDS
)


def _telemetry_access_log(config: EnvoyConfig) -> str:
    if config.telemetry_port is None:
        return ""
    return _yaml_block(
        [
            {
                "name": "envoy.access_loggers.open_telemetry",
                # REST requests only, Envoy's own replies included (native gRPC callers are
                # counted by the core's o2ims_grpc_requests_total).
                "filter": _rest_request(),
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers."
                    "open_telemetry.v3.OpenTelemetryAccessLogConfig",
                    "grpc_service": {
                        "envoy_grpc": {"cluster_name": TELEMETRY_CLUSTER},
                        "timeout": "5s",
                    },
                    "log_name": "o2ims_rest",
                    # Only the body below: no node/zone labels per batch.
                    "disable_builtin_labels": True,
                    "body": {"string_value": TELEMETRY_BODY},
                    # Envoy batches per worker: a flush per second or per 16 KiB (~250
                    # records), so the core handles one call per batch, not per request.
                    "buffer_flush_interval": "1s",
                    "buffer_size_bytes": 16384,
                },
            }
        ]
    )


def _telemetry_clusters(config: EnvoyConfig) -> str:
    if config.telemetry_port is None or config.core_tls is None:
        return ""
    endpoints = [
        {
            "endpoint": {
                "address": {"socket_address": {"address": host, "port_value": port}},
                # The telemetry listener has no health service: the core's edge listener
                # (same host, same mutual TLS) answers for it.
                "health_check_config": {"port_value": core_port},
            }
        }
        for (host, port), (_, core_port) in zip(
            telemetry_endpoints(config), cores(config), strict=True
        )
    ]
    return _yaml_block(
        [
            {
                "name": TELEMETRY_CLUSTER,
                "type": "STRICT_DNS",
                "dns_lookup_family": "V4_PREFERRED",
                "connect_timeout": "2s",
                # The edge's mutual TLS: the core's telemetry listener admits Envoy alone.
                **_core_tls_socket(config),
                "typed_extension_protocol_options": GRPC_UPSTREAM_PROTOCOL,
                # Every core, checked as o2ims_core checks them: a batch goes to a core
                # that is up and not draining, so restarting one loses no records (and
                # each core counts a share; Prometheus sums them).
                "health_checks": _core_health_checks(config),
                "load_assignment": {
                    "cluster_name": TELEMETRY_CLUSTER,
                    "endpoints": [{"lb_endpoints": endpoints}],
                },
            }
        ]
    )


def _core_health_checks(config: EnvoyConfig) -> list[dict[str, Any]]:
    """Envoy's gRPC health check of each core (o2ims_core and the telemetry cluster)."""
    return [
        {
            "timeout": _duration(config.core_health_timeout_s),
            "interval": _duration(config.core_health_interval_s),
            # Default 60s: without traffic a restarted core would look down for a minute.
            "no_traffic_interval": "2s",
            "unhealthy_threshold": config.core_unhealthy_threshold,
            "healthy_threshold": 1,
            # Per-service status, so the core can report the inventory NOT_SERVING while
            # it loads its snapshot without failing its other services.
            "grpc_health_check": {"service_name": INVENTORY_HEALTH_SERVICE},
        }
    ]


def _stats_listeners(config: EnvoyConfig) -> str:
    """Prometheus's door to Envoy's statistics: GET /stats/prometheus and GET /ready of the
    admin API, nothing else (no mutation, no config dump, no log level)."""
    if config.stats_port is None:
        return ""
    only_get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    routes: list[dict[str, Any]] = [
        {
            "name": f"admin:{path}",
            # Exact path (its query string aside): /stats/prometheus/../quitquitquit and
            # every other spelling fall through to the 404.
            "match": {"path": path, "headers": only_get},
            "route": {"cluster": ADMIN_CLUSTER, "timeout": "10s"},
        }
        for path in STATS_PATHS
    ]
    routes.append(
        {
            "name": "not_found",
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 404,
                "body": {
                    "inline_string": "this listener serves GET /stats/prometheus and /ready\n"
                },
            },
        }
    )
    return _yaml_block(
        [
            {
                "name": STATS_LISTENER,
                "address": {
                    "socket_address": {
                        "address": config.stats_host or config.listen_host,
                        "port_value": config.stats_port,
                    }
                },
                "filter_chains": [
                    {
                        "filters": [
                            {
                                "name": "envoy.filters.network.http_connection_manager",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters."
                                    "network.http_connection_manager.v3.HttpConnectionManager",
                                    "stat_prefix": "envoy_stats",
                                    "codec_type": "AUTO",
                                    "use_remote_address": True,
                                    "normalize_path": False,
                                    "request_headers_timeout": "5s",
                                    "route_config": {
                                        "name": "envoy_stats",
                                        "virtual_hosts": [
                                            {"name": "stats", "domains": ["*"], "routes": routes}
                                        ],
                                    },
                                    "http_filters": [
                                        {
                                            "name": "envoy.filters.http.router",
                                            "typed_config": {
                                                "@type": "type.googleapis.com/envoy.extensions."
                                                "filters.http.router.v3.Router"
                                            },
                                        }
                                    ],
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    )


def _admin_clusters(config: EnvoyConfig) -> str:
    if config.stats_port is None:
        return ""
    return _yaml_block(
        [
            {
                "name": ADMIN_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": _single_endpoint(
                    ADMIN_CLUSTER, {"pipe": {"path": os.path.abspath(config.admin_socket)}}
                ),
            }
        ]
    )


def _single_endpoint(cluster: str, address: dict[str, Any]) -> dict[str, Any]:
    return {
        "cluster_name": cluster,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
    }


def _jwks_clusters(config: EnvoyConfig) -> str:
    if config.jwt is None or config.jwt.jwks_uri is None:
        return ""
    parsed = urllib.parse.urlsplit(config.jwt.jwks_uri)
    assert parsed.hostname is not None
    https = parsed.scheme == "https"
    cluster: dict[str, Any] = {
        "name": "jwks",
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": "jwks",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": parsed.hostname,
                                        "port_value": parsed.port or (443 if https else 80),
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if https:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                "UpstreamTlsContext",
                "sni": parsed.hostname,
                "common_tls_context": {
                    "validation_context": {
                        "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}
                    }
                },
            },
        }
    return _yaml_block([cluster])


def _bucket(limit: RateLimitConfig | ClientLimit) -> dict[str, Any]:
    return {
        "max_tokens": limit.max_tokens if limit.max_tokens is not None else limit.tokens_per_fill,
        "tokens_per_fill": limit.tokens_per_fill,
        "fill_interval": edge_limits.envoy_duration(limit.fill_interval_s),
    }


def _identity_entries(identity: str) -> list[dict[str, str]]:
    """A ClientLimit's identity as the descriptor entries CLIENT_*_EXPRESSION produce."""
    for kind in ("subject", "jwt"):
        if identity.startswith(kind + ":"):
            value = identity[len(kind) + 1 :]
            break
    else:
        kind, value = "uri", identity
    return [
        {"key": RATE_LIMIT_KIND_KEY, "value": kind},
        {"key": RATE_LIMIT_DESCRIPTOR_KEY, "value": value},
    ]


def _expression_action(key: str, expression: str) -> dict[str, Any]:
    return {
        "extension": {
            "name": "envoy.rate_limit_descriptors.expr",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.rate_limit_descriptors.expr.v3."
                "Descriptor",
                "descriptor_key": key,
                "text": expression,
                # No identity (no certificate, no token): the expression fails, no
                # descriptor is made and the request draws from the default bucket.
                "skip_if_error": True,
            },
        }
    }


def _rate_limit_filter(limit: RateLimitConfig) -> dict[str, Any]:
    percent = {"numerator": 100, "denominator": "HUNDRED"}
    descriptors: list[dict[str, Any]] = [
        {"entries": _identity_entries(client.identity), "token_bucket": _bucket(client)}
        for client in limit.per_client
    ]
    # No value: one bucket per distinct identity (at most max_dynamic_descriptors, LRU).
    descriptors.append(
        {
            "entries": [{"key": RATE_LIMIT_KIND_KEY}, {"key": RATE_LIMIT_DESCRIPTOR_KEY}],
            "token_bucket": _bucket(limit),
        }
    )
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3."
            "LocalRateLimit",
            "stat_prefix": "o2ims_client_rl",
            # Requests without an identity (no certificate, no token) share this bucket.
            "token_bucket": _bucket(limit),
            "filter_enabled": {
                "runtime_key": "netweave.rate_limit.enabled",
                "default_value": percent,
            },
            "filter_enforced": {
                "runtime_key": "netweave.rate_limit.enforced",
                "default_value": percent,
            },
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "rate_limited_as_resource_exhausted": True,
            # An identified client draws only from its own bucket.
            "always_consume_default_token_bucket": False,
            "max_dynamic_descriptors": limit.max_dynamic_descriptors,
            "rate_limits": [
                {
                    # The caller's identity from the channel only (the verified
                    # certificate, else the verified token): CEL expressions evaluated
                    # natively, no Lua and no header a client could send.
                    "actions": [
                        _expression_action(RATE_LIMIT_KIND_KEY, CLIENT_KIND_EXPRESSION),
                        _expression_action(RATE_LIMIT_DESCRIPTOR_KEY, CLIENT_IDENTITY_EXPRESSION),
                    ]
                }
            ],
            "descriptors": descriptors,
        },
    }


def _auth_reply_mappers(config: EnvoyConfig) -> list[dict[str, Any]]:
    """401 (jwt_authn) and 429 (rate limit) as ProblemDetails with their REST headers.

    They come before the generic mappers (first match wins). jwt_authn and the rate limiter
    run before the shaper marks the request as REST, so these match on the request alone.
    """
    mappers: list[dict[str, Any]] = []
    if config.jwt is not None:
        # jwt_authn answers 403 for a token of the wrong audience: for OAuth2 that is an
        # invalid token too (RFC 6750 3.1), so every jwt_authn refusal becomes a 401.
        token_refused = _cel_filter("response.code_details.startsWith('jwt_authn')")
        rest_problem = _problem_mapper([token_refused], 401, "Unauthorized", "%LOCAL_REPLY_BODY%")
        grpc_reply: dict[str, Any] = {"filter": token_refused}
        # REST callers get the problem, native gRPC callers UNAUTHENTICATED: both a 401
        # with the challenge, whatever jwt_authn's status was.
        for mapper in (rest_problem, grpc_reply):
            mapper["status_code"] = 401
            mapper["headers_to_add"] = [header_value_option("www-authenticate", WWW_AUTHENTICATE)]
            mappers.append(mapper)
    if config.rate_limit is not None:
        mapper = _problem_mapper(
            [_status_filter("EQ", 429)],
            429,
            "Too Many Requests",
            "this client exceeded its request rate; retry after Retry-After seconds",
        )
        # Retry-After is added from x-ratelimit-reset (envoy/modules/request_context.c).
        mappers.append(mapper)
    return mappers


def _timeout_reply_mappers() -> list[dict[str, Any]]:
    """408: the client was too slow (request_headers_timeout, request_timeout), which is
    not a malformed request, as the generic mapper below would say."""
    return [
        _problem_mapper(
            [_status_filter("EQ", 408)],
            408,
            "Request Timeout",
            "the request did not arrive in time (%RESPONSE_CODE_DETAILS%)",
        )
    ]


def _local_reply_mappers() -> list[dict[str, Any]]:
    mappers: list[dict[str, Any]] = []
    for status in LOCAL_REPLY_STATUSES:
        title = http.HTTPStatus(status).phrase
        if status in SERVER_ERROR_DETAILS:
            mappers.append(
                _problem_mapper(
                    [_status_filter("EQ", status)], status, title, SERVER_ERROR_DETAILS[status]
                )
            )
            continue
        # Inside the filter chain every local reply has a body that says what was wrong
        # (the transcoder's parse error, a route's 404/405 text, the shaper's 400).
        mappers.append(
            _problem_mapper(
                [_status_filter("EQ", status), _in_filter_chain()],
                status,
                title,
                "%LOCAL_REPLY_BODY%",
            )
        )
        # The HTTP codec and connection manager reject some requests before any filter
        # runs, with an empty body (a path with %00, too many headers): say which check.
        mappers.append(
            _problem_mapper([_status_filter("EQ", status)], status, title, PRE_FILTER_DETAIL)
        )
    # Whatever else Envoy may produce: a problem, never a leak of internal detail.
    mappers.append(
        _problem_mapper([_status_filter("GE", 500)], None, "Error", GENERIC_SERVER_ERROR_DETAIL)
    )
    mappers.append(
        _problem_mapper(
            [_status_filter("GE", 400), _in_filter_chain()], None, "Error", "%LOCAL_REPLY_BODY%"
        )
    )
    mappers.append(_problem_mapper([_status_filter("GE", 400)], None, "Error", PRE_FILTER_DETAIL))
    return mappers


def _in_filter_chain() -> dict[str, Any]:
    """Matches replies to requests the REST shaper has seen (it marks every REST request)."""
    return {
        "metadata_filter": {
            "matcher": {
                "filter": REST_METADATA_NAMESPACE,
                "path": [{"key": "rest"}],
                "value": {"string_match": {"exact": "1"}},
            },
            "match_if_key_not_found": False,
        }
    }


def _cel_filter(expression: str) -> dict[str, Any]:
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3."
                "ExpressionFilter",
                "expression": expression,
            },
        }
    }


def _status_filter(op: str, status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": op,
                # runtime_key is mandatory; nothing sets it, so default_value applies.
                "value": {"default_value": status, "runtime_key": f"netweave.local_reply.{status}"},
            }
        }
    }


def _grpc_content_type(grpc: bool) -> dict[str, Any]:
    """An access-log filter: the request's content-type is application/grpc* (or is not)."""
    return {
        "header_filter": {
            "header": {
                "name": "content-type",
                "string_match": {"prefix": "application/grpc"},
                "invert_match": not grpc,
                # A GET has no content-type at all, and is REST.
                "treat_missing_header_as_empty": True,
            }
        }
    }


def _transcoded(transcoded: bool) -> dict[str, Any]:
    """An access-log filter: the transcoder rewrote the request (or did not), which it marks
    with x-envoy-original-path. A client cannot forge that header: with use_remote_address
    Envoy strips x-envoy-* from requests."""
    return {
        "header_filter": {
            "header": {
                "name": "x-envoy-original-path",
                "present_match": True,
                "invert_match": not transcoded,
            }
        }
    }


def _rest_request() -> dict[str, Any]:
    """An access-log filter matching REST requests, as the request headers stand at reply time.

    Before transcoding, REST is "content-type is not application/grpc*". The transcoder then
    switches the content-type to application/grpc, so a reply the router makes afterwards
    (503, 504) is recognised by the transcoder's mark.
    """
    return {"or_filter": {"filters": [_grpc_content_type(False), _transcoded(True)]}}


def _native_grpc_request() -> list[dict[str, Any]]:
    """Access-log filters that together match a native gRPC request (whatever
    _rest_request does not): a gRPC content-type the transcoder did not set."""
    return [_grpc_content_type(True), _transcoded(False)]


def _problem_mapper(
    filters: list[dict[str, Any]], status: int | None, title: str, detail: str
) -> dict[str, Any]:
    return {
        "filter": {"and_filter": {"filters": [_rest_request(), *filters]}},
        "body_format_override": {
            "json_format": {
                # A number, not a string: %RESPONSE_CODE% alone keeps its type in json_format.
                "status": "%RESPONSE_CODE%" if status is None else status,
                "title": title,
                "detail": detail,
            },
            "content_type": openapi.PROBLEM,
        },
    }
