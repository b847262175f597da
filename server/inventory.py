"""o2ims.inventory.v{1,2}.InventoryService, served from the cache.

One implementation serves every major version: the versions' RPCs have the same names
and shapes, and differ only in their wire messages, which the WireModel supplies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final

import grpc
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc
from o2ims.inventory.v2 import inventory_pb2_grpc as v2_grpc

from server.auth.caller import current_caller
from server.auth.policy import may_read_credentials
from server.cache import RESOURCE_INDEXES, InventoryCache
from server.deployment_profiles import requested_profile, serve_deployment_manager
from server.errors import NotFound, Unavailable, grpc_errors
from server.listing import Lister, select
from server.query import CompiledQuery
from server.wire import WireModel
from server.wire import v1 as wire_v1
from server.wire import v2 as wire_v2

API_NAME: Final = "o2ims-infrastructureInventory"
MODELS: Final = (wire_v1.MODEL, wire_v2.MODEL)
# kind: (List response message, its collection field)
_COLLECTIONS: Final = {
    "resource_type": ("ListResourceTypesResponse", "resource_types"),
    "alarm_dictionary": ("ListAlarmDictionariesResponse", "alarm_dictionaries"),
    "resource_pool": ("ListResourcePoolsResponse", "resource_pools"),
    "resource": ("ListResourcesResponse", "resources"),
    "deployment_manager": ("ListDeploymentManagersResponse", "deployment_managers"),
    "location": ("ListLocationsResponse", "locations"),
    "site": ("ListOCloudSitesResponse", "o_cloud_sites"),
}
# kind: (O2ims object type, id attribute) for NOT_FOUND details.
_NAMES: Final = {
    "resource_type": ("ResourceType", "resourceTypeId"),
    "alarm_dictionary": ("AlarmDictionary", "alarmDictionaryId"),
    "resource_pool": ("ResourcePool", "resourcePoolId"),
    "resource": ("Resource", "resourceId"),
    "deployment_manager": ("DeploymentManager", "deploymentManagerId"),
    "location": ("Location", "globalLocationId"),
    "site": ("OCloudSite", "oCloudSiteId"),
}


def not_found(kind: str, object_id: str) -> NotFound:
    object_type, id_field = _NAMES[kind]
    return NotFound(object_type, id_field, object_id, reason=f"{kind.upper()}_NOT_FOUND")


class InventoryServicer:
    """The RPCs of every Inventory major; subclasses bind a WireModel and the
    generated servicer base of that major."""

    model: ClassVar[WireModel]

    def __init__(
        self,
        cache: InventoryCache,
        service_uri: str,
        lister: Lister,
        *,
        served_majors: Iterable[str] = ("v1", "v2"),
    ) -> None:
        self._cache = cache
        self._service_uri = service_uri.rstrip("/")
        self._lister = lister
        # api_versions lists what is served (server/majors.py refuses the rest).
        self._served_models = tuple(m for m in MODELS if m.major in set(served_majors))

    # --- helpers -----------------------------------------------------------------

    def _list(
        self,
        context: grpc.ServicerContext,
        request: Any,
        kind: str,
        ids: Callable[[CompiledQuery], list[str]] | None = None,
        scope: str = "",
    ) -> Any:
        response_name, field = _COLLECTIONS[kind]
        return self._lister.respond(
            context,
            request,
            getattr(self.model.pb, response_name),
            field,
            scope=f"{API_NAME}/{self.model.major}/{kind}/{scope}",
            ids=ids or (lambda _query: self._cache.ids(kind)),
            fetch=lambda ids_in_order: self._cache.iter_wire(self.model, kind, ids_in_order),
        )

    def _get(self, kind: str, object_id: str, request: Any) -> Any:
        """One object, as the request's attribute selectors ask for it."""
        found = self._cache.get(self.model, kind, object_id)
        if found is None:
            raise not_found(kind, object_id)
        return select(request, found)

    def _versions(self, uri_prefix: str, models: tuple[WireModel, ...]) -> Any:
        pb = self.model.pb
        return pb.ApiVersionInformation(
            uri_prefix=uri_prefix,
            api_versions=[pb.ApiVersion(version=m.version) for m in models],
        )

    # --- API versions and the O-Cloud ---------------------------------------------

    @grpc_errors
    def GetAllApiVersions(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._versions(f"{self._service_uri}/{API_NAME}", self._served_models)

    @grpc_errors
    def GetApiVersions(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._versions(f"{self._service_uri}/{API_NAME}/{self.model.major}", (self.model,))

    @grpc_errors
    def GetCloudInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        info = self._cache.cloud_info(self.model)
        if info is None:
            raise Unavailable("OCLOUD_NOT_CONFIGURED", "no adapter has provided the O-Cloud yet")
        return select(request, info)

    # --- resource types and alarm dictionaries --------------------------------------

    @grpc_errors
    def ListResourceTypes(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._list(context, request, "resource_type")

    @grpc_errors
    def GetResourceType(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._get("resource_type", request.resource_type_id, request)

    @grpc_errors
    def GetResourceTypeAlarmDictionary(self, request: Any, context: grpc.ServicerContext) -> Any:
        resource_type = self._cache.domain("resource_type", request.resource_type_id)
        if resource_type is None:
            raise not_found("resource_type", request.resource_type_id)
        return self._get("alarm_dictionary", resource_type.alarm_dictionary_id, request)

    @grpc_errors
    def ListAlarmDictionaries(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._list(context, request, "alarm_dictionary")

    @grpc_errors
    def GetAlarmDictionary(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._get("alarm_dictionary", request.alarm_dictionary_id, request)

    # --- pools and resources -------------------------------------------------------

    @grpc_errors
    def ListResourcePools(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._list(context, request, "resource_pool")

    @grpc_errors
    def GetResourcePool(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._get("resource_pool", request.resource_pool_id, request)

    @grpc_errors
    def ListResources(self, request: Any, context: grpc.ServicerContext) -> Any:
        pool_id = request.resource_pool_id
        if self._cache.domain("resource_pool", pool_id) is None:
            raise not_found("resource_pool", pool_id)

        def indexed_ids(query: CompiledQuery) -> list[str]:
            # eq/in on an indexed attribute: fetch the candidates, never scan the pool.
            constraints = {
                attribute: keys
                for attribute in RESOURCE_INDEXES
                if (keys := query.equality_candidates(attribute)) is not None
            }
            # Terms on extensions/...: candidates from an index of the path's values.
            prefilters = query.json_prefilters()
            return self._cache.resource_ids(pool_id, constraints, prefilters) or []

        return self._list(context, request, "resource", indexed_ids, scope=pool_id)

    @grpc_errors
    def GetResource(self, request: Any, context: grpc.ServicerContext) -> Any:
        pool_id = request.resource_pool_id
        if self._cache.domain("resource_pool", pool_id) is None:
            raise not_found("resource_pool", pool_id)
        resource = self._cache.get(self.model, "resource", request.resource_id)
        # A resource asked for under another pool does not exist at that path.
        if resource is None or resource.resource_pool_id != pool_id:
            raise not_found("resource", request.resource_id)
        return select(request, resource)

    # --- deployment managers -------------------------------------------------------

    @grpc_errors
    def ListDeploymentManagers(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._list(context, request, "deployment_manager")

    @grpc_errors
    def GetDeploymentManager(self, request: Any, context: grpc.ServicerContext) -> Any:
        # Never the admin credentials, unless a profile is asked for by a caller whose
        # roles may read them (server/deployment_profiles.py).
        profile = requested_profile(request.profile)
        manager_id = request.deployment_manager_id
        manager = self._cache.get(self.model, "deployment_manager", manager_id)
        if manager is None:
            raise not_found("deployment_manager", manager_id)
        may_read = may_read_credentials(current_caller().roles)
        adapter_given = self._cache.domain("deployment_manager", manager_id)
        source = adapter_given.extensions if adapter_given is not None else None
        return select(
            request, serve_deployment_manager(manager, manager_id, profile, may_read, source)
        )

    # --- locations and sites (2.0.0) ---------------------------------------------------

    @grpc_errors
    def ListLocations(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._list(context, request, "location")

    @grpc_errors
    def GetLocation(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._get("location", request.global_location_id, request)

    @grpc_errors
    def ListOCloudSites(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._list(context, request, "site")

    @grpc_errors
    def GetOCloudSite(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._get("site", request.o_cloud_site_id, request)


class InventoryV1Servicer(InventoryServicer, v1_grpc.InventoryServiceServicer):
    model = wire_v1.MODEL


class InventoryV2Servicer(InventoryServicer, v2_grpc.InventoryServiceServicer):
    model = wire_v2.MODEL
