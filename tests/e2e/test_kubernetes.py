"""Kubernetes clusters as O2ims inventory, end to end: two simulated clusters (the real
`kubernetes` client in each adapter process against devstack/kubesim, an HTTPS server
speaking the API's list/watch wire protocol), the static adapter, the core, the notifier,
Envoy, Redis. What the simulator holds is the truth the served inventory is compared to.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from google.protobuf.json_format import MessageToDict
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import ObjectKey
from adapters.kubernetes.mapping import (
    deployment_manager_id,
    pool_id,
    resource_id,
    site_id,
)
from devstack.kubesim import KubeApiSimulator, make_node, simulated_cluster
from devstack.kubesim.nodes import quantity_millicores
from devstack.pki import issue_client_certificate
from devstack.processes import wait_until
from devstack.stack import LocalStack, StackConfig, kube_clusters
from server.store import EVENTS_KEY, InventoryStore, connect, decode_event
from tests.notifier.receiver import Receiver

INV = "/o2ims-infrastructureInventory"
ZONE = "topology.kubernetes.io/zone"
EAST, WEST, SOUTH = "kubernetes-east", "kubernetes-west", "kubernetes-south"
# How long south's API server is down (it goes down as the module starts; the other tests run
# meanwhile, and the last one waits out what is left of it).
OUTAGE_S = 60.0
# What "reaches REST within a second" is held to.
PROPAGATION_LIMIT_S = 1.0
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, KubeApiSimulator]]:
    """east: 50 nodes over 3 zones, GPU nodes among them; west: 6 nodes over 2 zones."""
    east = KubeApiSimulator(
        tmp_path_factory.mktemp("kube-east"),
        simulated_cluster(nodes=50, zones=3, region="eu-east", seed=1),
    ).start()
    west = KubeApiSimulator(
        tmp_path_factory.mktemp("kube-west"),
        simulated_cluster(nodes=6, zones=2, region="eu-west", seed=2),
    ).start()
    yield {EAST: east, WEST: west}
    east.stop()
    west.stop()


@pytest.fixture(scope="module")
def south(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiSimulator]:
    """A third cluster, 24 nodes over 3 zones, whose API server is down for a minute."""
    simulator = KubeApiSimulator(
        tmp_path_factory.mktemp("kube-south"),
        simulated_cluster(nodes=24, zones=3, region="eu-south", seed=3),
    ).start()
    yield simulator
    simulator.stop()


def write_admin_kubeconfig(path: Path, simulator: KubeApiSimulator, stack: LocalStack) -> None:
    issued = issue_client_certificate(stack.pki.directory, "cluster-admin", path.parent)
    user = {
        "client-certificate-data": base64.b64encode(issued.cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(issued.key.read_bytes()).decode(),
    }
    server = {"server": simulator.url, "certificate-authority-data": ""}
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "east", "cluster": server}],
        "users": [{"name": "east-admin", "user": user}],
        "contexts": [{"name": "admin", "context": {"cluster": "east", "user": "east-admin"}}],
        "current-context": "admin",
    }
    path.write_text(yaml.safe_dump(document))


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    clusters: dict[str, KubeApiSimulator],
    south: KubeApiSimulator,
    receiver: Receiver,
) -> Iterator[LocalStack]:
    kubeconfig = tmp_path_factory.mktemp("kubeconfig") / "config"
    clusters[EAST].write_kubeconfig(kubeconfig, context="east", merge=True)
    clusters[WEST].write_kubeconfig(kubeconfig, context="west", merge=True)
    south.write_kubeconfig(kubeconfig, context="south", merge=True)
    # east publishes admin credentials (another kubeconfig's client certificate and key).
    admin_kubeconfig = kubeconfig.with_name("admin")
    east, west, south_cluster = kube_clusters([kubeconfig], ["east", "west", "south"], 0)
    east = replace(east, extra_args=("--admin-kubeconfig", str(admin_kubeconfig)))
    config = StackConfig.ephemeral(
        tmp_path_factory.mktemp("stack"),
        kube_clusters=(east, west, south_cluster),
        # Retry a rejected credential every second (production: 30 s) to keep the test short.
        kube_adapter_args=("--auth-retry-interval", "1"),
    )
    running = LocalStack(config)
    write_admin_kubeconfig(admin_kubeconfig, clusters[EAST], running)
    running.start()
    store = InventoryStore(connect(running.redis_url))
    for name, simulator in {**clusters, SOUTH: south}.items():

        def stored(name: str = name, simulator: KubeApiSimulator = simulator) -> bool:
            return converged(store, name, simulator)

        wait_until(stored, timeout=30, what=f"{name} in the store")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def store(stack: LocalStack) -> InventoryStore:
    return InventoryStore(connect(stack.redis_url))


@pytest.fixture(scope="module")
def rest(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=10) as client:
        yield client


# --- the truth and what is served ---------------------------------------------------------


def reasons(stack: LocalStack) -> list[str]:
    """Why /readyz says degraded (empty when it does not)."""
    body: Any = stack.readiness()[1]
    return list(body.get("reasons", []))


def adapter_check(stack: LocalStack, name: str) -> dict[str, Any]:
    body: Any = stack.readiness()[1]
    return dict(body["checks"]["adapters"][name])


def zone_of(node: dict[str, Any]) -> str:
    return str(node["metadata"]["labels"][ZONE])


def owned(store: InventoryStore, adapter: str) -> dict[ObjectKey, domain_pb2.InventoryObject]:
    keys = store.owners().get(adapter, set())
    return {
        key: domain_pb2.InventoryObject.FromString(payload)
        for key, payload in store.read_objects(keys).items()
    }


def served_nodes(store: InventoryStore, adapter: str) -> dict[str, dict[str, Any]]:
    """resourceId -> what the store serves of each node (pool, labels, taints, flags)."""
    served = {}
    for (kind, object_id), obj in owned(store, adapter).items():
        if kind != "resource":
            continue
        extensions = MessageToDict(obj.resource.extensions)
        served[object_id] = {
            "pool": obj.resource.resource_pool_id,
            "labels": extensions["labels"],
            "taints": extensions["taints"],
            "unschedulable": extensions["unschedulable"],
        }
    return served


def truth_nodes(simulator: KubeApiSimulator) -> dict[str, dict[str, Any]]:
    """The same, computed from the simulator's nodes."""
    uid = simulator.cluster_uid
    return {
        resource_id(uid, node["metadata"]["uid"]): {
            "pool": pool_id(uid, ZONE, zone_of(node)),
            "labels": node["metadata"]["labels"],
            "taints": node["spec"].get("taints", []),
            "unschedulable": bool(node["spec"].get("unschedulable", False)),
        }
        for node in simulator.nodes().values()
    }


def converged(store: InventoryStore, adapter: str, simulator: KubeApiSimulator) -> bool:
    return served_nodes(store, adapter) == truth_nodes(simulator)


def event_mark(store: InventoryStore) -> str:
    return store.snapshot().last_event_id


def events_since(store: InventoryStore, mark: str) -> list[tuple[str, str, str]]:
    """(event, kind, id) of every stored change after `mark`."""
    entries: Any = store.client.xrange(EVENTS_KEY, min=f"({mark}") if mark else []
    return [
        (event.event, event.kind, event.object_id)
        for event in (decode_event(entry_id, fields) for entry_id, fields in entries)
    ]


def node_events(store: InventoryStore, mark: str) -> Counter[tuple[str, str]]:
    """(event, resource id) -> how often, for node resources."""
    return Counter(
        (event, object_id)
        for event, kind, object_id in events_since(store, mark)
        if kind == "resource"
    )


def expected_node_events(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> Counter[tuple[str, str]]:
    """The events a change of the truth from `before` to `after` must produce: one per
    resource that changed, none for any other."""
    expected: Counter[tuple[str, str]] = Counter()
    for rid in after.keys() - before.keys():
        expected["create", rid] += 1
    for rid in before.keys() - after.keys():
        expected["delete", rid] += 1
    for rid in before.keys() & after.keys():
        if before[rid] != after[rid]:
            expected["modify", rid] += 1
    return expected


def fetch_all(rest: httpx.Client, path: str) -> list[dict[str, Any]]:
    response = rest.get(path)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()
    return items


def new_node(name: str, zone: str, region: str = "eu-east", **options: Any) -> dict[str, Any]:
    return make_node(name, zone=zone, region=region, uid=str(uuid.uuid4()), **options)


def label(key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(node: dict[str, Any]) -> None:
        node["metadata"]["labels"][key] = value

    return mutate


# --- acceptance -----------------------------------------------------------------------------


def test_a_cluster_of_three_zones_and_fifty_nodes_appears_in_both_majors(
    stack: LocalStack, rest: httpx.Client, clusters: dict[str, KubeApiSimulator]
) -> None:
    east = clusters[EAST]
    uid = east.cluster_uid
    nodes = list(east.nodes().values())
    zones = sorted({zone_of(node) for node in nodes})
    assert len(zones) == 3 and len(nodes) == 50

    for major in ("v1", "v2"):
        pools = {
            pool["resourcePoolId"]: pool for pool in fetch_all(rest, f"{INV}/{major}/resourcePools")
        }
        for zone in zones:
            pid = pool_id(uid, ZONE, zone)
            assert pid in pools, (major, zone)
            resources = fetch_all(rest, f"{INV}/{major}/resourcePools/{pid}/resources")
            in_zone = {node["metadata"]["name"] for node in nodes if zone_of(node) == zone}
            assert {resource["name"] for resource in resources} == in_zone
            for resource in resources:
                names = {element["name"] for element in resource["elements"]}
                assert {f"{resource['name']}/cpu", f"{resource['name']}/memory"} <= names
        if major == "v2":
            sites = {
                site["oCloudSiteId"]: site for site in fetch_all(rest, f"{INV}/v2/oCloudSites")
            }
            for zone in zones:
                assert pools[pool_id(uid, ZONE, zone)]["oCloudSiteId"] == site_id(uid, ZONE, zone)
                assert site_id(uid, ZONE, zone) in sites
            locations = {loc["globalLocationId"] for loc in fetch_all(rest, f"{INV}/v2/locations")}
            assert {
                sites[site_id(uid, ZONE, zone)]["globalLocationId"] for zone in zones
            } <= locations

    # GPU nodes: their elements include the GPUs, and their type is a GPU instance type.
    gpu_nodes = [node for node in nodes if "nvidia.com/gpu" in node["status"]["capacity"]]
    assert gpu_nodes
    gpu = gpu_nodes[0]
    gpu_id = resource_id(uid, gpu["metadata"]["uid"])
    gpu_pool = pool_id(uid, ZONE, zone_of(gpu))
    served = rest.get(f"{INV}/v1/resourcePools/{gpu_pool}/resources/{gpu_id}").json()
    [gpus] = [e for e in served["elements"] if e["name"].endswith("/nvidia.com/gpu")]
    assert gpus["extensions"]["capacity"] == gpu["status"]["capacity"]["nvidia.com/gpu"]
    gpu_type = rest.get(f"{INV}/v1/resourceTypes/{served['resourceTypeId']}").json()
    instance_type = gpu["metadata"]["labels"]["node.kubernetes.io/instance-type"]
    assert instance_type in json.dumps(gpu_type)
    # Identical nodes share a type: fewer types than nodes.
    types = {
        r["resourceTypeId"]
        for zone in zones
        for r in fetch_all(rest, f"{INV}/v1/resourcePools/{pool_id(uid, ZONE, zone)}/resources")
    }
    assert 1 < len(types) < len(nodes)

    # The deployment manager: the API server, capacity summed over the nodes, the profile.
    dm_path = f"{INV}/v1/deploymentManagers/{deployment_manager_id(uid)}"
    manager = rest.get(dm_path, params={"all_fields": ""}).json()
    assert manager["serviceUri"] == east.url
    cpu = sum(quantity_millicores(node["status"]["allocatable"]["cpu"]) for node in nodes)
    assert manager["capacity"]["cpu"] == pytest.approx(cpu / 1000)
    gpus_total = sum(int(node["status"]["allocatable"]["nvidia.com/gpu"]) for node in gpu_nodes)
    assert manager["capacity"]["extendedResources"]["nvidia.com/gpu"] == gpus_total
    assert manager["capacity"]["nodes"]["total"] == len(nodes)
    assert manager["capabilities"]["kubernetesVersion"] == east.git_version
    profiled = rest.get(dm_path, params={"profile": "native_k8sapi"}).json()
    assert profiled["extensions"]["profileData"]["cluster_api_endpoint"] == east.url

    # grpcurl, against the core's internal listener.
    listed = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-d",
            "{}",
            stack.grpc_address,
            "o2ims.inventory.v1.InventoryService/ListResourcePools",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for zone in zones:
        assert pool_id(uid, ZONE, zone) in listed.stdout


def test_admin_credentials_of_the_native_profile_reach_deployers_only(
    stack: LocalStack,
    rest: httpx.Client,
    clusters: dict[str, KubeApiSimulator],
    tmp_path: Path,
) -> None:
    uid = clusters[EAST].cluster_uid
    path = f"{INV}/v1/deploymentManagers/{deployment_manager_id(uid)}"
    callers = {
        name: issue_client_certificate(stack.pki.directory, name, tmp_path)
        for name in ("lab-reader", "deployer-ci")
    }
    seen = {}
    for name, issued in callers.items():
        with httpx.Client(
            base_url=stack.rest_url, verify=stack.client_tls(issued), timeout=10
        ) as client:
            profiled = client.get(path, params={"profile": "native_k8sapi"})
            assert profiled.status_code == 200, profiled.text
            seen[name] = profiled.json()["extensions"]["profileData"]
            plain = client.get(path).json()
            assert "admin_client_key" not in json.dumps(plain)
    assert seen["lab-reader"]["cluster_api_endpoint"] == clusters[EAST].url
    assert "admin_client_key" not in seen["lab-reader"]
    assert seen["deployer-ci"]["admin_user"] == "east-admin"
    assert base64.b64decode(seen["deployer-ci"]["admin_client_cert"]).startswith(
        b"-----BEGIN CERTIFICATE-----"
    )
    assert "admin_client_key" in seen["deployer-ci"]
    # Never in a list, for anyone.
    listed = rest.get(f"{INV}/v1/deploymentManagers").text
    assert "admin_client_key" not in listed


def subscribe(rest: httpx.Client, receiver: Receiver, path: str) -> str:
    response = rest.post(f"{INV}/v1/subscriptions", json={"callback": receiver.url + path})
    assert response.status_code == 201, response.text
    return str(response.json()["subscriptionId"])


def about(receiver: Receiver, path: str, rid: str) -> list[int]:
    """The event types of the notifications `path` received about resource `rid`."""
    return [
        n["notificationEventType"]
        for n in receiver.notifications(path)
        if n["objectRef"].endswith(f"/resources/{rid}")
    ]


def test_node_changes_reach_rest_within_a_second_as_exactly_one_notification_each(
    stack: LocalStack,
    rest: httpx.Client,
    store: InventoryStore,
    clusters: dict[str, KubeApiSimulator],
    receiver: Receiver,
) -> None:
    east = clusters[EAST]
    uid = east.cluster_uid
    path = f"/{uuid.uuid4().hex[:8]}/kube"
    subscription = subscribe(rest, receiver, path)
    zones = sorted({zone_of(node) for node in east.nodes().values()})
    workers = sorted(name for name in east.nodes() if name.startswith("worker-"))

    def resource_path(node: dict[str, Any]) -> str:
        rid = resource_id(uid, node["metadata"]["uid"])
        return f"{INV}/v1/resourcePools/{pool_id(uid, ZONE, zone_of(node))}/resources/{rid}"

    def reaches_rest(change: Callable[[], dict[str, Any]], check: Callable[[Any], bool]) -> float:
        started = time.monotonic()
        node = change()
        wait_until(lambda: check(rest.get(resource_path(node))), 10, "the change on REST")
        return time.monotonic() - started

    latencies = {}
    added = new_node("worker-900", zones[1])
    latencies["added"] = reaches_rest(
        lambda: east.add_node(added), lambda response: response.status_code == 200
    )
    relabelled = east.node(workers[1])
    target = next(zone for zone in zones if zone != zone_of(relabelled))
    latencies["relabelled"] = reaches_rest(
        lambda: east.update_node(workers[1], label(ZONE, target)),
        lambda response: response.status_code == 200,
    )

    def cordon(node: dict[str, Any]) -> None:
        node["spec"]["unschedulable"] = True
        node["spec"]["taints"] = [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
        ]

    latencies["cordoned"] = reaches_rest(
        lambda: east.update_node(workers[2], cordon),
        lambda response: response.json()["extensions"]["unschedulable"] is True,
    )

    def taint(node: dict[str, Any]) -> None:
        node["spec"]["taints"] = [{"key": "dedicated", "value": "ran", "effect": "NoExecute"}]

    latencies["tainted"] = reaches_rest(
        lambda: east.update_node(workers[3], taint),
        lambda response: response.json()["extensions"]["taints"][0]["key"] == "dedicated",
    )
    deleted = east.node(workers[4])

    def delete() -> dict[str, Any]:
        east.delete_node(workers[4])
        return deleted

    latencies["deleted"] = reaches_rest(delete, lambda response: response.status_code == 404)
    # Re-created under the same name: a new node (new uid), so a new resource.
    recreated = new_node(workers[4], zone_of(deleted))
    latencies["re-created"] = reaches_rest(
        lambda: east.add_node(recreated), lambda response: response.status_code == 200
    )
    print("propagation to REST (s):", {k: round(v, 3) for k, v in latencies.items()})
    assert max(latencies.values()) < PROPAGATION_LIMIT_S, latencies

    expected = {
        resource_id(uid, added["metadata"]["uid"]): [0],
        resource_id(uid, relabelled["metadata"]["uid"]): [1],
        resource_id(uid, east.node(workers[2])["metadata"]["uid"]): [1],
        resource_id(uid, east.node(workers[3])["metadata"]["uid"]): [1],
        resource_id(uid, deleted["metadata"]["uid"]): [2],
        resource_id(uid, recreated["metadata"]["uid"]): [0],
    }
    wait_until(
        lambda: all(len(about(receiver, path, rid)) >= 1 for rid in expected),
        20,
        "every notification",
    )
    time.sleep(1.0)  # room for a duplicate to show up
    assert {rid: about(receiver, path, rid) for rid in expected} == expected
    [moved] = [
        n
        for n in receiver.notifications(path)
        if n["objectRef"].endswith(resource_id(uid, relabelled["metadata"]["uid"]))
    ]
    assert moved["priorObjectState"]["resourcePoolId"] == pool_id(uid, ZONE, zone_of(relabelled))
    assert moved["postObjectState"]["resourcePoolId"] == pool_id(uid, ZONE, target)
    assert rest.delete(f"{INV}/v1/subscriptions/{subscription}").status_code == 200


def test_ten_minutes_of_heartbeats_produce_no_event_and_no_notification(
    stack: LocalStack,
    rest: httpx.Client,
    store: InventoryStore,
    clusters: dict[str, KubeApiSimulator],
    receiver: Receiver,
) -> None:
    """Every node's kubelet posts its status every 10 s: 60 rounds are ten minutes of it,
    sent as fast as the simulator goes (the adapter sees the same events, only sooner)."""
    path = f"/{uuid.uuid4().hex[:8]}/heartbeats"
    subscription = subscribe(rest, receiver, path)
    mark = event_mark(store)
    start = datetime.now(UTC)
    sent = 0
    for round_number in range(1, 61):
        at = start + timedelta(seconds=10 * round_number)
        for simulator in clusters.values():
            sent += simulator.heartbeat(at=at)
    assert sent == 60 * sum(len(simulator.nodes()) for simulator in clusters.values())
    # A real change after them: once it is served, every heartbeat before it was seen
    # (one watch stream delivers events in order).
    east = clusters[EAST]
    sentinel = sorted(name for name in east.nodes() if name.startswith("worker-"))[10]
    east.update_node(sentinel, label("netweave.test/sentinel", path.strip("/").split("/")[0]))
    wait_until(lambda: converged(store, EAST, east), 30, "the sentinel change")
    rid = resource_id(east.cluster_uid, east.node(sentinel)["metadata"]["uid"])
    assert events_since(store, mark) == [("modify", "resource", rid)]
    wait_until(lambda: bool(receiver.notifications(path)), 20, "the sentinel's notification")
    time.sleep(1.0)
    assert [n["objectRef"].rsplit("/", 1)[-1] for n in receiver.notifications(path)] == [rid]
    assert rest.delete(f"{INV}/v1/subscriptions/{subscription}").status_code == 200


def mutate_during_fault(simulator: KubeApiSimulator, tag: str) -> None:
    """What happens to the cluster while the adapter cannot see it: a node joins, one
    moves zone, one is cordoned, one leaves."""
    nodes = simulator.nodes()
    workers = sorted(name for name in nodes if name.startswith("worker-"))
    zones = sorted({zone_of(node) for node in nodes.values()})
    # Nodes no earlier test touched (each fault takes the next three).
    first = 15 + 3 * (int(tag) // 10 % 10)
    moving, cordoned, leaving = workers[first : first + 3]
    simulator.add_node(new_node(f"worker-{tag}", zones[0]))
    simulator.update_node(
        moving, label(ZONE, next(z for z in zones if z != zone_of(nodes[moving])))
    )
    simulator.update_node(cordoned, lambda node: node["spec"].update(unschedulable=True))
    simulator.delete_node(leaving)


def assert_converges_exactly(
    store: InventoryStore,
    simulator: KubeApiSimulator,
    mark: str,
    before: dict[str, dict[str, Any]],
) -> None:
    wait_until(lambda: converged(store, EAST, simulator), 60, "the inventory converged")
    time.sleep(1.0)  # room for a duplicate or a spurious event to show up
    assert converged(store, EAST, simulator)
    expected = expected_node_events(before, truth_nodes(simulator))
    assert len(expected) == 4
    assert node_events(store, mark) == expected


@pytest.mark.parametrize("fault", ["410 gone", "cut stream", "expired credentials"])
def test_watch_faults_converge_with_no_duplicate_lost_or_spurious_event(
    stack: LocalStack,
    store: InventoryStore,
    clusters: dict[str, KubeApiSimulator],
    fault: str,
) -> None:
    east = clusters[EAST]
    wait_until(lambda: converged(store, EAST, east), 30, "a converged start")
    before, mark = truth_nodes(east), event_mark(store)
    tag = {"410 gone": "910", "cut stream": "920", "expired credentials": "930"}[fault]
    if fault == "410 gone":
        # Changes the adapter does not see, then history compacted past its resourceVersion:
        # its next watch gets 410 Gone and it must relist.
        east.stop()
        mutate_during_fault(east, tag)
        east.compact()
        lists = east.list_calls
        east.start()
        assert_converges_exactly(store, east, mark, before)
        assert east.list_calls > lists
    elif fault == "cut stream":
        east.cut_watches()
        mutate_during_fault(east, tag)
        assert_converges_exactly(store, east, mark, before)
    else:
        east.set_token("sim-token", "expired")
        east.cut_watches()
        wait_until(
            lambda: any(EAST in reason and "401" in reason for reason in reasons(stack)),
            15,
            "/readyz naming the rejected credential",
        )
        mutate_during_fault(east, tag)
        east.set_token("sim-token", "valid")
        assert_converges_exactly(store, east, mark, before)
        wait_until(
            lambda: not any(EAST in r for r in reasons(stack)),
            15,
            "/readyz clear again",
        )


def test_two_clusters_and_the_static_adapter_survive_a_killed_adapter(
    stack: LocalStack,
    rest: httpx.Client,
    store: InventoryStore,
    clusters: dict[str, KubeApiSimulator],
) -> None:
    west = clusters[WEST]
    owners = store.owners()
    assert {"static", EAST, WEST} <= set(owners)
    west_pools = {pool_id(west.cluster_uid, ZONE, zone_of(n)) for n in west.nodes().values()}
    mark = event_mark(store)
    served_before = owned(store, WEST)

    [index] = [i for i, c in enumerate(stack.config.kube_clusters) if c.name == WEST]
    stack.kube_adapters[index].kill()  # SIGKILL, as a crash would
    wait_until(
        lambda: (
            stack.readiness()[1]["status"] == "degraded"
            and any(WEST in reason for reason in reasons(stack))
        ),
        15,
        "/readyz degraded, naming the adapter",
    )
    status, _ = stack.readiness()
    assert status == 200  # still ready: its last snapshot is served
    pools = {pool["resourcePoolId"] for pool in fetch_all(rest, f"{INV}/v1/resourcePools")}
    assert west_pools <= pools
    assert owned(store, WEST) == served_before

    stack.restart_kube_adapter(index)
    wait_until(
        lambda: adapter_check(stack, WEST)["ok"],
        30,
        "the adapter back and synced",
    )
    time.sleep(1.0)
    assert owned(store, WEST) == served_before
    assert events_since(store, mark) == []


@dataclass
class Outage:
    """South's API server, down since `since`; a sampler checks every second that its last
    snapshot stays served."""

    since: float
    before: dict[str, dict[str, Any]]
    mark: str
    samples: int = 0
    changed: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def sample(self, store: InventoryStore) -> None:
        while not self.done.wait(1.0):
            served = served_nodes(store, SOUTH)
            self.samples += 1
            if served != self.before:
                self.changed.append(f"after {time.monotonic() - self.since:.1f} s")


@pytest.fixture(scope="module", autouse=True)
def south_outage(
    stack: LocalStack, store: InventoryStore, south: KubeApiSimulator
) -> Iterator[Outage]:
    """Takes south's API server down as the module starts (and changes the cluster behind
    the adapter's back), so its minute passes while the other tests run."""
    wait_until(lambda: converged(store, SOUTH, south), 30, "south converged")
    outage = Outage(time.monotonic(), truth_nodes(south), event_mark(store))
    south.stop()
    mutate_during_fault(south, "900")
    wait_until(
        lambda: any(SOUTH in r for r in reasons(stack)),
        15,
        "/readyz naming the unreachable API server",
    )
    sampler = threading.Thread(target=outage.sample, args=(store,), daemon=True)
    sampler.start()
    yield outage
    outage.done.set()
    sampler.join()


def test_an_api_server_down_for_a_minute(
    stack: LocalStack, store: InventoryStore, south: KubeApiSimulator, south_outage: Outage
) -> None:
    """Last in the module: what is left of the minute, then the API server returns."""
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - south_outage.since)))
    south_outage.done.set()
    # Its last snapshot was served all along, and /readyz still names it.
    assert south_outage.samples >= OUTAGE_S / 2
    assert south_outage.changed == []
    assert served_nodes(store, SOUTH) == south_outage.before
    assert any(SOUTH in r for r in reasons(stack))
    south.start()
    wait_until(lambda: converged(store, SOUTH, south), 60, "south converged again")
    time.sleep(1.0)  # room for a duplicate or a spurious event to show up
    after = truth_nodes(south)
    expected = expected_node_events(south_outage.before, after)
    assert len(expected) == 4
    ids = set(south_outage.before) | set(after)
    events = node_events(store, south_outage.mark)
    seen = Counter({key: count for key, count in events.items() if key[1] in ids})
    assert seen == expected
    wait_until(lambda: not any(SOUTH in r for r in reasons(stack)), 15, "/readyz clear again")
