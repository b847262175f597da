"""What the core's per-call work costs: CPU of a single-object gRPC read (GetResourcePool)
layer by layer, on both of the core's listeners, every variant measured in the same run with
rounds alternating.

Layers, each on top of the one before:
  handler only       the servicer behind the gRPC server (access control and metrics
                     interceptors switched off in-process; the stream limiter and the
                     major gate stay)
  + access control   server/auth: the caller's identity, the policy's decision, the
                     correlation id (bound, sent back), o2ims_auth/o2ims_authz counters
  + metrics          the metrics interceptor: request counter, latency histogram,
                     cache-read counter
  + audit            one audit record per call (NETWEAVE_AUDIT_LOG, a file)
  + tracing          OpenTelemetry, every call sampled and exported (BatchSpanProcessor,
                     OTLP/gRPC) to a collector in this process that discards what it gets

Paths:
  internal  plaintext loopback listener, no identity headers (operators' grpcurl)
  edge      the edge listener (mutual TLS, the client presents the edge's certificate) with
            what Envoy forwards on every call: the SMO's certificate (URL-encoded PEM), the
            token's claims, x-request-id / x-correlation-id and the REST method and path

Run: .venv/bin/python bench/instrumentation_bench.py [--requests 3000] [--rounds 3]
     [--paths internal,edge] [--direct-calls 20000] [--no-grpc]

Two measurements:
  the layers alone   the interceptors called as grpc calls them (intercept_service, then
                     the handler) around a handler that does nothing, in one thread with a
                     context answered from memory, the audit writer's thread included: the
                     layers' own CPU per call, steady to a microsecond or two on a busy host
  through gRPC       CPU of this process per GetResourcePool against a fresh core (server,
                     client, TLS, serialization): what a call costs end to end

The client of the second runs in this process too (THREADS threads, one channel), so every
figure includes its cost and the differences are the layers'. Those differences are tens
of microseconds out of ~600 and move by +-100 us between rounds on a shared 2-CPU machine:
read them from several rounds, and the layers' own cost from the first measurement. The
process logs as the core does (JSON at info, netweave/logs.py: the per-call debug line is
filtered). Redis is not on this path (reads are answered from the in-process cache).

Measured on a 2-vCPU VM shared with other benchmarks (issue 18). How the work was found:
py-spy 0.4 (`py-spy record --gil -f raw`, not a dependency) on a core serving a steady edge
read load (certificate + token forwarded, 4 client threads), and cProfile of the layers
alone. Before this change a call parsed the token claims, matched the policy, built the
interceptor wrappers, resolved every metric child with .labels(), and encoded and flushed
its audit line (a write(2) and a GIL hand-off) in the call's thread.

The layers alone, 20,000 calls x 5 rounds, medians, us of CPU per call (before -> after):

  layer               internal        edge (certificate + token forwarded)
  + access control    19.1 -> 9.1     31.0 -> 9.1    identity + decision remembered per
                                                     credentials x method; wrapper built once
  + metrics            9.5 -> 1.5     15.8 -> 5.2    children resolved once per method/code
  + audit             47.8 -> 27.6    18.7 -> 16.9   queued, encoded in batches by a writer
                                                     thread (internal calls record their body)
  all layers          76.7 -> 38.6    65.8 -> 31.6

Through gRPC, 3,000 requests x 4 rounds, medians, us of CPU per call (ratio to the handler
alone); the host drifted between the two runs, so compare ratios, not microseconds:

  variant             internal before   after          edge before     after
  handler only         787 (1.00)       835 (1.00)     752 (1.00)      931 (1.00)
  + access control     871 (0.90)       914 (0.91)     983 (0.77)     1012 (0.92)
  + metrics            910 (0.86)       945 (0.88)    1081 (0.70)     1079 (0.86)
  + audit             1021 (0.77)      1033 (0.81)    1114 (0.68)     1106 (0.84)
  + tracing           1228 (0.64)      1319 (0.63)    1416 (0.53)     1420 (0.66)
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from o2ims.adapter.v1 import domain_pb2  # noqa: E402
from o2ims.inventory.v1 import inventory_pb2 as inv_pb  # noqa: E402
from o2ims.inventory.v1 import inventory_pb2_grpc as inv_grpc  # noqa: E402

from adapters.publisher import AdapterServicer, ObjectSetPublisher, create_adapter_server  # noqa: E402
from devstack.pki import EDGE_URI, ensure_dev_pki, ensure_internal_pki  # noqa: E402
from devstack.processes import wait_until  # noqa: E402
from devstack.redis_server import RedisServer  # noqa: E402
from netweave import tracing  # noqa: E402
from netweave.logs import configure_logging  # noqa: E402
from server.app import create_server  # noqa: E402
from server.auth import AccessPolicy, AuditLog, AuthInterceptor  # noqa: E402
from server.auth.identity import Channel  # noqa: E402
from server.config import GatewayConfig  # noqa: E402
from server.metrics import GatewayMetrics, MetricsInterceptor  # noqa: E402

POOL_ID = "7d1d5a2a-5a47-4c8e-9f0b-0000000000aa"
THREADS = 4
LAYERS = ("handler only", "+ access control", "+ metrics", "+ audit", "+ tracing")
DIRECT_LAYERS = LAYERS[:4]
POLICY = """\
clients:
- match: spiffe://netweave.local/client/*
  roles: [o2ims-reader]
tokens:
  scopes: {o2ims.read: o2ims-reader}
direct_calls: [o2ims-admin]
"""


def _passthrough(_self: Any, continuation: Callable[[Any], Any], details: Any) -> Any:
    return continuation(details)


@contextlib.contextmanager
def layers_up_to(layer: str) -> Iterator[None]:
    """The interceptors below `layer` switched off (the audit log and tracing are switched
    by the configuration instead)."""
    with contextlib.ExitStack() as stack:
        if layer == "handler only":
            stack.enter_context(
                mock.patch("server.auth.AuthInterceptor.intercept_service", _passthrough)
            )
        if layer in ("handler only", "+ access control"):
            stack.enter_context(
                mock.patch("server.metrics.MetricsInterceptor.intercept_service", _passthrough)
            )
        yield


class DiscardingCollector:
    """An OTLP/gRPC trace endpoint that answers every Export without decoding it."""

    def __init__(self) -> None:
        def export(_request: bytes, _context: Any) -> bytes:
            return b""  # an empty ExportTraceServiceResponse

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(export)},
        )
        self._server = grpc.server(ThreadPoolExecutor(2), handlers=[handler])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)


class Setup:
    """What every variant shares: Redis, an adapter serving one pool, the PKIs, the policy."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.redis = RedisServer(root / "redis").start()
        self.publisher = ObjectSetPublisher()
        self.publisher.replace(
            [
                domain_pb2.InventoryObject(
                    resource_pool=domain_pb2.ResourcePool(resource_pool_id=POOL_ID, name="p")
                )
            ]
        )
        self.adapter_server, port = create_adapter_server(
            AdapterServicer("static", "static", "bench", self.publisher)
        )
        self.adapter = f"127.0.0.1:{port}"
        self.smo = ensure_dev_pki(root / "pki")
        self.internal = ensure_internal_pki(root / "internal-pki")
        self.policy = root / "policy.yaml"
        self.policy.write_text(POLICY)
        claims = {"sub": "smo-bench", "scope": "o2ims.read", "iss": "bench"}
        self.forwarded = [
            ("x-netweave-client-cert", urllib.parse.quote(self.smo.client_cert.read_text())),
            (
                "x-jwt-payload",
                base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode(),
            ),
            ("x-netweave-via-edge", "1"),
            ("x-envoy-original-method", "GET"),
            ("x-envoy-original-path", f"/o2ims-infrastructureInventory/v1/resourcePools/{POOL_ID}"),
        ]

    def config(self, audit: Path | None) -> GatewayConfig:
        return GatewayConfig(
            grpc_host="127.0.0.1",
            grpc_port=0,
            ops_host="127.0.0.1",
            ops_port=0,
            redis_url=self.redis.url,
            adapters=(self.adapter,),
            audit_log=str(audit) if audit else "",
            auth_policy=str(self.policy),
            edge_listen="127.0.0.1:0",
            edge_tls_cert=str(self.internal.core.cert),
            edge_tls_key=str(self.internal.core.key),
            edge_client_ca=str(self.internal.ca_cert),
            edge_peer_uri=EDGE_URI,
        )

    def stop(self) -> None:
        self.publisher.close()
        self.adapter_server.stop(grace=None)
        self.redis.stop()


def cpu_per_request(setup: Setup, path: str, audit: Path | None, requests: int) -> float:
    """Seconds of this process's CPU per GetResourcePool on `path`, `requests` of them
    from THREADS client threads against a fresh core."""
    gateway, port = create_server(setup.config(audit))
    gateway.start()
    if path == "edge":
        credentials = grpc.ssl_channel_credentials(
            setup.internal.ca_cert.read_bytes(),
            setup.internal.edge.key.read_bytes(),
            setup.internal.edge.cert.read_bytes(),
        )
        channel = grpc.secure_channel(f"localhost:{gateway.edge_port}", credentials)
    else:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = inv_grpc.InventoryServiceStub(channel)
    request = inv_pb.GetResourcePoolRequest(resource_pool_id=POOL_ID)

    def metadata() -> list[tuple[str, str]]:
        # A request id per call, as Envoy sends; the rest is the same on every call.
        request_id = uuid.uuid4().hex
        headers = [("x-request-id", request_id), ("x-correlation-id", request_id)]
        return [*headers, *setup.forwarded] if path == "edge" else headers

    def ready() -> bool:
        try:
            stub.GetResourcePool(request, metadata=metadata(), timeout=2)
        except grpc.RpcError:
            return False
        return True

    try:
        wait_until(ready, 30, "the core serving the pool")
        for _ in range(200):  # warm-up
            stub.GetResourcePool(request, metadata=metadata())

        def run(count: int) -> None:
            calls = [metadata() for _ in range(count)]
            for call_metadata in calls:
                stub.GetResourcePool(request, metadata=call_metadata)

        started = time.process_time()
        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(run, requests // THREADS) for _ in range(THREADS)]:
                future.result()
        return (time.process_time() - started) / (requests // THREADS * THREADS)
    finally:
        channel.close()
        gateway.stop(grace=None).wait(5)
        if gateway.audit is not None:
            gateway.audit.close()


def measure(
    setup: Setup, collector: DiscardingCollector, path: str, layer: str, *, requests: int, name: str
) -> float:
    audit = setup.root / f"audit-{name}.jsonl" if layer in ("+ audit", "+ tracing") else None
    if layer == "+ tracing":
        tracing.configure("core", tracing.TracingConfig(f"127.0.0.1:{collector.port}"))
    try:
        with layers_up_to(layer):
            return cpu_per_request(setup, path, audit, requests)
    finally:
        if layer == "+ tracing":
            tracing.shutdown()


METHOD = "/o2ims.inventory.v1.InventoryService/GetResourcePool"
CallDetails = collections.namedtuple("CallDetails", ["method", "invocation_metadata"])
Metadatum = collections.namedtuple("Metadatum", ["key", "value"])


class FakeContext:
    """What the layers use of a grpc.ServicerContext, answered from memory."""

    def __init__(self, metadata: tuple[Any, ...], peer_uri: bytes) -> None:
        self._metadata = metadata
        self._auth = {"peer_uri": [peer_uri]} if peer_uri else {}
        self._trailing: tuple[Any, ...] = ()

    def invocation_metadata(self) -> tuple[Any, ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def set_trailing_metadata(self, trailing: tuple[Any, ...]) -> None:
        self._trailing = trailing

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._trailing

    def code(self) -> None:
        return None

    def abort_with_status(self, _status: Any) -> None:
        raise RuntimeError("refused")


def layer_cost(setup: Setup, path: str, layer: str, calls: int) -> float:
    """Seconds of CPU per call of the layers up to `layer` around a handler that does
    nothing, called the way grpc calls them (intercept_service, then the handler), in
    this thread: the layers' own work, without gRPC's or the servicer's."""
    metrics = GatewayMetrics()
    policy = AccessPolicy.load(setup.policy)
    audit = AuditLog(str(setup.root / f"direct-{path}.jsonl")) if layer == "+ audit" else None
    channel = Channel.EDGE if path == "edge" else Channel.INTERNAL
    chain: list[Any] = []
    if layer != "handler only":
        chain.append(
            AuthInterceptor(policy, audit, metrics, channel, EDGE_URI if path == "edge" else "")
        )
    if layer in ("+ metrics", "+ audit"):
        chain.append(MetricsInterceptor(metrics))
    handler = grpc.unary_unary_rpc_method_handler(lambda _request, _context: b"")

    def intercepted(details: Any, position: int = 0) -> Any:
        if position == len(chain):
            return handler
        return chain[position].intercept_service(
            lambda next_details: intercepted(next_details, position + 1), details
        )

    forwarded = setup.forwarded if path == "edge" else []
    # Internal calls are recorded as POSTs with their body (audit.py), as grpcurl's are.
    request = inv_pb.GetResourcePoolRequest(resource_pool_id=POOL_ID)
    contexts = []
    for _ in range(calls):
        request_id = uuid.uuid4().hex
        metadata = tuple(
            Metadatum(key, value)
            for key, value in [
                ("x-request-id", request_id),
                ("x-correlation-id", request_id),
                *forwarded,
            ]
        )
        contexts.append(
            (
                CallDetails(METHOD, metadata),
                FakeContext(metadata, EDGE_URI.encode() if path == "edge" else b""),
            )
        )
    for details, context in contexts[:200]:  # warm-up
        intercepted(details).unary_unary(request, context)
    started = time.process_time()
    for details, context in contexts:
        intercepted(details).unary_unary(request, context)
    if audit is not None:
        audit.close()  # the writer's work is the call's too
    return (time.process_time() - started) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default="internal,edge")
    parser.add_argument(
        "--direct-calls", type=int, default=20000, help="calls per layer without gRPC (0: skip)"
    )
    parser.add_argument("--no-grpc", action="store_true", help="only the layers without gRPC")
    args = parser.parse_args()
    paths = [path for path in args.paths.split(",") if path]
    configure_logging("core", "info")
    results: dict[tuple[str, str], list[float]] = {
        (path, layer): [] for path in paths for layer in LAYERS
    }
    direct: dict[tuple[str, str], list[float]] = {
        (path, layer): [] for path in paths for layer in DIRECT_LAYERS
    }
    with tempfile.TemporaryDirectory(prefix="instr-bench-") as scratch:
        setup = Setup(Path(scratch))
        collector = DiscardingCollector()
        try:
            for round_number in range(args.rounds):
                for path in paths:
                    for layer in DIRECT_LAYERS if args.direct_calls else ():
                        direct[path, layer].append(
                            layer_cost(setup, path, layer, args.direct_calls)
                        )
                    if args.no_grpc:
                        continue
                    for layer in LAYERS:
                        name = f"{path}-{LAYERS.index(layer)}-{round_number}"
                        results[path, layer].append(
                            measure(
                                setup, collector, path, layer, requests=args.requests, name=name
                            )
                        )
        finally:
            collector.stop()
            setup.stop()
    if args.direct_calls:
        print(f"the layers alone, without gRPC: {args.direct_calls} calls, rounds {args.rounds}")
        print(f"{'variant':<20}" + "".join(f"{path + ' us':>12}{'layer':>8}" for path in paths))
        for layer in DIRECT_LAYERS:
            row = ""
            for path in paths:
                value = statistics.median(direct[path, layer]) * 1e6
                below = DIRECT_LAYERS[max(0, DIRECT_LAYERS.index(layer) - 1)]
                added = value - statistics.median(direct[path, below]) * 1e6
                row += f"{value:>12.1f}{added:>8.1f}"
            print(f"{layer:<20}{row}")
    if args.no_grpc:
        return 0
    print(f"requests per round {args.requests}, rounds {args.rounds}, {THREADS} client threads")
    print("CPU per request, us (median); layer: what it adds; ratio: handler only / variant")
    header = "".join(f"{path + ' us':>12}{'layer':>8}{'ratio':>8}" for path in paths)
    print(f"{'variant':<20}{header}")
    for layer in LAYERS:
        row = ""
        for path in paths:
            value = statistics.median(results[path, layer]) * 1e6
            base = statistics.median(results[path, LAYERS[0]]) * 1e6
            below = LAYERS[max(0, LAYERS.index(layer) - 1)]
            added = value - statistics.median(results[path, below]) * 1e6
            row += f"{value:>12.0f}{added:>8.0f}{base / value:>8.2f}"
        print(f"{layer:<20}{row}")
    for (path, layer), values in results.items():
        print(f"per round, {path}, {layer}: {[round(value * 1e6) for value in values]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
