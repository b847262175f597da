"""Several core processes (NETWEAVE_CORE_PROCESSES, server/workers.py): one against two.

Starts the local stack (Redis, the static adapter's example inventory, the core, Envoy; no
notifier) once per configuration, the same inventory every time, and saturates with h2load
a single-object read (GetResourcePool):

  core direct   the internal listener, shared by the workers with SO_REUSEPORT: h2load's
                connections are spread over the workers by the kernel's hash
  Envoy gRPC    through Envoy as native gRPC (TLS, client certificate, through the client
                side TLS relay of bench/tls_relay.py): Envoy lists each worker's own edge
                port as an endpoint of its core cluster and balances per request

For each run: req/s, CPU per request of every core process (the supervisor and each worker,
from /proc/PID/stat), how the requests split over the workers (their
o2ims_grpc_requests_total on the pod's /metrics), and the ratio of each configuration's
req/s to the first one's. Rounds alternate the configurations' paths so a noisy neighbour
hits them alike; medians reported.

    .venv/bin/python -m bench.core_processes_bench [--processes 1,2] [--grpc-workers 8]
        [--requests 20000] [--runs 3] [--connections 16] [--streams 1] [--no-envoy]
        [--affinity auto|spread|off,...]

Thread counts: `--processes 1 --grpc-workers 4,8,16 --no-envoy`. h2load counts HTTP 200
and ignores grpc-status, so every run is also checked by its response bytes.

The server model: `--noop-models` measures, instead of the core, the no-op servicer of
bench/noop_servicer.py (sync grpc.server, ThreadPoolExecutor of --grpc-workers threads)
against the same no-op on grpc.aio (one event loop, `async def` handler), same response,
same h2load shape.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from o2ims.inventory.v1 import inventory_pb2 as inv_pb
from o2ims.inventory.v1 import inventory_pb2_grpc as inv_grpc
from prometheus_client.parser import text_string_to_metric_families

from devstack.processes import ManagedProcess, free_port, port_open, wait_until
from devstack.stack import LocalStack, StackConfig
from netweave.grpc_server import BOUNDED_CONNECTION_OPTIONS, SERVER_OPTIONS
from netweave.settings import CPU_AFFINITY

# The bench/ scripts import their siblings as top-level modules (bench/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_bench import (
    GRPC_HEADERS,
    GRPC_METHOD,
    UNLIMITED_RPS,
    Target,
    bench_policy,
    edge_channel,
    first_pool,
    get_pool,
    grpc_frame,
    h2load,
    start_client_relay,
    start_noop,
)
from stack_results import Run


@dataclass(frozen=True)
class Setup:
    """One configuration of the core."""

    processes: int
    grpc_workers: int
    # NETWEAVE_CORE_CPU_AFFINITY
    affinity: str = "auto"

    @property
    def label(self) -> str:
        if not self.grpc_workers:
            return "grpc.aio"
        return f"{self.processes} proc x {self.grpc_workers} thr, {self.affinity}"


@dataclass
class Result:
    setup: Setup
    path: str
    runs: list[Run] = field(default_factory=list)
    # Requests each worker served in the measured runs (share of the total).
    split: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(run.rps for run in self.runs)

    def cpu_us(self, role: str) -> float:
        return statistics.median(run.cpu_us.get(role, 0.0) for run in self.runs)


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's children, in start order (a single core: itself)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return sorted(int(pid) for pid in children) or [supervisor]


def served_by_worker(ops_url: str) -> dict[str, float]:
    """o2ims_grpc_requests_total summed by the `worker` label ("" for a single core)."""
    text = urllib.request.urlopen(f"{ops_url}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "o2ims_grpc_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                worker = sample.labels.get("worker", "")
                counts[worker] = counts.get(worker, 0.0) + sample.value
    return counts


@dataclass
class Running:
    setup: Setup
    stack: LocalStack
    targets: list[Target]


@contextmanager
def running(setup: Setup, root: Path, envoy: bool) -> Iterator[Running]:
    """The stack with `setup`'s core, and its paths checked once with a real client."""
    state = root / f"p{setup.processes}-t{setup.grpc_workers}-{setup.affinity}"
    state.mkdir()
    config = StackConfig.ephemeral(
        state,
        auth_policy=bench_policy(state),
        rate_limit_rps=UNLIMITED_RPS,
        notifiers=0,
        core_processes=setup.processes,
        extra_core_env={
            "NETWEAVE_GRPC_WORKERS": str(setup.grpc_workers),
            "NETWEAVE_CORE_CPU_AFFINITY": setup.affinity,
        },
    )
    stack = LocalStack(config)
    started: list[ManagedProcess] = []
    stack.start()
    try:
        assert stack.core is not None and stack.envoy is not None
        pool_id, response = first_pool(stack)
        request = state / "request.bin"
        request.write_bytes(
            grpc_frame(inv_pb.GetResourcePoolRequest(resource_pool_id=pool_id).SerializeToString())
        )
        grpc_bytes = len(grpc_frame(response.SerializeToString()))
        pids = worker_pids(stack.core.pid)
        core_roles = {"supervisor": stack.core.pid} if setup.processes > 1 else {}
        core_roles |= {f"worker{index}": pid for index, pid in enumerate(pids)}
        targets = [
            Target(
                "core direct",
                f"http://{stack.grpc_address}{GRPC_METHOD}",
                GRPC_HEADERS,
                request,
                core_roles,
                grpc_bytes,
            )
        ]
        if envoy:
            with edge_channel(stack) as channel:
                if get_pool(channel, pool_id) != response:
                    raise RuntimeError("Envoy's gRPC route does not answer what the core answers")
            relay, relay_port = start_client_relay(stack, state, started)
            targets.append(
                Target(
                    "Envoy gRPC",
                    f"http://127.0.0.1:{relay_port}{GRPC_METHOD}",
                    (*GRPC_HEADERS, f":authority: localhost:{stack.config.rest_port}"),
                    request,
                    core_roles | {"envoy": stack.envoy.process.pid},
                    grpc_bytes,
                    {"relay": relay.pid},
                )
            )
        yield Running(setup, stack, targets)
    finally:
        for process in started:
            process.stop()
        stack.stop()


def measure(setups: list[Setup], args: argparse.Namespace, root: Path) -> list[Result]:
    """Every setup's stack up at once (so rounds can alternate them), then `runs` rounds."""
    results: dict[tuple[Setup, str], Result] = {}
    with ExitStack() as stacks:
        stacks_up = []
        for setup in setups:
            progress(f"starting the stack with {setup.label}")
            stacks_up.append(stacks.enter_context(running(setup, root, args.envoy)))
        for up in stacks_up:
            for target in up.targets:  # warm-up: connections, caches, code paths
                h2load(target, max(200, args.requests // 10), args.connections, args.streams)
        for round_number in range(args.runs):
            for up in stacks_up:
                for target in up.targets:
                    progress(f"round {round_number + 1}: {up.setup.label}, {target.name}")
                    before = served_by_worker(up.stack.ops_url)
                    run = h2load(target, args.requests, args.connections, args.streams)
                    after = served_by_worker(up.stack.ops_url)
                    result = results.setdefault(
                        (up.setup, target.name), Result(up.setup, target.name)
                    )
                    result.runs.append(run)
                    served = {w: after[w] - before.get(w, 0.0) for w in sorted(after)}
                    total = sum(served.values()) or 1.0
                    result.split = [served[w] / total for w in sorted(served)]
    return list(results.values())


def report(results: list[Result]) -> None:
    print(
        f"\n{'path':<12} {'setup':<18} {'req/s':>8} {'ratio':>6} {'core CPU us/req':>16} "
        f"{'per process (us/req)':<40} {'split over workers':<20} {'envoy us/req':>12}"
    )
    baseline: dict[str, float] = {}
    for result in results:
        first = baseline.setdefault(result.path, result.rps)
        roles = sorted({role for run in result.runs for role in run.cpu_us})
        core_roles = [r for r in roles if r.startswith(("worker", "supervisor"))]
        core_total = sum(result.cpu_us(role) for role in core_roles)
        per_process = ", ".join(f"{role} {result.cpu_us(role):.0f}" for role in core_roles)
        split = "/".join(f"{share:.0%}" for share in result.split)
        envoy = f"{result.cpu_us('envoy'):.0f}" if "envoy" in roles else "-"
        print(
            f"{result.path:<12} {result.setup.label:<18} {result.rps:>8.0f} "
            f"{result.rps / first:>5.2f}x {core_total:>16.0f} {per_process:<40} "
            f"{split:<20} {envoy:>12}"
        )


# --- the server model: sync against grpc.aio, on the no-op ------------------------------


class AioNoopServicer(inv_grpc.InventoryServiceServicer):
    """bench/noop_servicer.py's no-op, on grpc.aio: GetResourcePool answers `response`."""

    def __init__(self, response: inv_pb.ResourcePoolInfo) -> None:
        self._response = response

    async def GetResourcePool(
        self, request: inv_pb.GetResourcePoolRequest, context: object
    ) -> inv_pb.ResourcePoolInfo:
        return self._response


async def serve_aio_noop(port: int, response_path: Path) -> None:
    response = inv_pb.ResourcePoolInfo.FromString(response_path.read_bytes())
    options = dict(SERVER_OPTIONS) | dict(BOUNDED_CONNECTION_OPTIONS)
    server = grpc.aio.server(options=list(options.items()))
    servicer = AioNoopServicer(response)  # type: ignore[abstract]
    inv_grpc.add_InventoryServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(None)


def noop_models(args: argparse.Namespace, root: Path) -> list[Result]:
    """The no-op servicer, sync and grpc.aio, alternating rounds."""
    response = inv_pb.ResourcePoolInfo(
        resource_pool_id="9a6a0d5e-0000-4000-8000-000000000001",
        name="pool",
        description="a resource pool of the bench",
        location="lab",
        global_location_id="9a6a0d5e-0000-4000-8000-000000000002",
    )
    response_path = root / "pool.bin"
    response_path.write_bytes(response.SerializeToString())
    request = root / "request.bin"
    request.write_bytes(
        grpc_frame(
            inv_pb.GetResourcePoolRequest(
                resource_pool_id=response.resource_pool_id
            ).SerializeToString()
        )
    )
    grpc_bytes = len(grpc_frame(response.SerializeToString()))
    workers = args.grpc_workers[0]
    sync, sync_port = start_noop(response_path, root, workers)
    aio_port = free_port()
    aio = ManagedProcess(
        "noop-aio",
        [
            sys.executable,
            "-m",
            "bench.core_processes_bench",
            "--serve-aio-noop",
            str(aio_port),
            "--response",
            str(response_path),
        ],
        root / "noop-aio.log",
        cwd=Path(__file__).resolve().parent.parent,
    ).start()
    try:
        wait_until(lambda: port_open(aio_port), 30, "the aio no-op", require=aio.require_alive)
        models = [
            (Setup(1, workers), f"sync x{workers}", sync.pid, sync_port),
            (Setup(1, 0), "aio", aio.pid, aio_port),
        ]
        results = {name: Result(setup, "no-op") for setup, name, _, _ in models}
        targets = {
            name: Target(
                name,
                f"http://127.0.0.1:{port}{GRPC_METHOD}",
                GRPC_HEADERS,
                request,
                {"worker0": pid},
                grpc_bytes,
            )
            for _, name, pid, port in models
        }
        for target in targets.values():
            h2load(target, max(200, args.requests // 10), args.connections, args.streams)
        for round_number in range(args.runs):
            for name, target in targets.items():
                progress(f"round {round_number + 1}: no-op {name}")
                run = h2load(target, args.requests, args.connections, args.streams)
                results[name].runs.append(run)
                results[name].split = [1.0]
        return list(results.values())
    finally:
        aio.stop()
        sync.stop()


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def numbers(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def affinities(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    for value in values:
        CPU_AFFINITY.parse(value)
    if not values:
        raise argparse.ArgumentTypeError("expected auto, spread or off")
    return values


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=numbers, default=[1, 2], help="e.g. 1,2")
    parser.add_argument("--grpc-workers", type=numbers, default=[8], help="e.g. 4,8,16")
    parser.add_argument("--requests", type=int, default=20_000, help="h2load requests per run")
    parser.add_argument("--runs", type=int, default=3)
    # Several connections: the kernel spreads connections (not requests) over the workers.
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--streams",
        type=int,
        default=1,
        help="streams per connection (connections x streams must stay under each core's "
        "concurrency cap on the internal listener, 4 x threads)",
    )
    parser.add_argument(
        "--affinity",
        type=affinities,
        default=["auto"],
        help="NETWEAVE_CORE_CPU_AFFINITY of each setup, e.g. off,spread (auto: one CPU per "
        "worker when the machine has as many CPUs as workers)",
    )
    parser.add_argument("--no-envoy", dest="envoy", action="store_false")
    parser.add_argument(
        "--noop-models", action="store_true", help="sync against grpc.aio, on the no-op"
    )
    parser.add_argument("--serve-aio-noop", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--response", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if args.serve_aio_noop is not None:
        asyncio.run(serve_aio_noop(args.serve_aio_noop, args.response))
        return 0
    if shutil.which("h2load") is None:
        print("h2load not found: install nghttp2-client (make system-deps)", file=sys.stderr)
        return 2
    setups = [
        Setup(p, t, a) for a in args.affinity for p in args.processes for t in args.grpc_workers
    ]
    loadavg = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="netweave-core-processes-bench-") as tmp:
        if args.noop_models:
            results = noop_models(args, Path(tmp))
        else:
            results = measure(setups, args, Path(tmp))
    print(
        f"\nh2load -n {args.requests} -c {args.connections} -m {args.streams}, "
        f"{args.runs} rounds, medians; ratio: req/s against the first setup"
    )
    report(results)
    print(
        f"\nmachine: {os.cpu_count()} CPUs, load average (1 min) {loadavg[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; grpcio {grpc.__version__}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
