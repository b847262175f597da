"""A subscriber answering 3xx: the redirect is not followed, the notification is
dead-lettered at once with a reason naming the status and where it pointed (credentials
masked), and counted as `redirected`. The probe at creation says the same. A real
receiver, the notifier in-process, real Redis."""

from __future__ import annotations

import time
from typing import Any

import redis

from devstack.processes import wait_until
from server.notifier import keys
from server.store import InventoryStore
from server.subscriptions.callbacks import CallbackPolicy, parse_cidrs
from tests.notifier.conftest import make_config, pool, running, subscribe
from tests.notifier.receiver import Answer, Received, Receiver
from tests.notifier.test_callback_policy import create, refusal, subscriptions

REDIRECTS = (301, 302, 307, 308)


def redirecting(receiver: Receiver) -> None:
    """/r<status> answers <status> pointing at /followed on the same receiver."""

    def answer(request: Received) -> Answer:
        if request.path.startswith("/r3"):
            location = f"{receiver.url}/followed?access_token=s3cret&n=1"
            return Answer(int(request.path[2:5]), headers={"Location": location})
        return Answer(204)

    receiver.answer = answer


def test_a_redirect_is_dead_lettered_at_once_and_never_followed(
    redis_url: str, receiver: Receiver, store: InventoryStore, raw: redis.Redis
) -> None:
    redirecting(receiver)
    for status in REDIRECTS:
        subscribe(redis_url, f"{receiver.url}/r{status}")
    with running(make_config(redis_url)) as notifier:
        store.apply("static", [pool()])
        wait_until(
            lambda: raw.xlen(keys.DEAD_LETTERS_KEY) == len(REDIRECTS), 15, "four dead letters"
        )
        time.sleep(0.3)  # a retry or a followed redirect would arrive meanwhile
        deliveries = notifier.metrics.deliveries
        assert deliveries.labels("redirected")._value.get() == len(REDIRECTS)
        assert deliveries.labels("dead_lettered")._value.get() == 0
        assert deliveries.labels("retried")._value.get() == 0
    assert sorted(r.path for r in receiver.requests) == [f"/r{s}" for s in REDIRECTS]
    letters: Any = raw.xrange(keys.DEAD_LETTERS_KEY)
    reasons = {fields["lastStatus"]: fields["reason"] for _id, fields in letters}
    for status in REDIRECTS:
        assert reasons[str(status)] == (
            f"the callback answered {status} (redirect to {receiver.url}/followed"
            "?access_token=[redacted]&n=1); redirects are not followed"
        )


def test_the_probe_names_the_redirect(redis_url: str, receiver: Receiver) -> None:
    redirecting(receiver)
    policy = CallbackPolicy(
        allow_http=True, allowed_networks=parse_cidrs("127.0.0.0/8"), probe=True
    )
    with subscriptions(redis_url, policy) as stub:
        detail = refusal(stub, f"{receiver.url}/r302")
        assert create(stub, f"{receiver.url}/ok")
    assert (
        f"answered the validation GET with 302 (redirect to {receiver.url}/followed"
        "?access_token=[redacted]&n=1); redirects are not followed"
    ) in detail
    assert [r.path for r in receiver.requests] == ["/r302", "/ok"]
