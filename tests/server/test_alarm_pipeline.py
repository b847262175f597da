"""The alarm pipeline on a real redis-server: alarm objects in the inventory store (as the
store writer puts them there) become alarm event records, exactly once, in order, with the
flap window, and a pipeline that cannot follow the stream reconciles."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from google.protobuf import struct_pb2
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import object_key, serialize
from devstack.processes import wait_until
from server.alarms.pipeline import AlarmPipeline, source_alarm
from server.alarms.store import (
    EVENTS_KEY,
    PIPELINE_KEY,
    AlarmStore,
    Event,
    Position,
)
from server.cache import InventoryCache
from server.store import EVENTS_KEY as INVENTORY_EVENTS_KEY
from server.store import Change, InventoryStore, connect

ADAPTER = "test-adapter"
RESOURCE_ID = "0b5b2a7e-6a43-4a57-9f3a-2d8b8d1c6a10"
RESOURCE_TYPE_ID = "5c6e0c1a-9d1e-4b7f-8a61-d1b8e1b9a4c2"
DEFINITION_ID = "dd08dc2b-ad85-41c4-a08b-acb640067c55"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = connect(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def inventory(client: redis.Redis) -> InventoryStore:
    return InventoryStore(client)


@pytest.fixture
def alarms(client: redis.Redis) -> AlarmStore:
    return AlarmStore(client)


def alarm_object(
    alarm_id: str = "src-1",
    *,
    severity: int = domain_pb2.ALARM_SEVERITY_MAJOR,
    resource_id: str = RESOURCE_ID,
    resource_name: str = "",
    extensions: dict[str, Any] | None = None,
    raised_time: str = "",
) -> domain_pb2.InventoryObject:
    alarm = domain_pb2.ActiveAlarm(
        alarm_id=alarm_id,
        resource_id=resource_id,
        resource_name=resource_name,
        alarm_definition_id=DEFINITION_ID,
        perceived_severity=severity,  # type: ignore[arg-type]
        raised_time=raised_time,
    )
    if extensions is not None:
        struct = struct_pb2.Struct()
        struct.update(extensions)
        alarm.extensions.CopyFrom(struct)
    return domain_pb2.InventoryObject(alarm=alarm)


def resource_object(name: str = "server-1", resource_id: str = RESOURCE_ID) -> Any:
    return domain_pb2.InventoryObject(
        resource=domain_pb2.Resource(
            resource_id=resource_id,
            resource_pool_id="pool-1",
            resource_type_id=RESOURCE_TYPE_ID,
            name=name,
        )
    )


def publish(store: InventoryStore, *objects: Any) -> None:
    store.apply(ADAPTER, [Change(*object_key(obj), serialize(obj)) for obj in objects], chunk=None)


def withdraw(store: InventoryStore, alarm_id: str) -> None:
    store.apply(ADAPTER, [Change("alarm", alarm_id, None)])


def events(alarms: AlarmStore) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (fields["event"], fields["alarmEventRecordId"], json.loads(fields["record"]))
        for _, fields in alarms.events(count=10_000)
    ]


def loaded_cache(store: InventoryStore) -> InventoryCache:
    cache = InventoryCache("https://o2ims.example")
    cache.load(store.snapshot())
    return cache


def pipeline(
    inventory: InventoryStore,
    alarms: AlarmStore,
    cache: InventoryCache | None = None,
    flap_window: float = 300.0,
    counted: list[Event] | None = None,
    *,
    inventory_complete: Callable[[], bool] = lambda: True,
) -> AlarmPipeline:
    sink = counted if counted is not None else []
    return AlarmPipeline(
        inventory,
        alarms,
        cache,
        threading.Event(),
        flap_window=flap_window,
        on_event=sink.append,
        inventory_complete=inventory_complete,
        read_block_ms=20,
    )


def drain(pipe: AlarmPipeline) -> None:
    """Apply everything the stream holds (a first step reconciles)."""
    for _ in range(10):
        pipe.step()
        if pipe.status.applied_version == pipe.status.store_version:
            pipe.step()
            if pipe.status.applied_version == pipe.status.store_version:
                return
    raise AssertionError("the pipeline did not catch up")


def test_raise_change_clear_follow_the_alarm_object(
    inventory: InventoryStore, alarms: AlarmStore
) -> None:
    publish(inventory, resource_object())
    counted: list[Event] = []
    pipe = pipeline(inventory, alarms, loaded_cache(inventory), counted=counted)
    drain(pipe)  # starts from the (empty) alarm set
    publish(
        inventory,
        alarm_object(extensions={"reason": "PSU0003"}, raised_time="2026-12-01T10:00:00Z"),
    )
    cache = loaded_cache(inventory)
    pipe = pipeline(inventory, alarms, cache, counted=counted)
    pipe._position = alarms.pipeline_position()  # as a new leader reads it
    drain(pipe)
    [(event, record_id, record)] = events(alarms)
    assert event == "NEW"
    assert record == {
        "alarmEventRecordId": record_id,
        "resourceTypeID": RESOURCE_TYPE_ID,  # from the resource: the source left it empty
        "resourceID": RESOURCE_ID,
        "alarmDefinitionID": DEFINITION_ID,
        "probableCauseID": DEFINITION_ID,  # defaults to the definition
        "alarmRaisedTime": "2026-12-01T10:00:00Z",
        "alarmChangedTime": "2026-12-01T10:00:00Z",
        "alarmAcknowledged": False,
        "perceivedSeverity": 1,  # MAJOR
        "extensions": {"reason": "PSU0003"},
    }

    publish(inventory, alarm_object(severity=domain_pb2.ALARM_SEVERITY_CRITICAL))
    drain(pipe)
    withdraw(inventory, "src-1")
    drain(pipe)
    history = events(alarms)
    assert [(e, r) for e, r, _ in history] == [
        ("NEW", record_id),
        ("CHANGE", record_id),
        ("CLEAR", record_id),
    ]
    assert history[1][2]["perceivedSeverity"] == 0
    assert history[2][2]["perceivedSeverity"] == 5 and "alarmClearedTime" in history[2][2]
    assert counted == [Event.NEW, Event.CHANGE, Event.CLEAR]
    stored = alarms.get(record_id)
    assert stored is not None and stored.perceived_severity == 5
    assert alarms.active_sources() == {}


def test_a_flap_within_the_window_re_raises_the_same_record(
    inventory: InventoryStore, alarms: AlarmStore
) -> None:
    pipe = pipeline(inventory, alarms, flap_window=300.0)
    drain(pipe)
    for _ in range(3):
        publish(inventory, alarm_object())
        drain(pipe)
        withdraw(inventory, "src-1")
        drain(pipe)
    publish(inventory, alarm_object())
    drain(pipe)
    history = events(alarms)
    assert {record_id for _, record_id, _ in history} == {history[0][1]}
    assert [e for e, _, _ in history] == ["NEW"] + ["CLEAR", "CHANGE"] * 3
    record = history[-1][2]
    assert record["perceivedSeverity"] == 1 and "alarmClearedTime" not in record
    assert len(alarms.list()) == 1


def test_outside_the_window_a_new_record_is_raised(
    inventory: InventoryStore, alarms: AlarmStore
) -> None:
    first = alarm_object()
    source = source_alarm(first.alarm, None)
    start = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    raised = alarms.raise_from_source(source, flap_window=60, now=start)
    cleared = alarms.withdraw_from_source("src-1", now=start + dt.timedelta(seconds=10))
    assert (raised.event, cleared.event) == (Event.NEW, Event.CLEAR)
    assert cleared.record_id == raised.record_id
    within = alarms.raise_from_source(source, flap_window=60, now=start + dt.timedelta(seconds=69))
    assert (within.event, within.record_id) == (Event.CHANGE, raised.record_id)
    alarms.withdraw_from_source("src-1", now=start + dt.timedelta(seconds=70))
    later = alarms.raise_from_source(source, flap_window=60, now=start + dt.timedelta(seconds=131))
    assert later.event is Event.NEW and later.record_id != raised.record_id
    # The same state again changes nothing and notifies nothing.
    again = alarms.raise_from_source(source, flap_window=60, now=start + dt.timedelta(seconds=140))
    assert (again.event, again.record_id) == (None, later.record_id)
    assert len(alarms.list()) == 2


def test_an_entry_is_applied_once_whoever_applies_it(
    inventory: InventoryStore, alarms: AlarmStore
) -> None:
    publish(inventory, alarm_object())
    [event] = inventory.read_events("0-0", block_ms=1)
    position = Position(event.stream_id, event.version)
    source = source_alarm(alarm_object().alarm, None)
    first = alarms.raise_from_source(source, flap_window=0, position=position)
    alarms.withdraw_from_source("src-1")  # something else changed the record meanwhile
    second = alarms.raise_from_source(source, flap_window=0, position=position)
    assert first.event is Event.NEW
    assert second.skipped and second.event is None
    assert [e for e, _, _ in events(alarms)] == ["NEW", "CLEAR"]
    assert alarms.pipeline_position() == position
    # The position never moves back.
    assert not alarms.advance_pipeline(Position("0-1", 1))
    assert alarms.pipeline_position() == position


def test_a_gap_in_the_stream_is_reconciled(inventory: InventoryStore, alarms: AlarmStore) -> None:
    publish(inventory, alarm_object("src-1"), alarm_object("src-2"))
    pipe = pipeline(inventory, alarms)
    drain(pipe)
    assert len(alarms.active_sources()) == 2
    # While the pipeline is away: src-1 clears, src-3 is raised, and the stream is trimmed.
    withdraw(inventory, "src-1")
    publish(inventory, alarm_object("src-3"))
    inventory.client.xtrim(INVENTORY_EVENTS_KEY, maxlen=1, approximate=False)
    before = pipe.status.reconciles
    drain(pipe)
    assert pipe.status.reconciles == before + 1
    assert sorted(alarms.active_sources()) == ["src-2", "src-3"]
    # A reconcile raises what is active, then clears what is gone.
    assert [e for e, _, _ in events(alarms)] == ["NEW", "NEW", "NEW", "CLEAR"]


def test_a_flushed_redis_is_reconciled_not_trusted(
    inventory: InventoryStore, alarms: AlarmStore
) -> None:
    publish(inventory, alarm_object("src-1"), alarm_object("src-2"))
    pipe = pipeline(inventory, alarms)
    drain(pipe)
    inventory.client.flushall()
    publish(inventory, alarm_object("src-9"))
    drain(pipe)
    assert list(alarms.active_sources()) == ["src-9"]
    position = alarms.pipeline_position()
    assert position is not None and position.version == inventory.version()


def test_a_restored_redis_clears_nothing_until_every_adapter_is_written_again(
    inventory: InventoryStore, alarms: AlarmStore
) -> None:
    publish(inventory, alarm_object("src-1"), alarm_object("src-2"))
    complete = [True]
    pipe = pipeline(inventory, alarms, inventory_complete=lambda: complete[0])
    drain(pipe)
    # A restore: the records are back, the inventory (not in a backup) is not, and the
    # restarted core has not written the adapters' state yet.
    for key in list(inventory.client.scan_iter("inventory:*")):
        inventory.client.delete(key)
    complete[0] = False
    drain(pipe)
    assert sorted(alarms.active_sources()) == ["src-1", "src-2"]
    # The adapter's state is written: src-2 went away at the source meanwhile.
    publish(inventory, alarm_object("src-1"))
    complete[0] = True
    drain(pipe)
    assert sorted(alarms.active_sources()) == ["src-1"]
    assert [e for e, _, _ in events(alarms)] == ["NEW", "NEW", "CLEAR"]


def test_only_the_alarm_kind_reaches_the_records_and_the_position_moves_past_the_rest(
    inventory: InventoryStore, alarms: AlarmStore
) -> None:
    pipe = pipeline(inventory, alarms)
    drain(pipe)
    publish(inventory, resource_object("a", "r-a"), resource_object("b", "r-b"))
    drain(pipe)
    assert alarms.list() == []
    position = alarms.pipeline_position()
    assert position is not None and position.version == inventory.version() == 2


def test_a_resource_named_by_a_source_is_resolved_and_an_unknown_one_is_still_raised(
    inventory: InventoryStore, alarms: AlarmStore
) -> None:
    publish(inventory, resource_object("node-7"))
    pipe = pipeline(inventory, alarms, loaded_cache(inventory))
    drain(pipe)
    publish(
        inventory,
        alarm_object("by-name", resource_id="", resource_name="node-7"),
        alarm_object("unknown", resource_id="", resource_name="node-404"),
    )
    pipe = pipeline(inventory, alarms, loaded_cache(inventory))
    drain(pipe)
    records = {r["alarmEventRecordId"]: r for _, _, r in events(alarms)}
    by_source = alarms.active_sources()
    named = records[by_source["by-name"]]
    assert (named["resourceID"], named["resourceTypeID"]) == (RESOURCE_ID, RESOURCE_TYPE_ID)
    unknown = records[by_source["unknown"]]
    assert "resourceID" not in unknown  # empty: nothing to point at
    assert unknown["extensions"] == {"resourceName": "node-404"}
    assert pipe.status.unresolved == 1


def test_severities_map_one_below_the_domain_enum() -> None:
    expected = {
        domain_pb2.ALARM_SEVERITY_CRITICAL: 0,
        domain_pb2.ALARM_SEVERITY_MAJOR: 1,
        domain_pb2.ALARM_SEVERITY_MINOR: 2,
        domain_pb2.ALARM_SEVERITY_WARNING: 3,
        domain_pb2.ALARM_SEVERITY_INDETERMINATE: 4,
        domain_pb2.ALARM_SEVERITY_UNSPECIFIED: 4,
    }
    for severity, wire in expected.items():
        assert source_alarm(alarm_object(severity=severity).alarm, None).perceived_severity == wire


def test_two_replicas_one_leader_and_the_standby_takes_over(
    redis_url: str, inventory: InventoryStore
) -> None:
    stops = [threading.Event(), threading.Event()]
    pipes = [
        AlarmPipeline(
            InventoryStore(connect(redis_url, socket_timeout=5.0)),
            AlarmStore(connect(redis_url)),
            None,
            stop,
            flap_window=0,
            read_block_ms=100,
            lease_seconds=1.0,
        )
        for stop in stops
    ]
    for pipe in pipes:
        pipe.start()
    try:
        wait_until(lambda: sum(p.status.leader for p in pipes) == 1, 10, "one leader")
        publish(inventory, alarm_object("src-1"))
        alarms = AlarmStore(connect(redis_url))
        wait_until(lambda: list(alarms.active_sources()) == ["src-1"], 10, "the alarm raised")
        leader = next(i for i, p in enumerate(pipes) if p.status.leader)
        stops[leader].set()
        pipes[leader].join(10)
        standby = pipes[1 - leader]
        wait_until(lambda: standby.status.leader, 15, "the standby to lead")
        withdraw(inventory, "src-1")
        wait_until(lambda: alarms.active_sources() == {}, 10, "the alarm cleared")
        assert [e for e, _, _ in events(alarms)] == ["NEW", "CLEAR"]
        assert inventory.client.hget(PIPELINE_KEY, "version") == str(inventory.version()).encode()
        assert inventory.client.xlen(EVENTS_KEY) == 2
    finally:
        for stop in stops:
            stop.set()
        for pipe in pipes:
            pipe.join(10)
