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
  subscriptions:events      stream  one entry per create and delete of either kind, written
                                    in the script that bumps the generation: `generation`
                                    (the new value: consecutive entries count up by one),
                                    `kind` (`subscription` | `alarm_subscription`), `id`,
                                    `change` (`create` | `delete`) and, for a create,
                                    `subscription` (the hash's fields as a JSON object);
                                    trimmed to about CHANGES_MAX_LEN entries. Every core's
                                    subscription view follows it (server/subscriptions/
                                    view.py); a backup leaves it out (a restore bumps the
                                    generation without an entry, so the views reload)
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
from typing import TYPE_CHECKING, Any, Final, cast

import redis
import structlog

from server.alarms.store import EVENTS_KEY as ALARM_EVENTS_KEY
from server.store import EVENTS_KEY, NO_WAIT, ReplicaWait, is_transient, run_replicated

if TYPE_CHECKING:
    from server.subscriptions.view import SubscriptionView

log = structlog.get_logger()

_CREATE: Final = """
-- KEYS: subscription hash, index set, dedupe key, generation key, subscription events
--       stream[, event stream to record the position of]
-- ARGV: id, subscription key prefix, owner, kind name, events maxlen, then the hash's
--       field/value pairs
local existing = redis.call('GET', KEYS[3])
-- A dedupe key whose subscription is gone (deleted by hand) must not block a new one, and
-- one naming another owner's subscription (the owner is in the key, so only by tampering)
-- must never reveal its id. (The key is derived, not declared: fine on a single primary,
-- which netweave uses.)
if existing and redis.call('HGET', ARGV[2] .. existing, 'owner') == ARGV[3] then
  return {0, existing}
end
local fields = {}
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local events_after = ''
if KEYS[6] then
  local last = redis.call('XREVRANGE', KEYS[6], '+', '-', 'COUNT', 1)
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
local generation = redis.call('INCR', KEYS[4])
local document = {}
for i = 1, #fields, 2 do
  document[fields[i]] = fields[i + 1]
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'generation', generation,
  'kind', ARGV[4], 'id', ARGV[1], 'change', 'create', 'subscription', cjson.encode(document))
return {1, events_after, generation}
"""

_DELETE: Final = """
-- KEYS: subscription hash, index set, generation key, subscription events stream[,
--       delivery queue, retry state, cursors hash]
-- ARGV: id, kind name, events maxlen[, the owner it must have]
if ARGV[4] then
  -- Another owner's subscription, or one without an owner, is as absent as an unknown id.
  local owner = redis.call('HGET', KEYS[1], 'owner')
  if not owner or owner == '' or owner ~= ARGV[4] then
    return {0, 0}
  end
end
local dedupe = redis.call('HGET', KEYS[1], 'dedupeKey')
local existed = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if KEYS[5] then
  redis.call('DEL', KEYS[5], KEYS[6])
  redis.call('HDEL', KEYS[7], ARGV[1])
end
local generation = 0
if existed == 1 then
  generation = redis.call('INCR', KEYS[3])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'generation', generation,
    'kind', ARGV[2], 'id', ARGV[1], 'change', 'delete')
end
-- Only our own dedupe entry: the key may already name a newer subscription.
if dedupe and redis.call('GET', dedupe) == ARGV[1] then
  redis.call('DEL', dedupe)
end
return {existed, generation}
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
SUBSCRIPTION_EVENTS_KEY: Final = "subscriptions:events"
# About how many entries subscriptions:events keeps: a view that falls further behind
# (away longer than that many changes) loads again.
CHANGES_MAX_LEN: Final = 10_000
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
    """Creates, reads and deletes subscriptions; raises redis.RedisError when Redis is away.

    With a `view` (a core's SubscriptionView, server/subscriptions/view.py), reads are
    served from it once it has loaded (a hit of the cache metric), and every create and
    delete is handed to it before returning (read-your-writes). Before its first load, and
    for an id the view does not hold (made on another replica a moment ago), reads go to
    Redis (a miss). Without one (the notifier, tools), every read is Redis's."""

    def __init__(
        self,
        client: redis.Redis,
        wait: ReplicaWait = NO_WAIT,
        *,
        view: SubscriptionView | None = None,
        changes_max_len: int = CHANGES_MAX_LEN,
    ) -> None:
        self._client = client
        # Creates and deletes wait for replicas (Redis high availability, operations guide).
        self._wait = wait
        self._view = view
        self._changes_max_len = changes_max_len
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
        keys = [
            kind.key(subscription_id),
            kind.index_key,
            dedupe_key,
            GENERATION_KEY,
            SUBSCRIPTION_EVENTS_KEY,
        ]
        if kind.events_stream is not None:
            keys.append(kind.events_stream)
        reply = cast(
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
                    kind.name,
                    self._changes_max_len,
                    *(item for pair in fields.items() for item in pair),
                ],
            ),
        )
        if not reply[0]:
            raise DuplicateSubscription(reply[1].decode())
        created = Subscription(
            subscription_id=subscription_id,
            callback=callback,
            filter=filter_,
            consumer_subscription_id=consumer_subscription_id,
            api_version=api_version,
            created_at=created_at,
            events_after=reply[1].decode(),
            owner=owner,
            correlation_id=correlation_id,
        )
        if self._view is not None:
            self._view.created(kind, created, int(reply[2]))
        return created

    def get(self, kind: SubscriptionKind, subscription_id: str) -> Subscription | None:
        view = self._view
        if view is None:
            return self._read(kind, subscription_id)
        if view.loaded:
            found = view.get(kind, subscription_id)
            if found is not None:
                view.on_read("hit")
                return found
        view.on_read("miss")
        try:
            return self._read(kind, subscription_id)
        except redis.RedisError as error:
            if not view.loaded or not is_transient(error):
                raise
            # Redis is away, so nothing can have created it meanwhile: the view's answer.
            return None

    def _read(self, kind: SubscriptionKind, subscription_id: str) -> Subscription | None:
        stored = cast(dict[bytes, bytes], self._client.hgetall(kind.key(subscription_id)))
        return _decode(subscription_id, stored) if stored else None

    def generation(self) -> int:
        """Moves on every create and delete: reload the subscriptions when it changes."""
        return int(cast(bytes | None, self._client.get(GENERATION_KEY)) or 0)

    def list(self, kind: SubscriptionKind) -> list[Subscription]:
        """Every subscription of the kind, oldest first."""
        view = self._view
        if view is not None:
            if view.loaded:
                view.on_read("hit")
                return view.list(kind)
            view.on_read("miss")
        return load_all(self._client, (kind,))[kind.name]

    def delete(
        self, kind: SubscriptionKind, subscription_id: str, *, owned_by: str | None = None
    ) -> bool:
        """Remove a subscription; False if there was none with that id. With `owned_by`,
        only if that (non-empty) owner has it: False, and nothing removed, otherwise."""
        keys = [kind.key(subscription_id), kind.index_key, GENERATION_KEY, SUBSCRIPTION_EVENTS_KEY]
        if kind.events_stream is not None:
            keys += [
                DELIVERY_QUEUE_PREFIX + subscription_id,
                RETRY_STATE_PREFIX + subscription_id,
                CURSORS_KEY,
            ]
        args: list[str | int] = [subscription_id, kind.name, self._changes_max_len]
        if owned_by is not None:
            args.append(owned_by)
        existed, generation = cast(
            list[int],
            run_replicated(
                self._delete, self._client, self._wait, "subscription_delete", keys=keys, args=args
            ),
        )
        if existed and self._view is not None:
            self._view.deleted(kind, subscription_id, int(generation))
        return bool(existed)


def oldest_first(subscription: Subscription) -> tuple[str, str]:
    """The order every list of subscriptions is in: creation time, then id."""
    return subscription.created_at, subscription.subscription_id


def load_all(
    client: redis.Redis, kinds: tuple[SubscriptionKind, ...]
) -> dict[str, list[Subscription]]:
    """kind name -> every subscription of the kind, oldest first: one SMEMBERS per kind,
    then one pipeline of HGETALLs."""
    pipe = client.pipeline(transaction=False)
    for kind in kinds:
        pipe.smembers(kind.index_key)
    indexes = cast(list[set[bytes]], pipe.execute())
    wanted = [
        (kind, subscription_id)
        for kind, members in zip(kinds, indexes, strict=True)
        for subscription_id in sorted(member.decode() for member in members)
    ]
    pipe = client.pipeline(transaction=False)
    for kind, subscription_id in wanted:
        pipe.hgetall(kind.key(subscription_id))
    found: dict[str, list[Subscription]] = {kind.name: [] for kind in kinds}
    replies = pipe.execute(raise_on_error=False)
    for (kind, subscription_id), stored in zip(wanted, replies, strict=True):
        if isinstance(stored, redis.ResponseError):
            # One corrupted record (not a hash) must not hide every other subscription.
            log.error("subscription_unreadable", key=kind.key(subscription_id), error=str(stored))
            continue
        if isinstance(stored, Exception):
            raise stored
        # An id whose hash an operator deleted by hand is simply not there.
        if stored:
            found[kind.name].append(_decode(subscription_id, stored))
    for subscriptions in found.values():
        subscriptions.sort(key=oldest_first)
    return found


def _decode(subscription_id: str, stored: dict[bytes, bytes]) -> Subscription:
    return decode_fields(
        subscription_id, {name.decode(): value.decode() for name, value in stored.items()}
    )


def decode_fields(subscription_id: str, fields: dict[str, str]) -> Subscription:
    """A subscription of its stored fields (the hash's, or a subscriptions:events entry's
    JSON object of them)."""
    return Subscription(
        subscription_id=subscription_id,
        callback=str(fields.get("callback", "")),
        filter=str(fields.get("filter", "")),
        consumer_subscription_id=str(fields.get("consumerSubscriptionId", "")),
        api_version=str(fields.get("apiVersion", "")),
        created_at=str(fields.get("createdAt", "")),
        events_after=str(fields.get("eventsAfter", "")),
        owner=str(fields.get("owner", "")),
        correlation_id=str(fields.get("correlationId", "")),
    )


def paging_key(subscription: Subscription) -> str:
    """Orders subscriptions oldest first (fixed-width UTC timestamps sort as text), with
    the id breaking ties, so page markers stay valid while others come and go."""
    return f"{subscription.created_at}|{subscription.subscription_id}"


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
