"""Gateway configuration: a typed dataclass, read from the environment through the
definitions in netweave/settings.py (CORE_SETTINGS)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from netweave import settings
from netweave.addresses import is_loopback
from netweave.redis_url import redis_endpoints
from netweave.tracing import TracingConfig
from server.errors import DUPLICATE_HTTP_STATUSES
from server.majors import INVENTORY_MAJORS, parse_majors
from server.query.filter import extensions_paths
from server.store import NO_WAIT, ReplicaWait
from server.subscriptions.addresses import Endpoint, parse_endpoint
from server.subscriptions.callbacks import CallbackPolicy


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the core needs to start. Port 0 picks a free port."""

    grpc_host: str = settings.GRPC_HOST.default
    grpc_port: int = settings.GRPC_PORT.default
    ops_host: str = settings.OPS_HOST.default
    ops_port: int = settings.OPS_PORT.default
    redis_url: str = settings.REDIS_URL.default
    # After writes that must survive a failover: WAIT for replicas (server/store.py).
    redis_wait: ReplicaWait = NO_WAIT
    # host:port of each adapter sub-service.
    adapters: tuple[str, ...] = field(default_factory=tuple)
    # The externally reachable root of the O2ims API (OCloudInfo.serviceUri).
    service_uri: str = settings.SERVICE_URI.default
    grpc_workers: int = settings.GRPC_WORKERS.default
    # NETWEAVE_INDEXED_EXTENSIONS, parsed (server/query/filter.py extensions_paths)
    indexed_extensions: tuple[tuple[str, ...], ...] = ()
    # Worker processes (server/workers.py); above 1, `python -m server` supervises them.
    core_processes: int = settings.CORE_PROCESSES.default
    # NETWEAVE_CORE_CPU_AFFINITY: auto, spread or off (server/workers.py cpu_placement).
    core_cpu_affinity: str = settings.CORE_CPU_AFFINITY.default
    events_max_len: int = settings.EVENTS_MAX_LEN.default
    # HTTP status of a duplicate subscription POST: 400 (what the O2ims conformance tests
    # require) or 409 (what several SMOs expect).
    duplicate_subscription_status: int = settings.DUPLICATE_SUBSCRIPTION_STATUS.default
    # The Inventory API majors served (server/majors.py): a major not served is 404.
    served_majors: tuple[str, ...] = INVENTORY_MAJORS
    # Items per page of every list; large enough that ordinary inventories fit in one.
    page_size: int = settings.PAGE_SIZE.default
    # Serialized bytes per page of every list (see ListingSettings.page_max_bytes).
    page_max_bytes: int = settings.PAGE_MAX_BYTES.default
    # Signs page markers. Empty: a secret generated once and shared through Redis.
    page_secret: str = ""
    # Seconds between purges of cleared alarms past their retention (server/alarms/purge.py).
    alarm_purge_interval: float = settings.ALARM_PURGE_INTERVAL.default
    # Seconds in which a source's re-raised alarm reuses its cleared record (pipeline.py).
    alarm_flap_window: float = settings.ALARM_FLAP_WINDOW.default
    # The access policy (YAML, see server/auth/policy.py). Empty: no access control (every
    # caller is an admin), for development only.
    auth_policy: str = ""
    # The edge listener (host:port; empty: none): mutual TLS, where only the edge (Envoy,
    # presenting a certificate of `edge_client_ca` whose URI SAN is `edge_peer_uri`) may
    # call, and the only place the identity Envoy forwards is believed. The internal
    # listener (grpc_host:grpc_port) must be loopback: its callers get `direct_calls` roles.
    # See server/auth/identity.py.
    edge_listen: str = ""
    edge_tls_cert: str = ""
    edge_tls_key: str = ""
    edge_client_ca: str = ""
    edge_peer_uri: str = ""
    # Envoy's REST access log records (server/edge_telemetry.py); "": none.
    edge_telemetry_listen: str = ""
    # Certificates whose expiry is reported though the core does not use them (role, path).
    watched_certificates: tuple[tuple[str, str], ...] = ()
    # Audit records: a file path, `-` for standard output, or empty for none.
    audit_log: str = settings.AUDIT_LOG.default
    # Where subscription callbacks may point (NETWEAVE_CALLBACK_*): https and public
    # addresses only unless configured otherwise; see server/subscriptions/callbacks.py.
    callback_policy: CallbackPolicy = field(default_factory=CallbackPolicy)
    # OpenTelemetry traces (netweave/tracing.py); the default: off.
    tracing: TracingConfig = field(default_factory=TracingConfig)
    # On SIGTERM: seconds of serving while reporting NOT_SERVING (so Envoy stops sending),
    # then seconds for the calls in flight to finish (server/__main__.py).
    shutdown_drain_s: float = settings.SHUTDOWN_DRAIN_SECONDS.default
    shutdown_grace_s: float = settings.SHUTDOWN_GRACE_SECONDS.default

    def __post_init__(self) -> None:
        _check_listeners(self)
        if self.alarm_purge_interval <= 0:
            raise ValueError(
                f"NETWEAVE_ALARM_PURGE_INTERVAL must be > 0, got {self.alarm_purge_interval}"
            )
        if self.alarm_flap_window < 0:
            raise ValueError(
                f"NETWEAVE_ALARM_FLAP_WINDOW must be >= 0, got {self.alarm_flap_window}"
            )
        for name, seconds in (
            ("NETWEAVE_SHUTDOWN_DRAIN_SECONDS", self.shutdown_drain_s),
            ("NETWEAVE_SHUTDOWN_GRACE_SECONDS", self.shutdown_grace_s),
        ):
            if seconds < 0:
                raise ValueError(f"{name} must be >= 0, got {seconds}")
        if self.redis_wait.replicas < 0:
            raise ValueError(
                f"NETWEAVE_REDIS_WAIT_REPLICAS must be >= 0, got {self.redis_wait.replicas}"
            )
        # WAIT 0 would block for ever; beyond 1 s the client's 2 s socket timeout is near.
        if not 1 <= self.redis_wait.timeout_ms <= 1000:
            raise ValueError(
                "NETWEAVE_REDIS_WAIT_TIMEOUT_MS must be 1 to 1000, "
                f"got {self.redis_wait.timeout_ms}"
            )
        if not 1 <= self.core_processes <= MAX_CORE_PROCESSES:
            raise ValueError(
                f"NETWEAVE_CORE_PROCESSES must be 1 to {MAX_CORE_PROCESSES}, "
                f"got {self.core_processes}"
            )
        if self.duplicate_subscription_status not in DUPLICATE_HTTP_STATUSES:
            raise ValueError(
                "NETWEAVE_DUPLICATE_SUBSCRIPTION_STATUS must be 400 or 409, "
                f"got {self.duplicate_subscription_status}"
            )

    def for_worker(self, index: int) -> GatewayConfig:
        """The configuration of worker `index` of NETWEAVE_CORE_PROCESSES (server/workers.py):
        one process, on its own edge port. Everything derived from the pod's layout (the
        callback policy's own listeners: every worker's edge port) stays the pod's."""
        edges = edge_addresses(self.edge_listen, self.core_processes)
        return replace(self, core_processes=1, edge_listen=edges[index] if edges else "")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewayConfig:
        """The core's configuration from `environ` (default: the process environment)."""
        if settings.EDGE_SECRET.read(environ):
            # A stale deployment would otherwise believe it still had the old protection.
            raise ValueError(
                "NETWEAVE_EDGE_SECRET is no longer read: the edge is identified by mutual "
                "TLS (NETWEAVE_EDGE_LISTEN, NETWEAVE_EDGE_TLS_*, NETWEAVE_EDGE_PEER_URI); "
                "remove it"
            )
        config = cls(
            grpc_host=settings.GRPC_HOST.read(environ),
            grpc_port=settings.GRPC_PORT.read(environ),
            ops_host=settings.OPS_HOST.read(environ),
            ops_port=settings.OPS_PORT.read(environ),
            redis_url=settings.REDIS_URL.read(environ),
            redis_wait=ReplicaWait(
                settings.REDIS_WAIT_REPLICAS.read(environ),
                settings.REDIS_WAIT_TIMEOUT_MS.read(environ),
            ),
            adapters=settings.ADAPTERS.read(environ),
            service_uri=settings.SERVICE_URI.read(environ),
            grpc_workers=settings.GRPC_WORKERS.read(environ),
            indexed_extensions=settings.INDEXED_EXTENSIONS.read_as(extensions_paths, environ),
            core_processes=settings.CORE_PROCESSES.read(environ),
            core_cpu_affinity=settings.CORE_CPU_AFFINITY.read(environ),
            events_max_len=settings.EVENTS_MAX_LEN.read(environ),
            duplicate_subscription_status=settings.DUPLICATE_SUBSCRIPTION_STATUS.read(environ),
            served_majors=settings.SERVED_MAJORS.read_as(parse_majors, environ),
            page_size=settings.PAGE_SIZE.read(environ),
            page_max_bytes=settings.PAGE_MAX_BYTES.read(environ),
            page_secret=settings.PAGE_SECRET.read(environ),
            alarm_purge_interval=settings.ALARM_PURGE_INTERVAL.read(environ),
            alarm_flap_window=settings.ALARM_FLAP_WINDOW.read(environ),
            auth_policy=settings.AUTH_POLICY.read(environ),
            edge_listen=settings.EDGE_LISTEN.read(environ),
            edge_tls_cert=settings.EDGE_TLS_CERT.read(environ),
            edge_tls_key=settings.EDGE_TLS_KEY.read(environ),
            edge_client_ca=settings.EDGE_CLIENT_CA.read(environ),
            edge_peer_uri=settings.EDGE_PEER_URI.read(environ),
            edge_telemetry_listen=settings.EDGE_TELEMETRY_LISTEN.read(environ),
            watched_certificates=settings.WATCHED_CERTIFICATES.read(environ),
            audit_log=settings.AUDIT_LOG.read(environ),
            callback_policy=CallbackPolicy.from_env(environ),
            tracing=TracingConfig(
                settings.OTLP_ENDPOINT.read(environ), settings.TRACE_SAMPLE_RATIO.read(environ)
            ),
            shutdown_drain_s=settings.SHUTDOWN_DRAIN_SECONDS.read(environ),
            shutdown_grace_s=settings.SHUTDOWN_GRACE_SECONDS.read(environ),
        )
        # Callbacks never reach the core's own listeners, Redis, the adapters or the trace
        # collector.
        policy = config.callback_policy.with_gateway_endpoints(own_listeners(config))
        return replace(config, callback_policy=policy)


def own_listeners(config: GatewayConfig) -> list[Endpoint]:
    """Where the core listens (every worker's edge port with NETWEAVE_CORE_PROCESSES > 1),
    and the Redis and adapters it uses: none of them a callback."""
    found = [(config.grpc_host, config.grpc_port), (config.ops_host, config.ops_port)]
    found.extend(redis_endpoints(config.redis_url))  # the sentinels too
    edges: tuple[str, ...] = (config.edge_listen,)
    if config.core_processes > 1:
        with contextlib.suppress(ValueError):  # refused by the supervisor (check_ports)
            edges = edge_addresses(config.edge_listen, config.core_processes)
    addresses = (*edges, config.edge_telemetry_listen, config.tracing.endpoint)
    for address in (*addresses, *config.adapters):
        with contextlib.suppress(ValueError):  # not host:port: refused where it is used
            found.append(parse_endpoint(address))
    return found


MAX_CORE_PROCESSES: Final = 64


def edge_addresses(edge_listen: str, processes: int) -> tuple[str, ...]:
    """host:port+i for each worker; refused when a port would be out of range or is 0."""
    if not edge_listen:
        return ()
    host, _, port_text = edge_listen.rpartition(":")
    base = int(port_text)
    if base == 0:
        raise ValueError(
            "NETWEAVE_EDGE_LISTEN port 0 cannot be used with NETWEAVE_CORE_PROCESSES > 1: "
            "each worker listens on the port + its index, which Envoy must know"
        )
    if base + processes - 1 > 65535:
        raise ValueError(
            f"NETWEAVE_EDGE_LISTEN {edge_listen!r}: ports {base}..{base + processes - 1} "
            "(one per core process) go past 65535"
        )
    return tuple(f"{host}:{base + index}" for index in range(processes))


EDGE_SETTINGS: Final = (
    ("edge_tls_cert", "NETWEAVE_EDGE_TLS_CERT"),
    ("edge_tls_key", "NETWEAVE_EDGE_TLS_KEY"),
    ("edge_client_ca", "NETWEAVE_EDGE_CLIENT_CA"),
    ("edge_peer_uri", "NETWEAVE_EDGE_PEER_URI"),
)


def _check_listeners(config: GatewayConfig) -> None:
    """Refuse any listener setting that would make a caller's identity ambiguous."""
    if not is_loopback(config.grpc_host):
        raise ValueError(
            f"NETWEAVE_GRPC_HOST {config.grpc_host!r} is not a loopback address: the internal "
            "listener grants the policy's direct_calls roles to whoever reaches it; serve "
            "remote callers through the edge (NETWEAVE_EDGE_LISTEN)"
        )
    missing = [env for name, env in EDGE_SETTINGS if not getattr(config, name)]
    if config.edge_listen:
        host, _, port = config.edge_listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"NETWEAVE_EDGE_LISTEN {config.edge_listen!r} is not host:port")
        if missing:
            raise ValueError(f"NETWEAVE_EDGE_LISTEN is set but {', '.join(missing)} not")
        for name, env in EDGE_SETTINGS[:3]:
            if not os.access(getattr(config, name), os.R_OK):
                raise ValueError(f"{env}: cannot read {getattr(config, name)!r}")
    elif len(missing) < len(EDGE_SETTINGS):
        raise ValueError(
            "NETWEAVE_EDGE_TLS_*/NETWEAVE_EDGE_PEER_URI are set but NETWEAVE_EDGE_LISTEN is "
            "not: the edge listener would silently not exist"
        )
