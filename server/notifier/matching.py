"""Event streams -> per-subscription delivery queues.

One matcher works at a time (the holder of `notifier:match:lease`; every notifier process
runs one, the others stand by): matching in one place is what keeps each subscription's
queue in event order. It follows two streams, each described by a Feed (feeds.py):
`inventory:events` for inventory subscriptions (notifications.py) and `alarms:events` for
alarm subscriptions (alarms.py), in one XREADGROUP through the consumer group
`notifier:match` of each, so a killed matcher's read-but-unfinished events stay pending and
its successor reclaims them (XAUTOCLAIM) before reading on. Queuing is one Lua script per
(subscription, event) that appends only if the subscription still exists and the event is
newer than the subscription's cursor, so an event read twice is never queued twice and a
deleted subscription never gets its queue back. Events are acknowledged (XACK) in the same
pipeline as their notifications are queued. Both kinds of notification then share the
same delivery queues, workers, signing, retries and dead letters.

Filter semantics (spec §8, checklist S12). What a filter is evaluated on is the feed's
business (an inventory notification's object state; an alarm's event type or record).
- "include" (default, NETWEAVE_NOTIFY_FILTER_MODE=include): a notification is sent when
  the filter matches. This is what SMOs mean in practice (and the Red Hat user guide says).
- "exclude" (NETWEAVE_NOTIFY_FILTER_MODE=exclude): the spec's literal wording, "criteria
  for events which do not need to be reported": sent when the filter does NOT match.
Either way a subscription without a filter hears about everything, and only about events
after its creation (its `eventsAfter`, a position in its kind's stream).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Final, cast

import redis
import structlog

from server.notifier import keys, streams
from server.notifier.alarms import AlarmFeed
from server.notifier.config import FilterMode
from server.notifier.feeds import AnyFeed, MatchingSubscription
from server.notifier.leases import Leases
from server.notifier.metrics import NotifierMetrics
from server.notifier.notifications import DomainView, InventoryFeed
from server.store import stream_id
from server.subscriptions.store import SubscriptionStore

log = structlog.get_logger()

_ENQUEUE: Final = """
-- KEYS: subscription hash, delivery queue, cursors hash
-- ARGV: subscription id, event id (in the subscription's stream), notification id, body,
--       consumer group, correlation id of the event ('' = none), its traceparent ('' =
--       none)
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
local entry = {'id', ARGV[3], 'event', ARGV[2], 'body', ARGV[4]}
if ARGV[6] ~= '' then
  entry[#entry + 1] = 'correlationId'
  entry[#entry + 1] = ARGV[6]
end
if ARGV[7] and ARGV[7] ~= '' then
  entry[#entry + 1] = 'traceparent'
  entry[#entry + 1] = ARGV[7]
end
redis.call('XADD', KEYS[2], '*', unpack(entry))
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
"""

BATCH: Final = 500
# The notification ids an `event_matched` line names at most (its count is exact).
MAX_LOGGED_IDS: Final = 20


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
        self._subscription_store = SubscriptionStore(client)
        # One view of the inventory: the inventory feed keeps it, the alarm feed reads the
        # O-Cloud's id from it. Inventory first, so a batch's O-Cloud changes come first.
        view = DomainView(service_uri)
        self._feeds: tuple[AnyFeed, ...] = (InventoryFeed(client, view), AlarmFeed(view))
        # Per feed (its api): (subscriptions generation, the subscriptions then).
        self._subscriptions: dict[str, tuple[int, list[MatchingSubscription[Any]]]] = {}
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
        for feed in self._feeds:
            self._ensure_group(feed.stream)
            feed.start()
        self._subscriptions.clear()
        renewed = time.monotonic()
        for feed in self._feeds:
            self._recover(feed)
        by_stream = {feed.stream: feed for feed in self._feeds}
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
                dict.fromkeys(by_stream, ">"),
                count=BATCH,
                block=max(100, min(1000, self._lease_ms // 3)),
            )
            found = streams.entries_by_stream(reply)
            for feed in self._feeds:
                self._process(feed, found.get(feed.stream, []))
        self._leases.release(keys.MATCH_LEASE_KEY)
        self.leader = False

    def _ensure_group(self, stream: str) -> None:
        # From the start of the stream: subscriptions made while no notifier ran must still
        # hear about the events after their creation (each one's eventsAfter decides).
        try:
            self._client.xgroup_create(stream, keys.MATCH_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _recover(self, feed: AnyFeed) -> None:
        """Finish what a previous matcher read but did not acknowledge, oldest first,
        before reading anything new (so queues stay in event order)."""
        streams.recover_pending(
            self._client,
            feed.stream,
            keys.MATCH_GROUP,
            self._consumer,
            min_idle_ms=self._lease_ms,
            count=BATCH,
            handle=lambda found: self._process(feed, found),
            stop=self._stop,
        )

    def _subscriptions_of(self, feed: AnyFeed) -> list[MatchingSubscription[Any]]:
        generation = self._subscription_store.generation()
        cached = self._subscriptions.get(feed.api)
        if cached is not None and cached[0] == generation:
            return cached[1]
        found: list[MatchingSubscription[Any]] = []
        for stored in self._subscription_store.list(feed.kind):
            major = feed.major(stored)
            try:
                compiled = feed.compile_filter(stored.filter, major)
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
        self._subscriptions[feed.api] = (generation, found)
        return found

    def _process(self, feed: AnyFeed, found: Sequence[streams.Entry]) -> None:
        if not found:
            return
        # Read after the events: every subscription created before an event (its
        # eventsAfter precedes the event) is in Redis by now, so none is missed.
        subscriptions = self._subscriptions_of(feed)
        pipe = self._client.pipeline(transaction=False)
        matched = queued = 0
        woken: dict[str, None] = {}  # the subscriptions queued to, in order, once each
        for raw_id, fields in found:
            entry_id = raw_id.decode()
            # A pending entry trimmed from the stream since comes back without fields, an
            # unreadable one decodes to None: either is only acknowledged.
            event = feed.decode(entry_id, fields) if fields else None
            if event is not None:
                matched += 1
                position = stream_id(entry_id)
                later = [s for s in subscriptions if position > s.events_after]
                caused: list[str] = []
                for notification in feed.notifications(event, entry_id, later, self._mode):
                    self._enqueue(
                        keys=[
                            feed.kind.key(notification.subscription_id),
                            keys.queue_key(notification.subscription_id),
                            keys.CURSORS_KEY,
                        ],
                        args=[
                            notification.subscription_id,
                            entry_id,
                            notification.notification_id,
                            notification.body,
                            keys.DELIVER_GROUP,
                            notification.correlation_id,
                            notification.traceparent,
                        ],
                        client=pipe,
                    )
                    queued += 1
                    woken[notification.subscription_id] = None
                    if notification.correlation_id:
                        caused.append(notification.notification_id)
                correlation_id = getattr(event, "correlation_id", "")
                if correlation_id:
                    # Only events a request caused (few: adapters' changes carry no id), so
                    # `grep <id>` finds which notifications the request led to.
                    log.info(
                        "event_matched",
                        api=feed.api,
                        entry=entry_id,
                        correlation_id=correlation_id,
                        notification_ids=caused[:MAX_LOGGED_IDS],
                        notifications=len(caused),
                    )
                feed.applied(event)
            pipe.xack(feed.stream, keys.MATCH_GROUP, entry_id)
        # Wake the notifiers that deliver them (after the queues got their entries).
        for wake_up in keys.ready_entries(list(woken)):
            pipe.xadd(
                keys.READY_KEY, cast(Any, wake_up), maxlen=keys.READY_MAX_LEN, approximate=True
            )
        pipe.execute()
        self._metrics.events_matched.labels(feed.api).inc(matched)
        self._metrics.notifications_queued.labels(feed.api).inc(queued)
