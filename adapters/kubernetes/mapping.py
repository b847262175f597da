"""From Kubernetes Node JSON to O2ims objects: pure functions, no I/O.

Two steps, so the watch's hot path stays cheap. `node_view` reduces a Node (as the API
server sends it) to a NodeView: everything O2ims shows of it and nothing that changes on
every kubelet heartbeat (resourceVersion, managedFields, lastHeartbeatTime, images). Two
events whose views are equal change nothing, and no protobuf is built for them. Only a
changed view goes through `node_resource` (the node's Resource with its elements) and the
aggregates behind the derived objects (`resource_type`, `pool_objects`, `location`,
`deployment_manager`).

Ids are UUIDv5 under ID_NAMESPACE over `kubernetes/<kube-system namespace uid>/...` and
the backend identity of the object (a node's uid, a pool's label value, a type's
identity labels): stable across restarts, distinct across clusters, and new for a node
deleted and re-created under the same name (it gets a new uid).

A node's elements are one child Resource per resource it offers: cpu, memory, every
hugepages size it has, and every extended resource (GPUs, SR-IOV VFs, FPGAs...). Kubernetes
counts devices rather than naming them, so an element carries the count (capacity and
allocatable in its extensions), not one element per device.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from functools import cached_property, lru_cache
from typing import Any, Final, cast

from google.protobuf import struct_pb2
from o2ims.adapter.v1 import domain_pb2

from adapters.kubernetes.mapping_file import (
    DEFAULT_POOL_KEY,
    LocationSpec,
    MappingConfig,
)
from adapters.mapping_files import NamedSpec

# Fixed for ever: every id this adapter has given depends on it.
ID_NAMESPACE: Final = uuid.UUID("badc6d8c-4815-4b4f-8e27-538440f16ae6")
_ID_NAMESPACE_BYTES: Final = ID_NAMESPACE.bytes
NATIVE_K8S_API: Final = "native_k8sapi"  # server/deployment_profiles.py's profile name

_BINARY: Final = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL: Final = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
# Resources every node has that are not elements (pods is a count of slots; storage and
# attachable volumes are described in the node's extensions).
_NOT_ELEMENTS: Final = ("pods", "ephemeral-storage")
_NODE_INFO_KEYS: Final = frozenset(
    {
        "architecture",
        "bootID",
        "containerRuntimeVersion",
        "kernelVersion",
        "kubeProxyVersion",
        "kubeletVersion",
        "machineID",
        "operatingSystem",
        "osImage",
        "systemUUID",
    }
)
_CONDITION_KEYS: Final = ("type", "status", "reason", "message", "lastTransitionTime")
_ADDRESS_KEYS: Final = ("type", "address")
# Node annotations a CNI plugin leaves, by key prefix.
_CNI_ANNOTATION_PREFIXES: Final = (
    ("projectcalico.org/", "calico"),
    ("network.cilium.io/", "cilium"),
    ("io.cilium.network.", "cilium"),
    ("flannel.alpha.coreos.com/", "flannel"),
    ("kube-router.io/", "kube-router"),
    ("ovn.kubernetes.io/", "kube-ovn"),
    ("k8s.ovn.org/", "ovn-kubernetes"),
)
_CNI_PREFIXES: Final = tuple(prefix for prefix, _ in _CNI_ANNOTATION_PREFIXES)
_ROLE_PREFIX: Final = "node-role.kubernetes.io/"


def parse_quantity(quantity: str) -> Decimal:
    """A Kubernetes quantity ("8", "3800m", "16Gi", "129e6", "1.5k") as a number."""
    text = quantity.strip()
    try:
        if text[-2:] in _BINARY:
            return Decimal(text[:-2]) * _BINARY[text[-2:]]
        if text[-1:] in _DECIMAL:
            return Decimal(text[:-1]) * _DECIMAL[text[-1:]]
        return Decimal(text)
    except (InvalidOperation, IndexError):
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}") from None


def quantity_units(quantity: str, resource: str) -> int:
    """The quantity as an integer: millicores for cpu, else units (bytes, devices),
    rounded up as Kubernetes does. A quantity that does not parse counts 0."""
    if type(quantity) is str:  # exactly str: a subclass could compare equal yet differ
        return _cached_units(quantity, resource == "cpu")
    return _units(quantity, resource == "cpu")


@lru_cache(maxsize=4096)
def _cached_units(quantity: str, cpu: bool) -> int:
    """_units, remembered: the same few quantities recur on every node."""
    return _units(quantity, cpu)


def _units(quantity: str, cpu: bool) -> int:
    try:
        value = parse_quantity(quantity)
    except ValueError:
        return 0
    if cpu:
        value *= 1000
    return int(value.to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True)
class ClusterIdentity:
    """Who the cluster is and how to reach it (cluster.py reads it)."""

    uid: str  # of namespace kube-system
    name: str  # cluster (or context) name, or the mapping's cluster_name
    version: str  # the API server's gitVersion
    api_url: str
    ca_cert: str  # base64 PEM, "" when the API server's certificate is not pinned
    admin: Mapping[str, str] | None = None  # admin_user, admin_client_cert, admin_client_key


@dataclass(frozen=True)
class NodeView:
    """What O2ims shows of one node: equal views publish identical objects.

    Built on every watch event, so it holds the parsed JSON's own sub-mappings (never
    modified) instead of copies, and works out what derives from them (pool, region,
    type, CNI...) only when asked, which happens only for a view that changed.
    """

    name: str
    uid: str
    created: str
    provider_id: str
    labels: Mapping[str, str]
    annotation_keys: tuple[str, ...]
    addresses: tuple[tuple[str, str], ...]
    conditions: tuple[tuple[str, ...], ...]  # _CONDITION_KEYS, in the node's order
    taints: tuple[tuple[tuple[str, str], ...], ...]
    unschedulable: bool
    capacity: Mapping[str, str]
    allocatable: Mapping[str, str]
    node_info: Mapping[str, str]
    default_region: str  # the region of a node without the region label
    config: MappingConfig = field(compare=False, repr=False)

    @property
    def ready(self) -> bool:
        return any(row[0] == "Ready" and row[1] == "True" for row in self.conditions)

    @cached_property
    def pool(self) -> str:
        """The pool label's value, DEFAULT_POOL_KEY when the node has none."""
        return self.labels.get(self.config.pool_label) or DEFAULT_POOL_KEY

    @cached_property
    def region(self) -> str:
        return self.labels.get(self.config.region_label) or self.default_region

    @cached_property
    def type_identity(self) -> tuple[tuple[str, str], ...]:
        """(label, value) of each label that makes the node's hardware type."""
        config = self.config
        labels = [*config.type_labels]
        for extra in (config.vendor_label, config.model_label):
            if extra and extra not in labels:
                labels.append(extra)
        return tuple((label, self.labels.get(label, "")) for label in labels)

    @cached_property
    def element_models(self) -> dict[str, str]:
        """Extended resource -> its model, from the labels the mapping names."""
        return {
            resource: self.labels[label]
            for resource, label in sorted(self.config.element_model_labels.items())
            if label in self.labels
        }

    @cached_property
    def cnis(self) -> tuple[str, ...]:
        """The CNI plugins whose annotations the node carries."""
        found = {
            name
            for key in self.annotation_keys
            if key.startswith(_CNI_PREFIXES)  # most keys are no CNI's: one test for them
            for prefix, name in _CNI_ANNOTATION_PREFIXES
            if key.startswith(prefix)
        }
        return tuple(sorted(found))

    @cached_property
    def element_resources(self) -> tuple[str, ...]:
        """element_resources(self), worked out once (the inventory and node_resource
        both need it)."""
        others = sorted(
            name
            for name, amount in self.capacity.items()
            if name not in ("cpu", "memory")
            and name not in _NOT_ELEMENTS
            and not name.startswith("attachable-volumes-")
            and (name.startswith("hugepages-") or "/" in name)
            and quantity_units(amount, name) > 0
        )
        return (*(name for name in ("cpu", "memory") if name in self.capacity), *others)


def _mapping_or_empty(value: Any) -> Mapping[str, str]:
    return value if isinstance(value, dict) else {}


def node_view(node: Mapping[str, Any], config: MappingConfig, cluster_name: str) -> NodeView:
    """The NodeView of a Node object (a JSON dict as the API server sends it, which the
    view shares: do not modify it afterwards)."""
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    node_info = status.get("nodeInfo") or {}
    return NodeView(
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        created=str(metadata.get("creationTimestamp", "")),
        provider_id=str(spec.get("providerID", "")),
        labels=_mapping_or_empty(metadata.get("labels")),
        annotation_keys=tuple(metadata.get("annotations") or ()),
        addresses=tuple(
            (address.get("type", ""), address.get("address", ""))
            for address in status.get("addresses") or ()
        ),
        # Spelled out (not a loop over _CONDITION_KEYS): this runs for every heartbeat.
        conditions=tuple(
            (
                condition.get("type", ""),
                condition.get("status", ""),
                condition.get("reason", ""),
                condition.get("message", ""),
                condition.get("lastTransitionTime", ""),
            )
            for condition in status.get("conditions") or ()
        ),
        taints=tuple(
            tuple((str(key), str(value)) for key, value in sorted(taint.items()))
            for taint in spec.get("taints") or ()
        ),
        unschedulable=bool(spec.get("unschedulable", False)),
        capacity=_mapping_or_empty(status.get("capacity")),
        allocatable=_mapping_or_empty(status.get("allocatable")),
        node_info={key: value for key, value in node_info.items() if key in _NODE_INFO_KEYS},
        default_region=config.default_region or cluster_name,
        config=config,
    )


# --- ids ------------------------------------------------------------------------------------


def object_id(cluster_uid: str, *parts: str) -> str:
    """The UUIDv5 of one object of the cluster whose kube-system namespace is `cluster_uid`."""
    return uuid5_string("/".join(("kubernetes", cluster_uid, *parts)))


def uuid5_string(name: str) -> str:
    """str(uuid.uuid5(ID_NAMESPACE, name)), without the UUID object (three ids per node
    are computed at every list; uuid.uuid5 and str() cost several times this)."""
    digest = bytearray(hashlib.sha1(_ID_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def resource_id(cluster_uid: str, node_uid: str) -> str:
    return object_id(cluster_uid, "node", node_uid)


def element_id(cluster_uid: str, node_uid: str, resource: str) -> str:
    return object_id(cluster_uid, "node", node_uid, "element", resource)


@lru_cache(maxsize=1024)  # shared by many nodes
def node_type_id(cluster_uid: str, identity: tuple[tuple[str, str], ...]) -> str:
    return object_id(cluster_uid, "node-type", *(f"{label}={value}" for label, value in identity))


@lru_cache(maxsize=1024)  # shared by many nodes
def element_type_id(cluster_uid: str, resource: str, model: str) -> str:
    return object_id(cluster_uid, "element-type", resource, model)


@lru_cache(maxsize=1024)  # shared by many nodes
def pool_id(cluster_uid: str, pool_label: str, pool: str) -> str:
    if pool == DEFAULT_POOL_KEY:
        return object_id(cluster_uid, "pool", DEFAULT_POOL_KEY)
    return object_id(cluster_uid, "pool", f"{pool_label}={pool}")


def site_id(cluster_uid: str, pool_label: str, pool: str) -> str:
    if pool == DEFAULT_POOL_KEY:
        return object_id(cluster_uid, "site", DEFAULT_POOL_KEY)
    return object_id(cluster_uid, "site", f"{pool_label}={pool}")


def deployment_manager_id(cluster_uid: str) -> str:
    return object_id(cluster_uid, "deployment-manager")


def alarm_dictionary_id(cluster_uid: str) -> str:
    """The one alarm dictionary (alarms.py) that every ResourceType of the cluster uses."""
    return object_id(cluster_uid, "alarm-dictionary")


def location_id(config: MappingConfig, adapter_name: str, region: str) -> str:
    """A region's global location id: the mapping's ref or global_location_id, else
    `<adapter name>/<region>` (two clusters' adapters never claim the same location)."""
    spec = config.locations.get(region)
    if spec is not None and (spec.ref or spec.global_location_id):
        return spec.ref or spec.global_location_id
    return f"{adapter_name}/{region}"


# --- elements -------------------------------------------------------------------------------


def element_resources(view: NodeView) -> list[str]:
    """The resources of a node that become elements: cpu, memory, then every hugepages
    size and extended resource with a non-zero capacity, by name."""
    return list(view.element_resources)


def element_kind_and_class(
    resource: str, node_kind: str
) -> tuple[domain_pb2.ResourceKind.ValueType, domain_pb2.ResourceClass.ValueType]:
    """(ResourceKind, ResourceClass) of an element type: cpu, memory and devices are what
    a node is (physical by default); hugepages and virtual functions are logical; SR-IOV,
    RDMA and network devices are networking, everything else compute."""
    lowered = resource.lower()
    networking = any(word in lowered for word in ("sriov", "netdevice", "rdma", "/vf", "nic"))
    logical = resource.startswith("hugepages-") or "sriov" in lowered or "/vf" in lowered
    kind = (
        domain_pb2.RESOURCE_KIND_LOGICAL
        if logical or node_kind == "logical"
        else domain_pb2.RESOURCE_KIND_PHYSICAL
    )
    resource_class = (
        domain_pb2.RESOURCE_CLASS_NETWORKING if networking else domain_pb2.RESOURCE_CLASS_COMPUTE
    )
    return kind, resource_class


def element_model(view: NodeView, resource: str) -> str:
    return view.element_models.get(resource, "")


# --- objects --------------------------------------------------------------------------------


def _inventory(**kind: Any) -> domain_pb2.InventoryObject:
    return domain_pb2.InventoryObject(**kind)


# --- google.protobuf.Struct, filled directly ----------------------------------------------
# Struct.update() dispatches every value through Python isinstance chains; a node's
# extensions are mostly flat string maps, which these fill at a third of its cost, with
# exactly its result (tests/adapters/kubernetes/test_mapping.py checks it).


def _update(struct: struct_pb2.Struct, mapping: Mapping[str, Any]) -> None:
    """struct.update(mapping)."""
    fields = struct.fields
    for key, item in mapping.items():
        if type(item) is str:
            fields[key].string_value = item
        else:
            _set_value(fields[key], item)


def _set_value(value: struct_pb2.Value, item: Any) -> None:
    """What Struct.update() does with one value."""
    if isinstance(item, str):
        value.string_value = item
    elif item is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(item, bool):  # before int: a bool is an int
        value.bool_value = item
    elif isinstance(item, int | float):
        value.number_value = item
    elif isinstance(item, dict | struct_pb2.Struct):
        nested = value.struct_value
        nested.Clear()  # present even when empty
        if isinstance(item, dict):
            _update(nested, item)
        else:
            nested.update(cast(Any, item))
    elif isinstance(item, list | tuple | struct_pb2.ListValue):
        listed = value.list_value
        listed.Clear()
        if isinstance(item, struct_pb2.ListValue):
            listed.extend(item)
        else:
            add = listed.values.add
            for element in item:
                _set_value(add(), element)
    else:
        raise ValueError("Unexpected type")


def _set_rows(
    value: struct_pb2.Value, keys: tuple[str, ...], rows: Iterable[tuple[Any, ...]]
) -> None:
    """value = [dict(zip(keys, row)) for row in rows]."""
    listed = value.list_value
    listed.Clear()
    add = listed.values.add
    for row in rows:
        nested = add().struct_value
        nested.Clear()
        _update(nested, dict(zip(keys, row, strict=True)))


def _set_mapping(value: struct_pb2.Value, mapping: Mapping[str, Any]) -> None:
    """value = dict(mapping)."""
    nested = value.struct_value
    nested.Clear()
    _update(nested, mapping)


def _fill_node_extensions(struct: struct_pb2.Struct, view: NodeView) -> None:
    """struct.update(node_extensions(view)), without building the dict first."""
    fields = struct.fields
    fields["nodeName"].string_value = view.name
    fields["nodeUid"].string_value = view.uid
    fields["creationTimestamp"].string_value = view.created
    fields["providerID"].string_value = view.provider_id
    _set_mapping(fields["labels"], view.labels)
    _set_rows(fields["addresses"], _ADDRESS_KEYS, view.addresses)
    _set_rows(fields["conditions"], _CONDITION_KEYS, view.conditions)
    taints = fields["taints"].list_value
    taints.Clear()
    for taint in view.taints:
        _set_mapping(taints.values.add(), dict(taint))
    fields["unschedulable"].bool_value = view.unschedulable
    fields["ready"].bool_value = view.ready
    _set_mapping(fields["capacity"], view.capacity)
    _set_mapping(fields["allocatable"], view.allocatable)
    _set_mapping(fields["nodeInfo"], view.node_info)


def node_description(view: NodeView) -> str:
    info = view.node_info
    parts = [
        info.get("osImage", ""),
        f"kernel {info['kernelVersion']}" if info.get("kernelVersion") else "",
        f"kubelet {info['kubeletVersion']}" if info.get("kubeletVersion") else "",
    ]
    return ", ".join(part for part in parts if part) or f"Kubernetes node {view.name}"


def node_extensions(view: NodeView) -> dict[str, Any]:
    return {
        "nodeName": view.name,
        "nodeUid": view.uid,
        "creationTimestamp": view.created,
        "providerID": view.provider_id,
        "labels": dict(view.labels),
        "addresses": [dict(zip(_ADDRESS_KEYS, row, strict=True)) for row in view.addresses],
        "conditions": [dict(zip(_CONDITION_KEYS, row, strict=True)) for row in view.conditions],
        "taints": [dict(taint) for taint in view.taints],
        "unschedulable": view.unschedulable,
        "ready": view.ready,
        "capacity": dict(view.capacity),
        "allocatable": dict(view.allocatable),
        "nodeInfo": dict(view.node_info),
    }


def node_resource(
    view: NodeView, identity: ClusterIdentity, config: MappingConfig
) -> domain_pb2.InventoryObject:
    """The node's Resource, with one element per resource it offers."""
    own_id = resource_id(identity.uid, view.uid)
    owning_pool = pool_id(identity.uid, config.pool_label, view.pool)
    # Built in place: InventoryObject(resource=...) would copy the whole Resource.
    inventory_object = domain_pb2.InventoryObject()
    resource = inventory_object.resource
    resource.SetInParent()
    resource.resource_id = own_id
    resource.resource_pool_id = owning_pool
    resource.resource_type_id = node_type_id(identity.uid, view.type_identity)
    resource.name = view.name
    resource.description = node_description(view)
    resource.global_asset_id = view.provider_id or view.node_info.get("systemUUID", "")
    resource.tags.extend(
        sorted(
            label[len(_ROLE_PREFIX) :] for label in view.labels if label.startswith(_ROLE_PREFIX)
        )
    )
    _fill_node_extensions(resource.extensions, view)
    for name in element_resources(view):
        capacity = view.capacity.get(name, "")
        allocatable = view.allocatable.get(name, "")
        element = resource.elements.add(
            resource_id=element_id(identity.uid, view.uid, name),
            resource_pool_id=owning_pool,
            resource_type_id=element_type_id(identity.uid, name, element_model(view, name)),
            name=f"{view.name}/{name}",
            description=f"{name} of node {view.name}: capacity {capacity}, "
            f"allocatable {allocatable or 'none'}",
            parent_id=own_id,
        )
        _update(
            element.extensions,
            {
                "resourceName": name,
                "capacity": capacity,
                "allocatable": allocatable,
                "model": element_model(view, name),
            },
        )
    return inventory_object


def _vendor_model(config: MappingConfig, identity: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    values = dict(identity)
    return values.get(config.vendor_label, ""), values.get(config.model_label, "")


def node_type(
    identity: tuple[tuple[str, str], ...], cluster: ClusterIdentity, config: MappingConfig
) -> domain_pb2.InventoryObject:
    """The ResourceType shared by every node of this hardware identity."""
    vendor, model = _vendor_model(config, identity)
    shown = [value for _, value in identity if value]
    described = ", ".join(f"{label}={value}" for label, value in identity if value)
    message = domain_pb2.ResourceType(
        resource_type_id=node_type_id(cluster.uid, identity),
        name=" ".join(shown) if shown else "kubernetes-node",
        description=f"Kubernetes node ({described or 'no identifying labels'})",
        vendor=vendor,
        model=model,
        resource_kind=(
            domain_pb2.RESOURCE_KIND_LOGICAL
            if config.node_kind == "logical"
            else domain_pb2.RESOURCE_KIND_PHYSICAL
        ),
        resource_class=domain_pb2.RESOURCE_CLASS_COMPUTE,
        alarm_dictionary_id=alarm_dictionary_id(cluster.uid),
    )
    message.extensions.update(
        {"kubernetesNode": True, "labels": {label: value for label, value in identity}}
    )
    return _inventory(resource_type=message)


def element_type(
    resource: str, model: str, cluster: ClusterIdentity, config: MappingConfig
) -> domain_pb2.InventoryObject:
    """The ResourceType of one kind of node element (a resource name and its model)."""
    kind, resource_class = element_kind_and_class(resource, config.node_kind)
    vendor = resource.split("/", 1)[0] if "/" in resource else ""
    message = domain_pb2.ResourceType(
        resource_type_id=element_type_id(cluster.uid, resource, model),
        name=f"{resource} {model}".strip(),
        description=f"Node resource {resource}" + (f" ({model})" if model else ""),
        vendor=vendor,
        model=model,
        resource_kind=kind,
        resource_class=resource_class,
        alarm_dictionary_id=alarm_dictionary_id(cluster.uid),
    )
    message.extensions.update({"resourceName": resource})
    return _inventory(resource_type=message)


def pool_name(pool: str, cluster: ClusterIdentity) -> str:
    return f"{cluster.name}-default" if pool == DEFAULT_POOL_KEY else pool


def pool_objects(
    pool: str, region_location_id: str, cluster: ClusterIdentity, config: MappingConfig
) -> tuple[domain_pb2.InventoryObject, domain_pb2.InventoryObject]:
    """The Site and the ResourcePool of one pool (a pool label value, or the default)."""
    default_name = pool_name(pool, cluster)
    labelled = (
        f"nodes without the label {config.pool_label}"
        if pool == DEFAULT_POOL_KEY
        else f"nodes labelled {config.pool_label}={pool}"
    )
    site_spec = config.sites.get(pool, NamedSpec())
    pool_spec = config.pools.get(pool, NamedSpec())
    site = domain_pb2.Site(
        o_cloud_site_id=site_id(cluster.uid, config.pool_label, pool),
        global_location_id=region_location_id,
        name=site_spec.name or default_name,
        description=site_spec.description or f"Kubernetes cluster {cluster.name}: {labelled}",
    )
    site.extensions.update(dict(site_spec.extensions))
    resource_pool = domain_pb2.ResourcePool(
        resource_pool_id=pool_id(cluster.uid, config.pool_label, pool),
        name=pool_spec.name or default_name,
        description=pool_spec.description or f"Kubernetes cluster {cluster.name}: {labelled}",
        o_cloud_site_id=site.o_cloud_site_id,
        location=region_location_id,
    )
    extensions: dict[str, Any] = {"cluster": cluster.name, "nodeLabel": config.pool_label}
    if pool != DEFAULT_POOL_KEY:
        extensions["nodeLabelValue"] = pool
    resource_pool.extensions.update({**extensions, **pool_spec.extensions})
    return _inventory(site=site), _inventory(resource_pool=resource_pool)


def location(
    region: str, adapter_name: str, cluster: ClusterIdentity, config: MappingConfig
) -> domain_pb2.InventoryObject | None:
    """The Location of a region; None when the mapping declares it elsewhere (ref). With
    no coordinate, civic address or address configured, its address is the region name
    (O2ims requires one of the three)."""
    spec = config.locations.get(region, LocationSpec())
    if spec.ref:
        return None
    message = domain_pb2.Location(
        global_location_id=location_id(config, adapter_name, region),
        name=spec.name or region,
        description=spec.description
        or f"Region {region} of Kubernetes cluster {cluster.name} ({config.region_label})",
        address=spec.address,
    )
    if spec.coordinate is not None:
        longitude, latitude, altitude = spec.coordinate
        message.coordinate.longitude = longitude
        message.coordinate.latitude = latitude
        if altitude is not None:
            message.coordinate.altitude = altitude
    for ca_type, ca_value in spec.civic_address:
        message.civic_address.add(ca_type=ca_type, ca_value=ca_value)
    if not (spec.coordinate or spec.civic_address or spec.address):
        message.address = region
    message.extensions.update({"region": region, **spec.extensions})
    return _inventory(location=message)


@dataclass(frozen=True)
class ClusterTotals:
    """What the deployment manager reports about all nodes together."""

    allocatable: Mapping[str, int]  # resource -> millicores (cpu) or units
    nodes: int
    ready: int
    schedulable: int
    runtimes: tuple[str, ...]
    architectures: tuple[str, ...]
    operating_systems: tuple[str, ...]
    kubelet_versions: tuple[str, ...]
    cnis: tuple[str, ...]
    extended_resources: tuple[str, ...]


def deployment_manager(
    cluster: ClusterIdentity,
    config: MappingConfig,
    totals: ClusterTotals,
    location_ids: Iterable[str],
) -> domain_pb2.InventoryObject:
    """The cluster as a DeploymentManager: capabilities, allocatable capacity, and the
    native_k8sapi profile (server/deployment_profiles.py) in extensions.profiles."""
    spec = config.deployment_manager
    allocatable = totals.allocatable
    hugepages = {
        name: units for name, units in sorted(allocatable.items()) if name.startswith("hugepages-")
    }
    extended = {name: units for name, units in sorted(allocatable.items()) if "/" in name}
    capacity: dict[str, Any] = {
        "cpu": allocatable.get("cpu", 0) / 1000,
        "memory": allocatable.get("memory", 0),
        "pods": allocatable.get("pods", 0),
        "ephemeralStorage": allocatable.get("ephemeral-storage", 0),
        "hugepages": hugepages,
        "extendedResources": extended,
        "nodes": {"total": totals.nodes, "ready": totals.ready, "schedulable": totals.schedulable},
    }
    capabilities = {
        "kubernetesVersion": cluster.version,
        "containerRuntimes": list(totals.runtimes),
        "cni": list(totals.cnis) or ["unknown"],
        "architectures": list(totals.architectures),
        "operatingSystems": list(totals.operating_systems),
        "kubeletVersions": list(totals.kubelet_versions),
        "extendedResources": list(totals.extended_resources),
    }
    profile = {"cluster_api_endpoint": cluster.api_url, "cluster_ca_cert": cluster.ca_cert}
    profile.update(cluster.admin or {})
    message = domain_pb2.DeploymentManager(
        deployment_manager_id=deployment_manager_id(cluster.uid),
        name=spec.name or cluster.name,
        description=spec.description
        or f"Kubernetes cluster {cluster.name} ({cluster.version or 'version unknown'})",
        service_uri=cluster.api_url,
        supported_locations=sorted(set(location_ids)),
    )
    message.capabilities.update(capabilities)
    message.capacity.update(capacity)
    message.extensions.update(
        {
            **spec.extensions,
            "clusterName": cluster.name,
            "clusterUid": cluster.uid,
            "profiles": {NATIVE_K8S_API: profile},
        }
    )
    return _inventory(deployment_manager=message)
