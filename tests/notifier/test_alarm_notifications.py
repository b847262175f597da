"""Alarm changes become AlarmEventNotifications (spec §3.11, checklist M4, S12): the
Monitoring 1.x body, the event-type and expression filters in both modes, only events after
the subscription's creation, nothing after its deletion, order per subscription, and the
matcher's per-API metrics. Real Redis, real HTTP receivers, the notifier in-process; alarm
records are written with AlarmStore, as the alarm sources write them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import serialize
from devstack.processes import wait_until
from server.alarms.store import EVENTS_KEY as ALARM_EVENTS_KEY
from server.alarms.store import AlarmStore
from server.notifier import keys
from server.notifier.deadletters import DeadLetters
from server.notifier.notifications import NOTIFICATION_NAMESPACE
from server.store import Change, InventoryStore, connect
from server.subscriptions.store import ALARM_SUBSCRIPTIONS, Subscription, SubscriptionStore
from tests.notifier.conftest import SECRET_KEY, make_config, running
from tests.notifier.receiver import Answer, Receiver, verify_signature

GLOBAL_CLOUD_ID = "0a3c2b1d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
RESOURCE_TYPE = "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"
OTHER_RESOURCE_TYPE = "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f"
DEFINITION = "e80babbf-72de-4650-a4b5-c7874b0a841a"
CAUSE = "4f3e2d1c-0b9a-4876-a5b4-c3d2e1f0a9b8"
RESOURCE = "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"
RAISED = "2026-01-02T03:04:05.000000Z"


@pytest.fixture
def alarms(redis_url: str) -> Iterator[AlarmStore]:
    client = connect(redis_url)
    yield AlarmStore(client)
    client.close()


def subscribe_alarms(
    redis_url: str, callback: str, *, filter_: str = "", consumer_subscription_id: str = ""
) -> Subscription:
    """An alarm subscription stored as the core stores one (its creation position too)."""
    client = connect(redis_url)
    try:
        return SubscriptionStore(client).create(
            ALARM_SUBSCRIPTIONS,
            str(uuid.uuid4()),
            callback=callback,
            filter_=filter_,
            consumer_subscription_id=consumer_subscription_id,
            api_version="v1",
        )
    finally:
        client.close()


def raise_alarm(
    alarms: AlarmStore,
    alarm_id: str | None = None,
    *,
    severity: int = 2,
    resource_type: str = RESOURCE_TYPE,
    **extra: Any,
) -> str:
    """NEW (or CHANGE, for a known id) of one alarm; returns its id."""
    alarm_id = alarm_id or str(uuid.uuid4())
    alarms.put_record(
        alarm_id,
        {
            "resourceTypeID": resource_type,
            "resourceID": RESOURCE,
            "alarmDefinitionID": DEFINITION,
            "probableCauseID": CAUSE,
            "alarmRaisedTime": RAISED,
            "perceivedSeverity": severity,
            **extra,
        },
    )
    return alarm_id


def name_o_cloud(store: InventoryStore) -> None:
    cloud = domain_pb2.OCloud(o_cloud_id="oc-1", global_cloud_id=GLOBAL_CLOUD_ID, name="lab")
    store.apply(
        "static", [Change("o_cloud", "oc-1", serialize(domain_pb2.InventoryObject(o_cloud=cloud)))]
    )


def settled(client: redis.Redis, subscriptions: Sequence[Subscription]) -> bool:
    """The matcher has finished every alarm event and every queue is delivered: nothing
    more can arrive for these subscriptions (what "received nothing else" waits for)."""
    last: Any = client.xrevrange(ALARM_EVENTS_KEY, count=1)
    groups: Any = client.xinfo_groups(ALARM_EVENTS_KEY)
    group = next(g for g in groups if _text(g["name"]) == keys.MATCH_GROUP)
    return (
        bool(last)
        and _text(group["last-delivered-id"]) == _text(last[0][0])
        and group["pending"] == 0
        and all(client.xlen(keys.queue_key(s.subscription_id)) == 0 for s in subscriptions)
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def event_types(receiver: Receiver, path: str) -> list[int]:
    return [n["notificationEventType"] for n in receiver.notifications(path)]


def test_alarm_changes_notify_the_monitoring_1x_body_m4(
    redis_url: str, receiver: Receiver, store: InventoryStore, alarms: AlarmStore
) -> None:
    name_o_cloud(store)
    subscription = subscribe_alarms(
        redis_url, f"{receiver.url}/m4", consumer_subscription_id="smo-7"
    )
    subscribe_alarms(redis_url, f"{receiver.url}/bare")
    with running(make_config(redis_url)):
        alarm_id = raise_alarm(alarms, severity=1, extensions={"site": "lab-a"})
        raise_alarm(alarms, alarm_id, severity=0)
        assert alarms.acknowledge(alarm_id).record is not None
        raise_alarm(alarms, alarm_id, severity=5)
        wait_until(lambda: len(receiver.delivered_to("/m4")) == 4, 20, "four notifications")
        wait_until(lambda: len(receiver.delivered_to("/bare")) == 4, 20, "four, bare")

    entries = [entry_id for entry_id, _ in alarms.events()]
    received = receiver.delivered_to("/m4")
    notifications = [r.json() for r in received]
    assert [n["notificationEventType"] for n in notifications] == [0, 1, 3, 2]
    new, changed, acknowledged, cleared = notifications
    ids = [
        str(uuid.uuid5(NOTIFICATION_NAMESPACE, f"{subscription.subscription_id}/{entry}"))
        for entry in entries
    ]
    assert [n["notificationId"] for n in notifications] == ids
    # Exactly the §3.11 keys, in their 1.x spelling: nothing unset, nothing else.
    assert new == {
        "notificationId": ids[0],
        "globalCloudID": GLOBAL_CLOUD_ID,
        "consumerSubscriptionId": "smo-7",
        "notificationEventType": 0,
        "objectRef": f"/o2ims-infrastructureMonitoring/v1/alarms/{alarm_id}",
        "alarmEventRecordId": alarm_id,
        "resourceTypeID": RESOURCE_TYPE,
        "resourceID": RESOURCE,
        "alarmDefinitionID": DEFINITION,
        "probableCauseID": CAUSE,
        "alarmRaisedTime": "2026-01-02T03:04:05Z",
        "alarmChangedTime": new["alarmChangedTime"],
        "alarmAcknowledged": False,
        "perceivedSeverity": 1,
        "extensions": {"site": "lab-a"},
    }
    assert new["alarmChangedTime"].endswith("Z")
    assert changed["perceivedSeverity"] == 0
    assert acknowledged["alarmAcknowledged"] is True
    assert acknowledged["alarmAcknowledgeTime"].endswith("Z")
    assert "alarmClearedTime" not in acknowledged
    assert cleared["perceivedSeverity"] == 5
    assert cleared["alarmClearedTime"].endswith("Z")
    assert cleared["alarmAcknowledgeTime"] == acknowledged["alarmAcknowledgeTime"]
    for request in received:  # signed as inventory notifications are
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-id"] == request.json()["notificationId"]
        assert verify_signature(SECRET_KEY, request)
    # No consumerSubscriptionId given: left out, never ""; extensions always an object.
    first_bare = receiver.notifications("/bare")[0]
    assert "consumerSubscriptionId" not in first_bare
    assert first_bare["extensions"] == {"site": "lab-a"}


def test_extensions_are_an_empty_object_when_the_record_has_none(
    redis_url: str, receiver: Receiver, alarms: AlarmStore
) -> None:
    subscribe_alarms(redis_url, f"{receiver.url}/plain")
    with running(make_config(redis_url)):
        raise_alarm(alarms)
        wait_until(lambda: len(receiver.delivered_to("/plain")) == 1, 20, "the NEW")
    (notification,) = receiver.notifications("/plain")
    assert notification["extensions"] == {}
    assert "globalCloudID" not in notification, "no O-Cloud known yet: left out, never wrong"


def _four_events(alarms: AlarmStore) -> None:
    """NEW, CHANGE, ACKNOWLEDGE, CLEAR of one alarm."""
    alarm_id = raise_alarm(alarms, severity=2)
    raise_alarm(alarms, alarm_id, severity=1)
    alarms.acknowledge(alarm_id)
    raise_alarm(alarms, alarm_id, severity=5)


ENUM_EVENT_TYPES = {"NEW": 0, "CHANGE": 1, "CLEAR": 2, "ACKNOWLEDGE": 3}


@pytest.mark.parametrize("mode", ["include", "exclude"])
def test_event_type_filter_each_value(
    redis_url: str, receiver: Receiver, alarms: AlarmStore, raw: redis.Redis, mode: str
) -> None:
    subscriptions = [
        subscribe_alarms(redis_url, f"{receiver.url}/{name}", filter_=name)
        for name in ENUM_EVENT_TYPES
    ]
    everything = subscribe_alarms(redis_url, f"{receiver.url}/all")
    with running(make_config(redis_url, filter_mode=mode)):
        _four_events(alarms)
        wait_until(lambda: len(receiver.delivered_to("/all")) == 4, 20, "every event")
        wait_until(lambda: settled(raw, [*subscriptions, everything]), 20, "queues drained")
    assert event_types(receiver, "/all") == [0, 1, 3, 2]
    for name, event_type in ENUM_EVENT_TYPES.items():
        if mode == "include":  # only this event type
            assert event_types(receiver, f"/{name}") == [event_type], name
        else:  # every event type but this one
            expected = [t for t in (0, 1, 3, 2) if t != event_type]
            assert event_types(receiver, f"/{name}") == expected, name


EXPRESSIONS = {
    "/critical": "(eq,perceivedSeverity,0)",
    "/type-unacked": f"(eq,resourceTypeID,{RESOURCE_TYPE});(eq,alarmAcknowledged,false)",
    # The 2.x spelling (and upper-case UUIDs) mean the same, as in the alarm list's filter.
    "/type-id-casing": f"(eq,resourceTypeId,{RESOURCE_TYPE.upper()})",
    "/site": "(eq,extensions/site,lab-a)",
}


def _expression_events(alarms: AlarmStore) -> tuple[str, str]:
    """Alarm A: critical, of RESOURCE_TYPE, at lab-a, then acknowledged; alarm B: minor, of
    another type."""
    first = raise_alarm(alarms, severity=0, extensions={"site": "lab-a"})
    second = raise_alarm(alarms, severity=2, resource_type=OTHER_RESOURCE_TYPE)
    alarms.acknowledge(first)
    return first, second


@pytest.mark.parametrize("mode", ["include", "exclude"])
def test_expression_filters_on_the_record_after_the_change(
    redis_url: str, receiver: Receiver, alarms: AlarmStore, raw: redis.Redis, mode: str
) -> None:
    subscriptions = [
        subscribe_alarms(redis_url, receiver.url + path, filter_=expression)
        for path, expression in EXPRESSIONS.items()
    ]
    with running(make_config(redis_url, filter_mode=mode)):
        first, second = _expression_events(alarms)
        wait_until(lambda: settled(raw, subscriptions), 20, "queues drained")

    def seen(path: str) -> list[tuple[str, int]]:
        return [
            (n["alarmEventRecordId"], n["notificationEventType"])
            for n in receiver.notifications(path)
        ]

    everything = [(first, 0), (second, 0), (first, 3)]
    matching = {
        "/critical": [(first, 0), (first, 3)],
        "/type-unacked": [(first, 0)],
        "/type-id-casing": [(first, 0), (first, 3)],
        "/site": [(first, 0), (first, 3)],
    }
    for path, matched in matching.items():
        if mode == "include":
            assert seen(path) == matched, path
        else:
            assert seen(path) == [event for event in everything if event not in matched], path


def test_only_alarm_changes_after_the_subscription_are_notified(
    redis_url: str, receiver: Receiver, alarms: AlarmStore
) -> None:
    before = raise_alarm(alarms)  # before the subscription, and no notifier running yet
    subscribe_alarms(redis_url, f"{receiver.url}/late")
    after = raise_alarm(alarms)
    with running(make_config(redis_url)):
        raise_alarm(alarms, before, severity=1)
        wait_until(lambda: len(receiver.delivered_to("/late")) == 2, 20, "two notifications")
    assert [
        (n["alarmEventRecordId"], n["notificationEventType"])
        for n in receiver.notifications("/late")
    ] == [
        (after, 0),
        (before, 1),
    ]


def test_a_deleted_alarm_subscription_gets_nothing_more(
    redis_url: str, receiver: Receiver, alarms: AlarmStore, raw: redis.Redis
) -> None:
    doomed = subscribe_alarms(redis_url, f"{receiver.url}/doomed")
    witness = subscribe_alarms(redis_url, f"{receiver.url}/witness")
    with running(make_config(redis_url)):
        raise_alarm(alarms)
        wait_until(lambda: len(receiver.delivered_to("/doomed")) == 1, 20, "the first")
        client = connect(redis_url)
        assert SubscriptionStore(client).delete(ALARM_SUBSCRIPTIONS, doomed.subscription_id)
        client.close()
        for _ in range(5):
            raise_alarm(alarms)
        wait_until(lambda: len(receiver.delivered_to("/witness")) == 6, 20, "the witness's")
        wait_until(lambda: settled(raw, [witness]), 20, "queues drained")
    assert len(receiver.delivered_to("/doomed")) == 1
    # What the notifier kept for it went with it.
    assert not raw.exists(keys.queue_key(doomed.subscription_id))
    assert not raw.hexists(keys.CURSORS_KEY, doomed.subscription_id)


def test_order_per_subscription_follows_the_event_stream(
    redis_url: str, receiver: Receiver, alarms: AlarmStore
) -> None:
    paths = [f"/o{n}" for n in range(3)]
    for path in paths:
        subscribe_alarms(redis_url, receiver.url + path)
    ids = [str(uuid.uuid4()) for _ in range(10)]
    with running(make_config(redis_url)):
        for round_ in range(10):
            for alarm_id in ids:
                raise_alarm(alarms, alarm_id, severity=round_ % 5)
        wait_until(
            lambda: all(len(receiver.delivered_to(path)) == 100 for path in paths),
            30,
            "100 notifications each",
        )
    records = [fields["alarmEventRecordId"] for _, fields in alarms.events()]
    for path in paths:
        assert [n["alarmEventRecordId"] for n in receiver.notifications(path)] == records


def test_matcher_metrics_count_alarm_events_and_notifications_by_api(
    redis_url: str, receiver: Receiver, alarms: AlarmStore, raw: redis.Redis
) -> None:
    subscriptions = [
        subscribe_alarms(redis_url, f"{receiver.url}/m1"),
        subscribe_alarms(redis_url, f"{receiver.url}/m2", filter_="NEW"),
    ]
    with running(make_config(redis_url)) as notifier:
        _four_events(alarms)
        wait_until(lambda: settled(raw, subscriptions), 20, "queues drained")
        registry = notifier.metrics.registry

        def sample(name: str, api: str) -> float | None:
            return registry.get_sample_value(name, {"api": api})

        assert sample("o2ims_notifier_events_matched_total", "alarm") == 4
        assert sample("o2ims_notifier_notifications_queued_total", "alarm") == 5
        assert sample("o2ims_notifier_notifications_queued_total", "inventory") == 0
        assert registry.get_sample_value("o2ims_webhook_queue_depth") == 0


def test_an_undeliverable_alarm_notification_is_dead_lettered_and_replayed(
    redis_url: str, receiver: Receiver, alarms: AlarmStore
) -> None:
    subscription = subscribe_alarms(redis_url, f"{receiver.url}/dlq")
    receiver.answer = lambda _request: Answer(400)  # permanent: dead-lettered at once
    client = connect(redis_url)
    letters = DeadLetters(client)
    try:
        with running(make_config(redis_url)):
            raise_alarm(alarms)
            wait_until(lambda: len(letters.list()) == 1, 20, "the dead letter")
            [(letter_id, letter)] = letters.list()
            assert letter["subscriptionId"] == subscription.subscription_id
            assert letter["subscriptionKind"] == ALARM_SUBSCRIPTIONS.name
            receiver.answer = lambda _request: Answer(204)
            assert letters.replay(letter_id) == "replayed"
            wait_until(lambda: len(receiver.delivered_to("/dlq")) == 1, 20, "the replay")
    finally:
        client.close()
    (replayed,) = receiver.notifications("/dlq")
    assert replayed["notificationId"] == letter["notificationId"]
    assert replayed["notificationEventType"] == 0
