"""How many connections the Envoy edge holds, from whom, and for how long.

Three layers, rendered into `envoy/gateway.yaml.in` (docs/operations.md, "Connection
limits"):

* a global cap (the overload manager's `max_connections`): the edge's file descriptors and
  memory are bounded, whatever arrives;
* a per-source cap (`max_connections_per_source`, envoy/modules/source_limit.c): one client
  address (an IPv4 address, an IPv6 /64) cannot take more than its share of the global cap,
  counted from the TCP accept, before TLS. Envoy 1.40 has nothing per source itself;
* timeouts, so a silent client gives its slot back: the TLS handshake, request headers, the
  whole request, idle streams and connections, and a maximum connection age. Under pressure
  (half the global cap and more) the handshake and idle timeouts shrink.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rest_facade import envoy_modules

# The module's own bounds (envoy/modules/source_limit.c MAX_LIMIT).
MAX_PER_SOURCE = 1_000_000
# The Envoy statistics namespace of the module's counter (netweave.source_limit_refused).
STATS_NAMESPACE = "netweave"


@dataclass(frozen=True)
class ConnectionLimits:
    """Connection caps and timeouts of the edge; every default is the production value."""

    # All downstream connections of this Envoy process. Above it, new connections are
    # closed as soon as they are accepted.
    max_connections: int = 10_000
    # Open connections of one source (IPv4 address or IPv6 /64). A refused connection is
    # closed at accept. 200 is 2% of the global cap, and more than an SMO's HTTP/1.1
    # connection pool (HTTP/2 clients use one connection). None: no per-source cap, and one
    # host can fill max_connections.
    max_connections_per_source: int | None = 200
    # The TLS handshake must be complete this long after the TCP accept.
    tls_handshake_timeout_s: float = 5.0
    # From a request's first byte to the end of its headers.
    request_headers_timeout_s: float = 10.0
    # The whole request, body included.
    request_timeout_s: float = 60.0
    # A stream with no activity either way.
    stream_idle_timeout_s: float = 30.0
    # A connection without an open request.
    idle_timeout_s: float = 300.0
    # Any connection is drained after this long.
    max_connection_duration_s: float = 3600.0
    # The heap Envoy may use (fixed_heap monitor): keep it below the container's memory
    # limit. At 95% Envoy returns freed memory to the system, at 98% it answers 503.
    max_heap_bytes: int = 1 << 30
    # The compiled per-source filter; None: built from envoy/modules/source_limit.c.
    source_limit_module: Path | None = None

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.max_heap_bytes < 64 << 20:
            raise ValueError("max_heap_bytes must be at least 64 MiB (Envoy alone needs ~50)")
        per_source = self.max_connections_per_source
        if per_source is not None and not 1 <= per_source <= MAX_PER_SOURCE:
            raise ValueError(f"max_connections_per_source must be 1..{MAX_PER_SOURCE}")
        for name in (
            "tls_handshake_timeout_s",
            "request_headers_timeout_s",
            "request_timeout_s",
            "stream_idle_timeout_s",
            "idle_timeout_s",
            "max_connection_duration_s",
        ):
            if getattr(self, name) < 0.001:
                raise ValueError(f"{name} must be at least 1 ms (0 would mean: no timeout)")


def template_values(limits: ConnectionLimits) -> dict[str, str]:
    """The template's scalar placeholders for `limits` (JSON-quoted like all scalars)."""
    return {
        "max_connections": str(limits.max_connections),
        "max_heap_bytes": str(limits.max_heap_bytes),
        "tls_handshake_timeout": json.dumps(envoy_duration(limits.tls_handshake_timeout_s)),
        "request_headers_timeout": json.dumps(envoy_duration(limits.request_headers_timeout_s)),
        "request_timeout": json.dumps(envoy_duration(limits.request_timeout_s)),
        "stream_idle_timeout": json.dumps(envoy_duration(limits.stream_idle_timeout_s)),
        "idle_timeout": json.dumps(envoy_duration(limits.idle_timeout_s)),
        "max_connection_duration": json.dumps(envoy_duration(limits.max_connection_duration_s)),
    }


def source_limit_filters(limits: ConnectionLimits) -> list[dict[str, Any]]:
    """The network filter that caps connections per source: none, or one (the first)."""
    if limits.max_connections_per_source is None:
        return []
    module = limits.source_limit_module or envoy_modules.module_path(envoy_modules.SOURCE_LIMIT)
    return [
        {
            "name": "netweave.source_limit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules."
                "v3.DynamicModuleNetworkFilter",
                "dynamic_module_config": {
                    # A path, not a name: no ENVOY_DYNAMIC_MODULES_SEARCH_PATH to get right.
                    "module": {"local": {"filename": os.path.abspath(module)}},
                    "metrics_namespace": STATS_NAMESPACE,
                },
                "filter_name": envoy_modules.SOURCE_LIMIT,
                "filter_config": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": str(limits.max_connections_per_source),
                },
            },
        }
    ]


def envoy_duration(seconds: float) -> str:
    """A protobuf Duration in Envoy's YAML spelling ("1.5s")."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
