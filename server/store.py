"""The inventory snapshot in Redis.

Layout (every key documented for operators in docs/operations.md):
  inventory:objects:<kind>  hash  id -> serialized o2ims.adapter.v1 object
  inventory:owner           hash  "<kind>/<id>" -> name of the adapter that owns it
  inventory:version         int   bumped once per applied change
  inventory:events          stream one entry per applied change:
                            version, kind, id, event (create|modify|delete), prior, post

Every write goes through one Lua script that compares the stored bytes with the new
ones, so re-applying a state (after a reconnect, a resync or from a second replica)
changes nothing and emits no event: the store can be replayed into, never doubled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from adapters.contract import KINDS, ObjectKey

OBJECTS_PREFIX: Final = "inventory:objects:"
OWNER_KEY: Final = "inventory:owner"
VERSION_KEY: Final = "inventory:version"
EVENTS_KEY: Final = "inventory:events"

EventName = Literal["create", "modify", "delete"]

_APPLY = """
-- KEYS: objects hash, owner hash, version key, events stream
-- ARGV: kind, id, adapter, payload ('' = delete), stream max length
local prior = redis.call('HGET', KEYS[1], ARGV[2])
local owner_field = ARGV[1] .. '/' .. ARGV[2]
local event
if ARGV[4] == '' then
  if not prior then return 0 end
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], owner_field)
  event = 'delete'
else
  redis.call('HSET', KEYS[2], owner_field, ARGV[3])
  if prior == ARGV[4] then return 0 end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
  if prior then event = 'modify' else event = 'create' end
end
local version = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
  'version', version, 'kind', ARGV[1], 'id', ARGV[2], 'event', event,
  'prior', prior or '', 'post', ARGV[4])
return version
"""


def connect(url: str, *, socket_timeout: float = 2.0) -> redis.Redis:
    """A client that fails fast: the callers own retrying, so redis-py must not."""
    client: redis.Redis = redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=15,
    )
    return client


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

    def apply(self, adapter: str, changes: Iterable[Change], chunk: int = 500) -> int:
        """Write changes in pipelined chunks; returns how many actually changed the store."""
        changed = 0
        batch = list(changes)
        for start in range(0, len(batch), chunk):
            pipe = self._client.pipeline(transaction=False)
            for change in batch[start : start + chunk]:
                self._apply(
                    keys=[OBJECTS_PREFIX + change.kind, OWNER_KEY, VERSION_KEY, EVENTS_KEY],
                    args=[
                        change.kind,
                        change.object_id,
                        adapter,
                        change.payload or b"",
                        self._events_max_len,
                    ],
                    client=pipe,
                )
            changed += sum(1 for result in pipe.execute() if result)
        return changed

    def owned_by(self, adapter: str) -> set[ObjectKey]:
        """The (kind, id) of every stored object that `adapter` owns."""
        owned: set[ObjectKey] = set()
        for field, owner in self._client.hscan_iter(OWNER_KEY, count=5000):
            if owner.decode() == adapter:
                kind, _, object_id = field.decode().partition("/")
                owned.add((kind, object_id))
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

    def snapshot(self) -> Snapshot:
        """Everything, read atomically together with the version and the stream position."""
        pipe = self._client.pipeline(transaction=True)
        pipe.get(VERSION_KEY)
        pipe.xrevrange(EVENTS_KEY, count=1)
        for kind in KINDS:
            pipe.hgetall(OBJECTS_PREFIX + kind)
        version_raw, last_entries, *hashes = pipe.execute()
        objects = {
            kind: {key.decode(): value for key, value in stored.items()}
            for kind, stored in zip(KINDS, hashes, strict=True)
        }
        last_event_id = last_entries[0][0].decode() if last_entries else "0-0"
        return Snapshot(int(version_raw or 0), last_event_id, objects)

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
    )
