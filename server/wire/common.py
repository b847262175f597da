"""Builders whose shape is the same in every Inventory major version."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from google.protobuf import struct_pb2
from o2ims.adapter.v1 import domain_pb2

from server.deployment_profiles import strip_credentials
from server.wire import BuildContext

_CHANGE_TYPE = {
    domain_pb2.ALARM_CHANGE_TYPE_UNSPECIFIED: "",
    domain_pb2.ALARM_CHANGE_TYPE_ADDED: "ADDED",
    domain_pb2.ALARM_CHANGE_TYPE_DELETED: "DELETED",
    domain_pb2.ALARM_CHANGE_TYPE_MODIFIED: "MODIFIED",
}
_CLEARING = {
    domain_pb2.CLEARING_TYPE_UNSPECIFIED: "",
    domain_pb2.CLEARING_TYPE_AUTOMATIC: "AUTOMATIC",
    domain_pb2.CLEARING_TYPE_MANUAL: "MANUAL",
}
# Domain enum number -> wire enum value name (both versions spell them alike).
RESOURCE_KIND = {
    domain_pb2.RESOURCE_KIND_UNSPECIFIED: "UNDEFINED",
    domain_pb2.RESOURCE_KIND_PHYSICAL: "PHYSICAL",
    domain_pb2.RESOURCE_KIND_LOGICAL: "LOGICAL",
}
RESOURCE_CLASS = {
    domain_pb2.RESOURCE_CLASS_UNSPECIFIED: "UNDEFINED",
    domain_pb2.RESOURCE_CLASS_COMPUTE: "COMPUTE",
    domain_pb2.RESOURCE_CLASS_NETWORKING: "NETWORKING",
    domain_pb2.RESOURCE_CLASS_STORAGE: "STORAGE",
}


def extensions(target: struct_pb2.Struct, source: struct_pb2.Struct) -> None:
    """O2ims models extensions as an object: always send one ({} when empty), so
    clients that index into it never meet a missing key."""
    target.SetInParent()
    target.MergeFrom(source)


def cloud_info(pb: ModuleType, ocloud: domain_pb2.OCloud, context: BuildContext) -> Any:
    """The attributes of OCloudInfo that every version shares."""
    info = pb.OCloudInfo(
        o_cloud_id=ocloud.o_cloud_id,
        global_cloud_id=ocloud.global_cloud_id,
        name=ocloud.name,
        description=ocloud.description,
        service_uri=context.service_uri,
    )
    extensions(info.extensions, ocloud.extensions)
    return info


def alarm_dictionary(pb: ModuleType, dictionary: domain_pb2.AlarmDictionary) -> Any:
    wire = pb.AlarmDictionary(
        alarm_dictionary_id=dictionary.alarm_dictionary_id,
        alarm_dictionary_version=dictionary.alarm_dictionary_version,
        alarm_dictionary_schema_version=dictionary.alarm_dictionary_schema_version,
        entity_type=dictionary.entity_type,
        vendor=dictionary.vendor,
        management_interface_id=list(dictionary.management_interface_id),
        pk_notification_field=list(dictionary.pk_notification_field),
    )
    for definition in dictionary.alarm_definition:
        item = wire.alarm_definition.add(
            alarm_definition_id=definition.alarm_definition_id,
            alarm_name=definition.alarm_name,
            alarm_last_change=definition.alarm_last_change,
            alarm_change_type=_CHANGE_TYPE[definition.alarm_change_type],
            alarm_description=definition.alarm_description,
            proposed_repair_actions=definition.proposed_repair_actions,
            clearing_type=_CLEARING[definition.clearing_type],
            management_interface_id=list(definition.management_interface_id),
            pk_notification_field=list(definition.pk_notification_field),
        )
        extensions(item.alarm_additional_fields, definition.alarm_additional_fields)
    return wire


def resource_type_fields(pb: ModuleType, resource_type: domain_pb2.ResourceType) -> Any:
    """The attributes of ResourceTypeInfo that every version shares."""
    info = pb.ResourceTypeInfo(
        resource_type_id=resource_type.resource_type_id,
        name=resource_type.name,
        description=resource_type.description,
        vendor=resource_type.vendor,
        model=resource_type.model,
        version=resource_type.version,
        resource_kind=RESOURCE_KIND[resource_type.resource_kind],
        resource_class=RESOURCE_CLASS[resource_type.resource_class],
    )
    # Optional attributes are set only with a value: unset, they are left out (never "").
    if resource_type.alarm_dictionary_id:
        info.alarm_dictionary_id = resource_type.alarm_dictionary_id
    extensions(info.extensions, resource_type.extensions)
    return info


def resource_pool_fields(
    pb: ModuleType, pool: domain_pb2.ResourcePool, context: BuildContext
) -> Any:
    """The attributes of ResourcePoolInfo that every version shares."""
    info = pb.ResourcePoolInfo(
        resource_pool_id=pool.resource_pool_id,
        name=pool.name,
        description=pool.description,
        # Derived rather than stored, so they can never disagree with the O-Cloud and site.
        o_cloud_id=context.o_cloud_id,
        global_location_id=site_location_id(context, pool.o_cloud_site_id),
    )
    extensions(info.extensions, pool.extensions)
    return info


def resource_info(pb: ModuleType, resource: domain_pb2.Resource) -> Any:
    info = pb.ResourceInfo(
        resource_id=resource.resource_id,
        resource_pool_id=resource.resource_pool_id,
        resource_type_id=resource.resource_type_id,
        description=resource.description,
        global_asset_id=resource.global_asset_id,
        tags=list(resource.tags),
        groups=list(resource.groups),
    )
    if resource.name:
        info.name = resource.name
    if resource.parent_id:
        info.parent_id = resource.parent_id
    info.elements.extend(resource_info(pb, element) for element in resource.elements)
    extensions(info.extensions, resource.extensions)
    return info


def deployment_manager_info(
    pb: ModuleType, manager: domain_pb2.DeploymentManager, context: BuildContext
) -> Any:
    info = pb.DeploymentManagerInfo(
        deployment_manager_id=manager.deployment_manager_id,
        name=manager.name,
        description=manager.description,
        o_cloud_id=context.o_cloud_id,
        service_uri=manager.service_uri,
        supported_locations=list(manager.supported_locations),
    )
    for target, source in (
        (info.capabilities, manager.capabilities),
        (info.capacity, manager.capacity),
        (info.extensions, manager.extensions),
    ):
        extensions(target, source)
    # Admin credentials never go out in a list, a plain read or a notification: only a read
    # with ?profile= by a caller who may see them (server/deployment_profiles.py).
    strip_credentials(info.extensions)
    return info


def site_location_id(context: BuildContext, site_id: str) -> str:
    site = context.objects["site"].get(site_id)
    return site.global_location_id if site is not None else ""
