"""The correlation id of a call to a real core process (`python -m server`, real
redis-server): in the core's log lines of the call, its audit record, what the call stored
in Redis, and the call's trailing metadata; and the log level changed at run time."""

from __future__ import annotations

import re
import signal
import uuid
from typing import Any

import grpc
import pytest
import redis
from o2ims.subscriptions.v1 import subscriptions_pb2 as sub
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as sub_grpc

from devstack.processes import wait_until
from netweave import correlation
from netweave.headers import CORRELATION_ID_HEADER
from server.alarms.store import AlarmStore
from server.store import connect
from tests.core_process import CoreProcess

CREATE = "/o2ims.subscriptions.v1.SubscriptionService/CreateSubscription"


def create_subscription(
    core: CoreProcess, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[str, dict[str, str]]:
    """(the new subscription's id, the call's trailing metadata)."""
    assert core.channel is not None
    stub = sub_grpc.SubscriptionServiceStub(core.channel)
    created, call = stub.CreateSubscription.with_call(
        sub.CreateSubscriptionRequest(
            api_version="v1",
            subscription=sub.InventorySubscriptionInfo(
                callback=f"http://127.0.0.1:9/{uuid.uuid4().hex}"
            ),
        ),
        metadata=metadata,
        timeout=10,
    )
    return created.subscription_id, {item.key: item.value for item in call.trailing_metadata()}


def records_of(core: CoreProcess, event: str) -> list[dict[str, Any]]:
    return [record for record in core.records() if record["event"] == event]


def test_a_callers_correlation_id_follows_the_call_everywhere(
    core: CoreProcess, redis_url: str
) -> None:
    given = f"smo-{uuid.uuid4().hex[:12]}"
    subscription_id, trailers = create_subscription(core, ((CORRELATION_ID_HEADER, given),))

    assert trailers[CORRELATION_ID_HEADER] == given
    stored = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert stored.hget(f"subscription:{subscription_id}", "correlationId") == given
    finally:
        stored.close()
    wait_until(lambda: bool(records_of(core, "subscription_created")), 5, "the core's log line")
    [logged] = records_of(core, "subscription_created")
    assert logged["correlation_id"] == given
    assert logged["subscription_id"] == subscription_id
    assert logged["component"] == "core"
    wait_until(lambda: bool(core.audit()), 5, "the audit record")
    [audited] = [record for record in core.audit() if record["operation"] == CREATE]
    assert audited["correlation_id"] == given


@pytest.mark.parametrize(
    "malformed",
    ["-starts-with-a-dash", "has space", "x" * 129, "semi;colon"],
)
def test_a_malformed_correlation_id_is_replaced_by_a_generated_one(
    core: CoreProcess, redis_url: str, malformed: str
) -> None:
    subscription_id, trailers = create_subscription(core, ((CORRELATION_ID_HEADER, malformed),))

    generated = trailers[CORRELATION_ID_HEADER]
    assert generated != malformed
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    stored = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert stored.hget(f"subscription:{subscription_id}", "correlationId") == generated
    finally:
        stored.close()
    assert malformed not in core.stderr()
    wait_until(lambda: bool(records_of(core, "subscription_created")), 5, "the core's log line")
    assert records_of(core, "subscription_created")[0]["correlation_id"] == generated


def test_a_call_without_one_gets_one_and_a_refused_call_returns_it_too(
    core: CoreProcess,
) -> None:
    _, trailers = create_subscription(core)
    assert re.fullmatch(r"[0-9a-f]{32}", trailers[CORRELATION_ID_HEADER])

    assert core.channel is not None
    stub = sub_grpc.SubscriptionServiceStub(core.channel)
    given = "refused-call-1"
    with pytest.raises(grpc.RpcError) as refused:
        stub.CreateSubscription(
            sub.CreateSubscriptionRequest(
                api_version="v1", subscription=sub.InventorySubscriptionInfo(callback="nope")
            ),
            metadata=((CORRELATION_ID_HEADER, given),),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailing = dict(refused.value.trailing_metadata())
    assert trailing[CORRELATION_ID_HEADER] == given
    # The error's details survive beside it.
    assert "grpc-status-details-bin" in trailing


def test_the_log_level_changes_at_run_time_with_sigusr1_and_sigusr2(core: CoreProcess) -> None:
    core.signal(signal.SIGUSR2)  # INFO -> WARNING
    wait_until(lambda: bool(records_of(core, "log_level_changed")), 5, "the level change")
    quiet, _ = create_subscription(core)

    core.signal(signal.SIGUSR1)  # WARNING -> INFO
    wait_until(lambda: len(records_of(core, "log_level_changed")) == 2, 5, "the second change")
    heard, _ = create_subscription(core)

    changes = records_of(core, "log_level_changed")
    assert [(c["level_from"], c["level_to"]) for c in changes] == [
        ("info", "warning"),
        ("warning", "info"),
    ]
    wait_until(
        lambda: bool(records_of(core, "subscription_created")), 5, "the second create's line"
    )
    logged = {r["subscription_id"] for r in records_of(core, "subscription_created")}
    assert logged == {heard}, "at WARNING the first create logged nothing"
    assert quiet not in core.stderr()


def test_an_alarm_acknowledged_or_cleared_in_a_call_stores_the_id_in_its_event(
    redis_url: str,
) -> None:
    client = connect(redis_url)
    alarms = AlarmStore(client)
    try:
        for alarm_id in ("a-1", "a-2", "a-3"):
            alarms.put_record(
                alarm_id,
                {
                    "resourceTypeID": "rt",
                    "resourceID": "r",
                    "alarmDefinitionID": "def",
                    "probableCauseID": "cause",
                    "perceivedSeverity": 2,
                },
            )
        with correlation.bound("ack-call"):
            assert alarms.acknowledge("a-1").outcome == "OK"
        with correlation.bound("clear-call"):
            assert alarms.clear("a-2", definition_id="def").outcome == "OK"
        assert alarms.acknowledge("a-3").outcome == "OK"  # outside any call

        events = {
            (fields["alarmEventRecordId"], fields["event"]): fields for _, fields in alarms.events()
        }
    finally:
        client.close()
    assert events[("a-1", "ACKNOWLEDGE")]["correlationId"] == "ack-call"
    assert events[("a-2", "CLEAR")]["correlationId"] == "clear-call"
    assert "correlationId" not in events[("a-3", "ACKNOWLEDGE")]
    assert "correlationId" not in events[("a-1", "NEW")]
    # The revisions still count up by one (the alarm view relies on it).
    revisions = sorted(int(fields["revision"]) for fields in events.values())
    assert revisions == list(range(revisions[0], revisions[0] + len(revisions)))
