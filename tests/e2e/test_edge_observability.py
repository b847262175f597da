"""The edge's observability through the whole stack (issue 16): every REST request, those
Envoy answers itself included, in the core's o2ims_http_* metrics under its path template;
correlation ids kept, replaced or generated at the edge and carried to the core; Envoy's
statistics scrapeable without its admin API; Envoy's log lines all JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.pki import issue_client_certificate
from devstack.processes import metric_sum, wait_until
from devstack.stack import LocalStack
from netweave.headers import CORRELATION_ID_HEADER, CORRELATION_ID_PATTERN, REQUEST_ID_HEADER
from tests.core_process import json_lines

from .conftest import start_stack

pytestmark = pytest.mark.e2e

INVENTORY = "/o2ims-infrastructureInventory/v1"
POOLS = f"{INVENTORY}/resourcePools"
POOL_TEMPLATE = f"{POOLS}/{{resourcePoolId}}"
SUBSCRIPTIONS = f"{INVENTORY}/subscriptions"
REQUESTS = "o2ims_http_requests_total"
DURATION_COUNT = "o2ims_http_request_duration_seconds_count"
# Envoy flushes its access log batches every second.
FLUSH_WAIT_S = 10.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture
def rest(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=10) as client:
        yield client


def metrics(stack: LocalStack) -> str:
    return httpx.get(f"{stack.ops_url}/metrics", timeout=5).text


def wait_for_count(stack: LocalStack, at_least: float, **labels: str) -> None:
    """Wait until o2ims_http_requests_total{labels} reaches `at_least` (Envoy sends its
    access log records in batches, once a second)."""
    wait_until(
        lambda: metric_sum(metrics(stack), REQUESTS, **labels) >= at_least,
        FLUSH_WAIT_S,
        f"{REQUESTS}{labels} to reach {at_least}",
        interval=0.2,
    )


def test_each_kind_of_rest_request_is_counted_under_its_template(
    stack: LocalStack, rest: httpx.Client, tmp_path: Path
) -> None:
    pools = rest.get(POOLS)
    assert pools.status_code == 200
    pool_id = pools.json()[0]["resourcePoolId"]
    assert rest.get(f"{POOLS}/{pool_id}").status_code == 200
    assert rest.get(POOLS, headers={"authorization": "Bearer not-a-token"}).status_code == 401
    assert rest.get(f"{INVENTORY}/noSuchCollection/{pool_id}").status_code == 404
    assert rest.delete(POOLS).status_code == 405
    big = {"callback": "https://smo.example/cb", "filter": "x" * (1024 * 1024 + 1)}
    assert rest.post(SUBSCRIPTIONS, json=big).status_code == 413
    limited = flood(stack, tmp_path)

    expected = [
        ("GET", POOLS, "200", 1),
        ("GET", POOL_TEMPLATE, "200", 1),
        ("GET", POOLS, "401", 1),
        ("GET", "unmatched", "404", 1),
        ("DELETE", POOLS, "405", 1),
        ("POST", SUBSCRIPTIONS, "413", 1),
        ("GET", INVENTORY, "429", limited),
    ]
    for method, route, code, count in expected:
        wait_for_count(stack, count, method=method, route=route, code=code)
    text = metrics(stack)
    for method, route, code, count in expected:
        assert metric_sum(text, REQUESTS, method=method, route=route, code=code) >= count, (
            method,
            route,
            code,
        )
    # The histogram counts every request the counter counts, per method and route.
    for method, route in {(method, route) for method, route, _, _ in expected}:
        requests = metric_sum(text, REQUESTS, method=method, route=route)
        assert metric_sum(text, DURATION_COUNT, method=method, route=route) == requests
    # The raw path (with its id) is never a label.
    series = [line for line in text.splitlines() if line.startswith("o2ims_http_")]
    assert series and not any(pool_id in line for line in series)
    assert not any("noSuchCollection" in line for line in series)
    # Sub-millisecond resolution: the first bucket is 1 ms.
    assert 'le="0.001"' in text


def flood(stack: LocalStack, tmp_path: Path) -> int:
    """Drive one fresh client over its rate limit; the number of 429s it got."""
    cert = issue_client_certificate(stack.pki.directory, "smo-flood", tmp_path)
    context = stack.client_tls(cert)
    with (
        httpx.Client(base_url=stack.rest_url, verify=context, timeout=10) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        statuses = list(pool.map(lambda _: client.get(INVENTORY).status_code, range(400)))
    limited = statuses.count(429)
    assert limited > 0, statuses
    return limited


def test_client_correlation_id_is_kept_returned_and_reaches_the_core(
    stack: LocalStack, rest: httpx.Client
) -> None:
    response = rest.get(POOLS, headers={CORRELATION_ID_HEADER: "abc-123"})
    assert response.status_code == 200
    assert response.headers[CORRELATION_ID_HEADER] == "abc-123"
    # The core got it (its audit record of the call). Envoy's access log records failures
    # only (NETWEAVE_ENVOY_ACCESS_LOG's default): a failure logged after the success shows
    # the success was not, and that the failure's line has the id and the template.
    assert wait_for_line(stack.audit_log, "abc-123")["status"] == 200
    missing = rest.get(f"{POOLS}/no-such-pool", headers={CORRELATION_ID_HEADER: "abc-404"})
    assert missing.status_code == 404
    line = wait_for_line(stack.logs / "envoy.log", "abc-404", key="correlation_id")
    assert line["route"] == POOL_TEMPLATE and line["status"] == 404
    assert "abc-123" not in (stack.logs / "envoy.log").read_text()


def test_request_id_is_used_without_a_correlation_id(rest: httpx.Client) -> None:
    response = rest.get(POOLS, headers={REQUEST_ID_HEADER: "smo-req.42"})
    assert response.headers[CORRELATION_ID_HEADER] == "smo-req.42"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {CORRELATION_ID_HEADER: "bad id with spaces"},
        {CORRELATION_ID_HEADER: "x" * 129},
        {CORRELATION_ID_HEADER: "-leading-dash", REQUEST_ID_HEADER: "also bad!"},
    ],
    ids=["none", "malformed", "too-long", "both-malformed"],
)
def test_missing_or_malformed_ids_are_replaced_by_a_generated_one(
    stack: LocalStack, rest: httpx.Client, headers: dict[str, str]
) -> None:
    response = rest.get(POOLS, headers=headers)
    generated = response.headers[CORRELATION_ID_HEADER]
    assert re.fullmatch(CORRELATION_ID_PATTERN, generated)
    assert generated not in headers.values()
    # The malformed value went nowhere: the core saw the generated id.
    assert wait_for_line(stack.audit_log, generated)["status"] == 200
    text = stack.audit_log.read_text()
    for sent in headers.values():
        assert sent not in text


def test_envoy_local_replies_carry_the_correlation_id(rest: httpx.Client) -> None:
    for response in (
        rest.get("/nowhere", headers={CORRELATION_ID_HEADER: "local-404"}),
        rest.delete(POOLS, headers={CORRELATION_ID_HEADER: "local-405"}),
        rest.get(POOLS, headers={CORRELATION_ID_HEADER: "local-401", "authorization": "Bearer x"}),
        rest.get(f"{POOLS}?access_token=x", headers={CORRELATION_ID_HEADER: "local-400"}),
    ):
        assert response.status_code >= 400
        assert response.headers[CORRELATION_ID_HEADER] == f"local-{response.status_code}"


def test_envoy_stats_are_scrapeable_and_nothing_else_of_the_admin_api(stack: LocalStack) -> None:
    stats = httpx.get(stack.envoy_stats_url, timeout=5)
    assert stats.status_code == 200
    assert "envoy_http_downstream_rq_total" in stats.text
    base = f"http://127.0.0.1:{stack.config.envoy_stats_port}"
    for path in ("/quitquitquit", "/logging?level=trace", "/config_dump", "/healthcheck/fail"):
        assert httpx.post(f"{base}{path}", timeout=5).status_code == 404, path
        assert httpx.get(f"{base}{path}", timeout=5).status_code == 404, path
    assert stack.envoy is not None and stack.envoy.alive()


def test_every_envoy_log_line_is_json(stack: LocalStack, rest: httpx.Client) -> None:
    """Access log and application log alike (tests/rest_facade/test_edge_observability.py
    checks the application log's fields at info level, where Envoy says more)."""
    rest.get(POOLS).raise_for_status()
    # An access log line (failures are logged) among the application log's.
    assert rest.get(f"{POOLS}/unknown", headers={CORRELATION_ID_HEADER: "json-404"}).is_error
    wait_for_line(stack.logs / "envoy.log", "json-404", key="correlation_id")
    lines = [line for line in (stack.logs / "envoy.log").read_text().splitlines() if line]
    assert lines
    for line in lines:
        record = json.loads(line)
        assert record["component"] == "envoy", line
        if "level" in record:
            assert {"ts", "level", "version", "message"} <= record.keys(), line


def wait_for_line(path: Path, value: str, key: str | None = None) -> dict[str, Any]:
    """The first JSON line of `path` holding `value` (under `key`, if given)."""

    def found() -> list[dict[str, Any]]:
        return [
            record
            for record in json_lines(path)
            if (value in json.dumps(record) if key is None else record.get(key) == value)
        ]

    return wait_until(found, FLUSH_WAIT_S, f"{value!r} in {path}", interval=0.1)[0]
