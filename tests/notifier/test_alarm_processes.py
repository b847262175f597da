"""Alarm notifications from real notifier processes: kill -9 while 1,000 alarm changes flow
(checklist S11 for alarm subscriptions: at least once, in order per subscription)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from devstack.processes import wait_until
from server.alarms.store import AlarmStore
from server.notifier.notifications import NOTIFICATION_NAMESPACE
from server.store import connect
from tests.notifier.conftest import NotifierProcess
from tests.notifier.receiver import Receiver
from tests.notifier.test_alarm_notifications import raise_alarm, subscribe_alarms

ALARMS = 250  # NEW, CHANGE, ACKNOWLEDGE, CLEAR each: 1,000 changes
CHANGES = 4 * ALARMS
# Pacing of the producer, so the changes are still flowing when the notifier is killed.
PRODUCER_PAUSE_S = 0.004


def produce(redis_url: str, done: threading.Event) -> None:
    client = connect(redis_url)
    alarms = AlarmStore(client)
    try:
        ids = [str(uuid.uuid4()) for _ in range(ALARMS)]
        for step in range(4):
            for alarm_id in ids:
                if step == 0:
                    raise_alarm(alarms, alarm_id, severity=2)
                elif step == 1:
                    raise_alarm(alarms, alarm_id, severity=1)
                elif step == 2:
                    alarms.acknowledge(alarm_id)
                else:
                    raise_alarm(alarms, alarm_id, severity=5)
                time.sleep(PRODUCER_PAUSE_S)
    finally:
        client.close()
        done.set()


def test_kill_9_while_1000_alarm_changes_flow_delivers_everything_in_order(
    redis_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    paths = {"/a0": "", "/a1": "", "/ack": "ACKNOWLEDGE"}
    subscriptions = {
        path: subscribe_alarms(redis_url, receiver.url + path, filter_=filter_)
        for path, filter_ in paths.items()
    }
    produced = threading.Event()
    producer = threading.Thread(target=produce, args=(redis_url, produced), daemon=True)
    first = NotifierProcess(redis_url, tmp_path).start()
    try:
        producer.start()
        wait_until(lambda: len(receiver.delivered) >= CHANGES // 2, 60, "500 delivered")
        first.kill()
        assert not produced.is_set(), "killed while the changes were still flowing"
    finally:
        first.stop()
    second = NotifierProcess(redis_url, tmp_path).start()
    try:
        producer.join(60)
        assert produced.is_set()
        client = connect(redis_url)
        entries = [
            (entry_id, fields["event"])
            for entry_id, fields in AlarmStore(client).events(count=10**6)
        ]
        client.close()
        assert len(entries) == CHANGES
        expected = {
            path: [
                str(uuid.uuid5(NOTIFICATION_NAMESPACE, f"{s.subscription_id}/{entry_id}"))
                for entry_id, event in entries
                if not paths[path] or event == paths[path]
            ]
            for path, s in subscriptions.items()
        }
        total = sum(len(ids) for ids in expected.values())

        def every_one_arrived() -> bool:
            return len({r.headers["webhook-id"] for r in receiver.delivered}) >= total

        wait_until(every_one_arrived, 90, "every notification")
    finally:
        second.stop()
    delivered = [r.headers["webhook-id"] for r in receiver.delivered]
    duplicates = len(delivered) - total
    print(
        f"\nalarm kill -9: changes={CHANGES} notifications={total} "
        f"delivered={len(delivered)} duplicates={duplicates}"
    )
    assert set(delivered) == {i for ids in expected.values() for i in ids}
    for path, ids in expected.items():  # in order per subscription, duplicates aside
        seen = list(dict.fromkeys(r.headers["webhook-id"] for r in receiver.delivered_to(path)))
        assert seen == ids, path
    assert duplicates < total / 100, duplicates
