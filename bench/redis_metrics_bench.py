"""The cost of counting Redis commands (o2ims_redis_commands_total): the same GETs and
pipelines through a plain redis-py client and a CountingRedis, on a real redis-server.

    .venv/bin/python -m bench.redis_metrics_bench
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from devstack.redis_server import RedisServer
from netweave.redis_metrics import CountingRedis, count

ROUNDS = 5
COMMANDS = 20_000
PIPELINES = 2_000
PIPELINE_LENGTH = 20


def best(first: Callable[[], None], second: Callable[[], None]) -> tuple[float, float]:
    """The fastest of ROUNDS runs of each (seconds), alternated so that load from other
    processes on the machine falls on both alike."""
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(ROUNDS):
        for run, kept in ((first, timings[0]), (second, timings[1])):
            started = time.perf_counter()
            run()
            kept.append(time.perf_counter() - started)
    return min(timings[0]), min(timings[1])


def counting_cost() -> float:
    """Seconds the counting adds to one command, without the network: count() alone."""
    started = time.perf_counter()
    for _ in range(COMMANDS):
        count("GET", ok=True)
    return (time.perf_counter() - started) / COMMANDS


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory)).start()
        try:
            plain = redis.Redis.from_url(server.url)
            counting = CountingRedis.from_url(server.url)
            plain.set("key", "value")

            def gets(client: redis.Redis) -> Callable[[], None]:
                def run() -> None:
                    for _ in range(COMMANDS):
                        client.get("key")

                return run

            def pipelines(client: redis.Redis) -> Callable[[], None]:
                def run() -> None:
                    for _ in range(PIPELINES):
                        pipe = client.pipeline(transaction=False)
                        for _ in range(PIPELINE_LENGTH):
                            pipe.get("key")
                        pipe.execute()

                return run

            for name, make, count in (
                ("GET", gets, COMMANDS),
                ("pipelined GET", pipelines, PIPELINES * PIPELINE_LENGTH),
            ):
                without, with_ = best(make(plain), make(counting))
                print(
                    f"{name:14} without {without / count * 1e6:6.2f} us/command, "
                    f"with {with_ / count * 1e6:6.2f} us/command, "
                    f"+{(with_ - without) / count * 1e6:5.2f} us ({with_ / without:.3f}x)"
                )
            print(f"count() alone: {counting_cost() * 1e6:.2f} us/command")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
