"""Property: whatever a client throws at the REST edge, the answer is never a 5xx (except
a deliberate 503 while a dependency is down), every error is a valid ProblemDetails,
and the stored inventory is exactly what it was."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.contract import KINDS
from devstack.processes import wait_until
from devstack.stack import LocalStack
from server.store import OBJECTS_PREFIX, VERSION_KEY

pytestmark = pytest.mark.e2e

PREFIXES = [
    "/o2ims-infrastructureInventory",
    "/o2ims-infrastructureInventory/v1",
    "/o2ims-infrastructureInventory/v2",
    "/o2ims-infrastructureInventory/v3",
    "/o2ims-infrastructureMonitoring/v1",
    "/o2ims-infrastructureNothing",
    "",
]
SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "resourcePools",
            "resources",
            "resourceTypes",
            "deploymentManagers",
            "alarmDictionaries",
            "alarmDictionary",
            "locations",
            "oCloudSites",
            "subscriptions",
            "alarmSubscriptions",
            "alarms",
            "api_versions",
            "3f1e2d4c-0000-4000-8000-000000000000",
            "%20",
            "%2F",
            "%25",
            "%00",
            "~",
            ".",
            "..",
        ]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#%"),
        max_size=40,
    ),
)
QUERY_NAMES = st.sampled_from(
    [
        "filter",
        "fields",
        "exclude_fields",
        "all_fields",
        "exclude_default",
        "nextpage_opaque_marker",
        "x",
        "resource_pool_id",
    ]
)
QUERY_VALUES = st.text(max_size=40)
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "accept",
            "content-type",
            "x-forwarded-client-cert",
            "x-request-id",
            "authorization",
            "x-o2ims-collection",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    max_size=3,
)
BODIES = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.just(b'{"callback": "https://smo.example.net/notify"'),
    st.just(b"<xml/>"),
    st.dictionaries(
        st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=10)), max_size=3
    ).map(lambda d: json.dumps(d).encode()),
)


def _stored_inventory(url: str) -> tuple[Any, ...]:
    client = redis.Redis.from_url(url)
    try:
        return (client.get(VERSION_KEY), *(client.hgetall(OBJECTS_PREFIX + kind) for kind in KINDS))
    finally:
        client.close()


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.url, response.status_code, response.text)
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert response.headers["content-type"] == "application/problem+json", response.text
        problem = json.loads(response.content)
        assert problem["status"] == response.status_code
        assert isinstance(problem["detail"], str) and isinstance(problem["title"], str)
        assert "instance" not in problem
        assert "grpc-status" not in response.headers


def test_random_requests_never_5xx_and_never_change_the_inventory(
    stack: LocalStack, rest: httpx.Client
) -> None:
    before = _stored_inventory(stack.redis_url)

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
        prefix=st.sampled_from(PREFIXES),
        segments=st.lists(SEGMENTS, max_size=4),
        query=st.lists(st.tuples(QUERY_NAMES, QUERY_VALUES), max_size=3),
        headers=HEADERS,
        body=BODIES,
        trailing_slash=st.booleans(),
    )
    def throw(
        *,
        method: str,
        prefix: str,
        segments: list[str],
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes | None,
        trailing_slash: bool,
    ) -> None:
        path = "/".join([prefix, *segments]) or "/"
        if trailing_slash:
            path += "/"
        request = rest.build_request(
            method, path, params=tuple(query), headers=headers, content=body
        )
        _check(rest.send(request))

    throw()
    assert _stored_inventory(stack.redis_url) == before


def test_core_down_gives_a_deliberate_503_problem_and_recovers(
    stack: LocalStack, rest: httpx.Client
) -> None:
    assert stack.core is not None
    stack.core.stop()
    try:
        response = rest.get("/o2ims-infrastructureInventory/v1/resourcePools")
        assert response.status_code == 503
        problem = json.loads(response.content)
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["status"] == 503
        assert "refused" not in problem["detail"].lower()
        assert "upstream" not in problem["detail"].lower()
    finally:
        stack.start_core()
    wait_until(
        lambda: rest.get("/o2ims-infrastructureInventory/v1/resourcePools").status_code == 200,
        timeout=15.0,
        what="REST to recover after the core restarts",
    )
