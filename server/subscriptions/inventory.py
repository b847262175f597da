"""o2ims.subscriptions.v1.SubscriptionService: inventory subscriptions under both
Inventory majors (/o2ims-infrastructureInventory/v1 and /v2)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import grpc
from google.protobuf import empty_pb2
from o2ims.subscriptions.v1 import subscriptions_pb2 as pb
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as pb_grpc

from server.errors import grpc_errors
from server.inventory import API_NAME
from server.listing import Lister, select
from server.majors import INVENTORY_MAJORS, MajorNotServed
from server.subscriptions.api import SubscriptionApi, SubscriptionDraft, SubscriptionResource
from server.subscriptions.callbacks import CallbackPolicy
from server.subscriptions.rest import mark_created
from server.subscriptions.store import (
    INVENTORY_SUBSCRIPTIONS,
    Subscription,
    SubscriptionStore,
    paging_key,
)

INVENTORY_SUBSCRIPTION_RESOURCE: Final = SubscriptionResource(
    kind=INVENTORY_SUBSCRIPTIONS,
    object_type="Subscription",
    api_name=API_NAME,
    collection="subscriptions",
    majors=("v1", "v2"),
)


def _wire(subscription: Subscription) -> pb.InventorySubscriptionInfo:
    return pb.InventorySubscriptionInfo(
        subscription_id=subscription.subscription_id,
        # Optional attributes: left out (not "") when the client gave none.
        consumer_subscription_id=subscription.consumer_subscription_id or None,
        filter=subscription.filter or None,
        callback=subscription.callback,
    )


class InventorySubscriptionServicer(pb_grpc.SubscriptionServiceServicer):
    def __init__(
        self,
        store: SubscriptionStore,
        service_uri: str,
        duplicate_status: int,
        lister: Lister,
        callback_policy: CallbackPolicy | None = None,
        *,
        served_majors: Iterable[str] = INVENTORY_MAJORS,
    ) -> None:
        self._lister = lister
        self._served_majors = frozenset(served_majors)
        self._api = SubscriptionApi(
            store,
            INVENTORY_SUBSCRIPTION_RESOURCE,
            service_uri=service_uri,
            duplicate_status=duplicate_status,
            callback_policy=callback_policy,
        )

    def _check_served(self, api_version: str) -> None:
        """A major this gateway does not serve has no subscriptions path (404)."""
        if (
            api_version
            and api_version in INVENTORY_MAJORS
            and api_version not in self._served_majors
        ):
            raise MajorNotServed(api_version)

    @grpc_errors
    def ListSubscriptions(
        self, request: pb.ListSubscriptionsRequest, context: grpc.ServicerContext
    ) -> pb.ListSubscriptionsResponse:
        self._check_served(request.api_version)
        self._api.check_major(request.api_version, required=False)
        # Pages are keyed by (creation time, id): oldest first, and stable for markers.
        subscriptions = {paging_key(s): _wire(s) for s in self._api.list()}
        return self._lister.respond_in_memory(
            context,
            request,
            pb.ListSubscriptionsResponse,
            "subscriptions",
            scope=f"{API_NAME}/subscriptions",
            objects=subscriptions,
        )

    @grpc_errors
    def CreateSubscription(
        self, request: pb.CreateSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.InventorySubscriptionInfo:
        self._check_served(request.api_version)
        wanted = request.subscription
        created, location = self._api.create(
            SubscriptionDraft(
                subscription_id=wanted.subscription_id,
                callback=wanted.callback,
                filter=wanted.filter,
                consumer_subscription_id=wanted.consumer_subscription_id,
            ),
            request.api_version,
        )
        mark_created(context, location)
        return _wire(created)

    @grpc_errors
    def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: grpc.ServicerContext
    ) -> pb.InventorySubscriptionInfo:
        self._check_served(request.api_version)
        self._api.check_major(request.api_version, required=False)
        return select(request, _wire(self._api.get(request.subscription_id)))

    @grpc_errors
    def DeleteSubscription(
        self, request: pb.DeleteSubscriptionRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._check_served(request.api_version)
        self._api.check_major(request.api_version, required=False)
        self._api.delete(request.subscription_id)
        return empty_pb2.Empty()
