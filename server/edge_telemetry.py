"""The edge's REST request metrics, counted in the core: Envoy streams an access log record
of every REST request (OpenTelemetry logs over gRPC, batched by Envoy) to this listener, and
the core exports them on its /metrics as

    o2ims_http_requests_total{method,route,code}
    o2ims_http_request_duration_seconds{method,route}

Every REST request counts, those Envoy answers itself included (401 bad token, 404 unknown
path, 405, 413, 429 rate limited, 503 core unavailable). `route` is the O2ims path template
the request matched (envoy/modules/request_context.c), `unmatched` when it matched none: the
raw path never becomes a label.

The listener is the edge's channel: mutual TLS with the edge listener's certificate and
client CA, and the peer must be the edge itself (its URI SAN, NETWEAVE_EDGE_PEER_URI), as on
the edge listener. It exists only when the edge listener does: no unauthenticated listener
anywhere. (A separate listener, because the edge listener's access control admits API calls
on behalf of an SMO only; Envoy's own telemetry has no SMO behind it.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import grpc
import structlog
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.logs.v1 import logs_pb2
from prometheus_client import CollectorRegistry

from netweave.grpc_server import BOUNDED_CONNECTION_OPTIONS, ReloadingServerCredentials, new_server
from netweave.headers import TELEMETRY_FIELDS, TELEMETRY_SEPARATOR
from netweave.tallies import TalliedCounter, TalliedHistogram

log = structlog.get_logger()

# From 1 ms (our own p99 target is 5 ms) to 10 s (the SLOs: p95 < 100 ms, p99 < 500 ms).
DURATION_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
UNMATCHED: Final = "unmatched"
# Bounded label values: any other method a client sends is counted as `other`.
KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
OTHER: Final = "other"
# The longest route template accepted as a label (ours are under 100 characters).
MAX_ROUTE_LENGTH: Final = 200
WORKERS: Final = 2


class EdgeMetrics:
    """The two REST metrics, on the core's registry (its /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # Counted per record, so per REST request: per thread, without a lock
        # (netweave/tallies.py).
        self.requests = TalliedCounter(
            "o2ims_http_requests",
            "REST requests at the edge (Envoy), those it answered itself included, by "
            "method, O2ims path template (`unmatched`: no REST path) and HTTP status.",
            ["method", "route", "code"],
            registry,
        )
        self.duration = TalliedHistogram(
            "o2ims_http_request_duration_seconds",
            "Time from a REST request's first byte at the edge to its response's last, by "
            "method and O2ims path template.",
            ["method", "route"],
            registry,
            buckets=DURATION_BUCKETS,
        )
        # The labelled children, looked up once per label set (a batch of records mostly
        # repeats a few): labels() costs more than inc() and observe() together.
        self._counted: dict[tuple[str, str, str], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def record(self, body: str) -> None:
        """Count one access log record: its body, the fields of netweave/headers.py
        TELEMETRY_FIELDS. A body that does not hold them all counts as `other`/`unmatched`
        with code 0 and no duration: never a label of its own text."""
        fields = body.rsplit(TELEMETRY_SEPARATOR, len(TELEMETRY_FIELDS) - 1)
        if len(fields) != len(TELEMETRY_FIELDS):
            fields = [""] * len(TELEMETRY_FIELDS)
        self.observe(*fields)

    def observe(
        self, method: str, route: str, code: str, duration_us: str, duration_ms: str
    ) -> None:
        """Count one REST request as the edge described it."""
        method = method.upper()
        method = method if method in KNOWN_METHODS else OTHER
        if not route.startswith("/") or len(route) > MAX_ROUTE_LENGTH:
            route = UNMATCHED  # Envoy writes "-" (or nothing) when no template was recorded
        code = code if len(code) == 3 and code.isdigit() else "0"
        counted = self._counted.get((method, route, code))
        if counted is None:
            counted = self._counted[(method, route, code)] = self.requests.labels(
                method, route, code
            )
        counted.inc()
        seconds = _seconds(duration_us, duration_ms)
        if seconds is not None:
            timed = self._timed.get((method, route))
            if timed is None:
                timed = self._timed[(method, route)] = self.duration.labels(method, route)
            timed.observe(seconds)


def _seconds(microseconds: str, milliseconds: str) -> float | None:
    if microseconds.isdigit():
        return int(microseconds) / 1_000_000
    if milliseconds.isdigit():
        return int(milliseconds) / 1_000
    return None


def _records(request: logs_service_pb2.ExportLogsServiceRequest) -> Iterable[logs_pb2.LogRecord]:
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            yield from scope_logs.log_records


class EdgeTelemetryServicer(logs_service_pb2_grpc.LogsServiceServicer):
    """OTLP LogsService/Export: Envoy's access log records, counted into `metrics`."""

    def __init__(self, metrics: EdgeMetrics, edge_peer_uri: str) -> None:
        if not edge_peer_uri:
            raise ValueError("edge telemetry needs the edge's identity (edge_peer_uri)")
        self._metrics = metrics
        self._edge_peer_uri = edge_peer_uri.encode()

    def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.ServicerContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        # The TLS layer verified the certificate against the edge CA; its URI SAN says
        # whether it is the edge's own (another service's certificate of the CA is not).
        if context.auth_context().get("peer_uri", []) != [self._edge_peer_uri]:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "only the edge may send telemetry")
        count = self._metrics.record
        for record in _records(request):
            count(record.body.string_value)
        return logs_service_pb2.ExportLogsServiceResponse()


@dataclass(frozen=True)
class EdgeTls:
    """The edge listener's mutual TLS (server/config.py NETWEAVE_EDGE_TLS_*)."""

    cert: str
    key: str
    client_ca: str
    peer_uri: str


class EdgeTelemetryServer:
    """The listener Envoy sends its REST access log records to (mutual TLS only)."""

    def __init__(self, listen: str, tls: EdgeTls, registry: CollectorRegistry) -> None:
        if not (tls.cert and tls.key and tls.client_ca and tls.peer_uri):
            raise ValueError(
                "NETWEAVE_EDGE_TELEMETRY_LISTEN needs the edge listener's mutual TLS "
                "(NETWEAVE_EDGE_LISTEN, NETWEAVE_EDGE_TLS_*, NETWEAVE_EDGE_PEER_URI)"
            )
        self.metrics = EdgeMetrics(registry)
        self._server: Any = new_server(
            WORKERS, options=BOUNDED_CONNECTION_OPTIONS, name="grpc-edge-telemetry"
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            EdgeTelemetryServicer(self.metrics, tls.peer_uri), self._server
        )
        credentials = ReloadingServerCredentials(tls.cert, tls.key, client_ca=tls.client_ca)
        self.port: int = self._server.add_secure_port(listen, credentials.credentials)
        if self.port == 0:
            raise RuntimeError(f"cannot bind the edge telemetry listener {listen}")

    def start(self) -> None:
        self._server.start()
        log.info("edge_telemetry_started", port=self.port)

    def stop(self, grace: float | None = None) -> None:
        self._server.stop(grace)
