"""The inventory snapshot in Redis.

Layout (every key documented for operators in docs/operations.md):
  inventory:objects:<kind>  hash  id -> serialized o2ims.adapter.v1 object
  inventory:owner           hash  "<kind>/<id>" -> name of the adapter that owns it
  inventory:version         int   bumped once per applied change
  inventory:events          stream one entry per applied change:
                            version, kind, id, event (create|modify|delete), prior, post
                            (and `correlationId` if a request caused it; adapters' changes
                            have none: no request causes them)

Every write goes through one Lua script that compares the stored bytes with the new
ones, so re-applying a state (after a reconnect, a resync or from a second replica)
changes nothing and emits no event: the store can be replayed into, never doubled.
One call of the script applies a whole batch of changes, and Redis runs a script
without interleaving anything else: a batch's objects and its events (in the batch's
order) become visible together, so a reader never sees half of a change set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import redis
import structlog
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry
from redis.sentinel import Sentinel

from adapters.contract import KINDS, ObjectKey
from netweave.redis_metrics import UNREPLICATED_WRITES, CountingRedis
from netweave.redis_url import parse_redis_url

log = structlog.get_logger()

OBJECTS_PREFIX: Final = "inventory:objects:"
OWNER_KEY: Final = "inventory:owner"
VERSION_KEY: Final = "inventory:version"
EVENTS_KEY: Final = "inventory:events"

EventName = Literal["create", "modify", "delete"]

# Out of memory, Redis refuses a script's first write and lets a script that has
# written finish, so even then a batch is applied whole or not at all.
_APPLY = """
-- KEYS: owner hash, version key, events stream, then one objects hash per kind
-- ARGV: adapter, stream max length, then per change: index of its objects hash in
--       KEYS, kind, id, payload ('' = delete)
-- Returns how many changes changed the store (each one emits one event).
local changed = 0
for i = 3, #ARGV, 4 do
  local objects = KEYS[tonumber(ARGV[i])]
  local kind, id, payload = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local prior = redis.call('HGET', objects, id)
  local owner_field = kind .. '/' .. id
  local event = nil
  if payload == '' then
    if prior then
      redis.call('HDEL', objects, id)
      redis.call('HDEL', KEYS[1], owner_field)
      event = 'delete'
    end
  else
    redis.call('HSET', KEYS[1], owner_field, ARGV[1])
    if prior ~= payload then
      redis.call('HSET', objects, id, payload)
      if prior then event = 'modify' else event = 'create' end
    end
  end
  if event then
    local version = redis.call('INCR', KEYS[2])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*',
      'version', version, 'kind', kind, 'id', id, 'event', event,
      'prior', prior or '', 'post', payload)
    changed = changed + 1
  end
end
return changed
"""


def stream_id(entry_id: bytes | str) -> tuple[int, int]:
    """A Redis stream entry id ("ms-seq") as a comparable pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds or 0), int(sequence or 0)


def connect(url: str, *, socket_timeout: float = 2.0) -> redis.Redis:
    """A client of the Redis `url` names (netweave/redis_url.py; ValueError if it names
    none) that fails fast: the callers own retrying, so redis-py must not.

    Through Sentinel, each new connection asks the sentinels for the primary, so after a
    failover the callers' next attempt reaches the new one: a connection to the old primary
    fails (ConnectionError), and one to a demoted primary answers READONLY, which redis-py's
    SentinelManagedConnection turns into a disconnect and a ConnectionError (a transient
    failure to every caller, as a restarting Redis is).
    """
    try:
        target = parse_redis_url(url)
    except ValueError as exc:
        raise ValueError(f"Redis URL {exc}") from None
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 1.0,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 15,
        **target.node_options(),
    }
    # Counting: every command it sends is in o2ims_redis_commands_total (the sentinels'
    # answers are the library's, like its handshake: not counted).
    if target.uses_sentinel:
        sentinels = Sentinel(  # type: ignore[no-untyped-call]
            list(target.endpoints),
            sentinel_kwargs={
                # A sentinel answers at once or not at all: the next one is asked.
                "socket_timeout": min(socket_timeout, 1.0),
                "socket_connect_timeout": 1.0,
                "retry": Retry(NoBackoff(), 0),
                **target.sentinel_options(),
            },
        )
        client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
            target.master_name, redis_class=CountingRedis, **options
        )
        return client
    if target.socket_path:
        options["unix_socket_path"] = target.socket_path
    else:
        options["host"], options["port"] = target.endpoints[0]
    return CountingRedis(**options)


# Errors that say "not now" rather than "never": a lost connection, a timeout, LOADING (a
# ConnectionError to redis-py), READONLY (a demoted primary), MASTERDOWN (a replica that lost
# its primary) and NOREPLICAS (a primary with min-replicas-to-write and too few replicas in
# sync, which redis-py knows only as a reply text).
_TRANSIENT_ERRORS: Final = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    redis.exceptions.MasterDownError,
)


def is_transient(error: redis.RedisError) -> bool:
    """Whether `error` passes by itself (a retry later may succeed): a failover, a restart,
    too few replicas in sync. Callers answer UNAVAILABLE (REST 503) for these."""
    if isinstance(error, _TRANSIENT_ERRORS):
        return True
    return isinstance(error, redis.ResponseError) and str(error).startswith("NOREPLICAS")


@dataclass(frozen=True)
class ReplicaWait:
    """How long a write that must survive a failover waits for replicas (Redis WAIT):
    `replicas` 0 is not at all (NETWEAVE_REDIS_WAIT_REPLICAS, _TIMEOUT_MS)."""

    replicas: int = 0
    timeout_ms: int = 500


NO_WAIT: Final = ReplicaWait()


def run_replicated(
    script: Script,
    client: redis.Redis,
    wait: ReplicaWait,
    write: str,
    *,
    keys: Sequence[str],
    args: Sequence[str | bytes | int],
) -> Any:
    """`script(keys, args)`; with `wait.replicas`, then WAIT on the same connection (WAIT
    counts the replicas that have this connection's writes) and return the script's reply
    whatever WAIT says. Replication is asynchronous: a write fewer replicas confirmed in
    time is applied on the primary but may be lost if the primary fails before it is
    copied. It is logged (`redis_write_unreplicated`) and counted
    (o2ims_redis_unreplicated_writes_total{write}), not failed: failing it would tell the
    caller it did not happen when it did (see docs/operations.md "Redis high availability")."""
    if wait.replicas <= 0:
        return script(keys=keys, args=args)
    pipe = client.pipeline(transaction=False)
    script(keys=keys, args=args, client=pipe)
    pipe.wait(wait.replicas, wait.timeout_ms)
    reply, confirmed = pipe.execute()
    if int(confirmed) < wait.replicas:
        UNREPLICATED_WRITES.labels(write).inc()
        log.warning(
            "redis_write_unreplicated",
            write=write,
            replicas=int(confirmed),
            wanted=wait.replicas,
            timeout_ms=wait.timeout_ms,
        )
    return reply


@dataclass(frozen=True)
class Change:
    """One object to write (payload) or delete (payload is None)."""

    kind: str
    object_id: str
    payload: bytes | None


@dataclass(frozen=True)
class StoredEvent:
    """One entry of the inventory:events stream."""

    stream_id: str
    version: int
    kind: str
    object_id: str
    event: EventName
    prior: bytes
    post: bytes
    # The call that caused the change (netweave/correlation.py): "" for adapters' changes,
    # which no request causes.
    correlation_id: str = ""


@dataclass(frozen=True)
class Snapshot:
    """Every stored object, with the version and stream position it corresponds to."""

    version: int
    last_event_id: str
    objects: dict[str, dict[str, bytes]]


class InventoryStore:
    """Reads and writes the inventory snapshot; raises redis.RedisError when Redis is away."""

    def __init__(self, client: redis.Redis, events_max_len: int = 100_000) -> None:
        self._client = client
        self._events_max_len = events_max_len
        self._apply = client.register_script(_APPLY)

    @property
    def client(self) -> redis.Redis:
        return self._client

    def ping(self) -> bool:
        return bool(self._client.ping())

    def server_identity(self) -> str:
        """Which Redis server answers, as `run_id` (new on every start) and its role: a
        change means writes acknowledged by the previous one may be missing (a restart
        without persistence, a failover that lost unreplicated writes)."""
        info: Any = self._client.info("server")
        role: Any = self._client.role()
        first = role[0] if role else b""
        name = first.decode() if isinstance(first, bytes) else str(first)
        return f"{info.get('run_id', '')}/{name}"

    def apply(self, adapter: str, changes: Iterable[Change], chunk: int | None = 500) -> int:
        """Write changes in order; returns how many actually changed the store.

        Each chunk of `chunk` changes is one script call: its objects, owners and
        events land together, in order, or not at all. `chunk=None` makes the whole
        batch one call, for a change set no reader may see half-applied (keep such a
        set bounded: Redis serves nothing else while the script runs).
        """
        batch = list(changes)
        size = chunk or max(len(batch), 1)
        return sum(
            self._apply_batch(adapter, batch[start : start + size])
            for start in range(0, len(batch), size)
        )

    def _apply_batch(self, adapter: str, batch: list[Change]) -> int:
        keys = [OWNER_KEY, VERSION_KEY, EVENTS_KEY]
        key_index: dict[str, int] = {}
        args: list[str | bytes | int] = [adapter, self._events_max_len]
        for change in batch:
            if change.kind not in key_index:
                keys.append(OBJECTS_PREFIX + change.kind)
                key_index[change.kind] = len(keys)  # Lua's KEYS count from 1
            args += [key_index[change.kind], change.kind, change.object_id, change.payload or b""]
        return int(self._apply(keys=keys, args=args))

    def owned_by(self, adapter: str) -> set[ObjectKey]:
        """The (kind, id) of every stored object that `adapter` owns."""
        owned: set[ObjectKey] = set()
        for field, owner in self._client.hscan_iter(OWNER_KEY, count=5000):
            if owner.decode() == adapter:
                kind, _, object_id = field.decode().partition("/")
                owned.add((kind, object_id))
        return owned

    def owners(self) -> dict[str, set[ObjectKey]]:
        """Every owning adapter and the (kind, id) of the objects it owns (one scan)."""
        owned: dict[str, set[ObjectKey]] = {}
        for field, owner in self._client.hscan_iter(OWNER_KEY, count=5000):
            kind, _, object_id = field.decode().partition("/")
            owned.setdefault(owner.decode(), set()).add((kind, object_id))
        return owned

    def read_objects(self, keys: Iterable[ObjectKey]) -> dict[ObjectKey, bytes]:
        """The stored bytes of the given objects (missing ones are left out)."""
        by_kind: dict[str, list[str]] = {}
        for kind, object_id in keys:
            by_kind.setdefault(kind, []).append(object_id)
        found: dict[ObjectKey, bytes] = {}
        for kind, ids in by_kind.items():
            for start in range(0, len(ids), 5000):
                part = ids[start : start + 5000]
                values = cast(list[bytes | None], self._client.hmget(OBJECTS_PREFIX + kind, part))
                found.update(
                    ((kind, object_id), value)
                    for object_id, value in zip(part, values, strict=True)
                    if value is not None
                )
        return found

    def snapshot(self, kinds: Iterable[str] = KINDS) -> Snapshot:
        """Every object of `kinds` (default: all), read atomically together with the
        version and the stream position."""
        wanted = tuple(kinds)
        pipe = self._client.pipeline(transaction=True)
        pipe.get(VERSION_KEY)
        pipe.xrevrange(EVENTS_KEY, count=1)
        for kind in wanted:
            pipe.hgetall(OBJECTS_PREFIX + kind)
        version_raw, last_entries, *hashes = pipe.execute()
        objects = {
            kind: {key.decode(): value for key, value in stored.items()}
            for kind, stored in zip(wanted, hashes, strict=True)
        }
        last_event_id = last_entries[0][0].decode() if last_entries else "0-0"
        return Snapshot(int(version_raw or 0), last_event_id, objects)

    def version(self) -> int:
        """The version of the latest applied change (0 for an empty store)."""
        return int(cast(bytes | None, self._client.get(VERSION_KEY)) or 0)

    def read_events(self, after_id: str, block_ms: int, count: int = 1000) -> list[StoredEvent]:
        """Events after `after_id`, waiting up to `block_ms` for the first one."""
        reply: Any = self._client.xread({EVENTS_KEY: after_id}, count=count, block=block_ms)
        events: list[StoredEvent] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                events.append(decode_event(entry_id, fields))
        return events


def decode_event(entry_id: bytes, fields: Mapping[bytes, bytes]) -> StoredEvent:
    get: Any = fields.get
    return StoredEvent(
        stream_id=entry_id.decode(),
        version=int(get(b"version")),
        kind=get(b"kind").decode(),
        object_id=get(b"id").decode(),
        event=get(b"event").decode(),
        prior=get(b"prior") or b"",
        post=get(b"post") or b"",
        correlation_id=(get(b"correlationId") or b"").decode(),
    )
