"""The optional mapping file (NETWEAVE_KUBE_MAPPING, --mapping): how nodes become O2ims
objects, read strictly (an unknown key or a wrong type names the key and the file).

Every key is optional; the defaults are the ones shown:

    cluster_name: ""                  # "" = the kubeconfig's cluster (context) name
    pool_label: topology.kubernetes.io/zone      # one resource pool (and site) per value;
                                      # nodes without it share the pool "<cluster>-default"
    region_label: topology.kubernetes.io/region  # one location per value
    default_region: ""                # region of nodes without region_label; "" = cluster name
    resource_types:
      labels: [node.kubernetes.io/instance-type, kubernetes.io/arch, kubernetes.io/os]
                                      # node labels whose values make a node's hardware type
      vendor_label: ""                # label holding the vendor (also part of the type)
      model_label: node.kubernetes.io/instance-type   # label holding the model
      kind: physical                  # physical | logical: what a node is
      element_model_labels:           # extended resource -> node label naming its model
        nvidia.com/gpu: nvidia.com/gpu.product
    locations:                        # by region (label value, or default_region)
      region-1:
        global_location_id: ""        # default "<adapter name>/<region>"
        name: ""                      # default the region
        description: ""
        coordinate: {longitude: 2.35, latitude: 48.85, altitude: 35}
        civic_address: [{ca_type: 1, ca_value: Paris}]
        address: ""                   # default the region, when no coordinate/civic address
        extensions: {}
      region-2:
        ref: paris-dc                 # declared elsewhere (the static inventory): used as
                                      # the global_location_id, not emitted by this adapter
    sites:                            # by pool label value; `_default` = the default pool
      zone-a: {name: "", description: "", extensions: {}}
    pools:                            # same keys as sites
      zone-a: {name: "", description: "", extensions: {}}
    deployment_manager: {name: "", description: "", extensions: {}}
    alarms:                           # node condition alarms (condition_alarms.py): by alarm
      NodeNotReady: CRITICAL          # name, a severity (CRITICAL, MAJOR, MINOR, WARNING,
      NodeUnreachable: MAJOR          # INDETERMINATE) or off (no alarm for that condition)
      NodeMemoryPressure: MAJOR
      NodeDiskPressure: MAJOR
      NodePIDPressure: MINOR
      NodeNetworkUnavailable: CRITICAL
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from adapters import mapping_files as mf
from adapters.kubernetes.condition_alarms import ALARM_NAMES, DEFAULT_SEVERITIES, SEVERITIES
from adapters.mapping_files import NamedSpec

DEFAULT_POOL_KEY: Final = "_default"  # never a label value: those start alphanumerically


@dataclass(frozen=True)
class LocationSpec:
    """What the mapping file says about one region's location (all optional)."""

    ref: str = ""
    global_location_id: str = ""
    name: str = ""
    description: str = ""
    coordinate: tuple[float, float, float | None] | None = None  # longitude, latitude, alt
    civic_address: tuple[tuple[int, str], ...] = ()
    address: str = ""
    extensions: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MappingConfig:
    cluster_name: str = ""
    pool_label: str = "topology.kubernetes.io/zone"
    region_label: str = "topology.kubernetes.io/region"
    default_region: str = ""
    type_labels: tuple[str, ...] = (
        "node.kubernetes.io/instance-type",
        "kubernetes.io/arch",
        "kubernetes.io/os",
    )
    vendor_label: str = ""
    model_label: str = "node.kubernetes.io/instance-type"
    node_kind: str = "physical"
    element_model_labels: Mapping[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu": "nvidia.com/gpu.product"}
    )
    locations: Mapping[str, LocationSpec] = field(default_factory=dict)
    sites: Mapping[str, NamedSpec] = field(default_factory=dict)
    pools: Mapping[str, NamedSpec] = field(default_factory=dict)
    deployment_manager: NamedSpec = field(default_factory=NamedSpec)
    # Alarm name -> the perceived severity it is raised with; None: never raised.
    alarm_severities: Mapping[str, str | None] = field(
        default_factory=lambda: dict(DEFAULT_SEVERITIES)
    )


def load_mapping_file(path: Path) -> MappingConfig:
    """The mapping file's configuration; MappingFileError naming the key on any problem."""
    return mf.load(path, _read_config)


def parse_mapping(document: Any, path: str | Path = "<mapping>") -> MappingConfig:
    """Like load_mapping_file, for an already parsed YAML document."""
    return mf.parse(document, path, _read_config)


def _number(value: Any, where: str, limit: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise mf.Problem(f"{where}: must be a number")
    if limit is not None and abs(value) > limit:
        raise mf.Problem(f"{where}: must be between -{limit:g} and {limit:g}")
    return float(value)


def _text_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise mf.Problem(f"{where}: must be a list of strings")
    return tuple(mf.text(item, f"{where}[{index}]") for index, item in enumerate(value))


def _text_map(value: Any, where: str) -> dict[str, str]:
    return {
        key: mf.text(item, mf.join(where, key)) for key, item in mf.mapping(value, where).items()
    }


_LOCATION_KEYS: Final = (
    "ref",
    "global_location_id",
    "name",
    "description",
    "coordinate",
    "civic_address",
    "address",
    "extensions",
)
_TYPE_KEYS: Final = ("labels", "vendor_label", "model_label", "kind", "element_model_labels")
_TOP_KEYS: Final = (
    "cluster_name",
    "pool_label",
    "region_label",
    "default_region",
    "resource_types",
    "locations",
    "sites",
    "pools",
    "deployment_manager",
    "alarms",
)


def _location(value: Any, where: str) -> LocationSpec:
    item = mf.mapping(value, where, _LOCATION_KEYS)
    ref = mf.text(item.get("ref", ""), mf.join(where, "ref"))
    if ref and set(item) != {"ref"}:
        others = ", ".join(sorted(set(item) - {"ref"}))
        raise mf.Problem(
            f"{where}: a location declared elsewhere (ref) takes no other key: {others}"
        )
    coordinate = None
    if "coordinate" in item:
        point_where = mf.join(where, "coordinate")
        point = mf.mapping(item["coordinate"], point_where, ("longitude", "latitude", "altitude"))
        for axis in ("longitude", "latitude"):
            if axis not in point:
                raise mf.Problem(f"{mf.join(point_where, axis)}: missing")
        altitude = point.get("altitude")
        coordinate = (
            _number(point["longitude"], mf.join(point_where, "longitude"), 180.0),
            _number(point["latitude"], mf.join(point_where, "latitude"), 90.0),
            None if altitude is None else _number(altitude, mf.join(point_where, "altitude")),
        )
    civic: list[tuple[int, str]] = []
    civic_where = mf.join(where, "civic_address")
    elements = item.get("civic_address", [])
    if not isinstance(elements, list):
        raise mf.Problem(f"{civic_where}: must be a list of {{ca_type, ca_value}}")
    for index, element in enumerate(elements):
        element_where = f"{civic_where}[{index}]"
        entry = mf.mapping(element, element_where, ("ca_type", "ca_value"))
        ca_type = entry.get("ca_type")
        if isinstance(ca_type, bool) or not isinstance(ca_type, int) or not 0 <= ca_type <= 255:
            raise mf.Problem(f"{element_where}.ca_type: must be an integer from 0 to 255")
        civic.append((ca_type, mf.text(entry.get("ca_value"), f"{element_where}.ca_value")))
    return LocationSpec(
        ref=ref,
        global_location_id=mf.text(
            item.get("global_location_id", ""), mf.join(where, "global_location_id")
        ),
        name=mf.text(item.get("name", ""), mf.join(where, "name")),
        description=mf.text(item.get("description", ""), mf.join(where, "description")),
        coordinate=coordinate,
        civic_address=tuple(civic),
        address=mf.text(item.get("address", ""), mf.join(where, "address")),
        extensions=mf.extensions(item.get("extensions", {}), mf.join(where, "extensions")),
    )


def _alarm_severities(value: Any, where: str) -> dict[str, str | None]:
    """The default severities, overridden by `value` (alarm name -> severity or off)."""
    severities: dict[str, str | None] = dict(DEFAULT_SEVERITIES)
    for name, severity in mf.mapping(value, where, ALARM_NAMES).items():
        if severity is False or severity == "off":  # YAML reads a bare `off` as false
            severities[name] = None
        elif isinstance(severity, str) and severity in SEVERITIES:
            severities[name] = severity
        else:
            raise mf.Problem(
                f"{mf.join(where, name)}: must be one of {', '.join(SEVERITIES)} or off, "
                f"got {severity!r}"
            )
    return severities


def _read_config(document: Any) -> MappingConfig:
    top = mf.mapping(document, "", _TOP_KEYS)
    defaults = MappingConfig()
    types = mf.mapping(top.get("resource_types", {}), "resource_types", _TYPE_KEYS)
    kind = mf.text(types.get("kind", defaults.node_kind), "resource_types.kind")
    if kind not in ("physical", "logical"):
        raise mf.Problem(f"resource_types.kind: must be physical or logical, got {kind!r}")
    labels = (
        _text_list(types["labels"], "resource_types.labels")
        if "labels" in types
        else defaults.type_labels
    )
    for name in ("pool_label", "region_label"):
        if name in top and not mf.text(top[name], name):
            raise mf.Problem(f"{name}: must not be empty")
    return MappingConfig(
        cluster_name=mf.text(top.get("cluster_name", ""), "cluster_name"),
        pool_label=mf.text(top.get("pool_label", defaults.pool_label), "pool_label"),
        region_label=mf.text(top.get("region_label", defaults.region_label), "region_label"),
        default_region=mf.text(top.get("default_region", ""), "default_region"),
        type_labels=labels,
        vendor_label=mf.text(types.get("vendor_label", ""), "resource_types.vendor_label"),
        model_label=mf.text(
            types.get("model_label", defaults.model_label), "resource_types.model_label"
        ),
        node_kind=kind,
        element_model_labels=(
            _text_map(types["element_model_labels"], "resource_types.element_model_labels")
            if "element_model_labels" in types
            else defaults.element_model_labels
        ),
        locations={
            region: _location(value, f"locations.{region}")
            for region, value in mf.mapping(top.get("locations", {}), "locations").items()
        },
        sites={
            key: mf.named(value, f"sites.{key}")
            for key, value in mf.mapping(top.get("sites", {}), "sites").items()
        },
        pools={
            key: mf.named(value, f"pools.{key}")
            for key, value in mf.mapping(top.get("pools", {}), "pools").items()
        },
        deployment_manager=mf.named(top.get("deployment_manager", {}), "deployment_manager"),
        alarm_severities=_alarm_severities(top.get("alarms", {}), "alarms"),
    )
