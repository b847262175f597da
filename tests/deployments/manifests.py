"""Rendering the Kubernetes manifests for the tests of tests/deployments/ (the rendered
overlays themselves are the session fixture `rendered`, conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no stubs, no py.typed
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deployments" / "kubernetes"
OVERLAYS = ("development", "staging", "production")
NAMESPACE = "o2ims-system"
APP_LABEL = {"app": "netweave-gateway"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
# Kinds kubernetes-validate has no schema for; each is checked by a test below.
CUSTOM_KINDS = {
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
EXPECTED_GATEWAY_REPLICAS = {"development": 1, "staging": 3, "production": 3}

Manifest = dict[str, Any]


def kustomize(directory: Path) -> str:
    """`kubectl kustomize directory`: the rendered objects, as YAML text."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found: install Debian's kubernetes-client"
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return result.stdout


def render(overlay: str) -> list[Manifest]:
    text = kustomize(KUBERNETES / "overlays" / overlay)
    return [doc for doc in yaml.safe_load_all(text) if doc]


# Components an operator adds to an overlay of theirs (deployments/kubernetes/components/),
# rendered on top of the overlay they are written for.
COMPOSED = {"production+dedicated-cpus": ("production", ("dedicated-cpus",))}


def kustomize_composed(name: str, workdir: Path) -> str:
    """COMPOSED[name] rendered: an operator's kustomization in `workdir` (outside the
    repository, as theirs would be) with the overlay as its resource and the components."""
    overlay, components = COMPOSED[name]
    root = workdir / name
    root.mkdir(parents=True, exist_ok=True)
    relative = Path(os.path.relpath(KUBERNETES, root))
    (root / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(relative / "overlays" / overlay)],
                "components": [str(relative / "components" / c) for c in components],
            }
        )
    )
    return kustomize(root)


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
    return matches[0]


def pod_specs(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            yield where, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield where, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def gateway_pod(objects: list[Manifest]) -> Manifest:
    """The gateway Deployment's pod spec."""
    spec: Manifest = find(objects, "Deployment", "netweave-gateway")["spec"]["template"]["spec"]
    return spec


def env_values(each: Manifest) -> dict[str, str]:
    """A container's environment variables set to a value (not from a ref)."""
    return {e["name"]: e["value"] for e in each.get("env", []) if "value" in e}


def container(pod: Manifest, name: str) -> Manifest:
    (match,) = [c for c in pod["containers"] if c["name"] == name]
    return dict(match)


def validate_builtin(objects: list[Manifest]) -> int:
    """Every object of a kind Kubernetes defines, validated strictly against the latest
    schemas kubernetes-validate has (the CUSTOM_KINDS are checked by tests of their own);
    a failure fails the test naming the object. Returns how many were validated."""
    version = kubernetes_validate.latest_version()
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
        checked += 1
    return checked
