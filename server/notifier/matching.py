"""Inventory events -> per-subscription delivery queues.

One matcher works at a time (the holder of `notifier:match:lease`; every notifier process
runs one, the others stand by): matching in one place is what keeps each subscription's
queue in event order. It reads `inventory:events` through the consumer group
`notifier:match` (XREADGROUP), so a killed matcher's read-but-unfinished events stay
pending and its successor reclaims them (XAUTOCLAIM) before reading on. Queuing is one Lua
script per (subscription, event) that appends only if the subscription still exists and
the event is newer than the subscription's cursor, so an event read twice is never queued
twice and a deleted subscription never gets its queue back. Events are acknowledged
(XACK) in the same pipeline as their notifications are queued.

Filter semantics (spec §8, checklist S12). The filter is a SOL013 expression evaluated on
the notification's state in the subscription's API major: `postObjectState` for create
and modify, `priorObjectState` for delete; a filter applies to the object kinds that have
every attribute it names (server/subscriptions/filters.py).
- "include" (default, NETWEAVE_NOTIFY_FILTER_MODE=include): a notification is sent when
  the filter matches. This is what SMOs mean in practice (and the Red Hat user guide says).
- "exclude" (NETWEAVE_NOTIFY_FILTER_MODE=exclude): the spec's literal wording, "criteria
  for events which do not need to be reported": sent when the filter does NOT match.
Either way a subscription without a filter hears about everything, and only about events
after its creation (its `eventsAfter`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis
import structlog

from server.notifier import keys, streams
from server.notifier.config import FilterMode
from server.notifier.leases import Leases
from server.notifier.metrics import NotifierMetrics
from server.notifier.notifications import DomainView, EventStates, event_states
from server.store import InventoryStore, StoredEvent, decode_event
from server.subscriptions.filters import WIRE_MODELS, SubscriptionFilter
from server.subscriptions.store import (
    INVENTORY_SUBSCRIPTIONS,
    SubscriptionStore,
)

log = structlog.get_logger()

_ENQUEUE: Final = """
-- KEYS: subscription hash, delivery queue, cursors hash
-- ARGV: subscription id, inventory event id, notification id, body, consumer group
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = redis.call('HGET', KEYS[3], ARGV[1])
if last then
  local lm, ls = string.match(last, '(%d+)-(%d+)')
  local em, es = string.match(ARGV[2], '(%d+)-(%d+)')
  lm, ls, em, es = tonumber(lm), tonumber(ls), tonumber(em), tonumber(es)
  if em < lm or (em == lm and es <= ls) then return 0 end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[5], '0', 'MKSTREAM')
end
redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'event', ARGV[2], 'body', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
"""

BATCH: Final = 500


def stream_id(text: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair."""
    ms, _, seq = text.partition("-")
    return int(ms or 0), int(seq or 0)


@dataclass
class MatchingSubscription:
    subscription_id: str
    consumer_subscription_id: str
    major: str
    events_after: tuple[int, int]
    filter: SubscriptionFilter | None  # None: unusable stored filter (matches nothing)


def wanted(subscription: MatchingSubscription, mode: FilterMode, kind: str, state: Any) -> bool:
    """Whether the subscription is notified of an object in this state (module docstring)."""
    compiled = subscription.filter
    if compiled is None:
        return False
    if compiled.empty:
        return True
    matched = compiled.matches(kind, state)
    return matched if mode == "include" else not matched


class Matcher:
    """The matcher role of one notifier process (a thread; see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        consumer: str,
        *,
        lease_ms: int,
        filter_mode: FilterMode,
        service_uri: str,
        metrics: NotifierMetrics,
        stop: threading.Event,
    ) -> None:
        self._client = client
        self._consumer = consumer
        self._lease_ms = lease_ms
        self._mode = filter_mode
        self._metrics = metrics
        self._stop = stop
        self._leases = Leases(client, consumer, lease_ms)
        self._enqueue = client.register_script(_ENQUEUE)
        self._store = InventoryStore(client)
        self._subscription_store = SubscriptionStore(client)
        self._view = DomainView(service_uri)
        self._generation = -1
        self._subscriptions: list[MatchingSubscription] = []
        self.leader = False
        self.redis_ok = True

    def run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if self._leases.hold([keys.MATCH_LEASE_KEY])[0]:
                    self._lead()
                else:
                    self._stop.wait(self._lease_ms / 3000)
                backoff = 0.1
                self.redis_ok = True
            except redis.RedisError as exc:
                self.leader = False
                self.redis_ok = False
                log.warning("matcher_redis_error", error=str(exc))
                self._stop.wait(backoff)
                backoff = min(2.0, backoff * 2)
            except Exception:
                self.leader = False
                log.exception("matcher_failed")
                self._stop.wait(1.0)
        self.leader = False

    # --- the leader's loop ----------------------------------------------------------------

    def _lead(self) -> None:
        log.info("matcher_leading", consumer=self._consumer)
        self.leader = True
        self._ensure_group()
        self._view.load(self._store.snapshot())
        self._generation = -1
        renewed = time.monotonic()
        self._recover()
        while not self._stop.is_set():
            if time.monotonic() - renewed > self._lease_ms / 3000:
                if not self._leases.hold([keys.MATCH_LEASE_KEY])[0]:
                    log.warning("matcher_lease_lost", consumer=self._consumer)
                    self.leader = False
                    return
                renewed = time.monotonic()
            reply: Any = self._client.xreadgroup(
                keys.MATCH_GROUP,
                self._consumer,
                {keys.EVENTS_KEY: ">"},
                count=BATCH,
                block=max(100, min(1000, self._lease_ms // 3)),
            )
            self._process(_events(streams.entries(reply)))
        self._leases.release(keys.MATCH_LEASE_KEY)
        self.leader = False

    def _ensure_group(self) -> None:
        # From the start of the stream: subscriptions made while no notifier ran must still
        # hear about the events after their creation (each one's eventsAfter decides).
        try:
            self._client.xgroup_create(keys.EVENTS_KEY, keys.MATCH_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _recover(self) -> None:
        """Finish what a previous matcher read but did not acknowledge, oldest first,
        before reading anything new (so queues stay in event order)."""
        streams.recover_pending(
            self._client,
            keys.EVENTS_KEY,
            keys.MATCH_GROUP,
            self._consumer,
            min_idle_ms=self._lease_ms,
            count=BATCH,
            handle=lambda found: self._process(_events(found)),
            stop=self._stop,
        )

    def _refresh_subscriptions(self) -> None:
        generation = self._subscription_store.generation()
        if generation == self._generation:
            return
        found = []
        for stored in self._subscription_store.list(INVENTORY_SUBSCRIPTIONS):
            major = stored.api_version if stored.api_version in WIRE_MODELS else "v1"
            try:
                compiled: SubscriptionFilter | None = SubscriptionFilter.compile(
                    stored.filter, major
                )
            except ValueError as exc:  # QueryError is a ValueError
                log.warning(
                    "subscription_filter_unusable",
                    subscription_id=stored.subscription_id,
                    error=str(exc),
                )
                compiled = None
            found.append(
                MatchingSubscription(
                    subscription_id=stored.subscription_id,
                    consumer_subscription_id=stored.consumer_subscription_id,
                    major=major,
                    events_after=stream_id(stored.events_after or "0-0"),
                    filter=compiled,
                )
            )
        self._subscriptions = found
        self._generation = generation

    def _process(self, entries: Sequence[StoredEvent | str]) -> None:
        if not entries:
            return
        events = [entry for entry in entries if isinstance(entry, StoredEvent)]
        # Read after the events: every subscription created before an event (its
        # eventsAfter precedes the event) is in Redis by now, so none is missed.
        self._refresh_subscriptions()
        pipe = self._client.pipeline(transaction=False)
        queued = 0
        for event in events:
            position = stream_id(event.stream_id)
            states: dict[str, EventStates | None] = {}
            context = None
            for subscription in self._subscriptions:
                if position <= subscription.events_after:
                    continue
                if subscription.major not in states:
                    context = context or self._view.context()
                    states[subscription.major] = event_states(
                        event, WIRE_MODELS[subscription.major], context
                    )
                state = states[subscription.major]
                if state is None:
                    continue
                if not wanted(subscription, self._mode, event.kind, state.filtered):
                    continue
                notification_id, body = state.body(
                    subscription.subscription_id,
                    subscription.consumer_subscription_id,
                    event.stream_id,
                )
                self._enqueue(
                    keys=[
                        INVENTORY_SUBSCRIPTIONS.key(subscription.subscription_id),
                        keys.queue_key(subscription.subscription_id),
                        keys.CURSORS_KEY,
                    ],
                    args=[
                        subscription.subscription_id,
                        event.stream_id,
                        notification_id,
                        body,
                        keys.DELIVER_GROUP,
                    ],
                    client=pipe,
                )
                queued += 1
            self._view.apply(event)
            pipe.xack(keys.EVENTS_KEY, keys.MATCH_GROUP, event.stream_id)
        for trimmed in entries:
            if isinstance(trimmed, str):
                pipe.xack(keys.EVENTS_KEY, keys.MATCH_GROUP, trimmed)
        pipe.execute()
        self._metrics.events_matched.inc(len(events))
        self._metrics.notifications_queued.inc(queued)


def _events(found: list[streams.Entry]) -> list[StoredEvent | str]:
    """The events read; a pending entry trimmed from the stream since (it comes back
    without fields) is left as its bare id, to be acknowledged."""
    return [
        decode_event(entry_id, fields) if fields else entry_id.decode()
        for entry_id, fields in found
    ]
