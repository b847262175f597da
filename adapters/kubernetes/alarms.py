"""Node conditions as O2ims alarms: pure functions, no I/O.

Every ResourceType of the cluster points at one AlarmDictionary (`alarm_dictionary`), with
one AlarmDefinition per alarm of condition_alarms.CONDITION_ALARMS. A node has one
ActiveAlarm per abnormal condition (`node_alarms`), published while the condition lasts:
level-triggered, so the core raises it when it appears, changes it when its severity,
reason or message change, and clears it when the node recovers or is deleted.

An alarm's id is a UUIDv5 (mapping.object_id) over the node's uid and the condition's
type and status: a condition that keeps its status is one alarm, a re-created node (a
new uid) raises new ones, and Ready going from False to Unknown clears NodeNotReady and
raises NodeUnreachable (another definition: O2ims identifies an alarm by its definition
and resource, the pkNotificationField below).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from o2ims.adapter.v1 import domain_pb2

from adapters.kubernetes.condition_alarms import CONDITION_ALARMS, SEVERITIES, ConditionAlarm
from adapters.kubernetes.mapping import (
    ClusterIdentity,
    NodeView,
    alarm_dictionary_id,
    node_type_id,
    object_id,
    resource_id,
)
from adapters.kubernetes.mapping_file import MappingConfig

DICTIONARY_VERSION: Final = "1.0"  # change with any definition, and alarm_last_change with it
DICTIONARY_SCHEMA_VERSION: Final = "1.0"
ENTITY_TYPE: Final = "kubernetes-node"
VENDOR: Final = "Kubernetes"  # the node conditions are Kubernetes's own
MANAGEMENT_INTERFACES: Final = ("O2IMS",)
PK_NOTIFICATION_FIELDS: Final = ("alarmDefinitionID", "resourceID")
_SEVERITY_VALUES: Final = {
    name: domain_pb2.AlarmSeverity.Value(f"ALARM_SEVERITY_{name}") for name in SEVERITIES
}
_BY_CONDITION: Final = {(alarm.condition_type, alarm.status): alarm for alarm in CONDITION_ALARMS}


@lru_cache(maxsize=64)  # a few names per cluster
def alarm_definition_id(cluster_uid: str, alarm_name: str) -> str:
    return object_id(cluster_uid, "alarm-definition", alarm_name)


def node_alarm_id(cluster_uid: str, node_uid: str, condition_type: str, status: str) -> str:
    return object_id(cluster_uid, "node", node_uid, "condition", condition_type, status)


def alarm_definition(alarm: ConditionAlarm, cluster_uid: str) -> domain_pb2.AlarmDefinition:
    definition = domain_pb2.AlarmDefinition(
        alarm_definition_id=alarm_definition_id(cluster_uid, alarm.name),
        alarm_name=alarm.name,
        alarm_last_change=DICTIONARY_VERSION,
        alarm_change_type=domain_pb2.ALARM_CHANGE_TYPE_ADDED,
        alarm_description=alarm.description,
        proposed_repair_actions=alarm.repair,
        # The kubelet (or the node controller) sets the condition back: the alarm clears
        # when the source does, never by an operator's hand.
        clearing_type=domain_pb2.CLEARING_TYPE_AUTOMATIC,
        management_interface_id=MANAGEMENT_INTERFACES,
        pk_notification_field=PK_NOTIFICATION_FIELDS,
    )
    definition.alarm_additional_fields.update(
        {"conditionType": alarm.condition_type, "conditionStatus": alarm.status}
    )
    return definition


def alarm_dictionary(cluster: ClusterIdentity) -> domain_pb2.InventoryObject:
    """The dictionary of every alarm a node of this cluster can raise (whether or not the
    mapping turned some off: the definitions do not depend on the configuration)."""
    inventory_object = domain_pb2.InventoryObject()
    dictionary = inventory_object.alarm_dictionary
    dictionary.alarm_dictionary_id = alarm_dictionary_id(cluster.uid)
    dictionary.alarm_dictionary_version = DICTIONARY_VERSION
    dictionary.alarm_dictionary_schema_version = DICTIONARY_SCHEMA_VERSION
    dictionary.entity_type = ENTITY_TYPE
    dictionary.vendor = VENDOR
    dictionary.management_interface_id.extend(MANAGEMENT_INTERFACES)
    dictionary.pk_notification_field.extend(PK_NOTIFICATION_FIELDS)
    dictionary.alarm_definition.extend(
        alarm_definition(alarm, cluster.uid) for alarm in CONDITION_ALARMS
    )
    return inventory_object


def _text(value: object) -> str:
    """A condition's field as a string ("" when the API server sent none, or null)."""
    return value if isinstance(value, str) else ""


def node_alarms(
    view: NodeView, cluster: ClusterIdentity, config: MappingConfig
) -> list[domain_pb2.InventoryObject]:
    """One ActiveAlarm per abnormal condition of the node the mapping does not turn off
    (none for a healthy node: no object is built for it)."""
    alarms: list[domain_pb2.InventoryObject] = []
    seen: set[str] = set()
    for condition_type, status, reason, message, since in view.conditions:
        alarm = _BY_CONDITION.get((condition_type, status))
        if alarm is None or condition_type in seen:  # a type listed twice: the first counts
            continue
        seen.add(condition_type)
        severity = config.alarm_severities.get(alarm.name)
        if severity is None:
            continue
        inventory_object = domain_pb2.InventoryObject()
        active = inventory_object.alarm
        active.alarm_id = node_alarm_id(cluster.uid, view.uid, condition_type, status)
        active.resource_id = resource_id(cluster.uid, view.uid)
        active.resource_type_id = node_type_id(cluster.uid, view.type_identity)
        active.alarm_definition_id = alarm_definition_id(cluster.uid, alarm.name)
        active.probable_cause_id = active.alarm_definition_id
        active.perceived_severity = _SEVERITY_VALUES[severity]
        active.raised_time = _text(since)
        fields = active.extensions.fields
        fields["alarmName"].string_value = alarm.name
        fields["conditionType"].string_value = condition_type
        fields["conditionStatus"].string_value = status
        fields["reason"].string_value = _text(reason)
        fields["message"].string_value = _text(message)
        fields["nodeName"].string_value = view.name
        fields["clusterName"].string_value = cluster.name
        alarms.append(inventory_object)
    return alarms
