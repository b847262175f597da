"""Load on the edge, every answer recorded (tests and benchmarks).

`offer` sends one GET at a paced rate for a while and counts the answers (rate limits,
latency). `MixedLoad` sends REST reads and subscription writes until stopped, recording each
outcome, either paced (open loop: a slow answer does not slow the offered rate) or in rounds
from a few threads (closed loop). Each thread keeps one HTTP/1.1 connection alive.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

SUBSCRIPTIONS = "/o2ims-infrastructureInventory/v1/subscriptions"


def percentile(values: Iterable[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (`fraction` 0.99 for p99): the smallest
    value at least that fraction of them are at or below; nan when there are none. The
    one definition every bench and load test reports."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def percentile_ms(latencies_s: list[float], quantile: float) -> float:
    """The `quantile` of `latencies_s` (seconds), in milliseconds; 0 for none."""
    return percentile(latencies_s, quantile) * 1000 if latencies_s else 0.0


class ThreadClients:
    """One client per thread, made on the thread's first request, closed together."""

    def __init__(self, make_client: Callable[[], httpx.Client]) -> None:
        self._make_client = make_client
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[httpx.Client] = []

    def get(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make_client()
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


@dataclass
class LoadResult:
    offered: int
    elapsed_s: float
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    # One 429 response kept for inspection (headers, body).
    sample_limited: httpx.Response | None = None

    @property
    def admitted(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != 429)

    @property
    def admitted_rate(self) -> float:
        return self.admitted / self.elapsed_s if self.elapsed_s else 0.0

    def latency_ms(self, quantile: float) -> float:
        return percentile_ms(self.latencies_s, quantile)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_s) * 1000 if self.latencies_s else 0.0


def offer(
    make_client: Callable[[], httpx.Client],
    path: str,
    rate: float,
    duration_s: float,
    workers: int = 16,
) -> LoadResult:
    """GET `path` at `rate` requests per second for `duration_s` seconds."""
    count = max(1, int(rate * duration_s))
    clients = ThreadClients(make_client)
    lock = threading.Lock()
    result = LoadResult(offered=count, elapsed_s=0.0)
    start = time.monotonic() + 0.05

    def one(index: int) -> None:
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent = time.perf_counter()
        response = clients.get().get(path)
        latency = time.perf_counter() - sent
        with lock:
            result.statuses[response.status_code] += 1
            if response.status_code == 429:
                if result.sample_limited is None:
                    response.read()
                    result.sample_limited = response
            else:
                result.latencies_s.append(latency)

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(count)))
    finally:
        clients.close()
    result.elapsed_s = max(time.monotonic() - start, 1e-9)
    return result


def subscribe_watchers(rest: Any, callback: str, prefix: str, count: int) -> dict[str, str]:
    """`count` inventory subscriptions through REST, each calling back `callback` + its
    path (`{prefix}/{n}`, also its consumerSubscriptionId): path -> subscriptionId."""
    watchers = {}
    for number in range(count):
        path = f"{prefix}/{number}"
        created = rest.post(
            "/o2ims-infrastructureInventory/v1/subscriptions",
            json={"callback": callback + path, "consumerSubscriptionId": path},
        )
        assert created.status_code == 201, created.text
        watchers[path] = str(created.json()["subscriptionId"])
    return watchers


@dataclass(frozen=True)
class Call:
    """One request of a mixed load; `name` groups it in the figures."""

    name: str
    method: str
    path: str
    expected: int = 200
    body: Any = None


@dataclass
class Outcome:
    # time.monotonic() when the call was due (paced) or sent (in rounds).
    sent_at: float
    name: str
    method: str
    path: str
    status: int  # 0: no response (the error is in `detail`)
    expected: int
    latency_s: float
    content_type: str = ""
    # The body of an unexpected answer, or the error; "" for an expected answer.
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == self.expected


class MixedLoad:
    """REST calls through the edge until `stop` is set, every outcome in `outcomes`.
    The subscriptions it creates (answered 201) are in `created`; `delete_created` hands
    each out once for a delete. `close` (or leaving it as a context manager) closes the
    connections."""

    def __init__(self, make_client: Callable[[], httpx.Client], callback: str) -> None:
        self.callback = callback
        self.outcomes: list[Outcome] = []
        self.created: list[str] = []
        self.stop = threading.Event()
        self._clients = ThreadClients(make_client)
        self._lock = threading.Lock()
        self._deletable: deque[str] = deque()

    def __enter__(self) -> MixedLoad:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop, and close the connections (once the threads running the load are done)."""
        self.stop.set()
        self._clients.close()

    def create_subscription(self, consumer_subscription_id: str) -> Call:
        body = {"callback": self.callback, "consumerSubscriptionId": consumer_subscription_id}
        return Call("create subscription", "POST", SUBSCRIPTIONS, 201, body)

    def delete_created(self) -> Call | None:
        """A delete of a subscription this load created (the oldest not yet deleted)."""
        with self._lock:
            victim = self._deletable.popleft() if self._deletable else None
        if victim is None:
            return None
        return Call("delete subscription", "DELETE", f"{SUBSCRIPTIONS}/{victim}")

    def send(self, call: Call, due: float | None = None) -> httpx.Response | None:
        """Send `call`, record its outcome; the response, None if there was none."""
        sent = time.monotonic()
        response: httpx.Response | None = None
        content_type = ""
        try:
            response = self._clients.get().request(call.method, call.path, json=call.body)
        except httpx.HTTPError as exc:
            status, detail = 0, repr(exc)
        else:
            status = response.status_code
            content_type = response.headers.get("content-type", "")
            detail = "" if status == call.expected else response.text
        latency = time.monotonic() - sent
        outcome = Outcome(
            sent if due is None else due,
            call.name,
            call.method,
            call.path,
            status,
            call.expected,
            latency,
            content_type,
            detail,
        )
        with self._lock:
            self.outcomes.append(outcome)
            if response is not None and status == 201 and call.path == SUBSCRIPTIONS:
                created = str(response.json()["subscriptionId"])
                self.created.append(created)
                self._deletable.append(created)
        return response

    def run_paced(self, rate: float, plan: Callable[[int], Call], workers: int = 64) -> None:
        """Send `plan(index)` for index 0, 1, ... at `rate` calls per second, each from a
        pool of `workers` threads, whatever the answers take (open loop)."""
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load") as pool:
            index = 0
            while not self.stop.is_set():
                due = start + index / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(lambda index, due: self.send(plan(index), due), index, due)
                index += 1

    def run_rounds(self, plan: Callable[[int], Iterable[Call]], pause_s: float) -> None:
        """Send the calls of `plan(round)` one after another for round 0, 1, ..., pausing
        `pause_s` between rounds (closed loop; run it in a few threads)."""
        round_number = 0
        while not self.stop.is_set():
            for call in plan(round_number):
                self.send(call)
            round_number += 1
            self.stop.wait(pause_s)
