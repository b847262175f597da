"""Which notifier process delivers which subscription.

Every process registers in `notifier:members` (a sorted set scored by expiry) and, a few
times a second, computes its fair share, ceil(subscriptions / live processes). It takes
the leases of unowned subscriptions up to that share and starts a DeliveryWorker for each
(no thread of its own: the bounded DeliveryPool runs the turns of the workers with work);
above it (a process joined) it stops its extra workers and, once they have finished their
attempt in flight, releases their leases for the others to take. A process that dies stops
renewing its membership: its leases lapse with it (leases.py MemberLeases) and the
survivors take its subscriptions, reclaiming whatever it had read but not finished.

Idle cost. Nothing is polled per subscription: the leases are renewed with the membership
(the one ZADD of each tick), a deleted subscription is seen in the index sets (read when
the subscriptions' generation moves, and every INDEX_RELOAD_S), and new notifications
wake their worker through `notifier:ready` (keys.py), which one thread per process
follows with a blocking XREAD. What Redis sees from an idle process is the same at 10
subscriptions as at 10,000.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog

from netweave.backoff import Backoff
from server.notifier import keys
from server.notifier.delivery import DeliveryWorker
from server.notifier.leases import MEMBER_LEASE_TTL_MS, MemberLeases
from server.store import stream_id
from server.subscriptions.store import GENERATION_KEY, SubscriptionKind

log = structlog.get_logger()

TICK_S = 0.2
# How long one read of notifier:ready blocks (what an idle process costs: one a period).
WAKE_BLOCK_MS = 1000
# Wake-up entries per read; a full read means the reader is behind (see watch()).
WAKE_READ_COUNT = 100
# How often the index sets are read even if the generation did not move (a subscription
# removed by hand).
INDEX_RELOAD_S = 5.0
# How often the workers are looked through for finished ones when nothing changed.
SWEEP_S = 1.0


class Scheduler:
    def __init__(
        self,
        client: redis.Redis,
        consumer: str,
        lease_ms: int,
        new_worker: Callable[[str, SubscriptionKind], DeliveryWorker],
        stop: threading.Event,
        *,
        wakeups: redis.Redis,
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        self._client = client
        # How long a shutdown waits for the workers' deliveries in flight.
        self._shutdown_timeout_s = shutdown_timeout_s
        self._consumer = consumer
        self._lease_ms = lease_ms
        self._leases = MemberLeases(client, consumer, keys.MEMBERS_KEY)
        self._member = False  # we have ticked (renewed our membership) at least once
        self._new_worker = new_worker
        self._stop = stop
        self.workers: dict[str, DeliveryWorker] = {}
        # Workers asked to stop whose leases are released once they have.
        self._leaving: dict[str, DeliveryWorker] = {}
        self._renewed = 0.0
        self.redis_ok = True
        # The subscriptions (id -> kind) as of `_generation`, read at `_loaded`.
        self._subscriptions: dict[str, SubscriptionKind] | None = None
        self._generation: bytes | None = None
        self._loaded = 0.0
        self._swept = 0.0  # time.monotonic() the workers were last looked through
        # Its own connection: it blocks in XREAD.
        self._wakeups = wakeups

    def watch(self) -> None:
        """Follow notifier:ready and wake the workers it names (the module docstring)."""
        last = ""
        backoff = Backoff(maximum=2.0)
        while not self._stop.is_set():
            try:
                if not last:
                    newest: Any = self._wakeups.xrevrange(keys.READY_KEY, "+", "-", count=1)
                    last = newest[0][0].decode() if newest else "0-0"
                    # What was queued meanwhile (a start, a Redis error) is looked at too.
                    for worker in list(self.workers.values()):
                        worker.wake()
                position = last
                reply: Any = self._wakeups.xread(
                    {keys.READY_KEY: position}, count=WAKE_READ_COUNT, block=WAKE_BLOCK_MS
                )
                if sum(len(entries) for _stream, entries in reply or []) >= WAKE_READ_COUNT:
                    # Behind: the stream is trimmed from its head, so if the entry read last
                    # is gone, wake-ups after it may be gone too: look at every queue.
                    first = self._wakeups.xinfo_stream(keys.READY_KEY).get(
                        "recorded-first-entry-id", b"0-0"
                    )
                    if stream_id(first) > stream_id(position):
                        log.warning("wakeups_trimmed_unread", position=position)
                        for worker in list(self.workers.values()):
                            worker.wake()
                backoff.reset()
            except redis.RedisError as exc:
                log.warning("wakeups_redis_error", error=str(exc))
                last = ""
                self._stop.wait(backoff.next_delay())
                continue
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    for subscription_id in fields.get(b"ids", b"").decode().split():
                        found = self.workers.get(subscription_id)
                        if found is not None:
                            found.wake()

    def run(self) -> None:
        backoff = Backoff(initial=TICK_S, maximum=2.0)
        while not self._stop.is_set():
            delay = TICK_S
            try:
                self.tick()
                self.redis_ok = True
                backoff.reset()
            except redis.RedisError as exc:
                self.redis_ok = False
                log.warning("scheduler_redis_error", error=str(exc))
                delay = backoff.next_delay()
            except Exception:
                log.exception("scheduler_failed")
            self._stop.wait(delay)
        self.shutdown()

    def tick(self) -> None:
        now_ms = int(time.time() * 1000)
        expires, members, subscriptions = self._read(now_ms)
        # Our leases last as long as our membership (leases.py MemberLeases): if it lapsed,
        # another process may have taken any of them.
        lapsed = self._member and (expires is None or float(expires) < now_ms)
        self._member = True

        # Check what we hold (and the leases of workers still finishing) after a lapse, and
        # renew the keys' safety TTL now and then; stop workers whose lease went elsewhere
        # or whose subscription is gone.
        if lapsed or time.monotonic() - self._renewed > MEMBER_LEASE_TTL_MS / 3000:
            held_ids = list(self.workers) + list(self._leaving)
            held = self._leases.hold([keys.lease_key(s) for s in held_ids])
            self._renewed = time.monotonic()
            for subscription_id, ours in zip(held_ids, held, strict=True):
                if not ours and subscription_id in self.workers:
                    log.warning("subscription_lease_lost", subscription_id=subscription_id)
                    self.workers.pop(subscription_id).stop()
        # Looking through every worker (thousands) when the subscriptions changed, else
        # every SWEEP_S: a finished worker's subscription moves on within that.
        if self._loaded > self._swept or time.monotonic() - self._swept > SWEEP_S:
            self._swept = time.monotonic()
            for subscription_id, worker in list(self.workers.items()):
                if subscription_id not in subscriptions or worker.gone or not worker.alive():
                    worker.stop()
                    self._leaving[subscription_id] = self.workers.pop(subscription_id)
        for subscription_id, worker in list(self._leaving.items()):
            if not worker.alive():
                self._leases.release(keys.lease_key(subscription_id))
                del self._leaving[subscription_id]

        share = math.ceil(len(subscriptions) / max(1, int(members)))
        # Too many (a process joined): hand over the idle ones first.
        extra = len(self.workers) - share
        if extra > 0:
            by_idleness = sorted(self.workers.values(), key=lambda w: w.busy)
            for worker in by_idleness[:extra]:
                worker.stop()
                self._leaving[worker.subscription_id] = self.workers.pop(worker.subscription_id)
            return
        if len(self.workers) >= share:
            return  # our share (the usual case): no need to look through them all
        unowned = [s for s in subscriptions if s not in self.workers and s not in self._leaving]
        random.shuffle(unowned)
        wanted = unowned[: (share - len(self.workers)) * 2]
        if not wanted:
            return
        taken: Any = self._leases.hold([keys.lease_key(s) for s in wanted])
        for subscription_id, ours in zip(wanted, taken, strict=True):
            if not ours:
                continue
            if len(self.workers) >= share:
                self._leases.release(keys.lease_key(subscription_id))
                continue
            worker = self._new_worker(subscription_id, subscriptions[subscription_id])
            self.workers[subscription_id] = worker
            worker.start()

    def _read(self, now_ms: int) -> tuple[Any, Any, dict[str, SubscriptionKind]]:
        """Renew our membership; (our previous expiry, live members, the subscriptions)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.zscore(keys.MEMBERS_KEY, self._consumer)
        pipe.zadd(keys.MEMBERS_KEY, {self._consumer: now_ms + self._lease_ms})
        pipe.zremrangebyscore(keys.MEMBERS_KEY, "-inf", now_ms)
        pipe.zcard(keys.MEMBERS_KEY)
        pipe.get(GENERATION_KEY)
        # The index sets (thousands of ids) only when a subscription was created or deleted
        # (the store bumps the generation), and now and then whatever happened.
        reload = time.monotonic() - self._loaded > INDEX_RELOAD_S
        if reload or self._subscriptions is None:
            for kind in keys.SUBSCRIPTION_KINDS:
                pipe.smembers(kind.index_key)
        expires, _, _, members, generation, *indexes = pipe.execute()
        if not indexes and generation != self._generation:
            for kind in keys.SUBSCRIPTION_KINDS:
                pipe.smembers(kind.index_key)
            indexes = pipe.execute()
        if indexes:
            # Every subscription of every kind, with its kind: one fair share over them all.
            self._subscriptions = {
                member.decode(): kind
                for kind, stored in zip(keys.SUBSCRIPTION_KINDS, indexes, strict=True)
                for member in stored
            }
            self._loaded = time.monotonic()
        self._generation = generation
        return expires, members, self._subscriptions or {}

    def shutdown(self) -> None:
        """Stop every worker and hand its subscription over at once."""
        everyone = {**self.workers, **self._leaving}
        for worker in everyone.values():
            worker.stop()
        deadline = time.monotonic() + self._shutdown_timeout_s
        in_flight = False
        for subscription_id, worker in everyone.items():
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.alive():
                # A POST still in flight: its lease lapses with our membership, which
                # then expires (below), so nobody races it.
                in_flight = True
                continue
            with contextlib.suppress(redis.RedisError):  # it lapses anyway
                self._leases.release(keys.lease_key(subscription_id))
        if not in_flight:
            with contextlib.suppress(redis.RedisError):
                self._client.zrem(keys.MEMBERS_KEY, self._consumer)
        self.workers.clear()
        self._leaving.clear()
