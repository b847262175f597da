"""Requests with bodies and the success shapes of writes, through real Envoy and the
test-only widget API: 201 + Location, DELETE 200 with no body, 400 for malformed or
non-JSON bodies, 413 above the limit, merge-patch, query parameters (o2ims-spec.md G5;
CONF 7.3.11, 7.3.12)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.pki import DevPki
from rest_facade.envoy_process import RunningEnvoy

from .support import assert_no_internal_headers, assert_problem, raw_https_request
from .widgets import CRASHING_NAME, SETTINGS, WIDGETS, WidgetStore

MAX_REQUEST_BODY = 1_048_576  # the shaper's MAX_REQUEST_BODY_BYTES


def test_create_is_201_with_location_and_the_created_object(
    edge: httpx.Client, widgets: WidgetStore
) -> None:
    response = edge.post(WIDGETS, json={"name": "w1", "labels": {"rack": "A1"}})

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    created = response.json()
    assert response.headers["location"] == f"{WIDGETS}/{created['widgetId']}"
    assert created["name"] == "w1"
    assert created["labels"] == {"rack": "A1"}
    assert_no_internal_headers(response)
    assert edge.get(response.headers["location"]).json() == created


def test_delete_is_200_with_an_empty_body_then_404(
    edge: httpx.Client, widgets: WidgetStore
) -> None:
    widget = widgets.new_widget("doomed")

    response = edge.delete(f"{WIDGETS}/{widget.widget_id}")

    assert response.status_code == 200
    assert response.content == b""
    assert "content-type" not in response.headers
    assert_no_internal_headers(response)
    assert_problem(edge.get(f"{WIDGETS}/{widget.widget_id}"), 404)
    assert_problem(edge.delete(f"{WIDGETS}/{widget.widget_id}"), 404)  # CONF 7.3.12


@pytest.mark.parametrize(
    ("content_type", "payload"),
    [
        ("application/json", b'{"name": "w",'),
        ("application/json", b"not json at all"),
        ("application/json", b'{"name": 5}'),
        ("application/json", b'{"color": "BLUE"}'),
        ("application/json", b"[1, 2]"),
        ("application/json", b'{"name": "\xff"}'),
        ("application/json", b'{"name": "\\ud800"}'),
    ],
)
def test_malformed_json_bodies_are_400_problem_details(
    edge: httpx.Client, widgets: WidgetStore, content_type: str, payload: bytes
) -> None:
    response = edge.post(WIDGETS, content=payload, headers={"content-type": content_type})

    assert_problem(response, 400)
    assert widgets.widgets == {}, "a malformed body must never create anything"


@pytest.mark.parametrize(
    ("content_type", "payload"),
    [
        ("application/xml", b"<widget><name>w</name></widget>"),
        ("text/plain", b'{"name": "w"}'),
        ("application/x-www-form-urlencoded", b"name=w"),
        ("", b'{"name": "w"}'),
    ],
)
def test_bodies_that_are_not_json_are_400_problem_details(
    edge: httpx.Client, widgets: WidgetStore, content_type: str, payload: bytes
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = edge.post(WIDGETS, content=payload, headers=headers)

    assert_problem(response, 400)
    assert response.headers["accept-post"] == "application/json"
    assert widgets.widgets == {}, "a body of another type must never create anything"


def test_the_core_refusing_a_body_is_400_with_its_message(
    edge: httpx.Client, widgets: WidgetStore
) -> None:
    problem = assert_problem(edge.post(WIDGETS, json={"labels": {}}), 400)

    assert problem["detail"] == 'widget "name" is required'


JSON = {"content-type": "application/json"}


def test_a_body_over_the_limit_is_413(edge: httpx.Client, widgets: WidgetStore) -> None:
    payload = b'{"name": "' + b"x" * MAX_REQUEST_BODY + b'"}'

    problem = assert_problem(edge.post(WIDGETS, content=payload, headers=JSON), 413)

    assert str(MAX_REQUEST_BODY) in problem["detail"]
    assert widgets.widgets == {}


def test_a_chunked_body_over_the_limit_is_413(edge: httpx.Client, widgets: WidgetStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(2 * MAX_REQUEST_BODY // 65536):
            yield b"x" * 65536
        yield b'"}'

    # A generator body has no length: httpx sends it chunked.
    assert_problem(edge.post(WIDGETS, content=chunks(), headers=JSON), 413)
    assert widgets.widgets == {}


def test_a_body_just_under_the_limit_is_accepted(edge: httpx.Client, widgets: WidgetStore) -> None:
    payload = b'{"name": "' + b"x" * (MAX_REQUEST_BODY - 100) + b'"}'

    assert edge.post(WIDGETS, content=payload, headers=JSON).status_code == 201, "refused below"


@pytest.mark.parametrize("content_type", ["application/merge-patch+json", "application/json"])
def test_patch_takes_a_merge_patch(
    edge: httpx.Client, widgets: WidgetStore, content_type: str
) -> None:
    widget = widgets.new_widget("old")

    response = edge.patch(
        f"{WIDGETS}/{widget.widget_id}",
        content=b'{"name": "new"}',
        headers={"content-type": content_type},
    )

    assert response.status_code == 200, response.text
    assert response.json()["name"] == "new"


def test_put_with_the_whole_request_as_body(edge: httpx.Client, widgets: WidgetStore) -> None:
    assert edge.put(SETTINGS, json={"retentionDays": 7}).json() == {"retentionDays": 7}
    assert_problem(edge.put(SETTINGS, json={"retentionDays": 0}), 400)


def test_query_parameters_reach_the_request_by_proto_field_name(
    edge: httpx.Client, widgets: WidgetStore
) -> None:
    response = edge.get(
        WIDGETS,
        params=[
            ("filter", "(eq,name,'a b')"),
            ("page_size", "3"),
            ("color", "RED"),
            ("names", "a"),
            ("names", "b"),
        ],
    )

    assert response.status_code == 200
    assert response.json() == []
    request: Any = widgets.last_request()
    assert request.filter == "(eq,name,'a b')"
    assert request.page_size == 3
    assert list(request.names) == ["a", "b"]


@pytest.mark.parametrize("query", ["page_size=abc", "color=BLUE"])
def test_bad_values_of_known_query_parameters_are_400(
    edge: httpx.Client, widgets: WidgetStore, query: str
) -> None:
    assert_problem(edge.get(f"{WIDGETS}?{query}"), 400)


def test_unknown_query_parameters_are_ignored(edge: httpx.Client, widgets: WidgetStore) -> None:
    response = edge.get(f"{WIDGETS}?typo=1&page_size=2&widget_id=forged")

    assert response.status_code == 200, response.text
    request: Any = widgets.last_request()
    assert request.page_size == 2


def test_a_path_bound_to_a_literal_serves_both_majors(
    edge: httpx.Client, widgets: WidgetStore
) -> None:
    widget = widgets.new_widget("both")

    for major in ("v1", "v2"):
        assert edge.get(f"/o2ims-edgeTest/{major}/widgets/{widget.widget_id}").status_code == 200
        assert widgets.last_request().api_version == major
    assert_problem(edge.get(f"/o2ims-edgeTest/v3/widgets/{widget.widget_id}"), 404)


def test_a_crash_in_the_core_is_500_without_internal_text(
    edge: httpx.Client, widgets: WidgetStore
) -> None:
    response = edge.post(WIDGETS, json={"name": CRASHING_NAME})

    problem = assert_problem(response, 500)
    assert problem["detail"] == "the gateway failed to process the request"
    assert "127.0.0.1" not in response.text
    assert "Exception" not in response.text


def test_an_error_is_never_promoted_to_201(edge: httpx.Client, widgets: WidgetStore) -> None:
    # The core sends x-o2ims-http-status only with a success; an error after it must win.
    assert_problem(edge.post(WIDGETS, json={"name": "w", "widgetId": "chosen"}), 400)


@pytest.mark.parametrize(
    ("query", "all_fields"),
    [
        ("all_fields", True),
        ("all_fields=", True),
        ("filter=x&all_fields&names=a", True),
        ("all_fields=true", True),
        ("allFields=true", True),
        ("all_fields=false", False),
        ("", False),
    ],
)
def test_a_bare_boolean_flag_means_true(
    edge: httpx.Client, widgets: WidgetStore, query: str, all_fields: bool
) -> None:
    # O2ims: GET .../resourceTypes?all_fields. The transcoder alone ignores a bare key.
    assert edge.get(f"{WIDGETS}?{query}" if query else WIDGETS).status_code == 200
    assert widgets.last_request().all_fields is all_fields


@pytest.mark.parametrize(
    ("length", "body", "status", "detail"),
    [
        # Leading zeros are a valid Content-Length (RFC 9110: 1*DIGIT), and one longer than
        # 19 digits must not pass as "no number" past the shaper's checks.
        (b"0" * 20, b"", 400, "needs a JSON body"),
        (b"0" * 20 + b"4", b"null", 400, "not null"),
        (b"0" * 22 + b"1048577", b"", 413, "larger than 1048576 bytes"),
    ],
)
def test_a_content_length_with_leading_zeros_gets_every_body_check(
    *,
    edge_envoy: RunningEnvoy,
    pki: DevPki,
    widgets: WidgetStore,
    length: bytes,
    body: bytes,
    status: int,
    detail: str,
) -> None:
    head = (
        f"PUT {SETTINGS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n".encode()
        + b"Content-Length: "
        + length
    )
    answered, headers, raw = raw_https_request(edge_envoy, pki, head, body)

    assert (answered, headers["content-type"]) == (status, "application/problem+json")
    assert detail in json.loads(raw)["detail"]
