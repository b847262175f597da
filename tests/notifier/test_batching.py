"""Acknowledging in batches (server/notifier/delivery.py, "Acknowledging in batches"): the
bounds it documents hold, nothing stays unacknowledged while a worker waits, and the head's
retry state still survives a restart. Real Redis, real receivers, the notifier in-process."""

from __future__ import annotations

import time
from typing import Any

import redis

from devstack.processes import wait_until
from server.notifier import keys
from server.notifier.config import RetrySchedule
from server.notifier.delivery import ACK_EVERY, READ_COUNT
from server.store import InventoryStore
from tests.notifier.conftest import (
    make_config,
    pool,
    resource,
    running,
    subscribe,
    unsubscribe,
)
from tests.notifier.receiver import Answer, Receiver


def test_deleting_a_subscription_mid_batch_stops_it_within_ack_every_posts(
    redis_url: str, receiver: Receiver, store: InventoryStore, raw: redis.Redis
) -> None:
    # Quick answers: the worker is in the middle of a read batch, checking (acknowledging)
    # every ACK_EVERY deliveries or ACK_INTERVAL_S, not before every POST.
    receiver.answer = lambda _request: Answer(204, delay_s=0.002)
    subscription = subscribe(redis_url, receiver.url + "/mid")
    queued = 3 * READ_COUNT
    with running(make_config(redis_url)):
        store.apply("static", [pool()] + [resource(f"r-{n:03d}") for n in range(queued - 1)])
        receiver.wait_for("/mid", 40)
        assert unsubscribe(redis_url, subscription.subscription_id)
        at_delete = len(receiver.requests)
        time.sleep(1.0)
        after = len(receiver.requests) - at_delete
        assert after <= ACK_EVERY, f"{after} POSTs after the deletion"
        assert len(receiver.requests) < queued, "the rest of the queue was not delivered"
        assert not raw.exists(keys.queue_key(subscription.subscription_id))


def test_delivered_notifications_are_acknowledged_before_the_worker_waits(
    redis_url: str, receiver: Receiver, store: InventoryStore, raw: redis.Redis
) -> None:
    subscription = subscribe(redis_url, receiver.url + "/acked")
    queue = keys.queue_key(subscription.subscription_id)
    with running(make_config(redis_url)):
        store.apply("static", [pool()] + [resource(f"r-{n}") for n in range(ACK_EVERY * 3 + 5)])
        receiver.wait_for("/acked", ACK_EVERY * 3 + 6)
        # The worker now blocks for new entries: nothing it delivered may stay pending.
        wait_until(
            lambda: (
                raw.xlen(queue) == 0
                and int(raw.xpending(queue, keys.DELIVER_GROUP)["pending"]) == 0
            ),
            2,
            "every delivered entry acknowledged and removed",
        )


def test_the_heads_retry_state_survives_a_restart(
    redis_url: str, receiver: Receiver, store: InventoryStore, raw: redis.Redis
) -> None:
    receiver.answer = lambda _request: Answer(503)
    subscription = subscribe(redis_url, receiver.url + "/retry")
    retry_key = keys.retry_key(subscription.subscription_id)
    schedule = RetrySchedule(base_s=0.05, max_delay_s=0.1, deadline_s=60.0)
    with running(make_config(redis_url, retry=schedule)):
        store.apply("static", [pool()])
        wait_until(
            lambda: int(raw.hget(retry_key, "attempts") or 0) >= 2, 10, "two failed attempts"
        )
    state: Any = raw.hgetall(retry_key)
    attempts = int(state["attempts"])
    # As if the first failure had been long ago: the restarted notifier, reading the
    # entry again, must take the stored schedule over, make one more attempt and give up.
    raw.hset(retry_key, "firstFailureMs", int(time.time() * 1000) - 61_000)
    with running(make_config(redis_url, retry=schedule, lease_ms=300)):
        wait_until(lambda: raw.xlen(keys.DEAD_LETTERS_KEY) == 1, 10, "the dead letter")
    letters: Any = raw.xrange(keys.DEAD_LETTERS_KEY)
    ((_, letter),) = letters
    assert letter["attempts"] == str(attempts + 1)
    assert letter["reason"].startswith(f"retries exhausted after {attempts + 1} attempts")
    assert not raw.exists(retry_key)
