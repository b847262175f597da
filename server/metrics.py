"""Prometheus metrics of the core: per-RPC counters and latency, cache reads, and live
state read at scrape time (Redis replicas, adapter sync lag, certificate expiry)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import grpc
import redis
import structlog
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily

from netweave.cert_metrics import register_certificates
from netweave.headers import IGNORED_QUERY_HEADER
from netweave.logs import current_level
from netweave.metrics import StateCollector, register_state
from netweave.tallies import TalliedCounter, TalliedHistogram

if TYPE_CHECKING:
    from server.sync import AdapterWatcher

log = structlog.get_logger()

CACHE_APIS: Final = ("inventory", "alarms", "subscriptions")


def cache_read(method: str) -> tuple[str, str] | None:
    """(api, "hit" | "miss") of a read RPC whose source is fixed per method, None for
    anything else (writes, API versions, and the reads that count themselves).

    Every inventory read comes from the in-process cache (server/cache.py) and an alarm
    listing from the alarm view (server/alarms/view.py), never from Redis: hits. The alarm
    service configuration is read in Redis: a miss. Subscription reads (both services) and
    an alarm read by id (GetAlarm, with its ETag) are served from the subscription view
    (server/subscriptions/view.py) or the alarm view when it holds the answer and from
    Redis otherwise: the store counts each one as it is served (the views' `on_read`).
    """
    service, _, name = method.lstrip("/").rpartition("/")
    if not name.startswith(("List", "Get")) or name.endswith("ApiVersions"):
        return None
    if service.startswith("o2ims.inventory."):
        return "inventory", "hit"
    if service.startswith("o2ims.subscriptions."):
        return None
    if service.startswith("o2ims.monitoring."):
        if "Subscription" in name or name == "GetAlarm":
            return None
        return "alarms", "hit" if name == "ListAlarms" else "miss"
    return None


class GatewayMetrics:
    """One registry per gateway instance, so tests can run several in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # What every call counts (o2ims_grpc_requests, the latency, o2ims_auth, o2ims_authz,
        # o2ims_cache_reads): counted per thread without a lock (netweave/tallies.py).
        self.requests = TalliedCounter(
            "o2ims_grpc_requests_total",
            "gRPC requests handled by the core, by method and status code.",
            ["method", "code"],
            self.registry,
        )
        self.latency = TalliedHistogram(
            "o2ims_grpc_request_duration_seconds",
            "Time to handle a gRPC request in the core.",
            ["method"],
            self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )

        self.ignored_query = Counter(
            "o2ims_ignored_query_parameters",
            "Query parameters the edge dropped because the path does not know them (REST, "
            "lenient mode), by gRPC method.",
            ["method"],
            registry=self.registry,
        )

        self.auth = TalliedCounter(
            "o2ims_auth",
            "Calls by authentication outcome (success/failure) and how the caller was "
            "identified (certificate, token, certificate_and_token, internal, none). Calls "
            "Envoy refused itself (bad token) are counted by Envoy's jwt_authn stats.",
            ["result", "via"],
            self.registry,
        )
        self.authz = TalliedCounter(
            "o2ims_authz",
            "Authorization decisions by result (allowed/denied) and role (the role that "
            "granted the call; for a denial the caller's first role, or none).",
            ["result", "role"],
            self.registry,
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

        self.cache_reads = TalliedCounter(
            "o2ims_cache_reads",
            "Read requests by API (inventory, alarms, subscriptions) and result: hit when "
            "answered from the in-process cache or view without a Redis round trip, miss "
            "when the read needed Redis.",
            ["api", "result"],
            self.registry,
        )
        for api in CACHE_APIS:
            for result in ("hit", "miss"):
                self.cache_reads.labels(api, result)
        # gRPC method -> what its calls count (counts_of)
        self._counts: dict[str, MethodCounts] = {}

    def counts_of(self, method: str) -> MethodCounts:
        """What a call of `method` counts (one object per method)."""
        counts = self._counts.get(method)
        if counts is None:
            counts = self._counts[method] = MethodCounts(self, method)
        return counts

    def count_alarm_event(self, event: str) -> None:
        self.alarm_events.labels(str(event)).inc()

    def add_state(self, collect: StateCollector) -> None:
        """Expose gauges computed at scrape time."""
        register_state(self.registry, collect)

    def add_operator_state(
        self,
        *,
        redis_probe: redis.Redis,
        watchers: Sequence[AdapterWatcher],
        certificates: Mapping[str, str],
    ) -> None:
        """The core's scrape-time gauges for the operator: `o2ims_redis_connected_replicas`
        (INFO replication through `redis_probe`, a short-timeout client),
        `o2ims_adapter_sync_lag_seconds` and `o2ims_certificate_expiry_seconds` of
        `certificates` (role -> PEM path)."""

        def collect() -> Iterator[GaugeMetricFamily]:
            replicas = GaugeMetricFamily(
                "o2ims_redis_connected_replicas",
                "Replicas connected to the Redis primary (INFO replication), read at scrape.",
            )
            try:
                info: Any = redis_probe.info("replication")
                replicas.add_metric([], float(info.get("connected_slaves", 0)))
                yield replicas
            except redis.RedisError:
                pass  # unknown: o2ims_redis_up and /readyz say why
            lag = GaugeMetricFamily(
                "o2ims_adapter_sync_lag_seconds",
                "Seconds since the adapter's watch stream last told the core it is current "
                "(its SYNCED, a change, or a probe answered while the stream is open).",
                labels=["adapter"],
            )
            for watcher in watchers:
                status = watcher.status
                lag.add_metric([status.name or status.address], status.sync_lag())
            yield lag

        register_state(self.registry, collect)
        register_certificates(self.registry, certificates)


class MethodCounts:
    """What a call of one method counts: o2ims_cache_reads (a read), the query parameters
    the edge dropped, then its latency and o2ims_grpc_requests by code. The metric children
    are resolved once per method (GatewayMetrics.counts_of), so a call costs two method
    calls: `started` with its metadata, `finished` with its code and duration. The access
    control guard (server/auth/interceptor.py) calls them from its own wrapper, so a call
    goes through one Python wrapper, not two; `counted` wraps the calls it does not guard
    (health checks)."""

    __slots__ = ("_by_code", "_ignored", "_metrics", "_observe", "cache_read", "method")

    def __init__(self, metrics: GatewayMetrics, method: str) -> None:
        self.method = method
        self._metrics = metrics
        read = cache_read(method)
        # The o2ims_cache_reads_total child a call counts in (None: not a read).
        self.cache_read = metrics.cache_reads.labels(*read) if read is not None else None
        self._observe = metrics.latency.labels(method).observe
        self._ignored: Any = None
        # code -> this method's o2ims_grpc_requests_total child, made on the code's first call
        self._by_code: dict[str, Any] = {}

    def started(self, metadata: Mapping[str, str]) -> None:
        if self.cache_read is not None:
            self.cache_read.inc()
        ignored = metadata.get(IGNORED_QUERY_HEADER)
        if ignored is not None and ignored.isdigit():
            if self._ignored is None:
                self._ignored = self._metrics.ignored_query.labels(self.method)
            self._ignored.inc(int(ignored))

    def finished(self, code: str, seconds: float) -> None:
        self._observe(seconds)
        requests = self._by_code.get(code)
        if requests is None:
            requests = self._by_code[code] = self._metrics.requests.labels(self.method, code)
        requests.inc()
        # Every call at debug (SIGUSR1 twice from info): a filtered call costs a level
        # comparison.
        if current_level() <= logging.DEBUG:
            log.debug("rpc", method=self.method, code=code, ms=round(seconds * 1000, 3))


def counted(metrics: GatewayMetrics) -> Callable[[Callable[[Any, Any], Any], str], Any]:
    """A UnaryWrappers `wrap` that counts and times each call (MethodCounts): for the
    unary calls nothing else wraps (health checks, which the guard passes)."""

    def wrap(inner: Callable[[Any, Any], Any], method: str) -> Any:
        counts = metrics.counts_of(method)
        perf_counter = time.perf_counter

        def timed(request: Any, context: Any) -> Any:
            start = perf_counter()
            code = "OK"
            counts.started(dict(context.invocation_metadata() or ()))
            try:
                return inner(request, context)
            except Exception:
                code = (context.code() or grpc.StatusCode.UNKNOWN).name
                raise
            finally:
                counts.finished(code, perf_counter() - start)

        return timed

    return wrap
