"""Inventory changes become InventoryChangeNotifications (spec §3.8, checklist S9, S12):
the JSON of the subscription's major, objectRef paths, filters in both modes, eventsAfter,
and Standard Webhooks signatures checked independently. Real Redis, real HTTP receivers,
the notifier in-process."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from server.notifier.notifications import NOTIFICATION_NAMESPACE
from server.store import InventoryStore
from tests.notifier.conftest import (
    POOL_ID,
    SECRET_KEY,
    deleted,
    make_config,
    pool,
    resource,
    running,
    subscribe,
)
from tests.notifier.receiver import Receiver, verify_signature

RESOURCE_ID = "f6a1b0c2-3d4e-4f50-8a6b-7c8d9e0f1a2b"


@pytest.mark.parametrize("major", ["v1", "v2"])
def test_create_modify_delete_notifications_in_the_subscriptions_major(
    redis_url: str, receiver: Receiver, store: InventoryStore, major: str
) -> None:
    subscription = subscribe(
        redis_url, f"{receiver.url}/{major}", major=major, consumer_subscription_id="smo-42"
    )
    with running(make_config(redis_url)):
        store.apply("static", [pool()])
        store.apply("static", [resource(RESOURCE_ID, "before")])
        store.apply("static", [resource(RESOURCE_ID, "after")])
        store.apply("static", [deleted("resource", RESOURCE_ID)])
        received = receiver.wait_for(f"/{major}", 4)

    notifications = [r.json() for r in received]
    assert [n["notificationEventType"] for n in notifications] == [0, 0, 1, 2]
    root = f"/o2ims-infrastructureInventory/{major}"
    assert [n["objectRef"] for n in notifications] == [
        f"{root}/resourcePools/{POOL_ID}",
        *[f"{root}/resourcePools/{POOL_ID}/resources/{RESOURCE_ID}"] * 3,
    ]
    for notification in notifications:
        assert uuid.UUID(notification["notificationId"])
        assert notification["consumerSubscriptionId"] == "smo-42"
    created, modified, removed = notifications[1:]
    # States are JSON objects in the major's model, present exactly where §3.8 says.
    assert "priorObjectState" not in created
    assert created["postObjectState"]["description"] == "before"
    assert modified["priorObjectState"]["description"] == "before"
    assert modified["postObjectState"]["description"] == "after"
    assert removed["priorObjectState"]["resourceId"] == RESOURCE_ID
    assert "postObjectState" not in removed
    pool_state: dict[str, Any] = notifications[0]["postObjectState"]
    assert pool_state["resourcePoolId"] == POOL_ID
    if major == "v1":
        assert "globalLocationId" in pool_state and "oCloudSiteId" not in pool_state
    else:
        assert "oCloudSiteId" in pool_state
    assert created["postObjectState"]["extensions"] == {}  # objects, never strings
    # notificationId: one per (subscription, event), stable if the event is read again.
    assert len({n["notificationId"] for n in notifications}) == 4
    first_event = store.read_events("0-0", 0, count=1)[0].stream_id
    assert notifications[0]["notificationId"] == str(
        uuid.uuid5(NOTIFICATION_NAMESPACE, f"{subscription.subscription_id}/{first_event}")
    )


def test_every_notification_carries_a_valid_standard_webhooks_signature(
    redis_url: str, receiver: Receiver, store: InventoryStore
) -> None:
    subscribe(redis_url, f"{receiver.url}/signed")
    with running(make_config(redis_url)):
        store.apply("static", [pool(), resource(RESOURCE_ID)])
        received = receiver.wait_for("/signed", 2)
    for request in received:
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-id"] == request.json()["notificationId"]
        assert request.headers["webhook-signature"].startswith("v1,")
        assert verify_signature(SECRET_KEY, request)
        assert not verify_signature(b"another secret", request)
        tampered = type(request)(
            request.method, request.path, request.headers, request.body + b" ", request.at
        )
        assert not verify_signature(SECRET_KEY, tampered)


def test_only_changes_after_the_subscription_are_notified(
    redis_url: str, receiver: Receiver, store: InventoryStore
) -> None:
    store.apply("static", [pool(), resource("before-1"), resource("before-2")])
    subscribe(redis_url, f"{receiver.url}/late")
    with running(make_config(redis_url)):
        store.apply("static", [resource("after-1")])
        received = receiver.wait_for("/late", 1)
        store.apply("static", [resource("after-2")])
        received = receiver.wait_for("/late", 2)
    assert [r.json()["postObjectState"]["resourceId"] for r in received] == [
        "after-1",
        "after-2",
    ]


def _changes(store: InventoryStore) -> None:
    store.apply(
        "static",
        [
            pool(),
            resource("keep-1", "keep"),
            resource("drop-1", "other"),
            resource("keep-2", "keep"),
        ],
    )
    store.apply("static", [deleted("resource", "keep-1"), deleted("resource", "drop-1")])


def _seen(receiver: Receiver, path: str, count: int) -> list[tuple[int, str]]:
    found = receiver.wait_for(path, count)
    return [
        (
            n["notificationEventType"],
            (n.get("postObjectState") or n["priorObjectState"]).get("resourceId", "pool"),
        )
        for n in (r.json() for r in found)
    ]


def test_include_mode_notifies_matches_and_deletes_match_on_the_prior_state(
    redis_url: str, receiver: Receiver, store: InventoryStore
) -> None:
    subscribe(redis_url, f"{receiver.url}/include", filter_="(eq,description,keep)")
    everything = subscribe(redis_url, f"{receiver.url}/all")
    with running(make_config(redis_url)):
        _changes(store)
        assert len(receiver.wait_for("/all", 6)) == 6  # every change reaches the unfiltered
        # The filter names `description`: the pool has one ("") that does not match.
        assert _seen(receiver, "/include", 3) == [(0, "keep-1"), (0, "keep-2"), (2, "keep-1")]
    assert everything.filter == ""
    assert len(receiver.delivered_to("/include")) == 3


def test_exclude_mode_is_the_spec_literal_reading(
    redis_url: str, receiver: Receiver, store: InventoryStore
) -> None:
    subscribe(redis_url, f"{receiver.url}/exclude", filter_="(eq,description,keep)")
    subscribe(redis_url, f"{receiver.url}/all")
    with running(make_config(redis_url, filter_mode="exclude")):
        _changes(store)
        receiver.wait_for("/all", 6)
        assert _seen(receiver, "/exclude", 3) == [(0, "pool"), (0, "drop-1"), (2, "drop-1")]
    assert len(receiver.delivered_to("/exclude")) == 3


def test_a_filter_applies_only_to_the_kinds_that_have_its_attributes(
    redis_url: str, receiver: Receiver, store: InventoryStore
) -> None:
    subscribe(redis_url, f"{receiver.url}/pools", filter_="(eq,location,Frankfurt)")
    with running(make_config(redis_url)):
        store.apply("static", [pool(location="Frankfurt"), resource("r-1")])
        store.apply("static", [pool("0b3f9a51-1f27-4d7e-8c1e-6a0d2c4b9e22", location="Paris")])
        found = receiver.wait_for("/pools", 1)
        store.apply("static", [pool(name="renamed", location="Frankfurt")])
        found = receiver.wait_for("/pools", 2)
    assert [r.json()["postObjectState"]["resourcePoolId"] for r in found] == [POOL_ID] * 2
