"""Start, watch and stop the real processes of a local stack (used by `make run` and tests)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

# Ports handed out by this process: never handed out twice.
_GIVEN: set[int] = set()
_GIVEN_LOCK = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


# (index, count): this process picks ports from the index-th of count equal slices of the
# spans below; (0, 1) is all of them. Several processes that each pick ports (pytest-xdist
# workers) get disjoint slices: each remembers only what it gave, so without slices one
# could pick a port another picked a moment before and has not bound yet.
_SLICE: list[int] = [0, 1]


def use_port_slice(index: int, count: int) -> None:
    """Pick ports from slice `index` of `count` from now on (see free_port)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"slice {index} of {count} does not exist")
    _SLICE[:] = [index, count]


def _slice(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    index, count = _SLICE
    shares = []
    for start, end in spans:
        width = (end - start + 1) // count
        shares.append((start + index * width, start + (index + 1) * width - 1))
    return shares


def free_port(host: str = "127.0.0.1", *, count: int = 1) -> int:
    """A TCP port that is free on `host` right now, for a server started a moment later
    (with `count`, the first of that many consecutive free ports, all reserved).

    Chosen at random OUTSIDE the kernel's ephemeral range: a port the kernel picks itself
    (bind to 0) is one it may also give to the next outgoing connection of any process
    (a Redis client, an HTTP client) before our server binds it, which failed start-ups with
    "address already in use". Outside that range only another listener can take it.
    """
    low, high = _ephemeral_range()
    candidates = [(1025, low - 1), (high + 1, 65535)]
    span = _slice([(a, b) for a, b in candidates if b - a > 1000] or [(20000, 30000)])
    for _ in range(200):
        start, end = random.choice(span)
        if end - start + 1 < count:
            continue
        first = random.randint(start, end - count + 1)
        run = range(first, first + count)
        with _GIVEN_LOCK:
            if any(port in _GIVEN for port in run):
                continue
        if not all(_bindable(host, port) for port in run):
            continue
        with _GIVEN_LOCK:
            _GIVEN.update(run)
        return first
    raise RuntimeError("no free TCP port found outside the ephemeral range")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_until(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
    *,
    require: Callable[[], None] | None = None,
) -> T:
    """Poll `check` until it returns a true value (True, a non-empty list...) and return that
    value, or raise TimeoutError naming `what`.

    `check` failing with an exception counts as "not yet". `require` is called before every
    check and its exception ends the wait at once (a child that exited during start-up must
    not be waited for until the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        if require is not None:
            require()
        with contextlib.suppress(Exception):
            if result := check():
                return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind host:port now. SO_REUSEADDR as servers set it, so a
    connection in TIME_WAIT does not count as taken, while any listener (on `host` or on a
    wildcard address) does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_holder(port: int) -> str | None:
    """ "pid N (command line)" of a process listening on TCP `port`, if /proc tells."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return f"pid {proc.name} ({command_line(int(proc.name))})"
    return None


def command_line(pid: int) -> str:
    """The command line of a process, as ps shows it ("" if gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 2, which may hold spaces
    and parentheses: split after its last ')'): 0 the state, 11 utime, 12 stime, 19 the
    start time. OSError if there is no such process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    """When a live (not zombie) process started, in clock ticks after boot: with the PID,
    the identity of a process (a reused PID has a later start). None: no such process."""
    try:
        fields = stat_fields(pid)
    except OSError:
        return None
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else int(start)


def process_ended(pid: int) -> bool:
    """Whether process `pid` has ended: reaped, or a zombie waiting to be (one read of
    /proc decides, as the process may be reaped between any two)."""
    return _start_ticks(pid) is None


def thread_statuses(pid: int | str) -> Iterator[str]:
    """/proc/PID/task/TID/status of each thread of process `pid` still there when its turn
    comes (a thread may end between the listing and the read: it is skipped)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            yield (task / "status").read_text()
        except OSError:  # FileNotFoundError, ProcessLookupError: the thread ended
            continue


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


# util-linux's setpriv (Debian: essential) sets the parent-death signal and execs the program.
_SETPRIV = shutil.which("setpriv")


def _dying_with_parent(argv: Sequence[str]) -> list[str]:
    """`argv` run so that Linux SIGTERMs it when this process dies (a supervisor killed with
    SIGKILL leaves no child holding ports), where that is available.

    Not a preexec_fn: with one, subprocess forks (instead of vfork) and the fork runs the
    atfork handlers of every library in this process; gRPC's restart its pollers in the child,
    which abort (SIGABRT, "epoll_wait error: Bad file descriptor") once subprocess closes the
    inherited descriptors before exec. A child given the signal by setpriv is exec'd straight
    from vfork. Linux sends the signal when the *thread* that started the child ends: only a
    child started from the main thread is tied to the parent's life this way."""
    if _SETPRIV is None or threading.current_thread() is not threading.main_thread():
        return list(argv)
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]


class ManagedProcess:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self._log: IO[bytes] | None = None
        # Where this run's output starts in the (appended-to) log file.
        self._log_start = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log_start = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            _dying_with_parent(self.argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(self.env or {})},
            cwd=self.cwd,
            # Own process group: Ctrl-C in the terminal reaches the supervisor only,
            # which then stops children in order.
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def require_alive(self) -> None:
        """Raise with the tail of the log if the process has exited."""
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise RuntimeError(f"{self.name} exited (code {code}); last output:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines this run wrote (earlier runs' output is not shown)."""
        try:
            with self.log_path.open("rb") as log:
                end = log.seek(0, os.SEEK_END)
                start = self._log_start if self._log_start <= end else 0  # truncated since
                log.seek(max(start, end - 256 * 1024))
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ServerProcess:
    """A server program the stack and the tests run (redis-server, moto, Prometheus): one
    ManagedProcess, started and waited for until it answers, then stopped or crashed."""

    def __init__(self) -> None:
        self._process: ManagedProcess | None = None

    def _launch(
        self,
        process: ManagedProcess,
        answers: Callable[[], bool],
        timeout: float,
        what: str,
        interval: float = 0.1,
    ) -> None:
        """Start `process` and wait until `answers()` (its death ends the wait at once)."""
        self._process = process.start()
        wait_until(answers, timeout, what, interval, require=process.require_alive)

    @property
    def process(self) -> ManagedProcess | None:
        """The server's process (None before start)."""
        return self._process

    def alive(self) -> bool:
        return self._process is not None and self._process.alive()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def kill(self) -> None:
        """Crash it (SIGKILL): what an outage looks like to its clients."""
        if self._process is not None:
            self._process.kill()


@dataclass(frozen=True)
class RecordedProcess:
    """One process of a stack record: its PID and when it started (its identity)."""

    name: str
    pid: int
    started: int

    @classmethod
    def of(cls, name: str, pid: int) -> RecordedProcess | None:
        started = _start_ticks(pid)
        return None if started is None else cls(name, pid, started)

    def running(self) -> bool:
        """Whether this very process still runs (not merely a process with its PID)."""
        return _start_ticks(self.pid) == self.started

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid})"


@dataclass(frozen=True)
class StackState:
    """What a stack record holds: the supervisor, its children and the ports they bind."""

    boot_id: str
    supervisor: RecordedProcess
    children: tuple[RecordedProcess, ...]
    ports: dict[str, int]

    def running(self) -> list[RecordedProcess]:
        """The recorded processes still running (none after a reboot)."""
        if self.boot_id != _boot_id():
            return []
        return [p for p in (self.supervisor, *self.children) if p.running()]


class StackRecord:
    """`<state dir>/stack.json`: the supervisor of the stack in a state directory, its
    children and ports. A later `make run` or `make stop` on the same state directory reads it
    to find a stack left running and stops exactly those processes: never another state
    directory's stack, and never a process that merely reuses a recorded PID."""

    FILE_NAME = "stack.json"

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / self.FILE_NAME

    def write(self, ports: dict[str, int], children: Iterable[ManagedProcess]) -> None:
        """Record this process as the supervisor of `children` (replacing the record)."""
        supervisor = RecordedProcess.of("supervisor", os.getpid())
        assert supervisor is not None
        recorded = [RecordedProcess.of(child.name, child.pid) for child in children if child.proc]
        state = StackState(
            _boot_id(), supervisor, tuple(r for r in recorded if r is not None), ports
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(state), indent=2) + "\n")
        temporary.replace(self.path)

    def read(self) -> StackState | None:
        """The recorded stack, or None if there is none (or the record is unreadable)."""
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text())
            return StackState(
                boot_id=raw["boot_id"],
                supervisor=RecordedProcess(**raw["supervisor"]),
                children=tuple(RecordedProcess(**child) for child in raw["children"]),
                ports={name: int(port) for name, port in raw["ports"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def live_supervisor(self) -> RecordedProcess | None:
        """The recorded supervisor if it still runs."""
        state = self.read()
        if state is None or state.supervisor not in state.running():
            return None
        return state.supervisor

    def clear(self) -> None:
        """Remove the record if this process wrote it."""
        state = self.read()
        if state is not None and state.supervisor.pid == os.getpid():
            self.path.unlink(missing_ok=True)

    def stop(self, timeout: float = 60.0) -> list[str]:
        """Stop the recorded stack: SIGTERM to its supervisor (which stops its children in
        order), then SIGTERM, and SIGKILL after `timeout`/2, to any child still running (left
        by a supervisor killed with SIGKILL). Removes the record; returns what was stopped."""
        state = self.read()
        if state is None:
            self.path.unlink(missing_ok=True)  # an unreadable record names nothing to stop
            return []
        if state.supervisor.pid == os.getpid():
            raise RuntimeError(f"{self.path} names this process: stop the stack instead")
        running = state.running()
        if state.supervisor in running:
            _terminate([state.supervisor], timeout)
        _terminate(state.running(), timeout / 2)
        self.path.unlink(missing_ok=True)
        return [process.describe() for process in running]


def _terminate(processes: Sequence[RecordedProcess], timeout: float) -> None:
    """SIGTERM `processes`, wait up to `timeout` for them to end, then SIGKILL the rest."""
    for process in processes:
        if process.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    try:
        wait_until(lambda: not any(p.running() for p in processes), timeout, "processes to end")
    except TimeoutError:
        for process in processes:
            if process.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
        wait_until(lambda: not any(p.running() for p in processes), 5.0, "killed processes")


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` (as exposed, e.g. `x_total`) whose labels include
    `labels`, in a Prometheus text exposition (a process's GET /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
        and all(sample.labels.get(key) == value for key, value in labels.items())
    )
