"""Alarm state: the store's atomic scripts on a real redis-server, and PatchAlarm and the
alarm service configuration through a real in-process gRPC server."""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis
from o2ims.adapter.v1 import domain_pb2
from o2ims.monitoring.v1 import monitoring_pb2 as mon
from o2ims.monitoring.v1 import monitoring_pb2_grpc as mon_grpc

from devstack.processes import wait_until
from server.alarms.purge import AlarmPurger
from server.alarms.store import (
    CLEARED_KEY,
    EVENTS_KEY,
    AlarmStore,
    Event,
    Outcome,
    SourceAlarm,
    if_match_revisions,
)
from server.listing import Lister, ListingSettings
from server.monitoring_v1 import V1_VERSION, MonitoringV1Servicer
from server.store import connect
from server.subscriptions import SubscriptionStore
from tests.core_server import open_access_server, running_alarm_view
from tests.server.test_subscriptions import failure

MANUAL_DEFINITION = "ad-manual"
AUTOMATIC_DEFINITION = "ad-automatic"
UNSPECIFIED_DEFINITION = "ad-unspecified"
CLEARING_TYPES = {
    MANUAL_DEFINITION: domain_pb2.CLEARING_TYPE_MANUAL,
    AUTOMATIC_DEFINITION: domain_pb2.CLEARING_TYPE_AUTOMATIC,
    UNSPECIFIED_DEFINITION: domain_pb2.CLEARING_TYPE_UNSPECIFIED,
}


def raise_alarm(
    store: AlarmStore, definition: str = MANUAL_DEFINITION, **extra: Any
) -> tuple[str, str]:
    alarm_id = str(uuid.uuid4())
    attributes: dict[str, Any] = {
        "resourceTypeID": "rt-1",
        "resourceID": "r-1",
        "alarmDefinitionID": definition,
        "probableCauseID": "pc-1",
        "alarmRaisedTime": "2025-01-02T03:04:05Z",
        "perceivedSeverity": 1,
        "extensions": {"source": "test"},
        **extra,
    }
    event, etag = store.put_record(alarm_id, attributes)
    assert event in (Event.NEW, Event.CHANGE)
    return alarm_id, etag


@pytest.fixture
def store(redis_url: str) -> Iterator[AlarmStore]:
    client = connect(redis_url)
    yield AlarmStore(client)
    client.close()


def events(store: AlarmStore) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (fields["alarmEventRecordId"], fields["event"], json.loads(fields["record"]))
        for _, fields in store.events()
    ]


# --- the store --------------------------------------------------------------------------------


def test_if_match_parsing() -> None:
    assert if_match_revisions(None) == ""
    assert if_match_revisions(" * ") == "*"
    assert if_match_revisions('"3", "7"') == "3,7"
    # Weak tags never match a strong comparison; nothing listed matches nothing.
    assert if_match_revisions('W/"3"') == ","


def test_acknowledge_every_outcome(store: AlarmStore) -> None:
    assert store.acknowledge("nope").outcome is Outcome.NOT_FOUND
    alarm_id, etag = raise_alarm(store)
    stale = store.acknowledge(alarm_id, '"999999"')
    assert (stale.outcome, stale.etag) == (Outcome.ETAG_MISMATCH, etag)
    assert store.acknowledge(alarm_id, 'W/"' + etag.strip('"') + '"').outcome is (
        Outcome.ETAG_MISMATCH
    )
    done = store.acknowledge(alarm_id, etag)
    assert done.outcome is Outcome.OK and done.record is not None
    assert done.etag != etag
    assert done.record.alarm_acknowledged
    assert done.record.HasField("alarm_acknowledge_time")
    assert store.get_with_etag(alarm_id) == (done.record, done.etag)
    again = store.acknowledge(alarm_id, "*")
    assert (again.outcome, again.etag) == (Outcome.ALREADY_ACKNOWLEDGED, done.etag)
    assert [(i, e) for i, e, _ in events(store)] == [
        (alarm_id, "NEW"),
        (alarm_id, "ACKNOWLEDGE"),
    ]
    record = events(store)[-1][2]
    assert record["alarmAcknowledged"] is True
    assert record["perceivedSeverity"] == 1
    assert record["extensions"] == {"source": "test"}


def test_clear_every_outcome(store: AlarmStore) -> None:
    assert store.clear("nope", definition_id="x").outcome is Outcome.NOT_FOUND
    alarm_id, etag = raise_alarm(store)
    assert store.clear(alarm_id, '"0"', definition_id=MANUAL_DEFINITION).outcome is (
        Outcome.ETAG_MISMATCH
    )
    assert store.clear(alarm_id, definition_id="other").outcome is Outcome.DEFINITION_CHANGED
    refused = store.clear(alarm_id, etag, definition_id=MANUAL_DEFINITION, manual=False)
    assert (refused.outcome, refused.etag) == (Outcome.NOT_CLEARABLE, etag)
    done = store.clear(alarm_id, etag, definition_id=MANUAL_DEFINITION)
    assert done.outcome is Outcome.OK and done.record is not None
    assert done.record.perceived_severity == 5
    assert done.record.alarm_cleared_time == done.record.alarm_changed_time
    assert done.record.HasField("alarm_cleared_time")
    assert store.clear(alarm_id, definition_id=MANUAL_DEFINITION).outcome is (
        Outcome.ALREADY_CLEARED
    )
    # Acknowledging a cleared alarm is still allowed (the operator saw it).
    assert store.acknowledge(alarm_id).outcome is Outcome.OK
    assert [e for _, e, _ in events(store)] == ["NEW", "CLEAR", "ACKNOWLEDGE"]


def test_concurrent_acknowledges_exactly_one_wins(store: AlarmStore, redis_url: str) -> None:
    alarm_id, _ = raise_alarm(store)
    stores = [AlarmStore(connect(redis_url)) for _ in range(16)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def race(own: AlarmStore) -> None:
        barrier.wait()
        outcome = own.acknowledge(alarm_id).outcome
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race, args=(own,)) for own in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == sorted(
        [Outcome.OK] + [Outcome.ALREADY_ACKNOWLEDGED] * (len(stores) - 1)
    )
    assert [e for _, e, _ in events(store)].count("ACKNOWLEDGE") == 1


def test_put_record_raise_change_clear_reraise(store: AlarmStore, redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    alarm_id, first = raise_alarm(store)
    assert raw.hget(f"alarm:{alarm_id}", "alarmAcknowledged") == "false"
    event, second = store.put_record(alarm_id, {"perceivedSeverity": 0})
    assert event is Event.CHANGE and second != first
    event, _ = store.put_record(alarm_id, {"perceivedSeverity": 5})
    assert event is Event.CLEAR
    assert raw.zscore(CLEARED_KEY, alarm_id) is not None
    assert raw.hget(f"alarm:{alarm_id}", "alarmClearedTime")
    event, _ = store.put_record(alarm_id, {"perceivedSeverity": 2})
    assert event is Event.CHANGE
    assert raw.zscore(CLEARED_KEY, alarm_id) is None
    assert raw.hget(f"alarm:{alarm_id}", "alarmClearedTime") == ""
    with pytest.raises(ValueError, match="unknown alarm attributes"):
        store.put_record(alarm_id, {"severity": 1})
    assert raw.xlen(EVENTS_KEY) == 4
    raw.close()


def test_purge_deletes_only_cleared_records_past_the_cutoff(
    store: AlarmStore, redis_url: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    old_id, _ = raise_alarm(store, perceivedSeverity=5, alarmClearedTime="2025-01-01T00:00:00Z")
    recent_id, _ = raise_alarm(store)
    store.clear(recent_id, definition_id=MANUAL_DEFINITION, now=now)
    active_id, _ = raise_alarm(store)
    stream_length = len(store.events())
    assert store.purge_cleared(now - dt.timedelta(days=14)) == 1
    assert store.get(old_id) is None
    assert {r.alarm_event_record_id for r in store.list()} == {recent_id, active_id}
    assert len(store.events()) == stream_length, "the stream is left alone"
    assert store.purge_cleared(now - dt.timedelta(days=14)) == 0
    assert store.purge_cleared(now + dt.timedelta(seconds=1)) == 1
    assert [r.alarm_event_record_id for r in store.list()] == [active_id]


def test_purger_one_replica_per_interval(store: AlarmStore, redis_url: str) -> None:
    raise_alarm(store, perceivedSeverity=5, alarmClearedTime="2025-01-01T00:00:00Z")
    raise_alarm(store, perceivedSeverity=5, alarmClearedTime="2025-01-02T00:00:00Z")
    counted: list[int] = []
    stop = threading.Event()
    first = AlarmPurger(store, 60.0, stop, counted.append)
    second = AlarmPurger(AlarmStore(connect(redis_url)), 60.0, stop, counted.append)
    assert first.purge_once() == 2
    raise_alarm(store, perceivedSeverity=5, alarmClearedTime="2025-01-03T00:00:00Z")
    assert second.purge_once() == 0, "the lock is held for the interval"
    assert counted == [2]


def test_config_defaults_put_and_merge_patch(store: AlarmStore) -> None:
    assert (store.config().retention_period, store.config().extensions) == (14, {})
    store.patch_config(3, {"a": {"b": 1, "c": 2}, "d": "x"})
    patched = store.patch_config(None, {"a": {"b": None}, "d": None})
    assert (patched.retention_period, patched.extensions) == (3, {"a": {"c": 2}})


# --- through gRPC ------------------------------------------------------------------------------


@dataclass
class Core:
    monitoring: mon_grpc.MonitoringServiceStub
    store: AlarmStore


@contextmanager
def serve(redis_url: str) -> Iterator[Core]:
    server = open_access_server(max_workers=8)
    client = connect(redis_url)
    with running_alarm_view(redis_url) as view:
        store = AlarmStore(client, view=view)
        mon_grpc.add_MonitoringServiceServicer_to_server(
            MonitoringV1Servicer(
                SubscriptionStore(client),
                store,
                "https://o2ims.example.net",
                400,
                Lister(ListingSettings(secret=b"test")),
                view=view,
                clearing_type=CLEARING_TYPES.get,
            ),
            server,
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield Core(mon_grpc.MonitoringServiceStub(channel), store)
        finally:
            channel.close()
            server.stop(grace=None).wait()
            client.close()


@pytest.fixture
def core(redis_url: str) -> Iterator[Core]:
    with serve(redis_url) as running:
        yield running


def patch(
    alarm_id: str, if_match: str | None = None, **fields: Any
) -> tuple[mon.PatchAlarmRequest, list[tuple[str, str]]]:
    request = mon.PatchAlarmRequest(
        alarm_event_record_id=alarm_id,
        alarm_event_record_modifications=mon.AlarmEventRecordModifications(**fields),
    )
    return request, ([("if-match", if_match)] if if_match is not None else [])


def patch_call(alarm_id: str, if_match: str | None = None, **fields: Any) -> dict[str, Any]:
    request, metadata = patch(alarm_id, if_match, **fields)
    return {"request": request, "metadata": metadata}


def initial(call: Any) -> dict[str, str]:
    return {item.key: item.value for item in call.initial_metadata()}


def test_version_is_1_1_0(core: Core) -> None:
    versions = core.monitoring.GetApiVersions(mon.GetApiVersionsRequest())
    assert [v.version for v in versions.api_versions] == [V1_VERSION] == ["1.1.0"]


def test_acknowledge_returns_the_modification_and_a_new_etag(core: Core) -> None:
    alarm_id, _ = raise_alarm(core.store)
    record, call = core.monitoring.GetAlarm.with_call(
        mon.GetAlarmRequest(alarm_event_record_id=alarm_id)
    )
    etag = initial(call)["etag"]
    assert not record.alarm_acknowledged
    request, metadata = patch(alarm_id, etag, alarm_acknowledged=True)
    answer, call = core.monitoring.PatchAlarm.with_call(request, metadata=metadata)
    assert answer == mon.AlarmEventRecordModifications(alarm_acknowledged=True)
    new_etag = initial(call)["etag"]
    assert new_etag != etag
    record, call = core.monitoring.GetAlarm.with_call(
        mon.GetAlarmRequest(alarm_event_record_id=alarm_id)
    )
    assert record.alarm_acknowledged and record.HasField("alarm_acknowledge_time")
    assert initial(call)["etag"] == new_etag
    again = failure(
        lambda: core.monitoring.PatchAlarm(**patch_call(alarm_id, alarm_acknowledged=True))
    )
    assert (again.code, again.error_info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ALARM_ALREADY_ACKNOWLEDGED",
    )


@pytest.mark.parametrize(
    ("fields", "violated"),
    [
        ({}, {"alarmAcknowledged"}),
        ({"alarm_acknowledged": True, "perceived_severity": 5}, {"alarmAcknowledged"}),
        ({"alarm_acknowledged": False}, {"alarmAcknowledged"}),
        ({"perceived_severity": 1}, {"perceivedSeverity"}),
        ({"perceived_severity": 0}, {"perceivedSeverity"}),
    ],
)
def test_a_modification_must_be_exactly_one_allowed_change(
    core: Core, fields: dict[str, Any], violated: set[str]
) -> None:
    alarm_id, _ = raise_alarm(core.store)
    problem = failure(lambda: core.monitoring.PatchAlarm(patch(alarm_id, **fields)[0]))
    assert problem.code is grpc.StatusCode.INVALID_ARGUMENT
    assert problem.error_info.reason == "INVALID_ALARM_MODIFICATION"
    assert set(problem.violations) == violated
    assert not core.store.events()[1:], "nothing changed"


@pytest.mark.parametrize("fields", [{"alarm_acknowledged": True}, {"perceived_severity": 5}])
def test_unknown_alarm_is_not_found(core: Core, fields: dict[str, Any]) -> None:
    problem = failure(lambda: core.monitoring.PatchAlarm(patch("no-such-alarm", **fields)[0]))
    assert (problem.code, problem.error_info.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "ALARM_NOT_FOUND",
    )


@pytest.mark.parametrize("fields", [{"alarm_acknowledged": True}, {"perceived_severity": 5}])
def test_stale_if_match_is_etag_mismatch(core: Core, fields: dict[str, Any]) -> None:
    alarm_id, etag = raise_alarm(core.store)
    core.store.put_record(alarm_id, {"perceivedSeverity": 2})  # another writer
    problem = failure(lambda: core.monitoring.PatchAlarm(**patch_call(alarm_id, etag, **fields)))
    assert (problem.code, problem.error_info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ETAG_MISMATCH",
    )
    # `*` matches any existing record.
    core.monitoring.PatchAlarm(**patch_call(alarm_id, "*", **fields))


def test_manual_clear_follows_the_definition(core: Core) -> None:
    manual_id, _ = raise_alarm(core.store, MANUAL_DEFINITION)
    answer = core.monitoring.PatchAlarm(patch(manual_id, perceived_severity=5)[0])
    assert answer == mon.AlarmEventRecordModifications(perceived_severity=5)
    record = core.monitoring.GetAlarm(mon.GetAlarmRequest(alarm_event_record_id=manual_id))
    assert record.perceived_severity == 5 and record.HasField("alarm_cleared_time")
    cleared = failure(lambda: core.monitoring.PatchAlarm(patch(manual_id, perceived_severity=5)[0]))
    assert cleared.error_info.reason == "ALARM_ALREADY_CLEARED"
    for definition in (AUTOMATIC_DEFINITION, UNSPECIFIED_DEFINITION, "not-in-any-dictionary"):
        alarm_id, _ = raise_alarm(core.store, definition)
        request = patch(alarm_id, perceived_severity=5)[0]
        refused = failure(functools.partial(core.monitoring.PatchAlarm, request))
        assert (refused.code, refused.error_info.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "ALARM_NOT_MANUALLY_CLEARABLE",
        ), definition
        assert refused.error_info.metadata["alarmDefinitionID"] == definition
        kept = core.monitoring.GetAlarm(mon.GetAlarmRequest(alarm_event_record_id=alarm_id))
        assert kept.perceived_severity == 1


def test_alarm_service_configuration(core: Core) -> None:
    service = core.monitoring
    got = service.GetAlarmServiceConfiguration(mon.GetAlarmServiceConfigurationRequest())
    assert got.retention_period == 14
    wanted = mon.AlarmServiceConfiguration(retention_period=3)
    wanted.extensions.update({"site": "north", "tier": {"a": 1}})
    put = service.UpdateAlarmServiceConfiguration(
        mon.UpdateAlarmServiceConfigurationRequest(alarm_service_configuration=wanted)
    )
    assert put == wanted
    change = mon.AlarmServiceConfigurationPatch(retention_period=7)
    change.extensions.update({"site": None, "tier": {"b": 2}})
    patched = service.PatchAlarmServiceConfiguration(
        mon.PatchAlarmServiceConfigurationRequest(alarm_service_configuration_patch=change)
    )
    expected = mon.AlarmServiceConfiguration(retention_period=7)
    expected.extensions.update({"tier": {"a": 1, "b": 2}})
    assert patched == expected
    assert service.GetAlarmServiceConfiguration(mon.GetAlarmServiceConfigurationRequest()) == (
        expected
    )


@pytest.mark.parametrize("days", [0, -1])
def test_retention_below_one_day_is_invalid(core: Core, days: int) -> None:
    put = failure(
        lambda: core.monitoring.UpdateAlarmServiceConfiguration(
            mon.UpdateAlarmServiceConfigurationRequest(
                alarm_service_configuration=mon.AlarmServiceConfiguration(retention_period=days)
            )
        )
    )
    patched = failure(
        lambda: core.monitoring.PatchAlarmServiceConfiguration(
            mon.PatchAlarmServiceConfigurationRequest(
                alarm_service_configuration_patch=mon.AlarmServiceConfigurationPatch(
                    retention_period=days
                )
            )
        )
    )
    for problem in (put, patched):
        assert problem.code is grpc.StatusCode.INVALID_ARGUMENT
        assert set(problem.violations) == {"retentionPeriod"}
    assert core.store.config().retention_period == 14


def test_list_alarms_filters_and_selectors_over_grpc_m1(core: Core) -> None:
    wanted_type = str(uuid.uuid4())
    records = {
        name: core.store.raise_from_source(
            SourceAlarm(name, type_id, str(uuid.uuid4()), "ad-1", "ad-1", severity,
                        extensions={"site": name}),
            flap_window=0,
        ).record_id
        for name, type_id, severity in (
            ("a", wanted_type, 0),
            ("b", wanted_type, 2),
            ("c", str(uuid.uuid4()), 0),
        )
    }  # fmt: skip
    core.store.acknowledge(records["b"])

    def listed(**query: Any) -> list[str]:
        response = core.monitoring.ListAlarms(mon.ListAlarmsRequest(**query))
        return sorted(a.alarm_event_record_id for a in response.alarms)

    # The view follows the writes; the list is read from it.
    wait_until(lambda: len(listed()) == 3, 5, "the three records listed")
    assert listed(filter=[f"(eq,resourceTypeID,{wanted_type})"]) == sorted(
        [records["a"], records["b"]]
    )
    # Both spellings; alarmAcknowledged a boolean; terms ANDed.
    assert listed(filter=[f"(eq,resourceTypeId,{wanted_type});(eq,alarmAcknowledged,false)"]) == [
        records["a"]
    ]
    assert listed(filter=["(eq,perceivedSeverity,0)"]) == sorted([records["a"], records["c"]])
    assert listed(filter=["(eq,extensions/site,c)"]) == [records["c"]]
    every = core.monitoring.ListAlarms(mon.ListAlarmsRequest(all_fields=True)).alarms
    assert all(a.extensions["site"] for a in every)
    problem = failure(
        lambda: core.monitoring.ListAlarms(mon.ListAlarmsRequest(filter=["(eq,nope,1)"]))
    )
    assert problem.code == grpc.StatusCode.INVALID_ARGUMENT
