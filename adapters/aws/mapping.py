"""How one region's AWS facts (boto3 response items, unchanged) become O2ims objects.

    region                      -> Location (and the parent of its sites)
    availability / Local Zone   -> Site, and its ResourcePool (or one pool per zone and
                                   value of the mapping's pool_tag)
    EC2 instance (not terminated)-> Resource: name from the Name tag, description the type
                                   and platform, globalAssetId the instance ARN, elements for
                                   its EBS volumes, network interfaces and the type's
                                   GPUs/accelerators, extensions with tags, state, zone,
                                   private addresses and launch time
    instance type in use        -> ResourceType (vCPUs, memory, GPUs, accelerators,
                                   architectures), shared by the instances of that type
    element (volume, interface, GPU model) -> a ResourceType of its own
    EKS cluster                 -> DeploymentManager: serviceUri the endpoint, version,
                                   node-group capacity, the native_k8sapi profile

Every id is ids.object_id over the object's ARN (or, for what has none, the account and
the AWS name), so ids are stable across polls and restarts and distinct across accounts.
Nothing here reads a clock or a counter: an unchanged account maps to identical objects,
which is what lets the publisher emit nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from o2ims.adapter.v1 import domain_pb2

from adapters.aws.ids import object_id
from adapters.aws.mapping_file import LocationSpec, MappingConfig
from adapters.mapping_files import NamedSpec

NATIVE_K8S_API: Final = "native_k8sapi"  # server/deployment_profiles.py's profile name
# Instances in this state are gone (AWS lists them for about an hour more).
GONE_STATES: Final = frozenset({"terminated"})
# Zones an account cannot use: not published.
NOT_OPTED_IN: Final = "not-opted-in"
DEFAULT_PLATFORM: Final = "Linux/UNIX"


@dataclass(frozen=True)
class RegionFacts:
    """What one poll of one region read (boto3 items as returned)."""

    account: str
    region: str
    zones: Sequence[Mapping[str, Any]]
    instances: Sequence[Mapping[str, Any]]
    instance_types: Mapping[str, Mapping[str, Any]]  # type name -> describe_instance_types item
    clusters: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]] = ()


@dataclass
class RegionObjects:
    """The objects one region maps to, and what the alarm seam needs to name resources."""

    objects: list[domain_pb2.InventoryObject] = field(default_factory=list)
    # instance id -> (resource id, resource type id)
    resources: dict[str, tuple[str, str]] = field(default_factory=dict)


# --- ARNs and ids -------------------------------------------------------------------------


def instance_arn(region: str, account: str, instance_id: str) -> str:
    return f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"


def volume_arn(region: str, account: str, volume_id: str) -> str:
    return f"arn:aws:ec2:{region}:{account}:volume/{volume_id}"


def interface_arn(region: str, account: str, interface_id: str) -> str:
    return f"arn:aws:ec2:{region}:{account}:network-interface/{interface_id}"


def location_id(account: str, region: str, config: MappingConfig) -> str:
    spec = config.locations.get(region, LocationSpec())
    return spec.ref or object_id("location", account, region)


def site_id(account: str, zone_name: str) -> str:
    return object_id("site", account, zone_name)


def pool_id(account: str, zone_name: str, tag: tuple[str, str] | None = None) -> str:
    if tag is None:
        return object_id("resource_pool", account, zone_name)
    return object_id("resource_pool", account, zone_name, "tag", *tag)


def instance_type_id(account: str, instance_type: str) -> str:
    return object_id("resource_type", account, "instance-type", instance_type)


def element_type_id(account: str, element: str, model: str) -> str:
    return object_id("resource_type", account, "element", element, model)


def resource_id(arn: str) -> str:
    return object_id("resource", arn)


def deployment_manager_id(cluster_arn: str) -> str:
    return object_id("deployment_manager", cluster_arn)


# --- helpers ------------------------------------------------------------------------------


def _inventory(**kind: Any) -> domain_pb2.InventoryObject:
    return domain_pb2.InventoryObject(**kind)


def tags_of(item: Mapping[str, Any]) -> dict[str, str]:
    return {str(tag["Key"]): str(tag.get("Value", "")) for tag in item.get("Tags") or ()}


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


def platform_of(instance: Mapping[str, Any]) -> str:
    details = instance.get("PlatformDetails")
    if details:
        return str(details)
    platform = instance.get("Platform")
    return "Windows" if platform == "windows" else DEFAULT_PLATFORM


def _zone_usable(zone: Mapping[str, Any]) -> bool:
    return zone.get("OptInStatus") != NOT_OPTED_IN


def gpus_of(type_info: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The type's GPUs and inference accelerators, one entry per model."""
    devices: list[dict[str, Any]] = []
    for gpu in (type_info.get("GpuInfo") or {}).get("Gpus") or ():
        devices.append(
            {
                "kind": "gpu",
                "manufacturer": str(gpu.get("Manufacturer", "")),
                "name": str(gpu.get("Name", "")),
                "count": int(gpu.get("Count", 0)),
                "memoryMiB": int((gpu.get("MemoryInfo") or {}).get("SizeInMiB", 0)),
            }
        )
    for accelerator in (type_info.get("InferenceAcceleratorInfo") or {}).get("Accelerators") or ():
        devices.append(
            {
                "kind": "accelerator",
                "manufacturer": str(accelerator.get("Manufacturer", "")),
                "name": str(accelerator.get("Name", "")),
                "count": int(accelerator.get("Count", 0)),
                "memoryMiB": int((accelerator.get("MemoryInfo") or {}).get("SizeInMiB", 0)),
            }
        )
    return devices


# --- locations, sites, pools --------------------------------------------------------------


def location(account: str, region: str, config: MappingConfig) -> domain_pb2.InventoryObject | None:
    """The Location of a region; None when the mapping declares it elsewhere (ref)."""
    spec = config.locations.get(region, LocationSpec())
    if spec.ref:
        return None
    message = domain_pb2.Location(
        global_location_id=location_id(account, region, config),
        name=spec.name or region,
        description=spec.description or f"AWS region {region} (account {account})",
        address=spec.address or region,
    )
    message.extensions.update({"region": region, "account": account, **spec.extensions})
    return _inventory(location=message)


def site(
    account: str, region: str, zone: Mapping[str, Any], config: MappingConfig
) -> domain_pb2.InventoryObject:
    name = str(zone["ZoneName"])
    spec = config.sites.get(name, NamedSpec())
    zone_type = str(zone.get("ZoneType", "availability-zone"))
    message = domain_pb2.Site(
        o_cloud_site_id=site_id(account, name),
        global_location_id=location_id(account, region, config),
        name=spec.name or name,
        description=spec.description or f"AWS {zone_type} {name} of region {region}",
    )
    message.extensions.update({**_zone_extensions(region, zone), **spec.extensions})
    return _inventory(site=message)


def _zone_extensions(region: str, zone: Mapping[str, Any]) -> dict[str, Any]:
    extensions: dict[str, Any] = {
        "region": region,
        "zoneName": str(zone["ZoneName"]),
        "zoneId": str(zone.get("ZoneId", "")),
        "zoneType": str(zone.get("ZoneType", "availability-zone")),
    }
    for key, name in (("ParentZoneName", "parentZoneName"), ("GroupName", "groupName")):
        if zone.get(key):
            extensions[name] = str(zone[key])
    return extensions


def pool(
    account: str,
    region: str,
    zone: Mapping[str, Any],
    config: MappingConfig,
    tag_value: str | None = None,
) -> domain_pb2.InventoryObject:
    """A zone's pool, or (tag_value given) the pool of the zone's instances so tagged."""
    name = str(zone["ZoneName"])
    spec = config.pools.get(name, NamedSpec()) if tag_value is None else NamedSpec()
    tag = None if tag_value is None else (config.pool_tag, tag_value)
    default_name = name if tag is None else f"{name}/{tag[0]}={tag[1]}"
    described = (
        f"EC2 instances in {name}"
        if tag is None
        else f"EC2 instances in {name} tagged {tag[0]}={tag[1]}"
    )
    message = domain_pb2.ResourcePool(
        resource_pool_id=pool_id(account, name, tag),
        name=spec.name or default_name,
        description=spec.description or described,
        o_cloud_site_id=site_id(account, name),
        location=location_id(account, region, config),
    )
    extensions = _zone_extensions(region, zone)
    if tag is not None:
        extensions.update({"tagKey": tag[0], "tagValue": tag[1]})
    message.extensions.update({**extensions, **spec.extensions})
    return _inventory(resource_pool=message)


# --- resource types -----------------------------------------------------------------------


def instance_type(
    account: str,
    name: str,
    type_info: Mapping[str, Any] | None,
    config: MappingConfig,
    alarm_dictionary_id: str,
) -> domain_pb2.InventoryObject:
    """An instance type in use; a type describe_instance_types does not know still gets
    one (its facts unknown) so that its instances keep a valid type."""
    info = type_info or {}
    processor = info.get("ProcessorInfo") or {}
    vcpus = int((info.get("VCpuInfo") or {}).get("DefaultVCpus", 0))
    memory = int((info.get("MemoryInfo") or {}).get("SizeInMiB", 0))
    devices = gpus_of(info)
    message = domain_pb2.ResourceType(
        resource_type_id=instance_type_id(account, name),
        name=name,
        description=(
            f"EC2 instance type {name}: {vcpus} vCPUs, {memory} MiB"
            if type_info
            else f"EC2 instance type {name} (not described by the API)"
        ),
        vendor=config.vendor,
        model=name,
        resource_kind=domain_pb2.RESOURCE_KIND_LOGICAL,
        resource_class=domain_pb2.RESOURCE_CLASS_COMPUTE,
        alarm_dictionary_id=alarm_dictionary_id,
    )
    extensions: dict[str, Any] = {
        "instanceType": name,
        "vCpus": vcpus,
        "memoryMiB": memory,
        "architectures": [str(arch) for arch in processor.get("SupportedArchitectures") or ()],
        "processorManufacturer": str(processor.get("Manufacturer", "")),
        "gpus": [device for device in devices if device["kind"] == "gpu"],
        "accelerators": [device for device in devices if device["kind"] == "accelerator"],
        "bareMetal": bool(info.get("BareMetal", False)),
        "burstable": bool(info.get("BurstablePerformanceSupported", False)),
        "currentGeneration": bool(info.get("CurrentGeneration", False)),
        "described": bool(type_info),
    }
    message.extensions.update(extensions)
    return _inventory(resource_type=message)


# The element kinds: (ResourceType name prefix, class).
VOLUME: Final = "ebs-volume"
INTERFACE: Final = "network-interface"
_ELEMENT_CLASSES: Final = {
    VOLUME: domain_pb2.RESOURCE_CLASS_STORAGE,
    INTERFACE: domain_pb2.RESOURCE_CLASS_NETWORKING,
    "gpu": domain_pb2.RESOURCE_CLASS_COMPUTE,
    "accelerator": domain_pb2.RESOURCE_CLASS_COMPUTE,
}


def element_type(
    account: str, element: str, model: str, config: MappingConfig, alarm_dictionary_id: str
) -> domain_pb2.InventoryObject:
    message = domain_pb2.ResourceType(
        resource_type_id=element_type_id(account, element, model),
        name=f"{element} {model}".strip(),
        description={
            VOLUME: "EBS volume attached to an EC2 instance",
            INTERFACE: "Elastic network interface of an EC2 instance",
        }.get(element, f"{model} ({element} of an EC2 instance type)"),
        vendor=config.vendor,
        model=model,
        resource_kind=(
            domain_pb2.RESOURCE_KIND_PHYSICAL
            if element in ("gpu", "accelerator")
            else domain_pb2.RESOURCE_KIND_LOGICAL
        ),
        resource_class=_ELEMENT_CLASSES[element],
        alarm_dictionary_id=alarm_dictionary_id,
    )
    return _inventory(resource_type=message)


# --- resources ----------------------------------------------------------------------------


def instance_resource(
    account: str,
    region: str,
    instance: Mapping[str, Any],
    type_info: Mapping[str, Any] | None,
    config: MappingConfig,
) -> tuple[domain_pb2.Resource, list[tuple[str, str]]]:
    """The Resource of one instance, and the (element kind, model) of its elements (their
    types must be published too)."""
    instance_id = str(instance["InstanceId"])
    arn = instance_arn(region, account, instance_id)
    tags = tags_of(instance)
    type_name = str(instance.get("InstanceType", ""))
    zone = str((instance.get("Placement") or {}).get("AvailabilityZone", ""))
    tag_value = tags.get(config.pool_tag) if config.pool_tag else None
    platform = platform_of(instance)
    interfaces = instance.get("NetworkInterfaces") or ()
    private_addresses = sorted(
        {
            str(address["PrivateIpAddress"])
            for interface in interfaces
            for address in interface.get("PrivateIpAddresses") or ()
            if address.get("PrivateIpAddress")
        }
        | ({str(instance["PrivateIpAddress"])} if instance.get("PrivateIpAddress") else set())
    )
    this_id = resource_id(arn)
    message = domain_pb2.Resource(
        resource_id=this_id,
        resource_pool_id=pool_id(
            account, zone, (config.pool_tag, tag_value) if tag_value else None
        ),
        resource_type_id=instance_type_id(account, type_name),
        name=tags.get("Name") or instance_id,
        description=f"{type_name} {platform}",
        global_asset_id=arn,
        tags=sorted(f"{key}={value}" for key, value in tags.items()),
    )
    message.extensions.update(
        {
            "instanceId": instance_id,
            "instanceType": type_name,
            "state": str((instance.get("State") or {}).get("Name", "")),
            "region": region,
            "availabilityZone": zone,
            "platform": platform,
            "architecture": str(instance.get("Architecture", "")),
            "privateIpAddresses": private_addresses,
            "launchTime": _iso(instance.get("LaunchTime")),
            "vpcId": str(instance.get("VpcId", "")),
            "subnetId": str(instance.get("SubnetId", "")),
            "imageId": str(instance.get("ImageId", "")),
            "tags": tags,
        }
    )
    element_models: list[tuple[str, str]] = []
    for mapping in instance.get("BlockDeviceMappings") or ():
        ebs = mapping.get("Ebs")
        if not ebs or not ebs.get("VolumeId"):
            continue
        volume_id = str(ebs["VolumeId"])
        element = message.elements.add(
            resource_id=resource_id(volume_arn(region, account, volume_id)),
            resource_pool_id=message.resource_pool_id,
            resource_type_id=element_type_id(account, VOLUME, ""),
            name=f"{mapping.get('DeviceName', volume_id)}",
            description=f"EBS volume {volume_id}",
            global_asset_id=volume_arn(region, account, volume_id),
            parent_id=this_id,
        )
        element.extensions.update(
            {
                "volumeId": volume_id,
                "deviceName": str(mapping.get("DeviceName", "")),
                "deleteOnTermination": bool(ebs.get("DeleteOnTermination", False)),
            }
        )
        element_models.append((VOLUME, ""))
    for interface in interfaces:
        interface_id = str(interface.get("NetworkInterfaceId", ""))
        if not interface_id:
            continue
        element = message.elements.add(
            resource_id=resource_id(interface_arn(region, account, interface_id)),
            resource_pool_id=message.resource_pool_id,
            resource_type_id=element_type_id(account, INTERFACE, ""),
            name=interface_id,
            description=str(interface.get("Description") or f"network interface {interface_id}"),
            global_asset_id=interface_arn(region, account, interface_id),
            parent_id=this_id,
        )
        element.extensions.update(
            {
                "networkInterfaceId": interface_id,
                "deviceIndex": int((interface.get("Attachment") or {}).get("DeviceIndex", 0)),
                "macAddress": str(interface.get("MacAddress", "")),
                "privateIpAddress": str(interface.get("PrivateIpAddress", "")),
                "subnetId": str(interface.get("SubnetId", "")),
                "vpcId": str(interface.get("VpcId", "")),
            }
        )
        element_models.append((INTERFACE, ""))
    for device in gpus_of(type_info or {}):
        model = f"{device['manufacturer']} {device['name']}".strip()
        for index in range(device["count"]):
            element = message.elements.add(
                resource_id=object_id("resource", arn, device["kind"], model, str(index)),
                resource_pool_id=message.resource_pool_id,
                resource_type_id=element_type_id(account, device["kind"], model),
                name=f"{device['kind']}{index}",
                description=f"{model} of {instance_id}",
                parent_id=this_id,
            )
            element.extensions.update({"memoryMiB": device["memoryMiB"], "index": index})
        element_models.append((device["kind"], model))
    return message, element_models


# --- EKS ----------------------------------------------------------------------------------


def deployment_manager(
    account: str,
    region: str,
    cluster: Mapping[str, Any],
    nodegroups: Iterable[Mapping[str, Any]],
    config: MappingConfig,
) -> domain_pb2.InventoryObject:
    """An EKS cluster as a DeploymentManager with the native_k8sapi profile."""
    name = str(cluster["name"])
    arn = str(cluster.get("arn") or f"arn:aws:eks:{region}:{account}:cluster/{name}")
    spec = config.deployment_managers.get(name, NamedSpec())
    version = str(cluster.get("version", ""))
    endpoint = str(cluster.get("endpoint", ""))
    groups: list[dict[str, Any]] = []
    desired = minimum = maximum = 0
    for group in sorted(nodegroups, key=lambda item: str(item.get("nodegroupName", ""))):
        scaling = group.get("scalingConfig") or {}
        desired += int(scaling.get("desiredSize", 0))
        minimum += int(scaling.get("minSize", 0))
        maximum += int(scaling.get("maxSize", 0))
        groups.append(
            {
                "name": str(group.get("nodegroupName", "")),
                "status": str(group.get("status", "")),
                "instanceTypes": [str(item) for item in group.get("instanceTypes") or ()],
                "capacityType": str(group.get("capacityType", "")),
                "desiredSize": int(scaling.get("desiredSize", 0)),
                "minSize": int(scaling.get("minSize", 0)),
                "maxSize": int(scaling.get("maxSize", 0)),
                "version": str(group.get("version", "")),
            }
        )
    message = domain_pb2.DeploymentManager(
        deployment_manager_id=deployment_manager_id(arn),
        name=spec.name or name,
        description=spec.description
        or f"EKS cluster {name} in {region} (Kubernetes {version or 'version unknown'})",
        service_uri=endpoint,
        supported_locations=[location_id(account, region, config)],
    )
    message.capabilities.update(
        {
            "kubernetesVersion": version,
            "platformVersion": str(cluster.get("platformVersion", "")),
            "status": str(cluster.get("status", "")),
        }
    )
    message.capacity.update(
        {
            "nodeGroups": groups,
            "nodes": {"desired": desired, "min": minimum, "max": maximum},
        }
    )
    profile = {
        "cluster_api_endpoint": endpoint,
        "cluster_ca_cert": str((cluster.get("certificateAuthority") or {}).get("data", "")),
    }
    message.extensions.update(
        {
            **spec.extensions,
            "clusterName": name,
            "clusterArn": arn,
            "region": region,
            "account": account,
            "profiles": {NATIVE_K8S_API: profile},
        }
    )
    return _inventory(deployment_manager=message)


# --- a whole region -----------------------------------------------------------------------


def region_objects(
    facts: RegionFacts, config: MappingConfig, alarm_dictionary_id: str
) -> RegionObjects:
    """Every object of one region. ResourceTypes are per account: regions sharing a type
    map it identically, and the adapter keeps one copy."""
    account, region = facts.account, facts.region
    result = RegionObjects()
    add = result.objects.append
    located = location(account, region, config)
    if located is not None:
        add(located)
    zones = {str(zone["ZoneName"]): zone for zone in facts.zones if _zone_usable(zone)}
    for zone in zones.values():
        add(site(account, region, zone, config))
        add(pool(account, region, zone, config))
    tagged_pools: set[tuple[str, str]] = set()
    used_types: set[str] = set()
    element_models: set[tuple[str, str]] = set()
    resources = []
    for instance in facts.instances:
        if (instance.get("State") or {}).get("Name") in GONE_STATES:
            continue
        zone_name = str((instance.get("Placement") or {}).get("AvailabilityZone", ""))
        if zone_name not in zones:
            # A zone the zone list lacks (an Outpost, or a zone listed since): its site
            # and pool come from what the instance says.
            zones[zone_name] = {"ZoneName": zone_name}
            add(site(account, region, zones[zone_name], config))
            add(pool(account, region, zones[zone_name], config))
        type_name = str(instance.get("InstanceType", ""))
        type_info = facts.instance_types.get(type_name)
        resource, models = instance_resource(account, region, instance, type_info, config)
        resources.append(resource)
        result.resources[str(instance["InstanceId"])] = (
            resource.resource_id,
            resource.resource_type_id,
        )
        used_types.add(type_name)
        element_models.update(models)
        tag_value = tags_of(instance).get(config.pool_tag) if config.pool_tag else None
        if tag_value and (zone_name, tag_value) not in tagged_pools:
            tagged_pools.add((zone_name, tag_value))
            add(pool(account, region, zones[zone_name], config, tag_value))
    for type_name in sorted(used_types):
        add(
            instance_type(
                account, type_name, facts.instance_types.get(type_name), config, alarm_dictionary_id
            )
        )
    for element, model in sorted(element_models):
        add(element_type(account, element, model, config, alarm_dictionary_id))
    result.objects.extend(_inventory(resource=resource) for resource in resources)
    for cluster, nodegroups in facts.clusters:
        add(deployment_manager(account, region, cluster, nodegroups, config))
    return result
