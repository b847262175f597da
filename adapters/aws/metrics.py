"""The AWS adapter's Prometheus metrics (served on --metrics-port when given)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from netweave.metrics import backend_request_histogram


class AwsMetrics:
    """One registry per adapter (tests and the bench run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter(
            "netweave_aws_polls",
            "Polls of one region, by outcome (success, failure)",
            ["region", "outcome"],
            registry=self.registry,
        )
        self.region_up = Gauge(
            "netweave_aws_region_up",
            "1 when the region's last poll succeeded, 0 when it failed (its last snapshot "
            "is served)",
            ["region"],
            registry=self.registry,
        )
        self.poll_seconds = Gauge(
            "netweave_aws_poll_duration_seconds",
            "How long the region's last poll took",
            ["region"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "netweave_aws_last_successful_poll_timestamp_seconds",
            "When the region was last read whole (Unix time)",
            ["region"],
            registry=self.registry,
        )
        self.api_calls = Counter(
            "netweave_aws_api_calls",
            "AWS API operations called (a retried call counts once)",
            ["region", "service", "operation"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "netweave_aws_http_requests",
            "HTTP requests sent to AWS (retries included: the excess over api_calls is "
            "what throttling and errors cost)",
            ["region", "service"],
            registry=self.registry,
        )
        self.published_objects = Gauge(
            "netweave_aws_published_objects",
            "Objects the adapter publishes now",
            registry=self.registry,
        )
        self.backend_latency = backend_request_histogram(self.registry)
