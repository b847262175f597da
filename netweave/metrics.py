"""Prometheus helpers shared by every process: scrape-time state, what each process's
/metrics carries whatever it does (process_*, build info, Redis commands, readiness), and
merging several processes' expositions into one (the core supervisor's /metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from netweave.redis_metrics import REDIS_COMMANDS, UNREPLICATED_WRITES
from netweave.version import commit, version

StateCollector = Callable[[], Iterator[GaugeMetricFamily]]
# True when the process's readiness is OK (what /readyz answers 200 for).
ReadyCheck = Callable[[], bool]


def register_state(registry: CollectorRegistry, collect: StateCollector) -> None:
    """Expose gauges computed at scrape time (Redis up, queue depths, object counts)."""

    class _State(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            return collect()

    registry.register(_State())


def _build_info() -> Iterator[GaugeMetricFamily]:
    info = GaugeMetricFamily(
        "o2ims_build_info",
        "Always 1: the version and commit this process runs.",
        labels=["version", "commit"],
    )
    info.add_metric([version(), commit()], 1.0)
    yield info


def register_process_metrics(registry: CollectorRegistry, ready: ReadyCheck) -> None:
    """What every process's /metrics carries: `process_*`, `python_*` (the standard
    collectors, process-wide), `o2ims_build_info`, `o2ims_redis_commands_total` and
    `o2ims_ready` (1 while `ready()`, computed at scrape time). A registry that has them
    already is left as it is (two ops endpoints may share one registry)."""

    def _ready() -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("o2ims_ready", "1 when this process's readiness is OK.")
        gauge.add_metric([], 1.0 if ready() else 0.0)
        yield gauge

    collectors = (
        PROCESS_COLLECTOR,
        PLATFORM_COLLECTOR,
        GC_COLLECTOR,
        REDIS_COMMANDS,
        UNREPLICATED_WRITES,
    )
    try:
        for collector in collectors:
            registry.register(collector)
    except ValueError:  # registered before: this registry is served already
        return
    register_state(registry, _build_info)
    register_state(registry, _ready)


def backend_request_histogram(registry: CollectorRegistry) -> Histogram:
    """`o2ims_adapter_backend_request_duration_seconds{adapter}`: how long an adapter's
    calls to its backend take (the Kubernetes API's list and watch connect, each AWS API
    call with its retries)."""
    return Histogram(
        "o2ims_adapter_backend_request_duration_seconds",
        "Time an adapter's backend API call took (Kubernetes list and watch connect; "
        "each AWS API call, retries included).",
        ["adapter"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        registry=registry,
    )


def _labelled(metric: Metric, labels: Mapping[str, str]) -> Iterator[Sample]:
    for sample in metric.samples:
        merged = {**sample.labels, **labels}
        yield Sample(sample.name, merged, sample.value, sample.timestamp, sample.exemplar)


def merge_metrics(sources: Iterable[tuple[Mapping[str, str], str]]) -> list[Metric]:
    """Families of Prometheus text expositions merged by name, each source's samples
    given its labels: one family per name, so the result is one valid exposition."""
    families: dict[str, Metric] = {}
    for labels, text in sources:
        for metric in text_string_to_metric_families(text):
            merged = families.get(metric.name)
            if merged is None:
                merged = families[metric.name] = Metric(
                    metric.name, metric.documentation, metric.type, metric.unit
                )
            merged.samples.extend(_labelled(metric, labels))
    return list(families.values())


@dataclass(frozen=True)
class Families:
    """Families already collected, in the shape generate_latest() renders."""

    families: list[Metric]

    def collect(self) -> list[Metric]:
        return self.families
