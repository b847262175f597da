"""Which Redis keys a backup holds, grouped by the kind of state they are.

Every name comes from the module that owns it (docs/operations.md, "State in Redis"). Left
out: the inventory (`inventory:*`: the adapters give it back when a core starts), leases,
locks and members lists (they belong to running processes and expire), the purged-records
and subscription-change streams (only running views read them) and `subscriptions:generation`
(a restore bumps it, so running notifiers and the cores' subscription views reload). The
data version is carried in the backup's header, not as a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from server.alarms import store as alarm_keys
from server.app import PAGE_SECRET_KEY
from server.notifier import keys as notifier_keys
from server.subscriptions.store import (
    ALARM_SUBSCRIPTIONS,
    CURSORS_KEY,
    DELIVERY_QUEUE_PREFIX,
    INVENTORY_SUBSCRIPTIONS,
    RETRY_STATE_PREFIX,
    SubscriptionKind,
)


@dataclass(frozen=True)
class StateKind:
    """One kind of state: its exact keys and the prefixes of its per-item keys."""

    name: str
    keys: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def holds(self, key: str) -> bool:
        return key in self.keys or key.startswith(self.prefixes)


def _subscriptions(name: str, kind: SubscriptionKind) -> StateKind:
    # The dedupe keys' prefix is whatever dedupe_key() puts before the digest.
    dedupe_prefix = kind.dedupe_key("", "", "", "").rpartition(":")[0] + ":"
    return StateKind(name, keys=(kind.index_key,), prefixes=(kind.key(""), dedupe_prefix))


STATE_KINDS: Final = (
    _subscriptions("inventory subscriptions", INVENTORY_SUBSCRIPTIONS),
    _subscriptions("alarm subscriptions", ALARM_SUBSCRIPTIONS),
    StateKind(
        "alarm records",
        keys=(
            alarm_keys.ALARMS_INDEX_KEY,
            alarm_keys.REVISION_KEY,
            alarm_keys.CLEARED_KEY,
            alarm_keys.EVENTS_KEY,
            alarm_keys.SOURCES_KEY,
            alarm_keys.PIPELINE_KEY,
        ),
        prefixes=(alarm_keys.ALARM_KEY_PREFIX,),
    ),
    StateKind("alarm service configuration", keys=(alarm_keys.CONFIG_KEY,)),
    StateKind(
        "delivery state",
        keys=(CURSORS_KEY, notifier_keys.REGISTERED_KEY),
        prefixes=(DELIVERY_QUEUE_PREFIX, RETRY_STATE_PREFIX),
    ),
    StateKind("dead letters", keys=(notifier_keys.DEAD_LETTERS_KEY,)),
    StateKind("page-marker secret", keys=(PAGE_SECRET_KEY,)),
)


def kind_of(key: str) -> str | None:
    """The name of the state kind `key` belongs to, or None if a backup leaves it out."""
    return next((kind.name for kind in STATE_KINDS if kind.holds(key)), None)
