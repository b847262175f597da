"""The Inventory 1.x wire model (o2ims.inventory.v1)."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from o2ims.adapter.v1 import domain_pb2
from o2ims.inventory.v1 import inventory_pb2 as pb

from server.wire import BuildContext, WireModel, common, printing


def cloud_info(ocloud: domain_pb2.OCloud, context: BuildContext) -> pb.OCloudInfo:
    info: pb.OCloudInfo = common.cloud_info(pb, ocloud, context)
    # 1.x clients (and the conformance tests) read the lower-case-c spelling; emit both.
    info.globalcloud_id = ocloud.global_cloud_id
    return info


def resource_type_info(resource_type: domain_pb2.ResourceType, context: BuildContext) -> Any:
    info = common.resource_type_fields(pb, resource_type)
    # 1.x embeds the dictionary itself, and its model requires the key: null when the type
    # has none. A Value is the one field type the transcoder prints as null, so the object
    # travels as the JSON of the typed AlarmDictionary (what GET .../alarmDictionary shows).
    dictionary = context.objects["alarm_dictionary"].get(resource_type.alarm_dictionary_id)
    if dictionary is None:
        info.alarm_dictionary.null_value = struct_pb2.NULL_VALUE
    else:
        info.alarm_dictionary.struct_value.update(
            printing.as_json(common.alarm_dictionary(pb, dictionary))
        )
    return info


def resource_pool_info(pool: domain_pb2.ResourcePool, context: BuildContext) -> pb.ResourcePoolInfo:
    info: pb.ResourcePoolInfo = common.resource_pool_fields(pb, pool, context)
    # 1.x carries the location on the pool; 2.0 moved it to the site.
    info.location = pool.location
    return info


MODEL = WireModel(
    major="v1",
    version="1.2.0",
    pb=pb,
    builders={
        "o_cloud": cloud_info,
        "alarm_dictionary": lambda d, _: common.alarm_dictionary(pb, d),
        "resource_type": resource_type_info,
        "resource_pool": resource_pool_info,
        "resource": lambda r, _: common.resource_info(pb, r),
        "deployment_manager": lambda m, c: common.deployment_manager_info(pb, m, c),
    },
)
