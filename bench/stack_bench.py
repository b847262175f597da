"""The one benchmark of a single-object read (GetResourcePool), side by side in one run:

  no-op          a no-op servicer on the core's gRPC server construction (bench/noop_servicer.py)
  core direct    the core's internal listener (plaintext gRPC)
  Envoy gRPC     the core through Envoy as native gRPC (TLS, client certificate)
  REST cert      REST through Envoy with a client certificate (transcoding, shaper, rate limit)
  REST token     the same with a bearer token from the stack's dev issuer as well
  floor gRPC     a second, minimal Envoy (bench/envoy_floor.py): the edge's TLS, the router
                 alone, the edge's mutual TLS to the core: what Envoy cannot do without
  floor REST     the same with the edge's gRPC-JSON transcoder, nothing else

Saturated: h2load sends a fixed number of requests over a few connections and streams, three
rounds (each round visits every path, so a noisy neighbour hits all of them alike), medians
reported; CPU per request of every process on the path from /proc/PID/stat (utime + stime)
before and after each run, with the core's and the no-op's system time and their threads'
voluntary context switches per request (the gRPC server's thread hand-offs show there, not
in Python profiles). Open loop: latency p50/p90/p99/max at fixed offered rates through
the full REST stack with a client certificate, measured from each request's scheduled time
(bench/open_loop.py). Ratios against the no-op and the core direct are printed with the table,
and the edge's Envoy CPU per request against the floor's (what the components allow here).

    .venv/bin/python -m bench.stack_bench [--requests 5000] [--runs 3] [--pinned-runs 5]
        [--rates 200,500,1000] [--duration 10] [--grpc-workers N] [--envoy-concurrency N]
        [--no-floor] [--no-pin] [--json results.json]

h2load cannot present a client certificate: through Envoy it speaks cleartext HTTP/2 to a
client-side TLS relay (bench/tls_relay.py), whose CPU is reported apart as the load
generator's. h2load counts HTTP 200 and ignores grpc-status, so every run is also checked by
its response bytes (each request must get the full response a real client got). The stack
runs without a notifier (not on the read path) and with edge rate limits far above what is
offered (the limiter runs, it never refuses).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from o2ims.inventory.v1 import inventory_pb2 as inv_pb
from o2ims.inventory.v1 import inventory_pb2_grpc as inv_grpc

from devstack.load import percentile
from devstack.processes import ManagedProcess, free_port, port_open, wait_until
from devstack.stack import DEFAULT_POLICY, REPO, LocalStack, StackConfig
from netweave import settings

# The bench/ scripts import their siblings as top-level modules (bench/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from envoy_floor import FloorEnvoy, start_floor
from open_loop import OpenLoopResult, run_open_loop
from proc_cpu import Usage, children_cpu_seconds, cpu_seconds, own_cpu_seconds
from stack_results import (
    CORE_DIRECT,
    FLOOR_GRPC,
    FLOOR_REST,
    NOOP,
    PathResult,
    RateResult,
    Run,
    headline,
    open_loop_headline,
    open_loop_table,
    pinned_headline,
    round_ratios,
    saturated_table,
)
from tls_relay import RelayTls, start_relay

GRPC_METHOD = "/o2ims.inventory.v1.InventoryService/GetResourcePool"
REST_POOL = "/o2ims-infrastructureInventory/v1/resourcePools/{pool}"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
# Far above any offered rate: the edge's limiter runs on every request but never refuses.
UNLIMITED_RPS = 1_000_000


@dataclass(frozen=True)
class Target:
    """One path to the same read: where h2load sends it and which processes serve it."""

    name: str
    url: str
    headers: tuple[str, ...]
    body: Path | None
    # Processes of the gateway on this path, by role ("core", "envoy", "no-op").
    servers: dict[str, int]
    # Data bytes every successful response carries (checked against h2load's total).
    response_bytes: int
    # Load-generator side processes besides h2load (the TLS relay).
    clients: dict[str, int] = field(default_factory=dict)


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded")
_DATA = re.compile(r"\((\d+)\) data")
_MEAN = re.compile(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)")


def parse_h2load(output: str) -> tuple[float, float, int, int, float]:
    """(elapsed s, req/s, succeeded, data bytes, mean latency ms) from h2load's summary."""
    finished = _FINISHED.search(output)
    requests = _REQUESTS.search(output)
    data = _DATA.search(output)
    mean = _MEAN.search(output)
    if not (finished and requests and data and mean):
        raise RuntimeError(f"cannot read h2load's summary:\n{output}")
    elapsed = float(finished[1]) / (1000 if finished[2] == "ms" else 1)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[mean[2]]
    return elapsed, float(finished[3]), int(requests[2]), int(data[1]), float(mean[1]) * scale


def h2load(
    path: Target, requests: int, connections: int, streams: int, cpu: int | None = None
) -> Run:
    """One saturated run of `path` (h2load on `cpu` alone if given); raises if any request
    did not get the full response."""
    argv = ["h2load", "-n", str(requests), "-c", str(connections), "-m", str(streams), "-t", "1"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    for header in path.headers:
        argv += ["-H", header]
    if path.body is not None:
        argv += ["-d", str(path.body)]
    argv.append(path.url)
    pids = {**path.servers, **path.clients}
    before = {role: Usage.of(pid) for role, pid in pids.items()}
    children_before = children_cpu_seconds()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    children = children_cpu_seconds() - children_before
    spent = {role: Usage.of(pid) - before[role] for role, pid in pids.items()}
    if done.returncode != 0:
        raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr}\n{done.stdout}")
    elapsed, rps, succeeded, data, mean_ms = parse_h2load(done.stdout)
    expected = requests * path.response_bytes
    if succeeded != requests or data != expected:
        raise RuntimeError(
            f"{path.name}: {succeeded}/{requests} succeeded, {data} response bytes where "
            f"{expected} were expected (errors answered as HTTP 200?):\n{done.stdout}"
        )
    cpu_us = {role: usage.cpu_s * 1e6 / requests for role, usage in spent.items()}
    cpu_us["h2load"] = children * 1e6 / requests
    system_us = {role: usage.system_s * 1e6 / requests for role, usage in spent.items()}
    switches = {role: usage.voluntary_switches / requests for role, usage in spent.items()}
    return Run(requests, elapsed, rps, succeeded, data, mean_ms, cpu_us, system_us, switches)


def bench_policy(state: Path) -> Path:
    """The example access policy with the admin role's edge rate out of the way."""
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    policy.setdefault("rate_limits", {}).setdefault("roles", {})["o2ims-admin"] = UNLIMITED_RPS
    path = state / "access-policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def start_noop(response: Path, logs: Path, workers: int | None) -> tuple[ManagedProcess, int]:
    port = free_port()
    threads = ["--workers", str(workers)] if workers is not None else []
    process = ManagedProcess(
        "noop-servicer",
        [
            sys.executable,
            "-m",
            "bench.noop_servicer",
            "--port",
            str(port),
            "--response",
            str(response),
            *threads,
        ],
        logs / "noop-servicer.log",
        cwd=REPO,
    ).start()
    wait_until(lambda: port_open(port), 30, "the no-op servicer", require=process.require_alive)
    return process, port


def get_pool(channel: grpc.Channel, pool_id: str) -> inv_pb.ResourcePoolInfo:
    stub = inv_grpc.InventoryServiceStub(channel)
    request = inv_pb.GetResourcePoolRequest(resource_pool_id=pool_id)
    reply: inv_pb.ResourcePoolInfo = stub.GetResourcePool(request, timeout=5)
    return reply


def edge_channel(stack: LocalStack, port: int | None = None) -> grpc.Channel:
    """A real gRPC client of the edge (or of another Envoy with its TLS on `port`) with the
    dev client certificate."""
    pki = stack.pki
    credentials = grpc.ssl_channel_credentials(
        pki.ca_cert.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    return grpc.secure_channel(f"localhost:{port or stack.config.rest_port}", credentials)


def first_pool(stack: LocalStack) -> tuple[str, inv_pb.ResourcePoolInfo]:
    """The id of the stack's first resource pool and the core's answer to its read."""
    with grpc.insecure_channel(stack.grpc_address) as channel:
        pools = inv_grpc.InventoryServiceStub(channel).ListResourcePools(
            inv_pb.ListResourcePoolsRequest(), timeout=5
        )
        pool_id = pools.resource_pools[0].resource_pool_id
        return pool_id, get_pool(channel, pool_id)


def start_client_relay(
    stack: LocalStack, state: Path, started: list[ManagedProcess], port: int | None = None
) -> tuple[ManagedProcess, int]:
    """The TLS relay (bench/tls_relay.py) to the stack's edge (or to another Envoy with its
    TLS on `port`) with the dev client certificate, put on `started`, and its cleartext
    port."""
    pki = stack.pki
    relay, relay_port = start_relay(
        port or stack.config.rest_port,
        RelayTls(pki.client_cert, pki.client_key, pki.ca_cert),
        state / (f"relay-{port}" if port else "relay"),
    )
    started.append(relay)
    return relay, relay_port


@dataclass(frozen=True)
class EdgeAnswers:
    """What the core and the edge answered to the pool read, which every other path must
    answer too, and the request h2load sends to the gRPC paths."""

    pool_id: str
    response: inv_pb.ResourcePoolInfo
    rest_json: Any
    grpc_request: Path


def floor_paths(
    stack: LocalStack, state: Path, started: list[ManagedProcess], answers: EdgeAnswers
) -> tuple[list[Target], FloorEnvoy]:
    """The floor's two paths (bench/envoy_floor.py), each checked once with a real client.
    The floor Envoy (as many workers as the edge) and its TLS relays go on `started`."""
    assert stack.core is not None and stack.envoy is not None
    floor = start_floor(stack.envoy.process, stack.envoy.config_path, state / "floor")
    started.append(floor.process)
    with edge_channel(stack, floor.grpc_port) as channel:
        if get_pool(channel, answers.pool_id) != answers.response:
            raise RuntimeError("the floor's gRPC route does not answer what the core answers")
    rest_path = REST_POOL.format(pool=answers.pool_id)
    floor_url = f"https://127.0.0.1:{floor.rest_port}"
    with httpx.Client(base_url=floor_url, verify=stack.client_tls(), trust_env=False) as http:
        answer = http.get(rest_path).raise_for_status()
    if answer.json() != answers.rest_json:
        raise RuntimeError(
            f"the floor's REST route answers {answer.text}, the edge {answers.rest_json}"
        )
    servers = {"core": stack.core.pid, "envoy": floor.process.pid}

    def relayed(
        name: str, port: int, route: str, headers: tuple[str, ...], *, body: Path | None, size: int
    ) -> Target:
        """A floor path through a TLS relay of its own (a relay has one upstream)."""
        relay, relay_port = start_client_relay(stack, state, started, port)
        authority = f":authority: localhost:{port}"
        relayed_url = f"http://127.0.0.1:{relay_port}{route}"
        return Target(
            name, relayed_url, (*headers, authority), body, servers, size, {"relay": relay.pid}
        )

    grpc_bytes = len(grpc_frame(answers.response.SerializeToString()))
    rest_headers = ("accept: application/json",)
    return [
        relayed(
            FLOOR_GRPC,
            floor.grpc_port,
            GRPC_METHOD,
            GRPC_HEADERS,
            body=answers.grpc_request,
            size=grpc_bytes,
        ),
        relayed(
            FLOOR_REST,
            floor.rest_port,
            rest_path,
            rest_headers,
            body=None,
            size=len(answer.content),
        ),
    ], floor


def prepare_paths(
    stack: LocalStack,
    state: Path,
    started: list[ManagedProcess],
    workers: int | None = None,
    floor: bool = True,
) -> tuple[list[Target], str, FloorEnvoy | None]:
    """Every path's target, checked once with a real client, the REST path of the pool
    read and the floor Envoy (None without `floor`). The processes it starts (the no-op
    servicer, the TLS relays, the floor Envoy) go on `started`; `workers`: the no-op
    servicer's gRPC threads (default: the core's default); `floor`: with the floor's paths
    (floor_paths)."""
    assert stack.core is not None and stack.envoy is not None
    pool_id, response = first_pool(stack)
    # Compared as messages, not bytes: map entries may serialize in another order.
    (state / "pool.bin").write_bytes(response.SerializeToString())
    request = state / "request.bin"
    request.write_bytes(
        grpc_frame(inv_pb.GetResourcePoolRequest(resource_pool_id=pool_id).SerializeToString())
    )

    noop, noop_port = start_noop(state / "pool.bin", stack.logs, workers)
    started.append(noop)
    with grpc.insecure_channel(f"127.0.0.1:{noop_port}") as channel:
        if get_pool(channel, pool_id) != response:
            raise RuntimeError("the no-op servicer does not answer what the core answers")
    with edge_channel(stack) as channel:
        if get_pool(channel, pool_id) != response:
            raise RuntimeError("Envoy's gRPC route does not answer what the core answers")

    rest_path = REST_POOL.format(pool=pool_id)
    token = stack.issuer.mint("netweave-dev-client", ["o2ims-admin"])
    bodies: dict[str, int] = {}
    rest_json: dict[str, Any] = {}
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), trust_env=False) as http:
        for label, headers in (("cert", {}), ("token", {"authorization": f"Bearer {token}"})):
            answer = http.get(rest_path, headers=headers).raise_for_status()
            bodies[label] = len(answer.content)
            rest_json[label] = answer.json()

    relay, relay_port = start_client_relay(stack, state, started)
    core, envoy = stack.core.pid, stack.envoy.process.pid
    grpc_bytes = len(grpc_frame(response.SerializeToString()))
    relayed = f"http://127.0.0.1:{relay_port}"
    authority = f":authority: localhost:{stack.config.rest_port}"
    paths = [
        Target(
            NOOP,
            f"http://127.0.0.1:{noop_port}{GRPC_METHOD}",
            GRPC_HEADERS,
            request,
            {"no-op": noop.pid},
            grpc_bytes,
        ),
        Target(
            CORE_DIRECT,
            f"http://{stack.grpc_address}{GRPC_METHOD}",
            GRPC_HEADERS,
            request,
            {"core": core},
            grpc_bytes,
        ),
        Target(
            "Envoy gRPC",
            relayed + GRPC_METHOD,
            (*GRPC_HEADERS, authority),
            request,
            {"core": core, "envoy": envoy},
            grpc_bytes,
            {"relay": relay.pid},
        ),
        Target(
            "REST cert",
            relayed + rest_path,
            ("accept: application/json", authority),
            None,
            {"core": core, "envoy": envoy},
            bodies["cert"],
            {"relay": relay.pid},
        ),
        Target(
            "REST token",
            relayed + rest_path,
            ("accept: application/json", authority, f"authorization: Bearer {token}"),
            None,
            {"core": core, "envoy": envoy},
            bodies["token"],
            {"relay": relay.pid},
        ),
    ]
    if not floor:
        return paths, rest_path, None
    answers = EdgeAnswers(pool_id, response, rest_json["cert"], request)
    floors, floor_envoy = floor_paths(stack, state, started, answers)
    return paths + floors, rest_path, floor_envoy


def open_loop(
    stack: LocalStack,
    rest_path: str,
    rates: list[float],
    duration_s: float,
    warmup_s: float,
    *,
    floor: FloorEnvoy | None = None,
) -> list[RateResult]:
    """Open-loop latency through the full REST stack with the client certificate (through
    the floor's REST listener instead with `floor`)."""
    assert stack.core is not None and stack.envoy is not None
    envoy = floor.process.pid if floor is not None else stack.envoy.process.pid
    port = floor.rest_port if floor is not None else stack.config.rest_port
    pids = {"core": stack.core.pid, "envoy": envoy}
    results: list[RateResult] = []
    for rate in rates:
        before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        before["generator"] = own_cpu_seconds()
        started = time.monotonic()
        [result] = run_open_loop(
            "127.0.0.1",
            port,
            stack.client_tls(),
            server_name="localhost",
            path=rest_path,
            rates=[rate],
            duration_s=duration_s,
            warmup_s=warmup_s,
        )
        # The CPU of the warm-up and the drain is in the delta too: share it by wall time.
        wall = time.monotonic() - started
        cpu = {role: cpu_seconds(pid) - before[role] for role, pid in pids.items()}
        cpu["generator"] = own_cpu_seconds() - before["generator"]
        results.append(summarize_rate(result, cpu, wall))
    return results


def summarize_rate(result: OpenLoopResult, cpu: dict[str, float], wall_s: float) -> RateResult:
    answered = len(result.latencies_s)
    per_second = {role: seconds / wall_s for role, seconds in cpu.items()}
    return RateResult(
        rate=result.rate,
        achieved_rps=answered / result.duration_s,
        p50_ms=result.latency_ms(0.50),
        p90_ms=result.latency_ms(0.90),
        p99_ms=result.latency_ms(0.99),
        max_ms=result.max_ms,
        failed=result.failed,
        queued=result.queued,
        send_lag_p99_ms=percentile(result.send_lags_s, 0.99) * 1000,
        # Per answered request (an overloaded stack answers fewer than offered).
        cpu_us={
            role: share * 1e6 / (answered / result.duration_s or result.rate)
            for role, share in per_second.items()
        },
        cpu_percent={role: share * 100 for role, share in per_second.items()},
    )


@dataclass(frozen=True)
class Saturation:
    """The shape of the saturated runs."""

    requests: int
    runs: int
    warmup_requests: int
    connections: int
    streams: int


def saturated(
    paths: list[Target],
    shape: Saturation,
    progress: Callable[[str], None],
    load_cpu: int | None = None,
) -> list[PathResult]:
    """Every path once to warm up, then `shape.runs` rounds visiting every path in turn
    (h2load on `load_cpu` alone if given)."""
    results = {path.name: PathResult(path.name) for path in paths}
    for path in paths:
        h2load(path, shape.warmup_requests, shape.connections, shape.streams, load_cpu)
    runs = shape.runs
    for round_number in range(1, runs + 1):
        for path in paths:
            run = h2load(path, shape.requests, shape.connections, shape.streams, load_cpu)
            results[path.name].runs.append(run)
            progress(f"round {round_number}/{runs} {path.name}: {run.rps:,.0f} req/s")
    return list(results.values())


def machine() -> dict[str, Any]:
    h2load_version = subprocess.run(
        ["h2load", "--version"], capture_output=True, text=True, check=False
    ).stdout
    return {
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "h2load": h2load_version.strip(),
        "grpcio": grpc.__version__,
        "python": sys.version.split()[0],
    }


def parse_rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default."""


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--requests", type=int, default=5000, help="h2load requests per run")
    parser.add_argument("--runs", type=int, default=3, help="saturated rounds (median reported)")
    parser.add_argument(
        "--pinned-runs",
        type=int,
        default=5,
        help="pinned rounds of the no-op and the core direct (median, and each round's ratio)",
    )
    parser.add_argument("--warmup-requests", type=int, default=500, help="per path, before round 1")
    parser.add_argument("--connections", type=int, default=4, help="h2load connections")
    parser.add_argument(
        "--streams",
        type=int,
        default=4,
        help="h2load streams per connection (connections x streams must stay under the core "
        "internal listener's cap of 4 x NETWEAVE_GRPC_WORKERS calls in progress)",
    )
    parser.add_argument(
        "--rates",
        type=parse_rates,
        default=[200.0, 500.0, 1000.0],
        help="open-loop offered rates, req/s, comma-separated",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="open-loop seconds per rate")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="open-loop warm-up seconds per rate"
    )
    parser.add_argument(
        "--idle", type=float, default=3.0, help="seconds of the idle CPU measurement"
    )
    parser.add_argument(
        "--grpc-workers",
        type=int,
        help="gRPC handler threads of the core (NETWEAVE_GRPC_WORKERS) and of the no-op "
        "servicer (default: the setting's default); the core's internal listener admits "
        "4x this many calls at once, so keep --connections x --streams below that",
    )
    parser.add_argument(
        "--envoy-concurrency",
        type=int,
        default=settings.ENVOY_CONCURRENCY.default,
        help="Envoy's worker threads (NETWEAVE_ENVOY_CONCURRENCY; the floor Envoy runs as many)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="skip the pinned comparison of the core direct and the no-op (each server on "
        f"CPU {SERVER_CPU}, h2load on CPU {LOAD_CPU})",
    )
    parser.add_argument(
        "--skip-saturated",
        action="store_true",
        help="skip the saturated runs of every path; the pinned comparison still runs unless "
        "--no-pin (with --skip-open-loop --no-floor: the pinned comparison alone, for A/B "
        "runs of the core's per-call work)",
    )
    parser.add_argument("--skip-open-loop", action="store_true")
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="without the floor paths (a second, minimal Envoy: bench/envoy_floor.py)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    return parser.parse_args(argv)


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def report_saturated(paths: list[Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    shape = Saturation(
        args.requests, args.runs, args.warmup_requests, args.connections, args.streams
    )
    results = saturated(paths, shape, progress)
    print(
        f"\nSaturated: h2load -n {shape.requests} -c {shape.connections} -m {shape.streams}, "
        f"{shape.runs} rounds, medians; CPU microseconds per request"
    )
    print(saturated_table(results))
    print()
    for line in headline(results):
        print(line)
    return [
        {
            "path": result.name,
            "rps": result.rps,
            "cpu_us": {role: result.cpu_us(role) for role in result.roles},
            "runs": [asdict(run) for run in result.runs],
        }
        for result in results
    ]


# The pinned comparison: each server on SERVER_CPU, h2load on LOAD_CPU.
SERVER_CPU, LOAD_CPU = 0, 1


@contextlib.contextmanager
def pinned(pids: list[int], cpu: int) -> Iterator[None]:
    """Every thread of `pids` on `cpu` alone for the block (threads started meanwhile
    inherit it), then every thread back on the CPUs its process had."""
    allowed = {pid: os.sched_getaffinity(pid) for pid in pids}

    def each_thread(pid: int, cpus: set[int]) -> None:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
                os.sched_setaffinity(int(task.name), cpus)

    for pid in pids:
        each_thread(pid, {cpu})
    try:
        yield
    finally:
        for pid, cpus in allowed.items():
            each_thread(pid, cpus)


def report_pinned(paths: list[Target], args: argparse.Namespace) -> dict[str, Any]:
    """The no-op and the core direct again, each server on one CPU and h2load on another:
    steadier than the unpinned runs (no migrations, the load generator off the server's
    CPU), the method of ../shared/PERF-NOTES.md."""
    targets = [path for path in paths if path.name in (NOOP, CORE_DIRECT)]
    shape = Saturation(
        args.requests, args.pinned_runs, args.warmup_requests, args.connections, args.streams
    )
    servers = [pid for path in targets for pid in path.servers.values()]
    with pinned(servers, SERVER_CPU):
        results = saturated(targets, shape, progress, load_cpu=LOAD_CPU)
    print(
        f"\nPinned: each server on CPU {SERVER_CPU}, h2load on CPU {LOAD_CPU}; "
        f"h2load -n {shape.requests} -c {shape.connections} -m {shape.streams}, "
        f"{shape.runs} rounds, medians"
    )
    print(saturated_table(results))
    print()
    print(pinned_headline(results, SERVER_CPU, LOAD_CPU))
    report: dict[str, Any] = {
        result.name: {
            "rps": result.rps,
            "cpu_us": {role: result.cpu_us(role) for role in result.roles},
            "runs": [asdict(run) for run in result.runs],
        }
        for result in results
    }
    report["round_ratios"] = round_ratios(results)
    return report


def idle_cpu_percent(stack: LocalStack, seconds: float) -> dict[str, float]:
    """The core's and Envoy's CPU (% of one core) with no request at all: their background
    work, which the open loop's CPU per request at a low rate includes."""
    assert stack.core is not None and stack.envoy is not None
    pids = {"core": stack.core.pid, "envoy": stack.envoy.process.pid}
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    time.sleep(seconds)
    return {role: (cpu_seconds(pid) - before[role]) * 100 / seconds for role, pid in pids.items()}


def report_open_loop(
    stack: LocalStack, rest_path: str, args: argparse.Namespace, floor: FloorEnvoy | None
) -> dict[str, Any]:
    idle = idle_cpu_percent(stack, args.idle)
    progress(f"open loop at {args.rates} req/s, {args.duration:g} s each")
    rates = open_loop(stack, rest_path, args.rates, args.duration, args.warmup)
    print(
        "\nOpen loop: REST with a client certificate, one HTTP/2 connection, "
        f"{args.duration:g} s per rate, latency from each request's scheduled time"
    )
    print(open_loop_table(rates))
    print(
        f"(idle, no requests, over {args.idle:g} s: core {idle['core']:.1f}%, "
        f"Envoy {idle['envoy']:.1f}% of a core; included in the CPU per request above)"
    )
    report: dict[str, Any] = {"idle_cpu_percent": idle, "rates": [asdict(r) for r in rates]}
    floor_rates: list[RateResult] = []
    if floor is not None:
        progress("open loop through the floor's REST listener")
        floor_rates = open_loop(
            stack, rest_path, args.rates, args.duration, args.warmup, floor=floor
        )
        print("\nThe same through the floor's REST listener (Envoy's CPU: the floor Envoy's)")
        print(open_loop_table(floor_rates))
        report["floor_rates"] = [asdict(r) for r in floor_rates]
    print()
    for line in open_loop_headline(rates, floor_rates):
        print(line)
    return report


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if shutil.which("h2load") is None:
        print("h2load not found: install nghttp2-client (make system-deps)", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"machine": machine(), "arguments": vars(args) | {"json": None}}
    with tempfile.TemporaryDirectory(prefix="netweave-stack-bench-") as tmp:
        state = Path(tmp)
        # NETWEAVE_GRPC_WORKERS for the core, and the same thread count for the no-op.
        workers_env = {"NETWEAVE_GRPC_WORKERS": str(args.grpc_workers)} if args.grpc_workers else {}
        config = StackConfig.ephemeral(
            state,
            auth_policy=bench_policy(state),
            rate_limit_rps=UNLIMITED_RPS,
            notifiers=0,
            extra_core_env=workers_env,
            envoy_concurrency=args.envoy_concurrency,
        )
        stack = LocalStack(config)
        progress("starting the stack")
        stack.start()
        started: list[ManagedProcess] = []
        try:
            paths, rest_path, floor = prepare_paths(
                stack, state, started, args.grpc_workers, floor=not args.no_floor
            )
            if not args.skip_saturated:
                report["saturated"] = report_saturated(paths, args)
            if not args.no_pin and len(os.sched_getaffinity(0)) >= 2:
                report["pinned"] = report_pinned(paths, args)
            if not args.skip_open_loop:
                report["open_loop"] = report_open_loop(stack, rest_path, args, floor)
        finally:
            for process in started:
                process.stop()
            stack.stop()
    report["machine"]["loadavg_after"] = os.getloadavg()
    print(
        f"\nmachine: {report['machine']['cpus']} CPUs, load average (1 min) "
        f"{report['machine']['loadavg_before'][0]:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"{report['machine']['h2load']}, grpcio {grpc.__version__}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
