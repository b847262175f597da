"""One domain model, two wire models: the §3 attribute sets of Inventory 1.x and 2.0.0,
and the 2.0.0 cross references between locations, sites and pools."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import KINDS, object_key, serialize
from adapters.static.loader import load_inventory
from server.cache import InventoryCache
from server.store import Snapshot, StoredEvent
from server.wire import BuildContext, WireModel
from server.wire.printing import as_json
from server.wire.v1 import MODEL as V1
from server.wire.v2 import MODEL as V2
from tests.conftest import EXAMPLE_INVENTORY

SERVICE_URI = "https://o2ims.example.net"


@pytest.fixture(scope="module")
def objects() -> list[domain_pb2.InventoryObject]:
    return load_inventory(EXAMPLE_INVENTORY)


@pytest.fixture
def cache(objects: list[domain_pb2.InventoryObject]) -> InventoryCache:
    stored: dict[str, dict[str, bytes]] = {kind: {} for kind in KINDS}
    for obj in objects:
        kind, object_id = object_key(obj)
        stored[kind][object_id] = serialize(obj)
    cache = InventoryCache(SERVICE_URI)
    cache.load(Snapshot(version=len(objects), last_event_id="1-0", objects=stored))
    return cache


def _json(message: Any) -> dict[str, Any]:
    # What Envoy's transcoder prints: JSON names, defaults included, integral numbers as ints.
    return as_json(message)


def _all(cache: InventoryCache, model: WireModel, kind: str) -> list[dict[str, Any]]:
    return [_json(m) for _, m in cache.iter_wire(model, kind, cache.ids(kind))]


def test_cloud_info_spells_the_global_id_per_version(cache: InventoryCache) -> None:
    v1 = _json(cache.cloud_info(V1))
    v2 = _json(cache.cloud_info(V2))
    assert v1["globalcloudId"] == v1["globalCloudId"] == v2["globalCloudId"]
    assert "globalcloudId" not in v2
    for info in (v1, v2):
        assert info["serviceUri"] == SERVICE_URI
        assert {"oCloudId", "name", "description", "extensions"} <= set(info)


def test_v1_resource_types_embed_the_dictionary_and_v2_reference_it(
    cache: InventoryCache,
) -> None:
    v1_types = {t["resourceTypeId"]: t for t in _all(cache, V1, "resource_type")}
    v2_types = {t["resourceTypeId"]: t for t in _all(cache, V2, "resource_type")}
    assert v1_types.keys() == v2_types.keys()
    with_dictionary = [t for t in v2_types.values() if t["alarmDictionaryId"]]
    assert with_dictionary, "the example should give some types an alarm dictionary"
    for v2_type in with_dictionary:
        v1_type = v1_types[v2_type["resourceTypeId"]]
        assert "alarmDictionary" not in v2_type
        assert v1_type["alarmDictionary"]["alarmDictionaryId"] == v2_type["alarmDictionaryId"]
        assert v1_type["alarmDictionary"]["managementInterfaceId"] == ["O2IMS"]
        assert v1_type["alarmDictionaryId"] == v2_type["alarmDictionaryId"]
        assert v1_type["resourceKind"] in {"PHYSICAL", "LOGICAL", "UNDEFINED"}


def test_pools_carry_the_fields_of_their_version(cache: InventoryCache) -> None:
    v1_pools = _all(cache, V1, "resource_pool")
    v2_pools = _all(cache, V2, "resource_pool")
    for pool in v1_pools:
        assert {"oCloudId", "globalLocationId", "location", "extensions"} <= set(pool)
        assert "oCloudSiteId" not in pool
    for pool in v2_pools:
        assert {"oCloudSiteId", "oCloudId", "globalLocationId"} <= set(pool)
        assert "location" not in pool
    assert {p["globalLocationId"] for p in v1_pools} == {p["globalLocationId"] for p in v2_pools}


def test_v2_locations_sites_and_pools_reference_each_other_consistently(
    cache: InventoryCache,
) -> None:
    locations = {loc["globalLocationId"]: loc for loc in _all(cache, V2, "location")}
    sites = {site["oCloudSiteId"]: site for site in _all(cache, V2, "site")}
    pools = {pool["resourcePoolId"]: pool for pool in _all(cache, V2, "resource_pool")}
    assert len(locations) >= 2 and len(sites) >= 2
    for location_id, location in locations.items():
        assert location["oCloudSiteIds"], location_id
        for site_id in location["oCloudSiteIds"]:
            assert sites[site_id]["globalLocationId"] == location_id
        assert location["coordinate"]["type"] == "Point"
        assert len(location["coordinate"]["coordinates"]) in (2, 3)
    for site_id, site in sites.items():
        assert site_id in locations[site["globalLocationId"]]["oCloudSiteIds"]
        for pool_id in site["resourcePools"]:
            assert pools[pool_id]["oCloudSiteId"] == site_id
            assert pools[pool_id]["globalLocationId"] == site["globalLocationId"]
    assert {p for s in sites.values() for p in s["resourcePools"]} == set(pools)


def test_a_site_change_reaches_the_wire_objects_that_derive_from_it(
    cache: InventoryCache, objects: list[domain_pb2.InventoryObject]
) -> None:
    site_obj = next(o for o in objects if o.WhichOneof("kind") == "site")
    pool = next(
        p
        for p in _all(cache, V2, "resource_pool")
        if p["oCloudSiteId"] == site_obj.site.o_cloud_site_id
    )
    other_location = next(
        loc["globalLocationId"]
        for loc in _all(cache, V2, "location")
        if loc["globalLocationId"] != site_obj.site.global_location_id
    )
    moved = domain_pb2.InventoryObject()
    moved.CopyFrom(site_obj)
    moved.site.global_location_id = other_location
    applied = cache.apply(
        StoredEvent(
            stream_id="2-0",
            version=cache.version + 1,
            kind="site",
            object_id=moved.site.o_cloud_site_id,
            event="modify",
            prior=serialize(site_obj),
            post=serialize(moved),
        )
    )
    assert applied
    assert (
        _json(cache.get(V2, "resource_pool", pool["resourcePoolId"]))["globalLocationId"]
        == other_location
    )
    assert (
        _json(cache.get(V1, "resource_pool", pool["resourcePoolId"]))["globalLocationId"]
        == other_location
    )
    location = _json(cache.get(V2, "location", other_location))
    assert moved.site.o_cloud_site_id in location["oCloudSiteIds"]


# --- optional attributes: left out when unset, null where the 1.x model requires the key ----


def _context() -> BuildContext:
    objects: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    return BuildContext(objects, "", SERVICE_URI)


def test_a_type_without_a_dictionary_is_null_in_v1_and_has_no_id_in_v2() -> None:
    bare = domain_pb2.ResourceType(resource_type_id="5c459001-2644-4721-9365-a280dfca5954")

    v1 = _json(V1.builders["resource_type"](bare, _context()))
    v2 = _json(V2.builders["resource_type"](bare, _context()))

    assert v1["alarmDictionary"] is None
    assert "alarmDictionaryId" not in v1
    assert "alarmDictionaryId" not in v2 and "alarmDictionary" not in v2


def test_unset_optional_strings_are_left_out_and_mandatory_ones_stay() -> None:
    resource = domain_pb2.Resource(resource_id="r", resource_pool_id="p")
    location = domain_pb2.Location(global_location_id="ES-MAD")

    for model in (V1, V2):
        info = _json(model.builders["resource"](resource, _context()))
        assert "name" not in info and "parentId" not in info
        assert info["description"] == "" and info["globalAssetId"] == ""  # mandatory
    assert "address" not in _json(V2.builders["location"](location, _context()))
    named = domain_pb2.Resource(resource_id="r", name="du-1", parent_id="q")
    assert _json(V1.builders["resource"](named, _context()))["name"] == "du-1"


def test_numbers_print_as_the_transcoder_prints_them() -> None:
    extensions = struct_pb2.Struct()
    extensions.update({"memoryGb": 1040, "ratio": 0.25, "huge": 1e15, "nested": {"n": [3]}})

    printed = as_json(extensions)

    assert printed == {"memoryGb": 1040, "ratio": 0.25, "huge": 1e15, "nested": {"n": [3]}}
    assert type(printed["memoryGb"]) is int and type(printed["nested"]["n"][0]) is int
    assert type(printed["ratio"]) is float
    assert type(printed["huge"]) is float  # the C++ printer writes 1e+15
