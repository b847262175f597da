"""netweave/tallies.py: per-thread counters expose what prometheus_client exposes for the
same counts, and lose none when many threads count at once."""

from __future__ import annotations

import re
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from netweave.tallies import TalliedCounter, TalliedHistogram

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
OBSERVED = (0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.2, 1.0, 4.0, 0.0)


def exposition(registry: CollectorRegistry) -> str:
    """The text exposition with the `_created` timestamps (when each series was made)
    replaced: they differ between two registries by construction."""
    text = generate_latest(registry).decode()
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", text)


def test_a_counter_exposes_what_prometheus_client_exposes() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tallied = TalliedCounter("demo_requests_total", "Requests.", ["method", "code"], ours)
    reference = Counter("demo_requests_total", "Requests.", ["method", "code"], registry=theirs)
    for family in (tallied, reference):
        family.labels("/a/Get", "OK").inc()
        family.labels("/a/Get", "OK").inc(2.5)
        family.labels("/a/List", "NOT_FOUND").inc()
        family.labels("/a/Made", "OK")  # made, never counted: exposed as 0
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value(
        "demo_requests_total", {"method": "/a/Get", "code": "OK"}
    ) == pytest.approx(3.5)


def test_a_histogram_exposes_what_prometheus_client_exposes() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tallied = TalliedHistogram("demo_seconds", "Latency.", ["method"], ours, buckets=BUCKETS)
    reference = Histogram("demo_seconds", "Latency.", ["method"], registry=theirs, buckets=BUCKETS)
    for family in (tallied, reference):
        for amount in OBSERVED:
            family.labels("/a/Get").observe(amount)
        family.labels("/a/List").observe(0.01)  # exactly on a bound: counted in it
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("demo_seconds_bucket", {"method": "/a/List", "le": "0.01"}) == 1
    assert ours.get_sample_value("demo_seconds_bucket", {"method": "/a/List", "le": "0.005"}) == 0


def test_no_count_is_lost_when_threads_count_at_once() -> None:
    registry = CollectorRegistry()
    counter = TalliedCounter("demo_calls_total", "Calls.", ["kind"], registry)
    histogram = TalliedHistogram("demo_call_seconds", "Latency.", ["kind"], registry)
    threads, each = 8, 20_000
    start = threading.Barrier(threads)

    def count() -> None:
        start.wait()
        child = counter.labels("read")
        timing = histogram.labels("read")
        for _ in range(each):
            child.inc()
            timing.observe(0.02)

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for worker in workers:
        worker.start()
    # Scrapes while they count: each a snapshot, never more than was counted.
    seen = 0.0
    while any(worker.is_alive() for worker in workers):
        now = registry.get_sample_value("demo_calls_total", {"kind": "read"}) or 0.0
        assert seen <= now <= threads * each
        seen = now
    for worker in workers:
        worker.join()
    assert registry.get_sample_value("demo_calls_total", {"kind": "read"}) == threads * each
    assert registry.get_sample_value("demo_call_seconds_count", {"kind": "read"}) == threads * each
    assert (
        registry.get_sample_value("demo_call_seconds_bucket", {"kind": "read", "le": "0.025"})
        == threads * each
    )
    assert (
        registry.get_sample_value("demo_call_seconds_bucket", {"kind": "read", "le": "0.01"}) == 0
    )
    assert registry.get_sample_value("demo_call_seconds_sum", {"kind": "read"}) == pytest.approx(
        0.02 * threads * each
    )


def test_what_an_ended_thread_counted_stays() -> None:
    registry = CollectorRegistry()
    counter = TalliedCounter("demo_jobs_total", "Jobs.", [], registry)
    worker = threading.Thread(target=lambda: counter.labels().inc(3))
    worker.start()
    worker.join()
    del worker
    counter.labels().inc()
    assert registry.get_sample_value("demo_jobs_total") == 4


def test_mistakes_are_refused() -> None:
    registry = CollectorRegistry()
    counter = TalliedCounter("demo_total", "Demo.", ["a"], registry)
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("x").inc(-1)
    assert registry.get_sample_value("demo_total", {"a": "x"}) == 0
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("x", "y")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        TalliedCounter("demo_total", "Again.", ["a"], registry)
    with pytest.raises(ValueError, match="increasing"):
        TalliedHistogram("demo_seconds", "Latency.", [], registry, buckets=(1.0, 0.5))
