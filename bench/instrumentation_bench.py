"""What the core's per-call work costs: CPU of a single-object gRPC read (GetResourcePool)
layer by layer, on both of the core's listeners, every variant measured in the same run with
rounds alternating.

Layers, each on top of the one before:
  no-op              bench/noop_servicer.py (the core's gRPC server construction, no
                     interceptors) answering what the core answers: the floor (internal only)
  handler only       the servicer behind the gRPC server (the access control guard
                     switched off in-process; the stream limiter and the major gate stay)
  + access control   server/auth: the caller's identity, the policy's decision, the
                     correlation id (bound, sent back), o2ims_auth/o2ims_authz counters
                     (the guard's counting of each call switched off)
  + metrics          what the guard counts of each call (server/metrics.py MethodCounts):
                     request counter, latency histogram, cache-read counter
  + audit            one audit record per call (NETWEAVE_AUDIT_LOG, a file)
  + tracing          OpenTelemetry, every call sampled and exported (BatchSpanProcessor,
                     OTLP/gRPC) to a collector in this process that discards what it gets

Paths:
  internal  plaintext loopback listener, no identity headers (operators' grpcurl)
  edge      the edge listener (mutual TLS, the client presents the edge's certificate) with
            what Envoy forwards on every call: the SMO's certificate (URL-encoded PEM), the
            token's claims, x-request-id / x-correlation-id and the REST method and path

Run: .venv/bin/python bench/instrumentation_bench.py [--requests 3000] [--rounds 3]
     [--paths internal,edge] [--layers "no-op,handler only,..."] [--direct-calls 20000]
     [--no-grpc]

Two measurements:
  the layers alone   the interceptors called as grpc calls them (intercept_service, then
                     the handler) around a handler that does nothing, in one thread with a
                     context answered from memory, the audit writer's thread included: the
                     layers' own CPU per call, steady to a microsecond or two on a busy host
  through gRPC       the server's CPU per GetResourcePool against a fresh core in this
                     process, driven by h2load (-c 4 -m 4, another process; to the edge
                     listener through bench/tls_relay.py presenting the edge's certificate,
                     the forwarded headers as h2load headers), every response checked by
                     its bytes: what a call costs the server end to end (gRPC's threads,
                     TLS, serialization, the layers)

The through-gRPC differences are tens of microseconds out of ~300 and move by +-100 us
between rounds on a shared 2-CPU machine: read them from several rounds, and the layers' own
cost from the first measurement. The process logs as the core does (JSON at info,
netweave/logs.py: the per-call debug line is filtered). Redis is not on this path (reads
are answered from the in-process cache).

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

Second pass (issue 18, the core's per-call overhead): py-spy and per-thread /proc figures of
a core under h2load (bench/stack_bench.py's stack) showed that what is left is mostly gRPC's
own thread hand-offs, not these layers; of the layers, the audit record of a gRPC call was
the largest (its body converted to JSON and redacted on every call). The body member is now
remembered per request bytes, and the fields that repeat from call to call are encoded once.
The layers alone, 20,000 calls x 3 rounds x 2 runs alternating the two trees, medians of
the runs, us of CPU per call (cumulative; before -> after):

  variant             internal        edge
  + access control     5.6 -> 7.6      6.6 -> 8.9    (unchanged code: the spread)
  + metrics            8.9 -> 10.1    12.9 -> 14.2   (unchanged code: the spread)
  + audit             31.0 -> 21.0    24.8 -> 23.1   internal calls' bodies remembered

Through gRPC the same two runs (6 rounds each) gave medians that moved more between runs
than any layer costs (the unchanged no-op: 180 -> 286 us, rounds from 134 to 446 us, with
the host's load average between 5 and 12): no layer's through-gRPC cost is resolved on
this machine; the ratio of the full core (+ audit) to the no-op in the same run went from
0.50 to 0.67 on the internal listener.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import math
import shutil
import statistics
import subprocess
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
sys.path.insert(0, str(REPO / "bench"))  # its siblings, as top-level modules

import grpc  # noqa: E402
from noop_servicer import create_server as create_noop_server  # noqa: E402
from o2ims.adapter.v1 import domain_pb2  # noqa: E402
from o2ims.inventory.v1 import inventory_pb2 as inv_pb  # noqa: E402
from o2ims.inventory.v1 import inventory_pb2_grpc as inv_grpc  # noqa: E402
from proc_cpu import own_cpu_seconds  # noqa: E402
from tls_relay import RelayTls, start_relay  # noqa: E402

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
from server.metrics import GatewayMetrics  # noqa: E402

POOL_ID = "7d1d5a2a-5a47-4c8e-9f0b-0000000000aa"
H2LOAD_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]
LAYERS = ("no-op", "handler only", "+ access control", "+ metrics", "+ audit", "+ tracing")
DIRECT_LAYERS = LAYERS[1:5]
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
            stack.enter_context(uncounted())
        yield


@contextlib.contextmanager
def uncounted() -> Iterator[None]:
    """What the guard counts of each call (MethodCounts) switched off."""
    with (
        mock.patch("server.metrics.MethodCounts.started", lambda _self, _metadata: None),
        mock.patch("server.metrics.MethodCounts.finished", lambda _self, _code, _seconds: None),
    ):
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


def h2load_cpu(
    url: str, headers: list[tuple[str, str]], requests: int, response: inv_pb.ResourcePoolInfo
) -> float:
    """Seconds of this process's CPU (the server's: the client is h2load, another process)
    per GetResourcePool call, `requests` of them over 4 connections x 4 streams. Raises
    unless every call got `response` (h2load counts an error's HTTP 200 as a success:
    the response bytes tell)."""
    body = Path(tempfile.mkstemp(prefix="instr-request-", suffix=".bin")[1])
    message = inv_pb.GetResourcePoolRequest(resource_pool_id=POOL_ID).SerializeToString()
    body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    argv = ["h2load", "-n", str(requests), "-c", "4", "-m", "4", "-t", "1", "-d", str(body)]
    for key, value in [*H2LOAD_HEADERS, *headers]:
        argv += ["-H", f"{key}: {value}"]
    try:
        # Warm-up (connections, the admission and wrapper caches), then the measured run.
        subprocess.run([*argv[:2], "200", *argv[3:], url], capture_output=True, check=True)
        started = own_cpu_seconds()
        done = subprocess.run([*argv, url], capture_output=True, text=True, check=True)
        spent = own_cpu_seconds() - started
    finally:
        body.unlink()
    expected = requests * (5 + response.ByteSize())  # gRPC frames: 5 bytes + the message
    if f"{requests} succeeded" not in done.stdout or f"({expected}) data" not in done.stdout:
        raise RuntimeError(
            f"h2load: not every call got the pool ({expected} response bytes):\n{done.stdout}"
        )
    return spent / requests


def cpu_per_request(setup: Setup, path: str, audit: Path | None, requests: int) -> float:
    """Seconds of the server's CPU per GetResourcePool on `path` against a fresh core in
    this process (h2load is the client; for the edge through a TLS relay presenting the
    edge's certificate, with what Envoy forwards as headers)."""
    gateway, port = create_server(setup.config(audit))
    gateway.start()
    relay: Any = None
    try:
        response = wait_for_pool(f"127.0.0.1:{port}")
        if path == "edge":
            relay, relay_port = start_relay(
                gateway.edge_port,
                RelayTls(setup.internal.edge.cert, setup.internal.edge.key, setup.internal.ca_cert),
                setup.root / "relay",
            )
            # One request id for every call (h2load sends the same headers each time).
            request_id = uuid.uuid4().hex
            headers = [("x-request-id", request_id), ("x-correlation-id", request_id)]
            url = f"http://127.0.0.1:{relay_port}{METHOD}"
            return h2load_cpu(url, [*headers, *setup.forwarded], requests, response)
        return h2load_cpu(f"http://127.0.0.1:{port}{METHOD}", [], requests, response)
    finally:
        if relay is not None:
            relay.stop()
        gateway.stop(grace=None).wait(5)
        if gateway.audit is not None:
            gateway.audit.close()


def wait_for_pool(address: str) -> inv_pb.ResourcePoolInfo:
    """The pool as the server at `address` answers it, once it does."""
    answer: list[inv_pb.ResourcePoolInfo] = []
    with grpc.insecure_channel(address) as channel:
        stub = inv_grpc.InventoryServiceStub(channel)
        request = inv_pb.GetResourcePoolRequest(resource_pool_id=POOL_ID)

        def ready() -> bool:
            try:
                answer.append(stub.GetResourcePool(request, timeout=2))
            except grpc.RpcError:
                return False
            return True

        wait_until(ready, 30, "the core serving the pool")
    return answer[-1]


def noop_cpu_per_request(setup: Setup, requests: int) -> float:
    """The same measurement against the no-op servicer (bench/noop_servicer.py) answering
    what the core answers."""
    gateway, port = create_server(setup.config(None))
    gateway.start()
    try:
        response = wait_for_pool(f"127.0.0.1:{port}")
    finally:
        gateway.stop(grace=None).wait(5)
    server, noop_port = create_noop_server(response)
    try:
        return h2load_cpu(f"http://127.0.0.1:{noop_port}{METHOD}", [], requests, response)
    finally:
        server.stop(grace=None)


def measure(
    setup: Setup, collector: DiscardingCollector, path: str, layer: str, *, requests: int, name: str
) -> float:
    if layer == "no-op":
        return noop_cpu_per_request(setup, requests)
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
    with uncounted() if layer == "+ access control" else contextlib.nullcontext():
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
    parser.add_argument(
        "--layers",
        default=",".join(LAYERS),
        help="the variants measured through gRPC, comma-separated (each includes the layers "
        "listed before it)",
    )
    args = parser.parse_args()
    paths = [path for path in args.paths.split(",") if path]
    layers = [layer.strip() for layer in args.layers.split(",") if layer.strip()]
    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown:
        parser.error(f"unknown layers {unknown}; known: {', '.join(LAYERS)}")
    if not args.no_grpc and shutil.which("h2load") is None:
        parser.error("h2load not found: install nghttp2-client (make system-deps), or --no-grpc")
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
                    for layer in layers:
                        if layer == "no-op" and path != "internal":
                            continue  # the no-op servicer has no edge listener
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
    print_grpc_table(results, paths, layers, args.requests, args.rounds)
    return 0


def print_grpc_table(
    results: dict[tuple[str, str], list[float]],
    paths: list[str],
    layers: list[str],
    requests: int,
    rounds: int,
) -> None:
    print(f"requests per round {requests} (h2load -c 4 -m 4), rounds {rounds}")
    print(
        "the server's CPU per request, us (median); layer: what it adds; "
        "ratio: the first variant measured on that path (no-op on internal) / variant"
    )
    header = "".join(f"{path + ' us':>12}{'layer':>8}{'ratio':>8}" for path in paths)
    print(f"{'variant':<20}{header}")
    for layer in layers:
        row = ""
        for path in paths:
            value = _median_us(results[path, layer])
            measured = [_median_us(results[path, other]) for other in layers]
            base = next((v for v in measured if not math.isnan(v)), math.nan)
            index = layers.index(layer)
            below = measured[index - 1] if index else math.nan
            added = 0.0 if math.isnan(below) else value - below
            row += f"{value:>12.0f}{added:>8.0f}{base / value:>8.2f}"
        print(f"{layer:<20}{row}")
    for (path, layer), values in results.items():
        if values:
            print(f"per round, {path}, {layer}: {[round(value * 1e6) for value in values]}")


def _median_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6 if values else math.nan


if __name__ == "__main__":
    raise SystemExit(main())
