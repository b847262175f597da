"""Every Redis key and consumer group the notifier uses (documented once, here).

  inventory:events            stream  the store's change events (server/store.py); read
                                      through the consumer group `notifier:match`
  alarms:events               stream  the alarm store's change events (server/alarms/store.py);
                                      read through its consumer group `notifier:match` too
  notifier:match:lease        string  the consumer name of the one matcher at work (PX lease)
  notifier:queue:<subId>      stream  the notifications of one subscription (inventory or
                                      alarm: ids never collide), in order; read
                                      through its consumer group `notifier:deliver` by the
                                      one notifier process that holds the subscription's lease
  notifier:lease:<subId>      string  that process's consumer name (PX lease)
  notifier:cursors            hash    subId -> the last event id (of its kind's stream) queued:
                                      what keeps a re-read event from being queued twice
  notifier:retry:<subId>      hash    retry state of the queue's head: entry, attempts,
                                      firstFailureMs (survives a restart of the notifier)
  notifier:members            zset    live notifier processes, scored by lease expiry (ms):
                                      how each computes its fair share of subscriptions
  notifier:ready              stream  wake-ups: `ids`, space-separated subscription ids whose
                                      queues just got notifications (written with them by the
                                      matcher and a dead-letter replay); every notifier process
                                      follows it (XREAD BLOCK) and wakes the ones it delivers;
                                      trimmed to about READY_MAX_LEN entries
  notifier:dead-letters       stream  notifications that could not be delivered
  notifier:registered         hash    the last accepted O-Cloud registration (URL, time)

The subscription's own keys (server/subscriptions/store.py) are removed together with its
queue, retry state and cursor by the subscription store's delete script.
"""

from __future__ import annotations

from typing import Final

from server.store import EVENTS_KEY
from server.subscriptions.store import (
    ALARM_SUBSCRIPTIONS,
    CURSORS_KEY,
    DELIVERY_QUEUE_PREFIX,
    INVENTORY_SUBSCRIPTIONS,
    RETRY_STATE_PREFIX,
    SubscriptionKind,
)

__all__ = [
    "CURSORS_KEY",
    "DEAD_LETTERS_KEY",
    "DELIVER_GROUP",
    "EVENTS_KEY",
    "MATCH_GROUP",
    "MATCH_LEASE_KEY",
    "MEMBERS_KEY",
    "READY_KEY",
    "READY_MAX_LEN",
    "REGISTERED_KEY",
    "SUBSCRIPTION_KINDS",
    "kind_named",
    "lease_key",
    "queue_key",
    "retry_key",
]

MATCH_GROUP: Final = "notifier:match"
MATCH_LEASE_KEY: Final = "notifier:match:lease"
DELIVER_GROUP: Final = "notifier:deliver"
LEASE_PREFIX: Final = "notifier:lease:"
MEMBERS_KEY: Final = "notifier:members"
DEAD_LETTERS_KEY: Final = "notifier:dead-letters"
REGISTERED_KEY: Final = "notifier:registered"
READY_KEY: Final = "notifier:ready"
# A notifier further behind than this many wake-ups misses some: it then looks at every
# queue it delivers once (scheduler.py).
READY_MAX_LEN: Final = 10_000
# Subscription ids per wake-up entry (a burst to 10,000 subscriptions: 10 entries).
READY_IDS_PER_ENTRY: Final = 1000


def ready_entries(subscription_ids: list[str]) -> list[dict[str, str]]:
    """The wake-up entries (notifier:ready) that name these subscriptions."""
    return [
        {"ids": " ".join(subscription_ids[start : start + READY_IDS_PER_ENTRY])}
        for start in range(0, len(subscription_ids), READY_IDS_PER_ENTRY)
    ]


# The subscriptions the notifier delivers; each one's hash is `<kind>:<id>`, its index
# `<kind>s` (server/subscriptions/store.py).
SUBSCRIPTION_KINDS: Final = (INVENTORY_SUBSCRIPTIONS, ALARM_SUBSCRIPTIONS)


def kind_named(name: str) -> SubscriptionKind:
    """The kind of that name; inventory for an unknown one (dead letters written before
    alarm notifications existed name none)."""
    return next((kind for kind in SUBSCRIPTION_KINDS if kind.name == name), INVENTORY_SUBSCRIPTIONS)


def queue_key(subscription_id: str) -> str:
    return DELIVERY_QUEUE_PREFIX + subscription_id


def lease_key(subscription_id: str) -> str:
    return LEASE_PREFIX + subscription_id


def retry_key(subscription_id: str) -> str:
    return RETRY_STATE_PREFIX + subscription_id
