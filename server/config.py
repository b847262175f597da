"""Gateway configuration: a typed dataclass, read from the environment."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from typing import Final

from netweave.addresses import is_loopback
from netweave.env import env_int
from server.errors import DUPLICATE_HTTP_STATUSES
from server.subscriptions.addresses import Endpoint, parse_endpoint, url_endpoint
from server.subscriptions.callbacks import CallbackPolicy


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the core needs to start. Port 0 picks a free port."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    ops_host: str = "127.0.0.1"
    ops_port: int = 8080
    redis_url: str = "redis://127.0.0.1:6379/0"
    # host:port of each adapter sub-service.
    adapters: tuple[str, ...] = field(default_factory=tuple)
    # The externally reachable root of the O2ims API (OCloudInfo.serviceUri).
    service_uri: str = "https://127.0.0.1:8443"
    grpc_workers: int = 8
    events_max_len: int = 100_000
    # HTTP status of a duplicate subscription POST: 400 (what the O2ims conformance tests
    # require) or 409 (what several SMOs expect).
    duplicate_subscription_status: int = 400
    # Items per page of every list; large enough that ordinary inventories fit in one.
    page_size: int = 1000
    # Serialized bytes per page of every list (see ListingSettings.page_max_bytes).
    page_max_bytes: int = 2 * 1024 * 1024
    # Signs page markers. Empty: a secret generated once and shared through Redis.
    page_secret: str = ""
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
    # Audit records: a file path, `-` for standard output, or empty for none.
    audit_log: str = "-"
    # Where subscription callbacks may point (NETWEAVE_CALLBACK_*): https and public
    # addresses only unless configured otherwise; see server/subscriptions/callbacks.py.
    callback_policy: CallbackPolicy = field(default_factory=CallbackPolicy)

    def __post_init__(self) -> None:
        _check_listeners(self)
        if self.duplicate_subscription_status not in DUPLICATE_HTTP_STATUSES:
            raise ValueError(
                "NETWEAVE_DUPLICATE_SUBSCRIPTION_STATUS must be 400 or 409, "
                f"got {self.duplicate_subscription_status}"
            )

    @classmethod
    def from_env(cls) -> GatewayConfig:
        if os.environ.get("NETWEAVE_EDGE_SECRET"):
            # A stale deployment would otherwise believe it still had the old protection.
            raise ValueError(
                "NETWEAVE_EDGE_SECRET is no longer read: the edge is identified by mutual "
                "TLS (NETWEAVE_EDGE_LISTEN, NETWEAVE_EDGE_TLS_*, NETWEAVE_EDGE_PEER_URI); "
                "remove it"
            )
        adapters = os.environ.get("NETWEAVE_ADAPTERS", "127.0.0.1:50061")
        config = cls(
            grpc_host=os.environ.get("NETWEAVE_GRPC_HOST", "127.0.0.1"),
            grpc_port=env_int("NETWEAVE_GRPC_PORT", 50051),
            ops_host=os.environ.get("NETWEAVE_OPS_HOST", "127.0.0.1"),
            ops_port=env_int("NETWEAVE_OPS_PORT", 8080),
            redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            adapters=tuple(a.strip() for a in adapters.split(",") if a.strip()),
            service_uri=os.environ.get("NETWEAVE_SERVICE_URI", "https://127.0.0.1:8443"),
            grpc_workers=env_int("NETWEAVE_GRPC_WORKERS", 8),
            events_max_len=env_int("NETWEAVE_EVENTS_MAX_LEN", 100_000),
            duplicate_subscription_status=env_int("NETWEAVE_DUPLICATE_SUBSCRIPTION_STATUS", 400),
            page_size=env_int("NETWEAVE_PAGE_SIZE", 1000),
            page_max_bytes=env_int("NETWEAVE_PAGE_MAX_BYTES", 2 * 1024 * 1024),
            page_secret=os.environ.get("NETWEAVE_PAGE_SECRET", ""),
            auth_policy=os.environ.get("NETWEAVE_AUTH_POLICY", ""),
            edge_listen=os.environ.get("NETWEAVE_EDGE_LISTEN", ""),
            edge_tls_cert=os.environ.get("NETWEAVE_EDGE_TLS_CERT", ""),
            edge_tls_key=os.environ.get("NETWEAVE_EDGE_TLS_KEY", ""),
            edge_client_ca=os.environ.get("NETWEAVE_EDGE_CLIENT_CA", ""),
            edge_peer_uri=os.environ.get("NETWEAVE_EDGE_PEER_URI", ""),
            audit_log=os.environ.get("NETWEAVE_AUDIT_LOG", "-"),
            callback_policy=CallbackPolicy.from_env(),
        )
        # Callbacks never reach the core's own listeners, Redis or the adapters.
        policy = config.callback_policy.with_gateway_endpoints(own_listeners(config))
        return replace(config, callback_policy=policy)


def own_listeners(config: GatewayConfig) -> list[Endpoint]:
    """Where the core listens, and the Redis and adapters it uses: none of them a callback."""
    found = [(config.grpc_host, config.grpc_port), (config.ops_host, config.ops_port)]
    redis_endpoint = url_endpoint(config.redis_url, 6379)
    if redis_endpoint is not None:
        found.append(redis_endpoint)
    for address in (config.edge_listen, *config.adapters):
        with contextlib.suppress(ValueError):  # not host:port: refused where it is used
            found.append(parse_endpoint(address))
    return found


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
