"""A real redis-server child process (Debian's binary), for `make run` and the tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from devstack.processes import ManagedProcess, ServerProcess, free_port


class RedisServer(ServerProcess):
    """redis-server on 127.0.0.1 with append-only persistence in `directory`, so a
    restart on the same directory keeps the data (as a production Redis would)."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        super().__init__()
        self.directory = directory
        self.port = port or free_port()

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
        process = ManagedProcess(
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
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            self._launch(
                process,
                lambda: bool(client.ping()),
                timeout,
                f"redis-server on port {self.port}",
                interval=0.05,
            )
        finally:
            client.close()
        return self
