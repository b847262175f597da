"""Which notifier process delivers which subscription.

Every process registers in `notifier:members` (a sorted set scored by expiry) and, a few
times a second, computes its fair share, ceil(subscriptions / live processes). It takes
the leases of unowned subscriptions up to that share and starts a DeliveryWorker for each;
above it (a process joined) it stops its extra workers and, once they have finished their
attempt in flight, releases their leases for the others to take. A process that dies stops
renewing: its leases expire and the survivors take its subscriptions, reclaiming whatever
it had read but not finished.
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

from server.notifier import keys
from server.notifier.delivery import DeliveryWorker
from server.notifier.leases import Leases
from server.subscriptions.store import SubscriptionKind

log = structlog.get_logger()

TICK_S = 0.2


class Scheduler:
    def __init__(
        self,
        client: redis.Redis,
        consumer: str,
        lease_ms: int,
        new_worker: Callable[[str, SubscriptionKind], DeliveryWorker],
        stop: threading.Event,
        *,
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        self._client = client
        # How long a shutdown waits for the workers' deliveries in flight.
        self._shutdown_timeout_s = shutdown_timeout_s
        self._consumer = consumer
        self._lease_ms = lease_ms
        self._leases = Leases(client, consumer, lease_ms)
        self._new_worker = new_worker
        self._stop = stop
        self.workers: dict[str, DeliveryWorker] = {}
        # Workers asked to stop whose leases are released once they have.
        self._leaving: dict[str, DeliveryWorker] = {}
        self._renewed = 0.0
        self.redis_ok = True

    def run(self) -> None:
        backoff = TICK_S
        while not self._stop.is_set():
            try:
                self.tick()
                self.redis_ok = True
                backoff = TICK_S
            except redis.RedisError as exc:
                self.redis_ok = False
                log.warning("scheduler_redis_error", error=str(exc))
                backoff = min(2.0, backoff * 2)
            except Exception:
                log.exception("scheduler_failed")
            self._stop.wait(backoff)
        self.shutdown()

    def tick(self) -> None:
        now_ms = int(time.time() * 1000)
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(keys.MEMBERS_KEY, {self._consumer: now_ms + self._lease_ms})
        pipe.zremrangebyscore(keys.MEMBERS_KEY, "-inf", now_ms)
        pipe.zcard(keys.MEMBERS_KEY)
        for kind in keys.SUBSCRIPTION_KINDS:
            pipe.smembers(kind.index_key)
        _, _, members, *indexes = pipe.execute()
        # Every subscription of every kind, with its kind: one fair share over them all.
        subscriptions = {
            member.decode(): kind
            for kind, stored in zip(keys.SUBSCRIPTION_KINDS, indexes, strict=True)
            for member in stored
        }

        # Renew what we hold (and the leases of workers still finishing); stop workers
        # whose lease went elsewhere or whose subscription is gone.
        if time.monotonic() - self._renewed > self._lease_ms / 3000:
            held_ids = list(self.workers) + list(self._leaving)
            held = self._leases.hold([keys.lease_key(s) for s in held_ids])
            self._renewed = time.monotonic()
            for subscription_id, ours in zip(held_ids, held, strict=True):
                if not ours and subscription_id in self.workers:
                    log.warning("subscription_lease_lost", subscription_id=subscription_id)
                    self.workers.pop(subscription_id).stop()
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
        unowned = [s for s in subscriptions if s not in self.workers and s not in self._leaving]
        random.shuffle(unowned)
        wanted = unowned[: max(0, share - len(self.workers)) * 2]
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

    def shutdown(self) -> None:
        """Stop every worker and hand its subscription over at once."""
        everyone = {**self.workers, **self._leaving}
        for worker in everyone.values():
            worker.stop()
        deadline = time.monotonic() + self._shutdown_timeout_s
        for subscription_id, worker in everyone.items():
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.alive():
                continue  # a POST still in flight: its lease expires, nobody races it
            with contextlib.suppress(redis.RedisError):  # it expires anyway
                self._leases.release(keys.lease_key(subscription_id))
        with contextlib.suppress(redis.RedisError):
            self._client.zrem(keys.MEMBERS_KEY, self._consumer)
        self.workers.clear()
        self._leaving.clear()
