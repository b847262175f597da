"""Counters and histograms for the per-call path, counted per thread and summed when
Prometheus scrapes (issue 18).

prometheus_client's Counter.inc and Histogram.observe take a lock and go through several
Python frames on every call; measured in the core's pinned benchmark, the five counts a
gRPC call makes (o2ims_auth, o2ims_authz, o2ims_cache_reads, o2ims_grpc_requests and the
latency histogram) cost ~4 % of the core's throughput. Here each thread adds to cells of
its own (a thread-local list only that thread writes, so no lock and no lost update), and
a scrape adds every thread's cells up. A thread's cells outlive it, so nothing it counted
is lost when it ends.

The families expose exactly what prometheus_client's Counter and Histogram expose for the
same counts (names, HELP, TYPE, labels, `_total`/`_bucket`/`_count`/`_sum`/`_created`
samples in the same order; tests/test_tallies.py compares the two), so dashboards,
alerts and the worker supervisor's merge (server/workers.py) see no difference.

What a scrape reads is a snapshot per thread: each thread's cells are copied at once (a
list copy holds the GIL), so a histogram's count is always the sum of its buckets; counts
from different threads may be a call apart, as with any concurrent scrape.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Histogram, metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# How prometheus_client writes a bucket's bound (`le`).
_bound_text: Callable[[float], str] = floatToGoString


def _created_series() -> bool:
    """Whether prometheus_client writes `_created` series (it does unless they were
    switched off: PROMETHEUS_DISABLE_CREATED_SERIES, disable_created_metrics())."""
    return bool(getattr(metrics, "_use_created", True))


class _Cells:
    """One series' cells, one list per thread that has counted in it."""

    __slots__ = ("_all", "_local", "_lock", "_size", "created")

    def __init__(self, size: int) -> None:
        self._size = size
        self._local = threading.local()
        self._all: list[list[float]] = []
        self._lock = threading.Lock()
        self.created = time.time()

    def _own(self) -> list[float]:
        """This thread's cells, made on its first count."""
        try:
            cells: list[float] = self._local.cells
        except AttributeError:
            cells = [0.0] * self._size
            with self._lock:
                self._all.append(cells)
            self._local.cells = cells
        return cells

    def totals(self) -> list[float]:
        """Every thread's cells added up, each thread's read at one instant."""
        with self._lock:
            threads = [list(cells) for cells in self._all]
        totals = [0.0] * self._size
        for cells in threads:
            for index, value in enumerate(cells):
                totals[index] += value
        return totals


class CounterChild(_Cells):
    """A labelled counter's series (what `labels()` returns): `inc()`."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(1)

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        try:
            self._local.cells[0] += amount
        except AttributeError:
            self._own()[0] += amount

    def value(self) -> float:
        return self.totals()[0]


class HistogramChild(_Cells):
    """A labelled histogram's series: `observe(amount)`. Its cells: one count per bucket
    (not cumulative; the last is +Inf), then the sum."""

    __slots__ = ("_bounds",)

    def __init__(self, bounds: tuple[float, ...]) -> None:
        super().__init__(len(bounds) + 2)
        self._bounds = bounds

    def observe(self, amount: float) -> None:
        try:
            cells: list[float] = self._local.cells
        except AttributeError:
            cells = self._own()
        # A bucket counts what is <= its bound: the first bound >= amount.
        cells[bisect.bisect_left(self._bounds, amount)] += 1
        cells[-1] += amount


Child = TypeVar("Child", CounterChild, HistogramChild)


class _Family(Collector, Generic[Child]):
    """A labelled family registered in `registry`; `labels(*values)` returns its series
    for those values, made on first use and the same object afterwards."""

    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        # A counter's samples are `<name>_total`: named without it, as prometheus_client does.
        self.name = name.removesuffix("_total") if self.kind == "counter" else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def labels(self, *values: Any) -> Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        key = tuple(str(value) for value in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = self._new_child()
        return child

    def _new_child(self) -> Child:
        raise NotImplementedError

    def _series(self) -> list[tuple[dict[str, str], Child]]:
        with self._lock:
            children = list(self._children.items())
        return [(dict(zip(self.labelnames, key, strict=True)), child) for key, child in children]

    def describe(self) -> Iterable[Metric]:
        # The family without samples: lets the registry refuse a second family of the name.
        return [Metric(self.name, self.documentation, self.kind)]


class TalliedCounter(_Family[CounterChild]):
    """A labelled counter family (prometheus_client.Counter's exposition)."""

    kind = "counter"

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.name, self.documentation, self.kind)
        for labels, child in self._series():
            family.add_sample(self.name + "_total", labels, child.value())
            if _created_series():
                family.add_sample(self.name + "_created", labels, child.created)
        yield family


class TalliedHistogram(_Family[HistogramChild]):
    """A labelled histogram family (prometheus_client.Histogram's exposition)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> None:
        bounds = tuple(float(bound) for bound in buckets if not math.isinf(bound))
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"{name}: buckets must be increasing, got {buckets}")
        self.bounds = bounds
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def collect(self) -> Iterator[Metric]:
        family = Metric(self.name, self.documentation, self.kind)
        edges = [_bound_text(bound) for bound in self.bounds] + ["+Inf"]
        for labels, child in self._series():
            totals = child.totals()
            cumulative = 0.0
            for edge, count in zip(edges, totals, strict=False):
                cumulative += count
                family.add_sample(self.name + "_bucket", {**labels, "le": edge}, cumulative)
            family.add_sample(self.name + "_count", labels, cumulative)
            family.add_sample(self.name + "_sum", labels, totals[-1])
            if _created_series():
                family.add_sample(self.name + "_created", labels, child.created)
        yield family
