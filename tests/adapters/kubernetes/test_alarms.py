"""Node conditions -> O2ims alarms: the dictionary, the active alarms, the mapping file's
`alarms:` section, and the inventory's incremental raising and clearing of them."""

from __future__ import annotations

import copy
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import ALARM_KIND, object_key, serialize
from adapters.kubernetes import mapping_file
from adapters.kubernetes.alarms import alarm_definition_id, node_alarm_id, node_alarms
from adapters.kubernetes.condition_alarms import ALARM_NAMES, CONDITION_ALARMS, DEFAULT_SEVERITIES
from adapters.kubernetes.inventory import Inventory
from adapters.kubernetes.mapping import (
    ClusterIdentity,
    alarm_dictionary_id,
    node_type_id,
    node_view,
    object_id,
    resource_id,
)
from adapters.kubernetes.mapping_file import (
    MappingConfig,
    load_mapping_file,
    parse_mapping,
)
from adapters.mapping_files import MappingFileError
from devstack.kubesim.nodes import make_node
from tests.adapters.kubernetes.test_mapping import ADAPTER, CLUSTER, build, is_uuid, of_kind

SINCE = "2026-12-01T08:30:00Z"
Objects = dict[tuple[str, str], domain_pb2.InventoryObject]


def with_condition(
    node: dict[str, Any],
    condition_type: str,
    status: str,
    *,
    reason: str = "Testing",
    message: str = "set by the test",
    since: str = SINCE,
) -> dict[str, Any]:
    """`node` (changed in place, and returned) with that condition, added if it has none."""
    conditions = node["status"]["conditions"]
    found = [condition for condition in conditions if condition["type"] == condition_type]
    condition = found[0] if found else {"type": condition_type}
    if not found:
        conditions.append(condition)
    condition.update(
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=since,
        lastHeartbeatTime=since,
    )
    return node


def alarms_of(objects: Objects) -> list[domain_pb2.ActiveAlarm]:
    return of_kind(objects, ALARM_KIND)


def dictionary_of(objects: Objects) -> domain_pb2.AlarmDictionary:
    (dictionary,) = of_kind(objects, "alarm_dictionary")
    assert isinstance(dictionary, domain_pb2.AlarmDictionary)
    return dictionary


# --- which conditions are alarms ---------------------------------------------------------


@pytest.mark.parametrize(
    ("condition_type", "status", "alarm_name", "severity"),
    [
        ("Ready", "False", "NodeNotReady", domain_pb2.ALARM_SEVERITY_CRITICAL),
        ("Ready", "Unknown", "NodeUnreachable", domain_pb2.ALARM_SEVERITY_MAJOR),
        ("MemoryPressure", "True", "NodeMemoryPressure", domain_pb2.ALARM_SEVERITY_MAJOR),
        ("DiskPressure", "True", "NodeDiskPressure", domain_pb2.ALARM_SEVERITY_MAJOR),
        ("PIDPressure", "True", "NodePIDPressure", domain_pb2.ALARM_SEVERITY_MINOR),
        (
            "NetworkUnavailable",
            "True",
            "NodeNetworkUnavailable",
            domain_pb2.ALARM_SEVERITY_CRITICAL,
        ),
    ],
)
def test_an_abnormal_condition_raises_its_alarm_with_its_default_severity(
    condition_type: str, status: str, alarm_name: str, severity: int
) -> None:
    node = with_condition(
        make_node("n1"), condition_type, status, reason="KubeletTrouble", message="it is not well"
    )
    objects = build([node])
    (alarm,) = alarms_of(objects)
    node_uid = node["metadata"]["uid"]
    (resource,) = of_kind(objects, "resource")
    assert alarm.alarm_id == object_id(
        CLUSTER.uid, "node", node_uid, "condition", condition_type, status
    )
    assert is_uuid(alarm.alarm_id)
    assert alarm.resource_id == resource.resource_id == resource_id(CLUSTER.uid, node_uid)
    assert alarm.resource_type_id == resource.resource_type_id
    assert alarm.alarm_definition_id == alarm.probable_cause_id
    assert alarm.alarm_definition_id == alarm_definition_id(CLUSTER.uid, alarm_name)
    assert alarm.perceived_severity == severity
    assert alarm.raised_time == SINCE
    assert dict(alarm.extensions) == {
        "alarmName": alarm_name,
        "conditionType": condition_type,
        "conditionStatus": status,
        "reason": "KubeletTrouble",
        "message": "it is not well",
        "nodeName": "n1",
        "clusterName": CLUSTER.name,
    }
    definitions = {d.alarm_definition_id: d for d in dictionary_of(objects).alarm_definition}
    assert definitions[alarm.alarm_definition_id].alarm_name == alarm_name


@pytest.mark.parametrize(
    ("condition_type", "status"),
    [
        ("Ready", "True"),
        ("MemoryPressure", "False"),
        ("DiskPressure", "Unknown"),  # the kubelet is unreachable: NodeUnreachable says it
        ("PIDPressure", "False"),
        ("NetworkUnavailable", "False"),
        ("SomeVendorCondition", "True"),  # conditions the adapter does not know
    ],
)
def test_a_normal_or_unknown_condition_raises_nothing(condition_type: str, status: str) -> None:
    assert alarms_of(build([with_condition(make_node("n1"), condition_type, status)])) == []


def test_a_node_without_a_ready_condition_raises_nothing() -> None:
    node = make_node("n1")
    node["status"]["conditions"] = [c for c in node["status"]["conditions"] if c["type"] != "Ready"]
    assert alarms_of(build([node])) == []


def test_each_abnormal_condition_of_a_node_is_its_own_alarm() -> None:
    node = make_node("n1")
    for condition_type in ("MemoryPressure", "DiskPressure", "NetworkUnavailable"):
        with_condition(node, condition_type, "True")
    with_condition(node, "Ready", "False")
    alarms = alarms_of(build([node]))
    assert sorted(alarm.extensions.fields["alarmName"].string_value for alarm in alarms) == [
        "NodeDiskPressure",
        "NodeMemoryPressure",
        "NodeNetworkUnavailable",
        "NodeNotReady",
    ]
    assert len({alarm.alarm_id for alarm in alarms}) == 4


def test_alarm_ids_change_with_the_node_uid_the_cluster_and_the_ready_status() -> None:
    node = with_condition(make_node("n1"), "Ready", "False")
    (first,) = alarms_of(build([node]))
    (again,) = alarms_of(build([copy.deepcopy(node)]))
    assert serialize(domain_pb2.InventoryObject(alarm=first)) == serialize(
        domain_pb2.InventoryObject(alarm=again)
    )
    recreated = copy.deepcopy(node)
    recreated["metadata"]["uid"] = "9d0e3a5c-1111-4222-8333-444455556666"
    (other_node,) = alarms_of(build([recreated]))
    other = ClusterIdentity(**{**CLUSTER.__dict__, "uid": "6a1f0c1e-0000-4000-8000-000000000002"})
    (other_cluster,) = alarms_of(build([node], cluster=other))
    (unreachable,) = alarms_of(build([with_condition(copy.deepcopy(node), "Ready", "Unknown")]))
    ids = {first.alarm_id, other_node.alarm_id, other_cluster.alarm_id, unreachable.alarm_id}
    assert len(ids) == 4


# --- the dictionary ----------------------------------------------------------------------


def test_one_dictionary_defines_every_alarm_and_every_resource_type_points_at_it() -> None:
    node = make_node("gpu-1", extended={"nvidia.com/gpu": "2"})
    objects = build([node, make_node("n2", instance_type="c5.large")])
    dictionary = dictionary_of(objects)
    assert dictionary.alarm_dictionary_id == alarm_dictionary_id(CLUSTER.uid)
    assert is_uuid(dictionary.alarm_dictionary_id)
    assert dictionary.alarm_dictionary_version and dictionary.alarm_dictionary_schema_version
    assert dictionary.entity_type and dictionary.vendor
    assert list(dictionary.management_interface_id) == ["O2IMS"]
    assert list(dictionary.pk_notification_field) == ["alarmDefinitionID", "resourceID"]
    assert [d.alarm_name for d in dictionary.alarm_definition] == list(ALARM_NAMES)
    for definition, alarm in zip(dictionary.alarm_definition, CONDITION_ALARMS, strict=True):
        assert definition.alarm_definition_id == alarm_definition_id(CLUSTER.uid, alarm.name)
        assert is_uuid(definition.alarm_definition_id)
        assert definition.alarm_description and definition.proposed_repair_actions
        assert definition.clearing_type == domain_pb2.CLEARING_TYPE_AUTOMATIC
        assert definition.alarm_change_type == domain_pb2.ALARM_CHANGE_TYPE_ADDED
        assert definition.alarm_last_change == "1.0"
        assert list(definition.management_interface_id) == ["O2IMS"]
        assert list(definition.pk_notification_field) == ["alarmDefinitionID", "resourceID"]
        assert dict(definition.alarm_additional_fields) == {
            "conditionType": alarm.condition_type,
            "conditionStatus": alarm.status,
        }
    resource_types = of_kind(objects, "resource_type")
    assert len(resource_types) == 5  # two node types; cpu, memory and GPU elements
    assert {t.alarm_dictionary_id for t in resource_types} == {dictionary.alarm_dictionary_id}


def test_a_cluster_without_nodes_still_has_its_dictionary() -> None:
    objects = build([])
    assert dictionary_of(objects).alarm_dictionary_id == alarm_dictionary_id(CLUSTER.uid)
    assert alarms_of(objects) == []


# --- the mapping file --------------------------------------------------------------------


def test_the_mapping_file_changes_severities_and_turns_alarms_off(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(
        """
alarms:
  NodeUnreachable: CRITICAL
  NodePIDPressure: WARNING
  NodeDiskPressure: off
  NodeMemoryPressure: "off"
"""
    )
    config = load_mapping_file(path)
    node = make_node("n1")
    for condition_type in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        with_condition(node, condition_type, "True")
    with_condition(node, "Ready", "Unknown")
    alarms = {
        a.extensions["alarmName"]: a.perceived_severity for a in alarms_of(build([node], config))
    }
    assert alarms == {
        "NodeUnreachable": domain_pb2.ALARM_SEVERITY_CRITICAL,
        "NodePIDPressure": domain_pb2.ALARM_SEVERITY_WARNING,
    }
    # Alarms turned off stay defined: the dictionary does not depend on the configuration.
    assert len(dictionary_of(build([node], config)).alarm_definition) == len(ALARM_NAMES)


def test_the_mapping_file_documents_the_default_severities() -> None:
    """The format in mapping_file.py's docstring shows the defaults: it must not drift."""
    assert mapping_file.__doc__ is not None
    shown = mapping_file.__doc__.split("the defaults are the ones shown:", 1)[1]
    documented = yaml.safe_load(textwrap.dedent(shown))["alarms"]
    assert documented == DEFAULT_SEVERITIES
    assert list(documented) == list(ALARM_NAMES)


def test_alarms_not_named_in_the_mapping_file_keep_their_defaults() -> None:
    config = parse_mapping({"alarms": {"NodeNotReady": "MINOR"}})
    assert config.alarm_severities == {
        **MappingConfig().alarm_severities,
        "NodeNotReady": "MINOR",
    }


@pytest.mark.parametrize(
    ("alarms", "named"),
    [
        ({"NodeNotReddy": "MAJOR"}, "alarms.NodeNotReddy: unknown key (allowed: NodeNotReady"),
        ({"MemoryPressure": "MAJOR"}, "alarms.MemoryPressure: unknown key"),  # a condition type
        ({"NodeNotReady": "SEVERE"}, "alarms.NodeNotReady: must be one of CRITICAL, MAJOR"),
        ({"NodeNotReady": "major"}, "alarms.NodeNotReady: must be one of"),
        ({"NodeNotReady": "CLEARED"}, "alarms.NodeNotReady: must be one of"),
        ({"NodeNotReady": True}, "alarms.NodeNotReady: must be one of"),
        ({"NodeNotReady": 1}, "alarms.NodeNotReady: must be one of"),
        ({"NodeNotReady": None}, "alarms.NodeNotReady: must be one of"),
        ({"NodeNotReady": {"severity": "MAJOR"}}, "alarms.NodeNotReady: must be one of"),
        (["NodeNotReady"], "alarms: must be a mapping"),
    ],
)
def test_a_bad_alarms_section_names_the_key(alarms: Any, named: str) -> None:
    with pytest.raises(MappingFileError, match=named.replace(".", r"\.").replace("(", r"\(")):
        parse_mapping({"alarms": alarms}, "mapping.yaml")


# --- raised, changed and cleared, incrementally ------------------------------------------


class Tracked:
    """An Inventory fed one node's versions, recording what each apply() changes."""

    def __init__(self, config: MappingConfig | None = None) -> None:
        self.config = config or MappingConfig()
        self.inventory = Inventory(self.config, ADAPTER)
        self.inventory.reset(CLUSTER)

    def apply(self, node: dict[str, Any] | None, name: str = "n1") -> tuple[list[Any], list[str]]:
        """The alarms upserted and the alarm ids deleted by this change."""
        view = None if node is None else node_view(node, self.config, CLUSTER.name)
        upserts, deletions = self.inventory.apply({name: view})
        return (
            [obj.alarm for obj in upserts if object_key(obj)[0] == ALARM_KIND],
            [alarm_id for kind, alarm_id in deletions if kind == ALARM_KIND],
        )


def test_a_node_raises_changes_and_clears_its_alarm_as_its_condition_goes() -> None:
    tracked = Tracked()
    node = make_node("n1", now=datetime(2026, 12, 1, tzinfo=UTC))
    uid = node["metadata"]["uid"]
    assert tracked.apply(node) == ([], [])
    not_ready = with_condition(copy.deepcopy(node), "Ready", "False", message="PLEG")
    (raised,), deleted = tracked.apply(not_ready)
    assert deleted == [] and raised.alarm_id == node_alarm_id(CLUSTER.uid, uid, "Ready", "False")

    heartbeat = copy.deepcopy(not_ready)
    for condition in heartbeat["status"]["conditions"]:
        condition["lastHeartbeatTime"] = "2026-12-01T09:00:00Z"
    assert tracked.apply(heartbeat) == ([], [])  # the view is unchanged: nothing rebuilt

    reworded = with_condition(copy.deepcopy(not_ready), "Ready", "False", message="CNI")
    (changed,), deleted = tracked.apply(reworded)
    assert (changed.alarm_id, changed.extensions["message"], deleted) == (
        raised.alarm_id,
        "CNI",
        [],
    )

    unreachable = with_condition(
        copy.deepcopy(reworded), "Ready", "Unknown", since="2026-12-01T10:00:00Z"
    )
    (other,), deleted = tracked.apply(unreachable)
    assert deleted == [raised.alarm_id]
    assert other.alarm_id == node_alarm_id(CLUSTER.uid, uid, "Ready", "Unknown")
    assert other.raised_time == "2026-12-01T10:00:00Z"

    assert tracked.apply(with_condition(copy.deepcopy(unreachable), "Ready", "True")) == (
        [],
        [other.alarm_id],
    )


def test_a_deleted_or_recreated_node_withdraws_its_alarms() -> None:
    tracked = Tracked()
    node = with_condition(with_condition(make_node("n1"), "Ready", "False"), "DiskPressure", "True")
    raised, _ = tracked.apply(node)
    assert len(raised) == 2
    recreated = copy.deepcopy(node)
    recreated["metadata"]["uid"] = "9d0e3a5c-1111-4222-8333-444455556666"
    fresh, deleted = tracked.apply(recreated)
    assert sorted(deleted) == sorted(alarm.alarm_id for alarm in raised)
    assert not {alarm.alarm_id for alarm in fresh} & set(deleted)
    assert tracked.apply(None) == ([], [alarm.alarm_id for alarm in fresh])


def test_a_relabel_moving_the_node_to_another_type_changes_its_alarm() -> None:
    tracked = Tracked()
    node = with_condition(make_node("n1"), "MemoryPressure", "True")
    (raised,), _ = tracked.apply(node)
    retyped = copy.deepcopy(node)
    retyped["metadata"]["labels"]["node.kubernetes.io/instance-type"] = "m5.4xlarge"
    (changed,), deleted = tracked.apply(retyped)
    assert deleted == [] and changed.alarm_id == raised.alarm_id
    view = node_view(retyped, tracked.config, CLUSTER.name)
    assert changed.resource_type_id == node_type_id(CLUSTER.uid, view.type_identity)
    assert changed.resource_type_id != raised.resource_type_id


def test_a_new_cluster_name_rewrites_every_active_alarm() -> None:
    tracked = Tracked()
    tracked.apply(with_condition(make_node("n1"), "Ready", "False"))
    tracked.apply(make_node("n2"), name="n2")
    renamed = ClusterIdentity(**{**CLUSTER.__dict__, "name": "renamed"})
    upserts, _ = tracked.inventory.apply({}, renamed)
    (alarm,) = [obj.alarm for obj in upserts if obj.HasField("alarm")]
    assert alarm.extensions["clusterName"] == "renamed"


def test_node_alarms_tolerate_conditions_without_reason_message_or_time() -> None:
    node = make_node("n1")
    node["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": None}]
    (alarm,) = node_alarms(node_view(node, MappingConfig(), "lab"), CLUSTER, MappingConfig())
    assert (alarm.alarm.raised_time, alarm.alarm.extensions["reason"]) == ("", "")
