"""Offer a paced request rate to the edge and record what came back (tests and benchmarks).

Requests are sent on a fixed schedule (open loop: a slow answer does not slow the offered
rate), from a pool of threads that each keep one HTTP/1.1 connection alive.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx


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
        if not self.latencies_s:
            return 0.0
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, int(quantile * len(ordered)))
        return ordered[index] * 1000

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
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()
    result = LoadResult(offered=count, elapsed_s=0.0)
    start = time.monotonic() + 0.05

    def one(index: int) -> None:
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        http = getattr(local, "client", None)
        if http is None:
            http = local.client = make_client()
            with lock:
                clients.append(http)
        sent = time.perf_counter()
        response = http.get(path)
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
        for http in clients:
            http.close()
    result.elapsed_s = max(time.monotonic() - start, 1e-9)
    return result
