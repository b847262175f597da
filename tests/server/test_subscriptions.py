"""Inventory and alarm subscriptions, and the alarm read side, through a real in-process
gRPC server on a real redis-server."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import redis
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from o2ims.monitoring.v1 import monitoring_pb2 as mon
from o2ims.monitoring.v1 import monitoring_pb2_grpc as mon_grpc
from o2ims.subscriptions.v1 import subscriptions_pb2 as sub
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as sub_grpc

from devstack.redis_server import RedisServer
from netweave.errors import ERROR_DOMAIN
from server.alarms.store import AlarmStore
from server.alarms.view import AlarmView
from server.config import GatewayConfig
from server.listing import Lister, ListingSettings
from server.monitoring_v1 import MonitoringV1Servicer
from server.store import EVENTS_KEY, connect
from server.subscriptions import InventorySubscriptionServicer, SubscriptionStore
from server.subscriptions.rest import HTTP_STATUS_HEADER
from server.subscriptions.store import INVENTORY_SUBSCRIPTIONS
from tests.core_server import open_access_server, running_alarm_view

SERVICE_URI = "https://o2ims.example.net:8443"
CALLBACK = "https://smo.example.net/o2ims/notifications"
INVENTORY_PATH = f"{SERVICE_URI}/o2ims-infrastructureInventory"
MONITORING_PATH = f"{SERVICE_URI}/o2ims-infrastructureMonitoring"


@dataclass
class Core:
    """Both servicers on a real gRPC server, and a raw client of their Redis."""

    subscriptions: sub_grpc.SubscriptionServiceStub
    monitoring: mon_grpc.MonitoringServiceStub
    redis: redis.Redis
    alarm_view: AlarmView


@contextmanager
def serve(redis_url: str, duplicate_status: int = 400) -> Iterator[Core]:
    # Every caller is an admin here; ownership is tested in test_subscription_ownership.py.
    server = open_access_server(max_workers=16)
    client = connect(redis_url)
    store = SubscriptionStore(client)
    lister = Lister(ListingSettings(secret=b"test-secret"))
    with running_alarm_view(redis_url) as view:
        sub_grpc.add_SubscriptionServiceServicer_to_server(
            InventorySubscriptionServicer(store, SERVICE_URI, duplicate_status, lister), server
        )
        mon_grpc.add_MonitoringServiceServicer_to_server(
            MonitoringV1Servicer(
                store,
                AlarmStore(client, view=view),
                SERVICE_URI,
                duplicate_status,
                lister,
                view=view,
            ),
            server,
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        raw = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            yield Core(
                sub_grpc.SubscriptionServiceStub(channel),
                mon_grpc.MonitoringServiceStub(channel),
                raw,
                view,
            )
        finally:
            channel.close()
            server.stop(grace=None).wait()
            raw.close()
            client.close()


@pytest.fixture
def core(redis_url: str) -> Iterator[Core]:
    with serve(redis_url) as running:
        yield running


def inventory_request(
    api_version: str = "v1", callback: str = CALLBACK, **fields: str
) -> sub.CreateSubscriptionRequest:
    return sub.CreateSubscriptionRequest(
        api_version=api_version,
        subscription=sub.InventorySubscriptionInfo(callback=callback, **fields),
    )


def alarm_request(callback: str = CALLBACK, **fields: str) -> mon.CreateAlarmSubscriptionRequest:
    return mon.CreateAlarmSubscriptionRequest(
        alarm_subscription=mon.AlarmSubscriptionInfo(callback=callback, **fields)
    )


def stored_hash(core: Core, key: str) -> dict[str, str]:
    return cast(dict[str, str], core.redis.hgetall(key))


def metadata(call: Any) -> dict[str, str]:
    return {item.key: item.value for item in call.initial_metadata()}


@dataclass
class Failure:
    """A failed call: its code and its google.rpc details, unpacked."""

    code: grpc.StatusCode
    message: str
    error_info: error_details_pb2.ErrorInfo
    resource_info: error_details_pb2.ResourceInfo | None
    violations: dict[str, str]


def failure(call: Callable[[], Any]) -> Failure:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error: Any = raised.value
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status details: {error}"
    found: dict[str, Any] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.ResourceInfo,
            error_details_pb2.BadRequest,
        ):
            if detail.Is(kind.DESCRIPTOR):
                unpacked = kind()
                detail.Unpack(unpacked)
                found[kind.DESCRIPTOR.name] = unpacked
    assert "ErrorInfo" in found, status
    assert found["ErrorInfo"].domain == ERROR_DOMAIN
    bad_request = found.get("BadRequest")
    return Failure(
        code=error.code(),
        message=status.message,
        error_info=found["ErrorInfo"],
        resource_info=found.get("ResourceInfo"),
        violations={
            v.field: v.description for v in (bad_request.field_violations if bad_request else [])
        },
    )


# --- inventory subscriptions ---------------------------------------------------------------


@pytest.mark.parametrize("major", ["v1", "v2"])
def test_create_stores_the_subscription_and_marks_201_with_location(core: Core, major: str) -> None:
    created, call = core.subscriptions.CreateSubscription.with_call(
        inventory_request(major, consumer_subscription_id="smo-42", filter="(eq,name,x)")
    )
    assert uuid.UUID(created.subscription_id).version == 4
    assert (created.callback, created.consumer_subscription_id, created.filter) == (
        CALLBACK,
        "smo-42",
        "(eq,name,x)",
    )
    headers = metadata(call)
    assert headers[HTTP_STATUS_HEADER] == "201"
    assert (
        headers["location"] == f"{INVENTORY_PATH}/{major}/subscriptions/{created.subscription_id}"
    )

    stored = stored_hash(core, f"subscription:{created.subscription_id}")
    assert stored["subscriptionId"] == created.subscription_id
    assert stored["callback"] == CALLBACK
    assert stored["filter"] == "(eq,name,x)"
    assert stored["consumerSubscriptionId"] == "smo-42"
    assert stored["apiVersion"] == major
    assert stored["createdAt"].endswith("Z")
    assert core.redis.smembers("subscriptions") == {created.subscription_id}
    assert core.redis.ttl(f"subscription:{created.subscription_id}") == -1, "no TTL"


def test_unset_optional_fields_are_left_out(core: Core) -> None:
    created = core.subscriptions.CreateSubscription(inventory_request())
    as_json = json_format.MessageToDict(created, always_print_fields_with_no_presence=True)
    assert as_json == {"subscriptionId": created.subscription_id, "callback": CALLBACK}
    assert not created.HasField("filter")
    assert not created.HasField("consumer_subscription_id")


def test_subscription_records_the_inventory_event_position_at_creation(core: Core) -> None:
    before = core.subscriptions.CreateSubscription(inventory_request(consumer_subscription_id="a"))
    assert core.redis.hget(f"subscription:{before.subscription_id}", "eventsAfter") == "0-0"
    entry = core.redis.xadd(EVENTS_KEY, {"version": 1})
    after = core.subscriptions.CreateSubscription(inventory_request(consumer_subscription_id="b"))
    assert core.redis.hget(f"subscription:{after.subscription_id}", "eventsAfter") == entry


def test_one_collection_is_listed_read_and_deleted_under_both_majors(core: Core) -> None:
    first = core.subscriptions.CreateSubscription(inventory_request("v1"))
    second = core.subscriptions.CreateSubscription(
        inventory_request("v2", callback="https://smo.example.net:8443/v2-hook")
    )
    for major in ("v1", "v2", ""):
        listed, call = core.subscriptions.ListSubscriptions.with_call(
            sub.ListSubscriptionsRequest(api_version=major)
        )
        assert metadata(call)["x-o2ims-collection"] == "subscriptions"
        assert [s.subscription_id for s in listed.subscriptions] == [
            first.subscription_id,
            second.subscription_id,
        ], "oldest first"
        assert listed.next_page_token == ""

    got = core.subscriptions.GetSubscription(
        sub.GetSubscriptionRequest(api_version="v2", subscription_id=first.subscription_id)
    )
    assert got == first
    # The major it was created through is kept: notifications will use that JSON model.
    assert core.redis.hget(f"subscription:{second.subscription_id}", "apiVersion") == "v2"

    core.subscriptions.DeleteSubscription(
        sub.DeleteSubscriptionRequest(api_version="v2", subscription_id=first.subscription_id)
    )
    gone = failure(
        lambda: core.subscriptions.GetSubscription(
            sub.GetSubscriptionRequest(api_version="v1", subscription_id=first.subscription_id)
        )
    )
    assert gone.code == grpc.StatusCode.NOT_FOUND
    assert gone.error_info.reason == "SUBSCRIPTION_NOT_FOUND"
    assert gone.error_info.metadata["subscriptionId"] == first.subscription_id
    assert gone.resource_info is not None
    assert gone.resource_info.resource_name == first.subscription_id
    listed = core.subscriptions.ListSubscriptions(sub.ListSubscriptionsRequest())
    assert [s.subscription_id for s in listed.subscriptions] == [second.subscription_id]
    # Every key of the deleted subscription is gone, the dedupe entry included.
    assert not core.redis.exists(f"subscription:{first.subscription_id}")
    assert core.redis.smembers("subscriptions") == {second.subscription_id}
    assert len(list(core.redis.scan_iter("subscription_dedupe:*"))) == 1


def assert_not_found(
    calls: tuple[Callable[[], Any], ...], reason: str, id_field: str, subscription_id: str
) -> None:
    """Each call fails NOT_FOUND, naming the subscription in its message and ErrorInfo."""
    for call in calls:
        problem = failure(call)
        assert problem.code == grpc.StatusCode.NOT_FOUND
        assert problem.error_info.reason == reason
        assert problem.error_info.metadata[id_field] == subscription_id
        assert subscription_id in problem.message


def test_unknown_subscription_is_not_found_for_get_and_delete(core: Core) -> None:
    unknown = str(uuid.uuid4())
    assert_not_found(
        (
            lambda: core.subscriptions.GetSubscription(
                sub.GetSubscriptionRequest(subscription_id=unknown)
            ),
            lambda: core.subscriptions.DeleteSubscription(
                sub.DeleteSubscriptionRequest(subscription_id=unknown)
            ),
        ),
        "SUBSCRIPTION_NOT_FOUND",
        "subscriptionId",
        unknown,
    )


def test_missing_callback_is_invalid_argument_with_a_field_violation(core: Core) -> None:
    problem = failure(lambda: core.subscriptions.CreateSubscription(inventory_request(callback="")))
    assert problem.code == grpc.StatusCode.INVALID_ARGUMENT
    assert problem.error_info.reason == "INVALID_SUBSCRIPTION"
    assert set(problem.violations) == {"callback"}
    assert "required" in problem.violations["callback"]
    assert problem.message.startswith("callback: is required")
    assert core.redis.dbsize() == 0, "nothing stored"


@pytest.mark.parametrize(
    ("callback", "complaint"),
    [
        ("smo.example.net/notify", "absolute http or https URL"),
        ("/o2ims/notify", "absolute http or https URL"),
        ("ftp://smo.example.net/notify", "absolute http or https URL"),
        ("https://", "absolute http or https URL"),
        ("https://:8443/notify", "must name a host"),
        ("https://smo.example.net:99999/notify", "invalid port"),
        ("https://smo.example.net/no tify", "spaces or control characters"),
        ("https://smo.example.net/" + "a" * 2100, "at most 2048 characters"),
    ],
)
def test_callback_must_be_an_absolute_http_url(core: Core, callback: str, complaint: str) -> None:
    problem = failure(
        lambda: core.subscriptions.CreateSubscription(inventory_request(callback=callback))
    )
    assert problem.code == grpc.StatusCode.INVALID_ARGUMENT
    assert complaint in problem.violations["callback"]


def test_client_supplied_subscription_id_is_rejected(core: Core) -> None:
    problem = failure(
        lambda: core.subscriptions.CreateSubscription(
            inventory_request(subscription_id=str(uuid.uuid4()))
        )
    )
    assert problem.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "assigned by the server" in problem.violations["subscriptionId"]
    assert core.redis.keys() in ([], ["subscriptions:generation"])


def test_every_violation_is_reported_at_once(core: Core) -> None:
    problem = failure(
        lambda: core.subscriptions.CreateSubscription(
            inventory_request(
                callback="", subscription_id="mine", consumer_subscription_id="x" * 300
            )
        )
    )
    assert set(problem.violations) == {"subscriptionId", "callback", "consumerSubscriptionId"}


def test_inventory_filter_is_stored_as_given(core: Core) -> None:
    # Parsed at creation, but stored verbatim (spacing and quoting as the client wrote it).
    expression = "(eq,resourceTypeId,x);(cont,description,'a, b')"
    created = core.subscriptions.CreateSubscription(inventory_request(filter=expression))
    assert created.filter == expression
    assert core.redis.hget(f"subscription:{created.subscription_id}", "filter") == expression


@pytest.mark.parametrize("major", ["", "v3", "V1"])
def test_create_needs_a_served_major(core: Core, major: str) -> None:
    problem = failure(lambda: core.subscriptions.CreateSubscription(inventory_request(major)))
    assert problem.code == grpc.StatusCode.INVALID_ARGUMENT
    assert problem.violations == {"api_version": "must be one of v1, v2"}


def test_reads_reject_an_unserved_major(core: Core) -> None:
    problem = failure(
        lambda: core.subscriptions.ListSubscriptions(sub.ListSubscriptionsRequest(api_version="v9"))
    )
    assert problem.code == grpc.StatusCode.INVALID_ARGUMENT


def test_duplicate_is_failed_precondition_by_default(core: Core) -> None:
    request = inventory_request(consumer_subscription_id="smo-1", filter="(eq,name,a)")
    first = core.subscriptions.CreateSubscription(request)
    for again in (
        request,
        inventory_request("v2", consumer_subscription_id="smo-1", filter="(eq,name,a)"),
    ):
        problem = failure(functools.partial(core.subscriptions.CreateSubscription, again))
        # FAILED_PRECONDITION is what the REST edge answers as 400 (the conformance tests).
        assert problem.code == grpc.StatusCode.FAILED_PRECONDITION
        assert problem.error_info.reason == "DUPLICATE_SUBSCRIPTION"
        assert problem.error_info.metadata["subscriptionId"] == first.subscription_id
        assert problem.resource_info is not None
        assert problem.resource_info.resource_name == first.subscription_id
        assert first.subscription_id in problem.message

    # Not a duplicate: any of callback, filter or consumerSubscriptionId differs.
    core.subscriptions.CreateSubscription(
        inventory_request(consumer_subscription_id="smo-2", filter="(eq,name,a)")
    )
    core.subscriptions.CreateSubscription(
        inventory_request(consumer_subscription_id="smo-1", filter="(eq,name,b)")
    )
    core.subscriptions.CreateSubscription(
        inventory_request(
            callback=CALLBACK + "/2", consumer_subscription_id="smo-1", filter="(eq,name,a)"
        )
    )
    assert core.redis.scard("subscriptions") == 4

    # Once deleted, the same subscription can be created again.
    core.subscriptions.DeleteSubscription(
        sub.DeleteSubscriptionRequest(subscription_id=first.subscription_id)
    )
    core.subscriptions.CreateSubscription(request)


def test_duplicate_is_already_exists_when_configured(redis_url: str) -> None:
    with serve(redis_url, duplicate_status=409) as core:
        core.subscriptions.CreateSubscription(inventory_request())
        problem = failure(lambda: core.subscriptions.CreateSubscription(inventory_request()))
        assert problem.code == grpc.StatusCode.ALREADY_EXISTS
        assert problem.error_info.reason == "DUPLICATE_SUBSCRIPTION"
        core.monitoring.CreateAlarmSubscription(alarm_request())
        problem = failure(lambda: core.monitoring.CreateAlarmSubscription(alarm_request()))
        assert problem.code == grpc.StatusCode.ALREADY_EXISTS
        assert problem.error_info.reason == "DUPLICATE_ALARM_SUBSCRIPTION"


def test_a_stale_dedupe_entry_does_not_block_a_new_subscription(core: Core) -> None:
    created = core.subscriptions.CreateSubscription(inventory_request())
    # An operator deletes the subscription's hash by hand, leaving the dedupe key behind.
    core.redis.delete(f"subscription:{created.subscription_id}")
    again = core.subscriptions.CreateSubscription(inventory_request())
    assert again.subscription_id != created.subscription_id
    listed = core.subscriptions.ListSubscriptions(sub.ListSubscriptionsRequest())
    assert [s.subscription_id for s in listed.subscriptions] == [again.subscription_id]


def test_concurrent_identical_creates_make_exactly_one(core: Core) -> None:
    callers = 24
    start = threading.Barrier(callers)
    created: list[str] = []
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()

    def create() -> None:
        start.wait()
        try:
            result = core.subscriptions.CreateSubscription(inventory_request(filter="(eq,name,b)"))
            with lock:
                created.append(result.subscription_id)
        except grpc.RpcError as error:
            with lock:
                codes.append(error.code())

    threads = [threading.Thread(target=create) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(created) == 1
    assert codes == [grpc.StatusCode.FAILED_PRECONDITION] * (callers - 1)
    assert core.redis.smembers("subscriptions") == set(created)
    assert len(list(core.redis.scan_iter("subscription:*"))) == 1


# --- alarm subscriptions -------------------------------------------------------------------


def test_alarm_subscription_lifecycle(core: Core) -> None:
    created, call = core.monitoring.CreateAlarmSubscription.with_call(
        alarm_request(filter="NEW", consumer_subscription_id="smo-7")
    )
    subscription_id = created.alarm_subscription_id
    assert uuid.UUID(subscription_id).version == 4
    assert (created.filter, created.consumer_subscription_id, created.callback) == (
        "NEW",
        "smo-7",
        CALLBACK,
    )
    headers = metadata(call)
    assert headers[HTTP_STATUS_HEADER] == "201"
    assert headers["location"] == f"{MONITORING_PATH}/v1/alarmSubscriptions/{subscription_id}"
    stored = stored_hash(core, f"alarm_subscription:{subscription_id}")
    assert stored["alarmSubscriptionId"] == subscription_id
    assert stored["apiVersion"] == "v1"
    # Only alarm changes after the creation are notified: the alarm stream's position then.
    assert stored["eventsAfter"] == "0-0"
    # The kinds are separate collections.
    assert not core.redis.exists("subscriptions")

    listed, call = core.monitoring.ListAlarmSubscriptions.with_call(
        mon.ListAlarmSubscriptionsRequest()
    )
    assert metadata(call)["x-o2ims-collection"] == "alarmSubscriptions"
    assert list(listed.alarm_subscriptions) == [created]
    assert (
        core.monitoring.GetAlarmSubscription(
            mon.GetAlarmSubscriptionRequest(alarm_subscription_id=subscription_id)
        )
        == created
    )
    core.monitoring.DeleteAlarmSubscription(
        mon.DeleteAlarmSubscriptionRequest(alarm_subscription_id=subscription_id)
    )
    assert_not_found(
        (
            lambda: core.monitoring.GetAlarmSubscription(
                mon.GetAlarmSubscriptionRequest(alarm_subscription_id=subscription_id)
            ),
            lambda: core.monitoring.DeleteAlarmSubscription(
                mon.DeleteAlarmSubscriptionRequest(alarm_subscription_id=subscription_id)
            ),
        ),
        "ALARM_SUBSCRIPTION_NOT_FOUND",
        "alarmSubscriptionId",
        subscription_id,
    )
    # What remains: the generation counter and the change stream the views follow.
    assert sorted(core.redis.keys()) == ["subscriptions:events", "subscriptions:generation"]


@pytest.mark.parametrize(
    "event",
    ["", "NEW", "CHANGE", "CLEAR", "ACKNOWLEDGE", "(eq,perceivedSeverity,0)", "(eq,resourceId,x)"],
)
def test_alarm_filter_accepts_the_event_types_and_expressions(core: Core, event: str) -> None:
    assert core.monitoring.CreateAlarmSubscription(alarm_request(filter=event)).filter == event


@pytest.mark.parametrize("expression", ["new", "RAISED", "(eq,WrongAttrName,1)", "NEW,CLEAR"])
def test_alarm_filter_rejects_anything_else(core: Core, expression: str) -> None:
    problem = failure(
        lambda: core.monitoring.CreateAlarmSubscription(alarm_request(filter=expression))
    )
    assert problem.code == grpc.StatusCode.INVALID_ARGUMENT
    assert problem.error_info.reason == "INVALID_ALARM_SUBSCRIPTION"
    if expression.startswith("("):
        assert "unknown attribute 'WrongAttrName'" in problem.violations["filter"]
    else:
        assert "NEW, CHANGE, CLEAR, ACKNOWLEDGE" in problem.violations["filter"]


def test_alarm_subscription_validation(core: Core) -> None:
    problem = failure(
        lambda: core.monitoring.CreateAlarmSubscription(
            alarm_request(callback="", alarm_subscription_id=str(uuid.uuid4()))
        )
    )
    assert problem.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(problem.violations) == {"alarmSubscriptionId", "callback"}
    core.monitoring.CreateAlarmSubscription(alarm_request(filter="CLEAR"))
    duplicate = failure(
        lambda: core.monitoring.CreateAlarmSubscription(alarm_request(filter="CLEAR"))
    )
    assert duplicate.code == grpc.StatusCode.FAILED_PRECONDITION
    assert duplicate.error_info.reason == "DUPLICATE_ALARM_SUBSCRIPTION"


# --- monitoring api_versions and alarms -----------------------------------------------------


def test_monitoring_api_versions(core: Core) -> None:
    everything = core.monitoring.GetAllApiVersions(mon.GetAllApiVersionsRequest())
    assert everything.uri_prefix == MONITORING_PATH
    assert [v.version for v in everything.api_versions] == ["1.1.0"]
    major = core.monitoring.GetApiVersions(mon.GetApiVersionsRequest())
    assert major.uri_prefix == f"{MONITORING_PATH}/v1"


def test_no_alarm_source_means_an_empty_alarm_list(core: Core) -> None:
    listed, call = core.monitoring.ListAlarms.with_call(mon.ListAlarmsRequest())
    assert list(listed.alarms) == []
    assert metadata(call)["x-o2ims-collection"] == "alarms"
    problem = failure(
        lambda: core.monitoring.GetAlarm(mon.GetAlarmRequest(alarm_event_record_id="nope"))
    )
    assert problem.code == grpc.StatusCode.NOT_FOUND
    assert problem.error_info.reason == "ALARM_NOT_FOUND"


def test_alarms_are_read_from_the_documented_redis_layout(core: Core) -> None:
    # What the alarm source will write (server/monitoring_v1.py documents the layout).
    alarm_id = str(uuid.uuid4())
    core.redis.hset(
        f"alarm:{alarm_id}",
        mapping={
            "resourceTypeID": "rt-1",
            "resourceID": "r-1",
            "alarmDefinitionID": "ad-1",
            "probableCauseID": "pc-1",
            "alarmRaisedTime": "2025-01-02T03:04:05Z",
            "alarmChangedTime": "",
            "alarmAcknowledged": "false",
            "perceivedSeverity": "2",
            "extensions": '{"node": "edge-1"}',
        },
    )
    broken_id = str(uuid.uuid4())
    core.redis.hset(f"alarm:{broken_id}", mapping={"perceivedSeverity": "severe"})
    core.redis.sadd("alarms", alarm_id, broken_id, str(uuid.uuid4()))
    # Written behind the stores' back (no event): what a replica finds when it starts.
    core.alarm_view.load()

    listed = core.monitoring.ListAlarms(mon.ListAlarmsRequest())
    assert [a.alarm_event_record_id for a in listed.alarms] == [alarm_id], "broken one skipped"
    got = core.monitoring.GetAlarm(mon.GetAlarmRequest(alarm_event_record_id=alarm_id))
    wire = json_format.MessageToDict(got)
    assert wire == {
        "alarmEventRecordId": alarm_id,
        "resourceTypeID": "rt-1",
        "resourceID": "r-1",
        "alarmDefinitionID": "ad-1",
        "probableCauseID": "pc-1",
        "alarmRaisedTime": "2025-01-02T03:04:05Z",
        "perceivedSeverity": 2,
        "extensions": {"node": "edge-1"},
    }
    problem = failure(
        lambda: core.monitoring.GetAlarm(mon.GetAlarmRequest(alarm_event_record_id=broken_id))
    )
    assert problem.code == grpc.StatusCode.INTERNAL
    assert problem.error_info.reason == "ALARM_RECORD_UNREADABLE"


# --- Redis outage --------------------------------------------------------------------------


def test_redis_down_is_unavailable_fast_and_recovers(tmp_path: Path) -> None:
    own_redis = RedisServer(tmp_path / "redis").start()
    try:
        with serve(own_redis.url) as core:
            kept = core.subscriptions.CreateSubscription(inventory_request())
            own_redis.stop()
            calls: list[tuple[Callable[[], Any], str]] = [
                (
                    lambda: core.subscriptions.CreateSubscription(
                        inventory_request(callback=CALLBACK + "/other")
                    ),
                    "SUBSCRIPTION_STORE_UNAVAILABLE",
                ),
                (
                    lambda: core.subscriptions.ListSubscriptions(sub.ListSubscriptionsRequest()),
                    "SUBSCRIPTION_STORE_UNAVAILABLE",
                ),
                (
                    lambda: core.subscriptions.GetSubscription(
                        sub.GetSubscriptionRequest(subscription_id=kept.subscription_id)
                    ),
                    "SUBSCRIPTION_STORE_UNAVAILABLE",
                ),
                (
                    lambda: core.subscriptions.DeleteSubscription(
                        sub.DeleteSubscriptionRequest(subscription_id=kept.subscription_id)
                    ),
                    "SUBSCRIPTION_STORE_UNAVAILABLE",
                ),
                (
                    lambda: core.monitoring.CreateAlarmSubscription(alarm_request()),
                    "SUBSCRIPTION_STORE_UNAVAILABLE",
                ),
            ]
            for call, reason in calls:
                started = time.monotonic()
                # A deadline well above the expected answer time: the call must not hang.
                problem = failure(call)
                assert time.monotonic() - started < 2.0
                assert problem.code == grpc.StatusCode.UNAVAILABLE
                assert problem.error_info.reason == reason

            # The alarms are served from memory meanwhile, like the inventory: the list, and
            # a record the view does not hold is one that does not exist.
            assert list(core.monitoring.ListAlarms(mon.ListAlarmsRequest()).alarms) == []
            unknown = mon.GetAlarmRequest(alarm_event_record_id=str(uuid.uuid4()))
            assert failure(lambda: core.monitoring.GetAlarm(unknown)).code == (
                grpc.StatusCode.NOT_FOUND
            )
            own_redis.start()
            # Back: what was stored before is intact in Redis (not only in the view), and
            # nothing half-written appeared.
            stored = SubscriptionStore(connect(own_redis.url)).list(INVENTORY_SUBSCRIPTIONS)
            assert [s.subscription_id for s in stored] == [kept.subscription_id]
            # the hash, the index, the dedupe key, the generation counter, the change stream
            assert core.redis.dbsize() == 5
    finally:
        own_redis.stop()


# --- configuration -------------------------------------------------------------------------


def test_duplicate_status_is_configurable_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert GatewayConfig.from_env().duplicate_subscription_status == 400
    monkeypatch.setenv("NETWEAVE_DUPLICATE_SUBSCRIPTION_STATUS", "409")
    assert GatewayConfig.from_env().duplicate_subscription_status == 409
    monkeypatch.setenv("NETWEAVE_DUPLICATE_SUBSCRIPTION_STATUS", "418")
    with pytest.raises(ValueError, match="400 or 409"):
        GatewayConfig.from_env()
