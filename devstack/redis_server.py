"""A real redis-server child process (Debian's binary), for `make run` and the tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from devstack.processes import ManagedProcess, free_port, wait_until


class RedisServer:
    """redis-server on 127.0.0.1 with append-only persistence in `directory`, so a
    restart on the same directory keeps the data (as a production Redis would)."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.directory = directory
        self.port = port or free_port()
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server not found: run `make test` or apt-get install redis-server"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(
            "redis",
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
            ],
            self.directory / "redis.log",
        ).start()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            wait_until(
                lambda: bool(client.ping()),
                timeout,
                f"redis-server on port {self.port}",
                require=self._process.require_alive,
            )
        finally:
            client.close()
        return self

    @property
    def process(self) -> ManagedProcess | None:
        """The redis-server process (None before start)."""
        return self._process

    def alive(self) -> bool:
        return self._process is not None and self._process.alive()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def kill(self) -> None:
        """Crash it (SIGKILL): what an outage looks like to the gateway."""
        if self._process is not None:
            self._process.kill()
