"""The Kubernetes manifests: every overlay renders, validates, and holds what operations needs.

`kubectl kustomize` renders each overlay once per session; kubernetes-validate checks every
object of a built-in kind against the Kubernetes schemas (strict: no unknown fields). The custom
resources (cert-manager, Prometheus Operator) have no schema there: their shape is checked here.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
import yaml

from netweave.redis_url import parse_redis_url
from tests.deployments.manifests import (
    APP_LABEL,
    CLUSTER_SCOPED,
    EXPECTED_GATEWAY_REPLICAS,
    KUBERNETES,
    NAMESPACE,
    OVERLAYS,
    REPO,
    Manifest,
    container,
    find,
    pod_specs,
    validate_builtin,
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_builtin_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    assert validate_builtin(rendered[overlay]) >= 15


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_carries_the_app_label_and_namespaced_ones_the_namespace(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    for obj in rendered[overlay]:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"].get("labels", {}).items() >= APP_LABEL.items(), where
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], where
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, where
    # Pods too: the template's labels are what the operations guide's selectors name.
    for obj in rendered[overlay]:
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert labels.items() >= APP_LABEL.items(), obj["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_replicas_per_topology(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    gateway = find(rendered[overlay], "Deployment", "netweave-gateway")
    assert gateway["spec"]["replicas"] == EXPECTED_GATEWAY_REPLICAS[overlay]
    # Rolling updates never drop below the replica count.
    assert gateway["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_development_runs_one_redis_without_sentinels(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["development"]
    redis = find(objects, "StatefulSet", "netweave-redis")
    assert redis["spec"]["replicas"] == 1
    assert [c["name"] for c in redis["spec"]["template"]["spec"]["containers"]] == ["redis"]
    url = find(objects, "ConfigMap", "netweave-redis")["data"]["REDIS_URL"]
    assert url.startswith("redis://netweave-redis:6379/")


@pytest.mark.parametrize("overlay", ["staging", "production"])
def test_redis_has_three_sentinels(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    objects = rendered[overlay]
    redis = find(objects, "StatefulSet", "netweave-redis")
    assert redis["spec"]["replicas"] == 3
    pod = redis["spec"]["template"]["spec"]
    assert container(pod, "sentinel")["args"][0] == "redis-sentinel"
    data = find(objects, "ConfigMap", "netweave-redis")["data"]
    target = parse_redis_url(data["REDIS_URL"])  # what every process parses
    assert target.scheme == "redis+sentinel"
    assert target.endpoints == (("netweave-redis-sentinel", 26379),)
    assert target.master_name == "netweave"
    # Subscription writes and acknowledgements wait for a replica's copy.
    assert data["NETWEAVE_REDIS_WAIT_REPLICAS"] == "1"
    init = find(objects, "ConfigMap", "netweave-redis-config")["data"]["init.sh"]
    assert "sentinel monitor netweave $master 6379 2" in init  # quorum 2 of 3


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_runs_beside_the_core_and_both_are_probed(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    pod = find(rendered[overlay], "Deployment", "netweave-gateway")["spec"]["template"]["spec"]
    assert sorted(c["name"] for c in pod["containers"]) == ["core", "envoy"]
    core = container(pod, "core")
    assert core["args"] == ["python", "-m", "server"]
    ports = {p["name"]: p["containerPort"] for p in core["ports"]}
    assert ports == {"metrics": 8080}
    assert core["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert core["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = {e["name"]: e.get("value") for e in core["env"]}
    # Probes reach the ops port from outside the pod; the edge stays on loopback.
    assert env["NETWEAVE_OPS_HOST"] == "0.0.0.0"
    assert env["NETWEAVE_OPS_PORT"] == "8080"
    assert env["NETWEAVE_EDGE_LISTEN"].startswith("127.0.0.1:")
    assert env["NETWEAVE_GRPC_HOST"] == "127.0.0.1"
    envoy = container(pod, "envoy")
    assert envoy["args"][0] == "envoy"
    assert {p["containerPort"] for p in envoy["ports"]} == {8443, 9902}
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "envoy-stats"}


def test_notifier_is_probed_on_its_ops_port(rendered: dict[str, list[Manifest]]) -> None:
    deployment = find(rendered["production"], "Deployment", "netweave-notifier")
    notifier = container(deployment["spec"]["template"]["spec"], "notifier")
    assert notifier["ports"] == [{"name": "metrics", "containerPort": 8081}]
    assert notifier["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert notifier["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_non_root_read_only_and_bounded(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    pods = list(pod_specs(rendered[overlay]))
    assert len(pods) == 5  # gateway, notifier, Kubernetes adapter, Redis, backup
    for where, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] > 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for each in pod["containers"] + pod.get("initContainers", []):
            name = f"{where} {each['name']}"
            security = each["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert {"cpu", "memory"} <= each["resources"]["requests"].keys(), name
            assert {"cpu", "memory"} <= each["resources"]["limits"].keys(), name


def test_production_spreads_gateways_over_nodes(rendered: dict[str, list[Manifest]]) -> None:
    pod = find(rendered["production"], "Deployment", "netweave-gateway")["spec"]["template"]
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    for overlay in ("development", "staging"):
        others = find(rendered[overlay], "Deployment", "netweave-gateway")["spec"]["template"]
        assert "affinity" not in others["spec"], overlay


def test_production_budget_and_autoscaler_keep_three_or_more_gateways(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["production"]
    gateway = find(objects, "Deployment", "netweave-gateway")
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    budget = find(objects, "PodDisruptionBudget", "netweave-gateway")
    assert budget["spec"]["minAvailable"] == 2
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    autoscaler = find(objects, "HorizontalPodAutoscaler", "netweave-gateway")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "netweave-gateway",
    }
    assert autoscaler["spec"]["minReplicas"] >= 3
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    for overlay in ("development", "staging"):
        kinds = {o["kind"] for o in rendered[overlay]}
        assert not kinds & {"PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"}


def test_production_envoy_memory_limit_is_above_its_heap_limit(
    rendered: dict[str, list[Manifest]],
) -> None:
    pod = find(rendered["production"], "Deployment", "netweave-gateway")["spec"]["template"]
    limit = container(pod["spec"], "envoy")["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and int(limit[:-2]) > 1024  # max_heap_bytes: 1 GiB


def ingress_ports(policy: Manifest) -> set[int]:
    return {p["port"] for rule in policy["spec"].get("ingress", []) for p in rule["ports"]}


def test_production_network_policies_deny_by_default_and_admit_only_the_listeners(
    rendered: dict[str, list[Manifest]],
) -> None:
    policies = {
        o["metadata"]["name"]: o for o in rendered["production"] if o["kind"] == "NetworkPolicy"
    }
    deny = policies.pop("netweave-default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert ingress_ports(policies["netweave-gateway"]) == {8443, 8080, 9902}
    assert ingress_ports(policies["netweave-notifier"]) == {8081}
    assert ingress_ports(policies["netweave-kubernetes-adapter"]) == {50071, 8082}
    assert ingress_ports(policies["netweave-redis"]) == {6379, 26379}
    # Only SMO traffic (8443) is open to every source; every other ingress rule names one.
    for name, policy in policies.items():
        for rule in policy["spec"].get("ingress", []):
            if "from" not in rule:
                assert name == "netweave-gateway", name
                assert {p["port"] for p in rule["ports"]} == {8443}
    # The core workers' edge (50052, 50053) and telemetry (50060) listeners stay inside the pod.
    assert not ingress_ports(policies["netweave-gateway"]) & {50051, 50052, 50053, 50060}


def test_kubernetes_adapter_rbac_is_the_adapters_own(rendered: dict[str, list[Manifest]]) -> None:
    copy = KUBERNETES / "base" / "kubernetes-adapter-rbac.yaml"
    original = REPO / "adapters" / "kubernetes" / "rbac.yaml"
    assert copy.read_text() == original.read_text(), f"{copy} differs from {original}"
    objects = rendered["production"]
    role = find(objects, "ClusterRole", "netweave-kubernetes-adapter")
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs <= {"get", "list", "watch"}
    adapter = find(objects, "Deployment", "netweave-kubernetes-adapter")
    assert adapter["spec"]["template"]["spec"]["serviceAccountName"] == (
        "netweave-kubernetes-adapter"
    )
    for name in ("netweave-gateway", "netweave-notifier"):
        pod = find(objects, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name


def test_certificates_cover_the_server_and_both_ends_of_the_edge(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["production"]
    issuers = {o["metadata"]["name"] for o in objects if o["kind"] == "Issuer"}
    certificates = {
        o["spec"]["secretName"]: o["spec"] for o in objects if o["kind"] == "Certificate"
    }
    for spec in certificates.values():
        assert spec["issuerRef"]["kind"] == "Issuer" and spec["issuerRef"]["name"] in issuers
        assert "renewBefore" in spec
    assert certificates["netweave-core-edge-tls"]["uris"] == ["spiffe://netweave.local/core"]
    assert certificates["netweave-envoy-edge-tls"]["uris"] == ["spiffe://netweave.local/edge"]
    assert "netweave-gateway.o2ims-system.svc" in certificates["netweave-server-tls"]["dnsNames"]
    assert certificates["netweave-internal-ca"]["isCA"] is True
    # Every TLS Secret the gateway pod mounts is one cert-manager issues, except the SMOs' CA.
    pod = find(objects, "Deployment", "netweave-gateway")["spec"]["template"]["spec"]
    mounted = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert mounted - set(certificates) == {"netweave-smo-client-ca"}
    core_env = {e["name"]: e.get("value") for e in container(pod, "core")["env"]}
    assert core_env["NETWEAVE_EDGE_PEER_URI"] == "spiffe://netweave.local/edge"


def test_service_monitors_scrape_the_jobs_the_alert_rules_expect(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["production"]
    services = [o for o in objects if o["kind"] == "Service"]
    jobs: dict[str, tuple[int, str]] = {}
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in services if s["metadata"]["labels"].items() >= selector.items()]
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            (job,) = [
                r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job"
            ]
            jobs[job] = (ports[endpoint["port"]], endpoint["path"])
    assert jobs == {
        "netweave-gateway": (8080, "/metrics"),
        "netweave-envoy": (9902, "/stats/prometheus"),
        "netweave-notifier": (8081, "/metrics"),
    }


def load_generator() -> ModuleType:
    path = KUBERNETES / "generate_prometheusrule.py"
    spec = importlib.util.spec_from_file_location("generate_prometheusrule", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheus_rule_is_generated_from_the_monitoring_rules_file(
    rendered: dict[str, list[Manifest]],
) -> None:
    generator = load_generator()
    rules_text = generator.RULES.read_text(encoding="utf-8")
    checked_in = generator.OUTPUT.read_text(encoding="utf-8")
    assert checked_in == generator.render(rules_text), (
        "base/prometheusrule.yaml drifted: run "
        ".venv/bin/python deployments/kubernetes/generate_prometheusrule.py"
    )
    rule = find(rendered["production"], "PrometheusRule", "netweave-alerts")
    assert rule["spec"]["groups"] == yaml.safe_load(rules_text)["groups"]
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerts and all("runbook_url" in a["annotations"] for a in alerts)


def test_prometheus_rule_drift_is_detected() -> None:
    generator = load_generator()
    rules_text = generator.RULES.read_text(encoding="utf-8")
    changed = rules_text.replace("interval: 30s", "interval: 31s", 1)
    assert changed != rules_text
    assert generator.render(changed) != generator.OUTPUT.read_text(encoding="utf-8")
