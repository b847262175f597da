"""`make run` (python -m devstack) supervises its stack: it refuses what cannot start before
starting anything, reports a child that exits, leaves nothing behind when killed, and
`make stop` (python -m devstack stop) stops a stack left running.

Every run here is a real `python -m devstack` on free ports and its own state directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from devstack.processes import (
    ManagedProcess,
    RecordedProcess,
    StackRecord,
    free_port,
    port_free,
    wait_until,
)
from devstack.stack import EXAMPLE_INVENTORY, PORT_FIELDS, REPO

pytestmark = pytest.mark.e2e

BANNER = "netweave is running"
START_TIMEOUT_S = 60.0


class Run:
    """One `python -m devstack [args]` in `state_dir`, its output in `state_dir`/run-N.log."""

    count = 0

    def __init__(self, state_dir: Path, env: dict[str, str], *args: str) -> None:
        Run.count += 1
        self.state_dir = state_dir
        self.process = ManagedProcess(
            "devstack",
            [sys.executable, "-m", "devstack", *args, "--state-dir", str(state_dir)],
            state_dir.parent / f"run-{Run.count}.log",
            env=env,
            cwd=REPO,
        ).start()

    @property
    def output(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def wait_started(self) -> None:
        wait_until(
            lambda: BANNER in self.output,
            START_TIMEOUT_S,
            "the banner",
            require=self.process.require_alive,
        )

    def wait_exit(self, timeout: float) -> int:
        assert self.process.proc is not None
        return self.process.proc.wait(timeout)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a stack on free ports over a copy of the example inventory (and
    nothing of the caller's NETWEAVE_* or REDIS_URL settings)."""
    inventory = tmp_path / "ocloud.yaml"
    shutil.copy(EXAMPLE_INVENTORY, inventory)
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("NETWEAVE_") and name != "REDIS_URL"
    }
    ports = {f"NETWEAVE_{name.upper()}": str(free_port()) for name in PORT_FIELDS}
    return {**base, **ports, "NETWEAVE_INVENTORY": str(inventory)}


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state directory; whatever its stack record names is stopped afterwards."""
    state = tmp_path / "state"
    yield state
    StackRecord(state).stop(timeout=20.0)


def ports_of(env: dict[str, str]) -> list[int]:
    return [int(env[f"NETWEAVE_{name.upper()}"]) for name in PORT_FIELDS]


def recorded(state_dir: Path) -> list[RecordedProcess]:
    state = StackRecord(state_dir).read()
    assert state is not None, f"no stack record in {state_dir}"
    return [state.supervisor, *state.children]


def assert_all_gone(processes: list[RecordedProcess], ports: list[int], within: float) -> None:
    wait_until(
        lambda: not any(process.running() for process in processes),
        within,
        "every process of the stack to end",
    )
    wait_until(lambda: all(port_free(port) for port in ports), within, "every port to be free")


def test_a_missing_inventory_file_fails_in_under_5s_naming_it(
    env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-inventory.yaml"
    started = time.monotonic()
    run = Run(state_dir, {**env, "NETWEAVE_INVENTORY": str(missing)})
    code = run.wait_exit(timeout=30)
    elapsed = time.monotonic() - started
    assert code == 1, run.output
    assert str(missing) in run.output
    assert elapsed < 5.0, f"took {elapsed:.1f}s"
    assert all(port_free(port) for port in ports_of(env))


def test_an_inventory_the_adapter_refuses_fails_fast_with_this_runs_log_lines_only(
    env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("resourcePools: [\n  unclosed\n")
    stale_log = state_dir / "logs" / "adapter-static.log"
    stale_log.parent.mkdir(parents=True)
    stale_log.write_text("a line an earlier run wrote\n")
    started = time.monotonic()
    run = Run(state_dir, {**env, "NETWEAVE_INVENTORY": str(broken)})
    code = run.wait_exit(timeout=30)
    elapsed = time.monotonic() - started
    assert code == 1, run.output
    assert "adapter-static exited (code 2)" in run.output
    assert f"{broken}:" in run.output  # the adapter's file:line message
    assert "earlier run" not in run.output
    assert elapsed < 5.0, f"took {elapsed:.1f}s"
    assert_all_gone([], ports_of(env), within=5.0)


def test_a_running_stack_refuses_a_second_run_and_reports_a_child_that_exits(
    env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    first = Run(state_dir, env)
    first.wait_started()
    processes = recorded(state_dir)

    # The same ports from another state directory: refused up front, naming the port.
    elsewhere = Run(tmp_path / "elsewhere", env)
    assert elsewhere.wait_exit(timeout=10) == 1
    rest_port = env["NETWEAVE_REST_PORT"]
    assert f"port {rest_port} (rest_port) is in use by pid" in elsewhere.output
    assert BANNER not in elsewhere.output

    # The same state directory: refused, naming the running supervisor.
    again = Run(state_dir, env)
    assert again.wait_exit(timeout=10) == 1
    assert f"already running from {state_dir} (supervisor pid {first.process.pid}" in again.output
    assert rest_port in again.output

    # Neither touched the first stack.
    assert all(process.running() for process in processes)
    ops = f"http://127.0.0.1:{env['NETWEAVE_OPS_PORT']}/readyz"
    with urllib.request.urlopen(ops, timeout=5) as response:
        assert response.status == 200

    # A child that dies is reported within seconds, with its exit, and the stack stops.
    core = next(process for process in processes if process.name == "core")
    os.kill(core.pid, signal.SIGKILL)
    assert first.wait_exit(timeout=15) == 1
    assert "core exited (code -9); last output:" in first.output
    assert "gateway_started" in first.output  # the core's own last lines
    assert_all_gone(processes, ports_of(env), within=5.0)
    assert StackRecord(state_dir).read() is None


def test_kill_9_of_the_supervisor_leaves_no_process_and_the_next_run_starts_clean(
    env: dict[str, str], state_dir: Path
) -> None:
    first = Run(state_dir, env)
    first.wait_started()
    processes = recorded(state_dir)
    first.process.kill()
    assert_all_gone(processes, ports_of(env), within=5.0)

    second = Run(state_dir, env)
    second.wait_started()
    assert BANNER in second.output
    survivors = recorded(state_dir)
    assert {process.pid for process in survivors}.isdisjoint(p.pid for p in processes)

    stop = subprocess.run(
        [sys.executable, "-m", "devstack", "stop", "--state-dir", str(state_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stop.returncode == 0, stop.stderr
    assert f"supervisor (pid {second.process.pid})" in stop.stdout
    assert second.wait_exit(timeout=5) == 0  # it stopped its stack itself, in order
    assert_all_gone(survivors, ports_of(env), within=5.0)
    assert StackRecord(state_dir).read() is None


LEFT_BEHIND = """
import sys, threading, time
from pathlib import Path
from devstack.processes import ManagedProcess, StackRecord

state = Path(sys.argv[1])
children = []
# Started from a thread: no parent-death signal, so it outlives this supervisor.
worker = threading.Thread(target=lambda: children.append(ManagedProcess(
    "sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], state / "sleeper.log"
).start()))
worker.start()
worker.join()
StackRecord(state).write({}, children)
print("recorded", flush=True)
time.sleep(120)
"""


def test_stop_stops_what_a_killed_supervisor_left_and_nothing_else(
    env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    state_dir.mkdir()
    supervisor = ManagedProcess(
        "supervisor",
        [sys.executable, "-c", LEFT_BEHIND, str(state_dir)],
        tmp_path / "supervisor.log",
        env=env,
        cwd=REPO,
    ).start()
    try:
        wait_until(
            lambda: "recorded" in supervisor.log_tail(),
            20,
            "the record",
            require=supervisor.require_alive,
        )
        sleeper = recorded(state_dir)[1]
        supervisor.kill()
        time.sleep(0.5)
        assert sleeper.running(), "left behind, as a supervisor without the death signal would"

        # A bystander under a PID the record names, but started later than the recorded
        # process: a reused PID, never to be signalled.
        with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
            bystander = RecordedProcess.of("reused-pid", other.pid)
            assert bystander is not None
            record = json.loads(StackRecord(state_dir).path.read_text())
            record["children"].append({**asdict(bystander), "started": bystander.started - 1})
            StackRecord(state_dir).path.write_text(json.dumps(record))

            stopped = StackRecord(state_dir).stop(timeout=10)
            assert stopped == [f"sleeper (pid {sleeper.pid})"]
            assert not sleeper.running()
            assert other.poll() is None, "a process merely reusing a recorded PID was stopped"
            other.kill()
    finally:
        supervisor.stop()
    assert StackRecord(state_dir).read() is None
