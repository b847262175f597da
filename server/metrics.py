"""Prometheus metrics of the core: per-RPC counters and latency, and live state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from netweave.headers import IGNORED_QUERY_HEADER
from netweave.metrics import StateCollector, register_state


class GatewayMetrics:
    """One registry per gateway instance, so tests can run several in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "o2ims_grpc_requests_total",
            "gRPC requests handled by the core, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "o2ims_grpc_request_duration_seconds",
            "Time to handle a gRPC request in the core.",
            ["method"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )

        self.ignored_query = Counter(
            "o2ims_ignored_query_parameters",
            "Query parameters the edge dropped because the path does not know them (REST, "
            "lenient mode), by gRPC method.",
            ["method"],
            registry=self.registry,
        )

        self.auth = Counter(
            "o2ims_auth",
            "Calls by authentication outcome (success/failure) and how the caller was "
            "identified (certificate, token, certificate_and_token, internal, none). Calls "
            "Envoy refused itself (bad token) are counted by Envoy's jwt_authn stats.",
            ["result", "via"],
            registry=self.registry,
        )
        self.authz = Counter(
            "o2ims_authz",
            "Authorization decisions by result (allowed/denied) and role (the role that "
            "granted the call; for a denial the caller's first role, or none).",
            ["result", "role"],
            registry=self.registry,
        )

        self.alarms_purged = Counter(
            "o2ims_alarms_purged",
            "Cleared alarm event records deleted because they outlived the alarm service "
            "configuration's retentionPeriod (by this replica).",
            registry=self.registry,
        )

        self.alarm_events = Counter(
            "o2ims_alarm_events",
            "Changes of alarm event records made by this replica, by the event they notify: "
            "NEW (raised), CHANGE, CLEAR (cleared by the source or by hand), ACKNOWLEDGE.",
            ["event"],
            registry=self.registry,
        )
        for event in ("NEW", "CHANGE", "CLEAR", "ACKNOWLEDGE"):
            self.alarm_events.labels(event)

    def count_alarm_event(self, event: str) -> None:
        self.alarm_events.labels(str(event)).inc()

    def add_state(self, collect: StateCollector) -> None:
        """Expose gauges computed at scrape time."""
        register_state(self.registry, collect)


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts and times unary RPCs; wraps the handler because only it sees the outcome."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method
        inner = handler.unary_unary
        metrics = self._metrics
        for item in details.invocation_metadata or ():
            if item.key == IGNORED_QUERY_HEADER and item.value.isdigit():
                metrics.ignored_query.labels(method).inc(int(item.value))

        def timed(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            code = "OK"
            try:
                return inner(request, context)
            except Exception:
                code = (context.code() or grpc.StatusCode.UNKNOWN).name
                raise
            finally:
                metrics.latency.labels(method).observe(time.perf_counter() - start)
                metrics.requests.labels(method, code).inc()

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
