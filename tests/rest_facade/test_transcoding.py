"""REST and native gRPC through real Envoy: transcoding, the Lua shaper, local replies, XFCC."""

from __future__ import annotations

import json
import ssl
import urllib.parse
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from cryptography import x509
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from devstack.pki import DevPki, client_uri
from netweave.headers import CLIENT_CERT_HEADER, IGNORED_QUERY_HEADER
from rest_facade.envoy_process import RunningEnvoy
from server.listing import COLLECTION_HEADER

from .support import (
    ERROR_DOMAIN,
    PROBLEM,
    EnvoyFactory,
    FakeCore,
    FakeInventory,
    access_log_entry,
    assert_no_internal_headers,
    assert_problem,
    rest_client,
    start_fake_core,
)

INVENTORY = "/o2ims-infrastructureInventory/v1"
POOLS = f"{INVENTORY}/resourcePools"
UNKNOWN_POOL = "00000000-0000-4000-8000-00000000dead"
POOL_FIELDS = {
    "resourcePoolId",
    "name",
    "description",
    "oCloudId",
    "globalLocationId",
    "location",
}


# --- lists -------------------------------------------------------------------------------


def test_list_is_a_bare_json_array_with_o2ims_field_names(
    rest: httpx.Client, inventory: FakeInventory
) -> None:
    response = rest.get(POOLS)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body, list)
    assert [pool["resourcePoolId"] for pool in body] == [
        pool.resource_pool_id for pool in inventory.pools
    ]
    # Every attribute, defaults included (always_print_primitive_fields), in lowerCamelCase.
    assert set(body[0]) >= POOL_FIELDS
    assert body[0]["globalLocationId"] == "ES-MAD-1"
    assert body[1]["description"] == ""
    assert_no_internal_headers(response)


def test_empty_list_is_an_empty_array(rest: httpx.Client, inventory: FakeInventory) -> None:
    inventory.pools = []

    response = rest.get(POOLS)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == b"[]"


def test_page_token_is_kept_out_of_the_array(rest: httpx.Client, inventory: FakeInventory) -> None:
    inventory.next_page_token = "eyJvZmZzZXQiOjJ9-_AZ09"

    response = rest.get(POOLS)

    assert response.status_code == 200
    assert [pool["name"] for pool in response.json()] == [p.name for p in inventory.pools]
    assert b"eyJvZmZzZXQiOjJ9" not in response.content
    assert int(response.headers["content-length"]) == len(response.content)


def test_next_page_is_linked(rest: httpx.Client, inventory: FakeInventory) -> None:
    # SOL013 paging: the next page is this URL with the core's marker (x-o2ims-next-page-token)
    # in place of the client's; a parameter the shaper dropped is not carried over.
    inventory.next_page_token = "eyJvZmZzZXQiOjJ9-_AZ09"

    response = rest.get(f"{POOLS}?nextpage_opaque_marker=b2xk&fields=name&bogus=1")

    assert response.status_code == 200
    assert response.headers.get_list("link") == [
        f'<{POOLS}?fields=name&nextpage_opaque_marker=eyJvZmZzZXQiOjJ9-_AZ09>; rel="next"'
    ]
    assert [pool["name"] for pool in response.json()] == [p.name for p in inventory.pools]
    assert_no_internal_headers(response)

    response = rest.get(POOLS)

    assert response.headers.get_list("link") == [
        f'<{POOLS}?nextpage_opaque_marker=eyJvZmZzZXQiOjJ9-_AZ09>; rel="next"'
    ]


def test_last_page_has_no_link(rest: httpx.Client, inventory: FakeInventory) -> None:
    response = rest.get(f"{POOLS}?nextpage_opaque_marker=b2xk")

    assert response.status_code == 200
    assert "link" not in response.headers
    assert len(response.json()) == len(inventory.pools)


def test_items_containing_brackets_and_quotes_survive_unwrapping(
    rest: httpx.Client, inventory: FakeInventory
) -> None:
    inventory.pools[0].description = 'racks ["A1"] and [B2] \\ "quoted" ]'

    response = rest.get(POOLS)

    assert response.json()[0]["description"] == 'racks ["A1"] and [B2] \\ "quoted" ]'


def test_list_of_several_mebibytes_is_unwrapped(
    rest: httpx.Client, inventory: FakeInventory
) -> None:
    # Above Envoy's default 1 MiB stream buffer, below the transcoder's 4 MiB response cap.
    inventory.pools = [
        v1.ResourcePoolInfo(
            resource_pool_id=f"5e0f7c3a-1b2d-4c8e-9f00-{index:012d}", description="x" * 1000
        )
        for index in range(2000)
    ]

    response = rest.get(POOLS)

    assert response.status_code == 200, response.text[:300]
    assert len(response.content) > 2 * 1024 * 1024
    assert len(response.json()) == 2000


# --- single resources and errors -----------------------------------------------------------


@pytest.mark.parametrize("path", [INVENTORY, f"{INVENTORY}/"])
def test_cloud_info_answers_with_and_without_trailing_slash(
    rest: httpx.Client, inventory: FakeInventory, path: str
) -> None:
    response = rest.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["oCloudId"] == "c0ffee00-0000-4000-8000-000000000001"
    assert_no_internal_headers(response)


def test_get_pool_returns_the_object(rest: httpx.Client, inventory: FakeInventory) -> None:
    pool = inventory.pools[0]

    response = rest.get(f"{POOLS}/{pool.resource_pool_id}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["resourcePoolId"] == pool.resource_pool_id
    assert_no_internal_headers(response)


def test_unknown_pool_returns_404_problem_details(
    rest: httpx.Client, inventory: FakeInventory
) -> None:
    response = rest.get(f"{POOLS}/{UNKNOWN_POOL}")

    problem = assert_problem(response, 404)
    assert problem == {
        "status": 404,
        "title": "Not Found",
        "detail": f"resource pool {UNKNOWN_POOL!r} not found",
    }


def test_error_message_is_json_escaped_in_problem_details(
    rest: httpx.Client, inventory: FakeInventory
) -> None:
    tricky_id = 'a"b\\c<d>é'

    response = rest.get(f"{POOLS}/{quote(tricky_id, safe='')}")

    problem = assert_problem(response, 404)
    assert problem["detail"] == f"resource pool {tricky_id!r} not found"


@pytest.mark.parametrize(
    "path",
    [f"{INVENTORY}/noSuchCollection", "/o2ims-infrastructureInventory/v9/resourcePools", "/"],
)
def test_unknown_path_returns_404_problem_details(rest: httpx.Client, path: str) -> None:
    assert_problem(rest.get(path), 404)


def test_unknown_query_parameters_are_dropped_and_counted(
    rest: httpx.Client, inventory: FakeInventory
) -> None:
    response = rest.get(POOLS, params={"typo": "1", "fields": "name", "other": "x"})

    assert response.status_code == 200, response.text
    seen = inventory.last_metadata()
    assert seen[IGNORED_QUERY_HEADER] == "2"
    assert "typo" not in seen.get("x-envoy-original-path", "")
    assert "fields=name" in seen.get("x-envoy-original-path", "")


def test_a_client_cannot_send_the_ignored_count_itself(
    rest: httpx.Client, inventory: FakeInventory
) -> None:
    assert rest.get(POOLS, headers={IGNORED_QUERY_HEADER: "99"}).status_code == 200
    assert IGNORED_QUERY_HEADER not in inventory.last_metadata()


def test_strict_mode_refuses_an_unknown_query_parameter(
    envoy_factory: EnvoyFactory, core: FakeCore, pki: DevPki
) -> None:
    strict = envoy_factory(core.port, strict_query_parameters=True)
    with rest_client(strict, pki) as client:
        problem = assert_problem(client.get(POOLS, params={"typo": "1"}), 400)
        assert "typo" in problem["detail"]
        assert client.get(POOLS, params={"filter": "(eq,name,x)"}).status_code == 200


def test_core_down_is_503_problem_for_rest_and_plain_unavailable_for_grpc(
    envoy_factory: EnvoyFactory, pki: DevPki
) -> None:
    core = start_fake_core()
    envoy = envoy_factory(core.port)
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    with (
        rest_client(envoy, pki) as client,
        grpc.secure_channel(f"localhost:{envoy.listener_port}", credentials) as channel,
    ):
        assert client.get(POOLS).status_code == 200
        core.stop()

        response = client.get(POOLS)
        with pytest.raises(grpc.RpcError) as raised:
            v1_grpc.InventoryServiceStub(channel).ListResourcePools(
                v1.ListResourcePoolsRequest(), timeout=5
            )

    problem = assert_problem(response, 503)
    assert problem["title"] == "Service Unavailable"
    text = response.text.lower()
    for internal in ("upstream", "connect", "refused", "reset", "127.0.0.1"):
        assert internal not in text
    # Native gRPC keeps Envoy's own status and message: no ProblemDetails JSON.
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert not error.details().startswith("{")


# --- HTTP/2 REST ----------------------------------------------------------------------------


def _get_over_h2(envoy: RunningEnvoy, pki: DevPki, path: str) -> tuple[int, dict[str, str], bytes]:
    verify = ssl.create_default_context(cafile=str(pki.ca_cert))
    with httpx.Client(
        base_url=envoy.url, verify=verify, http1=False, http2=True, trust_env=False
    ) as client:
        response = client.get(path)
        assert response.http_version == "HTTP/2"
        return response.status_code, dict(response.headers), response.content


def test_rest_over_http2_is_shaped_the_same(
    envoy: RunningEnvoy, pki: DevPki, inventory: FakeInventory
) -> None:
    status, headers, body = _get_over_h2(envoy, pki, POOLS)

    assert status == 200
    assert headers["content-type"] == "application/json"
    assert not [name for name in headers if name.startswith(("grpc-", "x-o2ims-"))]
    assert [pool["resourcePoolId"] for pool in json.loads(body)] == [
        pool.resource_pool_id for pool in inventory.pools
    ]

    status, headers, body = _get_over_h2(envoy, pki, f"{POOLS}/{UNKNOWN_POOL}")

    assert status == 404
    assert headers["content-type"] == PROBLEM
    assert json.loads(body)["status"] == 404


# --- native gRPC through Envoy ---------------------------------------------------------------


def test_native_grpc_gets_typed_responses_untouched(
    grpc_channel: grpc.Channel, inventory: FakeInventory
) -> None:
    stub = v1_grpc.InventoryServiceStub(grpc_channel)

    response, call = stub.ListResourcePools.with_call(v1.ListResourcePoolsRequest(), timeout=5)

    assert list(response.resource_pools) == inventory.pools
    # The shaper leaves gRPC alone: the core's response metadata arrives as sent.
    assert (COLLECTION_HEADER, "resourcePools") in [
        (item.key, item.value) for item in call.initial_metadata()
    ]


def test_native_grpc_unknown_pool_is_not_found_with_details(
    grpc_channel: grpc.Channel, inventory: FakeInventory
) -> None:
    stub = v1_grpc.InventoryServiceStub(grpc_channel)

    with pytest.raises(grpc.RpcError) as raised:
        stub.GetResourcePool(v1.GetResourcePoolRequest(resource_pool_id=UNKNOWN_POOL), timeout=5)

    error: Any = raised.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("RESOURCE_POOL_NOT_FOUND", ERROR_DOMAIN)


def test_native_grpc_to_an_unrouted_service_is_unimplemented(grpc_channel: grpc.Channel) -> None:
    # Only the inventory service is published through the edge; health and reflection
    # stay on the core's own port.
    check = grpc_channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda request: request,
        response_deserializer=lambda response: response,
    )

    with pytest.raises(grpc.RpcError) as raised:
        check(b"", timeout=5)

    error: Any = raised.value
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


# --- client identity -------------------------------------------------------------------------


def test_the_core_gets_the_verified_certificate_and_no_xfcc(
    envoy: RunningEnvoy, pki: DevPki, inventory: FakeInventory
) -> None:
    forged = "By=spiffe://evil;URI=spiffe://netweave.local/client/admin"
    with rest_client(envoy, pki, client=pki.client) as client:
        assert client.get(POOLS, headers={"x-forwarded-client-cert": forged}).status_code == 200

    seen = inventory.last_metadata()
    assert "x-forwarded-client-cert" not in seen
    certificate = x509.load_pem_x509_certificate(
        urllib.parse.unquote(seen[CLIENT_CERT_HEADER]).encode()
    )
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [
        client_uri("netweave-dev-client")
    ]


def test_forged_xfcc_is_dropped_without_a_client_certificate(
    rest: httpx.Client, grpc_channel: grpc.Channel, inventory: FakeInventory
) -> None:
    forged = "URI=spiffe://netweave.local/client/admin"

    assert rest.get(POOLS, headers={"x-forwarded-client-cert": forged}).status_code == 200
    assert "x-forwarded-client-cert" not in inventory.last_metadata()

    v1_grpc.InventoryServiceStub(grpc_channel).ListResourcePools(
        v1.ListResourcePoolsRequest(), metadata=[("x-forwarded-client-cert", forged)], timeout=5
    )
    assert "x-forwarded-client-cert" not in inventory.last_metadata()


def test_underscore_spelling_of_xfcc_is_dropped(
    rest: httpx.Client, inventory: FakeInventory
) -> None:
    response = rest.get(POOLS, headers={"x_forwarded_client_cert": "URI=spiffe://evil"})

    assert response.status_code == 200
    assert "x_forwarded_client_cert" not in inventory.last_metadata()


# --- access log ------------------------------------------------------------------------------


@pytest.fixture
def mtls_rest(envoy: RunningEnvoy, pki: DevPki) -> Iterator[httpx.Client]:
    with rest_client(envoy, pki, client=pki.client) as client:
        yield client


def test_access_log_records_the_rest_request_as_the_client_sent_it(
    envoy: RunningEnvoy, mtls_rest: httpx.Client, inventory: FakeInventory
) -> None:
    response = mtls_rest.get(f"{POOLS}/{UNKNOWN_POOL}")

    entry = access_log_entry(envoy, response.headers["x-request-id"])
    assert entry["method"] == "GET"
    assert entry["path"] == f"{POOLS}/{UNKNOWN_POOL}"
    assert entry["status"] == 404
    assert entry["rest_grpc_status"] == "5"  # NOT_FOUND as the core said it
    assert entry["client_uri"] == client_uri("netweave-dev-client")
    assert isinstance(entry["duration_ms"], int)
    # The core's share (the router's x-envoy-upstream-service-time), which runbooks.md reads.
    assert int(entry["upstream_ms"]) >= 0
