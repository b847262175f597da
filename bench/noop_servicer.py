"""A no-op InventoryService: the ceiling the core is measured against (bench/stack_bench.py).

It runs on the core's gRPC server construction (netweave.grpc_server.new_server with the
core's thread count, options and concurrency cap, health and reflection registered as on
the core's internal listener) and answers GetResourcePool with a fixed, pre-built response:
the message the core answered for the same pool (serialized again on every call, as the
core does), so the wire work is the same and everything the core costs beyond it is its own
per-call work. No interceptors, no lookups.

    python -m bench.noop_servicer --port 0 --response pool.bin   (prints "port N", then serves)
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
from o2ims.inventory.v1 import inventory_pb2 as inv_pb
from o2ims.inventory.v1 import inventory_pb2_grpc as inv_grpc

from netweave import settings
from netweave.grpc_server import (
    BOUNDED_CONNECTION_OPTIONS,
    add_health_and_reflection,
    new_server,
    set_serving,
)

SERVICE = inv_pb.DESCRIPTOR.services_by_name["InventoryService"].full_name


class NoopInventoryServicer(inv_grpc.InventoryServiceServicer):
    """GetResourcePool answers `response` whatever the request; every other method is the
    generated UNIMPLEMENTED."""

    def __init__(self, response: inv_pb.ResourcePoolInfo) -> None:
        self._response = response

    def GetResourcePool(
        self, request: inv_pb.GetResourcePoolRequest, context: Any
    ) -> inv_pb.ResourcePoolInfo:
        return self._response


def create_server(
    response: inv_pb.ResourcePoolInfo,
    address: str = "127.0.0.1:0",
    workers: int = settings.GRPC_WORKERS.default,
) -> tuple[grpc.Server, int]:
    """A started no-op server on `address` and its bound port, built as the core builds its
    internal listener (server/app.py Gateway._new_server, less the interceptors)."""
    server = new_server(
        workers,
        options=BOUNDED_CONNECTION_OPTIONS,
        name="grpc-noop",
        max_concurrent_rpcs=4 * workers,
    )
    # Registered through the generated function, as the core's servicers are (grpcio's
    # registered-method fast path included). The stubs declare every method abstract; the
    # generated base class answers UNIMPLEMENTED for those not overridden.
    servicer = NoopInventoryServicer(response)  # type: ignore[abstract]
    inv_grpc.add_InventoryServiceServicer_to_server(servicer, server)
    health = add_health_and_reflection(server, [SERVICE])
    port = server.add_insecure_port(address)
    server.start()
    set_serving(health, [SERVICE], True)
    return server, port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument(
        "--response", type=Path, required=True, help="a serialized ResourcePoolInfo"
    )
    parser.add_argument("--workers", type=int, default=settings.GRPC_WORKERS.default)
    args = parser.parse_args(argv)
    response = inv_pb.ResourcePoolInfo.FromString(args.response.read_bytes())
    server, port = create_server(response, f"127.0.0.1:{args.port}", args.workers)
    print(f"port {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
