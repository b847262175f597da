"""Inventory change events -> InventoryChangeNotification bodies (spec §3.8).

A notification carries the object's states in the JSON model of the subscription's API
major, exactly as a GET of that major shows them (server.wire.printing prints them as Envoy
does: the same attributes, numbers of the same JSON type), and `objectRef`, the object's
relative API path in that major. Some wire attributes derive from other objects (a 1.x
resource type embeds its alarm dictionary, a 1.x pool carries its site's location), so the
states are built against a view of the whole domain inventory, kept by following the same
events. Events read again after a restart are built against the newer view: derived
attributes may then show the newer related objects, the object's own attributes never
change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import redis
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import KINDS
from server.notifier.config import FilterMode
from server.notifier.feeds import Feed, MatchingSubscription, Notification, wanted
from server.store import EVENTS_KEY, InventoryStore, Snapshot, StoredEvent, decode_event
from server.subscriptions.filters import WIRE_MODELS, SubscriptionFilter
from server.subscriptions.store import INVENTORY_SUBSCRIPTIONS, Subscription
from server.wire import BuildContext, WireModel
from server.wire.printing import as_json

API_NAME: Final = "o2ims-infrastructureInventory"
EVENT_TYPES: Final = {"create": 0, "modify": 1, "delete": 2}
# Namespace of notification ids: uuid5(namespace, "<subscriptionId>/<event id>"). Unique
# per notification, and the same when a crash makes the matcher read an event again, so
# the webhook-id receivers deduplicate on is stable too.
NOTIFICATION_NAMESPACE: Final = uuid.UUID("6f0e2c1a-3b9d-5e47-a8f2-0c4d1b7e9a35")

_COLLECTIONS: Final = {
    "resource_type": "resourceTypes",
    "resource_pool": "resourcePools",
    "deployment_manager": "deploymentManagers",
    "alarm_dictionary": "alarmDictionaries",
    "location": "locations",
    "site": "oCloudSites",
}


def parse_domain(kind: str, payload: bytes) -> Any:
    return getattr(domain_pb2.InventoryObject.FromString(payload), kind)


class DomainView:
    """Every domain object by kind and id, following the inventory events."""

    def __init__(self, service_uri: str) -> None:
        self._service_uri = service_uri
        self.objects: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self.version = 0

    def load(self, snapshot: Snapshot) -> None:
        self.objects = {
            kind: {oid: parse_domain(kind, payload) for oid, payload in stored.items()}
            for kind, stored in snapshot.objects.items()
        }
        self.version = snapshot.version

    def apply(self, event: StoredEvent) -> None:
        if event.version <= self.version:
            return  # part of the loaded snapshot already
        if event.event == "delete":
            self.objects[event.kind].pop(event.object_id, None)
        else:
            self.objects[event.kind][event.object_id] = parse_domain(event.kind, event.post)
        self.version = event.version

    def context(self) -> BuildContext:
        return BuildContext(self.objects, self.o_cloud_id(), self._service_uri)

    def o_cloud_id(self) -> str:
        """The O-Cloud the gateway serves ("" before the inventory names one)."""
        o_clouds = sorted(self.objects["o_cloud"])
        return o_clouds[0] if o_clouds else ""

    def global_cloud_id(self) -> str:
        """That O-Cloud's globalCloudId ("" before the inventory names one)."""
        o_cloud = self.objects["o_cloud"].get(self.o_cloud_id())
        return str(o_cloud.global_cloud_id) if o_cloud is not None else ""


def object_ref(major: str, kind: str, domain: Any) -> str:
    """The relative API path of an object in `major`."""
    root = f"/{API_NAME}/{major}"
    if kind == "o_cloud":
        return root
    if kind == "resource":
        return f"{root}/resourcePools/{domain.resource_pool_id}/resources/{domain.resource_id}"
    id_field = {
        "resource_type": "resource_type_id",
        "resource_pool": "resource_pool_id",
        "deployment_manager": "deployment_manager_id",
        "alarm_dictionary": "alarm_dictionary_id",
        "location": "global_location_id",
        "site": "o_cloud_site_id",
    }[kind]
    return f"{root}/{_COLLECTIONS[kind]}/{getattr(domain, id_field)}"


@dataclass
class EventStates:
    """One event in one major's wire model: what filters see and notifications carry."""

    event_type: int
    object_ref: str
    prior: Any | None
    post: Any | None
    _prior_json: dict[str, Any] | None = None
    _post_json: dict[str, Any] | None = None

    @property
    def filtered(self) -> Any:
        """The state a subscription filter is evaluated on: post, or prior for a delete."""
        return self.post if self.post is not None else self.prior

    def body(
        self, subscription_id: str, consumer_subscription_id: str, event_id: str
    ) -> tuple[str, bytes]:
        """(notificationId, the JSON body) of this event for one subscription."""
        if self.prior is not None and self._prior_json is None:
            self._prior_json = as_json(self.prior)
        if self.post is not None and self._post_json is None:
            self._post_json = as_json(self.post)
        identifier, notification = envelope(subscription_id, consumer_subscription_id, event_id)
        notification["notificationEventType"] = self.event_type
        notification["objectRef"] = self.object_ref
        if self._prior_json is not None:
            notification["priorObjectState"] = self._prior_json
        if self._post_json is not None:
            notification["postObjectState"] = self._post_json
        return identifier, encode(notification)


def notification_id(subscription_id: str, event_id: str) -> str:
    return str(uuid.uuid5(NOTIFICATION_NAMESPACE, f"{subscription_id}/{event_id}"))


def envelope(
    subscription_id: str, consumer_subscription_id: str, event_id: str
) -> tuple[str, dict[str, Any]]:
    """(notificationId, the start of the body) of every notification, inventory or alarm."""
    identifier = notification_id(subscription_id, event_id)
    notification: dict[str, Any] = {"notificationId": identifier}
    # Optional: left out when the subscription has none (never "").
    if consumer_subscription_id:
        notification["consumerSubscriptionId"] = consumer_subscription_id
    return identifier, notification


def encode(notification: dict[str, Any]) -> bytes:
    """A notification body as it is queued and POSTed: compact JSON."""
    return json.dumps(notification, separators=(",", ":")).encode()


def event_states(event: StoredEvent, model: WireModel, context: BuildContext) -> EventStates | None:
    """The event in `model`'s wire form; None if the major has no such object kind (the
    2.0 locations and sites do not exist in 1.x)."""
    builder = model.builders.get(event.kind)
    if builder is None:
        return None
    prior = parse_domain(event.kind, event.prior) if event.prior else None
    post = parse_domain(event.kind, event.post) if event.post else None
    some = post if post is not None else prior
    if some is None:
        return None
    return EventStates(
        event_type=EVENT_TYPES[event.event],
        object_ref=object_ref(model.major, event.kind, some),
        # Only the states the event type defines: a create has no prior state, a delete
        # no post state (spec §3.8 and checklist S9).
        prior=builder(prior, context) if prior is not None and event.event != "create" else None,
        post=builder(post, context) if post is not None and event.event != "delete" else None,
    )


class InventoryFeed(Feed[StoredEvent, SubscriptionFilter]):
    """`inventory:events` -> InventoryChangeNotifications (the matcher's inventory half).

    Filter semantics (spec §8, checklist S12): the filter is a SOL013 expression evaluated
    on the notification's state in the subscription's API major: `postObjectState` for
    create and modify, `priorObjectState` for delete; a filter applies to the object kinds
    that have every attribute it names (server/subscriptions/filters.py).
    """

    api = "inventory"
    stream = EVENTS_KEY
    kind = INVENTORY_SUBSCRIPTIONS

    def __init__(self, client: redis.Redis, view: DomainView) -> None:
        self._store = InventoryStore(client)
        self._view = view

    def start(self) -> None:
        self._view.load(self._store.snapshot())

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> StoredEvent:
        return decode_event(entry_id.encode(), fields)

    def major(self, stored: Subscription) -> str:
        return stored.api_version if stored.api_version in WIRE_MODELS else "v1"

    def compile_filter(self, expression: str, major: str) -> SubscriptionFilter:
        return SubscriptionFilter.compile(expression, major)

    def notifications(
        self,
        event: StoredEvent,
        entry_id: str,
        subscriptions: Sequence[MatchingSubscription[SubscriptionFilter]],
        mode: FilterMode,
    ) -> Iterator[Notification]:
        states: dict[str, EventStates | None] = {}
        context = None
        for subscription in subscriptions:
            if subscription.major not in states:
                context = context or self._view.context()
                states[subscription.major] = event_states(
                    event, WIRE_MODELS[subscription.major], context
                )
            state = states[subscription.major]
            if state is None:
                continue
            test = partial(SubscriptionFilter.matches, kind=event.kind, wire=state.filtered)
            if not wanted(subscription, mode, test):
                continue
            identifier, body = state.body(
                subscription.subscription_id, subscription.consumer_subscription_id, entry_id
            )
            yield Notification(subscription.subscription_id, identifier, body, event.correlation_id)

    def applied(self, event: StoredEvent) -> None:
        self._view.apply(event)
