"""Subscriptions belong to their client: the ownership matrix of SubscriptionApi for
inventory and alarm subscriptions, on a real redis-server, with the caller set as the auth
interceptor sets it (`acting_as`)."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
import redis
from o2ims.monitoring.v1 import monitoring_pb2 as mon
from o2ims.subscriptions.v1 import subscriptions_pb2 as sub

from server.alarms.store import AlarmStore
from server.alarms.view import AlarmView
from server.auth.caller import NOBODY, Caller, acting_as
from server.errors import AlreadyExists, ApiError, NotFound, PermissionDenied
from server.listing import Lister, ListingSettings
from server.monitoring_v1 import ALARM_SUBSCRIPTION_RESOURCE, MonitoringV1Servicer
from server.store import connect
from server.subscriptions import (
    INVENTORY_SUBSCRIPTION_RESOURCE,
    InventorySubscriptionServicer,
    SubscriptionApi,
    SubscriptionDraft,
    SubscriptionResource,
    SubscriptionStore,
)
from server.subscriptions.callbacks import CallbackPolicy

NORTH = Caller(owner="cert-uri:spiffe://netweave.local/client/smo-north")
SOUTH = Caller(owner="cert-uri:spiffe://netweave.local/client/smo-south")
ADMIN = Caller(owner="cert-uri:spiffe://netweave.local/client/netweave-dev-client", sees_all=True)
RESOURCES = [INVENTORY_SUBSCRIPTION_RESOURCE, ALARM_SUBSCRIPTION_RESOURCE]


@dataclass
class Subscriptions:
    """One kind's SubscriptionApi over real Redis, and a raw client of that Redis."""

    api: SubscriptionApi
    redis: redis.Redis
    major: str

    def create(self, caller: Caller, callback: str = "", consumer_id: str = "") -> str:
        draft = SubscriptionDraft(
            subscription_id="",
            callback=callback or f"http://127.0.0.1:9/{uuid.uuid4()}",
            filter="",
            consumer_subscription_id=consumer_id,
        )
        with acting_as(caller):
            created, _ = self.api.create(draft, self.major)
        return created.subscription_id

    def listed(self, caller: Caller) -> list[str]:
        with acting_as(caller):
            return [s.subscription_id for s in self.api.list()]

    def get(self, caller: Caller, subscription_id: str) -> str:
        with acting_as(caller):
            return self.api.get(subscription_id).subscription_id

    def delete(self, caller: Caller, subscription_id: str) -> None:
        with acting_as(caller):
            self.api.delete(subscription_id)

    def key(self, subscription_id: str) -> str:
        return self.api.resource.kind.key(subscription_id)

    def stored_keys(self) -> list[str]:
        """The kind's keys: subscription hashes, index set, dedupe entries."""
        kind = self.api.resource.kind
        found = cast(list[str], self.redis.keys(f"{kind.name}*"))
        shared = ("subscriptions:generation", "subscriptions:events")
        return [key for key in found if key not in shared]


@pytest.fixture(params=RESOURCES, ids=lambda r: r.kind.name)
def subscriptions(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Subscriptions]:
    resource: SubscriptionResource = request.param
    client = connect(redis_url)
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    api = SubscriptionApi(
        SubscriptionStore(client),
        resource,
        service_uri="https://o2ims.example.net",
        duplicate_status=400,
        callback_policy=CallbackPolicy.development(),
    )
    yield Subscriptions(api, raw, resource.majors[0])
    raw.close()
    client.close()


def raised(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def answer(error: ApiError, unknown_id: str, asked_id: str) -> tuple[Any, ...]:
    """Everything a client sees of an error, with the id it asked about made neutral."""
    status = error.to_status()
    return (
        type(error),
        error.code,
        error.reason,
        error.message.replace(asked_id, unknown_id),
        {k: v.replace(asked_id, unknown_id) for k, v in error.metadata.items()},
        status.code,
        len(status.details),
    )


def assert_same_as_unknown(
    operation: Callable[[Caller, str], Any],
    caller: Caller,
    hidden_id: str,
    subscriptions: Subscriptions,
) -> None:
    """`operation` by `caller` on `hidden_id` fails exactly as on an id that does not
    exist."""
    unknown_id = str(uuid.uuid4())
    hidden = raised(functools.partial(operation, caller, hidden_id))
    unknown = raised(functools.partial(operation, caller, unknown_id))
    assert isinstance(hidden, NotFound)
    assert hidden.code == grpc.StatusCode.NOT_FOUND
    assert hidden.reason == f"{subscriptions.api.resource.reason_prefix}_NOT_FOUND"
    assert hidden.metadata == {subscriptions.api.resource.kind.id_field: hidden_id}
    assert answer(hidden, unknown_id, hidden_id) == answer(unknown, unknown_id, unknown_id)


def test_each_subscriber_lists_only_its_own(subscriptions: Subscriptions) -> None:
    north = [subscriptions.create(NORTH), subscriptions.create(NORTH)]
    south = [subscriptions.create(SOUTH)]
    assert subscriptions.listed(NORTH) == north
    assert subscriptions.listed(SOUTH) == south
    assert subscriptions.listed(ADMIN) == north + south, "an admin lists all, oldest first"
    assert subscriptions.listed(NOBODY) == []


def test_each_subscriber_reads_its_own(subscriptions: Subscriptions) -> None:
    north = subscriptions.create(NORTH)
    assert subscriptions.get(NORTH, north) == north
    assert subscriptions.get(ADMIN, north) == north


def test_another_subscribers_id_is_not_found_exactly_like_an_unknown_one(
    subscriptions: Subscriptions,
) -> None:
    north = subscriptions.create(NORTH)
    for caller in (SOUTH, NOBODY):
        for operation in (subscriptions.get, subscriptions.delete):
            assert_same_as_unknown(operation, caller, north, subscriptions)
    assert subscriptions.get(NORTH, north) == north


def test_a_refused_delete_leaves_the_other_subscription_intact(
    subscriptions: Subscriptions,
) -> None:
    north = subscriptions.create(NORTH)
    before = cast(dict[str, str], subscriptions.redis.hgetall(subscriptions.key(north)))
    generation = subscriptions.redis.get("subscriptions:generation")
    raised(lambda: subscriptions.delete(SOUTH, north))
    assert subscriptions.get(ADMIN, north) == north
    assert subscriptions.redis.hgetall(subscriptions.key(north)) == before
    assert subscriptions.redis.get("subscriptions:generation") == generation
    assert subscriptions.listed(NORTH) == [north]
    # Its dedupe entry too: north's identical create is still a duplicate.
    callback = before["callback"]
    duplicate = raised(lambda: subscriptions.create(NORTH, callback))
    assert isinstance(duplicate, AlreadyExists)


def test_a_subscriber_deletes_its_own(subscriptions: Subscriptions) -> None:
    north = subscriptions.create(NORTH)
    south = subscriptions.create(SOUTH)
    subscriptions.delete(NORTH, north)
    assert subscriptions.listed(ADMIN) == [south]
    assert not subscriptions.redis.exists(subscriptions.key(north))


def test_an_admin_deletes_anyones(subscriptions: Subscriptions) -> None:
    north = subscriptions.create(NORTH)
    south = subscriptions.create(SOUTH)
    subscriptions.delete(ADMIN, north)
    subscriptions.delete(ADMIN, south)
    assert subscriptions.listed(ADMIN) == []
    assert subscriptions.stored_keys() == []


def test_the_owner_is_stored_with_the_subscription(subscriptions: Subscriptions) -> None:
    north = subscriptions.create(NORTH)
    assert subscriptions.redis.hget(subscriptions.key(north), "owner") == NORTH.owner
    with acting_as(ADMIN):
        assert subscriptions.api.get(north).owner == NORTH.owner


def test_a_subscription_from_before_owners_is_visible_to_admins_only(
    subscriptions: Subscriptions,
) -> None:
    legacy = subscriptions.create(NORTH)
    subscriptions.redis.hdel(subscriptions.key(legacy), "owner")
    mine = subscriptions.create(NORTH)
    assert subscriptions.listed(NORTH) == [mine]
    assert subscriptions.listed(SOUTH) == []
    assert subscriptions.listed(ADMIN) == [legacy, mine]
    with acting_as(ADMIN):
        assert subscriptions.api.get(legacy).owner == ""
    for caller in (NORTH, SOUTH, NOBODY):
        for operation in (subscriptions.get, subscriptions.delete):
            assert_same_as_unknown(operation, caller, legacy, subscriptions)
    assert subscriptions.redis.exists(subscriptions.key(legacy))
    subscriptions.delete(ADMIN, legacy)
    assert subscriptions.listed(ADMIN) == [mine]


def test_two_owners_may_hold_identical_subscriptions(subscriptions: Subscriptions) -> None:
    callback = "http://127.0.0.1:9/shared"
    north = subscriptions.create(NORTH, callback, "same")
    south = subscriptions.create(SOUTH, callback, "same")
    admin = subscriptions.create(ADMIN, callback, "same")
    assert len({north, south, admin}) == 3
    # Deleting one leaves the others' duplicate detection alone.
    subscriptions.delete(SOUTH, south)
    duplicate = raised(functools.partial(subscriptions.create, NORTH, callback, "same"))
    assert isinstance(duplicate, AlreadyExists)
    assert duplicate.metadata == {subscriptions.api.resource.kind.id_field: north}


def test_a_duplicate_by_the_same_owner_reports_that_owners_id(
    subscriptions: Subscriptions,
) -> None:
    callback = "http://127.0.0.1:9/twice"
    south = subscriptions.create(SOUTH, callback, "x")
    north = subscriptions.create(NORTH, callback, "x")
    for caller, own in ((NORTH, north), (SOUTH, south)):
        duplicate = raised(functools.partial(subscriptions.create, caller, callback, "x"))
        assert isinstance(duplicate, AlreadyExists)
        assert duplicate.reason == f"DUPLICATE_{subscriptions.api.resource.reason_prefix}"
        assert duplicate.metadata == {subscriptions.api.resource.kind.id_field: own}
        other = south if own == north else north
        assert own in duplicate.message and other not in duplicate.message
    assert sorted(subscriptions.listed(ADMIN)) == sorted([north, south])


def test_a_caller_without_an_owner_may_not_create(subscriptions: Subscriptions) -> None:
    refused = raised(lambda: subscriptions.create(NOBODY))
    assert isinstance(refused, PermissionDenied)
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.reason == f"{subscriptions.api.resource.reason_prefix}_OWNER_REQUIRED"
    assert subscriptions.stored_keys() == []


def test_an_admin_without_an_owner_creates_an_admins_only_subscription(
    subscriptions: Subscriptions,
) -> None:
    anonymous_admin = Caller(owner="", sees_all=True)
    created = subscriptions.create(anonymous_admin)
    assert subscriptions.listed(ADMIN) == [created]
    assert subscriptions.listed(NORTH) == []


# --- listing through the servicers: filtered before paging ---------------------------------


class RecordingContext:
    """The part of grpc.ServicerContext a successful list uses."""

    def __init__(self) -> None:
        self.initial_metadata: tuple[tuple[str, str], ...] = ()

    def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.initial_metadata = metadata


def list_pages(redis_url: str, kind: str, caller: Caller, page_size: int) -> list[list[str]]:
    """Every page of the caller's list of `kind`, through the servicer's List method (run
    in this thread, so `acting_as` holds as the interceptor's would)."""
    client = connect(redis_url)
    store = SubscriptionStore(client)
    lister = Lister(ListingSettings(secret=b"test-secret", page_size=page_size))
    inventory = InventorySubscriptionServicer(store, "https://o2ims.example.net", 400, lister)
    view = AlarmView(connect(redis_url), threading.Event())  # not started: no alarms listed
    monitoring = MonitoringV1Servicer(
        store, AlarmStore(client, view=view), "https://o2ims.example.net", 400, lister, view=view
    )

    def one_page(marker: str) -> tuple[list[str], str]:
        context: Any = RecordingContext()
        if kind == INVENTORY_SUBSCRIPTION_RESOURCE.kind.name:
            listed = inventory.ListSubscriptions(
                sub.ListSubscriptionsRequest(nextpage_opaque_marker=marker), context
            )
            return [s.subscription_id for s in listed.subscriptions], listed.next_page_token
        alarms = monitoring.ListAlarmSubscriptions(
            mon.ListAlarmSubscriptionsRequest(nextpage_opaque_marker=marker), context
        )
        return [s.alarm_subscription_id for s in alarms.alarm_subscriptions], (
            alarms.next_page_token
        )

    pages: list[list[str]] = []
    marker = ""
    try:
        with acting_as(caller):
            while True:
                page, marker = one_page(marker)
                pages.append(page)
                if not marker:
                    return pages
    finally:
        client.close()


def test_pages_hold_only_the_callers_subscriptions(
    subscriptions: Subscriptions, redis_url: str
) -> None:
    north: list[str] = []
    south: list[str] = []
    for _ in range(3):  # interleaved: a page of everything would mix them
        north.append(subscriptions.create(NORTH))
        south.append(subscriptions.create(SOUTH))
    kind = subscriptions.api.resource.kind.name
    assert list_pages(redis_url, kind, NORTH, page_size=2) == [north[:2], north[2:]]
    assert list_pages(redis_url, kind, SOUTH, page_size=3) == [south]
    everything = list_pages(redis_url, kind, ADMIN, page_size=4)
    assert everything == [[north[0], south[0], north[1], south[1]], [north[2], south[2]]]
    assert list_pages(redis_url, kind, NOBODY, page_size=2) == [[]]
