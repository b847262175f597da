"""Helpers for the Envoy edge tests: a test double of the core, Envoy and client set-up.

The unit under test is the Envoy layer (rendered config, transcoder, Lua shaper, local
replies), so the core is a small in-test gRPC server with the real service contract.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health
from grpc_status import rpc_status
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc

from devstack.pki import DevPki, IssuedCertificate
from devstack.processes import wait_until
from devstack.tokens import DevIssuer
from netweave.grpc_server import add_health_and_reflection, new_server, set_serving
from rest_facade.envoy_config import EnvoyConfig, JwtConfig
from rest_facade.envoy_process import RunningEnvoy, start_envoy
from server.listing import send_list_headers
from server.query import Page
from tests.core_process import complete_lines

REPO = Path(__file__).resolve().parents[2]
# Overridable so the suite can check a descriptor set built elsewhere (CI artefact).
DESCRIPTOR = Path(os.environ.get("NETWEAVE_DESCRIPTOR", REPO / "gen" / "o2ims.pb"))
INVENTORY_SERVICE = "o2ims.inventory.v1.InventoryService"
ERROR_DOMAIN = "o2ims.netweave.test"
PROBLEM = "application/problem+json"


def sample_pools() -> list[v1.ResourcePoolInfo]:
    return [
        v1.ResourcePoolInfo(
            resource_pool_id="5e0f7c3a-1b2d-4c8e-9f00-aa0000000001",
            name="edge-pool-madrid",
            description="Madrid edge cluster",
            o_cloud_id="c0ffee00-0000-4000-8000-000000000001",
            global_location_id="ES-MAD-1",
            location="Madrid",
        ),
        v1.ResourcePoolInfo(
            resource_pool_id="5e0f7c3a-1b2d-4c8e-9f00-aa0000000002",
            name="edge-pool-lisbon",
            o_cloud_id="c0ffee00-0000-4000-8000-000000000001",
        ),
    ]


class FakeInventory(v1_grpc.InventoryServiceServicer):
    """Stands in for the core: serves `pools`, records the metadata of every call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pools: list[v1.ResourcePoolInfo] = []
        self.next_page_token = ""
        self.calls: list[dict[str, str]] = []
        # Seconds every call waits before it answers (a slow core).
        self.delay_s = 0.0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.pools = sample_pools()
            self.next_page_token = ""
            self.calls = []
            self.delay_s = 0.0

    def last_metadata(self) -> dict[str, str]:
        with self._lock:
            assert self.calls, "the core received no call"
            return self.calls[-1]

    def _record(self, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls.append({item.key: item.value for item in context.invocation_metadata()})
            delay_s = self.delay_s
        if delay_s:
            time.sleep(delay_s)

    def GetCloudInfo(
        self, request: v1.GetCloudInfoRequest, context: grpc.ServicerContext
    ) -> v1.OCloudInfo:
        self._record(context)
        return v1.OCloudInfo(o_cloud_id="c0ffee00-0000-4000-8000-000000000001", name="test")

    def ListResourcePools(
        self, request: v1.ListResourcePoolsRequest, context: grpc.ServicerContext
    ) -> v1.ListResourcePoolsResponse:
        self._record(context)
        # As the real core does (server.listing.send_list_headers): name the collection so the
        # REST shaper can unwrap it, and the next page's marker for its Link header.
        with self._lock:
            token = self.next_page_token
        page = Page(items=[], next_page_token=token)
        send_list_headers(context, "resourcePools", page)
        return v1.ListResourcePoolsResponse(next_page_token=token, resource_pools=self.pools)

    def GetResourcePool(
        self, request: v1.GetResourcePoolRequest, context: grpc.ServicerContext
    ) -> v1.ResourcePoolInfo:
        self._record(context)
        for pool in self.pools:
            if pool.resource_pool_id == request.resource_pool_id:
                return pool
        status = status_pb2.Status(
            code=code_pb2.NOT_FOUND,
            message=f"resource pool {request.resource_pool_id!r} not found",
        )
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(
                reason="RESOURCE_POOL_NOT_FOUND",
                domain=ERROR_DOMAIN,
                metadata={"resourcePoolId": request.resource_pool_id},
            )
        )
        context.abort_with_status(rpc_status.to_status(status))
        raise AssertionError("abort_with_status returned")


@dataclass
class FakeCore:
    inventory: FakeInventory
    server: grpc.Server
    health: health.HealthServicer
    port: int
    stopped: bool = field(default=False)

    def stop(self) -> None:
        if not self.stopped:
            self.server.stop(grace=None).wait()
            self.stopped = True


def start_fake_core(extra_services: Sequence[grpc.GenericRpcHandler] = ()) -> FakeCore:
    """The double of the core: FakeInventory, plus `extra_services` (test-only APIs)."""
    # The double implements only the RPCs these tests call; the others keep the generated
    # UNIMPLEMENTED behaviour, which the stub declares abstract.
    inventory = FakeInventory()  # type: ignore[abstract]
    server = new_server(max_workers=8)
    v1_grpc.add_InventoryServiceServicer_to_server(inventory, server)
    server.add_generic_rpc_handlers(tuple(extra_services))
    health_servicer = add_health_and_reflection(server, [INVENTORY_SERVICE])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # Envoy's health check asks for the service by name; it must be SERVING.
    set_serving(health_servicer, [INVENTORY_SERVICE], True)
    return FakeCore(inventory, server, health_servicer, port)


def envoy_config(pki: DevPki, core_port: int, **overrides: Any) -> EnvoyConfig:
    """A config for tests: loopback, kernel-chosen ports, the dev PKI, gen/o2ims.pb."""
    values: dict[str, Any] = {
        "listen_port": 0,
        "core_port": core_port,
        "descriptor_path": DESCRIPTOR,
        "server_cert": pki.server_cert,
        "server_key": pki.server_key,
        "client_ca": pki.ca_cert,
    }
    values.update(overrides)
    return EnvoyConfig(**values)


def launch_envoy(config: EnvoyConfig, workdir: Path) -> RunningEnvoy:
    # One worker is plenty for tests and starts faster; flush the access log quickly so
    # tests can read it. Each Envoy has its own admin socket, in its own directory.
    return start_envoy(
        replace(config, admin_socket=workdir / "admin.sock"),
        workdir,
        workdir / "envoy.log",
        concurrency=1,
        log_flush_interval_ms=50,
    )


def tls_context(pki: DevPki, client: IssuedCertificate | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def rest_client(
    envoy: RunningEnvoy,
    pki: DevPki,
    client: IssuedCertificate | None = None,
    hooks: Sequence[Callable[[httpx.Response], None]] = (),
) -> httpx.Client:
    """An HTTP/1.1 client of `envoy`; `hooks` see every response (the OpenAPI contract)."""
    # trust_env=False: a developer's HTTPS_PROXY must not capture calls to localhost.
    return httpx.Client(
        base_url=envoy.url,
        verify=tls_context(pki, client),
        trust_env=False,
        timeout=10,
        event_hooks={"response": list(hooks)},
    )


EnvoyFactory = Callable[..., RunningEnvoy]


def access_log_entries(envoy: RunningEnvoy) -> list[dict[str, Any]]:
    """Every access-log line so far (Envoy writes them to stdout, our log file, among its
    application log's lines, which have a `level`)."""
    text = envoy.process.log_path.read_text(errors="replace")
    entries = [json.loads(line) for line in complete_lines(text) if line.startswith("{")]
    return [entry for entry in entries if "level" not in entry]


def access_log_entry(
    envoy: RunningEnvoy, value: str, timeout: float = 5.0, *, key: str = "request_id"
) -> dict[str, Any]:
    """The JSON access-log line of one request: the one whose `key` is `value`."""

    def found() -> list[dict[str, Any]]:
        return [entry for entry in access_log_entries(envoy) if entry.get(key) == value]

    return wait_until(found, timeout, f"the access-log line with {key} {value}")[0]


def assert_no_internal_headers(response: httpx.Response) -> None:
    leaked = [name for name in response.headers if name.startswith(("grpc-", "x-o2ims-"))]
    assert leaked == [], f"internal headers reached a REST client: {leaked}"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 7807 ProblemDetails as O2ims wants it (o2ims-spec.md 3.13, G2)."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    assert "instance" not in problem
    assert_no_internal_headers(response)
    return problem


def raw_https_request(
    envoy: RunningEnvoy, pki: DevPki, head: bytes, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Send bytes no HTTP client library would send; (status, headers, body) of the reply.

    `head` is the request line and headers without the final blank line; the connection is
    closed after one response."""
    context = tls_context(pki)
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", envoy.listener_port), timeout=10) as tcp,
        context.wrap_socket(tcp, server_hostname="localhost") as tls,
    ):
        tls.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        received = b""
        # Stop at the end of the body: Envoy closes the connection only after its delayed
        # close timeout (1 s).
        while not _complete(received) and (chunk := tls.recv(65536)):
            received += chunk
    raw_head, _, raw_body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, value in (line.split(":", 1) for line in header_lines)
    }
    return int(status_line.split()[1]), headers, raw_body


def _complete(received: bytes) -> bool:
    head, separator, body = received.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def jwt_config(issuer: DevIssuer, **overrides: Any) -> JwtConfig:
    """Envoy's token checks for tokens of the dev `issuer`; `overrides` set other fields."""
    return JwtConfig(
        issuer=issuer.issuer,
        audiences=(issuer.audience,),
        jwks_path=issuer.jwks_path,
        **overrides,
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
