"""The in-memory alarm view on a real redis-server: loaded once, then kept equal to Redis by
the alarm streams, reloading after a gap or a flush."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from devstack.processes import wait_until
from server.alarms.store import EVENTS_KEY, AlarmStore, SourceAlarm, _set_time
from server.alarms.view import AlarmView
from server.store import connect


@pytest.fixture
def alarms(redis_url: str) -> Iterator[AlarmStore]:
    client = connect(redis_url)
    yield AlarmStore(client)
    client.close()


@pytest.fixture
def view(redis_url: str) -> Iterator[AlarmView]:
    stop = threading.Event()
    running = AlarmView(connect(redis_url, socket_timeout=5.0), stop, read_block_ms=20)
    running.start()
    wait_until(lambda: running.loaded, 5, "the view to load")
    yield running
    stop.set()
    running.join(5)


def source(source_id: str, severity: int = 1) -> SourceAlarm:
    return SourceAlarm(source_id, "rt-1", "r-1", "ad-1", "ad-1", severity)


def stored_state(alarms: AlarmStore) -> dict[str, tuple[int, bool]]:
    return {
        r.alarm_event_record_id: (r.perceived_severity, r.alarm_acknowledged) for r in alarms.list()
    }


def view_state(view: AlarmView) -> dict[str, tuple[int, bool]]:
    return {
        record_id: (view.records[record_id].perceived_severity,
                    view.records[record_id].alarm_acknowledged)
        for record_id in view.ids()
    }  # fmt: skip


def test_the_view_follows_every_kind_of_change(alarms: AlarmStore, view: AlarmView) -> None:
    first = alarms.raise_from_source(source("a"), flap_window=0)
    alarms.raise_from_source(source("b", 3), flap_window=0)
    alarms.acknowledge(first.record_id)
    alarms.raise_from_source(source("a", 0), flap_window=0)
    alarms.withdraw_from_source("b")
    wait_until(lambda: view_state(view) == stored_state(alarms), 5, "the view to follow")
    assert sorted(view_state(view).values()) == [(0, True), (5, False)]
    assert view.counts() == {("CRITICAL", "active", True): 1, ("CLEARED", "cleared", False): 1}
    loads = view.reloads

    # A purge removes records without an alarm event: the view drops them too.
    alarms.purge_cleared(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    wait_until(lambda: len(view.ids()) == 1, 5, "the purged record to leave the view")
    assert view_state(view) == stored_state(alarms)
    assert view.reloads == loads, "followed, not reloaded"


def test_a_gap_in_the_events_reloads(redis_url: str, alarms: AlarmStore) -> None:
    # Stepped by hand: the changes below must happen while the view does not read.
    view = AlarmView(connect(redis_url), threading.Event(), read_block_ms=1)
    view.load()
    alarms.raise_from_source(source("a"), flap_window=0)
    view.step()
    assert len(view.ids()) == 1 and view.reloads == 1
    alarms.raise_from_source(source("b"), flap_window=0)
    alarms.raise_from_source(source("c"), flap_window=0)
    raw = redis.Redis.from_url(redis_url)
    raw.xtrim(EVENTS_KEY, maxlen=0, approximate=False)
    raw.close()
    alarms.raise_from_source(source("d"), flap_window=0)
    view.step()
    assert view.reloads == 2, "the gap (b and c trimmed away) made it load again"
    assert view_state(view) == stored_state(alarms) and len(view.ids()) == 4


def test_a_flushed_redis_empties_the_view(
    redis_url: str, alarms: AlarmStore, view: AlarmView
) -> None:
    alarms.raise_from_source(source("a"), flap_window=0)
    wait_until(lambda: len(view.ids()) == 1, 5, "the record")
    raw = redis.Redis.from_url(redis_url)
    raw.flushall()
    wait_until(lambda: view.ids() == [], 5, "the view to notice the flush")
    raw.close()


def test_records_changed_behind_the_streams_reload_the_view(
    redis_url: str, alarms: AlarmStore
) -> None:
    # A restore writes records and the revision counter without new events after the
    # view's position: the counter moving with no event is what tells the view.
    view = AlarmView(connect(redis_url), threading.Event(), read_block_ms=1)
    view.load()
    alarms.raise_from_source(source("a"), flap_window=0)
    view.step()
    assert view.reloads == 1 and len(view.ids()) == 1
    raw = redis.Redis.from_url(redis_url)
    raw.hset(f"alarm:{view.ids()[0]}", "alarmAcknowledged", "true")
    raw.incr("alarms:revision", 5)
    raw.close()
    view.step()
    assert view.reloads == 2, "the counter moved without an event: loaded again"
    assert view_state(view) == stored_state(alarms)
    view.step()
    assert view.reloads == 2, "nothing moved since: no further load"


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-05T09:30:00Z",
        "2026-01-06T14:05:12+01:00",
        "2026-12-03T17:51:33.123456Z",
        "2026-12-03T17:51:33.123456789Z",
        "1969-12-31T23:59:59.5Z",
        "2024-02-29T00:00:00-08:00",
    ],
)
def test_the_fast_time_parser_agrees_with_protobuf(text: str) -> None:
    fast, reference = Timestamp(), Timestamp()
    _set_time(fast, text)
    reference.FromJsonString(text)
    assert fast == reference


def test_a_time_without_offset_is_unreadable() -> None:
    with pytest.raises(ValueError):
        _set_time(Timestamp(), "2026-01-05T09:30:00")
