"""A notifier given SIGTERM mid-run (a rolling restart) stops claiming work, finishes and
acknowledges its deliveries in flight, hands back what it read but did not deliver, and
releases its subscriptions: the other notifier goes on at once, not after the lease period,
and nothing is lost. Real processes, real Redis, a real receiver."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from devstack.processes import wait_until
from server.store import InventoryStore
from tests.core_process import log_records
from tests.notifier.conftest import NotifierProcess, resource, subscribe
from tests.notifier.receiver import Answer, Receiver

# Long enough that waiting for it would show: a crashed notifier's work moves on only
# after this, a stopped one's at once.
LEASE_MS = 20_000


def test_sigterm_hands_the_work_over_at_once_and_loses_nothing(
    redis_url: str, receiver: Receiver, store: InventoryStore, tmp_path: Path
) -> None:
    paths = [f"/g{n}" for n in range(4)]
    for path in paths:
        subscribe(redis_url, receiver.url + path)
    receiver.answer = lambda _request: Answer(delay_s=0.002)  # deliveries keep going
    lease = {"NETWEAVE_NOTIFY_LEASE_MS": str(LEASE_MS)}
    leaving = NotifierProcess(redis_url, tmp_path, **lease).start()
    staying = NotifierProcess(redis_url, tmp_path, **lease).start()
    count = 1000
    expected = len(paths) * count
    try:
        time.sleep(1.0)  # both hold their share of the subscriptions
        store.apply("static", [resource(f"r-{n:04d}") for n in range(count)])
        wait_until(lambda: len(receiver.delivered) >= expected // 4, 60, "a quarter delivered")
        signalled = time.monotonic()
        leaving.process.signal(signal.SIGTERM)
        wait_until(lambda: not leaving.process.alive(), 15, "the notifier to exit")
        exited = time.monotonic()
        wait_until(
            lambda: len({r.headers["webhook-id"] for r in receiver.delivered}) >= expected,
            LEASE_MS / 1000 / 2,
            "every notification, well within a lease period",
        )
        finished = time.monotonic()
    finally:
        leaving.stop()
        staying.stop()

    assert leaving.process.proc is not None
    assert leaving.process.proc.returncode == 0
    assert exited - signalled < 10
    assert finished - exited < LEASE_MS / 1000 / 2
    records = log_records(leaving.log_path.read_text())
    events = [record["event"] for record in records]
    assert events[-1] == "notifier_stopped"
    ids = [r.headers["webhook-id"] for r in receiver.delivered]
    assert len(set(ids)) == expected
    # At least once; again only for what was in flight at the stop.
    assert len(ids) - expected <= len(paths) * 16
    for path in paths:  # in order per subscription, duplicates aside
        seen = list(
            dict.fromkeys(
                r.json()["postObjectState"]["resourceId"] for r in receiver.delivered_to(path)
            )
        )
        assert seen == [f"r-{n:04d}" for n in range(count)]
