"""Delivery: retries through outages and 503s in order, isolation of slow subscribers,
dead letters and the dlq CLI, deletion, the SSRF re-check at delivery, metrics (checklist
S10, S11). Real Redis, real HTTP receivers, the notifier in-process (the CLI as a real
subprocess)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import redis

from devstack.processes import wait_until
from server.notifier import keys
from server.notifier.config import RetrySchedule
from server.store import InventoryStore
from server.subscriptions.callbacks import CallbackPolicy
from tests.notifier.conftest import (
    REPO,
    make_config,
    metric_value,
    pool,
    resource,
    running,
    subscribe,
    unsubscribe,
)
from tests.notifier.receiver import Answer, Received, Receiver


def _ids(received: list[Received]) -> list[str]:
    return [r.json()["postObjectState"]["resourceId"] for r in received]


def test_outage_then_503s_then_recovery_delivers_everything_in_order(
    redis_url: str, store: InventoryStore
) -> None:
    down = Receiver()  # not started yet: connection refused
    subscription_paths = ["/a", "/b"]
    for path in subscription_paths:
        subscribe(redis_url, down.url + path)
    expected = [f"r-{n:03d}" for n in range(30)]
    config = make_config(redis_url)
    with running(config) as notifier:
        store.apply("static", [pool()])
        for resource_id in expected:
            store.apply("static", [resource(resource_id)])
        wait_until(
            lambda: notifier.metrics.deliveries.labels("retried")._value.get() >= 4,
            10,
            "retries while the receiver is down",
        )
        unavailable = {"left": 6}
        refused: list[Received] = []

        def answer(request: Received) -> Answer:
            if unavailable["left"] > 0:
                unavailable["left"] -= 1
                refused.append(request)
                return Answer(503, headers={"Retry-After": "1"})
            return Answer(204)

        down.answer = answer
        down.start()
        try:
            for path in subscription_paths:
                received = down.wait_for(path, 31, timeout=30)
                assert _ids(received[1:]) == expected, "in order, none lost, none doubled"
            assert unavailable["left"] == 0
        finally:
            down.stop()
    # Retry-After: 1 was honoured, capped at the schedule's max_delay_s (0.5 s here): the
    # next attempt came no sooner. The jitter alone waits less than max_delay_s.
    assert len(refused) == 6
    for first in refused:
        retried_at = min(r.at for r in down.requests if r.path == first.path and r.at > first.at)
        assert retried_at - first.at >= config.retry.max_delay_s
    assert all(len(down.delivered_to(p)) == 31 for p in subscription_paths)


def test_a_slow_subscriber_does_not_delay_another(redis_url: str, store: InventoryStore) -> None:
    slow, fast = Receiver().start(), Receiver().start()
    # Each of the slow one's answers takes longer than any bound below: a fast delivery
    # that waited behind one could not meet them (a loaded machine's noise can).
    slow.answer = lambda _request: Answer(204, delay_s=2.0)
    try:
        subscribe(redis_url, slow.url + "/slow")
        subscribe(redis_url, fast.url + "/fast")
        with running(make_config(redis_url)):
            store.apply("static", [pool()])
            fast.wait_for("/fast", 1)
            changed_at = {}
            for n in range(20):
                changed_at[f"r-{n}"] = time.time()
                store.apply("static", [resource(f"r-{n}")])
                time.sleep(0.02)
            received = fast.wait_for("/fast", 21)
            latencies = [
                r.at - changed_at[i] for r, i in zip(received[1:], _ids(received[1:]), strict=True)
            ]
            # The slow one has done only a few in the meantime.
            assert len(slow.delivered_to("/slow")) < 5
        assert max(latencies) < 1.0, latencies
        assert statistics.median(latencies) < 0.25, latencies
    finally:
        slow.stop()
        fast.stop()


def _dlq(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.notifier", "dlq", *args],
        check=False,
        cwd=REPO,
        env={
            "REDIS_URL": redis_url,
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{REPO}:{REPO / 'gen' / 'python'}",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_permanent_4xx_is_dead_lettered_at_once_and_the_cli_replays_it(
    redis_url: str, receiver: Receiver, store: InventoryStore, raw: redis.Redis
) -> None:
    receiver.answer = lambda _request: Answer(410)
    subscription = subscribe(redis_url, receiver.url + "/gone")
    with running(make_config(redis_url)) as notifier:
        store.apply("static", [pool()])
        wait_until(lambda: raw.xlen(keys.DEAD_LETTERS_KEY) == 1, 10, "the dead letter")
        time.sleep(0.3)
        assert len(receiver.requests) == 1, "no retry on a permanent error"
        assert notifier.metrics.deliveries.labels("dead_lettered")._value.get() == 1

        listed = _dlq(redis_url, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        (summary,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert summary["subscriptionId"] == subscription.subscription_id
        assert summary["reason"] == "HTTP 410" and summary["attempts"] == "1"
        shown = _dlq(redis_url, "show", summary["id"])
        assert shown.returncode == 0, shown.stderr
        letter = json.loads(shown.stdout)
        assert letter["body"]["notificationEventType"] == 0
        assert letter["callback"] == receiver.url + "/gone" and letter["lastStatus"] == "410"
        assert _dlq(redis_url, "show", "1-1").returncode == 1

        receiver.answer = lambda _request: Answer(200)
        replayed = _dlq(redis_url, "replay", summary["id"])
        assert replayed.returncode == 0 and "replayed" in replayed.stdout, replayed
        (delivered,) = receiver.wait_for("/gone", 1)
        assert delivered.json()["notificationId"] == summary["notificationId"]
        assert raw.xlen(keys.DEAD_LETTERS_KEY) == 0


def test_an_exhausted_retry_schedule_dead_letters_and_replay_all_works(
    redis_url: str, receiver: Receiver, store: InventoryStore, raw: redis.Redis
) -> None:
    receiver.answer = lambda _request: Answer(503)
    subscribe(redis_url, receiver.url + "/down")
    tiny = RetrySchedule(base_s=0.02, max_delay_s=0.1, deadline_s=0.5)
    with running(make_config(redis_url, retry=tiny)):
        store.apply("static", [pool(), resource("r-1")])
        wait_until(lambda: raw.xlen(keys.DEAD_LETTERS_KEY) == 2, 15, "two dead letters")
        attempts = len(receiver.requests)
        assert attempts >= 4, "retried before giving up"
        letters: Any = raw.xrange(keys.DEAD_LETTERS_KEY)
        assert all(f["reason"].startswith("retries exhausted after") for _, f in letters)
        time.sleep(0.3)
        assert len(receiver.requests) == attempts, "nothing more once dead-lettered"

        receiver.answer = lambda _request: Answer(202)
        replayed = _dlq(redis_url, "replay", "--all")
        assert replayed.returncode == 0, replayed
        received = receiver.wait_for("/down", 2)
        assert [r.json()["notificationEventType"] for r in received] == [0, 0]


def test_deleting_a_subscription_stops_its_deliveries(
    redis_url: str, receiver: Receiver, store: InventoryStore, raw: redis.Redis
) -> None:
    receiver.answer = lambda _request: Answer(204, delay_s=0.1)
    subscription = subscribe(redis_url, receiver.url + "/bye")
    with running(make_config(redis_url)) as notifier:
        store.apply("static", [pool()] + [resource(f"r-{n}") for n in range(40)])
        receiver.wait_for("/bye", 3)
        assert unsubscribe(redis_url, subscription.subscription_id)
        at_delete = len(receiver.requests)
        time.sleep(1.0)
        # At most the POST already on the wire completes.
        assert len(receiver.requests) <= at_delete + 1
        assert not raw.exists(keys.queue_key(subscription.subscription_id))
        store.apply("static", [resource("after-delete")])
        time.sleep(0.5)
        assert len(receiver.requests) <= at_delete + 1
        assert not raw.exists(keys.queue_key(subscription.subscription_id)), "not recreated"
        wait_until(lambda: not notifier.scheduler.workers, 5, "the worker to go")


def test_policy_is_checked_again_at_delivery_refused_callbacks_are_dead_lettered(
    redis_url: str, receiver: Receiver, store: InventoryStore, raw: redis.Redis
) -> None:
    # Stored while loopback was allowed; the notifier now runs with the production policy.
    subscribe(redis_url, receiver.url + "/internal")
    with running(make_config(redis_url, callback_policy=CallbackPolicy(allow_http=True))) as n:
        store.apply("static", [pool()])
        wait_until(lambda: raw.xlen(keys.DEAD_LETTERS_KEY) == 1, 10, "the refused notification")
        assert n.metrics.deliveries.labels("refused")._value.get() == 1
    assert receiver.requests == []
    letters: Any = raw.xrange(keys.DEAD_LETTERS_KEY)
    ((_, letter),) = letters
    assert letter["reason"] == (
        "refused by the callback policy: host '127.0.0.1' resolves to 127.0.0.1, a loopback address"
    )


def test_metrics_on_the_ops_port(redis_url: str, receiver: Receiver, store: InventoryStore) -> None:
    subscribe(redis_url, receiver.url + "/m")
    with running(make_config(redis_url)) as notifier:
        store.apply("static", [pool(), resource("r-1")])
        receiver.wait_for("/m", 2)
        ops = f"http://127.0.0.1:{notifier.ops.port}"
        assert httpx.get(f"{ops}/healthz").status_code == 200
        ready = httpx.get(f"{ops}/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["redis"]["ok"]
        text = httpx.get(f"{ops}/metrics").text
    assert metric_value(text, 'o2ims_webhook_delivery_total{outcome="delivered"}') == 2
    assert metric_value(text, "o2ims_webhook_delivery_latency_seconds_count") == 2
    assert metric_value(text, "o2ims_webhook_queue_depth") == 0
    assert metric_value(text, "o2ims_webhook_dead_letters") == 0
    assert metric_value(text, "o2ims_notifier_matcher_leader") == 1


def test_concurrent_threads_keep_per_subscription_order(
    redis_url: str, receiver: Receiver, store: InventoryStore
) -> None:
    paths = [f"/s{n}" for n in range(4)]
    for path in paths:
        subscribe(redis_url, receiver.url + path)
    with running(make_config(redis_url)):
        store.apply("static", [pool()])
        writers = [
            threading.Thread(
                target=lambda w=w: [
                    store.apply("static", [resource(f"w{w}-{n:03d}")]) for n in range(50)
                ]
            )
            for w in range(3)
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        events = [
            e.object_id for e in store.read_events("0-0", 0, count=1000) if e.kind == "resource"
        ]
        for path in paths:
            assert _ids(receiver.wait_for(path, 151)[1:]) == events
