"""The Inventory 2.0.0 wire model (o2ims.inventory.v2)."""

from __future__ import annotations

from o2ims.adapter.v1 import domain_pb2
from o2ims.inventory.v2 import inventory_pb2 as pb

from server.wire import BuildContext, WireModel, common


def resource_pool_info(pool: domain_pb2.ResourcePool, context: BuildContext) -> pb.ResourcePoolInfo:
    info: pb.ResourcePoolInfo = common.resource_pool_fields(pb, pool, context)
    # 2.0.0 places the pool on a site; oCloudId and globalLocationId stay (deprecated but
    # still mandatory).
    info.o_cloud_site_id = pool.o_cloud_site_id
    return info


def location_info(location: domain_pb2.Location, context: BuildContext) -> pb.LocationInfo:
    info = pb.LocationInfo(
        global_location_id=location.global_location_id,
        name=location.name,
        description=location.description,
        o_cloud_site_ids=sorted(
            site.o_cloud_site_id
            for site in context.objects["site"].values()
            if site.global_location_id == location.global_location_id
        ),
        civic_address=[
            pb.CivicAddressElement(ca_type=e.ca_type, ca_value=e.ca_value)
            for e in location.civic_address
        ],
    )
    if location.address:
        info.address = location.address
    if location.HasField("coordinate"):
        point = location.coordinate
        coordinates = [point.longitude, point.latitude]
        if point.HasField("altitude"):
            coordinates.append(point.altitude)
        info.coordinate.CopyFrom(pb.GeoJsonPoint(type="Point", coordinates=coordinates))
    common.extensions(info.extensions, location.extensions)
    return info


def site_info(site: domain_pb2.Site, context: BuildContext) -> pb.OCloudSiteInfo:
    info = pb.OCloudSiteInfo(
        o_cloud_site_id=site.o_cloud_site_id,
        global_location_id=site.global_location_id,
        name=site.name,
        description=site.description,
        resource_pools=sorted(
            pool.resource_pool_id
            for pool in context.objects["resource_pool"].values()
            if pool.o_cloud_site_id == site.o_cloud_site_id
        ),
    )
    common.extensions(info.extensions, site.extensions)
    return info


MODEL = WireModel(
    major="v2",
    version="2.0.0",
    pb=pb,
    builders={
        "o_cloud": lambda o, c: common.cloud_info(pb, o, c),
        "location": location_info,
        "site": site_info,
        "alarm_dictionary": lambda d, _: common.alarm_dictionary(pb, d),
        "resource_type": lambda t, _: common.resource_type_fields(pb, t),
        "resource_pool": resource_pool_info,
        "resource": lambda r, _: common.resource_info(pb, r),
        "deployment_manager": lambda m, c: common.deployment_manager_info(pb, m, c),
    },
)
