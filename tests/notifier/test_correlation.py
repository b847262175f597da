"""Correlation ids through a real notifier process (`python -m server.notifier`): an event
a call caused (an alarm acknowledged in a call) -> the notifier's log lines and the webhook's
X-Correlation-ID carry the call's id; an event no call caused (an adapter's change) -> the
notification's id. Every line the notifier writes is one JSON object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devstack.processes import wait_until
from netweave import correlation
from server.alarms.store import AlarmStore
from server.store import InventoryStore, connect
from tests.core_process import log_records
from tests.notifier.conftest import NotifierProcess, pool, subscribe
from tests.notifier.receiver import Answer, Receiver
from tests.notifier.test_alarm_notifications import raise_alarm, subscribe_alarms


def records(notifier: NotifierProcess, event: str) -> list[dict[str, Any]]:
    text = notifier.log_path.read_text(errors="replace")
    return [record for record in log_records(text) if record["event"] == event]


def test_an_event_a_call_caused_carries_its_id_to_the_logs_and_the_webhook(
    redis_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    subscribe_alarms(redis_url, receiver.url + "/ack", filter_="ACKNOWLEDGE")
    client = connect(redis_url)
    alarms = AlarmStore(client)
    alarm_id = raise_alarm(alarms)
    with correlation.bound("smo-call-42"):
        assert alarms.acknowledge(alarm_id).outcome == "OK"
    client.close()

    notifier = NotifierProcess(redis_url, tmp_path).start()
    try:
        [delivered] = receiver.wait_for("/ack", 1)
        notification_id = delivered.json()["notificationId"]
        assert delivered.headers["x-correlation-id"] == "smo-call-42"
        assert delivered.headers["webhook-id"] == notification_id
        wait_until(lambda: bool(records(notifier, "delivery_succeeded")), 10, "the delivery's line")
    finally:
        notifier.stop()

    [matched] = records(notifier, "event_matched")
    assert matched["correlation_id"] == "smo-call-42"
    assert matched["notification_ids"] == [notification_id]
    assert matched["api"] == "alarm"
    [succeeded] = records(notifier, "delivery_succeeded")
    assert succeeded["level"] == "info"
    assert succeeded["component"] == "notifier"
    assert succeeded["correlation_id"] == "smo-call-42"
    assert succeeded["notification_id"] == notification_id
    assert succeeded["status"] == 204
    assert succeeded["latency_ms"] >= 0
    assert succeeded["subscription_id"]


def test_an_adapters_change_is_correlated_by_its_notification_id(
    redis_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    subscription = subscribe(redis_url, receiver.url + "/inv")
    client = connect(redis_url)
    InventoryStore(client).apply("static", [pool()])
    client.close()

    notifier = NotifierProcess(redis_url, tmp_path).start()
    try:
        [delivered] = receiver.wait_for("/inv", 1)
        wait_until(lambda: bool(records(notifier, "delivery_succeeded")), 10, "the delivery's line")
    finally:
        notifier.stop()

    notification_id = delivered.json()["notificationId"]
    assert delivered.headers["x-correlation-id"] == notification_id
    assert not records(notifier, "event_matched"), "only events a call caused are logged"
    [succeeded] = records(notifier, "delivery_succeeded")
    assert succeeded["correlation_id"] == notification_id
    assert succeeded["subscription_id"] == subscription.subscription_id


def test_a_failed_and_retried_delivery_logs_the_id_on_every_line(
    redis_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    subscribe_alarms(redis_url, receiver.url + "/flaky")
    answers = iter([503, 204])
    receiver.answer = lambda _request: Answer(status=next(answers, 204))
    client = connect(redis_url)
    alarms = AlarmStore(client)
    with correlation.bound("retry-call-7"):
        alarms.put_record(
            "alarm-r",
            {
                "resourceTypeID": "rt",
                "resourceID": "r",
                "alarmDefinitionID": "def",
                "probableCauseID": "cause",
                "perceivedSeverity": 2,
            },
        )
        assert alarms.acknowledge("alarm-r").outcome == "OK"
    client.close()

    notifier = NotifierProcess(redis_url, tmp_path).start()
    try:
        receiver.wait_for("/flaky", 2)  # NEW (no id) and ACKNOWLEDGE (the call's)
        wait_until(lambda: len(records(notifier, "delivery_succeeded")) == 2, 10, "both lines")
    finally:
        notifier.stop()
    [retry] = records(notifier, "delivery_retry")
    [first, second] = records(notifier, "delivery_succeeded")
    # The first notification (NEW, raised by a source: no call) failed once.
    assert retry["correlation_id"] == retry["notification_id"] == first["notification_id"]
    assert first["attempts"] == 2
    assert second["correlation_id"] == "retry-call-7"
    assert [r.headers["x-correlation-id"] for r in receiver.requests] == [
        first["notification_id"],
        first["notification_id"],
        "retry-call-7",
    ]
