"""Serving majors is configuration: a gateway whose SMOs speak only 1.x serves only /v1
(NETWEAVE_SERVED_MAJORS=v1): every v2 path is a 404, subscriptions included, and
`api_versions` lists what is served."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from o2ims.inventory.v2 import inventory_pb2 as v2
from o2ims.inventory.v2 import inventory_pb2_grpc as v2_grpc

from devstack.stack import LocalStack

from .conftest import start_stack

INV = "/o2ims-infrastructureInventory"


@pytest.fixture(scope="module")
def v1_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(
        tmp_path_factory,
        {
            "NETWEAVE_SERVED_MAJORS": "v1",
            "NETWEAVE_CALLBACK_ALLOW_HTTP": "1",
            "NETWEAVE_CALLBACK_ALLOWED_CIDRS": "127.0.0.0/8",
        },
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rest(v1_only: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=v1_only.rest_url, verify=v1_only.client_tls(), timeout=10.0, trust_env=False
    ) as client:
        yield client


def assert_404(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        "/v2",
        "/v2/api_versions",
        "/v2/resourcePools",
        "/v2/resourceTypes",
        "/v2/locations",
        "/v2/oCloudSites",
        "/v2/subscriptions",
        "/v2/subscriptions/00000000-0000-4000-8000-000000000001",
    ],
)
def test_every_v2_path_is_404(rest: httpx.Client, path: str) -> None:
    assert_404(rest.get(INV + path))


def test_creating_a_v2_subscription_is_404_and_stores_nothing(rest: httpx.Client) -> None:
    before = rest.get(f"{INV}/v1/subscriptions").json()
    assert_404(rest.post(f"{INV}/v2/subscriptions", json={"callback": "http://127.0.0.1:9/v2"}))
    assert rest.get(f"{INV}/v1/subscriptions").json() == before


def test_v1_is_served_and_api_versions_lists_only_it(rest: httpx.Client) -> None:
    assert rest.get(f"{INV}/v1/resourcePools").status_code == 200
    versions = rest.get(f"{INV}/api_versions").json()
    assert [v["version"] for v in versions["apiVersions"]] == ["1.2.0"]
    created = rest.post(f"{INV}/v1/subscriptions", json={"callback": "http://127.0.0.1:9/v1"})
    assert created.status_code == 201, created.text


def test_grpc_callers_of_v2_get_not_found_with_the_reason(v1_only: LocalStack) -> None:
    with (
        grpc.insecure_channel(v1_only.grpc_address) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        v2_grpc.InventoryServiceStub(channel).ListResourcePools(
            v2.ListResourcePoolsRequest(), timeout=5
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(raised.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "API_MAJOR_NOT_SERVED"
