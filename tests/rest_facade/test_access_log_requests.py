"""Which requests Envoy's access log records (NETWEAVE_ENVOY_ACCESS_LOG, issue 18): by
default the failures (an HTTP status of 400 or more, a native gRPC error, a response flag)
and the slow; with `all`, every request. Real Envoy, the core's double behind it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from devstack.pki import DevPki
from devstack.tokens import DevIssuer
from netweave.headers import CORRELATION_ID_HEADER
from rest_facade.envoy_config import RateLimitConfig, access_log_filter
from rest_facade.envoy_process import RunningEnvoy

from .support import (
    EnvoyFactory,
    FakeCore,
    FakeInventory,
    access_log_entries,
    access_log_entry,
    bearer,
    envoy_config,
    jwt_config,
    launch_envoy,
    rest_client,
)

POOLS = "/o2ims-infrastructureInventory/v1/resourcePools"
CLOUD = "/o2ims-infrastructureInventory/v1"
SLOW_MS = 300


@pytest.fixture(scope="module")
def failures_envoy(
    tmp_path_factory: pytest.TempPathFactory, pki: DevPki, core: FakeCore
) -> Iterator[RunningEnvoy]:
    config = envoy_config(pki, core.port, access_log_slow_ms=SLOW_MS)
    running = launch_envoy(config, tmp_path_factory.mktemp("failures-envoy"))
    yield running
    running.stop()


def logged_ids(envoy: RunningEnvoy) -> set[str]:
    """The request ids of every access log line so far (the correlation id, when sent)."""
    return {entry["request_id"] for entry in access_log_entries(envoy)}


def get(client: httpx.Client, path: str, correlation_id: str) -> httpx.Response:
    return client.get(path, headers={CORRELATION_ID_HEADER: correlation_id})


def test_successes_are_not_logged_and_failures_are(
    failures_envoy: RunningEnvoy, pki: DevPki, inventory: FakeInventory
) -> None:
    with rest_client(failures_envoy, pki) as client:
        assert get(client, POOLS, "ok-list").status_code == 200
        assert get(client, CLOUD, "ok-cloud").status_code == 200
        assert get(client, f"{POOLS}/no-such-pool", "fail-404").status_code == 404
        # A credential in the query: refused by the request guard before the core.
        assert get(client, f"{POOLS}?access_token=x", "fail-400").status_code == 400
        assert get(client, "/no/such/path", "fail-route").status_code == 404
    # Lines are written in the order the requests ended: once the last failure is in, any
    # line of the successes before it would be too.
    assert access_log_entry(failures_envoy, "fail-route")["status"] == 404
    assert access_log_entry(failures_envoy, "fail-404")["rest_grpc_status"] == "5"
    assert access_log_entry(failures_envoy, "fail-400")["status"] == 400
    assert {"ok-list", "ok-cloud"}.isdisjoint(logged_ids(failures_envoy))


def test_a_success_with_a_token_behind_the_rate_limiter_is_not_logged(
    envoy_factory: EnvoyFactory,
    core: FakeCore,
    pki: DevPki,
    issuer: DevIssuer,
    inventory: FakeInventory,
) -> None:
    """The edge as deployed: tokens verified, every client rate limited."""
    envoy = envoy_factory(
        core.port,
        jwt=jwt_config(issuer, required=False),
        rate_limit=RateLimitConfig(tokens_per_fill=100, fill_interval_s=1.0),
    )
    token = bearer(issuer.mint("smo-north", ["o2ims-reader"]))
    with rest_client(envoy, pki) as client:
        ok = client.get(POOLS, headers={**token, CORRELATION_ID_HEADER: "token-ok"})
        assert ok.status_code == 200
        assert get(client, f"{POOLS}/no-such-pool", "token-fail").status_code == 404
    assert access_log_entry(envoy, "token-fail")["status"] == 404
    assert "token-ok" not in logged_ids(envoy)


def test_a_native_grpc_error_is_logged_though_its_http_status_is_200(
    failures_envoy: RunningEnvoy, pki: DevPki, inventory: FakeInventory
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    with grpc.secure_channel(f"localhost:{failures_envoy.listener_port}", credentials) as channel:
        stub = v1_grpc.InventoryServiceStub(channel)
        stub.ListResourcePools(
            v1.ListResourcePoolsRequest(),
            metadata=[(CORRELATION_ID_HEADER, "grpc-ok")],
            timeout=5,
        )
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetResourcePool(
                v1.GetResourcePoolRequest(resource_pool_id="no-such-pool"),
                metadata=[(CORRELATION_ID_HEADER, "grpc-not-found")],
                timeout=5,
            )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    entry = access_log_entry(failures_envoy, "grpc-not-found")
    assert (entry["status"], entry["grpc_status"]) == (200, 5)
    assert "grpc-ok" not in logged_ids(failures_envoy)


def test_a_slow_success_is_logged(
    failures_envoy: RunningEnvoy, pki: DevPki, inventory: FakeInventory
) -> None:
    with rest_client(failures_envoy, pki) as client:
        inventory.delay_s = SLOW_MS / 1000 + 0.1
        try:
            assert get(client, CLOUD, "slow-ok").status_code == 200
        finally:
            inventory.delay_s = 0.0
    entry = access_log_entry(failures_envoy, "slow-ok")
    assert entry["status"] == 200
    assert entry["duration_ms"] >= SLOW_MS


def test_all_logs_every_request(
    envoy_factory: EnvoyFactory, core: FakeCore, pki: DevPki, inventory: FakeInventory
) -> None:
    envoy = envoy_factory(core.port, access_log_requests="all")
    with rest_client(envoy, pki) as client:
        assert get(client, POOLS, "all-ok").status_code == 200
    entry = access_log_entry(envoy, "all-ok")
    assert (entry["status"], entry["route"]) == (200, POOLS)


def test_the_filter_is_none_for_all_and_bad_values_are_refused(pki: DevPki) -> None:
    assert access_log_filter(envoy_config(pki, 1, access_log_requests="all")) is None
    assert "or_filter" in (access_log_filter(envoy_config(pki, 1)) or {})
    with pytest.raises(ValueError, match="access_log_requests"):
        envoy_config(pki, 1, access_log_requests="some")
    with pytest.raises(ValueError, match="access_log_slow_ms"):
        envoy_config(pki, 1, access_log_slow_ms=0)
