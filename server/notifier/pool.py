"""The notifier's delivery threads: a bounded pool, whatever the number of subscriptions,
that runs each subscription's DeliveryWorker (delivery.py) one turn at a time."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import structlog

from server.notifier.http import WebhookClient

log = structlog.get_logger()


class Turns(Protocol):
    """What the pool runs: a DeliveryWorker (delivery.py)."""

    def step(self, webhooks: WebhookClient) -> object: ...


class DeliveryPool:
    """A bounded set of threads that run the workers' turns (DeliveryWorker.step): a
    worker is queued when woken (new notifications, its start or stop) or when a timer it
    set is due (a retry, a poll), and runs on one thread at a time, so its deliveries stay
    in order. Woken while running, it runs again afterwards. Whoever waits (a retry, a
    previous owner's entries) holds no thread; a POST in flight holds one, so a pool of N
    delivers to N slow subscribers at once before the others wait."""

    def __init__(self, size: int, new_webhooks: Callable[[], WebhookClient]) -> None:
        if size < 1:
            raise ValueError(f"NETWEAVE_NOTIFY_WORKERS must be at least 1, got {size}")
        self.size = size
        self._new_webhooks = new_webhooks
        self._lock = threading.Condition()
        self._ready: deque[Turns] = deque()
        self._queued: set[Turns] = set()
        self._running: set[Turns] = set()
        self._again: set[Turns] = set()
        self._timers: list[tuple[float, int, Turns]] = []
        self._sequence = itertools.count()
        self._closed = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.size):
            thread = threading.Thread(target=self._loop, name=f"deliver-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wake(self, worker: Turns) -> None:
        with self._lock:
            self._enqueue(worker)

    def wake_in(self, worker: Turns, delay_s: float) -> None:
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._sequence), worker))
            self._lock.notify()

    def _enqueue(self, worker: Turns) -> None:
        if worker in self._running:
            self._again.add(worker)
        elif worker not in self._queued:
            self._queued.add(worker)
            self._ready.append(worker)
            self._lock.notify()

    def _next(self) -> Turns | None:
        with self._lock:
            while True:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    self._enqueue(heapq.heappop(self._timers)[2])
                if self._ready:
                    worker = self._ready.popleft()
                    self._queued.discard(worker)
                    self._running.add(worker)
                    return worker
                if self._closed:
                    return None
                self._lock.wait(self._timers[0][0] - now if self._timers else None)

    def _loop(self) -> None:
        webhooks = self._new_webhooks()
        try:
            self._serve(webhooks)
        finally:
            webhooks.close()

    def _serve(self, webhooks: WebhookClient) -> None:
        while (worker := self._next()) is not None:
            try:
                worker.step(webhooks)
            except Exception:  # step logs its own failures; never lose the thread
                log.exception("delivery_pool_step_failed")
            finally:
                with self._lock:
                    self._running.discard(worker)
                    if worker in self._again:
                        self._again.discard(worker)
                        self._enqueue(worker)
