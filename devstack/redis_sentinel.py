"""Redis with Sentinel from the real binaries (Debian's redis-server): a primary, replicas and
three sentinels on 127.0.0.1, for failover tests and for trying a `redis+sentinel://` URL.

    cluster = SentinelCluster(tmp_path).start()
    config = StackConfig.ephemeral(state_dir, redis_url=cluster.url)  # redis+sentinel://...
    old = cluster.kill_primary()               # SIGKILL, as a crashed host
    cluster.wait_for_failover(old)             # a replica promoted by the sentinels
    cluster.stop()

Detection is tuned for tests (down-after-milliseconds 1000): production keeps Redis's
defaults or the deployment's (deployments/kubernetes/components/redis-sentinel).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import redis

from devstack.processes import ManagedProcess, ServerProcess, free_port, wait_until
from devstack.redis_server import RedisServer, RedisTls

MASTER_NAME: Final = "netweave"
Address = tuple[str, int]


class RedisSentinel(ServerProcess):
    """One `redis-server --sentinel` on 127.0.0.1 watching `primary` as `master_name`."""

    def __init__(
        self,
        directory: Path,
        primary: Address,
        *,
        master_name: str = MASTER_NAME,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        port: int = 0,
        tls: RedisTls | None = None,
        password: str | None = None,
        node_password: str | None = None,
    ) -> None:
        super().__init__()
        self.directory = directory
        self.tls = tls
        # Its own (requirepass), and the data nodes' (auth-pass).
        self.password = password
        self.node_password = node_password
        self.primary = primary
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.port = port or free_port()

    def start(self, timeout: float = 10.0) -> RedisSentinel:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server not found: run `make test` or apt-get install redis-server"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        # A sentinel rewrites its configuration file (what it learnt: replicas, peers,
        # epochs), so it gets a file of its own, not command-line options.
        config = self.directory / "sentinel.conf"
        host, port = self.primary
        name = self.master_name
        if self.tls is None:
            listen = f"port {self.port}\n"
        else:
            # TLS only, and TLS to the data nodes and the other sentinels too.
            listen = (
                f"port 0\ntls-port {self.port}\ntls-cert-file {self.tls.cert}\n"
                f"tls-key-file {self.tls.key}\ntls-ca-cert-file {self.tls.ca}\n"
                "tls-auth-clients no\ntls-replication yes\n"
            )
        if self.password is not None:
            listen += f"requirepass {self.password}\n"
        config.write_text(
            listen + "bind 127.0.0.1\n"
            "daemonize no\n"
            f"dir {self.directory}\n"
            f"sentinel monitor {name} {host} {port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
            + (f"sentinel auth-pass {name} {self.node_password}\n" if self.node_password else "")
        )
        process = ManagedProcess(
            "redis-sentinel",
            [binary, str(config), "--sentinel"],
            self.directory / "sentinel.log",
        )
        client = self.client()
        try:
            self._launch(
                process,
                lambda: bool(client.ping()),
                timeout,
                f"redis-sentinel on port {self.port}",
                interval=0.05,
            )
        finally:
            client.close()
        return self

    def client(self) -> Any:
        """A plain client of this sentinel (SENTINEL commands; replies decoded, untyped)."""
        tls = self.tls.client_options() if self.tls is not None else {}
        return redis.Redis(
            port=self.port,
            password=self.password,
            socket_connect_timeout=0.2,
            socket_timeout=1.0,
            decode_responses=True,
            **tls,
        )


class SentinelCluster:
    """A primary, `replicas` replicas and `sentinels` sentinels (quorum 2), all started from
    the machine's redis-server on free ports under `directory`; with `tls`, every one of them
    speaks TLS only (`url` is then `rediss+sentinel://`); with `password` the data nodes and
    with `sentinel_password` the sentinels require one (both are in `url`)."""

    def __init__(
        self,
        directory: Path,
        *,
        master_name: str = MASTER_NAME,
        replicas: int = 1,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        tls: RedisTls | None = None,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.directory = directory
        self.tls = tls
        self.password = password
        self.sentinel_password = sentinel_password
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.replica_count = replicas
        self.sentinel_count = sentinels
        # Every data node ever started, primary first; after a failover any may be primary.
        self.nodes: list[RedisServer] = []
        self.sentinels: list[RedisSentinel] = []

    @property
    def url(self) -> str:
        """The `redis+sentinel://` URL of database 0 (netweave/redis_url.py)."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        scheme = "redis+sentinel" if self.tls is None else "rediss+sentinel"
        userinfo = f":{quote(self.password, safe='')}@" if self.password else ""
        parameters = {
            "ssl_ca_certs": str(self.tls.ca) if self.tls else None,
            "sentinel_password": self.sentinel_password,
        }
        query = urlencode({k: v for k, v in parameters.items() if v}, safe="/")
        return f"{scheme}://{userinfo}{hosts}/{self.master_name}/0" + (f"?{query}" if query else "")

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        """Start every process and wait until each sentinel knows the primary, its replicas
        and the other sentinels: only then can they agree on a failover."""
        try:
            primary = RedisServer(
                self.directory / "node-0", tls=self.tls, password=self.password
            ).start()
            self.nodes.append(primary)
            for number in range(1, self.replica_count + 1):
                replica = RedisServer(
                    self.directory / f"node-{number}",
                    extra_args=("--replicaof", "127.0.0.1", str(primary.port)),
                    tls=self.tls,
                    password=self.password,
                )
                self.nodes.append(replica.start())
            for number in range(self.sentinel_count):
                sentinel = RedisSentinel(
                    self.directory / f"sentinel-{number}",
                    ("127.0.0.1", primary.port),
                    master_name=self.master_name,
                    down_after_ms=self.down_after_ms,
                    failover_timeout_ms=self.failover_timeout_ms,
                    tls=self.tls,
                    password=self.sentinel_password,
                    node_password=self.password,
                )
                self.sentinels.append(sentinel.start())
            wait_until(self._formed, timeout, "the sentinels to see every replica and peer")
        except BaseException:
            self.stop()
            raise
        return self

    def _formed(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                state = client.sentinel_master(self.master_name)
                replicas = client.sentinel_slaves(self.master_name)
            finally:
                client.close()
            online = [r for r in replicas if not (r["is_sdown"] or r["is_odown"])]
            if (
                state["num-other-sentinels"] < self.sentinel_count - 1
                or len(online) < self.replica_count
                # A replica still syncing would refuse to be promoted.
                or any(r.get("master-link-status") != "ok" for r in online)
            ):
                return False
        return True

    def primary_address(self) -> Address:
        """(host, port) of the primary as the sentinels name it now (the first that answers)."""
        errors: list[str] = []
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            client = sentinel.client()
            try:
                host, port = client.sentinel_get_master_addr_by_name(self.master_name)
                return str(host), int(port)
            except (redis.RedisError, TypeError) as exc:
                errors.append(f"sentinel {sentinel.port}: {exc}")
            finally:
                client.close()
        raise RuntimeError("no sentinel names a primary: " + "; ".join(errors))

    def node_at(self, address: Address) -> RedisServer:
        """The data node listening on `address`."""
        return next(node for node in self.nodes if node.port == address[1])

    def kill_primary(self) -> Address:
        """SIGKILL the current primary (no shutdown, no last fsync); returns its address."""
        address = self.primary_address()
        self.node_at(address).kill()
        return address

    def wait_for_failover(self, old: Address, timeout: float = 30.0) -> Address:
        """Wait until every live sentinel names a new primary, other than `old`, that
        answers as a primary; returns its address."""

        def promoted() -> bool:
            answers = set()
            for sentinel in self.sentinels:
                if sentinel.alive():
                    client = sentinel.client()
                    try:
                        host, port = client.sentinel_get_master_addr_by_name(self.master_name)
                    finally:
                        client.close()
                    answers.add((str(host), int(port)))
            if len(answers) != 1 or old in answers:
                return False
            node = self.node_at(answers.pop()).client(socket_timeout=1.0, decode_responses=True)
            try:
                return bool(node.info("replication")["role"] == "master")
            finally:
                node.close()

        wait_until(promoted, timeout, f"a primary other than {old[0]}:{old[1]}")
        return self.primary_address()

    def stop(self) -> None:
        """Stop every sentinel, then every data node (SIGTERM, then SIGKILL)."""
        for process in [*self.sentinels, *reversed(self.nodes)]:
            process.stop()
