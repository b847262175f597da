"""`python -m server` as a real child process for the tests of its logs and correlation ids:
its standard error apart from its standard output, its audit trail in a file; and the check
every log line of every netweave process must pass."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc

from devstack.processes import free_port, port_open, wait_until

REPO = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "gen" / "python")])}
# What every log line of every process has (netweave/logs.py).
LOG_FIELDS = ("ts", "level", "component", "version", "event")


def complete_lines(text: str) -> list[str]:
    """The lines of `text` its writer has finished. A reader racing a live writer may catch
    the last line half written: without its newline, it is not a line yet."""
    return text[: text.rfind("\n") + 1].splitlines()


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every finished line of the JSON-lines file `path` (an audit trail, an access log),
    parsed; none while the file does not exist yet."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in complete_lines(text) if line.strip()]


def log_records(text: str) -> list[dict[str, Any]]:
    """Every finished line of a process's standard error, parsed; fails naming the first
    line that is not a JSON object with the fields every log line has."""
    records = []
    for number, line in enumerate(complete_lines(text), 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(record, dict), f"line {number} is not a JSON object: {line!r}"
        missing = [field for field in LOG_FIELDS if field not in record]
        assert not missing, f"line {number} lacks {missing}: {line!r}"
        records.append(record)
    return records


class CoreProcess:
    """The core on a free internal port, Redis at `redis_url`, its adapter at an address
    where none listens (it is away: the subscription and alarm APIs do not need it)."""

    def __init__(self, redis_url: str, workdir: Path, **env: str) -> None:
        self.port = free_port()
        self.stderr_path = workdir / f"core-{self.port}.err"
        self.audit_path = workdir / f"audit-{self.port}.log"
        self.env = {
            **os.environ,
            **ENV,
            "REDIS_URL": redis_url,
            "NETWEAVE_GRPC_PORT": str(self.port),
            "NETWEAVE_OPS_PORT": str(free_port()),
            "NETWEAVE_EDGE_TELEMETRY_PORT": str(free_port()),
            "NETWEAVE_ADAPTERS": f"127.0.0.1:{free_port()}",
            "NETWEAVE_AUDIT_LOG": str(self.audit_path),
            "NETWEAVE_CALLBACK_ALLOW_HTTP": "1",
            "NETWEAVE_CALLBACK_ALLOWED_CIDRS": "127.0.0.0/8",
            # Stopped at once: no load balancer to drain from (tests that drain set it).
            "NETWEAVE_SHUTDOWN_DRAIN_SECONDS": "0",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    def start(self) -> CoreProcess:
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server"],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        wait_until(lambda: port_open(self.port), 20, "the core's gRPC port", require=self._alive)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return self

    def _alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the core exited: {self.stderr()}")

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        return log_records(self.stderr())

    def audit(self) -> list[dict[str, Any]]:
        return json_lines(self.audit_path)

    def stop(self) -> int | None:
        if self.channel is not None:
            self.channel.close()
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def run_to_exit(argv: list[str], env: dict[str, str], timeout: float = 30.0) -> tuple[int, str]:
    """Run a netweave process that is expected to stop by itself: (exit code, stderr)."""
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env={**os.environ, **ENV, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stderr
