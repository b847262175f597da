"""Alarm notifications through the whole stack (real Redis, adapter, core, notifier, Envoy):
an alarm subscription made over REST, an alarm raised by the alarm store as a source
writes it, acknowledged over REST, and signed AlarmEventNotifications (NEW, then
ACKNOWLEDGE) at a real HTTP receiver (checklist M2, M4, M6, S12). Invalid filters are the
same precise 400 / INVALID_ARGUMENT as an invalid inventory subscription filter."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from o2ims.monitoring.v1 import monitoring_pb2 as mon
from o2ims.monitoring.v1 import monitoring_pb2_grpc as mon_grpc

from devstack.processes import wait_until
from devstack.stack import LocalStack
from server.alarms.store import AlarmStore
from server.store import connect
from tests.e2e.conftest import problem
from tests.e2e.test_alarm_patch import MANUAL, seed
from tests.notifier.receiver import Receiver, verify_signature

MONITORING = "/o2ims-infrastructureMonitoring/v1"
ALARM_SUBSCRIPTIONS = f"{MONITORING}/alarmSubscriptions"
INVENTORY_SUBSCRIPTIONS = "/o2ims-infrastructureInventory/v1/subscriptions"


@pytest.fixture(scope="module")
def alarms(stack: LocalStack) -> Iterator[AlarmStore]:
    client = connect(stack.redis_url)
    yield AlarmStore(client)
    client.close()


def webhook_secret(stack: LocalStack) -> bytes:
    return base64.b64decode(stack.webhook_secret.removeprefix("whsec_"))


def test_rest_alarm_subscription_receives_new_then_acknowledge_signed(
    stack: LocalStack, rest: httpx.Client, receiver: Receiver, alarms: AlarmStore
) -> None:
    created = rest.post(
        ALARM_SUBSCRIPTIONS,
        json={"callback": f"{receiver.url}/alarms", "consumerSubscriptionId": "smo-e2e"},
    )
    assert created.status_code == 201, created.text
    subscription_id = created.json()["alarmSubscriptionId"]

    alarm_id = seed(alarms, MANUAL)
    wait_until(lambda: len(receiver.delivered_to("/alarms")) >= 1, 30, "the NEW notification")
    acknowledged = rest.patch(
        f"{MONITORING}/alarms/{alarm_id}",
        json={"alarmAcknowledged": True},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert acknowledged.status_code == 200, acknowledged.text
    wait_until(lambda: len(receiver.delivered_to("/alarms")) >= 2, 30, "the ACKNOWLEDGE")

    received = receiver.delivered_to("/alarms")
    new, ack = (r.json() for r in received)
    assert (new["notificationEventType"], ack["notificationEventType"]) == (0, 3)
    cloud = rest.get("/o2ims-infrastructureInventory/v1").json()
    record = rest.get(f"{MONITORING}/alarms/{alarm_id}").json()
    for notification in (new, ack):
        assert notification["globalCloudID"] == cloud["globalCloudId"]
        assert notification["consumerSubscriptionId"] == "smo-e2e"
        assert notification["objectRef"] == f"{MONITORING}/alarms/{alarm_id}"
        assert notification["alarmEventRecordId"] == alarm_id
        assert uuid.UUID(notification["notificationId"])
    assert new["alarmAcknowledged"] is False and "alarmAcknowledgeTime" not in new
    # The ACKNOWLEDGE carries the record as a GET shows it after the PATCH.
    ack_record = {k: v for k, v in ack.items() if k in record}
    assert ack_record == record
    for request in received:  # signed as inventory notifications are
        assert request.headers["webhook-id"] == request.json()["notificationId"]
        assert verify_signature(webhook_secret(stack), request)
    assert rest.delete(f"{ALARM_SUBSCRIPTIONS}/{subscription_id}").status_code == 200


def _grpc_violations(stack: LocalStack, expression: str) -> tuple[Any, str, list[Any]]:
    """(status code, ErrorInfo reason, BadRequest violations) of a gRPC create."""
    with (
        grpc.insecure_channel(stack.grpc_address) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        mon_grpc.MonitoringServiceStub(channel).CreateAlarmSubscription(
            mon.CreateAlarmSubscriptionRequest(
                alarm_subscription=mon.AlarmSubscriptionInfo(
                    callback="http://127.0.0.1:9/never", filter=expression
                )
            ),
            timeout=5,
        )
    status = rpc_status.from_call(raised.value)
    assert status is not None
    reason, violations = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(bad.field_violations)
    return raised.value.code(), reason, violations


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("(eq,WrongAttrName,anyvalue)", "unknown attribute 'WrongAttrName'"),
        ("(eq,perceivedSeverity,0", "missing ')'"),
        ("(eq,perceivedSeverity,high)", "not an integer"),
        ("(eq,alarmAcknowledged,maybe)", "not true or false"),
        ("RAISED", "NEW, CHANGE, CLEAR, ACKNOWLEDGE"),
    ],
)
def test_an_invalid_alarm_filter_is_400_and_invalid_argument_naming_the_problem(
    stack: LocalStack, rest: httpx.Client, receiver: Receiver, expression: str, says: str
) -> None:
    callback = f"{receiver.url}/invalid"
    body = problem(
        rest.post(ALARM_SUBSCRIPTIONS, json={"callback": callback, "filter": expression}), 400
    )
    assert says in body["detail"], body
    assert "filter" in body["detail"], body
    code, reason, violations = _grpc_violations(stack, expression)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert reason == "INVALID_ALARM_SUBSCRIPTION"
    assert [v.field for v in violations] == ["filter"]
    assert says in violations[0].description


def test_an_invalid_alarm_filter_reads_like_an_invalid_inventory_filter(
    rest: httpx.Client, receiver: Receiver
) -> None:
    body = {"callback": f"{receiver.url}/same", "filter": "(eq,WrongAttrName,anyvalue)"}
    inventory = problem(rest.post(INVENTORY_SUBSCRIPTIONS, json=body), 400)
    alarm = problem(rest.post(ALARM_SUBSCRIPTIONS, json=body), 400)
    assert set(alarm) == set(inventory)
    assert alarm["title"] == inventory["title"]
    for found in (inventory, alarm):
        assert "unknown attribute 'WrongAttrName'" in found["detail"]


@pytest.mark.parametrize(
    "expression",
    ["NEW", "(eq,perceivedSeverity,0)", "(eq,resourceTypeId,x);(eq,alarmAcknowledged,false)"],
)
def test_valid_alarm_filters_are_created_and_echoed(
    stack: LocalStack, receiver: Receiver, expression: str
) -> None:
    # Over gRPC: the OpenAPI schema still lists only the event types (the proto's
    # allowed_values on AlarmSubscriptionInfo.filter), so REST responses would break it.
    with grpc.insecure_channel(stack.grpc_address) as channel:
        monitoring = mon_grpc.MonitoringServiceStub(channel)
        created = monitoring.CreateAlarmSubscription(
            mon.CreateAlarmSubscriptionRequest(
                alarm_subscription=mon.AlarmSubscriptionInfo(
                    callback=f"{receiver.url}/ok", filter=expression
                )
            ),
            timeout=5,
        )
        assert created.filter == expression
        monitoring.DeleteAlarmSubscription(
            mon.DeleteAlarmSubscriptionRequest(alarm_subscription_id=created.alarm_subscription_id),
            timeout=5,
        )
