"""Gateway configuration: a typed dataclass, read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from netweave.env import env_int
from server.errors import DUPLICATE_HTTP_STATUSES
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
    # Signs page markers. Empty: a secret generated once and shared through Redis.
    page_secret: str = ""
    # The access policy (YAML, see server/auth/policy.py). Empty: no access control (every
    # caller is an admin), for development only.
    auth_policy: str = ""
    # Shared with Envoy: proves a call came through the edge (see server/auth/identity.py).
    edge_secret: str = ""
    # Audit records: a file path, `-` for standard output, or empty for none.
    audit_log: str = "-"
    # Where subscription callbacks may point (NETWEAVE_CALLBACK_*): https and public
    # addresses only unless configured otherwise; see server/subscriptions/callbacks.py.
    callback_policy: CallbackPolicy = field(default_factory=CallbackPolicy)

    def __post_init__(self) -> None:
        if self.duplicate_subscription_status not in DUPLICATE_HTTP_STATUSES:
            raise ValueError(
                "NETWEAVE_DUPLICATE_SUBSCRIPTION_STATUS must be 400 or 409, "
                f"got {self.duplicate_subscription_status}"
            )

    @classmethod
    def from_env(cls) -> GatewayConfig:
        adapters = os.environ.get("NETWEAVE_ADAPTERS", "127.0.0.1:50061")
        return cls(
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
            page_secret=os.environ.get("NETWEAVE_PAGE_SECRET", ""),
            auth_policy=os.environ.get("NETWEAVE_AUTH_POLICY", ""),
            edge_secret=os.environ.get("NETWEAVE_EDGE_SECRET", ""),
            audit_log=os.environ.get("NETWEAVE_AUDIT_LOG", "-"),
            callback_policy=CallbackPolicy.from_env(),
        )
