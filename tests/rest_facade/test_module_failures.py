"""The Envoy HTTP filters fail closed: the branches the real Envoy never reaches.

When an allocation fails, or an Envoy callback returns false (a header it does not give, a
header change it does not take, a route list it does not hand over), envoy/modules/shaper.c and
request_context.c answer 503 through send_response rather than pass the request on unchecked or
the response on unshaped. No test against the real Envoy can get there, so these drive the
filters' own code through tests/rest_facade/module_harness.c: it includes the filter's .c file,
stubs every Envoy callback with in-memory headers, bodies and metadata, and fails the callback
or allocation a scenario names. It is built here with the modules' CFLAGS, and with
AddressSanitizer (a failure branch that leaks, or touches freed memory, fails the test too).
A control scenario of each filter shows the harness drives the real path.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netweave.headers import IGNORED_QUERY_HEADER
from rest_facade import envoy_config, envoy_modules

HARNESS = Path(__file__).with_name("module_harness.c")
# The compiler flags the modules are built with, -fsanitize added.
SANITIZE = ("-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined")

# What both filters answer when they fail closed.
UNAVAILABLE = 503
OUT_OF_MEMORY = "the gateway is out of memory: try again later"

# Hook statuses (envoy/modules/http_filter.h).
HEADERS_CONTINUE, HEADERS_STOP_ITERATION = 0, 1
BODY_CONTINUE, BODY_STOP_NO_BUFFER = 0, 3
TRAILERS_CONTINUE, TRAILERS_STOP_ITERATION = 0, 1

Run = Callable[[str], dict[str, Any]]


def _shaper_config(*, strict: bool) -> list[str]:
    """The shaper's configuration lines, as envoy_config renders them for the edge."""
    lines = envoy_config.shaper_settings(strict_query=strict).splitlines()
    return [f"config {line}" for line in lines if line]


def _request_context_config() -> list[str]:
    lines = envoy_config.request_context_settings().splitlines()
    return [f"config {line}" for line in lines if line]


def _build(filter_define: str, output: Path) -> Path:
    command = [
        *envoy_modules.c_compiler(),
        *envoy_modules.CFLAGS,
        *SANITIZE,
        f"-I{envoy_modules.SOURCE_DIR}",
        f"-D{filter_define}",
        "-o",
        str(output),
        str(HARNESS),
    ]
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    assert built.returncode == 0, f"{shlex.join(command)}\n{built.stderr}"
    return output


def _harness(binary: Path, script: str) -> subprocess.CompletedProcess[str]:
    """The harness run on `script`, leaks and bad accesses reported by the sanitizer."""
    return subprocess.run(
        [str(binary)],
        input=script,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"},
    )


def _runner(binary: Path) -> Run:
    def run(script: str) -> dict[str, Any]:
        done = _harness(binary, script)
        # Non-zero: a script error, or the sanitizer found a leak or a bad access.
        assert done.returncode == 0, f"harness failed ({done.returncode}):\n{done.stderr}"
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        result["hooks"] = [(hook, int(value)) for hook, value in result["hooks"]]
        return result

    return run


@pytest.fixture(scope="module")
def shaper(tmp_path_factory: pytest.TempPathFactory) -> Run:
    directory = tmp_path_factory.mktemp("shaper_harness")
    return _runner(_build("HARNESS_SHAPER", directory / "shaper_harness"))


@pytest.fixture(scope="module")
def request_context_harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("request_context_harness")
    return _build("HARNESS_REQUEST_CONTEXT", directory / "request_context_harness")


@pytest.fixture(scope="module")
def request_context(request_context_harness: Path) -> Run:
    return _runner(request_context_harness)


def _script(*lines: str) -> str:
    return "".join(f"{line}\n" for line in lines)


def _answered_unavailable(
    result: dict[str, Any], details: str, stopped: tuple[str, int] | None = None
) -> None:
    """Exactly one reply, the 503 of a filter that failed closed; with `stopped`, the hook
    status that stopped the message (the last hook called)."""
    assert [(reply["status"], reply["body"], reply["details"]) for reply in result["replies"]] == [
        (UNAVAILABLE, OUT_OF_MEMORY, details)
    ]
    if stopped is not None:
        assert result["hooks"][-1] == stopped, result["hooks"]


def _each_allocation_failing(
    run: Callable[[int], dict[str, Any]],
    stopped: tuple[str, int],
    control: Callable[[dict[str, Any]], None],
    what: str,
) -> None:
    """`run(nth)` with its nth allocation failing, for nth = 1, 2, ... until one makes no
    allocation fail: each must be the shaper's one 503 with the last hook `stopped`; past
    the last allocation, `control(result)` checks what nothing failing gives (so every
    allocation was covered)."""
    failed = []
    for nth in range(1, 50):
        result = run(nth)
        if result["failed_allocations"] == 0:
            control(result)
            break
        _answered_unavailable(result, SHAPER_DETAILS, stopped)
        failed.append(nth)
    else:
        pytest.fail(f"{what} allocated more than 49 times")
    assert failed, "no allocation was failed"


# --- shaper: request side ----------------------------------------------------------------------

SHAPER_DETAILS = "netweave_shaper"
POOLS = "/o2ims-infrastructureInventory/v1/resourcePools"
# More accepted query names than the shaper's inline list holds (32): the list is allocated.
MANY_NAMES = " ".join(f"name{i}" for i in range(40))


def _shaper_request(*lines: str, strict: bool = False, path: str = POOLS) -> str:
    """A GET of `path`; the `fail alloc` among `lines` is armed once the filter exists."""
    armed = [line for line in lines if line.startswith("fail alloc")]
    return _script(
        *_shaper_config(strict=strict),
        "header request :method GET",
        f"header request :path {path}",
        *(line for line in lines if line not in armed),
        "new",
        *armed,
        "call request_headers 1",
    )


def test_shaper_control_request_and_list_response_pass_shaped(shaper: Run) -> None:
    """Nothing fails: the bare flag is completed, the unknown parameter dropped and counted, the
    request continues; the list response is unwrapped to its bare array."""
    result = shaper(
        _script(
            *_shaper_config(strict=False),
            "header request :method GET",
            f"header request :path {POOLS}?all_fields&bogus=1",
            "route_list query all_fields filter",
            "route_list flags all_fields",
            "route_string collection resourcePools",
            "new",
            "call request_headers 1",
            "header response :status 200",
            "header response content-type application/json",
            "header response grpc-status 0",
            'body response {"resourcePools":[{"id":"a"}],"nextPageToken":""}',
            "call response_headers 0",
            "call response_body 1",
        )
    )
    assert result["replies"] == []
    assert result["hooks"] == [
        ("request_headers", HEADERS_CONTINUE),
        ("response_headers", HEADERS_STOP_ITERATION),
        ("response_body", BODY_CONTINUE),
    ]
    request = dict(result["request_headers"])
    assert request[":path"] == f"{POOLS}?all_fields=true"
    assert request[IGNORED_QUERY_HEADER] == "1"
    assert result["response_body"] == '[{"id":"a"}]'
    assert dict(result["response_headers"])["content-length"] == str(len('[{"id":"a"}]'))
    assert "grpc-status" not in dict(result["response_headers"])


@pytest.mark.parametrize(
    "failure",
    [
        # calloc of a list longer than the inline 32 items (route_strings)
        ["route_list query " + MANY_NAMES, "fail alloc 1"],
        # Envoy counts the list but does not hand over an item
        ["route_list query filter all_fields", "fail list_string query"],
    ],
    ids=["list-allocation", "list-item"],
)
def test_shaper_strict_query_list_unreadable_is_503(shaper: Run, failure: list[str]) -> None:
    """Strict mode must not read an unreadable accepted-names list as "no such list" (every
    parameter would pass unchecked)."""
    result = shaper(_shaper_request(*failure, strict=True, path=f"{POOLS}?bogus=1"))
    assert result["failed_allocations"] == (1 if "fail alloc 1" in failure else 0)
    _answered_unavailable(result, SHAPER_DETAILS, ("request_headers", HEADERS_STOP_ITERATION))
    assert dict(result["request_headers"])[":path"] == f"{POOLS}?bogus=1"


def test_shaper_strict_query_control_refuses_unknown_parameter(shaper: Run) -> None:
    """The same request with the list readable: the unknown parameter is refused with 400 (so
    the 503 above is the failure's, not the request's)."""
    result = shaper(
        _shaper_request("route_list query " + MANY_NAMES, strict=True, path=f"{POOLS}?bogus=1")
    )
    assert [reply["status"] for reply in result["replies"]] == [400]
    assert "bogus" in result["replies"][0]["body"]


def test_shaper_missing_path_is_503(shaper: Run) -> None:
    result = shaper(_shaper_request("fail get_header :path"))
    _answered_unavailable(result, SHAPER_DETAILS, ("request_headers", HEADERS_STOP_ITERATION))


def test_shaper_flag_rewrite_not_taken_is_503(shaper: Run) -> None:
    """`?all_fields` must not reach the transcoder bare (read as false)."""
    result = shaper(
        _shaper_request(
            "route_list flags all_fields",
            "fail set_header :path",
            path=f"{POOLS}?all_fields",
        )
    )
    _answered_unavailable(result, SHAPER_DETAILS, ("request_headers", HEADERS_STOP_ITERATION))
    assert ["failed set request :path", f"{POOLS}?all_fields=true"] in result["header_changes"]


def test_shaper_dropped_parameter_rewrite_not_taken_is_503(shaper: Run) -> None:
    """Lenient mode: the dropped parameter must not reach the transcoder."""
    result = shaper(
        _shaper_request(
            "route_list query filter",
            "fail set_header :path",
            path=f"{POOLS}?bogus=1",
        )
    )
    _answered_unavailable(result, SHAPER_DETAILS, ("request_headers", HEADERS_STOP_ITERATION))
    assert dict(result["request_headers"])[":path"] == f"{POOLS}?bogus=1"


# --- shaper: response side ---------------------------------------------------------------------

LIST_BODY = '{"resourcePools":[{"id":"a"}],"nextPageToken":""}'


def _shaper_list_response(*lines: str) -> str:
    return _script(
        *_shaper_config(strict=False),
        "header request :method GET",
        f"header request :path {POOLS}",
        "route_string collection resourcePools",
        "new",
        "call request_headers 1",
        "header response :status 200",
        "header response content-type application/json",
        "header response grpc-status 0",
        "header response x-o2ims-internal secret",
        f"body response {LIST_BODY}",
        *lines,
    )


def test_shaper_response_headers_not_given_is_503(shaper: Run) -> None:
    """Without the headers it cannot tell what to strip or unwrap: never passed on unshaped."""
    result = shaper(_shaper_list_response("fail get_headers response", "call response_headers 0"))
    _answered_unavailable(result, SHAPER_DETAILS, ("response_headers", HEADERS_STOP_ITERATION))


def _unwrap_with_failed_allocation(shaper: Run, nth: int) -> dict[str, Any]:
    return shaper(
        _shaper_list_response(
            "call response_headers 0", f"fail alloc {nth}", "call response_body 1"
        )
    )


def test_shaper_list_unwrap_allocation_failure_is_503(shaper: Run) -> None:
    """The first allocation of the body's end (the copy of its chunks) fails: 503, and the
    hook stops the original body (BODY_STOP_NO_BUFFER) instead of continuing with it."""
    result = _unwrap_with_failed_allocation(shaper, 1)
    assert result["failed_allocations"] == 1
    _answered_unavailable(result, SHAPER_DETAILS, ("response_body", BODY_STOP_NO_BUFFER))
    assert result["response_body"] == LIST_BODY  # untouched, and not passed on


def test_shaper_list_unwrap_every_allocation_failure_is_503(shaper: Run) -> None:
    """Each allocation of the body's end failing in turn: always the 503, never the wrapped
    list; past the last one, the bare array (so every allocation was covered)."""

    def unwrapped(result: dict[str, Any]) -> None:
        assert result["replies"] == []
        assert result["hooks"][-1] == ("response_body", BODY_CONTINUE)
        assert result["response_body"] == '[{"id":"a"}]'

    _each_allocation_failing(
        lambda nth: _unwrap_with_failed_allocation(shaper, nth),
        ("response_body", BODY_STOP_NO_BUFFER),
        unwrapped,
        "the body's end",
    )


def _shaper_response(*lines: str) -> str:
    """A GET of the pools and a 200 whose headers (and body, trailers) `lines` add; the hooks
    to call are among `lines`."""
    return _script(
        *_shaper_config(strict=False),
        "header request :method GET",
        f"header request :path {POOLS}",
        "route_string collection resourcePools",
        "new",
        "call request_headers 1",
        "header response :status 200",
        "header response content-type application/json",
        *lines,
    )


NEXT_LINK = f'<{POOLS}?nextpage_opaque_marker=abc>; rel="next"'


def test_shaper_paged_list_control_adds_the_link(shaper: Run) -> None:
    """A next-page marker: the Link to the next page is added, the marker header stripped."""
    result = shaper(
        _shaper_response("header response x-o2ims-next-page-token abc", "call response_headers 0")
    )
    assert result["replies"] == []
    assert result["hooks"][-1] == ("response_headers", HEADERS_STOP_ITERATION)  # the body's held
    response = dict(result["response_headers"])
    assert response["link"] == NEXT_LINK
    assert "x-o2ims-next-page-token" not in response


def test_shaper_paged_list_link_not_taken_is_503(shaper: Run) -> None:
    """Without its Link the client would take this page for the last one."""
    result = shaper(
        _shaper_response(
            "header response x-o2ims-next-page-token abc",
            "fail set_header link",
            "call response_headers 0",
        )
    )
    _answered_unavailable(result, SHAPER_DETAILS, ("response_headers", HEADERS_STOP_ITERATION))
    assert ["failed add response link", NEXT_LINK] in result["header_changes"]
    assert "link" not in dict(result["response_headers"])


def test_shaper_paged_list_path_not_recorded_is_503(shaper: Run) -> None:
    """A REST response (marked by another filter) whose request path was never recorded: the
    Link would point nowhere."""
    result = shaper(
        _script(
            *_shaper_config(strict=False),
            "metadata rest 1",
            "new",
            "header response :status 200",
            "header response content-type application/json",
            "header response x-o2ims-next-page-token abc",
            "call response_headers 0",
        )
    )
    _answered_unavailable(result, SHAPER_DETAILS, ("response_headers", HEADERS_STOP_ITERATION))
    assert not any(change[0].endswith(" link") for change in result["header_changes"])


@pytest.mark.parametrize("override", ["x-o2ims-http-status", "x-http-status"])
def test_shaper_status_override_control_promotes(shaper: Run, override: str) -> None:
    result = shaper(_shaper_response(f"header response {override} 201", "call response_headers 0"))
    assert result["replies"] == []
    response = dict(result["response_headers"])
    assert response[":status"] == "201"
    assert override not in response


@pytest.mark.parametrize("override", ["x-o2ims-http-status", "x-http-status"])
def test_shaper_status_override_not_taken_is_503(shaper: Run, override: str) -> None:
    """A 201 Created must not pass as a 200."""
    result = shaper(
        _shaper_response(
            f"header response {override} 201",
            "fail set_header :status",
            "call response_headers 0",
        )
    )
    _answered_unavailable(result, SHAPER_DETAILS, ("response_headers", HEADERS_STOP_ITERATION))
    assert ["failed set response :status", "201"] in result["header_changes"]


@pytest.mark.parametrize(
    "header", ["x-o2ims-internal", "grpc-status", "grpc-message", "x-http-status"]
)
def test_shaper_internal_header_removal_not_taken_is_503(shaper: Run, header: str) -> None:
    """An internal (or gRPC) header the client must never see, that Envoy did not remove."""
    result = shaper(
        _shaper_response(
            f"header response {header} 0", f"fail set_header {header}", "call response_headers 0"
        )
    )
    _answered_unavailable(result, SHAPER_DETAILS, ("response_headers", HEADERS_STOP_ITERATION))
    assert [f"failed remove response {header}", ""] in result["header_changes"]


def test_shaper_other_grpc_header_is_not_removed(shaper: Run) -> None:
    """Control of the list above: a grpc-* header that is not internal is left alone (its
    removal failing would not matter, it is never tried)."""
    result = shaper(
        _shaper_response(
            "header response grpc-other 1", "fail set_header grpc-other", "call response_headers 0"
        )
    )
    assert result["replies"] == []
    assert dict(result["response_headers"])["grpc-other"] == "1"


@pytest.mark.parametrize("failure", ["drain_body", "append_body"])
def test_shaper_list_body_not_replaced_is_503(shaper: Run, failure: str) -> None:
    """Envoy not taking the bare array (the drain of the wrapped list, or the append of the
    new body): 503, and the hook stops what is left of the original body."""
    result = shaper(
        _shaper_list_response("call response_headers 0", f"fail {failure}", "call response_body 1")
    )
    _answered_unavailable(result, SHAPER_DETAILS, ("response_body", BODY_STOP_NO_BUFFER))
    # The drain failed: the wrapped list is still there (stopped); the append failed: drained.
    assert result["response_body"] == (LIST_BODY if failure == "drain_body" else "")
    assert "content-length" not in dict(result["response_headers"])


def test_shaper_list_body_length_not_taken_is_503(shaper: Run) -> None:
    """The new body without its content-length would go with the old one's."""
    result = shaper(
        _shaper_list_response(
            "call response_headers 0", "fail set_header content-length", "call response_body 1"
        )
    )
    _answered_unavailable(result, SHAPER_DETAILS, ("response_body", BODY_STOP_NO_BUFFER))
    assert ["failed set response content-length", "12"] in result["header_changes"]


# --- shaper: error responses ----------------------------------------------------------------------

# The transcoder's body of a gRPC error (convert_grpc_status): a google.rpc.Status as JSON.
NOT_FOUND_STATUS = (
    '{"code":5,"message":"no resource pool \'p-9\'","details":[{"@type":'
    '"type.googleapis.com/google.rpc.ErrorInfo","reason":"NOT_FOUND"}]}'
)
UNAUTHENTICATED_STATUS = (
    '{"code":16,"message":"no credentials","details":[{"@type":'
    '"type.googleapis.com/google.rpc.ErrorInfo","reason":"UNAUTHENTICATED"}]}'
)


def _shaper_error(status: int, body: str, *lines: str) -> str:
    """A GET of a pool answered with the transcoder's JSON error; `lines` come after the
    response headers' hook, before the body's."""
    return _script(
        *_shaper_config(strict=False),
        "header request :method GET",
        f"header request :path {POOLS}/p-9",
        "new",
        "call request_headers 1",
        f"header response :status {status}",
        "header response content-type application/json",
        f"body response {body}",
        "call response_headers 0",
        *lines,
        "call response_body 1",
    )


def test_shaper_error_control_becomes_problem_details(shaper: Run) -> None:
    """The google.rpc.Status becomes a ProblemDetails labelled application/problem+json."""
    result = shaper(_shaper_error(404, NOT_FOUND_STATUS))
    assert result["replies"] == []
    assert result["hooks"][-2:] == [
        ("response_headers", HEADERS_STOP_ITERATION),
        ("response_body", BODY_CONTINUE),
    ]
    response = dict(result["response_headers"])
    assert response["content-type"] == "application/problem+json"
    problem = json.loads(result["response_body"])
    assert problem["status"] == 404
    assert problem["detail"] == "no resource pool 'p-9'"
    assert response["content-length"] == str(len(result["response_body"]))


def test_shaper_error_content_type_not_taken_is_503(shaper: Run) -> None:
    """A google.rpc.Status must never go out labelled as the ProblemDetails it is not yet, nor
    a ProblemDetails labelled application/json."""
    result = shaper(
        _script(
            *_shaper_config(strict=False),
            "header request :method GET",
            f"header request :path {POOLS}/p-9",
            "new",
            "call request_headers 1",
            "header response :status 404",
            "header response content-type application/json",
            f"body response {NOT_FOUND_STATUS}",
            "fail set_header content-type",
            "call response_headers 0",
        )
    )
    _answered_unavailable(result, SHAPER_DETAILS, ("response_headers", HEADERS_STOP_ITERATION))
    assert ["failed set response content-type", "application/problem+json"] in result[
        "header_changes"
    ]


def test_shaper_unauthenticated_control_names_the_scheme(shaper: Run) -> None:
    result = shaper(_shaper_error(401, UNAUTHENTICATED_STATUS))
    assert result["replies"] == []
    response = dict(result["response_headers"])
    assert response["www-authenticate"]
    assert json.loads(result["response_body"])["status"] == 401


def test_shaper_unauthenticated_challenge_not_taken_is_503(shaper: Run) -> None:
    """A 401 without the scheme to use (RFC 7235) is not passed on: the error body's end
    fails closed, with the headers still held."""
    result = shaper(_shaper_error(401, UNAUTHENTICATED_STATUS, "fail set_header www-authenticate"))
    _answered_unavailable(result, SHAPER_DETAILS, ("response_body", BODY_STOP_NO_BUFFER))
    assert result["response_body"] == UNAUTHENTICATED_STATUS  # stopped, not passed on


def test_shaper_error_body_every_allocation_failure_is_503(shaper: Run) -> None:
    """Each allocation of the error body's end failing in turn: always the 503, never the
    google.rpc.Status; past the last one, the ProblemDetails."""

    def problem(result: dict[str, Any]) -> None:
        assert result["replies"] == []
        assert json.loads(result["response_body"])["status"] == 404

    _each_allocation_failing(
        lambda nth: shaper(_shaper_error(404, NOT_FOUND_STATUS, f"fail alloc {nth}")),
        ("response_body", BODY_STOP_NO_BUFFER),
        problem,
        "the error body's end",
    )


# --- shaper: every allocation of a request's headers ----------------------------------------------


def _shaper_request_with(method: str, path: str, headers: list[str], nth: int | None) -> str:
    """A `method` of `path` with `headers` (a body follows unless it is a GET); with `nth`,
    that allocation fails once the filter exists."""
    return _script(
        *_shaper_config(strict=False),
        f"header request :method {method}",
        f"header request :path {path}",
        *(f"header request {header}" for header in headers),
        f"route_list methods {method}",
        "route_list query filter",
        "new",
        *([f"fail alloc {nth}"] if nth is not None else []),
        f"call request_headers {1 if method == 'GET' else 0}",
    )


REQUESTS = {
    # percent_decode of a path with escapes (and the query's names)
    "escaped-path": ("GET", f"{POOLS}/caf%C3%A9?filter=(eq,name,x)", []),
    # refuse_non_json_body: the media type, lowered
    "json-post": (
        "POST",
        "/o2ims-infrastructureInventory/v1/subscriptions",
        ["content-type Application/JSON; charset=utf-8", "content-length 2"],
    ),
    # refuse_non_json_body: the refusal's detail naming the type
    "xml-post": (
        "POST",
        "/o2ims-infrastructureInventory/v1/subscriptions",
        ["content-type application/xml", "content-length 7"],
    ),
}


@pytest.mark.parametrize("request_name", list(REQUESTS))
def test_shaper_request_every_allocation_failure_is_503(shaper: Run, request_name: str) -> None:
    """Each allocation the request's headers make failing in turn: the request is refused
    with the 503 and goes no further (it is never passed on unchecked, nor refused with a
    detail cut short); past the last one, what the request gets without failures."""
    method, path, headers = REQUESTS[request_name]
    control = shaper(_shaper_request_with(method, path, headers, None))
    assert control["allocations"] > 0, "the request allocates nothing: nothing to fail"

    def as_without_failures(result: dict[str, Any]) -> None:
        assert (result["replies"], result["hooks"]) == (control["replies"], control["hooks"])

    # (one hook is called: the last is the only one)
    _each_allocation_failing(
        lambda nth: shaper(_shaper_request_with(method, path, headers, nth)),
        ("request_headers", HEADERS_STOP_ITERATION),
        as_without_failures,
        "the request's headers",
    )


def test_shaper_request_controls(shaper: Run) -> None:
    """What the three requests above get when nothing fails."""
    results = {
        name: shaper(_shaper_request_with(method, path, headers, None))
        for name, (method, path, headers) in REQUESTS.items()
    }
    assert results["escaped-path"]["replies"] == []
    assert results["escaped-path"]["hooks"] == [("request_headers", HEADERS_CONTINUE)]
    assert results["json-post"]["replies"] == []
    [refusal] = results["xml-post"]["replies"]
    assert (refusal["status"], refusal["body"]) == (
        400,
        "the request body must be JSON (Content-Type: application/json), not 'application/xml'",
    )


# --- shaper: responses with more headers than the shaper reads inline (48) ---------------------

MANY_HEADERS = [f"header response x-extra-{i} {i}" for i in range(55)]


def _shaper_many_headers(*lines: str) -> str:
    return _shaper_response(
        *MANY_HEADERS, "header response x-o2ims-internal secret", *lines, "call response_headers 0"
    )


def test_shaper_many_headers_control_strips_the_internal_one(shaper: Run) -> None:
    result = shaper(_shaper_many_headers())
    assert result["replies"] == []
    response = dict(result["response_headers"])
    assert "x-o2ims-internal" not in response
    assert [response[f"x-extra-{i}"] for i in (0, 54)] == ["0", "54"]
    assert result["allocations"] > 0  # the header array itself, at least


def test_shaper_many_headers_every_allocation_failure_is_503(shaper: Run) -> None:
    """The header array (allocated past 48 headers) and every allocation after it failing in
    turn: the 503, never the internal header passed on; past the last one, the control."""

    def stripped(result: dict[str, Any]) -> None:
        assert result["replies"] == []
        assert "x-o2ims-internal" not in dict(result["response_headers"])

    _each_allocation_failing(
        lambda nth: shaper(_shaper_many_headers(f"fail alloc {nth}")),
        ("response_headers", HEADERS_STOP_ITERATION),
        stripped,
        "the response headers",
    )


def test_shaper_many_headers_not_given_is_503(shaper: Run) -> None:
    """Envoy counting the headers but not giving them: the 503, and the allocated array freed
    (AddressSanitizer's leak check fails the harness otherwise)."""
    result = shaper(_shaper_many_headers("fail get_headers response"))
    _answered_unavailable(result, SHAPER_DETAILS, ("response_headers", HEADERS_STOP_ITERATION))


# --- shaper: the PUT/PATCH null check ------------------------------------------------------------


def _shaper_update(method: str, body: str, *lines: str) -> str:
    """A short JSON PUT/PATCH of a route that serves it: held for the null check; `lines` come
    between the request headers and the request body's end."""
    return _script(
        *_shaper_config(strict=False),
        f"header request :method {method}",
        f"header request :path {POOLS}/a",
        "header request content-type application/json",
        f"header request content-length {len(body)}",
        f"route_list methods {method}",
        f"body request {body}",
        "new",
        "call request_headers 0",
        *lines,
        "call request_body 1",
    )


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize(
    ("body", "status"), [('{"a":1}', None), ("null", 400)], ids=["object", "null"]
)
def test_shaper_null_check_control(shaper: Run, method: str, body: str, status: int | None) -> None:
    result = shaper(_shaper_update(method, body))
    assert result["hooks"][0] == ("request_headers", HEADERS_STOP_ITERATION)  # held
    if status is None:
        assert result["replies"] == []
        assert result["hooks"][-1] == ("request_body", BODY_CONTINUE)
    else:
        assert [reply["status"] for reply in result["replies"]] == [status]
        assert result["hooks"][-1] == ("request_body", BODY_STOP_NO_BUFFER)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_shaper_null_check_body_copy_allocation_failure_is_503(shaper: Run, method: str) -> None:
    """Each allocation of the body's copy failing in turn: a body that could not be looked at
    is never passed on (a `null` would delete the resource); past the last one, the control."""

    def refused_as_null(result: dict[str, Any]) -> None:
        assert [reply["status"] for reply in result["replies"]] == [400]

    _each_allocation_failing(
        lambda nth: shaper(_shaper_update(method, "null", f"fail alloc {nth}")),
        ("request_body", BODY_STOP_NO_BUFFER),
        refused_as_null,
        "the null check",
    )


# --- shaper: response trailers -------------------------------------------------------------------


def _shaper_trailers(*lines: str) -> str:
    """A list response whose trailers carry the core's gRPC status (and a trailer of the
    client's), its body passed shaped, then its trailers."""
    return _shaper_list_response(
        "call response_headers 0",
        "call response_body 1",
        "header trailers grpc-status 0",
        "header trailers grpc-message ok",
        "header trailers x-o2ims-internal secret",
        "header trailers grpc-other 1",
        "header trailers x-checksum abc",
        *lines,
        "call response_trailers",
    )


def test_shaper_trailers_control_strip_grpc_status(shaper: Run) -> None:
    result = shaper(_shaper_trailers())
    assert result["replies"] == []
    assert result["hooks"][-1] == ("response_trailers", TRAILERS_CONTINUE)
    assert result["response_trailers"] == [["grpc-other", "1"], ["x-checksum", "abc"]]


def test_shaper_trailers_removal_not_taken_passes_them_on(shaper: Run) -> None:
    """The headers have gone: nothing to fail closed to. The trailers go on as they are left
    (what was removed before the failure stays removed, nothing after it is tried), no reply."""
    result = shaper(_shaper_trailers("fail set_header grpc-message"))
    assert result["replies"] == []
    assert result["hooks"][-1] == ("response_trailers", TRAILERS_CONTINUE)
    assert result["response_trailers"] == [
        ["grpc-message", "ok"],
        ["x-o2ims-internal", "secret"],
        ["grpc-other", "1"],
        ["x-checksum", "abc"],
    ]
    trailer_changes = [c[0] for c in result["header_changes"] if " trailers " in c[0]]
    assert trailer_changes == ["remove trailers grpc-status", "failed remove trailers grpc-message"]


def test_shaper_trailers_names_allocation_failure_passes_them_on(shaper: Run) -> None:
    """Memory runs out copying the names to remove: the trailers go on untouched, no reply."""
    result = shaper(_shaper_trailers("fail alloc 1"))
    assert result["failed_allocations"] == 1
    assert result["replies"] == []
    assert result["hooks"][-1] == ("response_trailers", TRAILERS_CONTINUE)
    assert [name for name, _ in result["response_trailers"]][:2] == ["grpc-status", "grpc-message"]


def test_shaper_trailers_ending_a_list_body_allocation_failure_is_503(shaper: Run) -> None:
    """Trailers that end a held list body: the body could not be built, 503, trailers
    stopped."""
    result = shaper(
        _shaper_list_response(
            "call response_headers 0",
            "call response_body 0",
            "header trailers grpc-status 0",
            "fail alloc 1",
            "call response_trailers",
        )
    )
    assert result["failed_allocations"] == 1
    _answered_unavailable(result, SHAPER_DETAILS, ("response_trailers", TRAILERS_STOP_ITERATION))
    assert result["response_body"] == LIST_BODY


# --- request_context ---------------------------------------------------------------------------

CONTEXT_DETAILS = "netweave_request_context_failed"


def _context_request(*lines: str) -> str:
    return _script(
        *_request_context_config(),
        "header request :method GET",
        f"header request :path {POOLS}",
        "header request x-request-id envoy-generated-1",
        "header request x-netweave-client-request-id client-1",
        "route_string route /o2ims-infrastructureInventory/v1/resourcePools",
        *lines,
        "new",
        "call request_headers 1",
    )


def test_request_context_control_sets_the_correlation_id(request_context: Run) -> None:
    result = request_context(_context_request())
    assert result["replies"] == []
    assert result["hooks"] == [("request_headers", HEADERS_CONTINUE)]
    request = dict(result["request_headers"])
    assert request["x-correlation-id"] == "client-1"
    assert request["x-request-id"] == "client-1"
    assert "x-netweave-client-request-id" not in request
    assert dict(result["dynamic_metadata"])["correlation_id"] == "client-1"


def test_request_context_method_not_given_is_503(request_context: Run) -> None:
    """A CONNECT must not pass as a request without a method."""
    result = request_context(_context_request("fail get_header :method"))
    _answered_unavailable(result, CONTEXT_DETAILS, ("request_headers", HEADERS_STOP_ITERATION))
    # The refusal carries the correlation id, as every refusal of the guard does.
    assert result["replies"][0]["headers"] == [["x-correlation-id", "client-1"]]


@pytest.mark.parametrize(
    "header", ["x-correlation-id", "x-request-id", "x-netweave-client-request-id"]
)
def test_request_context_id_header_not_taken_is_503(request_context: Run, header: str) -> None:
    """A client's malformed id, or its copy of the request id, must not reach the core."""
    result = request_context(_context_request(f"fail set_header {header}"))
    _answered_unavailable(result, CONTEXT_DETAILS, ("request_headers", HEADERS_STOP_ITERATION))


# The names a client must not send (rest_facade/envoy_config.py STRIPPED_HEADERS).
STRIPPED = sorted(envoy_config.STRIPPED_HEADERS)


def test_request_context_drops_every_identity_header_a_client_sent(request_context: Run) -> None:
    result = request_context(
        _context_request(*(f"header request {name} forged" for name in STRIPPED))
    )
    assert result["replies"] == []
    assert result["hooks"] == [("request_headers", HEADERS_CONTINUE)]
    request = dict(result["request_headers"])
    assert not set(STRIPPED) & request.keys()
    assert request[":path"] == POOLS
    assert request["x-correlation-id"] == "client-1"


@pytest.mark.parametrize("header", STRIPPED)
def test_request_context_identity_header_not_dropped_is_503(
    request_context: Run, header: str
) -> None:
    """A forged identity header Envoy would not remove must not reach the core."""
    result = request_context(
        _context_request(f"header request {header} forged", f"fail set_header {header}")
    )
    _answered_unavailable(result, CONTEXT_DETAILS, ("request_headers", HEADERS_STOP_ITERATION))


def _context_response(status: str, *lines: str) -> str:
    """A request through the filter, then its response's headers (`lines` among them)."""
    return _context_request() + _script(
        f"header response :status {status}",
        *lines,
        "call response_headers 0",
    )


def test_request_context_sets_the_correlation_id_on_every_reply(request_context: Run) -> None:
    # One the core (or a later filter) set is replaced: the id is the edge's.
    result = request_context(_context_response("404", "header response x-correlation-id other"))
    assert result["hooks"][-1] == ("response_headers", HEADERS_CONTINUE)
    response = result["response_headers"]
    assert [value for name, value in response if name == "x-correlation-id"] == ["client-1"]
    assert "retry-after" not in dict(response)


@pytest.mark.parametrize(
    ("reset", "expected"),
    [
        ("7", "7"),
        ("120", "120"),
        ("0", "1"),
        ("000", "1"),
        ("1.5", "1"),
        ("-3", "1"),
        ("1234567890", "1"),
        ("", "1"),
        (None, "1"),
    ],
)
def test_request_context_retry_after_on_429(
    request_context: Run, reset: str | None, expected: str
) -> None:
    """x-ratelimit-reset if whole seconds of at least 1 (at most 9 digits), else 1."""
    lines = [] if reset is None else [f"header response x-ratelimit-reset {reset}"]
    result = request_context(_context_response("429", *lines))
    response = result["response_headers"]
    assert [value for name, value in response if name == "retry-after"] == [expected]
    assert dict(response)["x-correlation-id"] == "client-1"


def test_request_context_keeps_a_retry_after_already_there(request_context: Run) -> None:
    result = request_context(
        _context_response(
            "429", "header response retry-after 30", "header response x-ratelimit-reset 2"
        )
    )
    assert [value for name, value in result["response_headers"] if name == "retry-after"] == ["30"]


@pytest.mark.parametrize("status", ["200", "503", "4290"])
def test_request_context_retry_after_only_on_429(request_context: Run, status: str) -> None:
    result = request_context(_context_response(status, "header response x-ratelimit-reset 2"))
    assert "retry-after" not in dict(result["response_headers"])


def _refused_config(harness: Path, stripped: str) -> str:
    """The harness's stderr when the filter is configured with `stripped` as its stripped
    headers; fails if the filter takes the configuration."""
    lines = [
        line
        if not line.startswith("config stripped_headers=")
        else f"config stripped_headers={stripped}"
        for line in _request_context_config()
    ]
    done = _harness(harness, _script(*lines, "new"))
    assert done.returncode == 2, done.stdout
    return done.stderr


@pytest.mark.parametrize(
    "stripped",
    ["", "x-a,,x-b", "x-a,", ",x-a", "X-Netweave-Client-Cert", "x a", ",".join(["x-a"] * 17)],
)
def test_request_context_refuses_a_bad_stripped_list(
    request_context_harness: Path, stripped: str
) -> None:
    """Empty names, upper case (never matching Envoy's lower-case names), spaces, or more
    names than the filter holds: the configuration is refused, nothing is silently kept."""
    assert "refused its configuration" in _refused_config(request_context_harness, stripped)


def test_request_context_takes_the_rendered_stripped_list(request_context: Run) -> None:
    """The control of the test above: the rendered configuration is taken (and its list is
    the edge's STRIPPED_HEADERS, each dropped above)."""
    assert f"config stripped_headers={','.join(STRIPPED)}" in _request_context_config()
    assert request_context(_context_request())["replies"] == []
