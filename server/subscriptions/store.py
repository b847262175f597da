"""Subscriptions in Redis: one store for inventory and alarm subscriptions.

Layout, per kind (<kind> is `subscription` or `alarm_subscription`):
  <kind>:<id>               hash    one subscription: its O2ims attributes under their O2ims
                                    names (`subscriptionId` or `alarmSubscriptionId`,
                                    `consumerSubscriptionId`, `filter`, `callback`), plus
                                      owner        the authenticated client that created it
                                                   (server/auth/caller.py); absent in hashes
                                                   written before owners were recorded, read
                                                   as "": visible to administrators only
                                      apiVersion   the API major it was created through ("v1",
                                                   "v2"): its notifications use that JSON model
                                      createdAt    RFC 3339 UTC creation time
                                      eventsAfter  the last entry of the kind's event stream
                                                   (`inventory:events`, `alarms:events`) at
                                                   creation: the notifier delivers the
                                                   entries after it, never older changes
                                      dedupeKey    the name of its <kind>_dedupe key
                                      correlationId  the correlation id of the call that
                                                   created it (netweave/correlation.py);
                                                   absent on older ones
  <kind>s                   set     the ids of every subscription of the kind (the index that
                                    lists and the notifier walk)
  <kind>_dedupe:<sha256>    string  the id of the subscription with that (owner, callback,
                                    filter, consumerSubscriptionId): what makes a duplicate
                                    detectable atomically. Per owner, so two clients may hold
                                    identical subscriptions and a duplicate never names another
                                    client's. (Subscriptions written before owners were recorded
                                    keep their key of (callback, filter,
                                    consumerSubscriptionId), in their dedupeKey field; it
                                    matches no new subscription.)
  subscriptions:generation  int   bumped by every create and delete of either kind: the
                                    notifier reloads its subscriptions when it moves
Nothing has a TTL: a subscription lives until it is deleted.

Deleting a subscription (of either kind) also removes, in the same script, what the notifier
keeps for it (server/notifier/keys.py): its delivery queue `notifier:queue:<id>` with every
pending notification, its retry state `notifier:retry:<id>` and its cursor in
`notifier:cursors`, so nothing more is delivered once the delete has answered (a POST
already on the wire completes).

Create and delete are each one Lua script, so Redis applies all of a subscription's keys or
none of them: two identical concurrent creates make exactly one subscription, and a Redis
failure never leaves a half-written one. (If the reply to a create is lost, the subscription
may exist although the caller saw an error; a retry then reports it as a duplicate, with its
id.) A delete on behalf of one owner checks the owner in the same script, so it can never
remove another client's subscription.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

import redis

from server.alarms.store import EVENTS_KEY as ALARM_EVENTS_KEY
from server.store import EVENTS_KEY, NO_WAIT, ReplicaWait, run_replicated

_CREATE: Final = """
-- KEYS: subscription hash, index set, dedupe key, generation key[, event stream to record
--       the position of]
-- ARGV: id, subscription key prefix, owner, then the hash's field/value pairs
local existing = redis.call('GET', KEYS[3])
-- A dedupe key whose subscription is gone (deleted by hand) must not block a new one, and
-- one naming another owner's subscription (the owner is in the key, so only by tampering)
-- must never reveal its id. (The key is derived, not declared: fine on a single primary,
-- which netweave uses.)
if existing and redis.call('HGET', ARGV[2] .. existing, 'owner') == ARGV[3] then
  return {0, existing}
end
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local events_after = ''
if KEYS[5] then
  local last = redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', 1)
  events_after = '0-0'
  if last[1] then
    events_after = last[1][1]
  end
  fields[#fields + 1] = 'eventsAfter'
  fields[#fields + 1] = events_after
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('INCR', KEYS[4])
return {1, events_after}
"""

_DELETE: Final = """
-- KEYS: subscription hash, index set, generation key[, delivery queue, retry state,
--       cursors hash]
-- ARGV: id[, the owner it must have]
if ARGV[2] then
  -- Another owner's subscription, or one without an owner, is as absent as an unknown id.
  local owner = redis.call('HGET', KEYS[1], 'owner')
  if not owner or owner == '' or owner ~= ARGV[2] then
    return 0
  end
end
local dedupe = redis.call('HGET', KEYS[1], 'dedupeKey')
local existed = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if KEYS[4] then
  redis.call('DEL', KEYS[4], KEYS[5])
  redis.call('HDEL', KEYS[6], ARGV[1])
end
if existed == 1 then
  redis.call('INCR', KEYS[3])
end
-- Only our own dedupe entry: the key may already name a newer subscription.
if dedupe and redis.call('GET', dedupe) == ARGV[1] then
  redis.call('DEL', dedupe)
end
return existed
"""


@dataclass(frozen=True)
class SubscriptionKind:
    """What differs between inventory and alarm subscriptions in Redis."""

    name: str
    # The O2ims name of the id attribute, used as its hash field too.
    id_field: str
    # The change stream whose position is recorded at creation, if the kind has one yet.
    events_stream: str | None = None

    def key(self, subscription_id: str) -> str:
        return f"{self.name}:{subscription_id}"

    @property
    def index_key(self) -> str:
        return f"{self.name}s"

    def dedupe_key(
        self, owner: str, callback: str, filter_: str, consumer_subscription_id: str
    ) -> str:
        # JSON keeps the strings apart: no separator can be forged inside one of them. (Keys
        # written before owners were recorded hashed the last three alone: they match none.)
        identity = json.dumps([owner, callback, filter_, consumer_subscription_id])
        return f"{self.name}_dedupe:{hashlib.sha256(identity.encode()).hexdigest()}"


GENERATION_KEY: Final = "subscriptions:generation"
# What the notifier keeps per subscription (removed with the subscription).
DELIVERY_QUEUE_PREFIX: Final = "notifier:queue:"
RETRY_STATE_PREFIX: Final = "notifier:retry:"
CURSORS_KEY: Final = "notifier:cursors"

INVENTORY_SUBSCRIPTIONS: Final = SubscriptionKind("subscription", "subscriptionId", EVENTS_KEY)
ALARM_SUBSCRIPTIONS: Final = SubscriptionKind(
    "alarm_subscription", "alarmSubscriptionId", ALARM_EVENTS_KEY
)


@dataclass(frozen=True)
class Subscription:
    """One stored subscription."""

    subscription_id: str
    callback: str
    filter: str
    consumer_subscription_id: str
    api_version: str
    created_at: str
    # "" for kinds without an event stream.
    events_after: str = ""
    # The client that created it; "" (created before owners were recorded, or stored
    # without one): visible to administrators only.
    owner: str = ""
    # The correlation id of the call that created it ("" if unknown).
    correlation_id: str = ""


class DuplicateSubscription(Exception):
    """The same owner has a subscription with the same callback, filter and
    consumerSubscriptionId (`existing_id` is always that owner's own)."""

    def __init__(self, existing_id: str) -> None:
        super().__init__(f"an identical subscription exists: {existing_id}")
        self.existing_id = existing_id


class SubscriptionStore:
    """Creates, reads and deletes subscriptions; raises redis.RedisError when Redis is away."""

    def __init__(self, client: redis.Redis, wait: ReplicaWait = NO_WAIT) -> None:
        self._client = client
        # Creates and deletes wait for replicas (Redis high availability, operations guide).
        self._wait = wait
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)

    def create(
        self,
        kind: SubscriptionKind,
        subscription_id: str,
        *,
        callback: str,
        filter_: str,
        consumer_subscription_id: str,
        api_version: str,
        owner: str = "",
        correlation_id: str = "",
    ) -> Subscription:
        """Store a new subscription owned by `owner` ("": administrators only), created by
        the call `correlation_id`; raises DuplicateSubscription if the same owner has an
        identical one."""
        dedupe_key = kind.dedupe_key(owner, callback, filter_, consumer_subscription_id)
        created_at = _now_rfc3339()
        fields = {
            kind.id_field: subscription_id,
            "owner": owner,
            "consumerSubscriptionId": consumer_subscription_id,
            "filter": filter_,
            "callback": callback,
            "apiVersion": api_version,
            "createdAt": created_at,
            "dedupeKey": dedupe_key,
        }
        if correlation_id:
            fields["correlationId"] = correlation_id
        keys = [kind.key(subscription_id), kind.index_key, dedupe_key, GENERATION_KEY]
        if kind.events_stream is not None:
            keys.append(kind.events_stream)
        created, value = cast(
            list[Any],
            run_replicated(
                self._create,
                self._client,
                self._wait,
                "subscription_create",
                keys=keys,
                args=[
                    subscription_id,
                    kind.key(""),
                    owner,
                    *(item for pair in fields.items() for item in pair),
                ],
            ),
        )
        if not created:
            raise DuplicateSubscription(value.decode())
        return Subscription(
            subscription_id=subscription_id,
            callback=callback,
            filter=filter_,
            consumer_subscription_id=consumer_subscription_id,
            api_version=api_version,
            created_at=created_at,
            events_after=value.decode(),
            owner=owner,
            correlation_id=correlation_id,
        )

    def get(self, kind: SubscriptionKind, subscription_id: str) -> Subscription | None:
        stored = cast(dict[bytes, bytes], self._client.hgetall(kind.key(subscription_id)))
        return _decode(subscription_id, stored) if stored else None

    def generation(self) -> int:
        """Moves on every create and delete: reload the subscriptions when it changes."""
        return int(cast(bytes | None, self._client.get(GENERATION_KEY)) or 0)

    def list(self, kind: SubscriptionKind) -> list[Subscription]:
        """Every subscription of the kind, oldest first."""
        ids = sorted(
            member.decode() for member in cast(set[bytes], self._client.smembers(kind.index_key))
        )
        pipe = self._client.pipeline(transaction=False)
        for subscription_id in ids:
            pipe.hgetall(kind.key(subscription_id))
        found = [
            _decode(subscription_id, stored)
            for subscription_id, stored in zip(ids, pipe.execute(), strict=True)
            # An id whose hash an operator deleted by hand is simply not there.
            if stored
        ]
        return sorted(found, key=lambda s: (s.created_at, s.subscription_id))

    def delete(
        self, kind: SubscriptionKind, subscription_id: str, *, owned_by: str | None = None
    ) -> bool:
        """Remove a subscription; False if there was none with that id. With `owned_by`,
        only if that (non-empty) owner has it: False, and nothing removed, otherwise."""
        keys = [kind.key(subscription_id), kind.index_key, GENERATION_KEY]
        if kind.events_stream is not None:
            keys += [
                DELIVERY_QUEUE_PREFIX + subscription_id,
                RETRY_STATE_PREFIX + subscription_id,
                CURSORS_KEY,
            ]
        args = [subscription_id] if owned_by is None else [subscription_id, owned_by]
        existed = run_replicated(
            self._delete, self._client, self._wait, "subscription_delete", keys=keys, args=args
        )
        return bool(existed)


def _decode(subscription_id: str, stored: dict[bytes, bytes]) -> Subscription:
    fields = {name.decode(): value.decode() for name, value in stored.items()}
    return Subscription(
        subscription_id=subscription_id,
        callback=fields.get("callback", ""),
        filter=fields.get("filter", ""),
        consumer_subscription_id=fields.get("consumerSubscriptionId", ""),
        api_version=fields.get("apiVersion", ""),
        created_at=fields.get("createdAt", ""),
        events_after=fields.get("eventsAfter", ""),
        owner=fields.get("owner", ""),
        correlation_id=fields.get("correlationId", ""),
    )


def paging_key(subscription: Subscription) -> str:
    """Orders subscriptions oldest first (fixed-width UTC timestamps sort as text), with
    the id breaking ties, so page markers stay valid while others come and go."""
    return f"{subscription.created_at}|{subscription.subscription_id}"


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
