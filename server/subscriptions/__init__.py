"""Inventory and alarm subscriptions: the Redis store both kinds share, creation rules,
and the o2ims.subscriptions.v1 servicer (alarm subscriptions are served by
server/monitoring_v1.py over the same store)."""

from server.subscriptions.api import SubscriptionApi, SubscriptionDraft, SubscriptionResource
from server.subscriptions.inventory import (
    INVENTORY_SUBSCRIPTION_RESOURCE,
    InventorySubscriptionServicer,
)
from server.subscriptions.store import (
    ALARM_SUBSCRIPTIONS,
    INVENTORY_SUBSCRIPTIONS,
    DuplicateSubscription,
    Subscription,
    SubscriptionKind,
    SubscriptionStore,
)

__all__ = [
    "ALARM_SUBSCRIPTIONS",
    "INVENTORY_SUBSCRIPTIONS",
    "INVENTORY_SUBSCRIPTION_RESOURCE",
    "DuplicateSubscription",
    "InventorySubscriptionServicer",
    "Subscription",
    "SubscriptionApi",
    "SubscriptionDraft",
    "SubscriptionKind",
    "SubscriptionResource",
    "SubscriptionStore",
]
