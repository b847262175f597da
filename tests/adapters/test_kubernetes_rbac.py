"""The Kubernetes adapter's RBAC (adapters/kubernetes/rbac.yaml) is valid, read-only, and
grants exactly what the real adapter process asks the API server for."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc

from devstack.kubesim import KubeApiSimulator, simulated_cluster
from devstack.processes import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "adapters" / "kubernetes" / "rbac.yaml"
READ_VERBS = {"get", "list", "watch"}
# What each kind of request the simulator counts needs (resource, verb, resource name).
NEEDS = {
    "list": ("nodes", "list", None),
    "watch": ("nodes", "watch", None),
    "get_node": ("nodes", "get", None),
    "get_namespace": ("namespaces", "get", "kube-system"),
    "version": ("/version", "get", None),
    "discovery": ("/api", "get", None),
}


def documents() -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(RBAC.read_text()) if document]


def cluster_role() -> dict[str, Any]:
    [role] = [d for d in documents() if d["kind"] == "ClusterRole"]
    return role


def granted(resource: str, verb: str, name: str | None) -> bool:
    for rule in cluster_role()["rules"]:
        if verb not in rule["verbs"]:
            continue
        if resource.startswith("/"):
            if resource in rule.get("nonResourceURLs", []):
                return True
            continue
        if "" not in rule.get("apiGroups", []) or resource not in rule.get("resources", []):
            continue
        names = rule.get("resourceNames")
        if names is None or name in names:
            return True
    return False


def test_every_document_is_valid_for_kubernetes_strictly() -> None:
    for document in documents():
        kubernetes_validate.validate(document, "1.37", strict=True)
        assert document["metadata"]["labels"]["app"] == "netweave-gateway"


def test_the_role_only_reads() -> None:
    for rule in cluster_role()["rules"]:
        assert set(rule["verbs"]) <= READ_VERBS, rule
    [binding] = [d for d in documents() if d["kind"] == "ClusterRoleBinding"]
    [account] = [d for d in documents() if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["namespace"] == "o2ims-system"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "o2ims-system"}
    ]
    assert binding["roleRef"]["name"] == cluster_role()["metadata"]["name"]


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[KubeApiSimulator]:
    with KubeApiSimulator(tmp_path / "sim", simulated_cluster(nodes=5, zones=1)) as running:
        yield running


def test_the_role_grants_whatever_the_adapter_process_asks_for(
    simulator: KubeApiSimulator, tmp_path: Path
) -> None:
    kubeconfig = simulator.write_kubeconfig(tmp_path / "kubeconfig")
    port = free_port()
    log = (tmp_path / "adapter.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "adapters.kubernetes", "--kubeconfig", str(kubeconfig)),
            *("--port", str(port), "--name", "rbac"),
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = adapter_pb2_grpc.AdapterServiceStub(channel)

            def listed() -> bool:
                try:
                    stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=2)
                except grpc.RpcError:
                    return False
                return True

            wait_until(listed, 30, "the adapter's first list")
            # A cut watch and a relist after 410: the recovery paths ask too.
            simulator.stop()
            simulator.heartbeat(at=datetime.now(UTC) + timedelta(seconds=10))
            simulator.compact()
            simulator.start()
            wait_until(lambda: simulator.requests["410"] >= 1, 30, "a 410 seen")
            wait_until(lambda: simulator.list_calls >= 2, 30, "the relist")
    finally:
        process.terminate()
        process.wait(10)
        log.close()
    asked = {kind for kind in NEEDS if simulator.requests[kind]}
    assert {"list", "watch", "get_namespace"} <= asked, simulator.requests
    assert set(simulator.requests) - set(NEEDS) <= {"total", "requests", "410"}, simulator.requests
    for kind in asked:
        assert granted(*NEEDS[kind]), (kind, NEEDS[kind])
