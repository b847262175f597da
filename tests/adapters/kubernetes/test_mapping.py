"""Node JSON -> NodeView -> O2ims objects: pure functions over make_node() nodes."""

from __future__ import annotations

import base64
import copy
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import object_key, serialize
from adapters.kubernetes.inventory import Inventory
from adapters.kubernetes.mapping import (
    ID_NAMESPACE,
    NATIVE_K8S_API,
    ClusterIdentity,
    node_extensions,
    node_resource,
    node_view,
    parse_quantity,
    quantity_units,
    uuid5_string,
)
from adapters.kubernetes.mapping_file import (
    MappingConfig,
    load_mapping_file,
    parse_mapping,
)
from adapters.mapping_files import MappingFileError
from devstack.kubesim.nodes import make_node, simulated_cluster
from server.deployment_profiles import PROFILE_FIELDS

CLUSTER = ClusterIdentity(
    uid="0b6c4d0e-1f7a-4c55-9f0e-7e1b6b2d9a01",
    name="lab",
    version="v1.31.4",
    api_url="https://api.lab.example:6443",
    ca_cert=base64.b64encode(b"-----BEGIN CERTIFICATE-----\n...").decode(),
)
ADAPTER = "kubernetes-lab"


def build(
    nodes: list[dict[str, Any]],
    config: MappingConfig | None = None,
    cluster: ClusterIdentity = CLUSTER,
) -> dict[tuple[str, str], domain_pb2.InventoryObject]:
    config = config or MappingConfig()
    inventory = Inventory(config, ADAPTER)
    inventory.reset(cluster)
    inventory.apply(
        {node["metadata"]["name"]: node_view(node, config, cluster.name) for node in nodes}
    )
    return {object_key(obj): obj for obj in inventory.objects()}


def of_kind(objects: dict[tuple[str, str], domain_pb2.InventoryObject], kind: str) -> list[Any]:
    return [getattr(obj, kind) for key, obj in sorted(objects.items()) if key[0] == kind]


def by_name(objects: dict[tuple[str, str], domain_pb2.InventoryObject], name: str) -> Any:
    (found,) = [r for r in of_kind(objects, "resource") if r.name == name]
    return found


def is_uuid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


# --- quantities ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "resource", "units"),
    [
        ("8", "cpu", 8000),
        ("3800m", "cpu", 3800),
        ("0.5", "cpu", 500),
        ("1500001u", "cpu", 1501),  # rounded up, as Kubernetes does
        ("16Gi", "memory", 16 * 2**30),
        ("16384Ki", "memory", 16 * 2**20),
        ("512Mi", "memory", 512 * 2**20),
        ("129e6", "memory", 129_000_000),
        ("1.5k", "pods", 1500),
        ("1M", "memory", 1_000_000),
        ("garbage", "memory", 0),
    ],
)
def test_quantities_become_integers(quantity: str, resource: str, units: int) -> None:
    assert quantity_units(quantity, resource) == units


def test_a_bad_quantity_is_named() -> None:
    with pytest.raises(ValueError, match="'12x'"):
        parse_quantity("12x")


# --- what a node becomes --------------------------------------------------------------------


def test_a_gpu_node_has_cpu_memory_and_gpu_elements_with_their_own_types() -> None:
    node = make_node(
        "gpu-1",
        instance_type="p4d.24xlarge",
        cpu="96",
        memory="1152Gi",
        extended={"nvidia.com/gpu": "8"},
        labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"},
    )
    objects = build([node])
    resource = by_name(objects, "gpu-1")
    assert resource.global_asset_id == node["spec"]["providerID"]
    assert "kubelet v1.31.4" in resource.description
    assert [element.name for element in resource.elements] == [
        "gpu-1/cpu",
        "gpu-1/memory",
        "gpu-1/nvidia.com/gpu",
    ]
    for element in resource.elements:
        assert element.parent_id == resource.resource_id
        assert element.resource_pool_id == resource.resource_pool_id
        assert is_uuid(element.resource_id)
    gpu = resource.elements[2]
    assert gpu.extensions["capacity"] == "8"
    types = {t.resource_type_id: t for t in of_kind(objects, "resource_type")}
    assert types[gpu.resource_type_id].model == "NVIDIA-A100-SXM4-40GB"
    assert types[gpu.resource_type_id].vendor == "nvidia.com"
    assert types[resource.resource_type_id].model == "p4d.24xlarge"
    assert types[resource.resource_type_id].resource_kind == domain_pb2.RESOURCE_KIND_PHYSICAL
    assert types[resource.resource_type_id].resource_class == domain_pb2.RESOURCE_CLASS_COMPUTE


def test_extensions_carry_the_node_but_never_its_volatile_fields() -> None:
    node = make_node("n1", taints=[{"key": "dedicated", "value": "ran", "effect": "NoSchedule"}])
    resource = by_name(build([node]), "n1")
    extensions = json_format.MessageToDict(resource.extensions)
    assert extensions["labels"]["kubernetes.io/hostname"] == "n1"
    assert extensions["taints"] == [{"effect": "NoSchedule", "key": "dedicated", "value": "ran"}]
    assert extensions["nodeInfo"]["kubeletVersion"] == "v1.31.4"
    assert {c["type"] for c in extensions["conditions"]} >= {"Ready"}
    text = str(extensions)
    for volatile in ("lastHeartbeatTime", "resourceVersion", "managedFields", "images"):
        assert volatile not in text


def test_pools_and_sites_follow_the_zone_label_with_a_default_pool() -> None:
    nodes = [
        make_node("a1", zone="zone-a"),
        make_node("b1", zone="zone-b"),
        make_node("x", zone=None),
    ]
    objects = build(nodes)
    pools = {p.name: p for p in of_kind(objects, "resource_pool")}
    assert set(pools) == {"zone-a", "zone-b", "lab-default"}
    sites = {s.o_cloud_site_id: s for s in of_kind(objects, "site")}
    assert {sites[p.o_cloud_site_id].name for p in pools.values()} == set(pools)
    assert by_name(objects, "x").resource_pool_id == pools["lab-default"].resource_pool_id
    (location,) = of_kind(objects, "location")
    assert location.global_location_id == f"{ADAPTER}/region-1"
    assert location.address == "region-1"  # O2ims needs one of coordinate/civic/address
    assert {s.global_location_id for s in sites.values()} == {location.global_location_id}


def test_identical_nodes_share_one_type() -> None:
    nodes = simulated_cluster(nodes=20, gpu_every=0)
    objects = build(nodes)
    type_of = {
        node["metadata"]["labels"]["node.kubernetes.io/instance-type"]: set[str]() for node in nodes
    }
    for node in nodes:
        resource = by_name(objects, node["metadata"]["name"])
        type_of[node["metadata"]["labels"]["node.kubernetes.io/instance-type"]].add(
            resource.resource_type_id
        )
    # m5.xlarge control planes, m5.2xlarge workers, c5n.9xlarge SR-IOV workers
    assert len(type_of) == 3 and all(len(ids) == 1 for ids in type_of.values())
    assert len({next(iter(ids)) for ids in type_of.values()}) == 3


def test_deployment_manager_sums_allocatable_and_counts_nodes() -> None:
    nodes = [
        make_node("a", cpu="4", memory="16Gi", extended={"nvidia.com/gpu": "2"}),
        make_node("b", cpu="3500m", memory="8192Mi", unschedulable=True),
    ]
    nodes[1]["status"]["allocatable"]["cpu"] = "3500m"
    nodes[0]["status"]["allocatable"]["cpu"] = "3"
    nodes[0]["status"]["allocatable"]["memory"] = "16Gi"
    nodes[1]["status"]["allocatable"]["memory"] = "8388608Ki"
    (manager,) = of_kind(build(nodes), "deployment_manager")
    capacity = json_format.MessageToDict(manager.capacity)
    assert capacity["cpu"] == 6.5
    assert capacity["memory"] == 24 * 2**30
    assert capacity["pods"] == 220
    assert capacity["extendedResources"] == {"nvidia.com/gpu": 2}
    assert capacity["nodes"] == {"total": 2, "ready": 2, "schedulable": 1}
    capabilities = json_format.MessageToDict(manager.capabilities)
    assert capabilities["kubernetesVersion"] == "v1.31.4"
    assert capabilities["cni"] == ["calico"]
    assert capabilities["architectures"] == ["amd64"]
    assert capabilities["extendedResources"] == ["nvidia.com/gpu"]
    assert manager.service_uri == CLUSTER.api_url
    assert list(manager.supported_locations) == [f"{ADAPTER}/region-1"]


def test_the_profile_is_the_native_one_the_core_serves() -> None:
    admin = {"admin_user": "root", "admin_client_cert": "Y2VydA==", "admin_client_key": "a2V5"}
    cluster = ClusterIdentity(**{**CLUSTER.__dict__, "admin": admin})
    (manager,) = of_kind(build([make_node("a")], cluster=cluster), "deployment_manager")
    profile = json_format.MessageToDict(manager.extensions)["profiles"][NATIVE_K8S_API]
    public, credentials = PROFILE_FIELDS[NATIVE_K8S_API]
    assert set(profile) == set(public) | set(credentials)
    assert profile["cluster_api_endpoint"] == CLUSTER.api_url
    assert profile["cluster_ca_cert"] == CLUSTER.ca_cert
    (without,) = of_kind(build([make_node("a")]), "deployment_manager")
    assert set(json_format.MessageToDict(without.extensions)["profiles"][NATIVE_K8S_API]) == set(
        public
    )


def test_cni_is_unknown_without_a_known_annotation() -> None:
    node = make_node("a")
    node["metadata"]["annotations"] = {}
    (manager,) = of_kind(build([node]), "deployment_manager")
    assert manager.capabilities["cni"] == ["unknown"]


# --- what changes, and what does not -------------------------------------------------------


def test_a_heartbeat_leaves_the_view_unchanged() -> None:
    node = make_node("a", now=datetime(2026, 1, 1, tzinfo=UTC))
    later = copy.deepcopy(node)
    for condition in later["status"]["conditions"]:
        condition["lastHeartbeatTime"] = "2026-01-01T00:10:00Z"
    later["metadata"]["resourceVersion"] = "999"
    later["metadata"]["managedFields"][0]["time"] = "2026-01-01T00:10:00Z"
    later["status"]["images"] = []
    config = MappingConfig()
    assert node_view(node, config, "lab") == node_view(later, config, "lab")


def test_a_relabel_moves_the_node_to_another_pool() -> None:
    node = make_node("a", zone="zone-a")
    moved = copy.deepcopy(node)
    moved["metadata"]["labels"]["topology.kubernetes.io/zone"] = "zone-b"
    before, after = by_name(build([node]), "a"), by_name(build([moved]), "a")
    assert before.resource_id == after.resource_id
    assert before.resource_pool_id != after.resource_pool_id


@pytest.mark.parametrize("change", ["taint", "cordon", "not-ready"])
def test_taints_cordons_and_conditions_change_the_extensions(change: str) -> None:
    node = make_node("a")
    changed = copy.deepcopy(node)
    if change == "taint":
        changed["spec"]["taints"] = [{"key": "maintenance", "effect": "NoExecute"}]
    elif change == "cordon":
        changed["spec"]["unschedulable"] = True
    else:
        ready = changed["status"]["conditions"][-1]
        ready.update(status="False", reason="KubeletNotReady")
    config = MappingConfig()
    assert node_view(node, config, "lab") != node_view(changed, config, "lab")
    before, after = by_name(build([node]), "a"), by_name(build([changed]), "a")
    assert before.extensions != after.extensions
    assert before.resource_id == after.resource_id


def test_ids_are_stable_and_differ_across_clusters_and_node_recreation() -> None:
    nodes = simulated_cluster(nodes=12)
    first, again = build(nodes), build(copy.deepcopy(nodes))
    assert {k: serialize(v) for k, v in first.items()} == {
        k: serialize(v) for k, v in again.items()
    }
    other = ClusterIdentity(**{**CLUSTER.__dict__, "uid": "6a1f0c1e-0000-4000-8000-000000000002"})
    other_ids = {key[1] for key in build(nodes, cluster=other) if key[0] != "location"}
    assert not other_ids & {key[1] for key in first}
    recreated = copy.deepcopy(nodes[5])
    recreated["metadata"]["uid"] = "9d0e3a5c-1111-4222-8333-444455556666"
    name = nodes[5]["metadata"]["name"]
    assert by_name(build([recreated]), name).resource_id != by_name(first, name).resource_id
    for key, obj in first.items():
        if key[0] != "location":
            assert is_uuid(key[1]), obj


# --- the mapping file ----------------------------------------------------------------------


def test_the_mapping_file_overrides_pools_locations_and_types(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(
        """
pool_label: rack
default_region: paris
resource_types:
  labels: [kubernetes.io/arch]
  kind: logical
locations:
  paris:
    name: Paris DC
    coordinate: {longitude: 2.35, latitude: 48.85}
    civic_address: [{ca_type: 3, ca_value: Paris}]
  region-1: {ref: static-paris}
pools:
  r1: {name: rack one}
sites:
  _default: {name: unracked}
deployment_manager: {name: lab-cluster, extensions: {owner: ran-team}}
"""
    )
    config = load_mapping_file(path)
    nodes = [
        make_node("a", labels={"rack": "r1"}, region=None),
        make_node("b", region=None),
        make_node("c", labels={"rack": "r1"}),
    ]
    objects = build(nodes, config)
    assert {p.name for p in of_kind(objects, "resource_pool")} == {"rack one", "lab-default"}
    assert "unracked" in {s.name for s in of_kind(objects, "site")}
    (location,) = of_kind(objects, "location")  # region-1 is declared elsewhere
    assert (location.name, location.address, location.coordinate.latitude) == (
        "Paris DC",
        "",
        48.85,
    )
    (manager,) = of_kind(objects, "deployment_manager")
    assert manager.name == "lab-cluster" and manager.extensions["owner"] == "ran-team"
    assert sorted(manager.supported_locations) == [f"{ADAPTER}/paris", "static-paris"]
    (node_type,) = {t.resource_type_id for t in of_kind(objects, "resource") if t.name}
    assert objects["resource_type", node_type].resource_type.resource_kind == (
        domain_pb2.RESOURCE_KIND_LOGICAL
    )


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"pool_lable": "x"}, "pool_lable: unknown key"),
        ({"pool_label": 3}, "pool_label: must be a string"),
        ({"pool_label": ""}, "pool_label: must not be empty"),
        ({"resource_types": {"kind": "virtual"}}, "resource_types.kind"),
        ({"resource_types": {"labels": "a"}}, "resource_types.labels"),
        ({"locations": {"r": {"coordinate": {"latitude": 91, "longitude": 0}}}}, "latitude"),
        ({"locations": {"r": {"coordinate": {"latitude": 1}}}}, "coordinate.longitude: missing"),
        ({"locations": {"r": {"ref": "x", "name": "y"}}}, "locations.r: a location declared"),
        ({"locations": {"r": {"civic_address": [{"ca_type": "a"}]}}}, "ca_type"),
        ({"sites": {"a": {"extensions": {"when": datetime.now(UTC)}}}}, "sites.a.extensions.when"),
        ({"deployment_manager": []}, "deployment_manager: must be a mapping"),
        (["a"], "the top level: must be a mapping"),
    ],
)
def test_a_bad_mapping_file_names_the_key(document: Any, named: str) -> None:
    with pytest.raises(MappingFileError, match=named.replace(".", r"\.")):
        parse_mapping(document, "mapping.yaml")


def test_an_unreadable_mapping_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MappingFileError, match="cannot read"):
        load_mapping_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [")
    with pytest.raises(MappingFileError, match="not valid YAML"):
        load_mapping_file(broken)


def test_node_resources_equal_what_struct_update_builds() -> None:
    """node_resource fills its Structs directly, for speed: the result must be exactly
    Struct.update()'s, for odd label and capacity values too."""
    nodes = simulated_cluster(nodes=40, zones=2, seed=3)
    odd = copy.deepcopy(nodes[:3])
    odd[0]["metadata"]["labels"] = {}
    odd[0]["spec"]["taints"] = [{"key": "a", "value": "b", "effect": "NoSchedule"}]
    odd[1]["status"]["capacity"] = {"cpu": "4", "memory": "1Gi", "pods": 110, "odd": [1, None]}
    odd[1]["status"].update(allocatable={}, addresses=[], conditions=[])
    odd[2]["metadata"]["labels"] = {"a": 1, "b": None, "c": {"d": [], "e": {}}, "f": [1.5, False]}
    odd[2]["status"]["nodeInfo"] = {}
    config = MappingConfig()
    for node in nodes + odd:
        view = node_view(node, config, CLUSTER.name)
        built = node_resource(view, CLUSTER, config).resource
        expected = struct_pb2.Struct()
        expected.update(node_extensions(view))
        assert built.extensions == expected
        assert built.extensions.SerializeToString(deterministic=True) == (
            expected.SerializeToString(deterministic=True)
        )
        for element in built.elements:
            name = element.extensions.fields["resourceName"].string_value
            expected = struct_pb2.Struct()
            expected.update(
                {
                    "resourceName": name,
                    "capacity": view.capacity.get(name, ""),
                    "allocatable": view.allocatable.get(name, ""),
                    "model": view.element_models.get(name, ""),
                }
            )
            assert element.extensions == expected


def test_object_ids_are_uuid5_under_the_namespace() -> None:
    for name in ("", "kubernetes/x/node/y", "é/€/\U0001f600", "a" * 500):
        assert uuid5_string(name) == str(uuid.uuid5(ID_NAMESPACE, name))
