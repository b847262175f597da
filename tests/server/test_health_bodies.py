"""The core's health bodies and operator metrics, on a real core (its own redis-server, an
adapter, the edge listener with the development PKI): identity and uptime in both bodies,
a stopped Redis failing /readyz with the reason and o2ims_ready 0, cache reads counted as
hits and misses, certificate expiry, adapter sync lag and Redis replicas."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import grpc
import httpx
import pytest
import redis
from cryptography import x509
from o2ims.adapter.v1 import domain_pb2
from o2ims.inventory.v1 import inventory_pb2 as inv_pb
from o2ims.inventory.v1 import inventory_pb2_grpc as inv_grpc
from o2ims.subscriptions.v1 import subscriptions_pb2 as sub_pb
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as sub_grpc
from prometheus_client.parser import text_string_to_metric_families

from adapters.publisher import AdapterServicer, ObjectSetPublisher, create_adapter_server
from devstack.pki import DevPki, ensure_dev_pki
from devstack.processes import wait_until
from devstack.redis_server import RedisServer
from server.app import Gateway, create_server
from server.config import GatewayConfig
from server.data_version import DATA_VERSION, DATA_VERSION_KEY

POOL_ID = "7d1d5a2a-5a47-4c8e-9f0b-000000000001"
IDENTITY = ("status", "timestamp", "version", "commit", "uptime", "checks")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Core:
    def __init__(self, gateway: Gateway, redis: RedisServer, pki: DevPki) -> None:
        self.gateway = gateway
        self.redis = redis
        self.pki = pki
        self.ops = f"http://127.0.0.1:{gateway.ops.port}"
        self.channel = grpc.insecure_channel(f"127.0.0.1:{gateway.port}")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.ops + path, timeout=5)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return samples(self.get("/metrics").text)


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Core]:
    redis = RedisServer(tmp_path / "redis").start()
    pki = ensure_dev_pki(tmp_path / "pki")
    publisher = ObjectSetPublisher()
    publisher.replace(
        [
            domain_pb2.InventoryObject(
                resource_pool=domain_pb2.ResourcePool(resource_pool_id=POOL_ID, name="edge")
            )
        ]
    )
    adapter, adapter_port = create_adapter_server(
        AdapterServicer("static", "static", "test", publisher)
    )
    config = GatewayConfig(
        grpc_host="127.0.0.1",
        grpc_port=0,
        ops_host="127.0.0.1",
        ops_port=0,
        redis_url=redis.url,
        adapters=(f"127.0.0.1:{adapter_port}",),
        edge_listen="127.0.0.1:0",
        edge_tls_cert=str(pki.server_cert),
        edge_tls_key=str(pki.server_key),
        edge_client_ca=str(pki.ca_cert),
        edge_peer_uri="spiffe://netweave/edge",
        # What the pod holds for Envoy: reported, though the core does not use it.
        watched_certificates=(("client_ca", str(pki.ca_cert)), ("server", str(pki.server_cert))),
    )
    gateway, _port = create_server(config)
    gateway.start()
    running = Core(gateway, redis, pki)
    try:
        wait_until(lambda: running.get("/readyz").status_code == 200, 15, "the core ready")
        yield running
    finally:
        running.channel.close()
        gateway.stop(grace=None)
        publisher.close()
        adapter.stop(grace=None)
        redis.stop()


def test_both_bodies_say_who_and_since_when(core: Core) -> None:
    health, ready = core.get("/healthz").json(), core.get("/readyz").json()
    for body in (health, ready):
        assert set(IDENTITY) <= set(body), body
        assert body["status"] == "ok"
        assert body["version"] and body["commit"]
        stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        offset = stamp.utcoffset()
        assert offset is not None and offset.total_seconds() == 0
        assert abs(time.time() - stamp.timestamp()) < 5
    assert health["checks"] == {}
    checks = ready["checks"]
    assert {"redis", "inventory", "events", "adapters"} <= set(checks)
    assert checks["redis"]["ok"] and checks["events"]["ok"] and checks["inventory"]["ok"]
    assert [a["ok"] for a in checks["adapters"].values()] == [True]
    time.sleep(0.3)
    assert core.get("/healthz").json()["uptime"] > health["uptime"]


def test_redis_stopped_fails_readiness_with_the_reason(core: Core) -> None:
    metrics = core.metrics()
    assert metrics[("o2ims_ready", ())] == 1.0
    info = [key for key in metrics if key[0] == "o2ims_build_info"]
    assert info and metrics[info[0]] == 1.0
    assert any(name.startswith("process_") for name, _ in metrics)
    core.redis.stop()
    reply = core.get("/readyz")
    assert reply.status_code == 503
    body = reply.json()
    assert body["status"] == "failing" and body["failing"] == ["redis"]
    assert body["checks"]["redis"]["ok"] is False
    assert "Redis unreachable" in body["checks"]["redis"]["reason"]
    assert core.metrics()[("o2ims_ready", ())] == 0.0


def test_cache_reads_count_view_hits_and_redis_misses(core: Core) -> None:
    def reads(api: str, result: str) -> float:
        return core.metrics()[("o2ims_cache_reads_total", (("api", api), ("result", result)))]

    wait_until(lambda: core.gateway.subscription_view.loaded, 10, "the subscription view")
    before = {(a, r): reads(a, r) for a in ("inventory", "subscriptions") for r in ("hit", "miss")}
    inventory = inv_grpc.InventoryServiceStub(core.channel)
    for _ in range(3):
        inventory.ListResourcePools(inv_pb.ListResourcePoolsRequest())
    inventory.GetAllApiVersions(inv_pb.GetAllApiVersionsRequest())  # not a read of data
    subscriptions = sub_grpc.SubscriptionServiceStub(core.channel)
    subscriptions.ListSubscriptions(sub_pb.ListSubscriptionsRequest())  # the view: a hit
    with pytest.raises(grpc.RpcError):
        # An id the view does not hold is looked up in Redis: a miss.
        subscriptions.GetSubscription(sub_pb.GetSubscriptionRequest(subscription_id="unknown"))
    assert reads("inventory", "hit") - before["inventory", "hit"] == 3
    assert reads("inventory", "miss") == before["inventory", "miss"]
    assert reads("subscriptions", "hit") - before["subscriptions", "hit"] == 1
    assert reads("subscriptions", "miss") - before["subscriptions", "miss"] == 1


def test_certificate_expiry_is_not_after_minus_now(core: Core) -> None:
    metrics = core.metrics()
    now = time.time()
    roles = {
        ("edge_server", core.pki.server_cert),
        ("edge_client_ca", core.pki.ca_cert),
        ("server", core.pki.server_cert),
        ("client_ca", core.pki.ca_cert),
    }
    reported = {
        dict(labels)["certificate"]
        for name, labels in metrics
        if name == "o2ims_certificate_expiry_seconds"
    }
    assert reported == {role for role, _ in roles}
    for role, path in sorted(roles):
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
        expected = certificate.not_valid_after_utc.timestamp() - now
        seconds = metrics[("o2ims_certificate_expiry_seconds", (("certificate", role),))]
        assert abs(seconds - expected) < 5, role


def test_sync_lag_replicas_and_redis_commands(core: Core) -> None:
    metrics = core.metrics()
    lags = [
        value for (name, _), value in metrics.items() if name == "o2ims_adapter_sync_lag_seconds"
    ]
    assert len(lags) == 1 and 0 <= lags[0] < 5
    assert metrics[("o2ims_redis_connected_replicas", ())] == 0.0
    evalsha = metrics.get(
        ("o2ims_redis_commands_total", (("command", "evalsha"), ("outcome", "ok")))
    )
    assert evalsha is not None and evalsha >= 1  # the snapshot written through the script
    pings = ("o2ims_redis_commands_total", (("command", "ping"), ("outcome", "ok")))
    first = metrics[pings]
    assert core.get("/readyz").status_code == 200
    assert core.metrics()[pings] >= first + 1


@pytest.mark.parametrize("raw", ["server", "=/x.pem", "server=", "ser ver=/x.pem"])
def test_a_malformed_watched_certificate_list_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match="NETWEAVE_WATCHED_CERTIFICATES"):
        GatewayConfig.from_env({"NETWEAVE_WATCHED_CERTIFICATES": raw})


def test_the_core_records_the_data_version_and_refuses_another_major(
    core: Core, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(core.redis.url)
    try:
        assert client.get(DATA_VERSION_KEY) == DATA_VERSION.encode()
        client.set(DATA_VERSION_KEY, "2.0")
        config = GatewayConfig(
            grpc_host="127.0.0.1",
            grpc_port=0,
            ops_host="127.0.0.1",
            ops_port=0,
            redis_url=core.redis.url,
        )
        with pytest.raises(ValueError, match=r"layout 2\.0"):
            create_server(config)
    finally:
        client.set(DATA_VERSION_KEY, DATA_VERSION)
        client.close()
