"""Envoy's admin API is a Unix socket, mode 0600: no TCP port (so no webhook callback or other
pod can POST /quitquitquit or /logging?level=debug, or read /config_dump), and no local
user but Envoy's own and root can connect. The tests talk to it over that socket."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from devstack.pki import DevPki
from rest_facade.envoy_process import RunningEnvoy, start_envoy

from .support import FakeCore, envoy_config

NOBODY = 65534
# Interpreters outside root's home (a venv or pyenv there is closed to other users).
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
# Run as another user: connect to the socket and say what happened.
PROBE = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect(sys.argv[1])
except PermissionError:
    print("refused")
else:
    print("connected")
"""


@pytest.fixture
def envoy_with_shared_socket_dir(
    pki: DevPki, descriptor: Path, core: FakeCore, tmp_path: Path
) -> Iterator[RunningEnvoy]:
    """An Envoy whose admin socket is in a directory every user may enter (mode 0755), so
    that only the socket's own mode keeps other users out."""
    shared = Path(tempfile.mkdtemp(prefix="netweave-admin-", dir="/tmp"))
    shared.chmod(0o755)
    config = replace(envoy_config(pki, core.port), admin_socket=shared / "admin.sock")
    running = start_envoy(config, tmp_path, tmp_path / "envoy.log", concurrency=1)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(shared, ignore_errors=True)


def as_nobody(*command: str) -> list[str] | None:
    """`command` run as user and group nobody, or None when this test cannot switch users."""
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--", *command]
    return None


def probe_as_nobody(socket_path: Path) -> str:
    """What user nobody gets when it connects to `socket_path`: "refused" or "connected"."""
    for python in (*SYSTEM_PYTHONS, sys.executable):
        command = as_nobody(python, "-I", "-S", "-c", PROBE, str(socket_path))
        if command is None:
            pytest.skip("needs root and setpriv or runuser to act as another user")
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode == 0:
            return result.stdout.strip()
    pytest.skip("no Python interpreter that user nobody may run")


def test_the_helper_reads_ready_over_the_socket(envoy: RunningEnvoy) -> None:
    assert envoy.admin_get("/ready").strip() == "LIVE"
    assert stat.S_ISSOCK(os.stat(envoy.admin_socket).st_mode)


def test_envoy_listens_on_no_tcp_port_but_the_api(envoy: RunningEnvoy) -> None:
    assert listening_tcp_ports(envoy.process.pid) == {envoy.listener_port}


def test_the_socket_is_mode_0600_and_other_users_cannot_connect(
    envoy_with_shared_socket_dir: RunningEnvoy,
) -> None:
    socket_path = envoy_with_shared_socket_dir.admin_socket
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600

    assert probe_as_nobody(socket_path) == "refused"
    # The probe is not refused for some other reason: with the mode opened, it connects.
    socket_path.chmod(0o666)
    try:
        assert probe_as_nobody(socket_path) == "connected"
    finally:
        socket_path.chmod(0o600)


def listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on, from /proc (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
