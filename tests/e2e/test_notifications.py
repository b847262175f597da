"""Notifications end to end (S9, S10, R1): subscriptions made through Envoy (REST, both
majors) and straight to the core (gRPC), an edit of the static adapter's inventory file, and
signed InventoryChangeNotifications arriving at a real HTTP receiver; the O-Cloud Available
registration on start-up."""

from __future__ import annotations

import base64
import copy
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from o2ims.subscriptions.v1 import subscriptions_pb2 as subs
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as subs_grpc

from devstack.processes import wait_until
from devstack.stack import LocalStack
from tests.notifier.receiver import Receiver, verify_signature

from .conftest import start_stack

INVENTORY = "/o2ims-infrastructureInventory"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory, smo_registration_url=f"{receiver.url}/smo/register")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rest(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=10) as client:
        yield client


def secret(stack: LocalStack) -> bytes:
    return base64.b64decode(stack.webhook_secret.removeprefix("whsec_"))


def subscribe_rest(rest: httpx.Client, major: str, callback: str) -> str:
    response = rest.post(
        f"{INVENTORY}/{major}/subscriptions",
        json={"callback": callback, "consumerSubscriptionId": f"rest-{major}"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["subscriptionId"])


def subscribe_grpc(stack: LocalStack, callback: str) -> str:
    with grpc.insecure_channel(stack.grpc_address) as channel:
        created = subs_grpc.SubscriptionServiceStub(channel).CreateSubscription(
            subs.CreateSubscriptionRequest(
                api_version="v1",
                subscription=subs.InventorySubscriptionInfo(
                    callback=callback, consumer_subscription_id="grpc-v1"
                ),
            ),
            timeout=5,
        )
    return str(created.subscription_id)


def edit(path: Path, change: Any) -> None:
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_r1_o_cloud_available_is_registered(
    stack: LocalStack, rest: httpx.Client, receiver: Receiver
) -> None:
    [registration] = receiver.wait_for("/smo/register", 1, timeout=20)
    body = registration.json()
    cloud = rest.get(f"{INVENTORY}/v1").json()
    assert body["oCloudId"] == cloud["oCloudId"]
    assert body["globalCloudId"] == cloud["globalCloudId"]
    assert body["IMS_EP"].startswith(stack.rest_url)
    assert verify_signature(secret(stack), registration)


def test_s9_s10_inventory_edits_notify_every_subscriber_in_its_major(
    stack: LocalStack, rest: httpx.Client, receiver: Receiver
) -> None:
    run = uuid.uuid4().hex[:8]
    paths = {name: f"/{run}/{name}" for name in ("v1", "v2", "grpc")}
    ids = {
        "v1": subscribe_rest(rest, "v1", receiver.url + paths["v1"]),
        "v2": subscribe_rest(rest, "v2", receiver.url + paths["v2"]),
        "grpc": subscribe_grpc(stack, receiver.url + paths["grpc"]),
    }
    original = stack.config.inventory.read_text()
    document = yaml.safe_load(original)
    pool = document["resourcePools"][0]
    pool_id = pool["resourcePoolId"]
    # Not a resource a declared alarm is about: removing that one would be an invalid edit.
    alarmed = {alarm["resourceId"] for alarm in document.get("alarms", [])}
    victim = next(
        r
        for r in document["resources"]
        if r["resourcePoolId"] == pool_id and r["resourceId"] not in alarmed
    )
    added = copy.deepcopy(victim)
    added["resourceId"] = str(uuid.uuid4())
    added.pop("elements", None)
    added["description"] = "added by the test"

    def changes(doc: dict[str, Any]) -> None:
        doc["resourcePools"][0]["description"] = f"modified {run}"  # modify (1)
        doc["resources"].append(added)  # create (0)
        doc["resources"] = [r for r in doc["resources"] if r["resourceId"] != victim["resourceId"]]

    try:
        edit(stack.config.inventory, changes)
        for name, path in paths.items():
            received = receiver.wait_for(path, 3, timeout=20)
            got = [r.json() for r in received]
            by_type = {n["notificationEventType"]: n for n in got}
            assert set(by_type) == {0, 1, 2}, (name, got)
            for notification, request in zip(got, received, strict=True):
                assert verify_signature(secret(stack), request), name
                assert request.headers["webhook-id"] == notification["notificationId"]
                uuid.UUID(notification["notificationId"])
                assert notification["consumerSubscriptionId"] == (
                    f"rest-{name}" if name != "grpc" else "grpc-v1"
                )
            major = "v2" if name == "v2" else "v1"
            modified, created, removed = by_type[1], by_type[0], by_type[2]
            assert modified["objectRef"] == f"{INVENTORY}/{major}/resourcePools/{pool_id}"
            assert modified["priorObjectState"]["description"] != f"modified {run}"
            assert modified["postObjectState"]["description"] == f"modified {run}"
            assert created["objectRef"] == (
                f"{INVENTORY}/{major}/resourcePools/{pool_id}/resources/{added['resourceId']}"
            )
            assert created["postObjectState"]["resourceId"] == added["resourceId"]
            # Only the states the event type defines (spec §3.8).
            assert "priorObjectState" not in created
            assert removed["priorObjectState"]["resourceId"] == victim["resourceId"]
            assert "postObjectState" not in removed
            # The JSON model of the subscription's major: v2 pools carry oCloudSiteId.
            assert ("oCloudSiteId" in modified["postObjectState"]) == (major == "v2")

        # S10: after DELETE, nothing more for that subscription; the others still get theirs.
        assert rest.delete(f"{INVENTORY}/v1/subscriptions/{ids['v1']}").status_code == 200
        before = len(receiver.delivered_to(paths["v1"]))
        edit(
            stack.config.inventory, lambda doc: doc["resourcePools"][0].update(name=f"again {run}")
        )
        receiver.wait_for(paths["v2"], 4, timeout=20)
        receiver.wait_for(paths["grpc"], 4, timeout=20)
        time.sleep(1.0)
        assert len(receiver.delivered_to(paths["v1"])) == before
    finally:
        stack.config.inventory.write_text(original)
        for major, sid in (("v2", ids["v2"]), ("v1", ids["grpc"])):
            rest.delete(f"{INVENTORY}/{major}/subscriptions/{sid}")


def typed(value: Any) -> Any:
    """`value` with every JSON scalar paired with its Python type: 1040 and 1040.0 differ."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def test_object_states_match_the_rest_read_field_by_field_types_included(
    stack: LocalStack, rest: httpx.Client, receiver: Receiver
) -> None:
    run = uuid.uuid4().hex[:8]
    paths = {major: f"/{run}/states-{major}" for major in ("v1", "v2")}
    ids = {}
    for major, path in paths.items():
        # No consumerSubscriptionId: the notifications leave it out (never "").
        response = rest.post(
            f"{INVENTORY}/{major}/subscriptions", json={"callback": receiver.url + path}
        )
        assert response.status_code == 201, response.text
        ids[major] = response.json()["subscriptionId"]
    original = stack.config.inventory.read_text()
    pool_id = yaml.safe_load(original)["resourcePools"][0]["resourcePoolId"]
    extensions = {"memoryGb": 1040, "ratio": 0.25, "racks": [1, 2], "site": {"floor": 3}}

    def changes(doc: dict[str, Any]) -> None:
        doc["resourcePools"][0]["description"] = f"typed {run}"
        doc["resourcePools"][0]["extensions"] = extensions

    try:
        edit(stack.config.inventory, changes)
        for major, path in paths.items():
            # Earlier tests' restores may notify too: take this test's modification.
            def ours(path: str = path) -> list[dict[str, Any]]:
                return [
                    n
                    for n in receiver.notifications(path)
                    if (n.get("postObjectState") or {}).get("description") == f"typed {run}"
                ]

            wait_until(lambda: bool(ours()), timeout=20, what=f"the {major} modification")
            [notification] = ours()
            assert "consumerSubscriptionId" not in notification
            state = notification["postObjectState"]
            read = rest.get(f"{INVENTORY}/{major}/resourcePools/{pool_id}")
            assert read.status_code == 200, read.text

            assert state["extensions"]["memoryGb"] == 1040
            assert type(state["extensions"]["memoryGb"]) is int  # not 1040.0
            assert typed(state) == typed(read.json()), major
    finally:
        stack.config.inventory.write_text(original)
        for major, sid in ids.items():
            rest.delete(f"{INVENTORY}/{major}/subscriptions/{sid}")


def test_notifier_is_part_of_the_stack(stack: LocalStack) -> None:
    assert ("notifier", True) in stack.processes()
    metrics = httpx.get(f"{stack.notifier_ops_url}/metrics", timeout=5).text
    assert "o2ims_webhook_delivery_total" in metrics
    assert "o2ims_webhook_dead_letters" in metrics
