"""Assemble the core: gRPC services, Redis store, cache, adapter sync and ops endpoint."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import redis
import structlog
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc
from o2ims.inventory.v2 import inventory_pb2_grpc as v2_grpc
from o2ims.monitoring.v1 import monitoring_pb2_grpc as monitoring_v1_grpc
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as subscriptions_v1_grpc
from prometheus_client.core import GaugeMetricFamily

from netweave.grpc_server import add_health_and_reflection, new_server, set_serving
from server.auth import AccessPolicy, AuditLog, AuthInterceptor
from server.cache import InventoryCache
from server.config import GatewayConfig
from server.inventory import InventoryV1Servicer, InventoryV2Servicer
from server.listing import Lister, ListingSettings
from server.metrics import GatewayMetrics, MetricsInterceptor
from server.monitoring_v1 import AlarmRecords, MonitoringV1Servicer
from server.ops import OpsServer, redis_check
from server.store import InventoryStore, connect
from server.subscriptions import InventorySubscriptionServicer, SubscriptionStore
from server.sync import AdapterWatcher, EventTailer, StoreWriter

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
        self.cache = InventoryCache(config.service_uri)
        self.store = InventoryStore(connect(config.redis_url), config.events_max_len)
        # The tailer blocks in XREAD; it gets its own connection with a longer timeout.
        self._tail_store = InventoryStore(connect(config.redis_url, socket_timeout=5.0))
        self._probe = connect(config.redis_url, socket_timeout=0.5)
        self.writer = StoreWriter(self.store, self._stop)
        self.tailer = EventTailer(self._tail_store, self.cache, self._stop)
        self.watchers = [AdapterWatcher(a, self.writer, self._stop) for a in config.adapters]

        lister = Lister(
            ListingSettings(secret=_page_secret(config, self._probe), page_size=config.page_size)
        )
        if config.auth_policy:
            policy = AccessPolicy.load(Path(config.auth_policy))
        else:
            log.warning("access_control_disabled", hint="set NETWEAVE_AUTH_POLICY")
            policy = AccessPolicy.open_policy()
        self.audit = AuditLog(config.audit_log) if config.audit_log else None
        auth = AuthInterceptor(policy, self.audit, self.metrics, config.edge_secret)
        self.grpc_server = new_server(config.grpc_workers, [auth, MetricsInterceptor(self.metrics)])
        self.port = 0
        self._health = add_health_and_reflection(self.grpc_server, SERVICE_NAMES)
        v1_grpc.add_InventoryServiceServicer_to_server(
            InventoryV1Servicer(self.cache, config.service_uri, lister), self.grpc_server
        )
        v2_grpc.add_InventoryServiceServicer_to_server(
            InventoryV2Servicer(self.cache, config.service_uri, lister), self.grpc_server
        )
        # Subscriptions and alarms are read and written in Redis directly (no cache): they
        # must survive restarts and be shared by every replica at once.
        state = connect(config.redis_url)
        subscriptions = SubscriptionStore(state)
        subscriptions_v1_grpc.add_SubscriptionServiceServicer_to_server(
            InventorySubscriptionServicer(
                subscriptions,
                config.service_uri,
                config.duplicate_subscription_status,
                lister,
                callback_policy=config.callback_policy,
            ),
            self.grpc_server,
        )
        monitoring_v1_grpc.add_MonitoringServiceServicer_to_server(
            MonitoringV1Servicer(
                subscriptions,
                AlarmRecords(state),
                config.service_uri,
                config.duplicate_subscription_status,
                lister,
                callback_policy=config.callback_policy,
            ),
            self.grpc_server,
        )
        self.metrics.add_state(self._state_metrics)
        self.ops = OpsServer(
            config.ops_host, config.ops_port, self.readiness, self.metrics.registry
        )
        self._serving = False

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self.ops.start()
        self.writer.start()
        self.tailer.start()
        for watcher in self.watchers:
            watcher.start()
        self.grpc_server.start()
        threading.Thread(target=self._serve_when_loaded, name="serving-gate", daemon=True).start()
        log.info(
            "gateway_started",
            grpc_port=self.port,
            ops_port=self.ops.port,
            adapters=list(self.config.adapters),
        )

    def _serve_when_loaded(self) -> None:
        # Health stays NOT_SERVING until the first snapshot is in the cache, so Envoy
        # never routes to a core that would answer with an empty inventory.
        while not self._stop.wait(0.05):
            if self.cache.loaded:
                set_serving(self._health, SERVICE_NAMES, True)
                self._serving = True
                return

    def stop(self, grace: float | None = 2.0) -> threading.Event:
        self._stop.set()
        set_serving(self._health, SERVICE_NAMES, False)
        for watcher in self.watchers:
            watcher.cancel()
        done: threading.Event = self.grpc_server.stop(grace)
        self.ops.stop()
        return done

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self.grpc_server.wait_for_termination(timeout))

    # --- readiness and metrics -----------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when Redis answers and the inventory is loaded. Adapters that are away
        are reported (status "degraded") but do not fail readiness: their last known
        objects are still served, and failing every replica at once helps nobody."""
        checks: dict[str, Any] = {"redis": redis_check(self._probe)}
        checks["inventory"] = {
            "ok": self.cache.loaded,
            "version": self.cache.version,
            "objects": self.cache.counts(),
        }
        checks["adapters"] = {
            (w.status.name or w.status.address): {
                "ok": w.status.connected,
                "address": w.status.address,
                "synced": w.status.synced_once,
                **({"error": w.status.last_error} if w.status.last_error else {}),
            }
            for w in self.watchers
        }
        ready = bool(checks["redis"]["ok"] and checks["inventory"]["ok"])
        adapters_ok = all(a["ok"] for a in checks["adapters"].values())
        status = "ready" if ready and adapters_ok else "degraded" if ready else "not ready"
        failing = [name for name in ("redis", "inventory") if not checks[name]["ok"]]
        body: dict[str, Any] = {"status": status, "checks": checks}
        if failing:
            body["failing"] = failing
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
    return gateway, gateway.port
