"""Every subscription of both kinds in memory, kept equal to Redis by following
`subscriptions:events`, so a steady read of subscriptions costs no Redis round trip.

The view loads every subscription once, with the generation (`subscriptions:generation`)
and the last entry of `subscriptions:events` read in the same transaction, then applies
each entry of the stream. Every create and delete writes its entry in the script that
bumps the generation (server/subscriptions/store.py), so the entries' generations count
up by one: an entry that skips one, a generation that moved without an entry (a restore,
server/backup/state.py; a core of an older release) or went back (Redis flushed, restarted
empty, failed over to a copy that lost writes) is answered by loading again. The stream
is read with a blocking XREAD, so another replica's change is seen as soon as Redis has
it; when nothing arrives within the read block (READ_BLOCK_MS), one transaction reads the
generation and the stream's last entry to catch a change that wrote no entry.

How fresh it is (the bound the operations guide states):
  * the replica that made a change: at once (the store hands the change to the view
    before it answers, read-your-writes);
  * every other replica: as soon as it reads the entry (a blocked XREAD returns at once:
    about a millisecond on one host), and within READ_BLOCK_MS plus one reload after a
    change that wrote no entry;
  * while Redis is away: nobody can change a subscription (every write is a Redis
    script), so the view keeps serving what it has; it reloads once Redis answers if the
    generation tells it anything changed meanwhile.

Until its first load a view serves nothing (`loaded` is False): the store reads Redis.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, cast

import redis
import structlog

from server.following import FollowingThread
from server.store import stream_id
from server.subscriptions.store import (
    GENERATION_KEY,
    SUBSCRIPTION_EVENTS_KEY,
    Subscription,
    SubscriptionKind,
    decode_fields,
    load_all,
    oldest_first,
)

log = structlog.get_logger()

READ_BLOCK_MS: Final = 500
READ_COUNT: Final = 1000
# A load retried while the generation moves under it; after that, taken as it is (the
# entries after its position repair it: each carries the whole subscription or its delete).
LOAD_ATTEMPTS: Final = 3

# (kind name, subscription id)
Key = tuple[str, str]


@dataclass(frozen=True)
class _Local:
    """A change this replica made that the stream has not brought back yet."""

    generation: int
    # None: deleted.
    subscription: Subscription | None


class SubscriptionView(FollowingThread):
    """Thread-safe: one follower (this thread), many readers (gRPC handlers)."""

    def __init__(
        self,
        client: redis.Redis,
        stop: threading.Event,
        kinds: tuple[SubscriptionKind, ...],
        *,
        read_block_ms: int = READ_BLOCK_MS,
        on_read: Callable[[str], None] = lambda result: None,
    ) -> None:
        super().__init__("subscription-view", stop)
        self._client = client
        self._kinds = kinds
        self._read_block_ms = read_block_ms
        # Called with "hit" or "miss" for every read the store serves (the cache metric).
        self.on_read = on_read
        self._lock = threading.Lock()
        self._subscriptions: dict[str, dict[str, Subscription]] = {k.name: {} for k in kinds}
        # kind name -> its subscriptions oldest first; dropped when one comes or goes.
        self._ordered: dict[str, list[Subscription]] = {}
        self._generation = 0
        self._position = "0-0"
        self._local: dict[Key, _Local] = {}
        self.reloads = 0

    # --- reading ---------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The generation the view has applied every change up to."""
        return self._generation

    def get(self, kind: SubscriptionKind, subscription_id: str) -> Subscription | None:
        return self._subscriptions[kind.name].get(subscription_id)

    def list(self, kind: SubscriptionKind) -> list[Subscription]:
        """Every subscription of the kind, oldest first (as SubscriptionStore.list). The
        list is replaced, never changed, when one comes or goes: callers may keep it."""
        with self._lock:
            ordered = self._ordered.get(kind.name)
            if ordered is None:
                ordered = self._ordered[kind.name] = sorted(
                    self._subscriptions[kind.name].values(), key=oldest_first
                )
            return ordered

    # --- this replica's own changes (read-your-writes) ------------------------------------

    def created(self, kind: SubscriptionKind, subscription: Subscription, generation: int) -> None:
        """A subscription this replica just created, at `generation`."""
        self._note(kind.name, subscription.subscription_id, _Local(generation, subscription))

    def deleted(self, kind: SubscriptionKind, subscription_id: str, generation: int) -> None:
        """A subscription this replica just deleted, at `generation`."""
        self._note(kind.name, subscription_id, _Local(generation, None))

    def _note(self, kind_name: str, subscription_id: str, change: _Local) -> None:
        with self._lock:
            if not self.loaded or change.generation <= self._generation:
                return  # not serving yet, or the stream brought it (or something newer)
            self._local[(kind_name, subscription_id)] = change
            self._set(kind_name, subscription_id, change.subscription)

    # --- following -------------------------------------------------------------------

    def load(self) -> None:
        """Replace the view by what Redis holds now."""
        for _ in range(LOAD_ATTEMPTS):
            generation, position = self._mark()
            found = load_all(self._client, self._kinds)
            if self._mark()[0] == generation:
                break
        by_kind = {
            kind.name: {s.subscription_id: s for s in found[kind.name]} for kind in self._kinds
        }
        with self._lock:
            went_back = generation < self._generation
            self._subscriptions = by_kind
            self._ordered = {}
            self._generation = generation
            self._position = position
            if went_back:
                # Another Redis (flushed, restarted empty): our own recent changes were
                # made in the one that is gone.
                self._local.clear()
            for (kind_name, subscription_id), change in list(self._local.items()):
                if change.generation > generation:
                    self._set(kind_name, subscription_id, change.subscription)
                else:
                    del self._local[(kind_name, subscription_id)]
            self.loaded = True
        self.reloads += 1
        log.info(
            "subscription_view_loaded",
            subscriptions={kind: len(found) for kind, found in by_kind.items()},
            generation=generation,
        )

    def step(self) -> None:
        """Apply the entries after the position, waiting up to the read block for some."""
        reply = cast(
            list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
            self._client.xread(
                {SUBSCRIPTION_EVENTS_KEY: self._position},
                count=READ_COUNT,
                block=self._read_block_ms,
            ),
        )
        if not reply:
            self._check_generation()
            return
        for _, entries in reply:
            for entry_id, fields in entries:
                if not self._apply(entry_id.decode(), fields):
                    self.load()
                    return

    def _mark(self) -> tuple[int, str]:
        """(generation, the stream's last entry id), read in one transaction."""
        pipe = self._client.pipeline(transaction=True)
        pipe.get(GENERATION_KEY)
        pipe.xrevrange(SUBSCRIPTION_EVENTS_KEY, count=1)
        stored, last = pipe.execute()
        return int(stored or 0), last[0][0].decode() if last else "0-0"

    def _check_generation(self) -> None:
        # One GET while nothing changes (every read block): the transaction only when the
        # generation moved.
        if int(cast(bytes | None, self._client.get(GENERATION_KEY)) or 0) == self._generation:
            return
        generation, last = self._mark()
        if generation == self._generation:
            return
        if generation > self._generation and stream_id(last) > stream_id(self._position):
            return  # entries to read: the next step applies them (or finds a gap)
        log.warning("subscription_view_generation_moved", view=self._generation, stored=generation)
        self.load()

    def _apply(self, entry_id: str, fields: Mapping[bytes, bytes]) -> bool:
        """Apply one entry; False for a gap (reload)."""
        try:
            generation = int(fields[b"generation"])
            kind_name = fields[b"kind"].decode()
            subscription_id = fields[b"id"].decode()
            change = fields[b"change"].decode()
            subscription = (
                decode_fields(subscription_id, json.loads(fields[b"subscription"]))
                if change == "create"
                else None
            )
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            log.error("subscription_event_unreadable", entry=entry_id, error=str(error))
            return False  # what it changed is unknown: load it from the hashes
        with self._lock:
            if generation <= self._generation:
                self._position = entry_id
                return True  # part of what the view loaded
            if generation != self._generation + 1:
                log.warning("subscription_view_gap", expected=self._generation + 1, got=generation)
                return False
            self._generation = generation
            self._position = entry_id
            key = (kind_name, subscription_id)
            local = self._local.get(key)
            if kind_name in self._subscriptions and (
                local is None or local.generation <= generation
            ):
                self._set(kind_name, subscription_id, subscription)
            # Our own changes the stream has now brought back are the view's like any other.
            for held, change_held in list(self._local.items()):
                if change_held.generation <= generation:
                    del self._local[held]
        return True

    def _set(self, kind_name: str, subscription_id: str, subscription: Subscription | None) -> None:
        """With the lock held."""
        kept = self._subscriptions[kind_name]
        if subscription is None:
            if kept.pop(subscription_id, None) is not None:
                self._ordered.pop(kind_name, None)
        else:
            kept[subscription_id] = subscription
            self._ordered.pop(kind_name, None)
