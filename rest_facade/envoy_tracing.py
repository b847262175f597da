"""The edge's OpenTelemetry traces (EnvoyConfig.tracing; docs/operations.md "Tracing").

When on, Envoy's HTTP connection manager starts a trace for every request it samples
(envoy.tracers.opentelemetry, spans exported over OTLP/gRPC to the collector's cluster) and
its router hands the core the W3C `traceparent` of Envoy's span as gRPC metadata, so the
core's span is its child (netweave/tracing.py). A client's own `traceparent`/`tracestate`
are dropped at the edge whether tracing is on or off (the template's early header
mutation): an outside caller can neither splice its requests into another trace nor force
sampling, and with tracing off the core sees no trace context from outside.

Envoy's span carries the request's correlation id and O2ims route template (the request
context filter's dynamic metadata) as `netweave.correlation_id` and `netweave.route`. Its
`http.url` tag is cut before the path (max_path_tag_length 0): the path holds resource ids
and the query string, which is left out of every log for the same reason (a request Envoy
refuses before any filter could carry a credential there); the route template says which
API was called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from netweave.tracing import CORRELATION_ID, check_endpoint
from rest_facade import envoy_routes

# The collector's cluster, as named in the rendered config.
COLLECTOR_CLUSTER: Final = "netweave_trace_collector"
SERVICE_NAME: Final = "netweave-envoy"
# The span tags read from the request context filter's dynamic metadata.
METADATA_TAGS: Final = ((CORRELATION_ID, "correlation_id"), ("netweave.route", "route"))


# A cluster that speaks gRPC (HTTP/2 to the upstream): the telemetry and collector clusters.
GRPC_UPSTREAM_PROTOCOL: Final = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


@dataclass(frozen=True)
class EdgeTracing:
    """Where the edge sends its spans and how many requests it traces."""

    # host:port of an OTLP/gRPC collector (plaintext h2).
    collector: str
    # Share of requests that start a recorded trace (0..1); the core and the notifier follow
    # the decision the `traceparent` carries.
    sample_ratio: float = 1.0

    def __post_init__(self) -> None:
        check_endpoint(self.collector)
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError(f"sample_ratio must be between 0 and 1, got {self.sample_ratio}")


def http_tracing(tracing: EdgeTracing | None) -> dict[str, Any] | None:
    """The HTTP connection manager's `tracing` and `request_id_extension` (None: off)."""
    if tracing is None:
        return None
    return {
        # The request context filter replaces x-request-id with the correlation id, which
        # need not be a UUID: Envoy would read "not traced" from it (its default keeps the
        # sampling decision in the UUID's bits) and leave the correlation id's bits alone.
        "request_id_extension": {
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3."
                "UuidRequestIdConfig",
                "pack_trace_reason": False,
                "use_request_id_for_trace_sampling": False,
            }
        },
        "tracing": {
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {
                        "envoy_grpc": {"cluster_name": COLLECTOR_CLUSTER},
                        "timeout": "5s",
                    },
                    "service_name": SERVICE_NAME,
                },
            },
            # Envoy's random_sampling is a percentage (default 100).
            "random_sampling": {"value": round(tracing.sample_ratio * 100, 4)},
            # http.url without the path (module docstring).
            "max_path_tag_length": 0,
            "custom_tags": [
                {
                    "tag": tag,
                    "metadata": {
                        "kind": {"request": {}},
                        "metadata_key": {
                            "key": envoy_routes.CONTEXT_FILTER,
                            "path": [{"key": key}],
                        },
                    },
                }
                for tag, key in METADATA_TAGS
            ],
        },
    }


def collector_clusters(tracing: EdgeTracing | None) -> list[dict[str, Any]]:
    """The collector's cluster (none when tracing is off)."""
    if tracing is None:
        return []
    host, port = check_endpoint(tracing.collector)
    return [
        {
            "name": COLLECTOR_CLUSTER,
            "type": "STRICT_DNS",
            "dns_lookup_family": "V4_PREFERRED",
            "connect_timeout": "2s",
            "typed_extension_protocol_options": GRPC_UPSTREAM_PROTOCOL,
            "load_assignment": {
                "cluster_name": COLLECTOR_CLUSTER,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {"address": host, "port_value": port}
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
    ]
