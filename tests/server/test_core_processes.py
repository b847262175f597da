"""Several core processes (NETWEAVE_CORE_PROCESSES, server/workers.py): real `python -m
server` supervisors on the session's redis-server, real gRPC clients, the pod's one ops
endpoint read over HTTP."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from o2ims.inventory.v1 import inventory_pb2 as inv_pb
from o2ims.inventory.v1 import inventory_pb2_grpc as inv_grpc
from prometheus_client.parser import text_string_to_metric_families

from devstack.pki import EDGE_URI, ensure_internal_pki
from devstack.processes import process_ended, thread_statuses, wait_until
from devstack.stack import LocalStack, StackConfig
from netweave.metrics import merge_metrics
from server.config import GatewayConfig
from server.workers import cpu_placement
from tests.core_process import CoreProcess, log_records, run_to_exit


@pytest.fixture
def two_workers(redis_url: str, tmp_path: Path) -> Iterator[CoreProcess]:
    process = CoreProcess(redis_url, tmp_path, NETWEAVE_CORE_PROCESSES="2").start()
    try:
        wait_until(lambda: readyz(process)[0] == 200, 30, "both workers ready")
        yield process
    finally:
        process.stop()


def ops_url(core: CoreProcess) -> str:
    return f"http://127.0.0.1:{core.env['NETWEAVE_OPS_PORT']}"


def readyz(core: CoreProcess) -> tuple[int, dict[str, Any]]:
    try:
        answer = httpx.get(f"{ops_url(core)}/readyz", timeout=5)
    except httpx.HTTPError:
        return 0, {}
    return answer.status_code, answer.json()


def worker_pids(core: CoreProcess) -> dict[str, int]:
    return {index: entry["pid"] for index, entry in readyz(core)[1]["checks"]["workers"].items()}


def metrics(core: CoreProcess) -> str:
    return httpx.get(f"{ops_url(core)}/metrics", timeout=10).raise_for_status().text


def requests_by_worker(text: str, method: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "o2ims_grpc_requests":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("method", "").endswith(
                    method
                ):
                    worker = sample.labels.get("worker", "")
                    counts[worker] = counts.get(worker, 0.0) + sample.value
    return counts


def metrics_of(stack: LocalStack) -> str:
    return httpx.get(f"{stack.ops_url}/metrics", timeout=10).raise_for_status().text


def list_pools_on_new_connections(port: int, connections: int) -> None:
    """One call on each of `connections` separate TCP connections (a channel of its own
    subchannel pool each), so the kernel spreads them over the workers."""
    for _ in range(connections):
        with grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            inv_grpc.InventoryServiceStub(channel).ListResourcePools(
                inv_pb.ListResourcePoolsRequest(), timeout=10
            )


def children_of(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_every_worker_answers_on_the_shared_port_and_metrics_add_up(
    two_workers: CoreProcess,
) -> None:
    assert two_workers.process is not None
    pids = worker_pids(two_workers)
    assert set(pids) == {"0", "1"}
    # Fresh interpreters started by the supervisor, not the supervisor itself.
    assert set(pids.values()) == children_of(two_workers.process.pid)

    calls = 32
    list_pools_on_new_connections(two_workers.port, calls)

    text = metrics(two_workers)
    served = requests_by_worker(text, "ListResourcePools")
    # Both answered (all 32 connections hashed onto one worker: 2**-31), and the pod's
    # counters add up to the calls made.
    assert served.get("0", 0) > 0 and served.get("1", 0) > 0, served
    assert sum(served.values()) == calls
    # One family per name: a valid exposition, each worker's series labelled, the
    # supervisor's own unlabelled.
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(families) == len(set(families))
    assert 'o2ims_ready{worker="0"} 1.0' in text
    assert 'o2ims_ready{worker="1"} 1.0' in text
    assert "\no2ims_ready 1.0" in text
    assert "\no2ims_core_workers_running 2.0" in text


def test_one_connection_stays_on_one_worker(two_workers: CoreProcess) -> None:
    """Why the edge gets a port per worker: HTTP/2 multiplexes every call of a client (such
    as Envoy) on one long connection, and SO_REUSEPORT balances connections, not calls."""
    with grpc.insecure_channel(f"127.0.0.1:{two_workers.port}") as channel:
        stub = inv_grpc.InventoryServiceStub(channel)
        for _ in range(20):
            stub.ListResourcePools(inv_pb.ListResourcePoolsRequest(), timeout=10)
    served = requests_by_worker(metrics(two_workers), "ListResourcePools")
    assert sorted(served.values()) == [20.0], served


def test_a_killed_worker_is_restarted(two_workers: CoreProcess) -> None:
    before = worker_pids(two_workers)
    os.kill(before["0"], signal.SIGKILL)

    def restarted() -> bool:
        status, body = readyz(two_workers)
        entry = body.get("checks", {}).get("workers", {}).get("0", {})
        return status == 200 and entry.get("pid") != before["0"] and entry.get("restarts") == 1

    wait_until(restarted, 30, "worker 0 restarted and ready")
    assert worker_pids(two_workers)["1"] == before["1"]
    assert "\no2ims_core_worker_restarts_total 1.0" in metrics(two_workers)
    list_pools_on_new_connections(two_workers.port, 8)  # the port is served throughout
    events = [r for r in two_workers.records() if r["event"] == "core_worker_exited"]
    assert events and events[0]["worker"] == 0 and events[0]["code"] == -signal.SIGKILL


def test_a_worker_down_makes_the_pod_not_ready(two_workers: CoreProcess) -> None:
    # Stopped (not killed), so it stays down long enough to look at.
    pid = worker_pids(two_workers)["1"]
    os.kill(pid, signal.SIGSTOP)
    try:
        status, body = readyz(two_workers)
        assert status == 503
        assert body["checks"]["workers"]["1"]["ready"] is False
        assert body["checks"]["workers"]["0"]["ready"] is True
    finally:
        os.kill(pid, signal.SIGCONT)


def test_sigterm_drains_every_worker_and_exits_0(redis_url: str, tmp_path: Path) -> None:
    core = CoreProcess(
        redis_url,
        tmp_path,
        NETWEAVE_CORE_PROCESSES="2",
        NETWEAVE_SHUTDOWN_DRAIN_SECONDS="3",
    ).start()
    try:
        wait_until(lambda: readyz(core)[0] == 200, 30, "both workers ready")
        pids = list(worker_pids(core).values())
        signalled = time.monotonic()
        core.signal(signal.SIGTERM)
        # Draining: the pod is not ready, every worker says so, and calls are still served.
        wait_until(lambda: readyz(core)[0] == 503, 5, "the pod not ready while draining")
        body = readyz(core)[1]
        assert body["checks"]["draining"]["ok"] is False
        list_pools_on_new_connections(core.port, 8)
        assert core.process is not None
        assert core.process.wait(30) == 0
        assert time.monotonic() - signalled >= 3.0
        for pid in pids:
            assert process_ended(pid), pid
        records = core.records()
        stopped = [r for r in records if r["event"] == "core_supervisor_stopped"]
        assert stopped and stopped[0]["worker_exit_codes"] == [0, 0]
        assert sum(r["event"] == "gateway_draining" for r in records) == 2
    finally:
        core.stop()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("NETWEAVE_CORE_PROCESSES", "0", "NETWEAVE_CORE_PROCESSES must be 1 to 64, got 0"),
        ("NETWEAVE_CORE_PROCESSES", "65", "NETWEAVE_CORE_PROCESSES must be 1 to 64, got 65"),
        ("NETWEAVE_CORE_PROCESSES", "two", "NETWEAVE_CORE_PROCESSES"),
        ("NETWEAVE_CORE_CPU_AFFINITY", "always", "NETWEAVE_CORE_CPU_AFFINITY"),
        ("NETWEAVE_CORE_CPU_AFFINITY", "0,1", "must be auto or spread or off"),
    ],
)
def test_a_bad_process_setting_refuses_to_start(
    redis_url: str, tmp_path: Path, variable: str, value: str, message: str
) -> None:
    code, stderr = run_to_exit(
        ["-m", "server"],
        {
            "REDIS_URL": redis_url,
            "NETWEAVE_GRPC_PORT": "0",
            "NETWEAVE_CORE_PROCESSES": "2",
            variable: value,
        },
    )
    assert code == 2
    invalid = [r for r in log_records(stderr) if r["event"] == "configuration_invalid"]
    assert invalid and message in invalid[0]["error"]


def test_workers_that_cannot_start_make_the_supervisor_exit_1(
    redis_url: str, tmp_path: Path
) -> None:
    code, stderr = run_to_exit(
        ["-m", "server"],
        {
            "REDIS_URL": redis_url,
            "NETWEAVE_GRPC_PORT": "0",
            "NETWEAVE_OPS_PORT": "0",
            "NETWEAVE_CORE_PROCESSES": "2",
            # Read by each worker as it builds the core: a policy file that is not there.
            "NETWEAVE_AUTH_POLICY": str(tmp_path / "missing-policy.yaml"),
        },
    )
    assert code == 1, stderr
    events = [r["event"] for r in log_records(stderr)]
    assert "cannot_start" in events


def test_merged_metrics_keep_one_family_per_name() -> None:
    own = "# HELP up_total x\n# TYPE up_total counter\nup_total 1.0\n"
    worker = (
        "# HELP up_total x\n# TYPE up_total counter\nup_total 2.0\n"
        '# HELP lat x\n# TYPE lat histogram\nlat_bucket{le="+Inf"} 3.0\nlat_count 3.0\n'
        "lat_sum 0.5\n"
    )
    merged = {
        family.name: family
        for family in merge_metrics(
            [({}, own), ({"worker": "0"}, worker), ({"worker": "1"}, worker)]
        )
    }
    assert sorted(merged) == ["lat", "up"]
    up = [(s.labels, s.value) for s in merged["up"].samples if s.name == "up_total"]
    assert up == [({}, 1.0), ({"worker": "0"}, 2.0), ({"worker": "1"}, 2.0)]
    assert {s.labels.get("worker") for s in merged["lat"].samples} == {"0", "1"}


def test_envoy_balances_calls_over_every_workers_edge_port(tmp_path: Path) -> None:
    """The stack's Envoy lists each worker's edge port (edge_port + i) in its core cluster,
    so its few long connections do not pin all of the edge's calls to one worker."""
    stack = LocalStack(StackConfig.ephemeral(tmp_path, notifiers=0, core_processes=2)).start()
    try:
        edge = stack.core_ports().edge_port
        wait_until(
            lambda: stack.envoy_core_health() == {edge: True, edge + 1: True},
            30,
            "Envoy to see both workers healthy",
        )
        pki = stack.pki
        credentials = grpc.ssl_channel_credentials(
            pki.ca_cert.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        served: dict[str, float] = {}

        def one_round_reaches_both(calls: int = 20) -> bool:
            # A new client connection each round: Envoy's thread that took the first one
            # may still balance over the hosts it saw healthy when it was built.
            nonlocal served
            before = requests_by_worker(metrics_of(stack), "ListResourcePools")
            with grpc.secure_channel(
                f"localhost:{stack.config.rest_port}",
                credentials,
                options=[("grpc.use_local_subchannel_pool", 1)],
            ) as channel:
                stub = inv_grpc.InventoryServiceStub(channel)
                for _ in range(calls):
                    stub.ListResourcePools(inv_pb.ListResourcePoolsRequest(), timeout=10)
            after = requests_by_worker(metrics_of(stack), "ListResourcePools")
            served = {w: after[w] - before.get(w, 0.0) for w in after}
            assert sum(served.values()) == calls  # the pod's counters add up
            return all(served.get(w, 0) >= calls / 4 for w in ("0", "1"))

        wait_until(one_round_reaches_both, 30, "Envoy to balance a connection's calls")
    finally:
        stack.stop()


def test_every_worker_refuses_callbacks_to_any_workers_edge_port(tmp_path: Path) -> None:
    """A worker binds its own edge port, but a callback to a sibling's (50053 beside
    50052) is the gateway's own listener as much as its own."""
    pki = ensure_internal_pki(tmp_path / "pki")
    pod = GatewayConfig.from_env(
        {
            "NETWEAVE_CORE_PROCESSES": "3",
            "NETWEAVE_EDGE_LISTEN": "127.0.0.1:50052",
            "NETWEAVE_EDGE_TLS_CERT": str(pki.core.cert),
            "NETWEAVE_EDGE_TLS_KEY": str(pki.core.key),
            "NETWEAVE_EDGE_CLIENT_CA": str(pki.ca_cert),
            "NETWEAVE_EDGE_PEER_URI": EDGE_URI,
        }
    )
    for index in range(3):
        worker = pod.for_worker(index)
        assert (worker.core_processes, worker.edge_listen) == (1, f"127.0.0.1:{50052 + index}")
        own = worker.callback_policy.gateway_endpoints
        assert {("127.0.0.1", port) for port in (50052, 50053, 50054)} <= set(own)


# --- where the processes run (NETWEAVE_CORE_CPU_AFFINITY) --------------------------------


@pytest.mark.parametrize(
    ("mode", "processes", "allowed", "placed"),
    [
        # auto: one CPU each only when the pod may use exactly as many CPUs as workers.
        ("auto", 2, {0, 1}, [0, 1]),
        ("auto", 2, {4, 9}, [4, 9]),
        ("auto", 2, {0, 1, 2, 3}, [None, None]),
        ("auto", 3, {0, 1}, [None, None, None]),
        ("auto", 1, {3}, [3]),
        ("auto", 1, {0, 1}, [None]),
        # spread: in the allowed CPUs' order, in turn when the workers outnumber them.
        ("spread", 3, {7, 2}, [2, 7, 2]),
        ("spread", 2, {0, 1, 2, 3}, [0, 1]),
        ("spread", 1, {5, 6}, [5]),
        ("off", 2, {0, 1}, [None, None]),
        ("off", 1, {0}, [None]),
    ],
)
def test_cpu_placement(mode: str, processes: int, allowed: set[int], placed: list[int]) -> None:
    assert cpu_placement(mode, processes, allowed) == placed


def cpus_of_threads(pid: int) -> set[str]:
    """The distinct Cpus_allowed_list of every thread of `pid` (of those still running)."""
    lists = set()
    for status in thread_statuses(pid):
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                lists.add(line.split(":", 1)[1].strip())
    return lists


def cpu_list(cpus: set[int]) -> str:
    """`cpus` as /proc writes a Cpus_allowed_list (ranges: 0-3,6)."""
    ordered, ranges = sorted(cpus), []
    start = previous = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == previous + 1:
            previous = cpu
            continue
        ranges.append(str(start) if start == previous else f"{start}-{previous}")
        if cpu is not None:
            start = previous = cpu
    return ",".join(ranges)


def test_spread_keeps_each_worker_and_its_threads_on_its_own_cpu(
    redis_url: str, tmp_path: Path
) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    expected = {str(i): str(allowed[i % len(allowed)]) for i in range(2)}
    core = CoreProcess(
        redis_url, tmp_path, NETWEAVE_CORE_PROCESSES="2", NETWEAVE_CORE_CPU_AFFINITY="spread"
    ).start()
    try:
        wait_until(lambda: readyz(core)[0] == 200, 30, "both workers ready")
        list_pools_on_new_connections(core.port, 8)  # gRPC's threads all started
        pids = worker_pids(core)
        for index, pid in pids.items():
            assert cpus_of_threads(pid) == {expected[index]}, index
            assert readyz(core)[1]["checks"]["workers"][index]["cpu"] == int(expected[index])
        # The supervisor is not on the request path: left where it was.
        assert core.process is not None
        assert cpus_of_threads(core.process.pid) == {cpu_list(set(allowed))}
        placed = [r for r in core.records() if r["event"] == "core_cpu_affinity"]
        assert sorted((r["worker"], r["cpu"]) for r in placed) == [
            (i, int(expected[str(i)])) for i in range(2)
        ]

        # A restarted worker goes back to its CPU.
        os.kill(pids["1"], signal.SIGKILL)
        wait_until(
            lambda: readyz(core)[0] == 200 and worker_pids(core)["1"] != pids["1"],
            30,
            "worker 1 restarted and ready",
        )
        assert cpus_of_threads(worker_pids(core)["1"]) == {expected["1"]}
    finally:
        core.stop()


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_workers_are_left_to_the_kernel_unless_the_cpus_are_theirs(
    redis_url: str, tmp_path: Path, mode: str
) -> None:
    allowed = os.sched_getaffinity(0)
    core = CoreProcess(
        redis_url, tmp_path, NETWEAVE_CORE_PROCESSES="2", NETWEAVE_CORE_CPU_AFFINITY=mode
    ).start()
    try:
        wait_until(lambda: readyz(core)[0] == 200, 30, "both workers ready")
        # auto keeps each on one CPU only when the pod may use exactly two.
        own_cpus = mode == "auto" and len(allowed) == 2
        for index, pid in worker_pids(core).items():
            want = str(sorted(allowed)[int(index)]) if own_cpus else cpu_list(allowed)
            assert cpus_of_threads(pid) == {want}, index
    finally:
        core.stop()


def test_a_single_core_spread_keeps_to_the_first_cpu(redis_url: str, tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    core = CoreProcess(redis_url, tmp_path, NETWEAVE_CORE_CPU_AFFINITY="spread").start()
    try:
        assert core.process is not None
        list_pools_on_new_connections(core.port, 2)  # gRPC's threads all started
        assert cpus_of_threads(core.process.pid) == {str(allowed[0])}
        placed = [r for r in core.records() if r["event"] == "core_cpu_affinity"]
        assert [(r["cpu"], r["mode"]) for r in placed] == [(allowed[0], "spread")]
    finally:
        core.stop()
