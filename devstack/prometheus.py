"""A real Prometheus child process (Debian's `prometheus` binary) scraping a local stack: the
monitoring artefacts (deployments/monitoring/) tested against what the processes really export.

Not the Debian systemd service: a server of its own on a free loopback port, with a generated
configuration and its storage in a directory the caller owns."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from devstack.processes import ManagedProcess, ServerProcess, free_port

if TYPE_CHECKING:
    from devstack.stack import LocalStack


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: its `job` label, the host:port of each target, the path scraped."""

    name: str
    targets: tuple[str, ...]
    metrics_path: str = "/metrics"


def stack_scrape_jobs(stack: LocalStack) -> list[ScrapeJob]:
    """The scrape jobs of every process of `stack` that exports metrics, under the job names
    the alert rules expect (netweave-gateway, netweave-notifier, netweave-envoy; the adapters
    as netweave-adapter-<kind>)."""
    config = stack.config
    jobs = [
        ScrapeJob("netweave-gateway", (f"127.0.0.1:{config.ops_port}",)),
        ScrapeJob("netweave-notifier", (f"127.0.0.1:{config.notifier_ops_port}",)),
        ScrapeJob("netweave-envoy", (f"127.0.0.1:{config.envoy_stats_port}",), "/stats/prometheus"),
        ScrapeJob("netweave-adapter-static", (f"127.0.0.1:{config.adapter_ops_port}",)),
    ]
    if config.kube_clusters:
        jobs.append(
            ScrapeJob(
                "netweave-adapter-kubernetes",
                tuple(f"127.0.0.1:{cluster.ops_port}" for cluster in config.kube_clusters),
            )
        )
    if config.alertmanager:  # its metrics are on its webhook receiver's port
        jobs.append(
            ScrapeJob("netweave-adapter-alertmanager", (f"127.0.0.1:{config.alertmanager_port}",))
        )
    metrics_port = _option(config.aws_adapter_args, "--metrics-port")
    if config.aws_regions and metrics_port:
        jobs.append(ScrapeJob("netweave-adapter-aws", (f"127.0.0.1:{metrics_port}",)))
    return jobs


def _option(argv: Sequence[str], name: str) -> str | None:
    """The value of `name VALUE` or `name=VALUE` in argv, if given."""
    for index, argument in enumerate(argv):
        if argument == name and index + 1 < len(argv):
            return argv[index + 1]
        if argument.startswith(f"{name}="):
            return argument.split("=", 1)[1]
    return None


class PrometheusError(RuntimeError):
    """The HTTP API answered with an error (a bad query, an unknown endpoint)."""


class PrometheusServer(ServerProcess):
    """prometheus on 127.0.0.1:`port` (0: a free one), scraping `jobs` every
    `interval_s` and evaluating `rule_files`, its TSDB and configuration under `directory`.

    Every rule group is evaluated at `interval_s` too, whatever its own `interval` says (the
    rules are copied into `directory` with it replaced): a group of 30 s would otherwise be
    evaluated first up to 30 s after the start."""

    def __init__(
        self,
        directory: Path,
        jobs: Sequence[ScrapeJob],
        rule_files: Sequence[Path] = (),
        port: int = 0,
        interval_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.jobs = list(jobs)
        self.rule_files = list(rule_files)
        self.port = port or free_port()
        self.interval_s = interval_s

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "prometheus.yml"

    def write_config(self) -> Path:
        """prometheus.yml (and the rules' copies) under the directory."""
        interval = f"{int(self.interval_s * 1000)}ms"
        rules = []
        for index, source in enumerate(self.rule_files):
            document = yaml.safe_load(source.read_text())
            for group in document.get("groups", []):
                group["interval"] = interval
            copy = self.directory / f"rules-{index}-{source.name}"
            copy.write_text(yaml.safe_dump(document, sort_keys=False))
            rules.append(str(copy))
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": rules,
            "scrape_configs": [
                {
                    "job_name": job.name,
                    "metrics_path": job.metrics_path,
                    "static_configs": [{"targets": list(job.targets)}],
                }
                for job in self.jobs
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return self.config_path

    def start(self, timeout: float = 20.0) -> PrometheusServer:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(
                "prometheus not found: run `make system-deps` or apt-get install prometheus"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write_config()
        process = ManagedProcess(
            "prometheus",
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.format=json",
            ],
            self.directory / "prometheus.log",
            cwd=self.directory,
        )
        self._launch(process, self._ready, timeout, f"prometheus on port {self.port}")
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)

    def api(self, endpoint: str, **params: str) -> Any:
        """The `data` of GET /api/v1/<endpoint>?params; PrometheusError if not `success`."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{endpoint}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{endpoint} {params}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) `expr` evaluates to now: a list of
        {"metric": labels, "value": [time, "text"]}."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets (labels, health, lastError)."""
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def rule_groups(self) -> list[dict[str, Any]]:
        """The loaded rule groups, each with its rules' health and lastError."""
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups
