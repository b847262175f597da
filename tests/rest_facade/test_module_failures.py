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
from rest_facade import envoy_config, envoy_modules, envoy_routes

HARNESS = Path(__file__).with_name("module_harness.c")
# The compiler flags the modules are built with, -fsanitize added.
SANITIZE = ("-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined")

# What both filters answer when they fail closed.
UNAVAILABLE = 503
OUT_OF_MEMORY = "the gateway is out of memory: try again later"

# Hook statuses (envoy/modules/http_filter.h).
HEADERS_CONTINUE, HEADERS_STOP_ITERATION = 0, 1
BODY_CONTINUE, BODY_STOP_NO_BUFFER = 0, 3

Run = Callable[[str], dict[str, Any]]


def _shaper_config(*, strict: bool) -> list[str]:
    """The shaper's configuration lines, with the values envoy_config.shaper_filter renders."""
    settings = {
        "max_request_body_bytes": str(envoy_config.MAX_REQUEST_BODY_BYTES),
        "strict_query": "true" if strict else "false",
        "rest_namespace": envoy_config.REST_METADATA_NAMESPACE,
        "route_namespace": envoy_routes.SHAPER_FILTER,
        "ignored_query_header": IGNORED_QUERY_HEADER,
        "unauthorized_challenge": f'Bearer realm="{envoy_config.JWT_REALM}"',
    }
    return [f"config {key}={value}" for key, value in settings.items()]


def _request_context_config() -> list[str]:
    lines = envoy_config.request_context_settings().splitlines()
    return [f"config {line}" for line in lines if line]


def _build(filter_define: str, output: Path) -> Path:
    compiler = shlex.split(os.environ.get("CC", "cc"))
    command = [
        *compiler,
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


def _runner(binary: Path) -> Run:
    def run(script: str) -> dict[str, Any]:
        done = subprocess.run(
            [str(binary)],
            input=script,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"},
        )
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
def request_context(tmp_path_factory: pytest.TempPathFactory) -> Run:
    directory = tmp_path_factory.mktemp("request_context_harness")
    return _runner(_build("HARNESS_REQUEST_CONTEXT", directory / "request_context_harness"))


def _script(*lines: str) -> str:
    return "".join(f"{line}\n" for line in lines)


def _answered_unavailable(result: dict[str, Any], details: str) -> None:
    """Exactly one reply, the 503 of a filter that failed closed."""
    assert [(reply["status"], reply["body"], reply["details"]) for reply in result["replies"]] == [
        (UNAVAILABLE, OUT_OF_MEMORY, details)
    ]


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
    _answered_unavailable(result, SHAPER_DETAILS)
    assert result["hooks"] == [("request_headers", HEADERS_STOP_ITERATION)]
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
    _answered_unavailable(result, SHAPER_DETAILS)
    assert result["hooks"] == [("request_headers", HEADERS_STOP_ITERATION)]


def test_shaper_flag_rewrite_not_taken_is_503(shaper: Run) -> None:
    """`?all_fields` must not reach the transcoder bare (read as false)."""
    result = shaper(
        _shaper_request(
            "route_list flags all_fields",
            "fail set_header :path",
            path=f"{POOLS}?all_fields",
        )
    )
    _answered_unavailable(result, SHAPER_DETAILS)
    assert result["hooks"] == [("request_headers", HEADERS_STOP_ITERATION)]
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
    _answered_unavailable(result, SHAPER_DETAILS)
    assert result["hooks"] == [("request_headers", HEADERS_STOP_ITERATION)]
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
    _answered_unavailable(result, SHAPER_DETAILS)
    assert result["hooks"][-1] == ("response_headers", HEADERS_STOP_ITERATION)


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
    _answered_unavailable(result, SHAPER_DETAILS)
    assert result["hooks"][-1] == ("response_body", BODY_STOP_NO_BUFFER)
    assert result["response_body"] == LIST_BODY  # untouched, and not passed on


def test_shaper_list_unwrap_every_allocation_failure_is_503(shaper: Run) -> None:
    """Each allocation of the body's end failing in turn: always the 503, never the wrapped
    list; past the last one, the bare array (so every allocation was covered)."""
    outcomes = []
    for nth in range(1, 50):
        result = _unwrap_with_failed_allocation(shaper, nth)
        if result["failed_allocations"] == 0:
            assert result["replies"] == []
            assert result["hooks"][-1] == ("response_body", BODY_CONTINUE)
            assert result["response_body"] == '[{"id":"a"}]'
            break
        _answered_unavailable(result, SHAPER_DETAILS)
        assert result["hooks"][-1] == ("response_body", BODY_STOP_NO_BUFFER), nth
        outcomes.append(nth)
    else:
        pytest.fail("the body's end allocated more than 49 times")
    assert outcomes, "no allocation was failed"


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
    _answered_unavailable(result, CONTEXT_DETAILS)
    assert result["hooks"] == [("request_headers", HEADERS_STOP_ITERATION)]
    # The refusal carries the correlation id, as every refusal of the guard does.
    assert result["replies"][0]["headers"] == [["x-correlation-id", "client-1"]]


@pytest.mark.parametrize(
    "header", ["x-correlation-id", "x-request-id", "x-netweave-client-request-id"]
)
def test_request_context_id_header_not_taken_is_503(request_context: Run, header: str) -> None:
    """A client's malformed id, or its copy of the request id, must not reach the core."""
    result = request_context(_context_request(f"fail set_header {header}"))
    _answered_unavailable(result, CONTEXT_DETAILS)
    assert result["hooks"] == [("request_headers", HEADERS_STOP_ITERATION)]
