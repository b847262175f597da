"""The edge's optional traces (rest_facade/envoy_tracing.py): off by default, rendered and
accepted by `envoy --mode validate` when on, and a collector address that is not host:port
refused before any config is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devstack.pki import DevPki
from rest_facade.envoy_config import render, write
from rest_facade.envoy_process import validate
from rest_facade.envoy_tracing import COLLECTOR_CLUSTER, EdgeTracing

from .support import envoy_config
from .test_envoy_config import http_connection_manager


def test_tracing_is_off_by_default(pki: DevPki, descriptor: Path) -> None:
    rendered = yaml.safe_load(render(envoy_config(pki, 50051, descriptor_path=descriptor)))
    manager = http_connection_manager(rendered)
    assert "tracing" not in manager
    assert "request_id_extension" not in manager
    clusters = [c["name"] for c in rendered["static_resources"]["clusters"]]
    assert COLLECTOR_CLUSTER not in clusters
    # A client's trace context never passes the edge, tracing on or off.
    mutations = manager["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
    assert {"remove": "traceparent"} in mutations and {"remove": "tracestate"} in mutations


def test_tracing_on_renders_the_opentelemetry_tracer_and_passes_envoy_validate(
    pki: DevPki, descriptor: Path, tmp_path: Path
) -> None:
    config = envoy_config(
        pki,
        50051,
        descriptor_path=descriptor,
        tracing=EdgeTracing("otel-collector.monitoring:4317", sample_ratio=0.25),
    )
    rendered = yaml.safe_load(render(config))
    tracing = http_connection_manager(rendered)["tracing"]
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    assert tracing["random_sampling"] == {"value": 25.0}
    assert tracing["max_path_tag_length"] == 0
    [cluster] = [
        c for c in rendered["static_resources"]["clusters"] if c["name"] == COLLECTOR_CLUSTER
    ]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {
        "address": "otel-collector.monitoring",
        "port_value": 4317,
    }
    validate(write(config, tmp_path / "envoy.yaml"))


@pytest.mark.parametrize(
    "collector", ["http://collector:4317", "collector", "collector:0", "::1:4317", "a/b:4317"]
)
def test_a_collector_that_is_not_host_port_is_refused(collector: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        EdgeTracing(collector)


def test_a_sample_ratio_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        EdgeTracing("127.0.0.1:4317", sample_ratio=1.5)
