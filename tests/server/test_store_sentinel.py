"""server.store.connect through Redis Sentinel, on real processes (devstack/redis_sentinel.py:
a primary, a replica, three sentinels): commands are counted, a demoted primary is left for
the new one, Lua scripts and consumer groups work on a new primary after SIGKILL, writes that
must survive a failover wait for the replica, a primary short of replicas is a 503, and TLS
and passwords reach sentinels and data nodes as the URL says."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from devstack.pki import ensure_dev_pki
from devstack.redis_sentinel import SentinelCluster
from devstack.redis_server import RedisServer, RedisTls
from netweave.redis_metrics import REDIS_COMMANDS, UNREPLICATED_WRITES
from server.errors import Unavailable
from server.store import ReplicaWait, connect
from server.subscriptions.api import SUBSCRIPTION_STORE, redis_errors
from server.subscriptions.store import INVENTORY_SUBSCRIPTIONS, SubscriptionStore

pytestmark = pytest.mark.timeout(90)
T = TypeVar("T")


def counted(command: str, outcome: str) -> float:
    return float(REDIS_COMMANDS.labels(command, outcome)._value.get())


def retried(call: Callable[[], T], timeout: float = 20.0) -> tuple[T, list[Exception]]:
    """`call()`'s result once it succeeds, and the errors before, as a caller's retry loop
    (netweave/backoff.py) would see them."""
    errors: list[Exception] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(), errors
        except redis.RedisError as exc:
            errors.append(exc)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    """Shared by the tests that leave the primary where it is."""
    started = SentinelCluster(tmp_path_factory.mktemp("sentinel")).start()
    yield started
    started.stop()


def test_a_sentinel_client_reaches_the_primary_and_counts_its_commands(
    cluster: SentinelCluster,
) -> None:
    client = connect(cluster.url)
    sets, gets = counted("set", "ok"), counted("get", "ok")
    client.set("greeting", "hello")
    assert client.get("greeting") == b"hello"
    assert counted("set", "ok") - sets == 1
    assert counted("get", "ok") - gets == 1
    primary = redis.Redis(port=cluster.primary_address()[1])
    assert primary.get("greeting") == b"hello"
    client.close()


def test_a_demoted_primary_answering_readonly_is_a_connection_error(
    cluster: SentinelCluster,
) -> None:
    """What a client meets when it reaches the old primary after a failover (demoted to a
    replica): redis-py disconnects and raises ConnectionError, so every caller retries (as
    for a lost connection) and the retry asks the sentinels again."""
    client = connect(cluster.url)
    replica = next(node for node in cluster.nodes if node.port != cluster.primary_address()[1])
    # A SentinelManagedConnection (redis-py's types know only the base class).
    connection: Any = client.connection_pool.get_connection()
    try:
        connection.disconnect()
        connection.connect_to(("127.0.0.1", replica.port))  # as if the primary were demoted
        assert connection.port == replica.port
        connection.send_command("SET", "k", "v")
        with pytest.raises(redis.ConnectionError, match="previous master is now a slave"):
            connection.read_response()
        assert connection._sock is None  # the next use asks the sentinels again
    finally:
        client.connection_pool.release(connection)
    client.set("k", "v")  # on the primary again
    client.close()


def test_writes_that_must_survive_a_failover_wait_for_the_replica(
    cluster: SentinelCluster,
) -> None:
    client = connect(cluster.url)
    unreplicated = UNREPLICATED_WRITES.labels("subscription_create")._value.get()
    confirmed = SubscriptionStore(client, ReplicaWait(1, 500))
    confirmed.create(
        INVENTORY_SUBSCRIPTIONS,
        "sub-confirmed",
        callback="https://smo.example/1",
        filter_="",
        consumer_subscription_id="c1",
        api_version="v1",
    )
    assert UNREPLICATED_WRITES.labels("subscription_create")._value.get() == unreplicated
    # More replicas than there are: the write still succeeds, logged and counted.
    hopeful = SubscriptionStore(client, ReplicaWait(2, 50))
    hopeful.create(
        INVENTORY_SUBSCRIPTIONS,
        "sub-hopeful",
        callback="https://smo.example/2",
        filter_="",
        consumer_subscription_id="c2",
        api_version="v1",
    )
    assert UNREPLICATED_WRITES.labels("subscription_create")._value.get() == unreplicated + 1
    assert hopeful.delete(INVENTORY_SUBSCRIPTIONS, "sub-hopeful")
    replica = next(node for node in cluster.nodes if node.port != cluster.primary_address()[1])
    copy = SubscriptionStore(redis.Redis(port=replica.port))
    assert copy.get(INVENTORY_SUBSCRIPTIONS, "sub-confirmed") is not None
    client.close()


def test_a_primary_short_of_replicas_in_sync_is_unavailable_not_failed(tmp_path: Path) -> None:
    """min-replicas-to-write (recommended in the operations guide) makes a primary refuse
    writes while too few replicas are in sync: NOREPLICAS, a 503 to retry, never a 500."""
    primary = RedisServer(tmp_path / "redis", extra_args=("--min-replicas-to-write", "1")).start()
    try:
        store = SubscriptionStore(connect(primary.url))
        with pytest.raises(Unavailable) as raised, redis_errors(SUBSCRIPTION_STORE):
            store.create(
                INVENTORY_SUBSCRIPTIONS,
                "sub-refused",
                callback="https://smo.example/3",
                filter_="",
                consumer_subscription_id="c3",
                api_version="v1",
            )
        assert raised.value.reason == "SUBSCRIPTION_STORE_UNAVAILABLE"
        assert "NOREPLICAS" in str(raised.value.__cause__)
    finally:
        primary.stop()


def test_scripts_and_streams_keep_working_on_the_new_primary_after_sigkill(
    tmp_path: Path,
) -> None:
    cluster = SentinelCluster(tmp_path / "cluster").start()
    try:
        client = connect(cluster.url)
        script = client.register_script("return redis.call('INCR', KEYS[1])")
        assert script(keys=["counter"]) == 1
        client.xgroup_create("events", "workers", id="0", mkstream=True)
        client.xadd("events", {"n": "1"})
        assert client.wait(1, 1000) == 1  # the replica has all of it

        old = cluster.kill_primary()
        killed_at = time.monotonic()
        # Called at once, as a caller's retry loop would: transient errors until the
        # sentinels have promoted the replica, then the new primary, no new client.
        value, errors = retried(lambda: script(keys=["counter"]))
        recovered_after = time.monotonic() - killed_at
        assert value == 2
        assert errors, "the old primary was still answering"
        assert all(isinstance(e, redis.ConnectionError | redis.TimeoutError) for e in errors)
        new = cluster.wait_for_failover(old)
        assert client.connection_pool.connection_kwargs["connection_pool"].master_address == new
        # A primary that has never run the script (as after a restart): NOSCRIPT, reloaded.
        redis.Redis(port=new[1]).script_flush()
        noscript, loads = counted("evalsha", "error"), counted("script load", "ok")
        assert script(keys=["counter"]) == 3
        assert counted("evalsha", "error") - noscript == 1
        assert counted("script load", "ok") - loads == 1
        # The consumer group and its stream moved with the data.
        entries: Any = client.xreadgroup("workers", "w1", {"events": ">"}, count=10)
        assert [fields for _id, fields in entries[0][1]] == [{b"n": b"1"}]
        client.xadd("events", {"n": "2"})
        entries = client.xreadgroup("workers", "w1", {"events": ">"}, count=10)
        assert [fields for _id, fields in entries[0][1]] == [{b"n": b"2"}]
        print(f"script recovered {recovered_after:.2f}s after SIGKILL, {len(errors)} errors")
        client.close()
    finally:
        cluster.stop()


def test_rediss_sentinel_speaks_tls_to_sentinels_and_data_nodes(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path / "pki")
    tls = RedisTls(pki.server_cert, pki.server_key, pki.ca_cert)
    cluster = SentinelCluster(tmp_path / "cluster", tls=tls).start()
    try:
        assert cluster.url.startswith("rediss+sentinel://")
        client = connect(cluster.url)
        client.set("over", "tls")
        assert client.get("over") == b"tls"
        # Nothing answers in plaintext: the sentinels and the primary were reached over TLS.
        plain = redis.Redis(port=cluster.sentinels[0].port, socket_timeout=1.0)
        with pytest.raises(redis.ConnectionError):
            plain.ping()
        # A client that does not trust the CA is refused by the sentinels already.
        untrusting_url = cluster.url.replace(str(pki.ca_cert), str(pki.server_cert))
        assert untrusting_url != cluster.url
        untrusting = connect(untrusting_url)
        with pytest.raises(redis.ConnectionError):
            untrusting.get("over")
        client.close()
    finally:
        cluster.stop()


def test_passwords_of_data_nodes_and_sentinels_come_from_the_url(tmp_path: Path) -> None:
    cluster = SentinelCluster(
        tmp_path / "cluster", password="p@ss/1", sentinel_password="s3n"
    ).start()
    try:
        assert "sentinel_password=s3n" in cluster.url
        client = connect(cluster.url)
        client.set("guarded", "yes")
        assert client.get("guarded") == b"yes"
        without_sentinel_password = connect(cluster.url.split("?")[0])
        with pytest.raises(redis.ConnectionError):  # the sentinels refuse: no master found
            without_sentinel_password.get("guarded")
        client.close()
    finally:
        cluster.stop()
