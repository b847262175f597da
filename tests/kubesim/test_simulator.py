"""The Kubernetes API simulator against the real `kubernetes` Python client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config import kube_config
from kubernetes.watch import watch as kube_watch

from devstack.kubesim.nodes import make_node, simulated_cluster
from devstack.kubesim.server import KubeApiSimulator
from devstack.processes import port_open, wait_until

NODES = 30


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[KubeApiSimulator]:
    simulator = KubeApiSimulator(
        tmp_path / "state", simulated_cluster(NODES), bookmark_interval=0.2, history_limit=1000
    )
    with simulator:
        yield simulator


def load_kube_config(path: Path, context: str, configuration: client.Configuration) -> None:
    kube_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(path), context=context, client_configuration=configuration
    )


def new_watch() -> Any:
    """The client's Watch (untyped in the package: used as Any here)."""
    return kube_watch.Watch()  # type: ignore[no-untyped-call]


def core_v1(api: client.ApiClient) -> Any:
    """The client's CoreV1Api, as Any: optional model fields are read without None checks."""
    return client.CoreV1Api(api)


def api_client(sim: KubeApiSimulator, tmp_path: Path, token: str | None = None) -> client.ApiClient:
    kubeconfig = sim.write_kubeconfig(tmp_path / f"kubeconfig-{token}", context="sim", token=token)
    configuration = client.Configuration()
    load_kube_config(kubeconfig, "sim", configuration)
    configuration.retries = 0
    return client.ApiClient(configuration)


@pytest.fixture
def v1(sim: KubeApiSimulator, tmp_path: Path) -> Iterator[Any]:
    with api_client(sim, tmp_path) as api:
        yield core_v1(api)


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body or "null")
    return body


def in_background(action: Any) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------ nodes.py


def test_simulated_cluster_is_deterministic_and_realistic() -> None:
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    cluster = simulated_cluster(50, zones=3, gpu_every=5, seed=0, now=at)
    assert cluster == simulated_cluster(50, zones=3, gpu_every=5, seed=0, now=at)
    other = simulated_cluster(50, zones=3, gpu_every=5, seed=1, now=at)
    assert {n["metadata"]["uid"] for n in cluster}.isdisjoint(n["metadata"]["uid"] for n in other)
    names = [node["metadata"]["name"] for node in cluster]
    assert len(names) == len(set(names)) == 50
    assert names[:4] == ["control-plane-0", "control-plane-1", "control-plane-2", "worker-000"]
    planes = [
        n for n in cluster if "node-role.kubernetes.io/control-plane" in n["metadata"]["labels"]
    ]
    assert len(planes) == 3
    assert all(n["spec"]["taints"][0]["effect"] == "NoSchedule" for n in planes)
    gpus = [n for n in cluster if "nvidia.com/gpu" in n["status"]["capacity"]]
    assert len(gpus) == 9  # worker-004, -009, ... of 47 workers
    assert all(n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in gpus)
    zones = {n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in cluster}
    assert zones == {"region-1-a", "region-1-b", "region-1-c"}
    assert any("intel.com/sriov_netdevice" in n["status"]["allocatable"] for n in cluster)
    # Every node deserializes into the client's model with the fields adapters read.
    api = client.ApiClient()
    for raw in cluster:
        node = api.deserialize(json.dumps(raw), "V1Node", "application/json")
        assert node.status.node_info.kubelet_version == "v1.31.4"
        assert [c.type for c in node.status.conditions][-1] == "Ready"


def test_make_node_reserves_capacity_like_a_kubelet() -> None:
    node = make_node("n1", cpu="8", memory="32Gi", extended={"nvidia.com/gpu": "4"})
    capacity, allocatable = node["status"]["capacity"], node["status"]["allocatable"]
    assert capacity["cpu"] == "8" and allocatable["cpu"].endswith("m")
    assert int(allocatable["cpu"][:-1]) < 8000
    assert int(allocatable["memory"][:-2]) < int(capacity["memory"][:-2])
    assert capacity["nvidia.com/gpu"] == allocatable["nvidia.com/gpu"] == "4"
    assert "resourceVersion" not in node["metadata"]
    assert "unschedulable" not in node["spec"]
    assert make_node("n1", unschedulable=True)["spec"]["unschedulable"] is True


# ------------------------------------------------------------------ lists


def test_paging_covers_every_node_once_from_one_snapshot(sim: KubeApiSimulator, v1: Any) -> None:
    expected = sorted(sim.nodes())
    first = v1.list_node(limit=7)
    rv = first.metadata.resource_version
    assert rv == str(sim.resource_version)
    assert first.metadata.remaining_item_count == NODES - 7
    seen = [node.metadata.name for node in first.items]
    token = first.metadata._continue
    # Changes between pages must not show in later pages of the same list.
    sim.add_node(make_node("aaa-new"))
    sim.add_node(make_node("zzz-new"))
    sim.delete_node(expected[-1])
    sim.heartbeat(at=datetime(2030, 1, 1, tzinfo=UTC))
    pages = 1
    while token:
        page = v1.list_node(limit=7, _continue=token)
        assert page.metadata.resource_version == rv
        assert all(int(node.metadata.resource_version) <= int(rv) for node in page.items)
        seen += [node.metadata.name for node in page.items]
        token = page.metadata._continue
        pages += 1
    assert seen == expected
    assert pages == 5
    fresh = v1.list_node()
    assert fresh.metadata.resource_version == str(sim.resource_version) != rv
    assert fresh.metadata._continue is None
    assert "zzz-new" in {node.metadata.name for node in fresh.items}


def test_list_items_have_no_kind_and_raw_shape(sim: KubeApiSimulator, v1: Any) -> None:
    response = v1.list_node(limit=2, _preload_content=False)
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.data)
    assert body["kind"] == "NodeList" and body["apiVersion"] == "v1"
    assert set(body["metadata"]) == {"resourceVersion", "continue", "remainingItemCount"}
    assert "kind" not in body["items"][0] and body["items"][0]["metadata"]["resourceVersion"]
    got = v1.read_node("worker-000", _preload_content=False)
    assert json.loads(got.data) == sim.nodes()["worker-000"]


def test_selectors(sim: KubeApiSimulator, v1: Any) -> None:
    gpus = v1.list_node(label_selector="nvidia.com/gpu.present=true")
    assert {n.metadata.name for n in gpus.items} == {
        name for name, node in sim.nodes().items() if "nvidia.com/gpu" in node["status"]["capacity"]
    }
    one = v1.list_node(field_selector="metadata.name=worker-003")
    assert [n.metadata.name for n in one.items] == ["worker-003"]
    workers = v1.list_node(label_selector="!node-role.kubernetes.io/control-plane", limit=100)
    assert len(workers.items) == NODES - 3
    with pytest.raises(ApiException) as error:
        v1.list_node(field_selector="status.phase=Ready")
    assert error.value.status == 400
    assert status_of(error.value)["message"] == "field label not supported: status.phase"


def test_old_continue_token_gets_410_after_compaction(sim: KubeApiSimulator, v1: Any) -> None:
    first = v1.list_node(limit=10)
    sim.heartbeat(["worker-000"], at=datetime(2030, 1, 1, tzinfo=UTC))
    # Before compaction the page is still served from the list's snapshot ...
    assert v1.list_node(limit=10, _continue=first.metadata._continue).metadata.resource_version == (
        first.metadata.resource_version
    )
    sim.compact()
    with pytest.raises(ApiException) as error:
        v1.list_node(limit=10, _continue=first.metadata._continue)
    assert error.value.status == 410
    status = status_of(error.value)
    assert status["kind"] == "Status" and status["reason"] == "Expired" and status["code"] == 410
    assert status["message"].startswith("The provided continue parameter is too old")
    # ... and the inconsistent continue token the server offers goes on at the latest state.
    rest = v1.list_node(limit=100, _continue=status["metadata"]["continue"])
    assert rest.metadata.resource_version == str(sim.resource_version)
    assert len(rest.items) == NODES - 10


# ------------------------------------------------------------------ watches


def test_watch_from_list_rv_sees_changes_in_order(sim: KubeApiSimulator, v1: Any) -> None:
    listed = v1.list_node()
    sim.update_node("worker-001", lambda n: n["metadata"]["labels"].update({"replayed": "yes"}))

    def changes() -> None:
        wait_until(lambda: sim.open_watches == 1, 5, "the watch to open")
        sim.add_node(make_node("new-node"))
        sim.update_node("new-node", lambda n: n["spec"].update({"unschedulable": True}))
        sim.delete_node("new-node")

    worker = in_background(changes)
    seen: list[tuple[str, str, int]] = []
    stream = new_watch()
    for event in stream.stream(
        v1.list_node, resource_version=listed.metadata.resource_version, timeout_seconds=10
    ):
        obj = event["object"]
        seen.append((event["type"], obj.metadata.name, int(obj.metadata.resource_version)))
        if event["type"] == "DELETED":
            stream.stop()
    worker.join()
    assert [(kind, name) for kind, name, _ in seen] == [
        ("MODIFIED", "worker-001"),
        ("ADDED", "new-node"),
        ("MODIFIED", "new-node"),
        ("DELETED", "new-node"),
    ]
    rvs = [rv for _, _, rv in seen]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4
    assert rvs[-1] == sim.resource_version
    assert seen[2][0] == "MODIFIED"


def test_watch_without_rv_starts_with_synthetic_added(sim: KubeApiSimulator, v1: Any) -> None:
    names: list[str] = []
    stream = new_watch()
    for event in stream.stream(v1.list_node, timeout_seconds=5):
        assert event["type"] == "ADDED"
        names.append(event["object"].metadata.name)
        if len(names) == NODES:
            stream.stop()
    assert names == sorted(sim.nodes())


def test_bookmarks_arrive_with_the_current_rv(sim: KubeApiSimulator, v1: Any) -> None:
    rv = v1.list_node(limit=1).metadata.resource_version
    stream = new_watch()
    bookmark: dict[str, Any] = {}
    for event in stream.stream(
        v1.list_node, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=5
    ):
        if event["type"] == "BOOKMARK":
            bookmark = event["raw_object"]
            stream.stop()
    assert bookmark == {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": rv, "creationTimestamp": None},
    }
    assert stream.resource_version == rv


def test_watch_selector_turns_label_changes_into_added_and_deleted(
    sim: KubeApiSimulator, v1: Any
) -> None:
    rv = v1.list_node(limit=1).metadata.resource_version
    sim.update_node("worker-002", lambda n: n["metadata"]["labels"].update({"pool": "blue"}))
    sim.update_node("worker-002", lambda n: n["metadata"]["labels"].update({"pool": "red"}))
    sim.update_node("worker-003", lambda n: n["metadata"]["labels"].update({"pool": "red"}))
    response = v1.list_node(
        watch=True, resource_version=rv, label_selector="pool=blue", timeout_seconds=1,
        _preload_content=False,
    )  # fmt: skip
    events = [json.loads(line) for line in response.data.splitlines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "worker-002"),
        ("DELETED", "worker-002"),
    ]
    assert events[1]["object"]["metadata"]["labels"]["pool"] == "blue"


def test_watch_from_compacted_rv_gets_410_error_event(sim: KubeApiSimulator, v1: Any) -> None:
    old = v1.list_node(limit=1).metadata.resource_version
    sim.heartbeat(at=datetime(2030, 1, 1, tzinfo=UTC))
    sim.compact()
    raw = v1.list_node(watch=True, resource_version=old, _preload_content=False)
    assert raw.status == 200
    lines = raw.data.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {old} ({sim.resource_version})",
            "reason": "Expired",
            "code": 410,
        },
    }
    # The client turns the ERROR event into ApiException(410) (no retry with timeout_seconds).
    with pytest.raises(ApiException) as error:
        list(new_watch().stream(v1.list_node, resource_version=old, timeout_seconds=5))
    assert error.value.status == 410
    assert error.value.reason.startswith("Expired: too old resource version")
    # A watch from the current RV is fine.
    current = str(sim.resource_version)
    assert list(new_watch().stream(v1.list_node, resource_version=current, timeout_seconds=1)) == []


def test_history_window_expires_old_rvs(tmp_path: Path) -> None:
    small = KubeApiSimulator(tmp_path / "s", simulated_cluster(20), history_limit=25)
    with small, api_client(small, tmp_path) as api:
        v1 = core_v1(api)
        small.heartbeat(at=datetime(2030, 1, 1, tzinfo=UTC))  # RV 21..40: 1..15 fall out
        raw = v1.list_node(watch=True, resource_version="14", _preload_content=False)
        assert json.loads(raw.data)["object"]["code"] == 410
        raw = v1.list_node(watch=True, resource_version="15", timeout_seconds=1,
                           _preload_content=False)  # fmt: skip
        assert len(raw.data.splitlines()) == 25


def test_timeout_seconds_ends_the_stream_cleanly(sim: KubeApiSimulator, v1: Any) -> None:
    raw = v1.list_node(
        watch=True, resource_version=str(sim.resource_version), timeout_seconds=1,
        _preload_content=False,
    )  # fmt: skip
    assert raw.headers.get("Transfer-Encoding") == "chunked"
    assert raw.data == b""  # read to the terminating chunk without a protocol error
    wait_until(lambda: sim.open_watches == 0, 5, "the watch to be closed")


def test_cut_watches_ends_streams_mid_way(sim: KubeApiSimulator, v1: Any) -> None:
    raw = v1.list_node(watch=True, _preload_content=False)
    first = raw.read(256)
    assert first.startswith(b'{"type":"ADDED"')
    wait_until(lambda: sim.open_watches == 1, 5, "the watch to register")
    assert sim.cut_watches() == 1
    with pytest.raises(urllib3.exceptions.ProtocolError):
        while raw.read(65536):
            pass
    # The cut watcher leaves the list on its handler thread; until then it would be counted
    # as the second watch below, and the second cut would miss the stream it is meant for.
    wait_until(lambda: sim.open_watches == 0, 5, "the cut watch to be gone")
    watches_before = sim.watch_calls

    # The client's Watch sees the same failure: the stream raises, it does not end quietly.
    def cut_when_open() -> None:
        wait_until(
            lambda: sim.watch_calls == watches_before + 1 and sim.open_watches == 1,
            5,
            "the second watch to open",
        )
        assert sim.cut_watches() == 1

    cutter = in_background(cut_when_open)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for _ in new_watch().stream(
            v1.list_node, resource_version=str(sim.resource_version), timeout_seconds=10
        ):
            pass
    cutter.join()
    wait_until(lambda: sim.open_watches == 0, 5, "the watches to be gone")


# ------------------------------------------------------------------ auth, errors


def test_auth_statuses(sim: KubeApiSimulator, tmp_path: Path) -> None:
    sim.set_token("old-token", "expired")
    sim.set_token("nosy-token", "forbidden", user="system:serviceaccount:default:nosy")
    sim.set_token("second-token", "valid")
    with api_client(sim, tmp_path, "second-token") as api:
        assert len(core_v1(api).list_node().items) == NODES
    with api_client(sim, tmp_path, "old-token") as api, pytest.raises(ApiException) as error:
        core_v1(api).list_node()
    assert error.value.status == 401
    assert status_of(error.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    with api_client(sim, tmp_path, "nosy-token") as api:
        v1 = core_v1(api)
        with pytest.raises(ApiException) as error:
            v1.list_node()
        assert error.value.status == 403
        assert status_of(error.value)["message"] == (
            'nodes is forbidden: User "system:serviceaccount:default:nosy" cannot list resource '
            '"nodes" in API group "" at the cluster scope'
        )
        assert status_of(error.value)["details"] == {"kind": "nodes"}
        with pytest.raises(ApiException) as error:
            v1.read_node("worker-000")
        assert 'nodes "worker-000" is forbidden' in status_of(error.value)["message"]
        # /version is public information for every authenticated user.
        assert client.VersionApi(api).get_code().git_version == "v1.31.4"
    sim.revoke_token("second-token")
    with api_client(sim, tmp_path, "second-token") as api, pytest.raises(ApiException) as error:
        client.VersionApi(api).get_code()
    assert error.value.status == 401
    assert sim.requests["401"] == 2 and sim.requests["403"] == 2


def test_version_namespace_and_not_found(sim: KubeApiSimulator, v1: Any) -> None:
    version = client.VersionApi(v1.api_client).get_code()
    assert (version.major, version.minor, version.platform) == ("1", "31", "linux/amd64")
    assert v1.read_namespace("kube-system").metadata.uid == sim.cluster_uid
    with pytest.raises(ApiException) as error:
        v1.read_namespace("default")
    assert error.value.status == 404
    with pytest.raises(ApiException) as error:
        v1.read_node("missing")
    assert status_of(error.value)["message"] == 'nodes "missing" not found'
    assert status_of(error.value)["details"] == {"name": "missing", "kind": "nodes"}
    with pytest.raises(ApiException) as error:
        v1.delete_node("worker-000")
    assert error.value.status == 405
    assert status_of(error.value)["reason"] == "MethodNotAllowed"
    with pytest.raises(ApiException) as error:
        v1.list_namespaced_pod("default")
    assert error.value.status == 404
    assert status_of(error.value)["reason"] == "NotFound"


# ------------------------------------------------------------------ state and lifecycle


def test_heartbeat_changes_only_heartbeat_time_and_rv(sim: KubeApiSimulator, v1: Any) -> None:
    before = sim.nodes()
    rv = sim.resource_version
    at = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert sim.heartbeat(at=at) == NODES
    assert sim.heartbeat(at=at) == 0  # same second: nothing changes, no RV bump
    assert sim.resource_version == rv + NODES
    after = sim.nodes()
    for name, node in after.items():
        conditions = node["status"]["conditions"]
        assert {c["lastHeartbeatTime"] for c in conditions} == {"2030-06-01T12:00:00Z"}
        assert int(node["metadata"]["resourceVersion"]) > rv
        for condition in conditions:
            condition.pop("lastHeartbeatTime")
        for condition in before[name]["status"]["conditions"]:
            condition.pop("lastHeartbeatTime")
        node["metadata"].pop("resourceVersion")
        before[name]["metadata"].pop("resourceVersion")
        assert node == before[name]
    served = v1.read_node("worker-000").status.conditions[0].last_heartbeat_time
    assert served == at
    # Heartbeats patch the stored bytes in place; a selector's DELETED event is rebuilt
    # from the stored object: both must hold the same state.
    rv = sim.resource_version
    expected = sim.nodes()["worker-000"]
    sim.update_node("worker-000", lambda n: n["metadata"]["labels"].pop("kubernetes.io/os"))
    raw = v1.list_node(
        watch=True, resource_version=str(rv), label_selector="kubernetes.io/os=linux",
        timeout_seconds=1, _preload_content=False,
    )  # fmt: skip
    (event,) = [json.loads(line) for line in raw.data.splitlines()]
    expected["metadata"]["resourceVersion"] = str(rv + 1)
    assert event == {"type": "DELETED", "object": expected}


def test_stop_and_restart_keep_port_and_state(sim: KubeApiSimulator, v1: Any) -> None:
    port, rv = sim.port, v1.list_node().metadata.resource_version
    sim.stop()
    assert not port_open(port)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        v1.list_node()
    sim.add_node(make_node("added-while-down"))
    sim.start()
    assert sim.port == port
    listed = v1.list_node()
    assert int(listed.metadata.resource_version) == int(rv) + 1
    assert "added-while-down" in {node.metadata.name for node in listed.items}
    # A watch from before the outage resumes with what happened during it.
    events = list(new_watch().stream(v1.list_node, resource_version=rv, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "added-while-down")
    ]


def test_stop_drops_open_watches(sim: KubeApiSimulator, v1: Any) -> None:
    raw = v1.list_node(watch=True, resource_version=str(sim.resource_version),
                       _preload_content=False)  # fmt: skip
    wait_until(lambda: sim.open_watches == 1, 5, "the watch to register")
    sim.restart()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        while raw.read(65536):
            pass
    wait_until(lambda: sim.open_watches == 0, 5, "the watch to be gone")
    assert sim.list_calls == 0 and sim.watch_calls == 1


def test_kubeconfig_merges_several_simulators(sim: KubeApiSimulator, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "multi"
    with KubeApiSimulator(tmp_path / "other", simulated_cluster(3, seed=7)) as other:
        sim.write_kubeconfig(kubeconfig, context="east", merge=True)
        other.write_kubeconfig(kubeconfig, context="west", merge=True)
        assert kubeconfig.stat().st_mode & 0o777 == 0o600
        counts = {}
        for context in ("east", "west"):
            configuration = client.Configuration()
            load_kube_config(kubeconfig, context, configuration)
            with client.ApiClient(configuration) as api:
                v1 = core_v1(api)
                counts[context] = (
                    len(v1.list_node().items),
                    v1.read_namespace("kube-system").metadata.uid,
                )
    assert counts == {"east": (NODES, sim.cluster_uid), "west": (3, other.cluster_uid)}
    assert (sim.state_dir / "ca.key").stat().st_mode & 0o777 == 0o600
