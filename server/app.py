"""Assemble the core: gRPC services, Redis store, cache, adapter sync and ops endpoint."""

from __future__ import annotations

import functools
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import grpc
import redis
import structlog
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc
from o2ims.inventory.v2 import inventory_pb2_grpc as v2_grpc
from o2ims.monitoring.v1 import monitoring_pb2_grpc as monitoring_v1_grpc
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as subscriptions_v1_grpc
from prometheus_client.core import GaugeMetricFamily

from netweave import tracing
from netweave.grpc_server import (
    BOUNDED_CONNECTION_OPTIONS,
    ReloadingServerCredentials,
    StreamLimiter,
    add_health_and_reflection,
    add_servicer,
    new_server,
    set_serving,
)
from server.alarms.pipeline import AlarmPipeline
from server.alarms.purge import AlarmPurger
from server.alarms.store import AlarmStore
from server.alarms.view import AlarmView
from server.auth import AccessPolicy, AuditLog, AuthInterceptor
from server.auth.identity import Channel
from server.cache import InventoryCache
from server.config import GatewayConfig
from server.data_version import DATA_VERSION, compatible, ensure_data_version
from server.edge_telemetry import EdgeTelemetryServer, EdgeTls
from server.inventory import InventoryV1Servicer, InventoryV2Servicer
from server.listing import Lister, ListingSettings
from server.majors import MajorGate
from server.metrics import GatewayMetrics
from server.monitoring_v1 import MonitoringV1Servicer
from server.ops import OpsServer, readiness_status, redis_check
from server.store import InventoryStore, connect
from server.subscriptions import (
    ALARM_SUBSCRIPTIONS,
    INVENTORY_SUBSCRIPTIONS,
    InventorySubscriptionServicer,
    SubscriptionStore,
)
from server.subscriptions.view import SubscriptionView
from server.sync import AdapterWatcher, EventTailer, StoreWriter
from server.tracing import TracingInterceptor

log = structlog.get_logger()

SERVICE_NAMES: Final = (
    "o2ims.inventory.v1.InventoryService",
    "o2ims.inventory.v2.InventoryService",
    "o2ims.subscriptions.v1.SubscriptionService",
    "o2ims.monitoring.v1.MonitoringService",
)


class Gateway:
    """The running core. start()/stop()/wait_for_termination() like a grpc.Server."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._stop = threading.Event()
        self.metrics = GatewayMetrics()
        self.cache = InventoryCache(config.service_uri, indexed_paths=config.indexed_extensions)
        self.store = InventoryStore(connect(config.redis_url), config.events_max_len)
        # The tailer blocks in XREAD; it gets its own connection with a longer timeout.
        self._tail_store = InventoryStore(connect(config.redis_url, socket_timeout=5.0))
        self._probe = connect(config.redis_url, socket_timeout=0.5)
        _record_data_version(self._probe)
        self.writer = StoreWriter(self.store, self._stop, expected_adapters=len(config.adapters))
        self.tailer = EventTailer(self._tail_store, self.cache, self._stop)
        self.watchers = [AdapterWatcher(a, self.writer, self._stop) for a in config.adapters]

        lister = Lister(
            ListingSettings(
                secret=_page_secret(config, self._probe),
                page_size=config.page_size,
                page_max_bytes=config.page_max_bytes,
                # Registered with add_servicer below.
                serialized_lists=True,
            )
        )
        if config.auth_policy:
            policy = AccessPolicy.load(Path(config.auth_policy))
        else:
            log.warning("access_control_disabled", hint="set NETWEAVE_AUTH_POLICY")
            policy = AccessPolicy.open_policy()
        self.audit = AuditLog(config.audit_log) if config.audit_log else None
        # Two listeners, each its own server (and so its own worker threads): the internal
        # one (loopback, reflection on, `direct_calls` roles) and the edge one (mutual TLS,
        # Envoy only, forwarded identity). Idle reflection streams on one cannot starve
        # the other; see server/auth/identity.py for the identity model.
        self.grpc_server = self._new_server(policy, Channel.INTERNAL)
        self.port = 0
        self._health = add_health_and_reflection(self.grpc_server, SERVICE_NAMES)
        self.edge_server: grpc.Server | None = None
        self.edge_port = 0
        # Envoy's REST access log records (o2ims_http_*): bound by create_server.
        self.edge_telemetry: EdgeTelemetryServer | None = None
        if config.edge_listen:
            self.edge_server = self._new_server(policy, Channel.EDGE)
            add_health_and_reflection(
                self.edge_server,
                SERVICE_NAMES,
                health_servicer=self._health,
                with_reflection=False,
            )
        # Subscriptions and alarms are written in Redis (they must survive restarts and be
        # shared by every replica at once) and read from views that follow their change
        # streams (server/subscriptions/view.py, server/alarms/view.py). The views and the
        # pipeline block in XREAD: their own connections.
        self.subscription_view = SubscriptionView(
            connect(config.redis_url, socket_timeout=5.0),
            self._stop,
            (INVENTORY_SUBSCRIPTIONS, ALARM_SUBSCRIPTIONS),
            on_read=self._cache_read_counter("subscriptions"),
        )
        self.alarm_view = AlarmView(
            connect(config.redis_url, socket_timeout=5.0),
            self._stop,
            on_read=self._cache_read_counter("alarms"),
        )
        state = connect(config.redis_url)
        subscriptions = SubscriptionStore(state, config.redis_wait, view=self.subscription_view)
        alarms = AlarmStore(state, wait=config.redis_wait, view=self.alarm_view)
        self.alarm_purger = AlarmPurger(
            alarms, config.alarm_purge_interval, self._stop, self.metrics.alarms_purged.inc
        )
        self.alarm_pipeline = AlarmPipeline(
            InventoryStore(connect(config.redis_url, socket_timeout=5.0)),
            AlarmStore(connect(config.redis_url), config.events_max_len),
            self.cache,
            self._stop,
            flap_window=config.alarm_flap_window,
            on_event=self.metrics.count_alarm_event,
            inventory_complete=lambda: self.writer.status.complete,
        )
        registrations: list[Callable[[grpc.Server], None]] = [
            functools.partial(
                add_servicer,
                v1_grpc.add_InventoryServiceServicer_to_server,
                InventoryV1Servicer(
                    self.cache, config.service_uri, lister, served_majors=config.served_majors
                ),
            ),
            functools.partial(
                add_servicer,
                v2_grpc.add_InventoryServiceServicer_to_server,
                InventoryV2Servicer(
                    self.cache, config.service_uri, lister, served_majors=config.served_majors
                ),
            ),
            functools.partial(
                add_servicer,
                subscriptions_v1_grpc.add_SubscriptionServiceServicer_to_server,
                InventorySubscriptionServicer(
                    subscriptions,
                    config.service_uri,
                    config.duplicate_subscription_status,
                    lister,
                    callback_policy=config.callback_policy,
                    served_majors=config.served_majors,
                ),
            ),
            functools.partial(
                add_servicer,
                monitoring_v1_grpc.add_MonitoringServiceServicer_to_server,
                MonitoringV1Servicer(
                    subscriptions,
                    alarms,
                    config.service_uri,
                    config.duplicate_subscription_status,
                    lister,
                    view=self.alarm_view,
                    callback_policy=config.callback_policy,
                    # Whether an alarm may be cleared by hand is its definition's clearingType,
                    # from the inventory's alarm dictionaries.
                    clearing_type=self.cache.alarm_clearing_type,
                    on_event=self.metrics.count_alarm_event,
                ),
            ),
        ]
        for server in self.servers:
            for register in registrations:
                register(server)
        self.metrics.add_state(self._state_metrics)
        self.metrics.add_operator_state(
            redis_probe=self._probe,
            watchers=self.watchers,
            certificates={
                **dict(config.watched_certificates),
                "edge_server": config.edge_tls_cert,
                "edge_client_ca": config.edge_client_ca,
            },
        )
        self.ops = OpsServer(
            config.ops_host, config.ops_port, self.readiness, self.metrics.registry
        )
        self._serving = False
        # Set by drain() (SIGTERM): health NOT_SERVING and readiness failing from then on.
        self._draining = threading.Event()

    def _new_server(self, policy: AccessPolicy, channel: Channel) -> grpc.Server:
        workers = self.config.grpc_workers
        auth = AuthInterceptor(
            policy,
            self.audit,
            self.metrics,
            channel,
            edge_peer_uri=self.config.edge_peer_uri if channel is Channel.EDGE else "",
        )
        return new_server(
            workers,
            # Streams (reflection, health Watch) get at most half the workers.
            [
                # First, so its span covers the whole call; absent when tracing is off.
                *([TracingInterceptor()] if tracing.enabled() else []),
                StreamLimiter(max(1, workers // 2)),
                # Identifies, decides, audits, and counts and times every unary call
                # (server/metrics.py MethodCounts), refused ones included.
                auth,
                MajorGate(self.config.served_majors),
            ],
            options=BOUNDED_CONNECTION_OPTIONS,
            name=f"grpc-{channel.value}",
            # Internal callers are few and local: a bounded queue. The edge's load is bounded
            # by Envoy (its circuit breakers and timeouts) and must not turn into 429s here.
            max_concurrent_rpcs=4 * workers if channel is Channel.INTERNAL else None,
        )

    def _cache_read_counter(self, api: str) -> Callable[[str], None]:
        """A view's `on_read`: "hit"/"miss" -> o2ims_cache_reads_total{api, result}."""
        children = {
            result: self.metrics.cache_reads.labels(api, result) for result in ("hit", "miss")
        }
        return lambda result: children[result].inc()

    @property
    def servers(self) -> list[grpc.Server]:
        return [self.grpc_server, *([self.edge_server] if self.edge_server else [])]

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self.ops.start()
        self.writer.start()
        self.tailer.start()
        self.alarm_purger.start()
        self.alarm_pipeline.start()
        self.alarm_view.start()
        self.subscription_view.start()
        for watcher in self.watchers:
            watcher.start()
        for server in self.servers:
            server.start()
        if self.edge_telemetry is not None:
            self.edge_telemetry.start()
        threading.Thread(target=self._serve_when_loaded, name="serving-gate", daemon=True).start()
        log.info(
            "gateway_started",
            grpc_port=self.port,
            edge_port=self.edge_port or None,
            ops_port=self.ops.port,
            adapters=list(self.config.adapters),
        )

    def _serve_when_loaded(self) -> None:
        # Health stays NOT_SERVING until the first snapshot is in the cache, so Envoy
        # never routes to a core that would answer with an empty inventory.
        while not self._stop.wait(0.05):
            if self._draining.is_set():
                return  # going away: never SERVING again
            if self.cache.loaded:
                set_serving(self._health, SERVICE_NAMES, True)
                self._serving = True
                if self._draining.is_set():  # drain() ran meanwhile: it wins
                    set_serving(self._health, SERVICE_NAMES, False)
                return

    def drain(self, drain_s: float = 0.0, grace_s: float = 0.0) -> None:
        """The first step of a graceful stop: report NOT_SERVING for every service (and
        the server, "") and fail /readyz with `draining`, while every call is still served,
        so Envoy's health checks and Kubernetes' readiness probe take this replica out of
        rotation before stop() refuses new calls. The durations are only logged."""
        self._draining.set()
        set_serving(self._health, SERVICE_NAMES, False)
        self._serving = False
        log.info(
            "gateway_draining",
            drain_seconds=drain_s,
            grace_seconds=grace_s,
            grpc_port=self.port,
            edge_port=self.edge_port or None,
        )

    def stop(self, grace: float | None = 2.0) -> threading.Event:
        """Refuse new calls at once, give the calls in flight `grace` seconds; the event
        is set once both listeners have finished."""
        self._stop.set()
        self._draining.set()
        set_serving(self._health, SERVICE_NAMES, False)
        for watcher in self.watchers:
            watcher.cancel()
        listeners: list[threading.Event] = []
        if self.edge_server is not None:
            listeners.append(self.edge_server.stop(grace))
        if self.edge_telemetry is not None:
            self.edge_telemetry.stop(grace)
        listeners.append(self.grpc_server.stop(grace))
        self.ops.stop()
        # The pipeline ends its step and stands down before the core says it stopped.
        if self.alarm_pipeline.is_alive():
            self.alarm_pipeline.join(timeout=2.0)
        # The audit trail is written off the calls' threads: once the last call has
        # finished, its queue is written out before the core says it stopped.
        return _all_set(listeners, then=self.audit.close if self.audit is not None else None)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self.grpc_server.wait_for_termination(timeout))

    # --- readiness and metrics -----------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when Redis answers and the inventory is loaded. An adapter that is away,
        whose watch stream is stuck, or that refuses part of its source (an invalid file,
        an object too large to send) makes the status "degraded" with the reasons, but
        does not fail readiness: the last good objects are still served, and every replica
        watches the same adapter, so failing readiness would take the whole API down
        over one stale object. The reasons are for the operator and the alerts."""
        checks: dict[str, Any] = {"redis": redis_check(self._probe)}
        checks["inventory"] = {
            "ok": self.cache.loaded,
            "version": self.cache.version,
            "objects": self.cache.counts(),
            **({} if self.cache.loaded else {"reason": "inventory not loaded from Redis yet"}),
        }
        # The event stream the cache follows (inventory:events): reads stay served from the
        # cache while it is away, so it degrades, it does not fail readiness.
        tail = self.tailer.status
        checks["events"] = {"ok": not tail.last_error}
        if tail.last_error:
            checks["events"]["reason"] = f"not following inventory:events: {tail.last_error}"
        checks["adapters"] = {}
        reasons: list[str] = []
        for watcher in self.watchers:
            status = watcher.status
            adapter_reasons = status.reasons()
            reasons += adapter_reasons
            checks["adapters"][status.name or status.address] = {
                "ok": not adapter_reasons,
                "address": status.address,
                "synced": status.synced_once,
                "stuck": status.stuck,
                "sync_lag_seconds": round(status.sync_lag(), 3),
                **({"reason": "; ".join(adapter_reasons)} if adapter_reasons else {}),
                **({"error": status.last_error} if status.last_error else {}),
                **({"problems": list(status.problems)} if status.problems else {}),
            }
        if self._draining.is_set():
            # Shutting down (SIGTERM): still serving, but no new traffic wanted.
            checks["draining"] = {
                "ok": False,
                "reason": "draining: shutting down, serving only until load balancers "
                "have stopped sending (NETWEAVE_SHUTDOWN_DRAIN_SECONDS)",
            }
        ready = bool(
            checks["redis"]["ok"] and checks["inventory"]["ok"] and not self._draining.is_set()
        )
        status_text = readiness_status(ready, checks)
        failing = [
            name
            for name in ("redis", "inventory", "draining")
            if name in checks and not checks[name]["ok"]
        ]
        body: dict[str, Any] = {"status": status_text, "checks": checks}
        if failing:
            body["failing"] = failing
        if reasons:
            body["reasons"] = reasons
        return ready, body

    def _state_metrics(self) -> Iterator[GaugeMetricFamily]:
        redis_up = GaugeMetricFamily("o2ims_redis_up", "1 if the last Redis operation succeeded.")
        redis_up.add_metric(
            [], 1.0 if self.writer.status.redis_ok and self.tailer.status.redis_ok else 0.0
        )
        yield redis_up
        objects = GaugeMetricFamily(
            "o2ims_inventory_objects", "Objects in the served inventory.", labels=["kind"]
        )
        for kind, count in self.cache.counts().items():
            objects.add_metric([kind], float(count))
        yield objects
        version = GaugeMetricFamily("o2ims_inventory_version", "Version of the served inventory.")
        version.add_metric([], float(self.cache.version))
        yield version
        adapters = GaugeMetricFamily(
            "o2ims_adapter_connected", "1 if the adapter's watch stream is up.", labels=["adapter"]
        )
        for watcher in self.watchers:
            adapters.add_metric(
                [watcher.status.name or watcher.status.address],
                1.0 if watcher.status.connected else 0.0,
            )
        yield adapters
        yield from self._alarm_metrics()

    def _alarm_metrics(self) -> Iterator[GaugeMetricFamily]:
        records = GaugeMetricFamily(
            "o2ims_alarms",
            "Alarm event records by perceivedSeverity (CLEARED for cleared ones), state "
            "(active, cleared) and acknowledgement.",
            labels=["severity", "state", "acknowledged"],
        )
        for (severity, state, acknowledged), count in sorted(self.alarm_view.counts().items()):
            records.add_metric([severity, state, str(acknowledged).lower()], float(count))
        yield records
        pipeline = self.alarm_pipeline.status
        leader = GaugeMetricFamily(
            "o2ims_alarm_pipeline_leader",
            "1 on the replica whose alarm pipeline applies the sources' alarms.",
        )
        leader.add_metric([], 1.0 if pipeline.leader else 0.0)
        yield leader
        lag = GaugeMetricFamily(
            "o2ims_alarm_pipeline_lag",
            "Inventory changes the alarm pipeline has yet to apply (on the leader).",
        )
        lag.add_metric([], float(pipeline.lag))
        yield lag
        unresolved = GaugeMetricFamily(
            "o2ims_alarm_unresolved_resources",
            "Alarms raised by this replica whose source named a resource that could not be "
            "resolved (raised with an empty resourceID).",
        )
        unresolved.add_metric([], float(pipeline.unresolved))
        yield unresolved


def _all_set(
    events: list[threading.Event], then: Callable[[], None] | None = None
) -> threading.Event:
    """An event set once every one of `events` is (and `then` has run)."""
    if len(events) == 1 and then is None:
        return events[0]
    combined = threading.Event()

    def wait_all() -> None:
        for event in events:
            event.wait()
        try:
            if then is not None:
                then()
        finally:
            combined.set()

    threading.Thread(target=wait_all, name="stop-wait", daemon=True).start()
    return combined


def _record_data_version(client: redis.Redis) -> None:
    """Name the layout of the data in Redis (server/data_version.py) if nothing has yet: what
    a restore checks a backup against. With Redis away, the next start records it."""
    try:
        stored = ensure_data_version(client)
    except redis.RedisError as exc:
        log.warning("data_version_unrecorded", error=str(exc))
        return
    # Data of another major layout is not ours to read or write: refuse to start.
    if not compatible(stored):
        raise ValueError(
            f"Redis holds data of layout {stored}; this build reads {DATA_VERSION} "
            "(see docs/operations.md, upgrade and rollback)"
        )
    log.info("data_version", version=stored)


PAGE_SECRET_KEY: Final = "config:page_marker_secret"


def _page_secret(config: GatewayConfig, client: redis.Redis) -> bytes:
    """The key that signs page markers. Every replica must share it, or a marker from
    one is refused by the next: configured, else created once in Redis (SET NX) and read
    by all. With Redis away at start-up, a process-local one (markers then fail across
    replicas and restarts, with a 400 the client recovers from by starting over)."""
    if config.page_secret:
        return config.page_secret.encode()
    try:
        client.set(PAGE_SECRET_KEY, secrets.token_hex(32), nx=True)
        stored = client.get(PAGE_SECRET_KEY)
        if stored:
            return stored if isinstance(stored, bytes) else str(stored).encode()
    except redis.RedisError as exc:
        log.warning("page_secret_local", error=str(exc))
    return secrets.token_bytes(32)


def create_server(config: GatewayConfig) -> tuple[Gateway, int]:
    """Build the core and bind its gRPC port (0 picks a free one); call start() next."""
    gateway = Gateway(config)
    gateway.port = gateway.grpc_server.add_insecure_port(f"{config.grpc_host}:{config.grpc_port}")
    if gateway.port == 0:
        raise RuntimeError(f"cannot bind gRPC port {config.grpc_host}:{config.grpc_port}")
    if gateway.edge_server is not None:
        credentials = ReloadingServerCredentials(
            config.edge_tls_cert, config.edge_tls_key, client_ca=config.edge_client_ca
        )
        gateway.edge_port = gateway.edge_server.add_secure_port(
            config.edge_listen, credentials.credentials
        )
        if gateway.edge_port == 0:
            raise RuntimeError(f"cannot bind the edge listener {config.edge_listen}")
    if config.edge_telemetry_listen:
        # The edge's channel (its mutual TLS and peer identity) or nothing: refused
        # without the edge listener's settings.
        gateway.edge_telemetry = EdgeTelemetryServer(
            config.edge_telemetry_listen,
            EdgeTls(
                config.edge_tls_cert if config.edge_listen else "",
                config.edge_tls_key,
                config.edge_client_ca,
                config.edge_peer_uri,
            ),
            gateway.metrics.registry,
        )
    return gateway, gateway.port
