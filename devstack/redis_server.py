"""A real redis-server child process (Debian's binary), for `make run` and the tests."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from devstack.processes import ManagedProcess, ServerProcess, free_port


@dataclass(frozen=True)
class RedisTls:
    """TLS for a test Redis (and its sentinels): the server certificate and key, and the CA
    clients verify it with. Clients need no certificate (`tls-auth-clients no`)."""

    cert: Path
    key: Path
    ca: Path

    def server_args(self) -> list[str]:
        """redis-server options: TLS only (no plaintext port), TLS to its primary too."""
        return [
            "--tls-cert-file",
            str(self.cert),
            "--tls-key-file",
            str(self.key),
            "--tls-ca-cert-file",
            str(self.ca),
            "--tls-auth-clients",
            "no",
            "--tls-replication",
            "yes",
        ]

    def client_options(self) -> dict[str, Any]:
        """redis-py options of a client that verifies the server."""
        return {"ssl": True, "ssl_ca_certs": str(self.ca)}


class RedisServer(ServerProcess):
    """redis-server on 127.0.0.1 with append-only persistence in `directory`, so a
    restart on the same directory keeps the data (as a production Redis would).
    `extra_args` are more `--name value` configuration (e.g. `--replicaof`, for a replica
    of a Sentinel-watched primary, devstack/redis_sentinel.py); with `tls`, `port` is a TLS
    port and there is no plaintext one; with `password`, clients and replicas need it."""

    def __init__(
        self,
        directory: Path,
        port: int = 0,
        extra_args: Sequence[str] = (),
        tls: RedisTls | None = None,
        password: str | None = None,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self.tls = tls
        self.password = password

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **options: Any) -> redis.Redis:
        """A plain redis-py client of this server (TLS when it has TLS)."""
        tls = self.tls.client_options() if self.tls is not None else {}
        return redis.Redis(port=self.port, password=self.password, **tls, **options)

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server not found: run `make test` or apt-get install redis-server"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.tls is None:
            ports = ["--port", str(self.port)]
        else:
            ports = ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()]
        if self.password is not None:
            ports += ["--requirepass", self.password, "--masterauth", self.password]
        process = ManagedProcess(
            "redis",
            [
                binary,
                "--bind",
                "127.0.0.1",
                *ports,
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
                *self.extra_args,
            ],
            self.directory / "redis.log",
        )
        client = self.client(socket_connect_timeout=0.2)
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


def command_calls(client: redis.Redis) -> dict[str, int]:
    """How many times Redis has executed each command so far (INFO commandstats, by command
    name: `get`, `xreadgroup`, ...; the INFO that asks counts once more after it)."""
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}
