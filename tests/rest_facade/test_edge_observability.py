"""The edge's observability with a fake core (issue 16): the correlation id Envoy forwards and
returns, the stats listener that serves Envoy's statistics and nothing else of the admin API,
Envoy's application log as JSON lines, and the configuration's fail-closed checks. The
metrics themselves go through the real core: tests/e2e/test_edge_observability.py."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from devstack.pki import DevPki
from netweave.headers import CORRELATION_ID_HEADER, CORRELATION_ID_PATTERN, REQUEST_ID_HEADER
from rest_facade import envoy_modules, envoy_routes, openapi
from rest_facade.envoy_config import (
    ID_LENGTH_LIMIT,
    CoreTls,
    EnvoyConfig,
    id_characters,
    render,
    served_rules,
    telemetry_endpoints,
    write,
)
from rest_facade.envoy_process import EnvoyError, RunningEnvoy, start_envoy, validate
from rest_facade.http_rules import read_rules, resource_paths

from .support import FakeCore, FakeInventory, access_log_entry, envoy_config, tls_context

POOLS = "/o2ims-infrastructureInventory/v1/resourcePools"


@pytest.fixture(scope="module")
def observed_envoy(
    tmp_path_factory: pytest.TempPathFactory, pki: DevPki, core: FakeCore
) -> Iterator[RunningEnvoy]:
    """An edge with a stats listener, logging at info (so its application log has lines)."""
    workdir = tmp_path_factory.mktemp("observed-envoy")
    config = envoy_config(pki, core.port, stats_port=0, admin_socket=workdir / "admin.sock")
    running = start_envoy(config, workdir, workdir / "envoy.log", concurrency=1, log_level="info")
    yield running
    running.stop()


@pytest.fixture
def client(observed_envoy: RunningEnvoy, pki: DevPki) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=observed_envoy.url, verify=tls_context(pki), trust_env=False, timeout=10
    ) as http:
        yield http


# --- correlation ids ---------------------------------------------------------------------


def test_a_well_formed_correlation_id_is_returned_and_forwarded(
    client: httpx.Client, inventory: FakeInventory
) -> None:
    response = client.get(POOLS, headers={CORRELATION_ID_HEADER: "abc-123"})
    assert response.status_code == 200
    assert response.headers[CORRELATION_ID_HEADER] == "abc-123"
    # gRPC metadata through the transcoder; x-request-id carries the same id.
    sent = inventory.last_metadata()
    assert sent[CORRELATION_ID_HEADER] == "abc-123"
    assert sent[REQUEST_ID_HEADER] == "abc-123"


def test_the_request_id_serves_when_no_correlation_id_is_sent(
    client: httpx.Client, inventory: FakeInventory
) -> None:
    response = client.get(POOLS, headers={REQUEST_ID_HEADER: "smo:req.7"})
    assert response.headers[CORRELATION_ID_HEADER] == "smo:req.7"
    assert inventory.last_metadata()[CORRELATION_ID_HEADER] == "smo:req.7"


@pytest.mark.parametrize(
    "sent",
    [
        {},
        {CORRELATION_ID_HEADER: "has space"},
        {CORRELATION_ID_HEADER: "a" * 129},
        {CORRELATION_ID_HEADER: ".dot-first"},
        {CORRELATION_ID_HEADER: "semi;colon", REQUEST_ID_HEADER: 'quote"d'},
        {"x-netweave-client-request-id": "smuggled"},
    ],
    ids=["none", "space", "too-long", "dot-first", "both-bad", "aside-header"],
)
def test_a_missing_or_malformed_id_is_replaced_never_forwarded(
    client: httpx.Client, inventory: FakeInventory, sent: dict[str, str]
) -> None:
    response = client.get(POOLS, headers=sent)
    generated = response.headers[CORRELATION_ID_HEADER]
    assert re.fullmatch(CORRELATION_ID_PATTERN, generated)
    assert generated not in sent.values()
    metadata = inventory.last_metadata()
    assert metadata[CORRELATION_ID_HEADER] == generated
    assert not set(sent.values()) & set(metadata.values())
    assert "x-netweave-client-request-id" not in metadata


def test_a_repeated_id_header_is_read_as_its_values_joined(
    client: httpx.Client, inventory: FakeInventory
) -> None:
    # "a,b": a comma is not an id character, so neither value is kept; the x-request-id is.
    response = client.get(
        POOLS,
        headers=[
            (CORRELATION_ID_HEADER, "a"),
            (CORRELATION_ID_HEADER, "b"),
            (REQUEST_ID_HEADER, "r-1"),
        ],
    )
    assert response.headers[CORRELATION_ID_HEADER] == "r-1"
    assert inventory.last_metadata()[CORRELATION_ID_HEADER] == "r-1"


def test_the_longest_well_formed_id_is_kept(client: httpx.Client) -> None:
    longest = "a" * 128
    assert (
        client.get(POOLS, headers={CORRELATION_ID_HEADER: longest}).headers[CORRELATION_ID_HEADER]
        == longest
    )


def test_local_replies_carry_the_correlation_id(client: httpx.Client) -> None:
    for path, method, status in (
        ("/nowhere", "GET", 404),
        (POOLS, "DELETE", 405),
        (f"{POOLS}?api_key=secret", "GET", 400),
    ):
        response = client.request(method, path, headers={CORRELATION_ID_HEADER: f"id-{status}"})
        assert response.status_code == status, (method, path)
        assert response.headers[CORRELATION_ID_HEADER] == f"id-{status}"


def test_the_access_log_line_has_the_correlation_id_and_template(
    client: httpx.Client, observed_envoy: RunningEnvoy
) -> None:
    # A 404: the access log records failures by default (tests/rest_facade/
    # test_access_log_requests.py).
    missing = client.get(f"{POOLS}/no-such-pool", headers={CORRELATION_ID_HEADER: "logged-1"})
    assert missing.status_code == 404
    line = access_log_entry(observed_envoy, "logged-1", timeout=10, key="correlation_id")
    assert line["route"] == f"{POOLS}/{{resourcePoolId}}"
    assert line["request_id"] == "logged-1"


@given(st.text(max_size=140))
def test_the_filters_id_test_accepts_exactly_what_the_regex_accepts(value: str) -> None:
    first, rest, max_length = id_characters(CORRELATION_ID_PATTERN)
    alphanumeric = string.digits + string.ascii_uppercase + string.ascii_lowercase
    assert first == alphanumeric
    assert rest == "".join(sorted(alphanumeric + "._:-"))
    assert max_length == 128
    # What envoy/modules/request_context.c accepts, given these sets.
    filter_accepts = (
        0 < len(value) <= max_length and value[0] in first and all(c in rest for c in value[1:])
    )
    assert filter_accepts == (re.fullmatch(CORRELATION_ID_PATTERN, value) is not None)


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[^x]+$",
        r"^[a-z]{0,5}$",
        r"^[a\]b][c]{0,3}$",
        r"^[^a][b]{0,3}$",
        r"^[z-a][b]{0,3}$",
        r"^[a][b\u00e9]{0,3}$",
        r"^[a][b]{0,1024}$",
    ],
)
def test_id_patterns_the_filter_cannot_test_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        id_characters(pattern)


@pytest.mark.parametrize(
    ("edit", "accepted"),
    [
        (lambda text: text, True),
        (lambda text: text.replace("id_max_length=128\n", ""), False),
        (lambda text: text + "unknown=1\n", False),
        (lambda text: text + "guard_namespace=again\n", False),
        (lambda text: text.replace("id_max_length=128", "id_max_length=1025"), False),
        (lambda text: text.replace("id_max_length=128", "id_max_length=0"), False),
        (lambda text: text.replace("id_characters=", "id_characters"), False),
    ],
    ids=["as-rendered", "missing", "unknown", "repeated", "too-long", "zero", "no-equals"],
)
def test_the_filter_refuses_settings_it_does_not_know(
    pki: DevPki, descriptor: Path, tmp_path: Path, edit: Any, accepted: bool
) -> None:
    path = write(envoy_config(pki, 50051), tmp_path / "envoy.yaml")
    rendered = yaml.safe_load(path.read_text())
    manager = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][-1]
    (context,) = [
        item
        for item in manager["typed_config"]["http_filters"]
        if item["name"] == envoy_routes.CONTEXT_FILTER
    ]
    settings = context["typed_config"]["filter_config"]
    settings["value"] = edit(settings["value"])
    path.write_text(yaml.safe_dump(rendered))
    if accepted:
        validate(path)
    else:
        with pytest.raises(EnvoyError):
            validate(path)


def test_the_id_length_limit_is_the_modules() -> None:
    source = (envoy_modules.SOURCE_DIR / f"{envoy_modules.REQUEST_CONTEXT}.c").read_text()
    match = re.search(r"^#define ID_LENGTH_LIMIT (\d+)$", source, re.MULTILINE)
    assert match is not None
    assert int(match.group(1)) == ID_LENGTH_LIMIT


# --- route templates ---------------------------------------------------------------------


def test_every_rest_path_route_is_named_after_its_openapi_path(descriptor: Path) -> None:
    rules = read_rules(descriptor)
    keys = openapi.path_keys(descriptor, rules)
    table = envoy_routes.routes(rules, "{}", keys)
    named = {route.get("name") for route in table}
    document = openapi.build_document(descriptor, rules)
    assert set(document["paths"]) <= named
    assert len(keys) == len(resource_paths(rules))
    for route in table:
        label = route.get("metadata", {}).get("filter_metadata", {}).get("netweave.request_context")
        if label is not None:
            assert label["route"] == route["name"] and route["name"] in document["paths"]
    assert "/o2ims-infrastructureInventory/v1/resourcePools/{resourcePoolId}" in named


# --- the stats listener ------------------------------------------------------------------


def test_the_stats_listener_serves_envoy_statistics(observed_envoy: RunningEnvoy) -> None:
    stats = httpx.get(stats_url(observed_envoy, "/stats/prometheus"), timeout=5)
    assert stats.status_code == 200
    assert "# TYPE envoy_http_downstream_rq_total counter" in stats.text
    assert httpx.get(stats_url(observed_envoy, "/ready"), timeout=5).text.strip() == "LIVE"


@pytest.mark.parametrize(
    "path",
    [
        "/quitquitquit",
        "/healthcheck/fail",
        "/logging?level=trace",
        "/config_dump",
        "/runtime_modify?netweave.rate_limit.enabled=0",
        "/drain_listeners",
        "/reset_counters",
        "/stats",
        "/clusters",
        "/certs",
        "/",
        "/stats/prometheus/../config_dump",
        "/stats/prometheus%2F..%2Fconfig_dump",
        "//config_dump",
        "/STATS/PROMETHEUS",
    ],
)
def test_the_stats_listener_reaches_nothing_else_of_the_admin_api(
    observed_envoy: RunningEnvoy, path: str
) -> None:
    for method in ("GET", "POST"):
        response = httpx.request(method, stats_url(observed_envoy, path), timeout=5)
        assert response.status_code == 404, (method, path, response.text[:200])
    # Still serving, with its counters and health intact.
    assert observed_envoy.alive()
    assert observed_envoy.admin_get("/ready").strip() == "LIVE"


def test_the_stats_listener_serves_reads_only(observed_envoy: RunningEnvoy) -> None:
    for method in ("POST", "PUT", "DELETE"):
        response = httpx.request(method, stats_url(observed_envoy, "/stats/prometheus"), timeout=5)
        assert response.status_code == 404


def test_no_stats_listener_unless_configured(pki: DevPki, core: FakeCore) -> None:
    assert "envoy_stats" not in _rendered(envoy_config(pki, core.port))
    assert "envoy_stats" in _rendered(envoy_config(pki, core.port, stats_port=0))


# --- logs --------------------------------------------------------------------------------


def test_envoy_application_log_is_json_lines(
    observed_envoy: RunningEnvoy, client: httpx.Client
) -> None:
    client.get(POOLS)
    lines = [line for line in observed_envoy.process.log_path.read_text().splitlines() if line]
    application = [json.loads(line) for line in lines if '"level"' in line]
    assert len(application) > 5  # start-up at info says a lot
    for record in application:
        assert record["component"] == "envoy"
        assert {"ts", "level", "version", "message", "logger"} <= record.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["ts"])
    for line in lines:
        json.loads(line)  # the access log's lines too


# --- the telemetry channel ---------------------------------------------------------------


def test_telemetry_needs_the_cores_mutual_tls(pki: DevPki, core: FakeCore) -> None:
    with pytest.raises(ValueError, match="core_tls"):
        envoy_config(pki, core.port, telemetry_port=50053)


def test_telemetry_goes_only_to_rest_requests_over_mutual_tls(pki: DevPki, core: FakeCore) -> None:
    config = envoy_config(pki, core.port, core_tls=_core_tls(pki), telemetry_port=50053)
    rendered = _rendered(config)
    assert "envoy.access_loggers.open_telemetry" in rendered
    assert served_rules(config)
    document = yaml.safe_load(rendered)
    clusters = {cluster["name"]: cluster for cluster in document["static_resources"]["clusters"]}
    telemetry = clusters["netweave_edge_telemetry"]
    assert telemetry["transport_socket"] == clusters["o2ims_core"]["transport_socket"]


def test_telemetry_goes_to_every_core_checked_as_the_cores_are(pki: DevPki, tmp_path: Path) -> None:
    """Several cores on one host (a dev stack): each core's own telemetry port, each
    health-checked on its edge listener, so a core restarting or draining gets no batch."""
    config = _telemetry_config(
        pki,
        (("127.0.0.1", 50052), ("127.0.0.1", 50062)),
        core_telemetry_ports=(50053, 50063),
        core_health_interval_s=0.5,
    )
    assert telemetry_endpoints(config) == (("127.0.0.1", 50053), ("127.0.0.1", 50063))
    clusters = _clusters(config)
    telemetry = clusters["netweave_edge_telemetry"]
    assert [
        (
            endpoint["endpoint"]["address"]["socket_address"]["port_value"],
            endpoint["endpoint"]["health_check_config"]["port_value"],
        )
        for endpoint in telemetry["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ] == [(50053, 50052), (50063, 50062)]
    assert telemetry["health_checks"] == clusters["o2ims_core"]["health_checks"]
    assert telemetry["health_checks"][0]["interval"] == "0.5s"
    validate(write(replace(config, admin_socket=tmp_path / "admin.sock"), tmp_path / "e.yaml"))


def test_one_telemetry_port_serves_every_core_host(pki: DevPki) -> None:
    """Kubernetes (rest_facade/render.py): a core per pod, each at the same ports."""
    config = _telemetry_config(pki, (("core-a", 50052), ("core-b", 50052)))
    [group] = _clusters(config)["netweave_edge_telemetry"]["load_assignment"]["endpoints"]
    assert [
        endpoint["endpoint"]["address"]["socket_address"] for endpoint in group["lb_endpoints"]
    ] == [
        {"address": "core-a", "port_value": 50053},
        {"address": "core-b", "port_value": 50053},
    ]


def test_core_telemetry_ports_name_one_port_per_core(pki: DevPki) -> None:
    with pytest.raises(ValueError, match="one port per core endpoint"):
        _telemetry_config(pki, (("127.0.0.1", 50052),), core_telemetry_ports=(50053, 50063))


# --- helpers -----------------------------------------------------------------------------


def _core_tls(pki: DevPki) -> CoreTls:
    return CoreTls(cert=pki.server_cert, key=pki.server_key, ca=pki.ca_cert, core_uri="spiffe://x")


def _telemetry_config(
    pki: DevPki, core_endpoints: tuple[tuple[str, int], ...], **overrides: Any
) -> EnvoyConfig:
    """Cores at `core_endpoints`, each with a telemetry listener (port 50053 unless
    core_telemetry_ports says otherwise)."""
    return envoy_config(
        pki,
        core_endpoints[0][1],
        core_endpoints=core_endpoints,
        core_tls=_core_tls(pki),
        telemetry_port=50053,
        **overrides,
    )


def _clusters(config: EnvoyConfig) -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(_rendered(config))
    return {cluster["name"]: cluster for cluster in document["static_resources"]["clusters"]}


def stats_url(envoy: RunningEnvoy, path: str) -> str:
    assert envoy.stats_port is not None
    return f"http://127.0.0.1:{envoy.stats_port}{path}"


def _rendered(config: EnvoyConfig) -> str:
    return render(replace(config, admin_socket=Path("/tmp/netweave-test-admin.sock")))
