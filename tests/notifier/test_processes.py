"""The notifier as real processes: kill -9 in the middle of 10,000 notifications, two
processes sharing the work, Redis restarted mid-run, and the O-Cloud registration (R1)."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import redis
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import serialize
from devstack.processes import wait_until
from devstack.redis_server import RedisServer
from server.store import Change, InventoryStore, connect
from tests.notifier.conftest import (
    SERVICE_URI,
    NotifierProcess,
    metric_value,
    resource,
    subscribe,
)
from tests.notifier.receiver import Answer, Receiver


def test_kill_9_mid_delivery_loses_nothing_and_duplicates_under_one_percent(
    redis_url: str, receiver: Receiver, store: InventoryStore, tmp_path: Path
) -> None:
    paths = [f"/k{n}" for n in range(4)]
    for path in paths:
        subscribe(redis_url, receiver.url + path)
    store.apply("static", [resource(f"r-{n:04d}") for n in range(2500)])  # 4 x 2,500
    expected = 4 * 2500
    first = NotifierProcess(redis_url, tmp_path).start()
    try:
        wait_until(lambda: len(receiver.delivered) >= expected // 4, 60, "a quarter delivered")
        first.kill()
        at_kill = len(receiver.delivered)
        assert at_kill < expected, "killed while still delivering"
    finally:
        first.stop()
    second = NotifierProcess(redis_url, tmp_path).start()
    try:
        wait_until(
            lambda: len({r.headers["webhook-id"] for r in receiver.delivered}) >= expected,
            90,
            "every notification",
        )
    finally:
        second.stop()
    ids = [r.headers["webhook-id"] for r in receiver.delivered]
    assert len(set(ids)) == expected
    duplicates = len(ids) - expected
    assert duplicates < expected / 100, duplicates
    for path in paths:  # in order per subscription, duplicates aside
        seen = list(
            dict.fromkeys(
                r.json()["postObjectState"]["resourceId"] for r in receiver.delivered_to(path)
            )
        )
        assert seen == [f"r-{n:04d}" for n in range(2500)]


def test_two_processes_share_the_work_without_duplicates(
    redis_url: str, receiver: Receiver, store: InventoryStore, tmp_path: Path
) -> None:
    paths = [f"/p{n}" for n in range(8)]
    for path in paths:
        subscribe(redis_url, receiver.url + path)
    one = NotifierProcess(redis_url, tmp_path).start()
    two = NotifierProcess(redis_url, tmp_path).start()
    try:
        # Let the second one get its share before the changes start.
        time.sleep(1.0)
        for n in range(100):
            store.apply("static", [resource(f"r-{n:03d}")])
        for path in paths:
            receiver.wait_for(path, 100, timeout=30)
        delivered = [
            metric_value(p.metrics(), 'o2ims_webhook_delivery_total{outcome="delivered"}')
            for p in (one, two)
        ]
    finally:
        one.stop()
        two.stop()
    assert all(count > 0 for count in delivered), delivered
    assert sum(delivered) == 800
    ids = [r.headers["webhook-id"] for r in receiver.delivered]
    assert len(ids) == len(set(ids)) == 800, "nothing delivered twice"


def test_redis_restart_mid_run_resumes_delivery_with_subscriptions_intact(
    receiver: Receiver, tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis").start()
    try:
        subscription = subscribe(own.url, receiver.url + "/r")
        store = InventoryStore(connect(own.url))
        notifier = NotifierProcess(own.url, tmp_path).start()
        try:
            store.apply("static", [resource(f"before-{n}") for n in range(50)])
            receiver.wait_for("/r", 50)
            own.stop()
            wait_until(lambda: not notifier.ready(), 10, "/readyz to notice")
            time.sleep(1.0)
            own.start()
            wait_until(notifier.ready, 20, "/readyz after the restart")
            store.apply("static", [resource(f"after-{n}") for n in range(50)])
            received = receiver.wait_for("/r", 100, timeout=30)
        finally:
            notifier.stop()
        names = list(dict.fromkeys(r.json()["postObjectState"]["resourceId"] for r in received))
        assert names == [f"before-{n}" for n in range(50)] + [f"after-{n}" for n in range(50)]
        stored = redis.Redis.from_url(own.url, decode_responses=True)
        assert stored.hget(f"subscription:{subscription.subscription_id}", "callback") == (
            receiver.url + "/r"
        )
        assert stored.sismember("subscriptions", subscription.subscription_id)
        stored.close()
    finally:
        own.stop()


def test_registration_is_posted_and_retried_until_accepted(
    redis_url: str, receiver: Receiver, store: InventoryStore, tmp_path: Path
) -> None:
    answers = collections.deque([Answer(503), Answer(500), Answer(404)])
    refusals = len(answers)
    receiver.answer = lambda _r: answers.popleft() if answers else Answer(204)
    cloud = domain_pb2.OCloud(o_cloud_id="oc-1", global_cloud_id="gc-1", name="lab")
    notifier = NotifierProcess(
        redis_url,
        tmp_path,
        NETWEAVE_SMO_REGISTRATION_URL=receiver.url + "/mock_smo/v1/ocloud_observer",
    ).start()
    try:
        time.sleep(0.5)  # no O-Cloud known yet: nothing is sent
        assert receiver.requests == []
        store.apply(
            "static",
            [Change("o_cloud", "oc-1", serialize(domain_pb2.InventoryObject(o_cloud=cloud)))],
        )
        (accepted,) = receiver.wait_for("/mock_smo/v1/ocloud_observer", 1, timeout=30)
        time.sleep(0.3)
    finally:
        notifier.stop()
    assert len(receiver.requests) == refusals + 1, "retried until a 2xx, then no more"
    assert accepted.json() == {"globalCloudId": "gc-1", "oCloudId": "oc-1", "IMS_EP": SERVICE_URI}
