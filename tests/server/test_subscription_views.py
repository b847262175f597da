"""Steady reads of subscriptions and alarms from the core's views (issue 18): two real core
processes (`python -m server`) on one real redis-server. The views answer without a Redis
round trip (the cache metric and Redis's own command counts say so), a change made through
one core is seen through the other within the bound the views document, ETags are never
older than what the view knows, a flushed or restarted-empty Redis leaves no ghost, and a
Redis that is away leaves the views serving what they have."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import httpx
import pytest
import redis
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from o2ims.monitoring.v1 import monitoring_pb2 as mon
from o2ims.monitoring.v1 import monitoring_pb2_grpc as mon_grpc
from o2ims.subscriptions.v1 import subscriptions_pb2 as sub
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as sub_grpc
from prometheus_client.parser import text_string_to_metric_families

from devstack.processes import wait_until
from devstack.redis_server import RedisServer, command_calls
from server.alarms.store import AlarmStore
from server.alarms.view import AlarmView
from server.store import connect
from server.subscriptions.store import (
    ALARM_SUBSCRIPTIONS,
    GENERATION_KEY,
    INVENTORY_SUBSCRIPTIONS,
    SUBSCRIPTION_EVENTS_KEY,
    SubscriptionStore,
)
from server.subscriptions.view import READ_BLOCK_MS, SubscriptionView
from tests.core_process import CoreProcess

# How long a change made through one core may take to show through another: the views
# apply it as soon as their blocking XREAD returns (milliseconds); a second is a margin
# for a busy shared machine, well under the documented worst case of a reload.
VISIBLE_WITHIN_S = 1.0
KINDS = (INVENTORY_SUBSCRIPTIONS, ALARM_SUBSCRIPTIONS)


class Core:
    """A core process and stubs of its subscription and monitoring services."""

    def __init__(self, process: CoreProcess) -> None:
        self.process = process
        assert process.channel is not None
        self.subscriptions = sub_grpc.SubscriptionServiceStub(process.channel)
        self.monitoring = mon_grpc.MonitoringServiceStub(process.channel)
        self.ops = f"http://127.0.0.1:{process.env['NETWEAVE_OPS_PORT']}"

    def create(self) -> str:
        created = self.subscriptions.CreateSubscription(
            sub.CreateSubscriptionRequest(
                api_version="v1",
                subscription=sub.InventorySubscriptionInfo(
                    callback=f"http://127.0.0.1:9/{uuid.uuid4().hex}"
                ),
            ),
            timeout=10,
        )
        return str(created.subscription_id)

    def listed(self) -> list[str]:
        answer = self.subscriptions.ListSubscriptions(sub.ListSubscriptionsRequest(), timeout=5)
        return [s.subscription_id for s in answer.subscriptions]

    def get(self, subscription_id: str) -> sub.InventorySubscriptionInfo:
        found: sub.InventorySubscriptionInfo = self.subscriptions.GetSubscription(
            sub.GetSubscriptionRequest(subscription_id=subscription_id), timeout=5
        )
        return found

    def alarm(self, alarm_id: str) -> tuple[mon.AlarmEventRecord, str]:
        record, call = self.monitoring.GetAlarm.with_call(
            mon.GetAlarmRequest(alarm_event_record_id=alarm_id), timeout=5
        )
        return record, {item.key: item.value for item in call.initial_metadata()}["etag"]

    def acknowledge(self, alarm_id: str, if_match: str) -> str:
        _, call = self.monitoring.PatchAlarm.with_call(
            mon.PatchAlarmRequest(
                alarm_event_record_id=alarm_id,
                alarm_event_record_modifications=mon.AlarmEventRecordModifications(
                    alarm_acknowledged=True
                ),
            ),
            metadata=(("if-match", if_match),),
            timeout=5,
        )
        return str({item.key: item.value for item in call.initial_metadata()}["etag"])

    def cache_reads(self) -> dict[tuple[str, str], float]:
        text = httpx.get(self.ops + "/metrics", timeout=5).text
        return {
            (sample.labels["api"], sample.labels["result"]): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "o2ims_cache_reads_total"
        }

    def counted_a_hit(self, api: str, read: Callable[[], Any]) -> bool:
        """Whether `read` was answered by the view (counted a hit of `api`)."""
        before = self.cache_reads()[(api, "hit")]
        read()
        return self.cache_reads()[(api, "hit")] > before

    def views_loaded(self) -> bool:
        return self.counted_a_hit("subscriptions", self.listed)


def reason(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    status = rpc_status.from_call(cast(Any, error))
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return cast(Any, error).code(), info.reason
    raise AssertionError(f"no ErrorInfo in {error}")


def failed(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return reason(raised.value)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def cores(own_redis: RedisServer, tmp_path: Path) -> Iterator[tuple[Core, Core]]:
    first = CoreProcess(own_redis.url, tmp_path).start()
    second = CoreProcess(own_redis.url, tmp_path).start()
    try:
        pair = (Core(first), Core(second))
        for core in pair:
            wait_until(core.views_loaded, 20, "the core's views to load")
        yield pair
    finally:
        first.stop()
        second.stop()


def raise_alarm(redis_url: str) -> tuple[str, str]:
    client = connect(redis_url)
    try:
        alarm_id = str(uuid.uuid4())
        _, etag = AlarmStore(client).put_record(
            alarm_id,
            {
                "resourceTypeID": "rt-1",
                "resourceID": "r-1",
                "alarmDefinitionID": "ad-1",
                "probableCauseID": "pc-1",
                "alarmRaisedTime": "2025-01-02T03:04:05Z",
                "perceivedSeverity": 1,
            },
        )
        return alarm_id, etag
    finally:
        client.close()


def commands(client: redis.Redis, *names: str) -> int:
    """How many of these commands Redis has executed."""
    calls = command_calls(client)
    return sum(calls.get(name, 0) for name in names)


# --- steady reads ------------------------------------------------------------------------


def test_steady_reads_are_served_by_the_views_without_redis(
    cores: tuple[Core, Core], own_redis: RedisServer
) -> None:
    core, _ = cores
    subscription_ids = [core.create() for _ in range(5)]
    alarm_id, _ = raise_alarm(own_redis.url)
    wait_until(
        lambda: core.counted_a_hit("alarms", lambda: core.alarm(alarm_id)), 5, "the alarm view"
    )
    raw = own_redis.client()
    before_reads = core.cache_reads()
    before_commands = commands(raw, "hgetall", "smembers", "get")
    rounds = 100
    for _ in range(rounds):
        assert set(core.listed()) == set(subscription_ids)
        for subscription_id in subscription_ids[:2]:
            assert core.get(subscription_id).subscription_id == subscription_id
        assert core.alarm(alarm_id)[0].alarm_event_record_id == alarm_id
    after_reads = core.cache_reads()
    read_commands = commands(raw, "hgetall", "smembers", "get") - before_commands
    raw.close()

    def delta(api: str, result: str) -> float:
        return after_reads[(api, result)] - before_reads[(api, result)]

    reads = rounds * 4
    hits = delta("subscriptions", "hit") + delta("alarms", "hit")
    misses = delta("subscriptions", "miss") + delta("alarms", "miss")
    assert hits + misses == reads
    assert hits / reads >= 0.95, (hits, misses)
    # Redis agrees: no read command per request. (The views' idle checks run a GET or
    # two per read block, 0.5 s, on two cores: a handful over the whole loop.)
    assert read_commands < reads * 0.05, read_commands


# --- coherence across cores ----------------------------------------------------------------


def test_a_create_through_one_core_is_listed_and_read_through_the_other(
    cores: tuple[Core, Core],
) -> None:
    first, second = cores
    started = time.monotonic()
    subscription_id = first.create()
    wait_until(
        lambda: subscription_id in second.listed(), VISIBLE_WITHIN_S, "the create on the other core"
    )
    assert second.get(subscription_id).subscription_id == subscription_id
    assert time.monotonic() - started < VISIBLE_WITHIN_S + 0.5
    # Read-your-writes on the core that made it: at once.
    assert subscription_id in first.listed()


def test_a_delete_through_one_core_is_gone_from_the_other(cores: tuple[Core, Core]) -> None:
    first, second = cores
    subscription_id = first.create()
    wait_until(lambda: subscription_id in second.listed(), VISIBLE_WITHIN_S, "the create")
    second.get(subscription_id)  # held by the other core's view
    first.subscriptions.DeleteSubscription(
        sub.DeleteSubscriptionRequest(subscription_id=subscription_id), timeout=5
    )
    # The deleting core answers as it knows: at once.
    assert subscription_id not in first.listed()
    assert failed(lambda: first.get(subscription_id)) == (
        grpc.StatusCode.NOT_FOUND,
        "SUBSCRIPTION_NOT_FOUND",
    )
    wait_until(
        lambda: subscription_id not in second.listed(), VISIBLE_WITHIN_S, "the delete elsewhere"
    )
    assert failed(lambda: second.get(subscription_id)) == (
        grpc.StatusCode.NOT_FOUND,
        "SUBSCRIPTION_NOT_FOUND",
    )


def test_an_acknowledgement_through_one_core_moves_the_etag_on_the_other(
    cores: tuple[Core, Core], own_redis: RedisServer
) -> None:
    first, second = cores
    alarm_id, stored_etag = raise_alarm(own_redis.url)
    wait_until(lambda: second.alarm(alarm_id)[1] == stored_etag, 5, "the alarm on both")
    wait_until(lambda: first.alarm(alarm_id)[1] == stored_etag, 5, "the alarm on both")

    new_etag = first.acknowledge(alarm_id, stored_etag)
    assert new_etag != stored_etag
    # The acknowledging core: its own write, at once.
    record, etag = first.alarm(alarm_id)
    assert (record.alarm_acknowledged, etag) == (True, new_etag)
    # The other core: the new ETag within the bound, and never the old one again.
    wait_until(lambda: second.alarm(alarm_id)[1] == new_etag, VISIBLE_WITHIN_S, "the new ETag")
    for _ in range(20):
        record, etag = second.alarm(alarm_id)
        assert (record.alarm_acknowledged, etag) == (True, new_etag)
    # The old ETag is refused by a write through either core.
    for core in (second, first):
        assert failed(lambda core=core: core.acknowledge(alarm_id, stored_etag)) == (  # type: ignore[misc]
            grpc.StatusCode.FAILED_PRECONDITION,
            "ETAG_MISMATCH",
        )


# --- Redis flushed, restarted empty, away --------------------------------------------------


def test_a_flushed_redis_leaves_no_ghost_subscription(
    cores: tuple[Core, Core], own_redis: RedisServer
) -> None:
    first, second = cores
    made = [first.create() for _ in range(3)]
    wait_until(lambda: set(second.listed()) == set(made), VISIBLE_WITHIN_S, "the creates")
    raw = own_redis.client()
    raw.flushall()
    raw.close()
    bound = READ_BLOCK_MS / 1000 + 2.0  # one read block, then a reload
    for core in cores:
        wait_until(lambda core=core: core.listed() == [], bound, "the views to reload")  # type: ignore[misc]
        for subscription_id in made:
            assert failed(lambda s=subscription_id, c=core: c.get(s))[0] == (  # type: ignore[misc]
                grpc.StatusCode.NOT_FOUND
            )
    # New subscriptions after the flush are followed as before.
    fresh = second.create()
    wait_until(lambda: first.listed() == [fresh], VISIBLE_WITHIN_S, "a create after the flush")


def test_a_redis_restarted_empty_leaves_no_ghost_subscription(
    cores: tuple[Core, Core], own_redis: RedisServer, tmp_path: Path
) -> None:
    first, second = cores
    made = [first.create() for _ in range(2)]
    wait_until(lambda: set(second.listed()) == set(made), VISIBLE_WITHIN_S, "the creates")
    own_redis.stop()
    empty = RedisServer(tmp_path / "empty-redis", port=own_redis.port).start()
    try:
        for core in cores:
            # The views reconnect with backoff (up to 5 s), then see the generation at 0.
            wait_until(lambda core=core: core.listed() == [], 15, "the views to reload")  # type: ignore[misc]
        fresh = first.create()
        wait_until(lambda: second.listed() == [fresh], VISIBLE_WITHIN_S, "a create after it")
    finally:
        empty.stop()
        own_redis.start()  # for the fixture's stop


def test_redis_away_the_views_serve_what_they_have(
    cores: tuple[Core, Core], own_redis: RedisServer
) -> None:
    first, second = cores
    kept = first.create()
    alarm_id, etag = raise_alarm(own_redis.url)
    wait_until(lambda: kept in second.listed(), VISIBLE_WITHIN_S, "the create")
    wait_until(lambda: second.alarm(alarm_id)[1] == etag, 5, "the alarm")
    own_redis.stop()
    try:
        for core in cores:
            assert core.listed() == [kept]
            assert core.get(kept).subscription_id == kept
            assert core.alarm(alarm_id)[1] == etag
            # An id the view does not hold: nothing can have made it while Redis is away.
            assert failed(lambda c=core: c.get(str(uuid.uuid4()))) == (  # type: ignore[misc]
                grpc.StatusCode.NOT_FOUND,
                "SUBSCRIPTION_NOT_FOUND",
            )
            # Writes need Redis: a precise 503.
            assert failed(core.create) == (
                grpc.StatusCode.UNAVAILABLE,
                "SUBSCRIPTION_STORE_UNAVAILABLE",
            )
    finally:
        own_redis.start()
    # Back: changes flow again.
    fresh = second.create()
    wait_until(lambda: fresh in first.listed(), 10, "a create after Redis came back")


# --- the view on its own -------------------------------------------------------------------


@pytest.fixture
def follower(redis_url: str) -> Iterator[tuple[SubscriptionView, SubscriptionStore]]:
    stop = threading.Event()
    view = SubscriptionView(connect(redis_url, socket_timeout=5.0), stop, KINDS, read_block_ms=20)
    view.start()
    wait_until(lambda: view.loaded, 5, "the view to load")
    client = connect(redis_url)
    yield view, SubscriptionStore(client, view=view)
    stop.set()
    view.join(5)
    client.close()


def make(store: SubscriptionStore, kind: Any = INVENTORY_SUBSCRIPTIONS) -> str:
    subscription_id = str(uuid.uuid4())
    store.create(
        kind,
        subscription_id,
        callback=f"https://smo.example.net/{subscription_id}",
        filter_="",
        consumer_subscription_id="",
        api_version="v1",
        owner="smo-1",
    )
    return subscription_id


def test_read_your_writes_even_before_the_stream_brings_them(redis_url: str) -> None:
    """A view that is not following (its thread never started) still shows this replica's
    own creates and deletes, and reads nothing from Redis for them."""
    view = SubscriptionView(connect(redis_url), threading.Event(), KINDS)
    view.load()
    client = connect(redis_url)
    store = SubscriptionStore(client, view=view)
    made = make(store)
    alarm_made = make(store, ALARM_SUBSCRIPTIONS)
    assert [s.subscription_id for s in store.list(INVENTORY_SUBSCRIPTIONS)] == [made]
    assert [s.subscription_id for s in store.list(ALARM_SUBSCRIPTIONS)] == [alarm_made]
    assert store.get(INVENTORY_SUBSCRIPTIONS, made) == SubscriptionStore(client).get(
        INVENTORY_SUBSCRIPTIONS, made
    )
    assert store.delete(INVENTORY_SUBSCRIPTIONS, made)
    assert store.list(INVENTORY_SUBSCRIPTIONS) == []
    # The stream's entries, applied late, change nothing (the view has them already).
    view.step()
    assert store.list(INVENTORY_SUBSCRIPTIONS) == []
    assert [s.subscription_id for s in store.list(ALARM_SUBSCRIPTIONS)] == [alarm_made]
    assert view.generation == 3
    client.close()


def test_another_writers_changes_are_followed_with_their_whole_content(
    follower: tuple[SubscriptionView, SubscriptionStore], redis_url: str
) -> None:
    view, _ = follower
    client = connect(redis_url)
    elsewhere = SubscriptionStore(client)  # another replica's store, no view
    made = make(elsewhere)
    wait_until(lambda: view.get(INVENTORY_SUBSCRIPTIONS, made) is not None, 2, "the create")
    assert view.get(INVENTORY_SUBSCRIPTIONS, made) == elsewhere.get(INVENTORY_SUBSCRIPTIONS, made)
    assert elsewhere.delete(INVENTORY_SUBSCRIPTIONS, made)
    wait_until(lambda: view.get(INVENTORY_SUBSCRIPTIONS, made) is None, 2, "the delete")
    client.close()


def test_a_generation_moved_without_an_entry_reloads(
    follower: tuple[SubscriptionView, SubscriptionStore], redis_url: str
) -> None:
    """What a restore does (server/backup/state.py): keys written behind the store's back,
    the generation bumped, no entry."""
    view, _ = follower
    raw = redis.Redis.from_url(redis_url)
    reloads = view.reloads
    raw.hset("subscription:restored", mapping={"subscriptionId": "restored", "callback": "x"})
    raw.sadd("subscriptions", "restored")
    raw.incr(GENERATION_KEY)
    wait_until(lambda: view.get(INVENTORY_SUBSCRIPTIONS, "restored") is not None, 2, "a reload")
    assert view.reloads == reloads + 1
    raw.close()


def test_a_gap_or_an_unreadable_entry_reloads(
    follower: tuple[SubscriptionView, SubscriptionStore], redis_url: str
) -> None:
    view, store = follower
    raw = redis.Redis.from_url(redis_url)
    reloads = view.reloads
    # A change written by something that skipped the stream (an older core), then a
    # regular one: the regular entry's generation skips one.
    raw.hset("subscription:sideways", mapping={"subscriptionId": "sideways", "callback": "x"})
    raw.sadd("subscriptions", "sideways")
    raw.incr(GENERATION_KEY)
    made = make(SubscriptionStore(connect(redis_url)))
    wait_until(lambda: view.get(INVENTORY_SUBSCRIPTIONS, "sideways") is not None, 2, "a reload")
    assert view.get(INVENTORY_SUBSCRIPTIONS, made) is not None
    assert view.reloads > reloads
    # An entry that does not parse: what it changed is unknown, so the view loads again.
    reloads = view.reloads
    generation = int(cast(bytes, raw.get(GENERATION_KEY)))
    raw.xadd(SUBSCRIPTION_EVENTS_KEY, {"generation": generation + 1, "kind": "subscription"})
    raw.incr(GENERATION_KEY)
    wait_until(lambda: view.reloads > reloads, 2, "a reload after an unreadable entry")
    assert {s.subscription_id for s in store.list(INVENTORY_SUBSCRIPTIONS)} == {"sideways", made}
    raw.close()


# --- the alarm view's ETags ------------------------------------------------------------------


def test_the_alarm_view_never_goes_back_to_an_older_etag(redis_url: str) -> None:
    client = connect(redis_url)
    view = AlarmView(connect(redis_url), threading.Event())
    store = AlarmStore(client, view=view)
    alarm_id, first_etag = raise_alarm(redis_url)
    acknowledged = AlarmStore(client).acknowledge(alarm_id, first_etag)  # another replica
    view.load()
    assert view.with_etag(alarm_id) == (acknowledged.record, acknowledged.etag)
    # The older event arriving late (a load racing the stream) does not take it back.
    (_, older), _ = store.events()
    older_fields = {name.encode(): value.encode() for name, value in older.items()}
    assert view._apply_event(older_fields)
    assert store.get_with_etag(alarm_id) == (acknowledged.record, acknowledged.etag)
    client.close()


def test_get_alarm_comes_from_the_view_and_an_alarm_it_does_not_hold_from_redis(
    redis_url: str,
) -> None:
    client = connect(redis_url)
    counted: list[str] = []
    view = AlarmView(connect(redis_url), threading.Event(), on_read=counted.append)
    store = AlarmStore(client, view=view)
    alarm_id, etag = raise_alarm(redis_url)
    view.load()
    assert store.get_with_etag(alarm_id) == (view.records[alarm_id], etag)
    assert counted == ["hit"]
    # Raised since the view last read its streams: read from Redis, with its ETag.
    later_id, later_etag = raise_alarm(redis_url)
    found = store.get_with_etag(later_id)
    assert found is not None and found[1] == later_etag
    assert counted == ["hit", "miss"]
    # Another replica's acknowledgement reaches the view with its revision (its event).
    changed = AlarmStore(client).acknowledge(alarm_id, etag)
    assert changed.record is not None
    view.step()
    assert store.get_with_etag(alarm_id) == (changed.record, changed.etag)
    assert counted == ["hit", "miss", "hit"]
    client.close()
