"""Domain model -> O2ims Inventory 1.x wire model (o2ims.inventory.v1).

Each function builds one wire object from domain objects; the cache memoizes the
results, so nothing here runs on the request path for an unchanged object.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf import struct_pb2
from o2ims.adapter.v1 import domain_pb2
from o2ims.inventory.v1 import inventory_pb2 as v1

_KIND = {
    domain_pb2.RESOURCE_KIND_UNSPECIFIED: v1.ResourceKind.UNDEFINED,
    domain_pb2.RESOURCE_KIND_PHYSICAL: v1.ResourceKind.PHYSICAL,
    domain_pb2.RESOURCE_KIND_LOGICAL: v1.ResourceKind.LOGICAL,
}
_CLASS = {
    domain_pb2.RESOURCE_CLASS_UNSPECIFIED: v1.ResourceClass.UNDEFINED,
    domain_pb2.RESOURCE_CLASS_COMPUTE: v1.ResourceClass.COMPUTE,
    domain_pb2.RESOURCE_CLASS_NETWORKING: v1.ResourceClass.NETWORKING,
    domain_pb2.RESOURCE_CLASS_STORAGE: v1.ResourceClass.STORAGE,
}
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


def _extensions(target: struct_pb2.Struct, source: struct_pb2.Struct) -> None:
    # O2ims models extensions as an object; always send one ({} when empty) so
    # clients that index into it never meet a missing key.
    target.SetInParent()
    target.MergeFrom(source)


def cloud_info(ocloud: domain_pb2.OCloud, service_uri: str) -> v1.OCloudInfo:
    info = v1.OCloudInfo(
        o_cloud_id=ocloud.o_cloud_id,
        globalcloud_id=ocloud.global_cloud_id,
        global_cloud_id=ocloud.global_cloud_id,
        name=ocloud.name,
        description=ocloud.description,
        service_uri=service_uri,
    )
    _extensions(info.extensions, ocloud.extensions)
    return info


def alarm_dictionary(dictionary: domain_pb2.AlarmDictionary) -> v1.AlarmDictionary:
    wire = v1.AlarmDictionary(
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
        _extensions(item.alarm_additional_fields, definition.alarm_additional_fields)
    return wire


def resource_type_info(
    resource_type: domain_pb2.ResourceType,
    dictionaries: Mapping[str, domain_pb2.AlarmDictionary],
) -> v1.ResourceTypeInfo:
    info = v1.ResourceTypeInfo(
        resource_type_id=resource_type.resource_type_id,
        name=resource_type.name,
        description=resource_type.description,
        vendor=resource_type.vendor,
        model=resource_type.model,
        version=resource_type.version,
        resource_kind=_KIND[resource_type.resource_kind],
        resource_class=_CLASS[resource_type.resource_class],
    )
    dictionary = dictionaries.get(resource_type.alarm_dictionary_id)
    if dictionary is not None:
        info.alarm_dictionary.CopyFrom(alarm_dictionary(dictionary))
    _extensions(info.extensions, resource_type.extensions)
    return info


def resource_pool_info(
    pool: domain_pb2.ResourcePool,
    o_cloud_id: str,
    sites: Mapping[str, domain_pb2.Site],
) -> v1.ResourcePoolInfo:
    site = sites.get(pool.o_cloud_site_id)
    info = v1.ResourcePoolInfo(
        resource_pool_id=pool.resource_pool_id,
        name=pool.name,
        description=pool.description,
        o_cloud_id=o_cloud_id,
        # 1.x carries the location directly on the pool; 2.0 moved it to the site.
        global_location_id=site.global_location_id if site is not None else "",
        location=pool.location,
    )
    _extensions(info.extensions, pool.extensions)
    return info


def resource_info(resource: domain_pb2.Resource) -> v1.ResourceInfo:
    info = v1.ResourceInfo(
        resource_id=resource.resource_id,
        resource_pool_id=resource.resource_pool_id,
        resource_type_id=resource.resource_type_id,
        name=resource.name,
        description=resource.description,
        global_asset_id=resource.global_asset_id,
        tags=list(resource.tags),
        groups=list(resource.groups),
    )
    if resource.parent_id:
        info.parent_id = resource.parent_id
    info.elements.extend(resource_info(element) for element in resource.elements)
    _extensions(info.extensions, resource.extensions)
    return info


def deployment_manager_info(
    manager: domain_pb2.DeploymentManager, o_cloud_id: str
) -> v1.DeploymentManagerInfo:
    info = v1.DeploymentManagerInfo(
        deployment_manager_id=manager.deployment_manager_id,
        name=manager.name,
        description=manager.description,
        o_cloud_id=o_cloud_id,
        service_uri=manager.service_uri,
        supported_locations=list(manager.supported_locations),
    )
    for target, source in (
        (info.capabilities, manager.capabilities),
        (info.capacity, manager.capacity),
        (info.extensions, manager.extensions),
    ):
        _extensions(target, source)
    return info
