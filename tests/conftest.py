"""Session-wide fixtures: real binaries only (redis-server, the adapter, the core, Envoy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devstack.processes import use_port_slice
from devstack.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_INVENTORY = REPO / "examples" / "ocloud.yaml"


def pytest_configure(config: pytest.Config) -> None:
    """Each pytest-xdist worker picks free ports from its own slice (devstack.processes)."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        # A worker that replaces a crashed one gets the next id (gw2 of 2 workers, ...).
        count = int(worker["workercount"])
        use_port_slice(int(worker["workerid"].removeprefix("gw")) % count, count)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A clean database on the session's redis-server."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url
