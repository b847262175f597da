"""Property tests of the edge: whatever a client sends under the O2ims prefixes (paths with
valid and invalid segments, percent-encoding, dots, long ids; any method, query, header
and body), real Envoy in front of a test double core never answers 5xx, and every error
is an RFC 7807 ProblemDetails that the OpenAPI document describes. With the core stopped,
the only 5xx is 503."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devstack.pki import DevPki
from rest_facade.envoy_process import RunningEnvoy
from tests.openapi_contract import ContractValidator

from .support import (
    assert_no_internal_headers,
    assert_problem,
    envoy_config,
    launch_envoy,
    rest_client,
    start_fake_core,
)
from .widgets import EdgeCore

# Bounded so the module stays well under a minute; deadline off because the first request
# on a new connection (TLS handshake) is slower than the rest.
settings.register_profile(
    "edge-fuzz",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("edge-fuzz")

API_PREFIXES = [
    "/o2ims-infrastructureInventory",
    "/o2ims-infrastructureMonitoring",
    "/o2ims-edgeTest",
    "/o2ims-infrastructureNothing",
    "",
]
MAJORS = ["v1", "v2", "v3", "V1", "api_versions", "openapi.json"]
COLLECTIONS = [
    "resourcePools",
    "resources",
    "resourceTypes",
    "alarmDictionary",
    "alarmDictionaries",
    "deploymentManagers",
    "deploymentManagersWrongURL",
    "subscriptions",
    "alarms",
    "alarmSubscriptions",
    "locations",
    "oCloudSites",
    "widgets",
    "settings",
    "api_versions",
]
ODD_SEGMENTS = [
    ".",
    "..",
    "%2e",
    "%2E%2e",
    "%FF",
    "%00",
    "%2F",
    "%C0%AF",
    "%ED%A0%80",
    "%",
    "%zz",
    "5e0f7c3a-1b2d-4c8e-9f00-aa0000000001",
    "💥",
    "a;b=c",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
CONTENT_TYPES = [
    "application/json",
    "application/merge-patch+json",
    "application/xml",
    "text/plain",
    "application/problem+json",
    "application/json; charset=utf-8",
    "",
]
QUERY_KEYS = ["filter", "fields", "exclude_fields", "all_fields", "page_size", "names", "typo"]
JSON_KEYS = ["name", "widgetId", "labels", "color", "callback", "filter", "retentionDays"]
SAFE_HEADER_TEXT = string.ascii_letters + string.digits + " -_.,;:=/()'\"*+"

segments = st.one_of(
    st.sampled_from(COLLECTIONS),
    st.sampled_from(ODD_SEGMENTS),
    st.uuids().map(str),
    st.text(min_size=1, max_size=40).map(lambda text: quote(text, safe="")),
    st.integers(min_value=100, max_value=5000).map(lambda length: "x" * length),
)
paths = st.builds(
    lambda prefix, major, rest, slash: (
        prefix + "/" + "/".join([major, *rest]) + ("/" if slash else "")
    ),
    st.sampled_from(API_PREFIXES),
    st.sampled_from(MAJORS),
    st.lists(segments, max_size=4),
    st.booleans(),
)
queries = st.lists(st.tuples(st.sampled_from(QUERY_KEYS), st.text(max_size=30)), max_size=3).map(
    urlencode
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(JSON_KEYS) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
# Over the edge's 1 MiB body limit: 413 whatever the method.
OVERSIZED_BODY = b'{"name": "' + b"x" * 1_100_000 + b'"}'
bodies = st.one_of(
    st.none(),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.just(b"<widget><name>w</name></widget>"),
    st.just(OVERSIZED_BODY),
)
headers = st.dictionaries(
    st.sampled_from(["accept", "x-o2ims-http-status", "x-http-status", "x-forwarded-for", "x-a"]),
    # h11 refuses surrounding whitespace in a value before anything is sent.
    st.text(alphabet=SAFE_HEADER_TEXT, max_size=40).map(str.strip),
    max_size=3,
)


@pytest.fixture(scope="module")
def edge_validator(edge_openapi_document: dict[str, Any]) -> ContractValidator:
    return ContractValidator(edge_openapi_document)


@pytest.fixture(scope="module")
def fuzz_client(
    edge_envoy: RunningEnvoy, pki: DevPki, edge_core: EdgeCore
) -> Iterator[httpx.Client]:
    with rest_client(edge_envoy, pki) as client:
        yield client


def _request(
    client: httpx.Client,
    *,
    method: str,
    path: str,
    query: str,
    content_type: str,
    extra_headers: dict[str, str],
    body: bytes | None,
) -> httpx.Response:
    request_headers = dict(extra_headers)
    if content_type:
        request_headers["content-type"] = content_type
    url = path + (f"?{query}" if query else "")
    return client.request(method, url, content=body, headers=request_headers)


def _assert_problem_if_error(response: httpx.Response, method: str) -> None:
    assert_no_internal_headers(response)
    if response.status_code >= 400 and method != "HEAD":
        assert_problem(response, response.status_code)


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    path=paths,
    query=queries,
    content_type=st.sampled_from(CONTENT_TYPES),
    extra_headers=headers,
    body=bodies,
)
# Found by this test: a GET with a body over the limit is a 413, which the document had
# listed for writes only.
@example(
    method="GET",
    path="/o2ims-infrastructureInventory/v1",
    query="",
    content_type="application/json",
    extra_headers={},
    body=OVERSIZED_BODY,
)
def test_no_request_makes_the_edge_answer_5xx(
    *,
    fuzz_client: httpx.Client,
    edge_validator: ContractValidator,
    method: str,
    path: str,
    query: str,
    content_type: str,
    extra_headers: dict[str, str],
    body: bytes | None,
) -> None:
    response = _request(
        fuzz_client,
        method=method,
        path=path,
        query=query,
        content_type=content_type,
        extra_headers=extra_headers,
        body=body,
    )

    assert response.status_code < 500, (response.status_code, response.text[:300])
    _assert_problem_if_error(response, method)
    raw_path = response.request.url.raw_path.decode("ascii").split("?")[0]
    errors = edge_validator.check(
        method, raw_path, response.status_code, response.headers, response.content
    )
    assert errors == []


@pytest.fixture(scope="module")
def coreless_client(
    tmp_path_factory: pytest.TempPathFactory, pki: DevPki, edge_descriptor: Path
) -> Iterator[httpx.Client]:
    """An edge whose core has gone away after start-up."""
    core = start_fake_core()
    config = envoy_config(pki, core.port, descriptor_path=edge_descriptor)
    envoy = launch_envoy(config, tmp_path_factory.mktemp("coreless-envoy"))
    core.stop()
    try:
        with rest_client(envoy, pki) as client:
            yield client
    finally:
        envoy.stop()


@settings(FUZZ, max_examples=50)
@given(method=st.sampled_from(METHODS), path=paths, query=queries, body=bodies)
def test_with_the_core_down_the_only_5xx_is_503(
    coreless_client: httpx.Client,
    method: str,
    path: str,
    query: str,
    body: bytes | None,
) -> None:
    response = _request(
        coreless_client,
        method=method,
        path=path,
        query=query,
        content_type="application/json",
        extra_headers={},
        body=body,
    )

    assert response.status_code < 500 or response.status_code == 503, response.text[:300]
    _assert_problem_if_error(response, method)
    if response.status_code == 503:
        assert "upstream" not in response.text
        assert "127.0.0.1" not in response.text
