"""Several core replicas behind one Envoy: idempotent reads (GET rules, Get*/List* methods)
are retried on another replica when one answers UNAVAILABLE or fails without answering;
writes are never retried. The rendered policy, then the behaviour with a real Envoy in front
of two core doubles, one of which fails every call."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from devstack.pki import DevPki
from devstack.processes import wait_until
from netweave.grpc_server import add_health_and_reflection, new_server, set_serving
from rest_facade.envoy_config import core_detection_s, render, write
from rest_facade.envoy_process import RunningEnvoy, validate
from rest_facade.http_rules import read_rules

from .support import INVENTORY_SERVICE, FakeInventory, envoy_config, launch_envoy, rest_client
from .widgets import WIDGET_SERVICE, WIDGETS, WidgetStore

POOLS = "/o2ims-infrastructureInventory/v1/resourcePools"


def core_routes(rendered: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The routes to the core by name (`grpc:/pkg.Service/Method` for a method)."""
    listener = rendered["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][-1]["typed_config"]
    [host] = manager["route_config"]["virtual_hosts"]
    return {route["name"]: route for route in host["routes"] if "route" in route}


def core_cluster(rendered: dict[str, Any]) -> dict[str, Any]:
    [cluster] = [c for c in rendered["static_resources"]["clusters"] if c["name"] == "o2ims_core"]
    return dict(cluster)


# --- the rendered configuration ---------------------------------------------------------------


def test_reads_retry_on_another_replica_and_writes_never_retry(
    pki: DevPki, edge_descriptor: Path
) -> None:
    rendered = yaml.safe_load(render(envoy_config(pki, 50051, descriptor_path=edge_descriptor)))
    routes = core_routes(rendered)
    methods = {f"grpc:{rule.grpc_path}": rule for rule in read_rules(edge_descriptor)}
    reads = [name for name, rule in methods.items() if rule.http_method == "GET"]
    writes = [
        name
        for name, rule in methods.items()
        if rule.http_method in {"POST", "PATCH", "PUT", "DELETE"}
        and not rule.method.startswith(("Get", "List"))
    ]
    assert f"grpc:/{INVENTORY_SERVICE}/ListResourcePools" in reads
    assert f"grpc:/{WIDGET_SERVICE}/CreateWidget" in writes
    assert f"grpc:/{WIDGET_SERVICE}/DeleteWidget" in writes
    assert f"grpc:/{WIDGET_SERVICE}/UpdateWidget" in writes
    for name in reads:
        policy = routes[name]["route"]["retry_policy"]
        assert set(policy["retry_on"].split(",")) == {
            "connect-failure",
            "refused-stream",
            "reset",
            "unavailable",
            "retriable-status-codes",
        }
        assert policy["retriable_status_codes"] == [503]
        assert policy["num_retries"] == 2
        # Every try fits in the route's timeout.
        per_try = float(policy["per_try_timeout"].removesuffix("s"))
        timeout = float(routes[name]["route"]["timeout"].removesuffix("s"))
        assert per_try * (policy["num_retries"] + 1) <= timeout
        [predicate] = policy["retry_host_predicate"]
        assert predicate["name"] == "envoy.retry_host_predicates.previous_hosts"
    for name in writes:
        assert "retry_policy" not in routes[name]["route"], name
    # Methods without HTTP rules (the service's prefix route) are not known to be reads.
    for name, route in routes.items():
        if name.startswith("grpc:") and name.count("/") == 0:
            assert "retry_policy" not in route["route"]


def test_several_core_endpoints_and_a_fast_health_check_render_and_validate(
    pki: DevPki, tmp_path: Path
) -> None:
    config = envoy_config(
        pki,
        50051,
        core_endpoints=(("127.0.0.1", 50051), ("core-b.o2ims-system.svc", 50052)),
        core_health_interval_s=0.5,
        core_unhealthy_threshold=3,
        core_health_timeout_s=0.25,
    )
    rendered = yaml.safe_load(render(config))
    cluster = core_cluster(rendered)
    addresses = [
        endpoint["endpoint"]["address"]["socket_address"]
        for endpoint in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert addresses == [
        {"address": "127.0.0.1", "port_value": 50051},
        {"address": "core-b.o2ims-system.svc", "port_value": 50052},
    ]
    [check] = cluster["health_checks"]
    assert (check["interval"], check["timeout"], check["unhealthy_threshold"]) == (
        "0.5s",
        "0.25s",
        3,
    )
    assert core_detection_s(config) == pytest.approx(1.75)
    validate(write(config, tmp_path / "envoy.yaml"))


def test_the_defaults_keep_one_core_and_a_five_second_check(pki: DevPki) -> None:
    config = envoy_config(pki, 50051, core_host="core.o2ims-system.svc")
    cluster = core_cluster(yaml.safe_load(render(config)))
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "core.o2ims-system.svc",
        "port_value": 50051,
    }
    [check] = cluster["health_checks"]
    assert (check["interval"], check["timeout"], check["unhealthy_threshold"]) == ("5s", "1s", 2)
    # What NETWEAVE_SHUTDOWN_DRAIN_SECONDS (default 15) must exceed.
    assert core_detection_s(config) == 11


def test_a_bad_core_endpoint_is_refused(pki: DevPki) -> None:
    with pytest.raises(ValueError, match="core endpoint"):
        envoy_config(pki, 50051, core_endpoints=(("127.0.0.1", 0),))


# --- behaviour: a real Envoy, two core doubles ---------------------------------------------


class UnavailableGate(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts the API calls a core double receives; while `failing`, answers each one
    UNAVAILABLE (what a core without Redis, or a proxy's refused stream, looks like)."""

    def __init__(self) -> None:
        self.failing = False
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method = details.method
        if method.startswith("/grpc.health"):
            return continuation(details)
        with self._lock:
            self.calls[method.rsplit("/", 1)[1]] += 1
        if not self.failing:
            return continuation(details)

        def unavailable(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this replica is going away")

        return grpc.unary_unary_rpc_method_handler(unavailable)


@dataclass
class Replica:
    gate: UnavailableGate
    widgets: WidgetStore
    server: grpc.Server
    port: int


def start_replica(descriptor: Path) -> Replica:
    gate = UnavailableGate()
    widgets = WidgetStore(descriptor)
    server = new_server(8, [gate])
    v1_grpc.add_InventoryServiceServicer_to_server(FakeInventory(), server)  # type: ignore[abstract]
    server.add_generic_rpc_handlers((widgets.handler(),))
    health = add_health_and_reflection(server, [INVENTORY_SERVICE], with_reflection=False)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    set_serving(health, [INVENTORY_SERVICE], True)
    return Replica(gate, widgets, server, port)


@pytest.fixture(scope="module")
def replicas(edge_descriptor: Path) -> Iterator[tuple[Replica, Replica]]:
    started = (start_replica(edge_descriptor), start_replica(edge_descriptor))
    yield started
    for replica in started:
        replica.server.stop(None)


@pytest.fixture(scope="module")
def two_core_envoy(
    tmp_path_factory: pytest.TempPathFactory,
    pki: DevPki,
    edge_descriptor: Path,
    replicas: tuple[Replica, Replica],
) -> Iterator[RunningEnvoy]:
    config = envoy_config(
        pki,
        replicas[0].port,
        descriptor_path=edge_descriptor,
        core_endpoints=tuple(("127.0.0.1", replica.port) for replica in replicas),
        core_health_interval_s=0.5,
    )
    running = launch_envoy(config, tmp_path_factory.mktemp("two-core-envoy"))
    # Both replicas healthy (their checks passed): round robin takes turns between them.
    wait_until(
        lambda: running.admin_get("/clusters").count("::health_flags::healthy") >= 2,
        10,
        "Envoy to see both cores healthy",
    )
    yield running
    running.stop()


@pytest.fixture
def failing_first(replicas: tuple[Replica, Replica]) -> Iterator[tuple[Replica, Replica]]:
    for replica in replicas:
        replica.gate.calls.clear()
        replica.widgets.reset()
    replicas[0].gate.failing = True
    yield replicas
    replicas[0].gate.failing = False


def test_rest_and_grpc_reads_are_retried_on_the_other_replica(
    two_core_envoy: RunningEnvoy, pki: DevPki, failing_first: tuple[Replica, Replica]
) -> None:
    failing, healthy = failing_first
    with rest_client(two_core_envoy, pki) as rest:
        statuses = [rest.get(POOLS).status_code for _ in range(20)]
        pool = pool_id(rest)
        statuses += [rest.get(f"{POOLS}/{pool}").status_code for _ in range(10)]
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    with grpc.secure_channel(f"localhost:{two_core_envoy.listener_port}", credentials) as channel:
        stub = v1_grpc.InventoryServiceStub(channel)
        for _ in range(10):
            stub.ListResourcePools(v1.ListResourcePoolsRequest(), timeout=5)

    assert set(statuses) == {200}
    # Round robin sent about half of them to the failing replica first: each was retried.
    assert failing.gate.calls["ListResourcePools"] >= 5
    assert failing.gate.calls["GetResourcePool"] >= 2
    # Every read answered by the healthy one: 20 REST lists, pool_id's, 10 gRPC lists.
    assert healthy.gate.calls["ListResourcePools"] == 20 + 1 + 10
    assert healthy.gate.calls["GetResourcePool"] == 10


def pool_id(rest: Any) -> str:
    response = rest.get(POOLS)
    assert response.status_code == 200
    return str(response.json()[0]["resourcePoolId"])


def test_writes_are_not_retried(
    two_core_envoy: RunningEnvoy, pki: DevPki, failing_first: tuple[Replica, Replica]
) -> None:
    failing, healthy = failing_first
    with rest_client(two_core_envoy, pki) as rest:
        statuses = [rest.post(WIDGETS, json={"name": f"w{n}"}).status_code for n in range(20)]

    refused = failing.gate.calls["CreateWidget"]
    created = healthy.gate.calls["CreateWidget"]
    # Each POST reached exactly one replica once: the failing one's answer stands.
    assert refused + created == 20
    assert refused >= 5
    assert statuses.count(201) == created == len(healthy.widgets.widgets)
    assert statuses.count(503) == refused
