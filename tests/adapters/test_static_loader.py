"""The static adapter's inventory file: what it accepts and how it refuses the rest."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import KINDS, object_key
from adapters.static.fields import is_uuid
from adapters.static.loader import InventoryFileError, load_inventory

POOL = "40000000-0000-4000-8000-000000000001"
SERVER_TYPE = "30000000-0000-4000-8000-000000000001"
NIC_TYPE = "30000000-0000-4000-8000-000000000002"
SERVER_ONE = "50000000-0000-4000-8000-000000000001"
SERVER_TWO = "50000000-0000-4000-8000-000000000002"
NIC_ONE = "50000000-0000-4000-8000-000000000011"
UNKNOWN = "99999999-0000-4000-8000-000000000009"

# Small but complete: every kind and every kind of reference appears once.
VALID = f"""\
oCloud:
  oCloudId: 00000000-0000-4000-8000-000000000001
  globalCloudId: 00000000-0000-4000-8000-000000000002
  name: test-cloud
locations:
  - globalLocationId: loc-a
    name: Location A
    address: 1 Main Street
    coordinate: {{longitude: 13.4, latitude: 52.5}}
sites:
  - oCloudSiteId: 10000000-0000-4000-8000-000000000001
    globalLocationId: loc-a
    name: site-a
alarmDictionaries:
  - alarmDictionaryId: 20000000-0000-4000-8000-000000000001
    managementInterfaceId: [O2IMS]
    alarmDefinition:
      - alarmDefinitionId: 20000000-0000-4000-8000-0000000000a1
        alarmName: Fan failure
        alarmChangeType: ADDED
        clearingType: MANUAL
resourceTypes:
  - resourceTypeId: {SERVER_TYPE}
    name: pserver
    resourceKind: PHYSICAL
    resourceClass: COMPUTE
    alarmDictionaryId: 20000000-0000-4000-8000-000000000001
  - resourceTypeId: {NIC_TYPE}
    name: pserver_if
    resourceKind: PHYSICAL
    resourceClass: NETWORKING
resourcePools:
  - resourcePoolId: {POOL}
    name: pool-a
    oCloudSiteId: 10000000-0000-4000-8000-000000000001
resources:
  - resourceId: {SERVER_ONE}
    resourcePoolId: {POOL}
    resourceTypeId: {SERVER_TYPE}
    description: server one
    elements:
      - resourceId: {NIC_ONE}
        resourceTypeId: {NIC_TYPE}
        description: NIC of server one
  - resourceId: {SERVER_TWO}
    resourcePoolId: {POOL}
    resourceTypeId: {SERVER_TYPE}
    description: server two
deploymentManagers:
  - deploymentManagerId: 60000000-0000-4000-8000-000000000001
    name: k8s
    serviceUri: https://k8s.example.net:6443
    supportedLocations: [loc-a]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ocloud.yaml"
    path.write_text(text)
    return path


def line_of(text: str, prefix: str) -> int:
    """The 1-based number of the last line starting with `prefix` (indentation included)."""
    numbers = [n for n, line in enumerate(text.splitlines(), start=1) if line.startswith(prefix)]
    assert numbers, f"no line starts with {prefix!r}"
    return numbers[-1]


def edited(old: str, new: str) -> str:
    assert VALID.count(old) == 1, f"{old!r} must occur exactly once in VALID"
    return VALID.replace(old, new)


def count_resources(resource: domain_pb2.Resource) -> int:
    return 1 + sum(count_resources(element) for element in resource.elements)


def test_example_inventory_describes_a_realistic_lab(example_inventory: Path) -> None:
    objects = load_inventory(example_inventory)
    by_kind: dict[str, list[domain_pb2.InventoryObject]] = {kind: [] for kind in KINDS}
    for obj in objects:
        by_kind[obj.WhichOneof("kind") or ""].append(obj)
    counts = Counter({kind: len(items) for kind, items in by_kind.items()})
    assert counts["o_cloud"] == 1
    assert counts["location"] == 2
    assert counts["site"] == 2
    assert counts["resource_pool"] >= 2
    assert counts["resource_type"] >= 3
    assert counts["alarm_dictionary"] >= 1
    assert counts["resource"] >= 20
    assert counts["deployment_manager"] == 1

    o_cloud = by_kind["o_cloud"][0].o_cloud
    assert o_cloud.name == "netweave-lab"
    assert o_cloud.extensions.fields
    dictionaries = [obj.alarm_dictionary for obj in by_kind["alarm_dictionary"]]
    assert all(list(d.management_interface_id) == ["O2IMS"] for d in dictionaries)
    assert sum(len(d.alarm_definition) for d in dictionaries) >= 2
    pools = [obj.resource_pool for obj in by_kind["resource_pool"]]
    assert all(pool.location and pool.extensions.fields for pool in pools)

    resources = [obj.resource for obj in by_kind["resource"]]
    assert sum(1 for resource in resources if resource.elements) >= 10
    assert all(r.global_asset_id and r.description and r.tags for r in resources)
    elements = [element for resource in resources for element in resource.elements]
    assert any("Ethernet" in element.description for element in elements)
    for resource in resources:
        for element in resource.elements:
            assert element.parent_id == resource.resource_id
            assert element.resource_pool_id == resource.resource_pool_id

    manager = by_kind["deployment_manager"][0].deployment_manager
    assert manager.service_uri.startswith("https://")
    location_ids = {obj.location.global_location_id for obj in by_kind["location"]}
    assert set(manager.supported_locations) == location_ids
    assert manager.capabilities.fields and manager.capacity.fields


def test_example_inventory_ids_are_distinct_uuids(example_inventory: Path) -> None:
    objects = load_inventory(example_inventory)
    keys = [object_key(obj) for obj in objects]
    assert len(set(keys)) == len(keys)
    resource_ids = [
        r.resource_id for obj in objects if obj.HasField("resource") for r in _walk(obj.resource)
    ]
    assert len(resource_ids) >= 40
    other_ids = [object_id for kind, object_id in keys if kind not in ("location", "resource")]
    definition_ids = [
        definition.alarm_definition_id
        for obj in objects
        if obj.HasField("alarm_dictionary")
        for definition in obj.alarm_dictionary.alarm_definition
    ]
    all_ids = resource_ids + other_ids + definition_ids
    assert all(is_uuid(object_id) for object_id in all_ids)
    # Distinct across kinds too: a pasted id would make the example misleading.
    assert len(set(all_ids)) == len(all_ids)


def _walk(resource: domain_pb2.Resource) -> list[domain_pb2.Resource]:
    return [resource, *(r for element in resource.elements for r in _walk(element))]


def test_objects_come_parents_first_with_enums_mapped(tmp_path: Path) -> None:
    objects = load_inventory(write(tmp_path, VALID))
    kinds = [obj.WhichOneof("kind") for obj in objects]
    assert kinds == sorted(kinds, key=KINDS.index)
    server_type = next(o.resource_type for o in objects if o.HasField("resource_type"))
    assert server_type.resource_kind == domain_pb2.RESOURCE_KIND_PHYSICAL
    assert server_type.resource_class == domain_pb2.RESOURCE_CLASS_COMPUTE
    definition = next(o for o in objects if o.HasField("alarm_dictionary"))
    alarm = definition.alarm_dictionary.alarm_definition[0]
    assert alarm.alarm_change_type == domain_pb2.ALARM_CHANGE_TYPE_ADDED
    assert alarm.clearing_type == domain_pb2.CLEARING_TYPE_MANUAL
    location = next(o.location for o in objects if o.HasField("location"))
    assert (location.coordinate.longitude, location.coordinate.latitude) == (13.4, 52.5)
    assert not location.coordinate.HasField("altitude")


def test_elements_nest_to_any_depth_and_inherit_pool_and_parent(tmp_path: Path) -> None:
    deep = edited(
        "        description: NIC of server one\n",
        "        description: NIC of server one\n"
        "        elements:\n"
        "          - resourceId: 50000000-0000-4000-8000-000000000111\n"
        f"            resourceTypeId: {NIC_TYPE}\n"
        "            description: port 0\n"
        "            elements:\n"
        "              - resourceId: 50000000-0000-4000-8000-000000001111\n"
        f"                resourceTypeId: {NIC_TYPE}\n"
        "                description: transceiver of port 0\n",
    )
    objects = load_inventory(write(tmp_path, deep))
    resources = [obj.resource for obj in objects if obj.HasField("resource")]
    assert [r.resource_id for r in resources] == [SERVER_ONE, SERVER_TWO]
    nic = resources[0].elements[0]
    port = nic.elements[0]
    transceiver = port.elements[0]
    assert (nic.parent_id, port.parent_id, transceiver.parent_id) == (
        SERVER_ONE,
        NIC_ONE,
        "50000000-0000-4000-8000-000000000111",
    )
    assert {nic.resource_pool_id, port.resource_pool_id, transceiver.resource_pool_id} == {POOL}
    assert transceiver.description == "transceiver of port 0"


# (test id, text to replace, replacement, needle on the expected line, message fragment)
INVALID_CASES = [
    (
        "malformed_yaml",
        "    name: site-a\n",
        "    name: site-a\n     extra: [unclosed\n",
        "     extra: [unclosed",
        "malformed YAML",
    ),
    (
        "duplicate_top_level_resource",
        f"  - resourceId: {SERVER_TWO}\n",
        f"  - resourceId: {SERVER_ONE}\n",
        f"  - resourceId: {SERVER_ONE}",
        f"duplicate resourceId '{SERVER_ONE}' (first defined at line",
    ),
    (
        "duplicate_between_element_and_top_level_resource",
        f"  - resourceId: {SERVER_TWO}\n",
        f"  - resourceId: {NIC_ONE}\n",
        f"  - resourceId: {NIC_ONE}",
        f"duplicate resourceId '{NIC_ONE}'",
    ),
    (
        "unknown_pool",
        f"  - resourceId: {SERVER_TWO}\n    resourcePoolId: {POOL}\n",
        f"  - resourceId: {SERVER_TWO}\n    resourcePoolId: {UNKNOWN}\n",
        f"    resourcePoolId: {UNKNOWN}",
        f"resource '{SERVER_TWO}' names unknown resourcePoolId '{UNKNOWN}'",
    ),
    (
        "unknown_resource_type_of_element",
        f"        resourceTypeId: {NIC_TYPE}\n",
        f"        resourceTypeId: {UNKNOWN}\n",
        f"        resourceTypeId: {UNKNOWN}",
        f"resource '{NIC_ONE}' names unknown resourceTypeId '{UNKNOWN}'",
    ),
    (
        "non_uuid_id",
        f"  - resourceId: {SERVER_TWO}\n",
        "  - resourceId: server-two\n",
        "  - resourceId: server-two",
        "resourceId 'server-two' is not a UUID",
    ),
    (
        "uppercase_uuid",
        f"  - resourceId: {SERVER_TWO}\n",
        "  - resourceId: 5000000A-0000-4000-8000-000000000002\n",
        "  - resourceId: 5000000A",
        "is not a UUID",
    ),
    (
        "unknown_key",
        "    description: server two\n",
        "    description: server two\n    colour: blue\n",
        "    colour: blue",
        "unknown key 'colour'",
    ),
    (
        "bad_enum",
        "    resourceClass: NETWORKING\n",
        "    resourceClass: WIRELESS\n",
        "    resourceClass: WIRELESS",
        "resourceClass 'WIRELESS' is not one of COMPUTE, NETWORKING, STORAGE, UNDEFINED",
    ),
    (
        "proto_enum_spelling",
        "        clearingType: MANUAL\n",
        "        clearingType: CLEARING_TYPE_MANUAL\n",
        "        clearingType: CLEARING_TYPE_MANUAL",
        "is not one of AUTOMATIC, MANUAL",
    ),
    (
        "missing_o_cloud",
        "oCloud:\n  oCloudId: 00000000-0000-4000-8000-000000000001\n"
        "  globalCloudId: 00000000-0000-4000-8000-000000000002\n  name: test-cloud\n",
        "",
        "locations:",
        "missing oCloud",
    ),
    (
        "missing_id",
        "  - resourcePoolId: 40000000-0000-4000-8000-000000000001\n    name: pool-a\n",
        "  - name: pool-a\n",
        "  - name: pool-a",
        "resource pool resourcePools[0]: missing resourcePoolId",
    ),
    (
        "wrong_type",
        "    name: site-a\n",
        "    name: 42\n",
        "    name: 42",
        "'name' must be a string, got 42 (quote it in YAML)",
    ),
    (
        "site_with_unknown_location",
        "    globalLocationId: loc-a\n    name: site-a\n",
        "    globalLocationId: loc-b\n    name: site-a\n",
        "    globalLocationId: loc-b",
        "names unknown globalLocationId 'loc-b'",
    ),
    (
        "pool_with_unknown_site",
        "    oCloudSiteId: 10000000-0000-4000-8000-000000000001\n",
        f"    oCloudSiteId: {UNKNOWN}\n",
        f"    oCloudSiteId: {UNKNOWN}",
        f"names unknown oCloudSiteId '{UNKNOWN}'",
    ),
    (
        "type_with_unknown_alarm_dictionary",
        "    alarmDictionaryId: 20000000-0000-4000-8000-000000000001\n",
        f"    alarmDictionaryId: {UNKNOWN}\n",
        f"    alarmDictionaryId: {UNKNOWN}",
        f"resource type '{SERVER_TYPE}' names unknown alarmDictionaryId",
    ),
    (
        "deployment_manager_with_unknown_location",
        "    supportedLocations: [loc-a]\n",
        "    supportedLocations:\n      - loc-a\n      - atlantis\n",
        "      - atlantis",
        "names unknown globalLocationId 'atlantis' in supportedLocations",
    ),
    (
        "element_with_its_own_pool",
        "        description: NIC of server one\n",
        f"        description: NIC of server one\n        resourcePoolId: {POOL}\n",
        f"        resourcePoolId: {POOL}",
        "resourcePoolId is implied by nesting",
    ),
    (
        "duplicate_yaml_key",
        "    description: server two\n",
        "    description: server two\n    description: server 2\n",
        "    description: server 2",
        "duplicate key 'description'",
    ),
    (
        "location_without_any_address",
        "    address: 1 Main Street\n    coordinate: {longitude: 13.4, latitude: 52.5}\n",
        "",
        "  - globalLocationId: loc-a",
        "needs at least one of coordinate, civicAddress or address",
    ),
    (
        "latitude_out_of_range",
        "latitude: 52.5}",
        "latitude: 95.0}",
        "    coordinate:",
        "latitude must be between -90 and 90",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [case[1:] for case in INVALID_CASES],
    ids=[case[0] for case in INVALID_CASES],
)
def test_invalid_inventory_is_refused_at_the_offending_line(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    text = edited(old, new)
    path = write(tmp_path, text)
    with pytest.raises(InventoryFileError) as raised:
        load_inventory(path)
    error = raised.value
    assert message in error.problem
    assert error.line == line_of(text, needle), str(error)
    assert str(error) == f"{path}:{error.line}: {error.problem}"


def test_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InventoryFileError, match=r"ocloud\.yaml:1: the file is empty"):
        load_inventory(write(tmp_path, "# nothing yet\n"))


def test_o_cloud_must_be_a_single_mapping(tmp_path: Path) -> None:
    text = edited("oCloud:\n  oCloudId:", "oCloud:\n  - oCloudId:").replace(
        "\n  globalCloudId", "\n    globalCloudId"
    )
    text = text.replace("\n  name: test-cloud", "\n    name: test-cloud")
    with pytest.raises(InventoryFileError) as raised:
        load_inventory(write(tmp_path, text))
    assert raised.value.line == 1
    assert "oCloud must be one mapping" in raised.value.problem


def test_missing_file_is_refused_without_a_line(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(InventoryFileError) as raised:
        load_inventory(path)
    assert raised.value.line is None
    assert str(raised.value).startswith(f"{path}: cannot read")


def test_unquoted_dates_stay_text(tmp_path: Path) -> None:
    text = edited(
        "        alarmName: Fan failure\n",
        "        alarmName: Fan failure\n        alarmLastChange: 2024-05-01\n",
    )
    objects = load_inventory(write(tmp_path, text))
    dictionary = next(obj.alarm_dictionary for obj in objects if obj.HasField("alarm_dictionary"))
    assert dictionary.alarm_definition[0].alarm_last_change == "2024-05-01"
