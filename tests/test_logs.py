"""Every line a real netweave process writes to standard error is one JSON object with ts,
level, component and version: start-up failures (a bad setting, a port taken, a bad
argument, an invalid inventory) and their tracebacks included, and grpc's C core too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.processes import free_port, wait_until
from tests.core_process import ENV, REPO, CoreProcess, log_records, run_to_exit


@pytest.fixture
def taken_port() -> Iterator[int]:
    port = free_port()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        yield port


def test_a_core_with_a_bad_setting_says_so_in_json() -> None:
    code, stderr = run_to_exit(["-m", "server"], {"NETWEAVE_GRPC_WORKERS": "many"})

    assert code == 2
    [record] = log_records(stderr)
    assert record["component"] == "core"
    assert record["event"] == "configuration_invalid"
    assert "NETWEAVE_GRPC_WORKERS" in record["error"]


def test_a_core_whose_port_is_taken_logs_the_traceback_and_grpcs_reason_in_json(
    taken_port: int,
) -> None:
    code, stderr = run_to_exit(
        ["-m", "server"],
        {
            "NETWEAVE_GRPC_PORT": str(taken_port),
            "NETWEAVE_OPS_PORT": str(free_port()),
            "NETWEAVE_EDGE_TELEMETRY_PORT": str(free_port()),
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}",
        },
    )

    assert code != 0
    records = log_records(stderr)
    [crash] = [r for r in records if r["event"] == "uncaught_exception"]
    assert crash["level"] == "critical"
    assert "Traceback (most recent call last)" in crash["exception"]
    assert f"Failed to bind to address 127.0.0.1:{taken_port}" in crash["exception"]
    # grpc's C core wrote its reason to file descriptor 2 itself.
    [grpc_core] = [r for r in records if r.get("logger") == "grpc-core"]
    assert "Address already in use" in grpc_core["event"]
    assert grpc_core["level"] == "error"


def test_a_notifier_with_a_bad_setting_says_so_in_json() -> None:
    code, stderr = run_to_exit(["-m", "server.notifier"], {"NETWEAVE_WEBHOOK_SECRET": ""})

    assert code == 2
    [record] = log_records(stderr)
    assert record["component"] == "notifier"
    assert record["event"] == "configuration_invalid"


def test_a_static_adapter_given_a_bad_argument_or_a_bad_file_answers_in_json(
    tmp_path: Path,
) -> None:
    code, stderr = run_to_exit(["-m", "adapters.static", "--port", "not-a-port"], {})
    assert code == 2
    records = log_records(stderr)
    assert any("invalid int value: 'not-a-port'" in r["event"] for r in records)
    assert {r["component"] for r in records} == {"adapter-static"}

    broken = tmp_path / "ocloud.yaml"
    broken.write_text("oCloud: [unclosed\n")
    code, stderr = run_to_exit(
        ["-m", "adapters.static", "--port", str(free_port()), "--inventory", str(broken)], {}
    )
    assert code == 2
    assert any(str(broken) in r["event"] for r in log_records(stderr))


def test_every_line_of_a_running_static_adapter_and_core_is_json(
    redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    adapter_err = tmp_path / "adapter.err"
    with adapter_err.open("wb") as stderr:
        adapter = subprocess.Popen(
            [sys.executable, "-m", "adapters.static", "--port", str(port)],
            cwd=REPO,
            env={**os.environ, **ENV},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    core = CoreProcess(redis_url, tmp_path, NETWEAVE_ADAPTERS=f"127.0.0.1:{port}").start()
    try:
        wait_until(
            lambda: any(
                r["event"] == "adapter_started" for r in log_records(adapter_err.read_text())
            ),
            20,
            "the adapter's start",
        )
        wait_until(lambda: any(r["event"] == "gateway_started" for r in core.records()), 20, "core")
    finally:
        core.stop()
        adapter.send_signal(signal.SIGTERM)
        adapter.wait(10)
    adapter_records = log_records(adapter_err.read_text())
    assert {r["component"] for r in adapter_records} == {"adapter-static"}
    assert adapter_records[-1]["event"] == "adapter_stopped"
    core_records = core.records()
    assert {r["component"] for r in core_records} == {"core"}
    # Its own stop is logged (other threads may still write a line while it winds down).
    assert "gateway_stopped" in [r["event"] for r in core_records]
