"""Prometheus helpers shared by the core and the notifier."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

StateCollector = Callable[[], Iterator[GaugeMetricFamily]]


def register_state(registry: CollectorRegistry, collect: StateCollector) -> None:
    """Expose gauges computed at scrape time (Redis up, queue depths, object counts)."""

    class _State(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            return collect()

    registry.register(_State())
