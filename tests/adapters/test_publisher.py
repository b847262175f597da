"""ObjectSetPublisher (diffs, revisions, subscriptions) and the AdapterService over it."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc, domain_pb2

from adapters.contract import ObjectKey, object_key, serialize
from adapters.publisher import (
    SERVICE_NAME,
    AdapterServicer,
    ObjectSetPublisher,
    SubscriberLaggedError,
    Subscription,
    create_adapter_server,
)
from devstack.processes import wait_until

ADDED = adapter_pb2.EVENT_TYPE_ADDED
MODIFIED = adapter_pb2.EVENT_TYPE_MODIFIED
DELETED = adapter_pb2.EVENT_TYPE_DELETED
SYNCED = adapter_pb2.EVENT_TYPE_SYNCED
COMMIT = adapter_pb2.EVENT_TYPE_COMMIT

POOL_ID = "40000000-0000-4000-8000-000000000001"


def resource(number: int, description: str = "server") -> domain_pb2.InventoryObject:
    return domain_pb2.InventoryObject(
        resource=domain_pb2.Resource(
            resource_id=f"50000000-0000-4000-8000-{number:012d}",
            resource_pool_id=POOL_ID,
            description=description,
        )
    )


def pool() -> domain_pb2.InventoryObject:
    return domain_pb2.InventoryObject(
        resource_pool=domain_pb2.ResourcePool(resource_pool_id=POOL_ID, name="pool")
    )


def summary(events: list[adapter_pb2.WatchObjectsResponse]) -> list[tuple[str, str, str]]:
    """(event type, kind, id) of each event, for readable assertions."""
    return [
        (
            adapter_pb2.EventType.Name(event.type),
            *(object_key(event.object) if event.HasField("object") else ("", "")),
        )
        for event in events
    ]


def drain(subscription: Subscription) -> list[adapter_pb2.WatchObjectsResponse]:
    """Every event already waiting, without blocking."""
    events: list[adapter_pb2.WatchObjectsResponse] = []
    while True:
        try:
            event = subscription.next_event(timeout=0)
        except TimeoutError:
            return events
        assert event is not None
        events.append(event)


def test_first_replace_adds_everything_parents_first() -> None:
    publisher = ObjectSetPublisher()
    events = publisher.replace([resource(2), resource(1), pool()])
    assert summary(events) == [
        ("EVENT_TYPE_ADDED", "resource_pool", POOL_ID),
        ("EVENT_TYPE_ADDED", "resource", resource(1).resource.resource_id),
        ("EVENT_TYPE_ADDED", "resource", resource(2).resource.resource_id),
    ]
    assert {event.revision for event in events} == {"1"}
    assert publisher.revision == "1"


def test_identical_replace_emits_nothing_and_keeps_the_revision() -> None:
    publisher = ObjectSetPublisher()
    publisher.replace([pool(), resource(1)])
    assert publisher.replace([resource(1), pool()]) == []
    assert publisher.revision == "1"


def test_changes_are_modified_added_and_deleted_with_the_last_known_state() -> None:
    publisher = ObjectSetPublisher()
    publisher.replace([pool(), resource(1, "old"), resource(2)])
    events = publisher.replace([pool(), resource(1, "new"), resource(3)])
    assert summary(events) == [
        ("EVENT_TYPE_MODIFIED", "resource", resource(1).resource.resource_id),
        ("EVENT_TYPE_ADDED", "resource", resource(3).resource.resource_id),
        ("EVENT_TYPE_DELETED", "resource", resource(2).resource.resource_id),
    ]
    assert events[0].object.resource.description == "new"
    assert serialize(events[2].object) == serialize(resource(2))
    assert {event.revision for event in events} == {"2"}


def test_deletions_remove_children_before_parents() -> None:
    publisher = ObjectSetPublisher()
    publisher.replace([pool(), resource(1)])
    events = publisher.replace([])
    assert summary(events) == [
        ("EVENT_TYPE_DELETED", "resource", resource(1).resource.resource_id),
        ("EVENT_TYPE_DELETED", "resource_pool", POOL_ID),
    ]


def test_revision_bumps_once_per_replace_that_changes_something() -> None:
    publisher = ObjectSetPublisher()
    assert publisher.revision == "0"
    publisher.replace([resource(1), resource(2)])
    publisher.replace([resource(1), resource(2)])
    publisher.replace([resource(1, "changed"), resource(3)])
    assert publisher.revision == "2"


def test_snapshot_is_ordered_by_kind_then_id() -> None:
    publisher = ObjectSetPublisher()
    publisher.replace([resource(3), resource(1), pool(), resource(2)])
    revision, objects = publisher.snapshot()
    assert revision == "1"
    assert [object_key(obj) for obj in objects] == [
        ("resource_pool", POOL_ID),
        *(("resource", resource(n).resource.resource_id) for n in (1, 2, 3)),
    ]


def test_replace_keeps_its_own_copy_of_the_objects() -> None:
    publisher = ObjectSetPublisher()
    obj = resource(1, "before")
    publisher.replace([obj])
    obj.resource.description = "mutated by the caller"
    assert publisher.snapshot()[1][0].resource.description == "before"


def test_two_objects_with_one_key_are_refused() -> None:
    with pytest.raises(ValueError, match="share the key"):
        ObjectSetPublisher().replace([resource(1), resource(1, "twin")])


def test_subscribe_replays_the_set_then_synced_then_live_events() -> None:
    publisher = ObjectSetPublisher()
    publisher.replace([pool(), resource(1)])
    with publisher.subscribe(send_initial=True) as subscription:
        publisher.replace([pool(), resource(1), resource(2)])
        events = drain(subscription)
    assert summary(events) == [
        ("EVENT_TYPE_ADDED", "resource_pool", POOL_ID),
        ("EVENT_TYPE_ADDED", "resource", resource(1).resource.resource_id),
        ("EVENT_TYPE_SYNCED", "", ""),
        ("EVENT_TYPE_ADDED", "resource", resource(2).resource.resource_id),
        ("EVENT_TYPE_COMMIT", "", ""),
    ]
    assert [event.revision for event in events] == ["1", "1", "1", "2", "2"]
    # The stream says it commits its change sets, on SYNCED only.
    assert [event.commits_change_sets for event in events] == [False, False, True, False, False]


def test_every_change_set_ends_with_one_commit_of_its_revision() -> None:
    publisher = ObjectSetPublisher()
    with publisher.subscribe(send_initial=True) as subscription:
        returned = publisher.replace([pool(), resource(1), resource(2)])
        publisher.replace([pool(), resource(1), resource(2)])  # no change: no set at all
        returned += publisher.replace([pool(), resource(1, "edited")])
        events = drain(subscription)
    assert COMMIT not in {event.type for event in returned}
    assert [(event.type, event.revision) for event in events] == [
        (SYNCED, "0"),
        (ADDED, "1"),
        (ADDED, "1"),
        (ADDED, "1"),
        (COMMIT, "1"),
        (MODIFIED, "2"),
        (DELETED, "2"),
        (COMMIT, "2"),
    ]
    assert [event for event in events if event.type not in {SYNCED, COMMIT}] == returned


def test_subscribe_without_replay_sees_only_later_changes() -> None:
    publisher = ObjectSetPublisher()
    publisher.replace([resource(1)])
    with publisher.subscribe(send_initial=False) as subscription:
        publisher.replace([])
        assert summary(drain(subscription)) == [
            ("EVENT_TYPE_DELETED", "resource", resource(1).resource.resource_id),
            ("EVENT_TYPE_COMMIT", "", ""),
        ]


def test_replay_of_an_empty_set_is_just_synced() -> None:
    with ObjectSetPublisher().subscribe(send_initial=True) as subscription:
        assert summary(drain(subscription)) == [("EVENT_TYPE_SYNCED", "", "")]


def test_no_event_is_lost_or_duplicated_between_snapshot_and_live() -> None:
    publisher = ObjectSetPublisher(max_pending_events=1_000_000)
    rng = random.Random(7)
    subscriptions: list[Subscription] = []
    done = threading.Event()

    def churn() -> None:
        for _ in range(400):
            chosen = rng.sample(range(40), rng.randint(0, 40))
            publisher.replace(resource(n, f"v{rng.randint(0, 3)}") for n in chosen)
        done.set()

    writer = threading.Thread(target=churn)
    writer.start()
    while not done.is_set():  # subscribe at arbitrary points of the churn
        subscriptions.append(publisher.subscribe(send_initial=True))
        time.sleep(0.002)
    writer.join()
    final_revision, final_objects = publisher.snapshot()
    expected = {object_key(obj): serialize(obj) for obj in final_objects}
    assert len(subscriptions) > 5

    for subscription in subscriptions:
        state: dict[ObjectKey, bytes] = {}
        synced_at: int | None = None
        last_revision = 0
        committed = True
        for event in drain(subscription):
            revision = int(event.revision)
            if event.type == SYNCED:
                synced_at = last_revision = revision
                continue
            if event.type == COMMIT:
                # Each set is whole: its COMMIT follows its last event, with its revision.
                assert revision == last_revision and not committed
                committed = True
                continue
            if synced_at is not None:
                # A new revision only after the previous set's COMMIT.
                assert committed or revision == last_revision
                committed = False
            key = object_key(event.object)
            if synced_at is None:
                assert event.type == ADDED and key not in state, "replay repeats an object"
            else:
                # Live events continue the replay's revision without a gap.
                assert revision in (last_revision, last_revision + 1)
                last_revision = revision
                assert (key in state) == (event.type != ADDED), summary([event])
            if event.type == DELETED:
                assert state.pop(key) == serialize(event.object)
            else:
                state[key] = serialize(event.object)
        assert synced_at is not None
        assert committed
        assert last_revision == int(final_revision)
        assert state == expected
        subscription.close()


def test_a_subscriber_that_falls_behind_is_dropped_and_the_others_are_not() -> None:
    publisher = ObjectSetPublisher(max_pending_events=5)
    slow = publisher.subscribe(send_initial=False)
    fast = publisher.subscribe(send_initial=False)
    for number in range(8):
        # One ADDED, (after the first) one DELETED, one COMMIT.
        publisher.replace([resource(number)])
        drain(fast)
    with pytest.raises(SubscriberLaggedError):
        slow.next_event(timeout=0)
    assert publisher.subscriber_count == 1
    publisher.replace([])
    assert summary(drain(fast)) == [
        ("EVENT_TYPE_DELETED", "resource", resource(7).resource.resource_id),
        ("EVENT_TYPE_COMMIT", "", ""),
    ]


def test_close_wakes_a_blocked_reader() -> None:
    publisher = ObjectSetPublisher()
    subscription = publisher.subscribe(send_initial=False)
    results: list[adapter_pb2.WatchObjectsResponse | None] = []
    reader = threading.Thread(target=lambda: results.append(subscription.next_event()))
    reader.start()
    time.sleep(0.05)
    subscription.close()
    reader.join(timeout=2)
    assert not reader.is_alive()
    assert results == [None]
    assert list(subscription) == []
    assert publisher.subscriber_count == 0


def test_publisher_close_ends_every_subscription() -> None:
    publisher = ObjectSetPublisher()
    subscriptions = [publisher.subscribe(send_initial=True) for _ in range(3)]
    publisher.close()
    assert all(subscription.closed for subscription in subscriptions)
    assert publisher.subscribe(send_initial=True).next_event(timeout=0) is None


def test_next_event_times_out_when_nothing_happens() -> None:
    with (
        ObjectSetPublisher().subscribe(send_initial=False) as subscription,
        pytest.raises(TimeoutError),
    ):
        subscription.next_event(timeout=0.05)


# --- the gRPC service, on a real server and channel ------------------------------


@pytest.fixture
def publisher() -> ObjectSetPublisher:
    published = ObjectSetPublisher()
    published.replace([pool(), resource(1), resource(2)])
    return published


@pytest.fixture
def channel(publisher: ObjectSetPublisher) -> Iterator[grpc.Channel]:
    servicer = AdapterServicer(
        "test-adapter", "static", "/tmp/inventory.yaml", publisher, liveness_check_interval=0.2
    )
    server, port = create_adapter_server(servicer, "127.0.0.1", 0)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    publisher.close()
    server.stop(grace=None)


def test_adapter_info_and_list_describe_the_published_set(
    channel: grpc.Channel, publisher: ObjectSetPublisher
) -> None:
    stub = adapter_pb2_grpc.AdapterServiceStub(channel)
    info = stub.GetAdapterInfo(adapter_pb2.GetAdapterInfoRequest(), timeout=5)
    assert (info.name, info.backend, info.source, info.revision) == (
        "test-adapter",
        "static",
        "/tmp/inventory.yaml",
        "1",
    )
    listed = stub.ListObjects(adapter_pb2.ListObjectsRequest(), timeout=5)
    assert listed.revision == "1"
    assert [serialize(obj) for obj in listed.objects] == [
        serialize(obj) for obj in publisher.snapshot()[1]
    ]


def test_health_reports_the_adapter_service_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_watch_streams_replay_synced_and_live_changes(
    channel: grpc.Channel, publisher: ObjectSetPublisher
) -> None:
    stub = adapter_pb2_grpc.AdapterServiceStub(channel)
    call = stub.WatchObjects(adapter_pb2.WatchObjectsRequest(send_initial_objects=True), timeout=5)
    replay = [next(call) for _ in range(4)]
    assert [event.type for event in replay] == [ADDED, ADDED, ADDED, SYNCED]
    assert replay[-1].commits_change_sets
    publisher.replace([pool(), resource(1, "edited")])
    live = [next(call), next(call), next(call)]
    assert summary(live) == [
        ("EVENT_TYPE_MODIFIED", "resource", resource(1).resource.resource_id),
        ("EVENT_TYPE_DELETED", "resource", resource(2).resource.resource_id),
        ("EVENT_TYPE_COMMIT", "", ""),
    ]
    assert live[-1].revision == "2"
    assert live[0].object.resource.description == "edited"
    call.cancel()


def test_cancelled_watch_releases_its_subscription(
    channel: grpc.Channel, publisher: ObjectSetPublisher
) -> None:
    stub = adapter_pb2_grpc.AdapterServiceStub(channel)
    call = stub.WatchObjects(adapter_pb2.WatchObjectsRequest(send_initial_objects=False))
    wait_until(lambda: publisher.subscriber_count > 0, 5, "the watch subscribed")
    assert publisher.subscriber_count == 1
    call.cancel()
    wait_until(lambda: publisher.subscriber_count == 0, 2, "the subscription released")


def test_watch_ends_unavailable_when_the_publisher_closes(
    channel: grpc.Channel, publisher: ObjectSetPublisher
) -> None:
    stub = adapter_pb2_grpc.AdapterServiceStub(channel)
    call = stub.WatchObjects(adapter_pb2.WatchObjectsRequest(send_initial_objects=True), timeout=5)
    assert [next(call).type for _ in range(4)][-1] == SYNCED
    publisher.close()
    with pytest.raises(grpc.RpcError) as raised:
        next(call)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(raised.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "ADAPTER_STOPPING"
