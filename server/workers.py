"""Several core processes in one pod (NETWEAVE_CORE_PROCESSES > 1).

The core is one Python process, so it uses about one CPU however many the pod has. With
NETWEAVE_CORE_PROCESSES=N, `python -m server` becomes a small supervisor that starts N worker
processes, each a fresh `python -m server` interpreter (spawned, never forked: the supervisor
creates no gRPC object, and a fork after one exists is a known gRPC hazard). The supervisor:

- shares the internal gRPC listener (NETWEAVE_GRPC_HOST:NETWEAVE_GRPC_PORT) between the workers
  with SO_REUSEPORT, so the kernel spreads direct callers' connections over them (a port of 0
  is chosen once by the supervisor, which keeps it reserved);
- gives each worker its own edge port, NETWEAVE_EDGE_LISTEN's port + i: Envoy keeps one or two
  long HTTP/2 connections to an upstream, so SO_REUSEPORT's per-connection hashing would put all
  of the edge's traffic on one worker; with one port per worker, Envoy's core cluster lists every
  worker as an endpoint (NETWEAVE_ENVOY_CORE_ENDPOINTS) and balances per request;
- shares the edge telemetry listener (SO_REUSEPORT): each worker counts the records it gets,
  and the counters add up across the `worker` label;
- restarts a worker that exits (netweave/backoff.py between attempts), forwards SIGTERM and
  SIGINT (each worker drains as a single core does: netweave/lifecycle.py), and exits non-zero
  if the workers cannot be started;
- serves the pod's one ops endpoint on NETWEAVE_OPS_HOST:NETWEAVE_OPS_PORT: /healthz (the
  supervisor, which keeps the workers alive, answers), /readyz (ready when every worker is
  ready; a worker down or restarting makes the pod not ready), and /metrics (every worker's
  metrics, each series labelled `worker="<i>"`, plus the supervisor's own unlabelled series).

Each worker keeps its own in-process inventory view, fed from Redis like any other replica.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from netweave import settings
from netweave.backoff import Backoff
from netweave.lifecycle import ShutdownSignals, wait_for
from netweave.logs import log_stream
from netweave.metrics import Families, merge_metrics
from netweave.ops import FAILING, OpsServer, readiness_status
from server.config import GatewayConfig, edge_addresses

log = structlog.get_logger()

# How long a worker may take to answer on its ops port at the supervisor's start.
STARTUP_TIMEOUT_S: Final = 60.0
# A worker up this long has its restart backoff reset.
STABLE_AFTER_S: Final = 30.0
REPO: Final = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class WorkerRole:
    """What the supervisor tells a worker on its command line (never an operator: these
    are not settings): its index, the supervisor's pid (to stop when it is gone) and the
    file where it says its ops port once bound (its own port 0: a port chosen by the
    supervisor and bound later by the worker could be taken meanwhile)."""

    index: int
    supervisor_pid: int
    state: Path
    # The CPU the worker keeps to (cpu_placement); None: the kernel places it.
    cpu: int | None = None

    def arguments(self) -> list[str]:
        cpu = [] if self.cpu is None else ["--worker-cpu", str(self.cpu)]
        return [
            "--worker-index",
            str(self.index),
            "--supervisor-pid",
            str(self.supervisor_pid),
            "--worker-state",
            str(self.state),
            *cpu,
        ]

    @classmethod
    def from_arguments(cls, argv: list[str]) -> WorkerRole | None:
        """The role on `python -m server`'s command line; None: not a worker."""
        parser = argparse.ArgumentParser(prog="python -m server")
        parser.add_argument("--worker-index", type=int)
        parser.add_argument("--supervisor-pid", type=int)
        parser.add_argument("--worker-state", type=Path)
        parser.add_argument("--worker-cpu", type=int)
        args = parser.parse_args(argv)
        if args.worker_index is None:
            return None
        return cls(args.worker_index, args.supervisor_pid, args.worker_state, args.worker_cpu)

    def report_bound(self, ops_port: int) -> None:
        """Tell the supervisor the listeners are bound and where the ops port is (written
        whole, then renamed, so the supervisor never reads half of it)."""
        partial = self.state.with_suffix(".partial")
        partial.write_text(json.dumps({"pid": os.getpid(), "ops_port": ops_port}))
        partial.replace(self.state)

    def watch_supervisor(self) -> None:
        """SIGTERM to this worker once its supervisor has gone (killed), so an orphaned
        worker drains and stops instead of holding the shared port."""
        parent = self.supervisor_pid

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            log.warning("core_supervisor_gone", supervisor_pid=parent)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def cpu_placement(mode: str, processes: int, allowed: set[int]) -> list[int | None]:
    """The CPU each of `processes` core processes keeps to (None: the kernel places it),
    for NETWEAVE_CORE_CPU_AFFINITY `mode` and the CPUs the pod may use (`allowed`).

    Why: a core's threads (gRPC's pollers and handlers) share one GIL. Spread over two CPUs,
    the GIL changes hands between CPUs on every call, and one process served about half what
    it serves kept on one CPU (docs/performance.md, "Several core processes"). One CPU per
    worker is only right when the CPUs are the pod's own, hence `auto`: the kubelet's static
    CPU manager gives a Guaranteed pod's container exactly its CPUs, where a pod sharing the
    node's CPUs may use all of them and keeping to two would put it on its neighbours'."""
    cpus = sorted(allowed)
    if mode == "off" or not cpus or (mode == "auto" and len(cpus) != processes):
        return [None] * processes
    return [cpus[index % len(cpus)] for index in range(processes)]


def keep_on_cpu(cpu: int) -> None:
    """Every thread of this process, and every thread it starts from now on, on `cpu`."""
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(task.name), {cpu})


def check_ports(config: GatewayConfig, processes: int) -> None:
    """Refuse a layout where a worker's edge port is another listener's port."""
    edges = edge_addresses(config.edge_listen, processes)
    others = {config.grpc_port, config.ops_port}
    if config.edge_telemetry_listen:
        others.add(int(config.edge_telemetry_listen.rpartition(":")[2]))
    clash = sorted(
        int(address.rpartition(":")[2])
        for address in edges
        if int(address.rpartition(":")[2]) in others - {0}
    )
    if clash:
        raise ValueError(
            f"NETWEAVE_EDGE_LISTEN {config.edge_listen!r} with NETWEAVE_CORE_PROCESSES="
            f"{processes}: the workers' edge ports would include {clash}, used by another "
            "listener (NETWEAVE_GRPC_PORT, NETWEAVE_OPS_PORT or NETWEAVE_EDGE_TELEMETRY_LISTEN)"
        )


def reserve_shared_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) with SO_REUSEPORT to host:port (0: a free port): it
    keeps the port the workers share from being taken while one restarts. A socket that
    does not listen never receives connections, so it takes none from the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker_environment(grpc_port: int) -> dict[str, str]:
    """What a worker's environment overrides of the supervisor's. NETWEAVE_CORE_PROCESSES
    and NETWEAVE_EDGE_LISTEN stay the pod's: a worker takes its own edge port from its
    index (GatewayConfig.for_worker) and knows its siblings' (own_listeners)."""
    return {
        settings.GRPC_PORT.name: str(grpc_port),
        # Reached by the supervisor only, on loopback.
        settings.OPS_HOST.name: "127.0.0.1",
        settings.OPS_PORT.name: "0",
    }


@dataclass
class Worker:
    """One worker process and what the supervisor knows of it."""

    role: WorkerRole
    env: dict[str, str]
    ops_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, maximum=30.0))
    restart_at: float | None = None

    def spawn(self) -> None:
        # A fresh interpreter (never a fork). Its JSON log lines go where the supervisor's
        # go (not into the supervisor's fd 2 capture, which would wrap them again); its
        # lines carry `worker` (server/__main__.py).
        self.role.state.unlink(missing_ok=True)
        self.ops_port = 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", *self.role.arguments()],
            cwd=REPO,
            env={**os.environ, **self.env},
            stderr=log_stream(),
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("core_worker_started", worker=self.index, pid=self.process.pid)

    @property
    def index(self) -> int:
        return self.role.index

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def bound(self) -> bool:
        """Whether the worker has bound its listeners (and said where its ops port is)."""
        if not self.ops_port:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.ops_port = int(json.loads(self.role.state.read_text())["ops_port"])
        return self.ops_port != 0

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class WorkersRegistry(CollectorRegistry):
    """The pod's /metrics: the supervisor's own series (unlabelled) and every worker's,
    scraped from its ops port at scrape time and labelled `worker`. Chosen over
    prometheus_client's multiprocess mode, which cannot aggregate the core's custom
    collectors (inventory objects, readiness, process CPU, certificate expiry): with a
    label, every series survives, counters add up with sum(), and gauges keep their
    meaning under max()/min() (the alerts in deployments/ aggregate so already)."""

    def __init__(self, workers: Callable[[], list[Worker]]) -> None:
        super().__init__(auto_describe=False)
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        own = Families(list(super().collect()))
        sources: list[tuple[Mapping[str, str], str]] = [({}, generate_latest(own).decode())]
        for worker in self._workers():
            if not (worker.alive() and worker.bound()):
                continue
            try:
                status, body = _get(worker.ops_port, "/metrics")
            except OSError as exc:
                log.warning("core_worker_metrics_unavailable", worker=worker.index, error=str(exc))
                continue
            if status == 200:
                sources.append(({"worker": str(worker.index)}, body.decode()))
        yield from merge_metrics(sources)


class Supervisor:
    """Starts, watches and stops the workers; serves the pod's ops endpoint."""

    def __init__(self, config: GatewayConfig, processes: int) -> None:
        check_ports(config, processes)
        self.config = config
        self.processes = processes
        self._reservation = reserve_shared_port(config.grpc_host, config.grpc_port)
        self.grpc_port = int(self._reservation.getsockname()[1])
        self.edges = edge_addresses(config.edge_listen, processes)
        self._state_dir = Path(tempfile.mkdtemp(prefix="netweave-core-"))
        self.cpus = cpu_placement(config.core_cpu_affinity, processes, os.sched_getaffinity(0))
        self.workers = [
            Worker(
                WorkerRole(index, os.getpid(), self._state_dir / f"worker-{index}.json", cpu),
                worker_environment(self.grpc_port),
            )
            for index, cpu in enumerate(self.cpus)
        ]
        self.stopping = threading.Event()
        self.registry = WorkersRegistry(lambda: list(self.workers))
        self.registry.register(_SupervisorCollector(self))
        self.ops = OpsServer(config.ops_host, config.ops_port, self.readiness, self.registry)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Start every worker and wait until each answers on its ops port; RuntimeError
        (the others stopped) when one exits or does not answer in time."""
        for worker in self.workers:
            worker.spawn()
        deadline = time.monotonic() + timeout_s
        waiting = list(self.workers)
        while waiting:
            for worker in list(waiting):
                if not worker.alive():
                    code = None if worker.process is None else worker.process.returncode
                    self._stop_all(signal.SIGKILL)
                    raise RuntimeError(f"core worker {worker.index} exited at start (code {code})")
                if worker.bound():
                    waiting.remove(worker)
            if waiting and time.monotonic() > deadline:
                self._stop_all(signal.SIGKILL)
                raise RuntimeError(
                    f"core workers {[w.index for w in waiting]} did not start in {timeout_s} s"
                )
            if waiting:
                time.sleep(0.1)
        self.ops.start()
        log.info(
            "core_supervisor_started",
            processes=self.processes,
            pids=[w.pid for w in self.workers],
            cpus=self.cpus,
            grpc_port=self.grpc_port,
            edge_listen=list(self.edges) or None,
            ops_port=self.ops.port,
        )

    def watch_once(self) -> None:
        """Restart the workers that have exited (after a backoff); called periodically."""
        now = time.monotonic()
        for worker in self.workers:
            if self.stopping.is_set():
                return
            if worker.alive():
                if now - worker.started_at > STABLE_AFTER_S:
                    worker.backoff.reset()
                continue
            if worker.restart_at is None:
                code = None if worker.process is None else worker.process.returncode
                delay = worker.backoff.next_delay()
                worker.restart_at = now + delay
                log.warning(
                    "core_worker_exited",
                    worker=worker.index,
                    pid=worker.pid,
                    code=code,
                    restart_in_seconds=round(delay, 3),
                )
            elif now >= worker.restart_at:
                worker.restarts += 1
                worker.spawn()

    def forward(self, signum: int) -> None:
        for worker in self.workers:
            worker.signal(signum)

    def wait_workers(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    def _stop_all(self, signum: int) -> None:
        self.forward(signum)
        self.wait_workers(5.0)

    def close(self) -> None:
        self.ops.stop()
        self._reservation.close()
        shutil.rmtree(self._state_dir, ignore_errors=True)

    # --- readiness ---------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when every worker is; each worker's status under checks.workers."""
        workers: dict[str, Any] = {}
        reasons: list[str] = []
        ready = not self.stopping.is_set()
        for worker in self.workers:
            entry: dict[str, Any] = {
                "pid": worker.pid,
                "restarts": worker.restarts,
                "cpu": worker.role.cpu,
            }
            if not worker.alive():
                entry.update(ok=False, ready=False, reason="worker not running (restarting)")
            elif not worker.bound():
                entry.update(ok=False, ready=False, reason="worker starting")
            else:
                try:
                    status, raw = _get(worker.ops_port, "/readyz")
                    answer = json.loads(raw)
                except (OSError, ValueError) as exc:
                    status, answer = 0, {"status": FAILING, "reason": str(exc)}
                entry.update(
                    ok=status == 200 and answer.get("status") == "ok",
                    ready=status == 200,
                    status=answer.get("status"),
                )
                if answer.get("failing"):
                    entry["failing"] = answer["failing"]
                if answer.get("reason"):
                    entry["reason"] = answer["reason"]
                reasons += [f"worker {worker.index}: {r}" for r in answer.get("reasons", [])]
            ready = ready and bool(entry["ready"])
            workers[str(worker.index)] = entry
        checks: dict[str, Any] = {"workers": workers}
        if self.stopping.is_set():
            checks["draining"] = {"ok": False, "reason": "draining: shutting down"}
        body: dict[str, Any] = {"status": readiness_status(ready, checks), "checks": checks}
        if reasons:
            body["reasons"] = reasons
        return ready, body


class _SupervisorCollector:
    """The supervisor's own series: workers running and restarts."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "o2ims_core_workers_running",
            "Core worker processes running (of NETWEAVE_CORE_PROCESSES).",
        )
        running.add_metric([], float(sum(w.alive() for w in self._supervisor.workers)))
        yield running
        restarts = CounterMetricFamily(
            "o2ims_core_worker_restarts",
            "Times a core worker process was restarted after it exited.",
        )
        restarts.add_metric([], float(sum(w.restarts for w in self._supervisor.workers)))
        yield restarts


def supervise(config: GatewayConfig, processes: int) -> int:
    """`python -m server` with NETWEAVE_CORE_PROCESSES > 1: 0 after an orderly stop, 1 when
    the workers cannot be started, 2 on a configuration the workers could not use."""
    signals = ShutdownSignals(log, "core_supervisor")
    supervisor: Supervisor
    try:
        supervisor = Supervisor(config, processes)
    except (ValueError, OSError) as exc:
        log.error("configuration_invalid", error=str(exc))
        return 2
    try:
        try:
            supervisor.start()
        except RuntimeError as exc:
            log.error("cannot_start", error=str(exc))
            return 1
        while not signals.stopping.is_set():
            supervisor.watch_once()
            wait_for(signals.stopping, 0.2)
        supervisor.stopping.set()
        supervisor.forward(signal.SIGTERM)
        # Each worker drains and stops on its own clock (drain + grace); a second signal
        # is forwarded and cuts their drains short.
        budget = config.shutdown_drain_s + config.shutdown_grace_s + 10.0
        deadline = time.monotonic() + budget
        hurried = False
        while not supervisor.wait_workers(0.2):
            if signals.hurry.is_set() and not hurried:
                hurried = True
                supervisor.forward(signal.SIGTERM)
            if time.monotonic() > deadline:
                log.error("core_workers_killed", after_seconds=budget)
                supervisor.forward(signal.SIGKILL)
                supervisor.wait_workers(5.0)
                return 1
        codes = [w.process.returncode for w in supervisor.workers if w.process is not None]
        log.info("core_supervisor_stopped", worker_exit_codes=codes)
        return 0 if all(code == 0 for code in codes) else 1
    finally:
        supervisor.close()
