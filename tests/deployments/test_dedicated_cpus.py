"""deployments/kubernetes/components/dedicated-cpus on the production overlay: a gateway pod of
the Guaranteed QoS class whose core and Envoy get whole CPUs, sized so the core's workers keep
to one CPU each (NETWEAVE_CORE_CPU_AFFINITY=auto, server/workers.py cpu_placement) where the
kubelet's static CPU manager makes those CPUs the container's own."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from netweave import settings
from server.workers import cpu_placement
from tests.deployments.manifests import (
    Manifest,
    container,
    env_values,
    gateway_pod,
    kustomize_composed,
    render,
    validate_builtin,
)

NAME = "production+dedicated-cpus"


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    text = kustomize_composed(NAME, tmp_path_factory.mktemp("composed"))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_every_container_of_the_gateway_pod_is_guaranteed(objects: list[Manifest]) -> None:
    pod = gateway_pod(objects)
    every = pod.get("initContainers", []) + pod["containers"]
    assert {c["name"] for c in every} >= {"render-envoy-config", "core", "envoy"}
    for each in every:
        resources: dict[str, Any] = each["resources"]
        assert resources["requests"] == resources["limits"], each["name"]
        assert set(resources["limits"]) == {"cpu", "memory"}, each["name"]


def test_the_core_gets_one_whole_cpu_per_worker_and_keeps_each_to_its_own(
    objects: list[Manifest],
) -> None:
    core = container(gateway_pod(objects), "core")
    processes = int(env_values(core)[settings.CORE_PROCESSES.name])
    cpus = core["resources"]["limits"]["cpu"]
    assert cpus.isdigit() and int(cpus) == processes == 2
    assert env_values(core)[settings.CORE_CPU_AFFINITY.name] == "auto"
    # The static CPU manager gives the container exactly `cpus` CPUs: auto places a worker
    # on each (whatever the CPUs' numbers).
    assert cpu_placement("auto", processes, {5, 11}) == [5, 11]
    # Memory: what the production overlay sized for two workers, now requested too.
    assert core["resources"]["limits"]["memory"] == "1536Mi"


def test_envoy_runs_one_worker_per_cpu_of_its_own(objects: list[Manifest]) -> None:
    envoy = container(gateway_pod(objects), "envoy")
    cpus = envoy["resources"]["limits"]["cpu"]
    assert cpus.isdigit() and int(cpus) == int(env_values(envoy)[settings.ENVOY_CONCURRENCY.name])


def test_only_the_gateway_pod_changes(objects: list[Manifest]) -> None:
    production = render("production")
    assert len(objects) == len(production)
    changed = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o, p in zip(
            sorted(objects, key=lambda o: (o["kind"], o["metadata"]["name"])),
            sorted(production, key=lambda o: (o["kind"], o["metadata"]["name"])),
            strict=True,
        )
        if o != p
    ]
    assert changed == ["Deployment/netweave-gateway"]


def test_every_builtin_object_validates(objects: list[Manifest]) -> None:
    assert validate_builtin(objects) >= 15
