"""What the core's instrumentation costs per request: CPU of a single-object gRPC read with
everything an operator gets (metrics interceptor with its latency histogram and cache-read
counter, authentication/authorization counters, the correlation id bound per call and sent
back, one audit record per call) against the same core with those switched off in-process
(the baseline, measured in the same run, rounds alternating).

Run: .venv/bin/python bench/instrumentation_bench.py [--requests 3000] [--rounds 3]

The client runs in this process too, so both figures include its cost; the difference is
the instrumentation's. Redis is not on this path (reads are answered from the cache), so
o2ims_redis_commands_total costs nothing here (`bench/redis_metrics_bench.py` measures it
per command). A fourth variant adds OpenTelemetry tracing, every call sampled and exported
(BatchSpanProcessor, OTLP/gRPC) to a collector in this process that discards what it gets
without decoding it. Prints the median CPU per request of each variant and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
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
from devstack.processes import wait_until  # noqa: E402
from devstack.redis_server import RedisServer  # noqa: E402
from netweave import tracing  # noqa: E402
from server.app import create_server  # noqa: E402
from server.config import GatewayConfig  # noqa: E402

POOL_ID = "7d1d5a2a-5a47-4c8e-9f0b-0000000000aa"
THREADS = 4


def _passthrough(_self: Any, continuation: Callable[[Any], Any], details: Any) -> Any:
    return continuation(details)


@contextlib.contextmanager
def bare() -> Iterator[None]:
    """The core without its instrumentation: no metrics interceptor, no correlation id,
    no audit record, no auth/authz counters (authentication and policy still run)."""

    with (
        mock.patch("server.metrics.MetricsInterceptor.intercept_service", _passthrough),
        mock.patch("netweave.correlation.from_metadata", lambda _metadata: ("-", False)),
        mock.patch("netweave.correlation.bound", lambda _id: contextlib.nullcontext()),
        mock.patch("server.auth.interceptor._keep_correlation_trailer", lambda *_a: None),
        mock.patch("server.auth.interceptor.AuthInterceptor._count", lambda *_a: None),
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


def cpu_per_request(redis_url: str, adapter: str, audit: Path | None, requests: int) -> float:
    """Seconds of this process's CPU per GetResourcePool, `requests` of them from
    THREADS client threads against a fresh core."""
    config = GatewayConfig(
        grpc_host="127.0.0.1",
        grpc_port=0,
        ops_host="127.0.0.1",
        ops_port=0,
        redis_url=redis_url,
        adapters=(adapter,),
        audit_log=str(audit) if audit else "",
    )
    gateway, port = create_server(config)
    gateway.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = inv_grpc.InventoryServiceStub(channel)
    request = inv_pb.GetResourcePoolRequest(resource_pool_id=POOL_ID)

    def ready() -> bool:
        try:
            stub.GetResourcePool(request, timeout=2)
        except grpc.RpcError:
            return False
        return True

    try:
        wait_until(ready, 30, "the core serving the pool")
        for _ in range(200):  # warm-up
            stub.GetResourcePool(request)

        def run(count: int) -> None:
            for _ in range(count):
                stub.GetResourcePool(request)

        started = time.process_time()
        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(run, requests // THREADS) for _ in range(THREADS)]:
                future.result()
        return (time.process_time() - started) / (requests // THREADS * THREADS)
    finally:
        channel.close()
        gateway.stop(grace=None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="instr-bench-") as scratch:
        root = Path(scratch)
        redis = RedisServer(root / "redis").start()
        publisher = ObjectSetPublisher()
        publisher.replace(
            [
                domain_pb2.InventoryObject(
                    resource_pool=domain_pb2.ResourcePool(resource_pool_id=POOL_ID, name="p")
                )
            ]
        )
        server, adapter_port = create_adapter_server(
            AdapterServicer("static", "static", "bench", publisher)
        )
        adapter = f"127.0.0.1:{adapter_port}"
        collector = DiscardingCollector()
        shipped: list[float] = []
        traced: list[float] = []
        unaudited: list[float] = []
        baseline: list[float] = []
        try:
            for round_number in range(args.rounds):
                audit = root / f"audit-{round_number}.jsonl"
                shipped.append(cpu_per_request(redis.url, adapter, audit, args.requests))
                unaudited.append(cpu_per_request(redis.url, adapter, None, args.requests))
                tracing.configure("core", tracing.TracingConfig(f"127.0.0.1:{collector.port}"))
                try:
                    traced.append(cpu_per_request(redis.url, adapter, audit, args.requests))
                finally:
                    tracing.shutdown()
                with bare():
                    baseline.append(cpu_per_request(redis.url, adapter, None, args.requests))
        finally:
            collector.stop()
            publisher.close()
            server.stop(grace=None)
            redis.stop()
    with_us = statistics.median(shipped) * 1e6
    no_audit_us = statistics.median(unaudited) * 1e6
    traced_us = statistics.median(traced) * 1e6
    without_us = statistics.median(baseline) * 1e6
    print(f"requests per round {args.requests}, rounds {args.rounds}, {THREADS} client threads")
    print(f"{'variant':<42}{'CPU/request (us)':>18}")
    print(f"{'without instrumentation (baseline)':<42}{without_us:>18.0f}")
    print(f"{'metrics and correlation, no audit log':<42}{no_audit_us:>18.0f}")
    print(f"{'as shipped (metrics, correlation, audit)':<42}{with_us:>18.0f}")
    print(f"{'as shipped + tracing (every call sampled)':<42}{traced_us:>18.0f}")
    print(f"ratio {with_us / without_us:.2f}x, instrumentation {with_us - without_us:.0f} us")
    print(f"tracing on: {traced_us / with_us:.2f}x, {traced_us - with_us:.0f} us per call")
    print(f"per round, shipped: {[round(x * 1e6) for x in shipped]}")
    print(f"per round, no audit: {[round(x * 1e6) for x in unaudited]}")
    print(f"per round, baseline: {[round(x * 1e6) for x in baseline]}")
    print(f"per round, traced: {[round(x * 1e6) for x in traced]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
