"""The mapping, on what boto3 really returns from a moto account seeded through boto3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from o2ims.adapter.v1 import domain_pb2

from adapters.aws.clients import CallCounter, new_session, region_clients
from adapters.aws.ids import object_id
from adapters.aws.mapping import RegionObjects, instance_arn, region_objects
from adapters.aws.mapping_file import MappingConfig, load_mapping_file, parse_mapping
from adapters.aws.poll import InstanceTypeCache, fetch_region
from adapters.mapping_files import MappingFileError
from devstack.moto_server import MotoServer
from tests.adapters.aws.conftest import ACCOUNT, REPO, create_eks, ec2, launch, seed_account

DICTIONARY = "dictionary-id"


def mapped(region: str, config: MappingConfig | None = None) -> RegionObjects:
    clients = region_clients(new_session(), region, CallCounter(), max_attempts=2)
    facts = fetch_region(clients, ACCOUNT, InstanceTypeCache())
    return region_objects(facts, config or MappingConfig(), DICTIONARY)


def of_kind(objects: RegionObjects, kind: str) -> list[Any]:
    return [getattr(obj, kind) for obj in objects.objects if obj.WhichOneof("kind") == kind]


def resources(objects: RegionObjects) -> dict[str, domain_pb2.Resource]:
    return {r.extensions["instanceId"]: r for r in of_kind(objects, "resource")}


def types_by_name(objects: RegionObjects) -> dict[str, domain_pb2.ResourceType]:
    return {t.name: t for t in of_kind(objects, "resource_type")}


def test_an_instance_maps_to_a_resource_with_its_arn_tags_and_elements(moto: MotoServer) -> None:
    seeded = seed_account()
    objects = mapped("eu-west-1")
    gpu_id = seeded.instances["gpu-1"]
    resource = resources(objects)[gpu_id]
    arn = f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{gpu_id}"
    assert resource.global_asset_id == arn == instance_arn("eu-west-1", ACCOUNT, gpu_id)
    assert resource.resource_id == object_id("resource", arn)
    assert resource.name == "gpu-1"
    assert resource.description == "g5.xlarge Linux/UNIX"
    assert sorted(resource.tags) == ["Name=gpu-1", "team=ran"]
    extensions = json_format.MessageToDict(resource.extensions)
    assert extensions["tags"] == {"Name": "gpu-1", "team": "ran"}
    assert extensions["availabilityZone"] == "eu-west-1a"
    assert extensions["state"] in ("pending", "running")
    assert extensions["privateIpAddresses"] and extensions["launchTime"]
    names = sorted(element.name for element in resource.elements)
    # Its EBS volume, its network interface, its GPU.
    assert [names[0], names[1][:4], names[2]] == ["/dev/sda1", "eni-", "gpu0"]
    gpu = next(e for e in resource.elements if e.name == "gpu0")
    assert gpu.parent_id == resource.resource_id
    assert types_by_name(objects)["gpu NVIDIA A10G"].resource_type_id == gpu.resource_type_id


def test_instance_types_in_use_are_shared_resource_types(moto: MotoServer) -> None:
    seed_account()
    objects = mapped("eu-west-1")
    types = types_by_name(objects)
    instance_types = {name for name, t in types.items() if t.model == name}
    assert instance_types == {"m5.large", "g5.xlarge"}
    web = [r for r in resources(objects).values() if r.name.startswith("web-")]
    assert len(web) == 2
    assert {r.resource_type_id for r in web} == {types["m5.large"].resource_type_id}
    g5 = json_format.MessageToDict(types["g5.xlarge"].extensions)
    assert g5["vCpus"] == 4 and g5["memoryMiB"] == 16384
    assert g5["gpus"][0]["manufacturer"] == "NVIDIA" and g5["gpus"][0]["name"] == "A10G"
    assert g5["architectures"] == ["x86_64"]
    assert types["g5.xlarge"].alarm_dictionary_id == DICTIONARY
    assert types["g5.xlarge"].resource_class == domain_pb2.RESOURCE_CLASS_COMPUTE


def test_inference_accelerators_are_elements_and_type_facts(moto: MotoServer) -> None:
    seeded = seed_account()
    objects = mapped("us-east-1")
    inf1 = json_format.MessageToDict(types_by_name(objects)["inf1.xlarge"].extensions)
    assert inf1["accelerators"][0]["name"] == "Inferentia"
    resource = resources(objects)[seeded.instances["infer-1"]]
    assert "accelerator0" in [element.name for element in resource.elements]


def test_zones_are_sites_and_pools_and_the_region_a_location(moto: MotoServer) -> None:
    seed_account()
    objects = mapped("eu-west-1")
    (location,) = of_kind(objects, "location")
    assert location.name == "eu-west-1"
    sites = {s.name: s for s in of_kind(objects, "site")}
    pools = {p.name: p for p in of_kind(objects, "resource_pool")}
    assert {"eu-west-1a", "eu-west-1b", "eu-west-1c"} <= set(sites) == set(pools)
    assert pools["eu-west-1a"].o_cloud_site_id == sites["eu-west-1a"].o_cloud_site_id
    assert sites["eu-west-1a"].global_location_id == location.global_location_id
    web_2 = next(r for r in resources(objects).values() if r.name == "web-2")
    assert web_2.resource_pool_id == pools["eu-west-1b"].resource_pool_id


def test_an_eks_cluster_is_a_deployment_manager_with_the_k8s_profile(moto: MotoServer) -> None:
    seed_account()
    objects = mapped("eu-west-1")
    (manager,) = of_kind(objects, "deployment_manager")
    assert isinstance(manager, domain_pb2.DeploymentManager)
    assert manager.name == "ran-core"
    assert manager.service_uri.startswith("https://")
    extensions = json_format.MessageToDict(manager.extensions)
    profile = extensions["profiles"]["native_k8sapi"]
    assert profile["cluster_api_endpoint"] == manager.service_uri
    assert profile["cluster_ca_cert"]
    assert manager.deployment_manager_id == object_id(
        "deployment_manager", extensions["clusterArn"]
    )
    capacity = json_format.MessageToDict(manager.capacity)
    assert capacity["nodes"] == {"desired": 3, "min": 1, "max": 6}
    assert capacity["nodeGroups"][0]["instanceTypes"] == ["m5.large"]
    assert json_format.MessageToDict(manager.capabilities)["kubernetesVersion"] == "1.29"


def test_an_unchanged_account_maps_to_identical_bytes(moto: MotoServer) -> None:
    seed_account()
    first = [obj.SerializeToString(deterministic=True) for obj in mapped("eu-west-1").objects]
    second = [obj.SerializeToString(deterministic=True) for obj in mapped("eu-west-1").objects]
    assert first == second


def test_a_terminated_instance_is_not_a_resource(moto: MotoServer) -> None:
    seeded = seed_account()
    ec2("eu-west-1").terminate_instances(InstanceIds=[seeded.instances["web-1"]])
    assert seeded.instances["web-1"] not in resources(mapped("eu-west-1"))


def test_a_pool_tag_makes_a_pool_per_zone_and_value(moto: MotoServer) -> None:
    launch("eu-west-1", "m5.large", "eu-west-1a", name="du-1", tags={"o2ims-pool": "du"})
    launch("eu-west-1", "m5.large", "eu-west-1a", name="plain")
    objects = mapped("eu-west-1", MappingConfig(pool_tag="o2ims-pool"))
    pools = {p.name: p for p in of_kind(objects, "resource_pool")}
    by_name = {r.name: r for r in resources(objects).values()}
    assert by_name["du-1"].resource_pool_id == pools["eu-west-1a/o2ims-pool=du"].resource_pool_id
    assert by_name["plain"].resource_pool_id == pools["eu-west-1a"].resource_pool_id


def test_the_mapping_file_overrides_names_and_refs_locations(moto: MotoServer) -> None:
    create_eks("eu-west-1", "ran-core")
    config = parse_mapping(
        {
            "locations": {"eu-west-1": {"ref": "dublin-dc"}},
            "sites": {"eu-west-1a": {"name": "Dublin A"}},
            "deployment_managers": {"ran-core": {"name": "RAN core", "extensions": {"x": 1}}},
        }
    )
    objects = mapped("eu-west-1", config)
    assert of_kind(objects, "location") == []  # declared by another adapter
    sites = of_kind(objects, "site")
    assert "Dublin A" in [s.name for s in sites]
    assert {s.global_location_id for s in sites} == {"dublin-dc"}
    (manager,) = of_kind(objects, "deployment_manager")
    assert manager.name == "RAN core"


def test_the_example_mapping_file_loads() -> None:
    config = load_mapping_file(REPO / "examples" / "aws-mapping.yaml")
    assert config.vendor


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"pool_tags": "x"}, "pool_tags: unknown key"),
        ({"sites": {"eu-west-1a": {"nam": "x"}}}, "sites.eu-west-1a.nam: unknown key"),
        ({"locations": {"eu-west-1": {"ref": "x", "name": "y"}}}, "takes no other key"),
        ({"vendor": 3}, "vendor: must be a string"),
    ],
)
def test_a_bad_mapping_file_names_the_key(document: object, problem: str) -> None:
    with pytest.raises(MappingFileError, match=problem):
        parse_mapping(document, Path("aws-mapping.yaml"))
