"""What the edge answers for a path and method before any core logic: 405 with Allow for an
undefined method on a known path, 404 for unknown paths and majors, 400 for paths that
cannot be valid, the OpenAPI document, and gRPC callers untouched (o2ims-spec.md G3, G4,
G8, G9; CONF 7.3.6, 7.3.9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from devstack.pki import DevPki
from rest_facade.envoy_process import RunningEnvoy
from rest_facade.http_rules import read_rules, resource_paths

from .support import (
    EnvoyFactory,
    assert_problem,
    raw_https_request,
    rest_client,
    start_fake_core,
)
from .widgets import EdgeCore, WidgetStore

INV = "/o2ims-infrastructureInventory"
MON = "/o2ims-infrastructureMonitoring"
POOL_ID = "5e0f7c3a-1b2d-4c8e-9f00-aa0000000001"  # one of support.sample_pools()
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# CONF 7.3.6: an undefined method answers 405 with a JSON body.
CONF_7_3_6 = [
    ("POST", f"{INV}/v1/resourceTypes/{{id}}"),
    ("POST", f"{INV}/v1/resourcePools"),
    ("POST", f"{INV}/v1/resourcePools/{{id}}/resources"),
    ("POST", f"{INV}/v1/deploymentManagers"),
    ("POST", f"{INV}/v1"),
    ("PATCH", f"{INV}/v1/subscriptions"),
    ("POST", f"{MON}/v1/alarms"),
    ("PATCH", f"{MON}/v1/alarmSubscriptions"),
]


def _allow(response: httpx.Response) -> list[str]:
    return [method.strip() for method in response.headers["allow"].split(",")]


@pytest.mark.parametrize(("method", "template"), CONF_7_3_6)
def test_conf_7_3_6_undefined_methods_are_405_problem_details(
    edge: httpx.Client, method: str, template: str
) -> None:
    response = edge.request(method, template.format(id=POOL_ID), json={})

    assert_problem(response, 405)
    assert method not in _allow(response)
    assert "GET" in _allow(response)


def test_every_undefined_method_on_every_path_is_405_with_the_defined_methods(
    edge: httpx.Client, edge_descriptor: Path
) -> None:
    for resource in resource_paths(read_rules(edge_descriptor)):
        path = resource.template.resource_path().replace("{", "x").replace("}", "")
        for method in sorted(set(METHODS) - set(resource.methods)):
            response = edge.request(method, path)

            assert_problem(response, 405)
            assert _allow(response) == list(resource.methods), (method, path)


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_head_and_options_are_405_with_allow(edge: httpx.Client, method: str) -> None:
    response = edge.request(method, f"{INV}/v1/resourcePools")

    assert response.status_code == 405
    assert _allow(response) == ["GET"]
    if method == "OPTIONS":
        assert_problem(response, 405)


def test_405_detail_names_the_allowed_methods(edge: httpx.Client) -> None:
    problem = assert_problem(edge.delete("/o2ims-edgeTest/v1/widgets"), 405)

    assert problem["title"] == "Method Not Allowed"
    assert "GET, POST" in problem["detail"]


@pytest.mark.parametrize(
    "path",
    [
        f"{INV}/v1/deploymentManagersWrongURL",  # CONF 7.3.9
        f"{INV}/v3/deploymentManagers",  # a major no API has
        f"{MON}/v2/alarms",  # a major this API does not have
        f"{INV}/v1/resourcePools/{POOL_ID}/nothing",
        "/o2ims-infrastructureNothing/v1/resourcePools",
        "/",
        "/openapi.yaml",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_paths_and_majors_are_404_problem_details(
    edge: httpx.Client, path: str, method: str
) -> None:
    response = edge.request(method, path)

    problem = assert_problem(response, 404)
    assert "allow" not in response.headers
    assert problem["title"] == "Not Found"


def test_methods_the_core_does_not_implement_are_404_not_501(
    edge: httpx.Client, widgets: WidgetStore
) -> None:
    # The descriptor publishes the Monitoring API; this core double does not serve it.
    problem = assert_problem(edge.get(f"{MON}/v1/alarms"), 404)

    assert "InventoryService" not in problem["detail"]
    assert "Method not found" not in problem["detail"]


def test_rest_json_posted_to_a_grpc_path_is_404_and_never_reaches_the_core(
    edge: httpx.Client, edge_core: EdgeCore, widgets: WidgetStore
) -> None:
    response = edge.post("/o2ims.inventory.v1.InventoryService/GetCloudInfo", json={})

    assert_problem(response, 404)
    assert edge_core.core.inventory.calls == []


@pytest.mark.parametrize(
    "path",
    [f"{INV}/v1/", f"{INV}/v1/resourcePools/", f"{INV}/v1/resourcePools/{POOL_ID}/"],
)
def test_a_trailing_slash_is_the_same_resource(
    edge: httpx.Client, widgets: WidgetStore, path: str
) -> None:
    with_slash, without = edge.get(path), edge.get(path.rstrip("/"))

    assert with_slash.status_code == without.status_code == 200
    assert with_slash.json() == without.json()
    assert_problem(edge.post(path), 405)


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        (f"{INV}/v1/resourcePools/%FF", "UTF-8"),
        (f"{INV}/v1/resourcePools/%C0%AF", "UTF-8"),  # overlong "/"
        (f"{INV}/v1/resourcePools/%ED%A0%80", "UTF-8"),  # a surrogate
        (f"{INV}/v1/resourcePools?filter=%FE", "UTF-8"),
        (f"{INV}/v1/resourcePools/%2e%2e", "'..'"),
        (f"{INV}/v1/resourcePools/%2E/x", "'.'"),
    ],
)
def test_paths_that_cannot_be_valid_are_400_not_500(
    edge: httpx.Client, widgets: WidgetStore, path: str, detail: str
) -> None:
    problem = assert_problem(edge.get(path), 400)

    assert detail in problem["detail"]


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /o2ims-infrastructureInventory/v1/resourcePools/a b HTTP/1.1",
        b"GET /o2ims-infrastructureInventory/v1/resourcePools/\xc3\xa9 HTTP/1.1",
        b"GET /o2ims-infrastructureInventory/v1#fragment HTTP/1.1",
        b"BREW /o2ims-infrastructureInventory/v1 HTTP/1.1",
    ],
)
def test_requests_envoy_refuses_before_any_filter_are_problem_details_too(
    edge_envoy: RunningEnvoy, pki: DevPki, request_line: bytes
) -> None:
    # The HTTP codec refuses these with an empty body of its own; the ProblemDetails still
    # says why. (Clients like httpx never send them, so a raw socket it is.)
    status, headers, body = raw_https_request(edge_envoy, pki, request_line + b"\r\nHost: x")

    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == 400
    assert problem["detail"].startswith("the request is malformed (")


@pytest.mark.parametrize(
    ("segment", "status"),
    [("..", 400), (".", 400), ("a.b", 404), ("..a", 404), ("%2E%2E", 400)],
)
def test_literal_dot_segments_are_400_and_dots_inside_an_id_are_not(
    edge_envoy: RunningEnvoy, pki: DevPki, widgets: WidgetStore, segment: str, status: int
) -> None:
    # The shaper walks a path for dot segments only when it holds a '.' or a '%' (its fast
    # path): literal dots, which clients like httpx resolve before sending, take the walk.
    request_line = f"GET {INV}/v1/resourcePools/{segment} HTTP/1.1".encode()
    answer, headers, body = raw_https_request(edge_envoy, pki, request_line + b"\r\nHost: x")

    assert answer == status
    assert headers["content-type"] == "application/problem+json"
    if status == 400:
        assert "'.' or '..' segment" in json.loads(body)["detail"]


def test_a_nul_in_an_id_is_an_unknown_id(edge: httpx.Client, widgets: WidgetStore) -> None:
    assert_problem(edge.get(f"{INV}/v1/resourcePools/%00"), 404)


def test_valid_unicode_ids_reach_the_core(edge: httpx.Client, widgets: WidgetStore) -> None:
    problem = assert_problem(edge.get(f"{INV}/v1/resourcePools/%F0%9F%92%A5"), 404)

    assert "💥" in problem["detail"]


def test_oversized_requests_are_431_not_429_or_5xx(
    edge: httpx.Client, widgets: WidgetStore
) -> None:
    # Over Envoy's 60 KiB header limit: refused before routing.
    assert_problem(edge.get(f"{INV}/v1/resourcePools/{'a' * 62_000}"), 431)
    # Within Envoy's limit but over the core's gRPC metadata limit (16 KiB by default):
    # gRPC's RESOURCE_EXHAUSTED would read as "rate limited".
    problem = assert_problem(edge.get(f"{INV}/v1/resourcePools/{'a' * 20_000}"), 431)
    assert "too large" in problem["detail"]


# --- the OpenAPI document ----------------------------------------------------------------


def test_openapi_document_is_served(
    edge: httpx.Client, edge_openapi_document: dict[str, Any]
) -> None:
    response = edge.get("/openapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.content) == edge_openapi_document
    assert_problem(edge.post("/openapi.json"), 405)


# --- which services the edge publishes -------------------------------------------------------


def test_only_configured_services_are_published(envoy_factory: EnvoyFactory, pki: DevPki) -> None:
    core = start_fake_core()
    try:
        envoy = envoy_factory(core.port, services=("o2ims.inventory.v1.InventoryService",))
        with rest_client(envoy, pki) as client:
            assert client.get(f"{INV}/v1/resourcePools").status_code == 200
            assert_problem(client.get(f"{INV}/v2/resourcePools"), 404)
            assert_problem(client.post(f"{INV}/v2/resourcePools"), 404)
            assert_problem(client.get(f"{MON}/v1/alarms"), 404)
            served = json.loads(client.get("/openapi.json").content)
    finally:
        core.stop()
    assert f"{INV}/v1/resourcePools" in served["paths"]
    assert f"{INV}/v2/resourcePools" not in served["paths"]


# --- native gRPC through the edge ------------------------------------------------------------


def _channel(envoy: RunningEnvoy, pki: DevPki) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    return grpc.secure_channel(f"localhost:{envoy.listener_port}", credentials)


def test_native_grpc_keeps_grpc_statuses(
    edge_envoy: RunningEnvoy, pki: DevPki, widgets: WidgetStore
) -> None:
    with _channel(edge_envoy, pki) as channel:
        stub = v1_grpc.InventoryServiceStub(channel)
        pools = stub.ListResourcePools(v1.ListResourcePoolsRequest(), timeout=5)
        with pytest.raises(grpc.RpcError) as not_found:
            stub.GetResourcePool(v1.GetResourcePoolRequest(resource_pool_id="nope"), timeout=5)
        # A published service's method the core does not implement.
        with pytest.raises(grpc.RpcError) as unimplemented:
            stub.ListResourceTypes(v1.ListResourceTypesRequest(), timeout=5)

    assert len(pools.resource_pools) == 2
    for raised, code in ((not_found, grpc.StatusCode.NOT_FOUND), (unimplemented, None)):
        error: Any = raised.value
        assert error.code() == (code or grpc.StatusCode.UNIMPLEMENTED)
        assert not error.details().startswith("{"), "gRPC callers must not get JSON"
