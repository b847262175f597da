"""o2ims.inventory.v1.InventoryService: the Inventory 1.x API, served from the cache."""

from __future__ import annotations

from typing import Final, TypeVar, cast

import grpc
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from server.cache import InventoryCache
from server.errors import NotFound, Unavailable, grpc_errors

API_NAME: Final = "o2ims-infrastructureInventory"
# The Inventory 1.x minor this wire model implements (resourceKind/resourceClass: 1.2.0).
V1_VERSION: Final = "1.2.0"
# Response header naming the collection field of a list response. The REST shaper in
# Envoy unwraps that field into the bare JSON array O2ims requires; gRPC ignores it.
COLLECTION_HEADER: Final = "x-o2ims-collection"

Wire = TypeVar("Wire")


def _collection(context: grpc.ServicerContext, json_field: str) -> None:
    context.send_initial_metadata(((COLLECTION_HEADER, json_field),))


class InventoryV1Servicer(v1_grpc.InventoryServiceServicer):
    def __init__(self, cache: InventoryCache, service_uri: str) -> None:
        self._cache = cache
        self._service_uri = service_uri.rstrip("/")

    def _version_info(self, uri_prefix: str) -> v1.ApiVersionInformation:
        return v1.ApiVersionInformation(
            uri_prefix=uri_prefix, api_versions=[v1.ApiVersion(version=V1_VERSION)]
        )

    @grpc_errors
    def GetAllApiVersions(
        self, request: v1.GetAllApiVersionsRequest, context: grpc.ServicerContext
    ) -> v1.ApiVersionInformation:
        return self._version_info(f"{self._service_uri}/{API_NAME}")

    @grpc_errors
    def GetApiVersions(
        self, request: v1.GetApiVersionsRequest, context: grpc.ServicerContext
    ) -> v1.ApiVersionInformation:
        return self._version_info(f"{self._service_uri}/{API_NAME}/v1")

    @grpc_errors
    def GetCloudInfo(
        self, request: v1.GetCloudInfoRequest, context: grpc.ServicerContext
    ) -> v1.OCloudInfo:
        info = self._cache.v1_cloud_info()
        if info is None:
            raise Unavailable("OCLOUD_NOT_CONFIGURED", "no adapter has provided the O-Cloud yet")
        return info

    @grpc_errors
    def ListResourceTypes(
        self, request: v1.ListResourceTypesRequest, context: grpc.ServicerContext
    ) -> v1.ListResourceTypesResponse:
        _collection(context, "resourceTypes")
        return v1.ListResourceTypesResponse(resource_types=self._cache.v1_list("resource_type"))

    @grpc_errors
    def GetResourceType(
        self, request: v1.GetResourceTypeRequest, context: grpc.ServicerContext
    ) -> v1.ResourceTypeInfo:
        return self._get("resource_type", request.resource_type_id, v1.ResourceTypeInfo)

    @grpc_errors
    def ListResourcePools(
        self, request: v1.ListResourcePoolsRequest, context: grpc.ServicerContext
    ) -> v1.ListResourcePoolsResponse:
        _collection(context, "resourcePools")
        return v1.ListResourcePoolsResponse(resource_pools=self._cache.v1_list("resource_pool"))

    @grpc_errors
    def GetResourcePool(
        self, request: v1.GetResourcePoolRequest, context: grpc.ServicerContext
    ) -> v1.ResourcePoolInfo:
        return self._get("resource_pool", request.resource_pool_id, v1.ResourcePoolInfo)

    @grpc_errors
    def ListResources(
        self, request: v1.ListResourcesRequest, context: grpc.ServicerContext
    ) -> v1.ListResourcesResponse:
        resources = self._cache.v1_pool_resources(request.resource_pool_id)
        if resources is None:
            raise _not_found("resource_pool", request.resource_pool_id)
        _collection(context, "resources")
        return v1.ListResourcesResponse(resources=resources)

    @grpc_errors
    def GetResource(
        self, request: v1.GetResourceRequest, context: grpc.ServicerContext
    ) -> v1.ResourceInfo:
        pool_id = request.resource_pool_id
        if self._cache.v1_get("resource_pool", pool_id) is None:
            raise _not_found("resource_pool", pool_id)
        resource = self._cache.v1_get("resource", request.resource_id)
        # A resource asked for under another pool does not exist at that path.
        if resource is None or resource.resource_pool_id != pool_id:
            raise _not_found("resource", request.resource_id)
        return resource  # type: ignore[no-any-return]

    @grpc_errors
    def ListDeploymentManagers(
        self, request: v1.ListDeploymentManagersRequest, context: grpc.ServicerContext
    ) -> v1.ListDeploymentManagersResponse:
        _collection(context, "deploymentManagers")
        return v1.ListDeploymentManagersResponse(
            deployment_managers=self._cache.v1_list("deployment_manager")
        )

    @grpc_errors
    def GetDeploymentManager(
        self, request: v1.GetDeploymentManagerRequest, context: grpc.ServicerContext
    ) -> v1.DeploymentManagerInfo:
        return self._get(
            "deployment_manager", request.deployment_manager_id, v1.DeploymentManagerInfo
        )

    def _get(self, kind: str, object_id: str, wire_type: type[Wire]) -> Wire:
        found = self._cache.v1_get(kind, object_id)
        if found is None:
            raise _not_found(kind, object_id)
        return cast(Wire, found)


_NAMES: Final[dict[str, tuple[str, str]]] = {
    # kind: (O2ims object type, id attribute)
    "resource_type": ("ResourceType", "resourceTypeId"),
    "resource_pool": ("ResourcePool", "resourcePoolId"),
    "resource": ("Resource", "resourceId"),
    "deployment_manager": ("DeploymentManager", "deploymentManagerId"),
}


def _not_found(kind: str, object_id: str) -> NotFound:
    object_type, id_field = _NAMES[kind]
    return NotFound(object_type, id_field, object_id, reason=f"{kind.upper()}_NOT_FOUND")
