"""The optional mapping file (NETWEAVE_AWS_MAPPING, --mapping): how an AWS account's
regions, zones, instances and EKS clusters become O2ims objects, read strictly (an unknown
key or a wrong type names the key and the file: exit code 2).

Every key is optional; the defaults are the ones shown (examples/aws-mapping.yaml):

    pool_tag: ""                      # "": one resource pool per zone; a tag key: one pool
                                      # per zone and value of that tag (instances without
                                      # the tag stay in their zone's pool)
    vendor: Amazon Web Services       # the vendor of every resource type
    locations:                        # by region
      eu-west-1:
        name: ""                      # default the region
        description: ""
        address: ""                   # default the region
        extensions: {}
      us-east-1:
        ref: paris-dc                 # declared elsewhere (the static inventory): used as
                                      # the global_location_id, not emitted by this adapter
    sites:                            # by zone name
      eu-west-1a: {name: "", description: "", extensions: {}}
    pools:                            # by zone name (the zone's own pool)
      eu-west-1a: {name: "", description: "", extensions: {}}
    deployment_managers:              # by EKS cluster name
      ran-core: {name: "", description: "", extensions: {}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from adapters import mapping_files as mf
from adapters.mapping_files import NamedSpec

DEFAULT_VENDOR: Final = "Amazon Web Services"


@dataclass(frozen=True)
class LocationSpec:
    """What the mapping file says about one region's location (all optional)."""

    ref: str = ""
    name: str = ""
    description: str = ""
    address: str = ""
    extensions: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MappingConfig:
    pool_tag: str = ""
    vendor: str = DEFAULT_VENDOR
    locations: Mapping[str, LocationSpec] = field(default_factory=dict)
    sites: Mapping[str, NamedSpec] = field(default_factory=dict)
    pools: Mapping[str, NamedSpec] = field(default_factory=dict)
    deployment_managers: Mapping[str, NamedSpec] = field(default_factory=dict)


def load_mapping_file(path: Path) -> MappingConfig:
    """The mapping file's configuration; MappingFileError naming the key on any problem."""
    return mf.load(path, _read_config)


def parse_mapping(document: Any, path: str | Path = "<mapping>") -> MappingConfig:
    """Like load_mapping_file, for an already parsed YAML document."""
    return mf.parse(document, path, _read_config)


_LOCATION_KEYS: Final = ("ref", "name", "description", "address", "extensions")
_TOP_KEYS: Final = ("pool_tag", "vendor", "locations", "sites", "pools", "deployment_managers")


def _location(value: Any, where: str) -> LocationSpec:
    item = mf.mapping(value, where, _LOCATION_KEYS, optional=True)
    ref = mf.text(item.get("ref", ""), mf.join(where, "ref"))
    if ref and set(item) != {"ref"}:
        others = ", ".join(sorted(set(item) - {"ref"}))
        raise mf.Problem(f"{where}: a location given by ref takes no other key ({others})")
    return LocationSpec(
        ref=ref,
        name=mf.text(item.get("name", ""), mf.join(where, "name")),
        description=mf.text(item.get("description", ""), mf.join(where, "description")),
        address=mf.text(item.get("address", ""), mf.join(where, "address")),
        extensions=mf.extensions(
            item.get("extensions", {}), mf.join(where, "extensions"), optional=True
        ),
    )


def _named(value: Any, where: str) -> NamedSpec:
    return mf.named(value, where, optional=True)


def _by_name(value: Any, where: str, read: Any) -> dict[str, Any]:
    return {
        key: read(item, mf.join(where, key))
        for key, item in mf.mapping(value, where, optional=True).items()
    }


def _read_config(document: Any) -> MappingConfig:
    top = mf.mapping(document, "", _TOP_KEYS)
    vendor = mf.text(top.get("vendor", DEFAULT_VENDOR), "vendor")
    if not vendor:
        raise mf.Problem("vendor: must not be empty")
    return MappingConfig(
        pool_tag=mf.text(top.get("pool_tag", ""), "pool_tag"),
        vendor=vendor,
        locations=_by_name(top.get("locations"), "locations", _location),
        sites=_by_name(top.get("sites"), "sites", _named),
        pools=_by_name(top.get("pools"), "pools", _named),
        deployment_managers=_by_name(top.get("deployment_managers"), "deployment_managers", _named),
    )
