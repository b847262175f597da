"""Backup and restore of the gateway's state (python -m server.backup) with real redis-servers,
driven exactly as docs/operations.md ("Backup and restore") tells an operator to: the commands
are read from that section's shell block and run as written (tests/backup_procedure.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from devstack.redis_server import RedisServer
from server.alarms.store import (
    ALARM_KEY_PREFIX,
    ALARMS_INDEX_KEY,
    AlarmServiceConfig,
    AlarmStore,
    SourceAlarm,
)
from server.alarms.store import CONFIG_KEY as ALARM_CONFIG_KEY
from server.alarms.store import EVENTS_KEY as ALARM_EVENTS_KEY
from server.app import PAGE_SECRET_KEY
from server.backup import kind_of
from server.data_version import DATA_VERSION, DATA_VERSION_KEY, ensure_data_version
from server.notifier import keys as notifier_keys
from server.notifier.deadletters import DeadLetters
from server.store import VERSION_KEY
from server.subscriptions.store import (
    ALARM_SUBSCRIPTIONS,
    INVENTORY_SUBSCRIPTIONS,
    SubscriptionStore,
)
from tests.backup_procedure import documented, documented_backup

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.backup", *args],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def populate(client: redis.Redis) -> set[str]:
    """A stack's worth of state, written through the code that owns each key; the keys a
    backup must hold (named here, not by the backup's own selection)."""
    ensure_data_version(client)
    subscriptions = SubscriptionStore(client)
    inventory = subscriptions.create(
        INVENTORY_SUBSCRIPTIONS,
        "sub-1",
        callback="https://smo.example/notify",
        filter_="(eq,resourcePoolId,pool-1)",
        consumer_subscription_id="smo-1",
        api_version="v1",
        owner="smo-a",
    )
    subscriptions.create(
        ALARM_SUBSCRIPTIONS,
        "alarm-sub-1",
        callback="https://smo.example/alarms",
        filter_="",
        consumer_subscription_id="",
        api_version="v1",
        owner="smo-b",
    )
    alarms = AlarmStore(client)
    raised = alarms.raise_from_source(
        SourceAlarm("src-1", "rt-1", "r-1", "ad-1", "ad-1", 1), flap_window=0
    )
    alarms.raise_from_source(SourceAlarm("src-2", "rt-1", "r-2", "ad-1", "ad-1", 2), flap_window=0)
    assert alarms.acknowledge(raised.record_id, correlation_id="ack-1")
    alarms.put_config(AlarmServiceConfig(retention_period=3, extensions={"site": "lab"}))
    # A queued notification the notifier has read but not delivered yet: a consumer group
    # with a pending entry, what DUMP/RESTORE must carry over.
    queue = notifier_keys.queue_key(inventory.subscription_id)
    client.xadd(queue, {"id": "n-1", "event": "1-0", "body": "{}"})
    client.xadd(queue, {"id": "n-2", "event": "2-0", "body": "{}"})
    client.xgroup_create(queue, notifier_keys.DELIVER_GROUP, id="0")
    client.xreadgroup(notifier_keys.DELIVER_GROUP, "notifier-1", {queue: ">"}, count=1)
    client.hset(notifier_keys.CURSORS_KEY, inventory.subscription_id, "2-0")
    client.hset(notifier_keys.retry_key(inventory.subscription_id), mapping={"attempts": "3"})
    pipe = client.pipeline()
    DeadLetters(client).add(pipe, {"subscriptionId": "sub-1", "id": "n-0", "body": "{}"})
    pipe.execute()
    client.set(PAGE_SECRET_KEY, "f" * 64)
    # Inventory: re-read from the adapters, so never in a backup.
    client.set(VERSION_KEY, 42)
    return {
        INVENTORY_SUBSCRIPTIONS.key("sub-1"),
        INVENTORY_SUBSCRIPTIONS.index_key,
        ALARM_SUBSCRIPTIONS.key("alarm-sub-1"),
        ALARM_SUBSCRIPTIONS.index_key,
        ALARM_KEY_PREFIX + raised.record_id,
        ALARMS_INDEX_KEY,
        ALARM_EVENTS_KEY,
        ALARM_CONFIG_KEY,
        queue,
        notifier_keys.CURSORS_KEY,
        notifier_keys.retry_key(inventory.subscription_id),
        notifier_keys.DEAD_LETTERS_KEY,
        PAGE_SECRET_KEY,
    }


def state(client: redis.Redis) -> dict[str, tuple[str, Any]]:
    """Every key a backup covers, with its type and full content (streams: entries, last id,
    consumer groups and their pending entries)."""
    snapshot: dict[str, tuple[str, Any]] = {}
    for raw in cast(list[bytes], list(client.scan_iter())):
        key = raw.decode()
        if kind_of(key) is None:
            continue
        type_ = cast(bytes, client.type(key)).decode()
        content: Any
        if type_ == "string":
            content = client.get(key)
        elif type_ == "hash":
            content = client.hgetall(key)
        elif type_ == "set":
            content = sorted(cast(set[bytes], client.smembers(key)))
        elif type_ == "zset":
            content = client.zrange(key, 0, -1, withscores=True)
        elif type_ == "stream":
            info = client.xinfo_stream(key)
            groups = client.xinfo_groups(key)
            content = (
                client.xrange(key),
                info["last-generated-id"],
                [
                    (
                        group["name"],
                        group["last-delivered-id"],
                        [
                            (entry["message_id"], entry["consumer"])
                            for entry in client.xpending_range(key, group["name"], "-", "+", 100)
                        ],
                    )
                    for group in groups
                ],
            )
        else:
            raise AssertionError(f"{key}: unexpected type {type_}")
        snapshot[key] = (type_, content)
    return snapshot


def test_round_trip_restores_every_key_with_its_type_and_content(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    required = populate(client)
    before = state(client)
    assert required <= set(before) and VERSION_KEY not in before

    backup = documented_backup(redis_url, tmp_path)
    checked = documented("verify", redis_url, tmp_path, backup)
    assert checked.returncode == 0, checked.stderr
    assert f"{len(before)} keys" in checked.stdout
    assert documented("wipe", redis_url, tmp_path, backup).returncode == 0
    assert client.dbsize() == 0
    restored = documented("restore", redis_url, tmp_path, backup)

    assert restored.returncode == 0, restored.stderr
    assert state(client) == before
    assert client.get(DATA_VERSION_KEY) == DATA_VERSION.encode()
    assert "inventory subscriptions: 3" in restored.stdout  # hash, index, dedupe key
    assert "dead letters: 1" in restored.stdout
    assert "page-marker secret: 1" in restored.stdout
    subscription = SubscriptionStore(client).get(INVENTORY_SUBSCRIPTIONS, "sub-1")
    assert subscription is not None and subscription.owner == "smo-a"
    alarms = AlarmStore(client)
    assert [record.alarm_acknowledged for record in alarms.list()].count(True) == 1
    assert alarms.config() == AlarmServiceConfig(retention_period=3, extensions={"site": "lab"})
    assert [fields["id"] for _, fields in DeadLetters(client).list()] == ["n-0"]


def test_restore_into_append_only_redis_survives_its_restart(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    populate(client)
    before = state(client)
    backup = documented_backup(redis_url, tmp_path)
    target = RedisServer(tmp_path / "target").start()  # appendonly yes, no RDB snapshots
    try:
        restored = documented("restore", target.url, tmp_path, backup)
        assert restored.returncode == 0, restored.stderr
        target.kill()  # a crash: only what the append-only file holds comes back
        target = RedisServer(target.directory, target.port).start()
        restarted = redis.Redis.from_url(target.url)
        try:
            assert restarted.config_get("appendonly") == {"appendonly": "yes"}
            assert state(restarted) == before
        finally:
            restarted.close()
    finally:
        target.stop()


def test_restore_refuses_existing_keys_unless_replace(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    populate(client)
    backup = documented_backup(redis_url, tmp_path)
    before = state(client)
    client.set(PAGE_SECRET_KEY, "changed since the backup")

    refused = documented("restore", redis_url, tmp_path, backup)
    assert refused.returncode == 2
    assert "exist in this Redis already" in refused.stderr and "--replace" in refused.stderr
    assert client.get(PAGE_SECRET_KEY) == b"changed since the backup"

    replaced = documented("restore --replace", redis_url, tmp_path, backup)
    assert replaced.returncode == 0, replaced.stderr
    assert state(client) == before


def test_backup_of_another_major_data_version_is_refused(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    client.set(DATA_VERSION_KEY, "2.0")  # written by a future release
    client.set(PAGE_SECRET_KEY, "s")
    backup_file = tmp_path / "netweave.backup"
    assert cli("backup", "--redis-url", redis_url, "--out", str(backup_file)).returncode == 0
    client.flushall()

    refused = cli("restore", "--redis-url", redis_url, "--in", str(backup_file))

    assert refused.returncode == 2
    assert f"data version 2.0 is incompatible with this gateway's data version {DATA_VERSION}" in (
        refused.stderr
    )
    assert client.dbsize() == 0


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda text: text.replace('"pttl":-1', '"pttl":5', 1), id="edited"),
        pytest.param(lambda text: text[: len(text) // 2], id="cut short"),
        pytest.param(lambda text: text.replace("sha256:", "sha256:0", 1), id="bad checksum"),
    ],
)
def test_corrupted_backup_is_refused_by_verify_and_restore(
    client: redis.Redis, redis_url: str, tmp_path: Path, damage: Any
) -> None:
    populate(client)
    backup_file = tmp_path / "netweave.backup"
    assert cli("backup", "--redis-url", redis_url, "--out", str(backup_file)).returncode == 0
    backup_file.write_text(damage(backup_file.read_text()))
    client.flushall()

    verified = cli("verify", "--in", str(backup_file))
    restored = cli("restore", "--redis-url", redis_url, "--in", str(backup_file))

    assert verified.returncode == 2 and str(backup_file) in verified.stderr
    assert restored.returncode == 2 and str(backup_file) in restored.stderr
    assert client.dbsize() == 0


def test_unreachable_redis_exits_1_naming_it(tmp_path: Path) -> None:
    made = cli("backup", "--redis-url", "redis://127.0.0.1:1/0", "--out", str(tmp_path / "b"))
    assert made.returncode == 1
    assert "Redis at redis://127.0.0.1:1/0" in made.stderr


def test_backup_file_is_self_describing(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    populate(client)
    backup_file = tmp_path / "netweave.backup"
    assert cli("backup", "--redis-url", redis_url, "--out", str(backup_file)).returncode == 0
    lines = backup_file.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "netweave-backup" and header["formatVersion"] == 1
    assert header["dataVersion"] == DATA_VERSION and header["keyCount"] == len(lines) - 2
    assert json.loads(lines[-1])["checksum"].startswith("sha256:")
    assert {json.loads(line)["type"] for line in lines[1:-1]} >= {"hash", "set", "stream", "string"}
