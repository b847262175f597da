"""The whole gateway as real local processes: Redis, the static adapter, the core and
Envoy. `make run` and the end-to-end tests both start it through LocalStack."""

from __future__ import annotations

import base64
import functools
import json
import secrets
import shutil
import signal
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from devstack.moto_server import DEMO_REGIONS, MotoServer, seed_demo
from devstack.pki import (
    CORE_URI,
    EDGE_URI,
    DevPki,
    InternalPki,
    IssuedCertificate,
    ensure_dev_pki,
    ensure_internal_pki,
)
from devstack.processes import (
    ManagedProcess,
    StackRecord,
    free_port,
    port_free,
    port_holder,
    port_open,
    wait_until,
)
from devstack.redis_server import RedisServer
from devstack.tokens import DevIssuer, ensure_dev_issuer
from netweave import settings
from rest_facade.envoy_config import (
    CoreTls,
    EnvoyConfig,
    JwtConfig,
    RateLimitConfig,
)
from rest_facade.envoy_process import RunningEnvoy, start_envoy
from rest_facade.envoy_routes import CORE_CLUSTER
from rest_facade.envoy_tracing import EdgeTracing
from rest_facade.render import rate_limit as edge_rate_limit
from server.auth.policy import AccessPolicy

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POLICY = REPO / "examples" / "access-policy.yaml"
EXAMPLE_INVENTORY = REPO / "examples" / "ocloud.yaml"
PORT_FIELDS = (
    "rest_port",
    "grpc_port",
    "edge_port",
    "ops_port",
    "adapter_port",
    "redis_port",
    "notifier_ops_port",
    "alertmanager_adapter_port",
    "alertmanager_port",
    "aws_adapter_port",
    "edge_telemetry_port",
    "envoy_stats_port",
    "adapter_ops_port",
)
# The ports of the Alertmanager adapter: bound only when it runs (StackConfig.alertmanager).
ALERTMANAGER_PORT_FIELDS = ("alertmanager_adapter_port", "alertmanager_port")
# The AWS adapter's port: bound only when it runs (StackConfig.aws_regions).
AWS_PORT_FIELDS = ("aws_adapter_port",)


@dataclass(frozen=True)
class KubeCluster:
    """One Kubernetes cluster `make run` fronts: one adapter process (adapters/kubernetes).
    Port 0 picks a free port."""

    kubeconfig: Path
    context: str | None = None
    name: str = ""
    port: int = 0
    # Its /healthz, /readyz and /metrics (--ops-port).
    ops_port: int = 0
    # Further arguments of this cluster's adapter (e.g. --admin-kubeconfig, --mapping).
    extra_args: tuple[str, ...] = ()


def _kubeconfig_contexts(path: Path) -> tuple[list[str], str | None]:
    """The context names of a kubeconfig file and its current context."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"NETWEAVE_KUBECONFIG: cannot read {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"NETWEAVE_KUBECONFIG: {path} is not a kubeconfig (not a mapping)")
    names = [
        str(entry.get("name"))
        for entry in document.get("contexts") or []
        if isinstance(entry, dict) and entry.get("name")
    ]
    current = document.get("current-context")
    return names, str(current) if current else None


def kube_clusters(
    kubeconfigs: Sequence[Path], contexts: Sequence[str], first_port: int
) -> tuple[KubeCluster, ...]:
    """One cluster per context named in `contexts` (each looked up in the kubeconfig files
    in order), else one per kubeconfig file (its current context). Adapter names are
    `kubernetes-<context>`, made unique; ports count up from `first_port` (0: free ports).
    Raises ValueError naming a context no file holds or a file that cannot be read."""
    wanted: list[tuple[Path, str | None, str | None]] = []
    if contexts:
        known = {path: _kubeconfig_contexts(path)[0] for path in kubeconfigs}
        for context in contexts:
            holder = next((path for path in kubeconfigs if context in known[path]), None)
            if holder is None:
                raise ValueError(
                    f"NETWEAVE_KUBE_CONTEXT names {context!r}, which no kubeconfig in "
                    f"NETWEAVE_KUBECONFIG holds ({', '.join(str(p) for p in kubeconfigs)})"
                )
            wanted.append((holder, context, context))
    else:
        for path in kubeconfigs:
            _, current = _kubeconfig_contexts(path)
            wanted.append((path, None, current))
    clusters: list[KubeCluster] = []
    used: set[str] = set()
    for index, (path, chosen, label) in enumerate(wanted):
        base = label or path.stem
        name, suffix = f"kubernetes-{base}", 2
        while name in used:
            name, suffix = f"kubernetes-{base}-{suffix}", suffix + 1
        used.add(name)
        port = first_port + index if first_port else 0
        clusters.append(KubeCluster(path.resolve(), chosen, name, port))
    return tuple(clusters)


def _place(processes: list[ManagedProcess], index: int, process: ManagedProcess) -> None:
    """`process` as the `index`-th of `processes` (replacing a stopped one)."""
    if index < len(processes):
        processes[index] = process
    elif index == len(processes):
        processes.append(process)
    else:
        raise IndexError(f"start replica {len(processes)} before replica {index}")


def _terminate(process: ManagedProcess, timeout: float) -> None:
    """SIGTERM `process` and wait for it to exit by itself (TimeoutError if it does not)."""
    process.signal(signal.SIGTERM)
    wait_until(lambda: not process.alive(), timeout, f"{process.name} to exit after SIGTERM")
    process.stop()  # closes its log


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


@dataclass(frozen=True)
class CorePorts:
    """The listeners of one core replica beyond the first."""

    grpc_port: int
    edge_port: int
    ops_port: int
    edge_telemetry_port: int


# Envoy's worker threads: more than the CPUs it has only adds hand-offs.
MAX_ENVOY_CONCURRENCY = 64


@dataclass
class StackConfig:
    """Ports and paths of a local stack. Port 0 picks a free port (tests)."""

    state_dir: Path
    inventory: Path
    rest_port: int = settings.REST_PORT.default
    grpc_port: int = settings.GRPC_PORT.default
    # The core's edge listener (mutual TLS, Envoy only).
    edge_port: int = settings.EDGE_PORT.default
    ops_port: int = settings.OPS_PORT.default
    # The core's edge telemetry listener (Envoy's REST access log records, mutual TLS).
    edge_telemetry_port: int = settings.EDGE_TELEMETRY_PORT.default
    # Envoy's plain-HTTP stats listener (GET /stats/prometheus and /ready only).
    envoy_stats_port: int = settings.ENVOY_STATS_PORT.default
    adapter_ops_port: int = settings.ADAPTER_OPS_PORT.default
    adapter_port: int = settings.ADAPTER_PORT.default
    redis_port: int = settings.REDIS_PORT.default
    notifier_ops_port: int = settings.NOTIFIER_OPS_PORT.default
    # The Alertmanager adapter (adapters/alertmanager): its gRPC port, its webhook port.
    alertmanager_adapter_port: int = settings.ALERTMANAGER_ADAPTER_PORT.default
    alertmanager_port: int = settings.ALERTMANAGER_PORT.default
    # Whether to run it beside the static adapter (ephemeral stacks: not unless asked).
    alertmanager: bool = settings.STACK_ALERTMANAGER.default
    # The AWS adapter (adapters/aws): runs when regions are given; its gRPC port, extra
    # arguments (tests: a short poll interval) and environment (AWS_ENDPOINT_URL,
    # credentials: otherwise inherited, boto3's standard chain).
    aws_regions: tuple[str, ...] = ()
    aws_adapter_port: int = settings.AWS_ADAPTER_PORT.default
    aws_adapter_args: tuple[str, ...] = ()
    aws_env: dict[str, str] = field(default_factory=dict)
    # Start a moto server with a demo account for it (devstack/moto_server.py).
    aws_moto: bool = False
    # Use this Redis instead of starting one.
    redis_url: str | None = None
    service_uri: str | None = None
    extra_core_env: dict[str, str] = field(default_factory=dict)
    # Edge security (the `make run` defaults: certificate required, token optional).
    require_client_certificate: bool = settings.REQUIRE_CLIENT_CERT.default
    require_token: bool = settings.REQUIRE_TOKEN.default
    # The access policy of the core; None: no access control.
    auth_policy: Path | None = DEFAULT_POLICY
    # An unknown query parameter is a 400 (strict) or dropped and counted (default).
    strict_query_parameters: bool = settings.STRICT_QUERY_PARAMETERS.default
    # Requests per second per client identity at the edge, and the burst a client may
    # spend at once (0: one second's worth).
    rate_limit_rps: int = settings.RATE_LIMIT_RPS.default
    rate_limit_burst: int = settings.RATE_LIMIT_BURST.default
    # Which requests Envoy's access log records (`failures` or `all`), as in production.
    envoy_access_log: str = settings.ENVOY_ACCESS_LOG.default
    # Development callbacks: plain http and loopback receivers allowed (production: https
    # and public addresses only; see server/subscriptions/callbacks.py).
    dev_callbacks: bool = True
    # Where the notifier POSTs the O-Cloud Available notification (None: no registration).
    smo_registration_url: str | None = None
    extra_notifier_env: dict[str, str] = field(default_factory=dict)
    # Kubernetes clusters, each served by its own adapter process beside the static one.
    kube_clusters: tuple[KubeCluster, ...] = ()
    # Extra arguments for every Kubernetes adapter (tests: faster retries).
    kube_adapter_args: tuple[str, ...] = ()
    # OpenTelemetry traces of the core, the notifier and Envoy: host:port of an OTLP/gRPC
    # collector ("": off), and the share of requests traced.
    otlp_endpoint: str = settings.OTLP_ENDPOINT.default
    trace_sample_ratio: float = settings.TRACE_SAMPLE_RATIO.default
    # Replicas against the one Redis, behind the one Envoy: the first core and notifier use
    # the ports above, the others free ones (`extra_cores`, `extra_notifier_ops_ports`).
    cores: int = 1
    notifiers: int = 1
    # Worker processes of each core (NETWEAVE_CORE_PROCESSES, server/workers.py): above 1,
    # each core's edge listener is edge_port + i for worker i, and Envoy lists every one.
    core_processes: int = 1
    # Envoy's --concurrency (NETWEAVE_ENVOY_CONCURRENCY).
    envoy_concurrency: int = 1
    # The cores' drain on SIGTERM (NETWEAVE_SHUTDOWN_DRAIN_SECONDS). 0: a stopping stack
    # stops at once (every process goes together, there is nobody to drain from).
    core_drain_s: float = 0.0
    # Envoy's health check of the cores (EnvoyConfig.core_health_interval_s...): how soon
    # a draining core is out of rotation; the drain must be longer.
    core_health_interval_s: float = 5.0
    core_unhealthy_threshold: int = 2
    # Filled by resolved(): the ports of cores 2..N and notifiers 2..M.
    extra_cores: tuple[CorePorts, ...] = ()
    extra_notifier_ops_ports: tuple[int, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """The `make run` configuration (netweave/settings.py MAKE_RUN_SETTINGS): every port
        overridable, see README."""
        return cls(
            state_dir=REPO / ".netweave",
            inventory=settings.INVENTORY.read(environ).resolve(),
            rest_port=settings.REST_PORT.read(environ),
            grpc_port=settings.GRPC_PORT.read(environ),
            edge_port=settings.EDGE_PORT.read(environ),
            ops_port=settings.OPS_PORT.read(environ),
            edge_telemetry_port=settings.EDGE_TELEMETRY_PORT.read(environ),
            envoy_stats_port=settings.ENVOY_STATS_PORT.read(environ),
            adapter_ops_port=settings.ADAPTER_OPS_PORT.read(environ),
            adapter_port=settings.ADAPTER_PORT.read(environ),
            redis_port=settings.REDIS_PORT.read(environ),
            notifier_ops_port=settings.NOTIFIER_OPS_PORT.read(environ),
            alertmanager_adapter_port=settings.ALERTMANAGER_ADAPTER_PORT.read(environ),
            alertmanager_port=settings.ALERTMANAGER_PORT.read(environ),
            alertmanager=settings.STACK_ALERTMANAGER.read(environ),
            aws_regions=settings.AWS_REGIONS.read(environ)
            or (DEMO_REGIONS if settings.STACK_AWS_MOTO.read(environ) else ()),
            aws_moto=settings.STACK_AWS_MOTO.read(environ),
            aws_adapter_port=settings.AWS_ADAPTER_PORT.read(environ),
            smo_registration_url=settings.SMO_REGISTRATION_URL.read(environ) or None,
            redis_url=settings.STACK_REDIS_URL.read(environ),
            service_uri=settings.STACK_SERVICE_URI.read(environ),
            require_client_certificate=settings.REQUIRE_CLIENT_CERT.read(environ),
            require_token=settings.REQUIRE_TOKEN.read(environ),
            auth_policy=settings.STACK_AUTH_POLICY.read(environ),
            strict_query_parameters=settings.STRICT_QUERY_PARAMETERS.read(environ),
            rate_limit_rps=settings.RATE_LIMIT_RPS.read(environ),
            rate_limit_burst=settings.RATE_LIMIT_BURST.read(environ),
            envoy_access_log=settings.ENVOY_ACCESS_LOG.read(environ),
            kube_clusters=kube_clusters(
                [Path(path) for path in settings.STACK_KUBECONFIGS.read(environ)],
                settings.STACK_KUBE_CONTEXTS.read(environ),
                settings.STACK_KUBE_ADAPTER_PORT.read(environ),
            ),
            otlp_endpoint=settings.OTLP_ENDPOINT.read(environ),
            trace_sample_ratio=settings.TRACE_SAMPLE_RATIO.read(environ),
            core_processes=settings.CORE_PROCESSES.read(environ),
            envoy_concurrency=settings.ENVOY_CONCURRENCY.read(environ),
        )

    @classmethod
    def ephemeral(cls, state_dir: Path, **overrides: Any) -> StackConfig:
        """A stack for tests and benchmarks: every port free-picked, over its own copy of
        the example inventory under `state_dir`; `overrides` set any other field."""
        inventory = state_dir / "ocloud.yaml"
        shutil.copy(EXAMPLE_INVENTORY, inventory)
        ports: dict[str, Any] = dict.fromkeys(PORT_FIELDS, 0)
        # The other tests' stacks stay as they were: the Alertmanager adapter on request.
        defaults = {**ports, "alertmanager": False}
        return cls(state_dir=state_dir, inventory=inventory, **{**defaults, **overrides})

    def resolved(self) -> StackConfig:
        """A copy with every 0 port replaced by a free one."""
        ports: dict[str, Any] = {
            name: getattr(self, name) or free_port() for name in PORT_FIELDS if name != "edge_port"
        }
        # A core's workers' edge listeners: consecutive ports.
        ports["edge_port"] = self.edge_port or free_port(count=self.core_processes)
        if self.cores < 1 or self.notifiers < 0:
            raise ValueError(f"a stack runs >= 1 core and >= 0 notifiers, not {self}")
        if not 1 <= self.envoy_concurrency <= MAX_ENVOY_CONCURRENCY:
            raise ValueError(
                f"{settings.ENVOY_CONCURRENCY.name} must be 1 to {MAX_ENVOY_CONCURRENCY}, "
                f"got {self.envoy_concurrency}"
            )
        return replace(
            self,
            extra_cores=self.extra_cores
            or tuple(
                CorePorts(
                    free_port(), free_port(count=self.core_processes), free_port(), free_port()
                )
                for _ in range(self.cores - 1)
            ),
            extra_notifier_ops_ports=self.extra_notifier_ops_ports
            or tuple(free_port() for _ in range(self.notifiers - 1)),
            extra_core_env=dict(self.extra_core_env),
            extra_notifier_env=dict(self.extra_notifier_env),
            aws_env=dict(self.aws_env),
            kube_clusters=tuple(
                replace(
                    cluster,
                    port=cluster.port or free_port(),
                    ops_port=cluster.ops_port or free_port(),
                )
                for cluster in self.kube_clusters
            ),
            **ports,
        )


class StartRefused(RuntimeError):
    """The stack cannot start: a file missing, a port taken, a stack already running."""


class LocalStack:
    """Start in dependency order, wait for each to be ready, stop in reverse.

    `<state dir>/stack.json` records the running stack (StackRecord): a second start on the
    same state directory is refused while it runs, and processes a killed supervisor left
    behind are stopped before a new start."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config.resolved()
        self.logs = self.config.state_dir / "logs"
        self.pki: DevPki = ensure_dev_pki(self.config.state_dir / "pki")
        self.issuer: DevIssuer = ensure_dev_issuer(self.config.state_dir / "pki" / "jwt")
        # The channel between Envoy and the core: its own CA, Envoy's and the core's certs.
        self.internal_pki: InternalPki = ensure_internal_pki(
            self.config.state_dir / "pki" / "internal"
        )
        self.redis: RedisServer | None = None
        self.adapter: ManagedProcess | None = None
        # One per entry of config.kube_clusters, in that order.
        self.kube_adapters: list[ManagedProcess] = []
        self.alertmanager_adapter: ManagedProcess | None = None
        self.aws_adapter: ManagedProcess | None = None
        self.moto: MotoServer | None = None
        # config.cores of them, then config.notifiers: `core` and `notifier` are the first.
        self.cores: list[ManagedProcess] = []
        self.notifiers: list[ManagedProcess] = []
        self.envoy: RunningEnvoy | None = None
        # While start() runs: the waits of the processes it started, done after all started.
        self._deferred: list[tuple[ManagedProcess | None, Callable[[], bool], float]] | None = None

    # --- addresses ---------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        if self.config.redis_url:
            return self.config.redis_url
        return f"redis://127.0.0.1:{self.config.redis_port}/0"

    @property
    def core(self) -> ManagedProcess | None:
        return self.cores[0] if self.cores else None

    @property
    def notifier(self) -> ManagedProcess | None:
        return self.notifiers[0] if self.notifiers else None

    def core_ports(self, index: int = 0) -> CorePorts:
        """The listeners of the `index`-th core."""
        if index:
            return self.config.extra_cores[index - 1]
        config = self.config
        return CorePorts(
            config.grpc_port, config.edge_port, config.ops_port, config.edge_telemetry_port
        )

    @property
    def rest_url(self) -> str:
        return f"https://127.0.0.1:{self.config.rest_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.config.grpc_port}"

    @property
    def audit_log(self) -> Path:
        """The core's audit records (one JSON line per API call)."""
        return self.logs / "audit.log"

    @property
    def edge_audit_log(self) -> Path:
        """Envoy's audit records of the calls it refused itself (401, 429)."""
        return self.logs / "audit-edge.log"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ops_port}"

    @property
    def envoy_stats_url(self) -> str:
        """Envoy's statistics for Prometheus (the stats listener)."""
        return f"http://127.0.0.1:{self.config.envoy_stats_port}/stats/prometheus"

    @property
    def envoy_admin_socket(self) -> Path:
        """Envoy's admin API (a Unix socket, mode 0600; no TCP port):
        `curl --unix-socket <this> http://envoy/stats`."""
        return self.config.state_dir / "envoy" / "admin.sock"

    # --- lifecycle ---------------------------------------------------------------

    @property
    def record(self) -> StackRecord:
        return StackRecord(self.config.state_dir)

    def bound_ports(self) -> dict[str, int]:
        """The TCP ports the stack's processes listen on, by StackConfig field (the
        Kubernetes adapters' by adapter name)."""
        ports = {
            name: getattr(self.config, name)
            for name in PORT_FIELDS
            if not (name == "redis_port" and self.config.redis_url)
            and not (name in ALERTMANAGER_PORT_FIELDS and not self.config.alertmanager)
            and not (name in AWS_PORT_FIELDS and not self.config.aws_regions)
        }
        replicas = {
            f"core{index}_{name}": port
            for index, core in enumerate(self.config.extra_cores, start=2)
            for name, port in vars(core).items()
        } | {
            f"notifier{index}_ops_port": port
            for index, port in enumerate(self.config.extra_notifier_ops_ports, start=2)
        }
        kube = {cluster.name: cluster.port for cluster in self.config.kube_clusters}
        workers = {
            f"core{index + 1}_worker{worker}_edge_port": self.core_ports(index).edge_port + worker
            for index in range(len(self.config.extra_cores) + 1)
            for worker in range(1, self.config.core_processes)
        }
        return ports | replicas | kube | workers

    @property
    def adapter_addresses(self) -> list[str]:
        """What the core watches: the static adapter, each Kubernetes adapter, the
        Alertmanager adapter, then the AWS adapter."""
        alertmanager = (
            [f"127.0.0.1:{self.config.alertmanager_adapter_port}"]
            if self.config.alertmanager
            else []
        )
        aws = [f"127.0.0.1:{self.config.aws_adapter_port}"] if self.config.aws_regions else []
        return (
            [f"127.0.0.1:{self.config.adapter_port}"]
            + [f"127.0.0.1:{cluster.port}" for cluster in self.config.kube_clusters]
            + alertmanager
            + aws
        )

    def preflight(self) -> None:
        """Refuse to start, before starting anything, what could not start or would collide:
        raises StartRefused naming the file, the ports or the running stack."""
        supervisor = self.record.live_supervisor()
        if supervisor is not None:
            raise StartRefused(
                f"a stack is already running from {self.config.state_dir} "
                f"(supervisor pid {supervisor.pid}; ports "
                + ", ".join(str(port) for port in self.bound_ports().values())
                + "): `make stop` stops it"
            )
        # Left by a supervisor killed with SIGKILL (or still ending): theirs, so ours to stop.
        self.record.stop()
        if not self.config.inventory.is_file():
            raise StartRefused(
                f"inventory file not found: {self.config.inventory} (set NETWEAVE_INVENTORY)"
            )
        named: dict[int, list[str]] = {}
        for name, port in self.bound_ports().items():
            named.setdefault(port, []).append(name)
        clashes = [
            f"port {port} is set for both {' and '.join(names)}: set "
            + " or ".join(f"NETWEAVE_{name.upper()}" for name in names if name in PORT_FIELDS)
            + " to another port"
            for port, names in named.items()
            if len(names) > 1
        ]
        if clashes:
            raise StartRefused("\n".join(clashes))
        taken = [
            f"port {port} ({name}) is in use"
            + (f" by {holder}" if (holder := port_holder(port)) else "")
            + (
                f"; set NETWEAVE_{name.upper()} to another port"
                if name in PORT_FIELDS
                else "; set NETWEAVE_KUBE_ADAPTER_PORT to another first port"
                if name.startswith("kubernetes")
                else ""
            )
            for name, port in self.bound_ports().items()
            if not port_free(port)
        ]
        if taken:
            raise StartRefused("\n".join(taken))

    def start(self, timeout: float = 60.0) -> LocalStack:
        """Starts every process at once, then waits for each in start order: none needs
        another to be up to start (the core retries its adapters and Redis, Envoy its
        core), so a stack is up in about the time of its slowest process."""
        self.preflight()
        try:
            if not self.config.redis_url:
                self.start_redis()
            self._deferred = []
            self.start_adapter(timeout)
            self.start_kube_adapters(timeout)
            if self.config.alertmanager:
                self.start_alertmanager_adapter(timeout)
            if self.config.aws_regions:
                if self.config.aws_moto:
                    self.start_moto()
                self.start_aws_adapter(timeout)
            for index in range(self.config.cores):
                self.start_core(timeout, index)
            for index in range(self.config.notifiers):
                self.start_notifier(timeout, index)
            self.start_envoy(timeout)
            deferred, self._deferred = self._deferred, None
            for process, check, limit in deferred:
                self._wait(process, check, limit)
        except BaseException:
            self._deferred = None
            self.stop(abort=True)
            raise
        return self

    def start_redis(self) -> None:
        self.redis = RedisServer(self.config.state_dir / "redis", self.config.redis_port).start()

    def start_adapter(self, timeout: float = 30.0) -> None:
        self.adapter = ManagedProcess(
            "adapter-static",
            [
                sys.executable,
                "-m",
                "adapters.static",
                "--inventory",
                str(self.config.inventory),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.config.adapter_port),
                "--ops-port",
                str(self.config.adapter_ops_port),
            ],
            self.logs / "adapter-static.log",
            cwd=REPO,
        ).start()
        self._wait(self.adapter, lambda: port_open(self.config.adapter_port), timeout)

    def kube_adapter_process(self, cluster: KubeCluster) -> ManagedProcess:
        """The (not yet started) adapter process of one cluster."""
        argv = [
            sys.executable,
            "-m",
            "adapters.kubernetes",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--host",
            "127.0.0.1",
            "--port",
            str(cluster.port),
            "--ops-port",
            str(cluster.ops_port),
            "--name",
            cluster.name,
            *(["--context", cluster.context] if cluster.context else []),
            *self.config.kube_adapter_args,
            *cluster.extra_args,
        ]
        return ManagedProcess(
            argv=argv, name=cluster.name, log_path=self.logs / f"{cluster.name}.log", cwd=REPO
        )

    def start_kube_adapters(self, timeout: float = 30.0) -> None:
        for cluster in self.config.kube_clusters:
            process = self.kube_adapter_process(cluster).start()
            self.kube_adapters.append(process)
            self._wait(process, functools.partial(port_open, cluster.port), timeout)

    def restart_kube_adapter(self, index: int, timeout: float = 30.0) -> ManagedProcess:
        """Start the `index`-th Kubernetes adapter again (after a test killed it)."""
        cluster = self.config.kube_clusters[index]
        self.kube_adapters[index].stop()
        process = self.kube_adapter_process(cluster).start()
        self.kube_adapters[index] = process
        self._wait(process, functools.partial(port_open, cluster.port), timeout)
        return process

    @property
    def alertmanager_dir(self) -> Path:
        return self.config.state_dir / "alertmanager"

    @property
    def alertmanager_webhook_url(self) -> str:
        """Where Alertmanager's webhook_config posts (bearer token: alertmanager_token_path)."""
        return f"http://127.0.0.1:{self.config.alertmanager_port}/webhook"

    @property
    def alertmanager_token_path(self) -> Path:
        """The receiver's bearer token, generated once and kept under the state directory
        (mode 0600) so an Alertmanager's credentials_file keeps working across restarts."""
        path = self.alertmanager_dir / "token"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32) + "\n")
            path.chmod(0o600)
        return path

    def start_alertmanager_adapter(self, timeout: float = 30.0) -> None:
        self.alertmanager_adapter = ManagedProcess(
            "adapter-alertmanager",
            [
                sys.executable,
                "-m",
                "adapters.alertmanager",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.config.alertmanager_adapter_port),
                "--webhook-host",
                "127.0.0.1",
                "--webhook-port",
                str(self.config.alertmanager_port),
                "--token-file",
                str(self.alertmanager_token_path),
                "--state-file",
                str(self.alertmanager_dir / "state.json"),
            ],
            self.logs / "adapter-alertmanager.log",
            cwd=REPO,
        ).start()
        self._wait(
            self.alertmanager_adapter,
            lambda: (
                port_open(self.config.alertmanager_adapter_port)
                and port_open(self.config.alertmanager_port)
            ),
            timeout,
        )

    def start_moto(self) -> None:
        """A moto server on a free port with the demo account; the AWS adapter's boto3
        talks to it."""
        self.moto = MotoServer(self.logs / "moto.log").start()
        seed_demo(self.moto)
        self.config.aws_env.update(self.moto.environment(self.config.aws_regions[0]))

    def start_aws_adapter(self, timeout: float = 30.0) -> None:
        """The AWS adapter; serving at once (it refuses watches until its first complete
        poll, and the core waits for it)."""
        self.aws_adapter = ManagedProcess(
            "adapter-aws",
            [
                sys.executable,
                "-m",
                "adapters.aws",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.config.aws_adapter_port),
                "--regions",
                ",".join(self.config.aws_regions),
                *self.config.aws_adapter_args,
            ],
            self.logs / "adapter-aws.log",
            env=self.config.aws_env,
            cwd=REPO,
        ).start()
        self._wait(self.aws_adapter, lambda: port_open(self.config.aws_adapter_port), timeout)

    def core_env(self, index: int = 0) -> dict[str, str]:
        ports = self.core_ports(index)
        return {
            "NETWEAVE_GRPC_PORT": str(ports.grpc_port),
            "NETWEAVE_OPS_PORT": str(ports.ops_port),
            "REDIS_URL": self.redis_url,
            "NETWEAVE_ADAPTERS": ",".join(self.adapter_addresses),
            "NETWEAVE_SERVICE_URI": self.config.service_uri or self.rest_url,
            "NETWEAVE_EDGE_LISTEN": f"127.0.0.1:{ports.edge_port}",
            "NETWEAVE_EDGE_TLS_CERT": str(self.internal_pki.core.cert),
            "NETWEAVE_EDGE_TLS_KEY": str(self.internal_pki.core.key),
            "NETWEAVE_EDGE_CLIENT_CA": str(self.internal_pki.ca_cert),
            "NETWEAVE_EDGE_PEER_URI": EDGE_URI,
            "NETWEAVE_EDGE_TELEMETRY_LISTEN": f"127.0.0.1:{ports.edge_telemetry_port}",
            "NETWEAVE_WATCHED_CERTIFICATES": ",".join(
                f"{role}={path}"
                for role, path in (
                    ("server", self.pki.server_cert),
                    ("client_ca", self.pki.ca_cert),
                    ("edge_client", self.internal_pki.edge.cert),
                )
            ),
            "NETWEAVE_AUTH_POLICY": str(self.config.auth_policy or ""),
            "NETWEAVE_AUDIT_LOG": str(self.audit_log),
            "NETWEAVE_SHUTDOWN_DRAIN_SECONDS": str(self.config.core_drain_s),
            **(
                {"NETWEAVE_CORE_PROCESSES": str(self.config.core_processes)}
                if self.config.core_processes > 1
                else {}
            ),
            **self.callback_env(),
            **self.tracing_env(),
            **self.config.extra_core_env,
        }

    def tracing_env(self) -> dict[str, str]:
        """The core's and the notifier's tracing settings (none when off)."""
        if not self.config.otlp_endpoint:
            return {}
        return {
            "NETWEAVE_OTLP_ENDPOINT": self.config.otlp_endpoint,
            "NETWEAVE_TRACE_SAMPLE_RATIO": str(self.config.trace_sample_ratio),
        }

    def callback_env(self) -> dict[str, str]:
        """Where subscription callbacks may point (core: at creation; notifier: at delivery):
        never at one of the stack's own listeners, in every posture; with dev_callbacks,
        at plain http and loopback receivers too."""
        own = ",".join(f"127.0.0.1:{port}" for port in self.bound_ports().values())
        env = {"NETWEAVE_GATEWAY_ENDPOINTS": own}
        if self.config.dev_callbacks:
            env["NETWEAVE_CALLBACK_ALLOW_HTTP"] = "1"
            env["NETWEAVE_CALLBACK_ALLOWED_CIDRS"] = "127.0.0.0/8,::1/128"
        return env

    @property
    def webhook_secret_path(self) -> Path:
        return self.config.state_dir / "webhook-secret"

    @functools.cached_property
    def webhook_secret(self) -> str:
        """The dev signing secret of notifications (Standard Webhooks `whsec_` form), kept
        under the state directory so a receiver's configuration survives restarts."""
        path = self.webhook_secret_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
            path.write_text(secret + "\n")
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def notifier_ops_url(self) -> str:
        return f"http://127.0.0.1:{self.config.notifier_ops_port}"

    def notifier_ops_port(self, index: int = 0) -> int:
        if index:
            return self.config.extra_notifier_ops_ports[index - 1]
        return self.config.notifier_ops_port

    def notifier_env(self, index: int = 0) -> dict[str, str]:
        env = {
            "REDIS_URL": self.redis_url,
            "NETWEAVE_WEBHOOK_SECRET": self.webhook_secret,
            "NETWEAVE_NOTIFIER_OPS_PORT": str(self.notifier_ops_port(index)),
            "NETWEAVE_SERVICE_URI": self.config.service_uri or self.rest_url,
            **self.callback_env(),
            **self.tracing_env(),
        }
        if self.config.smo_registration_url:
            env["NETWEAVE_SMO_REGISTRATION_URL"] = self.config.smo_registration_url
        return {**env, **self.config.extra_notifier_env}

    def start_notifier(self, timeout: float = 30.0, index: int = 0) -> None:
        """Start the `index`-th notifier (again, after it stopped)."""
        name = f"notifier-{index + 1}" if index else "notifier"
        process = ManagedProcess(
            name,
            [sys.executable, "-m", "server.notifier"],
            self.logs / f"{name}.log",
            env=self.notifier_env(index),
            cwd=REPO,
        ).start()
        _place(self.notifiers, index, process)
        url = f"http://127.0.0.1:{self.notifier_ops_port(index)}/readyz"
        self._wait(process, lambda: _http_ok(url), timeout)

    def start_core(self, timeout: float = 30.0, index: int = 0) -> None:
        """Start the `index`-th core (again, after it stopped)."""
        name = f"core-{index + 1}" if index else "core"
        process = ManagedProcess(
            name,
            [sys.executable, "-m", "server"],
            self.logs / f"{name}.log",
            env=self.core_env(index),
            cwd=REPO,
        ).start()
        _place(self.cores, index, process)
        self._wait(process, lambda: self.readiness(index)[0] == 200, timeout)

    def restart_core(self, index: int, timeout: float = 60.0) -> None:
        """A rolling restart's step: SIGTERM the `index`-th core, wait for it to exit (its
        drain and grace), start it again, and wait until it is ready and Envoy routes to
        it again (so the next step never leaves Envoy without a healthy core)."""
        _terminate(self.cores[index], timeout)
        self.start_core(timeout, index)
        if self.envoy is not None:
            port = self.core_ports(index).edge_port
            wait_until(
                lambda: self.envoy_core_health().get(port, False),
                timeout,
                f"Envoy to see core {index + 1} healthy",
                require=self.require_alive,
            )

    def restart_notifier(self, index: int, timeout: float = 60.0) -> None:
        """SIGTERM the `index`-th notifier, wait for it to exit (its deliveries in flight
        finished and acknowledged), start it again and wait until it is ready."""
        _terminate(self.notifiers[index], timeout)
        self.start_notifier(timeout, index)

    def envoy_core_health(self) -> dict[int, bool]:
        """Whether Envoy would route to each core now (its active health check passes), by
        edge port."""
        assert self.envoy is not None, "Envoy is not running"
        found = json.loads(self.envoy.admin_get("/clusters?format=json"))
        health: dict[int, bool] = {}
        for cluster in found.get("cluster_statuses", []):
            if cluster.get("name") != CORE_CLUSTER:
                continue
            for host in cluster.get("host_statuses", []):
                port = int(host["address"]["socket_address"]["port_value"])
                status = host.get("health_status", {})
                health[port] = status.get("eds_health_status") == "HEALTHY" and not any(
                    key.startswith("failed_") or key == "pending_active_hc" for key in status
                )
        return health

    def envoy_config(self) -> EnvoyConfig:
        """The edge's configuration for this stack (tests vary it with dataclasses.replace)."""
        return EnvoyConfig(
            listen_port=self.config.rest_port,
            admin_socket=self.envoy_admin_socket,
            core_port=self.config.edge_port,
            core_endpoints=tuple(
                ("127.0.0.1", self.core_ports(index).edge_port + worker)
                for index in range(len(self.config.extra_cores) + 1)
                for worker in range(self.config.core_processes)
            )
            if self.config.extra_cores or self.config.core_processes > 1
            else (),
            core_health_interval_s=self.config.core_health_interval_s,
            core_unhealthy_threshold=self.config.core_unhealthy_threshold,
            core_tls=self.core_tls(),
            descriptor_path=REPO / "gen" / "o2ims.pb",
            server_cert=self.pki.server_cert,
            server_key=self.pki.server_key,
            client_ca=self.pki.ca_cert,
            require_client_certificate=self.config.require_client_certificate,
            jwt=JwtConfig(
                issuer=self.issuer.issuer,
                audiences=(self.issuer.audience,),
                jwks_path=self.issuer.jwks_path,
                required=self.config.require_token,
            ),
            rate_limit=self.rate_limit(),
            strict_query_parameters=self.config.strict_query_parameters,
            access_log_requests=self.config.envoy_access_log,
            audit_log_path=self.edge_audit_log,
            telemetry_port=self.config.edge_telemetry_port,
            # Every core's telemetry listener (they share 127.0.0.1).
            core_telemetry_ports=tuple(
                self.core_ports(index).edge_telemetry_port
                for index in range(len(self.config.extra_cores) + 1)
                # A core's workers share its telemetry listener (SO_REUSEPORT).
                for _worker in range(self.config.core_processes)
            ),
            stats_port=self.config.envoy_stats_port,
            tracing=EdgeTracing(self.config.otlp_endpoint, self.config.trace_sample_ratio)
            if self.config.otlp_endpoint
            else None,
        )

    def start_envoy(self, timeout: float = 30.0) -> None:
        self.envoy = start_envoy(
            self.envoy_config(),
            workdir=self.config.state_dir / "envoy",
            log_path=self.logs / "envoy.log",
            concurrency=self.config.envoy_concurrency,
        )
        # Ready when a REST call goes all the way through to the core.
        self._wait(None, self._rest_ok, timeout)

    def core_tls(self) -> CoreTls:
        """Envoy's side of the mutual TLS to the core's edge listener."""
        return CoreTls(
            cert=self.internal_pki.edge.cert,
            key=self.internal_pki.edge.key,
            ca=self.internal_pki.ca_cert,
            core_uri=CORE_URI,
        )

    def rate_limit(self) -> RateLimitConfig:
        """The edge's buckets: the stack's default rate, and the access policy's per-role
        and per-client rates (`rate_limits`). Refilled every 100 ms so a client's admitted
        rate is smooth; the burst defaults to one second's worth."""
        policy = AccessPolicy.load(self.config.auth_policy) if self.config.auth_policy else None
        overrides = policy.client_rates() if policy else {}
        # The production edge's own buckets (python -m rest_facade.render).
        return edge_rate_limit(self.config.rate_limit_rps, self.config.rate_limit_burst, overrides)

    def _rest_ok(self) -> bool:
        url = f"{self.rest_url}/o2ims-infrastructureInventory/v1"
        request = urllib.request.Request(url, headers=self.dev_token_header())
        with urllib.request.urlopen(request, context=self.client_tls(), timeout=2) as response:
            return bool(response.status == 200)

    def client_tls(self, client: IssuedCertificate | None = None) -> ssl.SSLContext:
        """TLS for calling the edge as `client` (default: the dev client, an admin)."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        chosen = client or self.pki.client
        context.load_cert_chain(str(chosen.cert), str(chosen.key))
        return context

    def dev_token_header(self) -> dict[str, str]:
        """An Authorization header for the dev client when tokens are required."""
        if not self.config.require_token:
            return {}
        token = self.issuer.mint("netweave-dev-client", ["o2ims-admin"])
        return {"authorization": f"Bearer {token}"}

    def readiness(self, index: int = 0) -> tuple[int, dict[str, object]]:
        """(HTTP status, body) of the (`index`-th) core's /readyz."""
        url = f"http://127.0.0.1:{self.core_ports(index).ops_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def _wait(
        self, process: ManagedProcess | None, check: Callable[[], bool], timeout: float
    ) -> None:
        # Recorded as soon as it runs: a supervisor killed while it starts leaves it findable.
        self.record.write(self.bound_ports(), self.managed())
        if self._deferred is not None:  # start(): every process first, the waits after
            self._deferred.append((process, check, timeout))
            return
        try:
            wait_until(
                check,
                timeout,
                process.name if process else "the REST edge",
                require=self.require_alive,
            )
        except TimeoutError as exc:
            tail = process.log_tail() if process else ""
            raise TimeoutError(f"{exc}\n{tail}") from exc

    def managed(self) -> list[ManagedProcess]:
        """Every process this stack started, in start order."""
        found = [
            self.redis.process if self.redis else None,
            self.adapter,
            *self.kube_adapters,
            self.alertmanager_adapter,
            self.moto.process if self.moto else None,
            self.aws_adapter,
            *self.cores,
            *self.notifiers,
            self.envoy.process if self.envoy else None,
        ]
        return [process for process in found if process is not None]

    def processes(self) -> list[tuple[str, bool]]:
        """(name, alive) of everything this stack started."""
        return [(process.name, process.alive()) for process in self.managed()]

    def require_alive(self) -> None:
        """Raise RuntimeError naming the first process that exited, with its exit code and
        the last lines it logged in this run."""
        for process in self.managed():
            process.require_alive()

    def stop(self, abort: bool = False) -> None:
        """SIGTERM to every process at once (each shuts down in parallel), then wait for
        each; Redis last, so nothing loses it while shutting down. `abort` (a start that
        failed: nothing was served yet) kills them instead of waiting for a graceful end."""
        redis = self.redis.process if self.redis else None
        processes = [p for p in reversed(self.managed()) if p is not redis]
        for process in processes:
            process.signal(signal.SIGKILL if abort else signal.SIGTERM)
        for process in [*processes, *([redis] if redis else [])]:
            process.stop()
        self.record.clear()
