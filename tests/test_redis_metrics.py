"""o2ims_redis_commands_total counts what a client made by server.store.connect sends, on a
real redis-server: plain commands, error replies, pipelines (each command), transactions,
scripts (EVALSHA) and blocking stream reads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from netweave.redis_metrics import REDIS_COMMANDS
from server.store import connect


def counted(command: str, outcome: str) -> float:
    return float(REDIS_COMMANDS.labels(command, outcome)._value.get())


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    made = connect(redis_url)
    yield made
    made.close()


def test_each_command_is_counted_with_its_name(client: redis.Redis) -> None:
    sets, gets = counted("set", "ok"), counted("get", "ok")
    for n in range(5):
        client.set(f"k{n}", n)
    for n in range(3):
        client.get(f"k{n}")
    assert counted("set", "ok") - sets == 5
    assert counted("get", "ok") - gets == 3


def test_an_error_reply_is_an_error(client: redis.Redis) -> None:
    client.set("text", "x")
    errors, ok = counted("lpush", "error"), counted("lpush", "ok")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.lpush("text", "y")
    assert counted("lpush", "error") - errors == 1
    assert counted("lpush", "ok") == ok


def test_a_pipeline_counts_each_command_by_its_own_reply(client: redis.Redis) -> None:
    client.set("text", "x")
    incr, lpush_error = counted("incrby", "ok"), counted("lpush", "error")
    pipe = client.pipeline(transaction=False)
    for _ in range(4):
        pipe.incr("counter")
    pipe.lpush("text", "y")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        pipe.execute()
    assert counted("incrby", "ok") - incr == 4
    assert counted("lpush", "error") - lpush_error == 1
    assert client.get("counter") == b"4"  # the pipeline ran whole, as redis-py's does

    pipe = client.pipeline(transaction=False)
    pipe.incr("counter")
    pipe.lpush("text", "z")
    assert isinstance(pipe.execute(raise_on_error=False)[1], redis.ResponseError)


def test_a_transaction_counts_multi_exec_and_each_command(client: redis.Redis) -> None:
    multi, exec_, hset = counted("multi", "ok"), counted("exec", "ok"), counted("hset", "ok")
    with client.pipeline() as pipe:
        pipe.hset("h", "a", 1)
        pipe.hset("h", "b", 2)
        pipe.execute()
    assert counted("multi", "ok") - multi == 1
    assert counted("exec", "ok") - exec_ == 1
    assert counted("hset", "ok") - hset == 2


def test_scripts_count_as_evalsha_and_blocking_reads_are_counted(client: redis.Redis) -> None:
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    evalsha_ok, evalsha_error = counted("evalsha", "ok"), counted("evalsha", "error")
    script(keys=["scripted"])  # NOSCRIPT first, then SCRIPT LOAD and EVALSHA again
    script(keys=["scripted"])
    assert counted("evalsha", "ok") - evalsha_ok == 2
    assert counted("evalsha", "error") - evalsha_error == 1

    reads = counted("xread", "ok")
    client.xadd("s", {"f": "v"})
    assert client.xread({"s": "0-0"}, block=10)
    assert client.xread({"s": "$"}, block=10) == []  # timed out: still a command sent
    assert counted("xread", "ok") - reads == 2


def test_a_failed_connection_is_an_error(redis_url: str) -> None:
    dead = connect("redis://127.0.0.1:1")
    errors = counted("ping", "error")
    with pytest.raises(redis.ConnectionError):
        dead.ping()
    assert counted("ping", "error") - errors == 1
