"""The Kubernetes adapter against the API simulator, with the real client, watched over gRPC.

After every change and every fault the adapter's set must equal the mapping of the
simulator's truth, and the events a watcher received must be exactly the difference
between the two truths: nothing lost, duplicated or spurious.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc, domain_pb2

from adapters.contract import ObjectKey, object_key, serialize
from adapters.kubernetes.adapter import KubernetesAdapter
from adapters.kubernetes.alarms import node_alarm_id
from adapters.kubernetes.cluster import KubeTarget, connect
from adapters.kubernetes.inventory import Inventory
from adapters.kubernetes.mapping import ClusterIdentity, node_view
from adapters.kubernetes.mapping_file import MappingConfig
from adapters.publisher import (
    PROBLEMS_METADATA_KEY,
    AdapterServicer,
    ObjectSetPublisher,
    create_adapter_server,
    decode_problems,
)
from devstack.kubesim.nodes import make_node, simulated_cluster
from devstack.kubesim.server import KubeApiSimulator
from devstack.processes import ManagedProcess, free_port, metric_sum, wait_until
from netweave.backoff import Backoff

ADDED = adapter_pb2.EVENT_TYPE_ADDED
MODIFIED = adapter_pb2.EVENT_TYPE_MODIFIED
DELETED = adapter_pb2.EVENT_TYPE_DELETED
SYNCED = adapter_pb2.EVENT_TYPE_SYNCED
COMMIT = adapter_pb2.EVENT_TYPE_COMMIT
CONFIG = MappingConfig()
NAME = "kubernetes-sim"
REPO_ROOT = Path(__file__).resolve().parents[3]

State = dict[ObjectKey, bytes]


class Watcher:
    """Follows WatchObjects with replay, applying each change set at its COMMIT."""

    def __init__(self, stub: adapter_pb2_grpc.AdapterServiceStub) -> None:
        self._call = stub.WatchObjects(adapter_pb2.WatchObjectsRequest(send_initial_objects=True))
        self._lock = threading.Lock()
        self._state: State = {}
        self._committed: list[tuple[int, ObjectKey]] = []
        self.synced = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        pending: list[adapter_pb2.WatchObjectsResponse] = []
        try:
            for event in self._call:
                with self._lock:
                    if event.type == SYNCED:
                        assert event.commits_change_sets
                        self.synced.set()
                    elif not self.synced.is_set():
                        assert event.type == ADDED
                        self._state[object_key(event.object)] = serialize(event.object)
                    elif event.type == COMMIT:
                        for change in pending:
                            key = object_key(change.object)
                            if change.type == DELETED:
                                del self._state[key]
                            else:
                                assert (key in self._state) == (change.type == MODIFIED)
                                self._state[key] = serialize(change.object)
                            self._committed.append((change.type, key))
                        pending = []
                    else:
                        pending.append(event)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.CANCELLED, error

    def state(self) -> State:
        with self._lock:
            return dict(self._state)

    def take(self) -> Counter[tuple[int, ObjectKey]]:
        """The committed events since the last take()."""
        with self._lock:
            taken, self._committed = self._committed, []
        return Counter(taken)

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)


def truth(sim: KubeApiSimulator) -> State:
    """What the adapter must serve for the simulator's nodes, mapped from scratch."""
    identity = ClusterIdentity(
        uid=sim.cluster_uid,
        name="sim",
        version=sim.git_version,
        api_url=sim.url,
        ca_cert=base64.b64encode(sim.ca_pem).decode(),
    )
    inventory = Inventory(CONFIG, NAME)
    inventory.reset(identity)
    inventory.apply(
        {name: node_view(node, CONFIG, identity.name) for name, node in sim.nodes().items()}
    )
    return {object_key(obj): serialize(obj) for obj in inventory.objects()}


def difference(before: State, after: State) -> Counter[tuple[int, ObjectKey]]:
    events: Counter[tuple[int, ObjectKey]] = Counter()
    for key, data in after.items():
        if key not in before:
            events[ADDED, key] += 1
        elif before[key] != data:
            events[MODIFIED, key] += 1
    for key in before.keys() - after.keys():
        events[DELETED, key] += 1
    return events


@dataclass
class Harness:
    sim: KubeApiSimulator
    publisher: ObjectSetPublisher
    stub: adapter_pb2_grpc.AdapterServiceStub
    watcher: Watcher
    expected: State

    def settle(self, what: str) -> Counter[tuple[int, ObjectKey]]:
        """Wait until the watcher holds the simulator's truth; assert the events since the
        last settle are exactly the difference; returns them."""
        after = truth(self.sim)
        wait_until(lambda: self.watcher.state() == after, 10, f"the adapter to show {what}")
        events = self.watcher.take()
        assert events == difference(self.expected, after), what
        self.expected = after
        listed = self.stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5)
        assert {object_key(obj): serialize(obj) for obj in listed.objects} == after
        return events

    def problems(self) -> list[str]:
        return problems_of(self.stub)


def problems_of(stub: adapter_pb2_grpc.AdapterServiceStub) -> list[str]:
    """The adapter's problems, as the core reads them (GetAdapterInfo's trailer)."""
    _, call = stub.GetAdapterInfo.with_call(adapter_pb2.GetAdapterInfoRequest(), timeout=5)
    for key, value in call.trailing_metadata() or ():
        if key == PROBLEMS_METADATA_KEY:
            return decode_problems(value)
    return []


@dataclass
class Served:
    """An adapter in this process, served over gRPC on a free port."""

    adapter: KubernetesAdapter
    publisher: ObjectSetPublisher
    stub: adapter_pb2_grpc.AdapterServiceStub
    server: grpc.Server
    channel: grpc.Channel

    def close(self) -> None:
        self.adapter.stop()
        self.publisher.close()
        self.server.stop(grace=None)
        self.channel.close()


def serve(kubeconfig: Path) -> Served:
    publisher = ObjectSetPublisher()
    target = KubeTarget(kubeconfig)
    adapter = KubernetesAdapter(
        lambda: connect(target),
        CONFIG,
        publisher,
        NAME,
        reflector_options={
            "auth_retry_interval": 0.3,
            "backoff": Backoff(initial=0.05, maximum=0.3),
        },
    )
    servicer = AdapterServicer(NAME, "kubernetes", str(kubeconfig), publisher)
    server, port = create_adapter_server(servicer)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    adapter.start()
    return Served(adapter, publisher, adapter_pb2_grpc.AdapterServiceStub(channel), server, channel)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    sim = KubeApiSimulator(tmp_path / "sim", simulated_cluster(nodes=50), bookmark_interval=0.5)
    sim.start()
    served = serve(sim.write_kubeconfig(tmp_path / "kubeconfig"))
    watcher: Watcher | None = None
    try:
        assert served.adapter.synced.wait(20), "the first list was never published"
        watcher = Watcher(served.stub)
        assert watcher.synced.wait(10)
        yield Harness(sim, served.publisher, served.stub, watcher, truth(sim))
    finally:
        if watcher is not None:
            watcher.close()
        served.close()
        sim.stop()


def test_nothing_is_listed_or_watched_before_the_first_list(tmp_path: Path) -> None:
    sim = KubeApiSimulator(tmp_path / "sim", simulated_cluster(nodes=5)).start()
    kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig")
    sim.stop()
    served = serve(kubeconfig)
    try:
        stub = served.stub
        wait_until(
            lambda: any("unreachable since" in p for p in problems_of(stub)),
            10,
            "the unreachable cluster to be reported",
        )

        def list_objects() -> object:
            return stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5)

        def watch_objects() -> object:
            request = adapter_pb2.WatchObjectsRequest(send_initial_objects=True)
            return next(iter(stub.WatchObjects(request, timeout=5)))

        for call in (list_objects, watch_objects):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "has not read its source yet" in str(refused.value.details())
        sim.start()
        assert served.adapter.synced.wait(10)
        listed = stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5)
        assert {object_key(obj): serialize(obj) for obj in listed.objects} == truth(sim)
        wait_until(lambda: problems_of(stub) == [], 5, "the problem to clear")
    finally:
        served.close()
        sim.stop()


def keys_of(events: Counter[tuple[int, ObjectKey]], event_type: int, kind: str) -> int:
    return sum(
        n for (kind_of, key), n in events.items() if kind_of == event_type and key[0] == kind
    )


def test_the_first_list_publishes_the_mapped_cluster(harness: Harness) -> None:
    state = harness.watcher.state()
    assert state == harness.expected
    assert Counter(key[0] for key in state) == {
        "resource": 50,
        "resource_type": 10,
        "site": 3,
        "resource_pool": 3,
        "location": 1,
        "deployment_manager": 1,
        "alarm_dictionary": 1,  # and no alarm: every simulated node is healthy
    }
    assert harness.problems() == []
    assert harness.publisher.revision == "1"  # one change set for the whole list


def test_node_changes_produce_exactly_their_events(harness: Harness) -> None:
    sim = harness.sim
    sim.add_node(make_node("worker-new", zone="region-1-z"))
    events = harness.settle("a node added in a new zone")
    assert keys_of(events, ADDED, "resource") == 1
    assert keys_of(events, ADDED, "resource_pool") == keys_of(events, ADDED, "site") == 1

    def relabel(node: dict[str, Any]) -> None:
        node["metadata"]["labels"]["topology.kubernetes.io/zone"] = "region-1-a"

    sim.update_node("worker-new", relabel)
    events = harness.settle("the node relabelled into another zone")
    assert keys_of(events, MODIFIED, "resource") == 1
    assert keys_of(events, DELETED, "resource_pool") == keys_of(events, DELETED, "site") == 1

    def taint(node: dict[str, Any]) -> None:
        node["spec"]["taints"] = [{"key": "maintenance", "effect": "NoSchedule"}]
        node["spec"]["unschedulable"] = True

    sim.update_node("worker-001", taint)
    events = harness.settle("a node tainted and cordoned")
    assert keys_of(events, MODIFIED, "resource") == 1
    assert keys_of(events, MODIFIED, "deployment_manager") == 1  # schedulable count

    sim.delete_node("worker-new")
    events = harness.settle("a node deleted")
    assert keys_of(events, DELETED, "resource") == 1


def test_heartbeats_of_every_node_change_nothing(harness: Harness) -> None:
    revision = harness.publisher.revision
    start = datetime.now(UTC)
    for round_number in range(1, 61):  # ten simulated minutes of 10 s heartbeats
        assert harness.sim.heartbeat(at=start + timedelta(seconds=10 * round_number)) == 50

    def sentinel(node: dict[str, Any]) -> None:
        node["metadata"]["labels"]["netweave.test/sentinel"] = "1"

    # Events arrive in order: once the sentinel is seen, every heartbeat was handled.
    harness.sim.update_node("worker-002", sentinel)
    events = harness.settle("the sentinel label after 3,000 heartbeats")
    assert sum(events.values()) == keys_of(events, MODIFIED, "resource") == 1
    assert int(harness.publisher.revision) == int(revision) + 1


def _set_condition(
    condition_type: str, status: str, since: datetime
) -> Callable[[dict[str, Any]], None]:
    """An update_node mutation: the node's `condition_type` condition := `status`."""

    def mutate(node: dict[str, Any]) -> None:
        conditions = node["status"]["conditions"]
        found = [condition for condition in conditions if condition["type"] == condition_type]
        condition = found[0] if found else {"type": condition_type}
        if not found:
            conditions.append(condition)
        condition.update(
            status=status,
            reason=f"Test{condition_type}{status}",
            message=f"{condition_type} is {status}",
            lastTransitionTime=since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            lastHeartbeatTime=since.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    return mutate


def alarms_served(stub: adapter_pb2_grpc.AdapterServiceStub) -> dict[str, domain_pb2.ActiveAlarm]:
    """The adapter's active alarms by id, as a ListObjects client reads them."""
    listed = stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5)
    return {obj.alarm.alarm_id: obj.alarm for obj in listed.objects if obj.HasField("alarm")}


def test_node_conditions_raise_alarms_that_recovery_or_deletion_clears(harness: Harness) -> None:
    sim, stub = harness.sim, harness.stub
    node = sim.node("worker-003")
    (resource,) = [
        obj.resource
        for obj in stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5).objects
        if obj.resource.name == "worker-003"
    ]
    went_down = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    sim.update_node("worker-003", _set_condition("Ready", "False", went_down))
    events = harness.settle("worker-003 not ready")
    assert keys_of(events, ADDED, "alarm") == 1
    assert keys_of(events, MODIFIED, "resource") == 1
    (alarm,) = alarms_served(stub).values()
    assert (alarm.resource_id, alarm.resource_type_id) == (
        resource.resource_id,
        resource.resource_type_id,
    )
    assert alarm.perceived_severity == domain_pb2.ALARM_SEVERITY_CRITICAL
    assert alarm.raised_time == "2026-12-01T08:30:00Z"
    assert alarm.extensions["nodeName"] == "worker-003"
    assert alarm.extensions["reason"] == "TestReadyFalse"
    assert alarm.extensions["clusterName"] == "sim"
    assert alarm.alarm_id == node_alarm_id(
        sim.cluster_uid, node["metadata"]["uid"], "Ready", "False"
    )
    (dictionary,) = [
        obj.alarm_dictionary
        for obj in stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5).objects
        if obj.HasField("alarm_dictionary")
    ]
    assert alarm.alarm_definition_id in {
        definition.alarm_definition_id for definition in dictionary.alarm_definition
    }

    # Heartbeats of the failing node (and every other) raise and change nothing.
    revision = harness.publisher.revision
    for round_number in range(1, 7):
        sim.heartbeat(at=went_down + timedelta(seconds=10 * round_number))
    sim.update_node("worker-004", lambda n: n["metadata"]["labels"].update(sentinel="1"))
    events = harness.settle("the sentinel after heartbeats of a not-ready node")
    assert sum(events.values()) == keys_of(events, MODIFIED, "resource") == 1
    assert int(harness.publisher.revision) == int(revision) + 1
    assert alarms_served(stub) == {alarm.alarm_id: alarm}

    sim.update_node("worker-003", _set_condition("Ready", "True", went_down + timedelta(minutes=5)))
    events = harness.settle("worker-003 ready again")
    assert keys_of(events, DELETED, "alarm") == 1
    assert alarms_served(stub) == {}

    sim.update_node("worker-005", _set_condition("NetworkUnavailable", "True", went_down))
    sim.update_node("worker-005", _set_condition("DiskPressure", "True", went_down))
    events = harness.settle("worker-005 without a network, then out of disk")
    assert keys_of(events, ADDED, "alarm") == 2
    sim.delete_node("worker-005")
    events = harness.settle("worker-005 deleted")
    assert keys_of(events, DELETED, "alarm") == 2
    assert keys_of(events, DELETED, "resource") == 1
    assert alarms_served(stub) == {}


def test_an_expired_history_relists_and_reconciles(harness: Harness) -> None:
    sim = harness.sim
    lists = sim.list_calls
    sim.stop()
    sim.delete_node("worker-010")
    sim.add_node(make_node("worker-late", zone="region-1-b"))
    sim.update_node("worker-011", lambda node: node["spec"].update(unschedulable=True))
    sim.compact()
    sim.start()
    events = harness.settle("the changes made while the history was lost")
    assert keys_of(events, DELETED, "resource") == keys_of(events, ADDED, "resource") == 1
    assert keys_of(events, MODIFIED, "resource") == 1
    assert sim.list_calls > lists
    wait_until(lambda: harness.problems() == [], 5, "the relist problem to clear")


def test_a_cut_watch_resumes_from_its_resource_version(harness: Harness) -> None:
    sim = harness.sim
    lists, watches = sim.list_calls, sim.watch_calls
    assert sim.cut_watches() == 1
    sim.update_node("worker-020", lambda node: node["metadata"]["labels"].update(cut="1"))
    harness.settle("a change made while the watch was cut")
    assert sim.list_calls == lists  # resumed, not relisted
    assert sim.watch_calls > watches


def test_an_api_server_outage_is_reported_and_survived(harness: Harness) -> None:
    sim = harness.sim
    sim.stop()
    wait_until(
        lambda: any("unreachable since" in problem for problem in harness.problems()),
        10,
        "the outage to be reported",
    )
    # The last inventory stays in service meanwhile.
    listed = harness.stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5)
    assert {object_key(obj): serialize(obj) for obj in listed.objects} == harness.expected
    sim.delete_node("worker-030")
    sim.start()
    harness.settle("a node deleted during the outage")
    wait_until(lambda: harness.problems() == [], 5, "the outage problem to clear")


def test_rejected_credentials_are_reported_then_recovered(harness: Harness) -> None:
    sim = harness.sim
    sim.set_token("sim-token", "expired")
    sim.cut_watches()
    wait_until(
        lambda: any("rejected" in problem and "401" in problem for problem in harness.problems()),
        10,
        "the rejected credentials to be reported",
    )
    sim.update_node("worker-040", lambda node: node["metadata"]["labels"].update(auth="1"))
    sim.set_token("sim-token", "valid")
    harness.settle("a change made while the credentials were rejected")
    wait_until(lambda: harness.problems() == [], 5, "the credentials problem to clear")


# --- the process --------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NETWEAVE_", "KUBERNETES_SERVICE"))
    }


def _run_adapter(*args: str) -> subprocess.CompletedProcess[str]:
    """The adapter process with `args`, outside any pod and without NETWEAVE_ settings."""
    return subprocess.run(
        [sys.executable, "-m", "adapters.kubernetes", *args, "--port", "0"],
        cwd=REPO_ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_process_exits_2_without_a_cluster_configuration(tmp_path: Path) -> None:
    done = _run_adapter()
    assert done.returncode == 2
    assert "NETWEAVE_KUBECONFIG" in done.stderr
    bad = tmp_path / "mapping.yaml"
    bad.write_text("pool_label: [a]\n")
    done = _run_adapter("--mapping", str(bad))
    assert done.returncode == 2
    assert "pool_label: must be a string" in done.stderr


def test_the_process_exits_2_naming_a_bad_alarm_severity(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.yaml"
    bad.write_text("alarms:\n  NodeNotReady: FATAL\n")
    done = _run_adapter("--mapping", str(bad))
    assert done.returncode == 2
    assert "alarms.NodeNotReady: must be one of CRITICAL" in done.stderr
    bad.write_text("alarms:\n  Ready: MAJOR\n")
    done = _run_adapter("--mapping", str(bad))
    assert done.returncode == 2
    assert "alarms.Ready: unknown key" in done.stderr


def test_the_process_serves_the_cluster(tmp_path: Path) -> None:
    with KubeApiSimulator(tmp_path / "sim", simulated_cluster(nodes=10)) as sim:
        kubeconfig = sim.write_kubeconfig(tmp_path / "kubeconfig", context="lab")
        port, ops_port = free_port(), free_port()
        process = ManagedProcess(
            "adapter-kubernetes",
            [
                sys.executable,
                "-m",
                "adapters.kubernetes",
                "--port",
                str(port),
                "--ops-port",
                str(ops_port),
            ],
            tmp_path / "adapter.log",
            env={"NETWEAVE_KUBECONFIG": str(kubeconfig)},
            cwd=REPO_ROOT,
        ).start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            stub = adapter_pb2_grpc.AdapterServiceStub(channel)

            def published() -> bool:
                process.require_alive()
                info = stub.GetAdapterInfo(adapter_pb2.GetAdapterInfoRequest(), timeout=2)
                return bool(info.revision != "0")

            wait_until(published, 30, "the adapter's first list", 0.1)
            info = stub.GetAdapterInfo(adapter_pb2.GetAdapterInfoRequest(), timeout=2)
            assert (info.name, info.backend) == ("kubernetes-lab", "kubernetes")
            listed = stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5)
            assert sum(obj.HasField("resource") for obj in listed.objects) == 10
            # Its ops endpoint: ready (listed), and the API server's latency measured.
            ops = f"http://127.0.0.1:{ops_port}"
            ready = httpx.get(f"{ops}/readyz", timeout=5)
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["published"]["ok"] is True
            text = httpx.get(f"{ops}/metrics", timeout=5).text
            timed = metric_sum(
                text,
                "o2ims_adapter_backend_request_duration_seconds_count",
                adapter="kubernetes-lab",
            )
            assert timed >= 2  # the list page and the watch connect
            assert metric_sum(text, "o2ims_ready") == 1
            assert metric_sum(text, "o2ims_build_info") == 1
        finally:
            channel.close()
            process.stop()
        assert process.proc is not None and process.proc.returncode == 0


def test_in_a_pod_the_service_account_is_used_and_its_rotated_token_picked_up(
    tmp_path: Path,
) -> None:
    with KubeApiSimulator(tmp_path / "sim", simulated_cluster(nodes=4), token="sa-1") as sim:
        account = tmp_path / "serviceaccount"
        account.mkdir()
        (account / "token").write_text("sa-1")
        (account / "ca.crt").write_bytes(sim.ca_pem)
        port = free_port()
        env = {
            **_environment(),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(sim.port),
            "NETWEAVE_KUBE_SERVICE_ACCOUNT_DIR": str(account),
        }
        log = (tmp_path / "adapter.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adapters.kubernetes",
                "--port",
                str(port),
                "--auth-retry-interval",
                "1",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            stub = adapter_pb2_grpc.AdapterServiceStub(channel)

            def managers() -> list[domain_pb2.DeploymentManager]:
                try:
                    listed = stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=2)
                except grpc.RpcError:
                    return []
                return [
                    o.deployment_manager for o in listed.objects if o.HasField("deployment_manager")
                ]

            wait_until(lambda: bool(managers()), 30, "the in-pod adapter's first list", 0.1)
            [manager] = managers()
            assert manager.service_uri == f"https://127.0.0.1:{sim.port}"
            info = stub.GetAdapterInfo(adapter_pb2.GetAdapterInfoRequest(), timeout=2)
            assert info.name == "kubernetes-in-cluster"

            # The kubelet rotates the projected token: the old one stops working.
            (account / "token").write_text("sa-2")
            sim.set_token("sa-2", "valid")
            sim.revoke_token("sa-1")
            sim.cut_watches()
            sim.add_node(make_node("joined-after-rotation", uid=str(uuid.uuid4())))

            def served(name: str) -> bool:
                listed = stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=2)
                return any(o.resource.name == name for o in listed.objects)

            wait_until(lambda: served("joined-after-rotation"), 30, "the node, after rotation")
        finally:
            channel.close()
            process.terminate()
            process.wait(10)
            log.close()
