"""What the notifier costs at many subscriptions: Redis commands while idle do not grow with
the number of subscriptions, neither do its threads, and the bounded pool of delivery
threads still keeps one subscriber's trouble away from the others."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import redis

from devstack.processes import free_port, wait_until
from devstack.redis_server import command_calls
from server.notifier import keys, streams
from server.notifier.app import Notifier
from server.notifier.config import RetrySchedule
from server.notifier.scheduler import Scheduler
from server.store import InventoryStore, connect
from server.subscriptions.store import INVENTORY_SUBSCRIPTIONS
from tests.notifier.conftest import make_config, resource, running, subscribe
from tests.notifier.receiver import Answer, Receiver

WINDOW_S = 2.0


def idle_commands(client: redis.Redis) -> dict[str, int]:
    """Commands Redis executed during WINDOW_S of idleness (this function's INFO excluded)."""

    before = command_calls(client)
    time.sleep(WINDOW_S)
    after = command_calls(client)
    delta = {name: count - before.get(name, 0) for name, count in after.items()}
    delta["info"] -= 1
    return {name: count for name, count in delta.items() if count}


def test_idle_redis_commands_and_threads_do_not_grow_with_subscriptions(
    redis_url: str, receiver: Receiver
) -> None:
    client = connect(redis_url)
    threads_before = threading.active_count()
    config = make_config(redis_url, delivery_workers=4)
    for _ in range(10):
        subscribe(redis_url, receiver.url + "/few")
    with running(config) as notifier:
        wait_until(lambda: len(notifier.scheduler.workers) == 10, 10, "10 subscriptions taken")
        time.sleep(1.0)  # the workers' first look at their queues
        few = idle_commands(client)
        for _ in range(190):
            subscribe(redis_url, receiver.url + "/many")
        wait_until(lambda: len(notifier.scheduler.workers) == 200, 20, "200 subscriptions taken")
        time.sleep(1.5)
        many = idle_commands(client)
        threads = threading.active_count() - threads_before
    client.close()
    # The same ticks, wake-up reads and matcher polls whatever the count: nothing per
    # subscription (it was ~5 commands/s each: XREADGROUP, EXISTS, lease GET + SET).
    assert sum(many.values()) <= sum(few.values()) * 1.25 + 10, (few, many)
    assert many.get("exists", 0) <= few.get("exists", 0) + 2, (few, many)
    assert many.get("xreadgroup", 0) <= few.get("xreadgroup", 0) + 4, (few, many)
    # The pool, the matcher, the scheduler, the wake-up reader, the ops server: not 200.
    assert threads <= config.delivery_workers + 10, threads


def test_a_stuck_subscriber_does_not_delay_another(redis_url: str, store: InventoryStore) -> None:
    receiver = Receiver().start()
    released = threading.Event()

    def answer(request: Any) -> Answer:
        if request.path == "/stuck":
            released.wait(10)
        return Answer()

    receiver.answer = answer
    try:
        config = make_config(redis_url, delivery_workers=2, request_timeout_s=15.0)
        subscribe(redis_url, receiver.url + "/stuck")
        subscribe(redis_url, receiver.url + "/fine")
        with running(config) as notifier:
            wait_until(lambda: len(notifier.scheduler.workers) == 2, 10, "both subscriptions taken")
            store.apply("t", [resource(str(uuid.uuid4()))])
            started = time.monotonic()
            # The stuck POST is in flight for 10 s; the other subscriber's is not behind it.
            receiver.wait_for("/fine", 1, timeout=3.0)
            for _ in range(5):
                store.apply("t", [resource(str(uuid.uuid4()))])
            receiver.wait_for("/fine", 6, timeout=3.0)
            assert time.monotonic() - started < 3.0
            assert not receiver.delivered_to("/stuck")
            released.set()
            receiver.wait_for("/stuck", 6, timeout=10.0)
    finally:
        released.set()
        receiver.stop()


def test_a_subscriber_in_backoff_holds_no_delivery_thread(
    redis_url: str, store: InventoryStore, receiver: Receiver
) -> None:
    # One delivery thread: a down subscriber waiting out its retries must not hold it. Its
    # retries are 5 s apart, so a thread held for even one of them fails the wait below.
    config = make_config(
        redis_url,
        delivery_workers=1,
        retry=RetrySchedule(base_s=5.0, max_delay_s=5.0, deadline_s=30.0),
    )
    down = f"http://127.0.0.1:{free_port()}/down"
    subscribe(redis_url, down)
    subscribe(redis_url, receiver.url + "/up")
    with running(config) as notifier:
        wait_until(lambda: len(notifier.scheduler.workers) == 2, 10, "both subscriptions taken")
        for _ in range(5):
            store.apply("t", [resource(str(uuid.uuid4()))])
        receiver.wait_for("/up", 5, timeout=3.0)
        failures = notifier.metrics.deliveries.labels("retried")._value.get()
        assert failures >= 1  # the down one is retrying meanwhile


def test_the_delivery_thread_count_is_validated() -> None:
    try:
        make_config("redis://127.0.0.1:1/0", delivery_workers=0)
    except ValueError as exc:
        assert "NETWEAVE_NOTIFY_WORKERS must be at least 1, got 0" in str(exc)
    else:
        raise AssertionError("0 delivery threads accepted")


class _Counted:
    """Stands in for a DeliveryWorker where only its wake-ups are looked at."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


def test_wakeups_trimmed_before_they_were_read_wake_every_queue(redis_url: str) -> None:
    client = connect(redis_url)
    client.xadd(keys.READY_KEY, {"ids": "before"})
    stop = threading.Event()
    scheduler = Scheduler(
        client, "c1", 5000, lambda *_: None, stop,  # type: ignore[arg-type]
        wakeups=connect(redis_url),
    )  # fmt: skip
    named, unnamed = _Counted(), _Counted()
    scheduler.workers = {"named": named, "unnamed": unnamed}  # type: ignore[dict-item]
    watcher = threading.Thread(target=scheduler.watch, daemon=True)
    watcher.start()
    wait_until(
        lambda: named.wakes >= 1 and unnamed.wakes >= 1, 5, "the start's wake-up of every queue"
    )
    time.sleep(0.2)  # the watcher is blocked in its read after the newest entry now
    woken = unnamed.wakes
    # The reader falls behind: "unnamed"'s wake-up and more are trimmed away before it reads.
    with client.pipeline(transaction=True) as burst:
        burst.xadd(keys.READY_KEY, {"ids": "unnamed"}, maxlen=150, approximate=False)
        for _ in range(249):
            burst.xadd(keys.READY_KEY, {"ids": "named"}, maxlen=150, approximate=False)
        burst.execute()
    wait_until(lambda: unnamed.wakes > woken, 5, "the lost wake-up to wake every queue")
    stop.set()
    watcher.join(5)
    client.close()


def test_wakeups_while_waiting_for_a_previous_owner_start_no_extra_polling(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose queue holds a previous owner's entry, not idle long enough to claim,
    looks again every PENDING_POLL_S: new notifications' wake-ups meanwhile neither run
    extra recovery passes nor start timers of their own (each would keep polling)."""
    subscription = subscribe(redis_url, "http://127.0.0.1:9/never")
    client = connect(redis_url)
    queue = keys.queue_key(subscription.subscription_id)
    client.xgroup_create(queue, keys.DELIVER_GROUP, id="0", mkstream=True)
    client.xadd(queue, {"n": "1"})
    # Read by another, live owner: pending to it, and never idle long enough (lease 60 s).
    client.xreadgroup(keys.DELIVER_GROUP, "old-owner", {queue: ">"})
    passes: list[float] = []
    recover_step = streams.recover_step

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes.append(time.monotonic())
        return recover_step(*args, **kwargs)

    monkeypatch.setattr(streams, "recover_step", counted)
    notifier = Notifier(make_config(redis_url, lease_ms=60_000))
    notifier.pool.start()
    try:
        worker = notifier._new_worker(subscription.subscription_id, INVENTORY_SUBSCRIPTIONS)
        worker.start()
        wait_until(lambda: len(passes) >= 1, 5, "the first recovery pass")
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            worker.wake()  # new notifications for it, as notifier:ready would announce
            time.sleep(0.01)
        seen = [at for at in passes if at >= started]
        # One pass per PENDING_POLL_S (0.1 s) over the second, give or take a few; with a
        # pass and a timer per wake-up it was ~100 and growing.
        assert len(seen) <= 1.0 / streams.PENDING_POLL_S + 5, len(seen)
        worker.stop()
        worker.join(5)
    finally:
        notifier.pool.close()
        client.close()
