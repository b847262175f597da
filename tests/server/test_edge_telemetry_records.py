"""The edge's REST access records as the core reads them (server/edge_telemetry.py): one
string per request, the fields of netweave/headers.py TELEMETRY_FIELDS, as Envoy renders
them (rest_facade/envoy_config.py TELEMETRY_BODY). The real Envoy sending them end to end:
tests/e2e/test_edge_observability.py."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from netweave.headers import TELEMETRY_FIELDS, TELEMETRY_SEPARATOR
from rest_facade.envoy_config import TELEMETRY_BODY, TELEMETRY_COMMANDS
from server.edge_telemetry import EdgeMetrics

ROUTE = "/o2ims-infrastructureInventory/v1/resourcePools/{resourcePoolId}"


def counted(body: str) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """(requests by method, route, code; duration sums by method, route) after `body`."""
    registry = CollectorRegistry()
    EdgeMetrics(registry).record(body)
    requests: dict[tuple[str, ...], float] = {}
    durations: dict[tuple[str, ...], float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "o2ims_http_requests_total":
                labels = sample.labels
                requests[(labels["method"], labels["route"], labels["code"])] = sample.value
            if sample.name == "o2ims_http_request_duration_seconds_sum":
                durations[(sample.labels["method"], sample.labels["route"])] = sample.value
    return requests, durations


@pytest.mark.parametrize(
    ("body", "labels", "seconds"),
    [
        (f"GET {ROUTE} 200 1234 1", ("GET", ROUTE, "200"), 0.001234),
        (f"get {ROUTE} 404 - 7", ("GET", ROUTE, "404"), 0.007),  # ms when us is absent
        ("POST - 401 88 0", ("POST", "unmatched", "401"), 0.000088),  # no template matched
        ("BREW /x 200 10 0", ("other", "/x", "200"), 0.00001),  # methods are bounded
        (f"GET /{'a' * 300} 200 10 0", ("GET", "unmatched", "200"), 0.00001),
        ("GET /x 2000 10 0", ("GET", "/x", "0"), 0.00001),  # not a status
        ("GET /x 200 - -", ("GET", "/x", "200"), None),  # no duration at all
        ("garbage", ("other", "unmatched", "0"), None),  # not a record: counted, never a label
        ("", ("other", "unmatched", "0"), None),
    ],
)
def test_a_record_is_counted_under_bounded_labels(
    body: str, labels: tuple[str, str, str], seconds: float | None
) -> None:
    requests, durations = counted(body)
    assert requests == {labels: 1.0}
    if seconds is None:
        assert durations == {}
    else:
        assert durations == {labels[:2]: pytest.approx(seconds)}


def test_envoy_writes_the_fields_in_the_order_the_core_reads_them() -> None:
    assert tuple(TELEMETRY_COMMANDS) == TELEMETRY_FIELDS
    commands = TELEMETRY_BODY.split(TELEMETRY_SEPARATOR)
    assert commands == [TELEMETRY_COMMANDS[field] for field in TELEMETRY_FIELDS]
    # No command may write the separator itself.
    assert all(TELEMETRY_SEPARATOR not in command for command in TELEMETRY_COMMANDS.values())
