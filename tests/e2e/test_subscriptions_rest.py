"""Subscriptions, alarm subscriptions, alarms and Monitoring api_versions over REST, through
the real stack (Envoy, the core, Redis): the O2ims checklist S1-S7, M6, CONF 7.3.6 (the
subscription cases), 7.3.11 and 7.3.12."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from devstack.stack import LocalStack

pytestmark = pytest.mark.e2e

INVENTORY = "/o2ims-infrastructureInventory"
MONITORING = "/o2ims-infrastructureMonitoring"
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@dataclass(frozen=True)
class Collection:
    """One REST collection of subscriptions."""

    path: str
    id_field: str
    # The Redis key prefix of its subscriptions (subscription:<id>, ...).
    redis_prefix: str
    # A filter value the collection accepts.
    sample_filter: str

    def __str__(self) -> str:  # readable test ids
        return self.path


INVENTORY_V1 = Collection(
    f"{INVENTORY}/v1/subscriptions", "subscriptionId", "subscription", "(eq,resourceTypeId,x)"
)
INVENTORY_V2 = Collection(
    f"{INVENTORY}/v2/subscriptions", "subscriptionId", "subscription", "(eq,resourceTypeId,x)"
)
ALARM_V1 = Collection(
    f"{MONITORING}/v1/alarmSubscriptions", "alarmSubscriptionId", "alarm_subscription", "NEW"
)
ALL = [INVENTORY_V1, INVENTORY_V2, ALARM_V1]
BOTH_KINDS = [INVENTORY_V1, ALARM_V1]


def callback() -> str:
    """A callback no other test uses, so tests never collide as duplicates."""
    return f"https://smo.example.net/notify/{uuid.uuid4()}"


def body_of(response: httpx.Response) -> Any:
    return json.loads(response.content)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 7807 ProblemDetails with the given status (checklist G2)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    problem: dict[str, Any] = body_of(response)
    assert problem["status"] == status
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    assert "instance" not in problem
    assert not any(name.startswith(("grpc-", "x-o2ims-")) for name in response.headers)
    return problem


def create(rest: httpx.Client, collection: Collection, **fields: str) -> dict[str, Any]:
    response = rest.post(collection.path, json={"callback": callback(), **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = body_of(response)
    return created


# --- S1: callback required -----------------------------------------------------------------


@pytest.mark.parametrize("collection", ALL, ids=str)
def test_post_without_callback_is_400_problem_details(
    rest: httpx.Client, collection: Collection
) -> None:
    problem = assert_problem(
        rest.post(collection.path, json={"consumerSubscriptionId": "smo-1"}), 400
    )
    assert "callback" in problem["detail"]
    assert_problem(rest.post(collection.path, json={"callback": "not-a-url"}), 400)


# --- S2: creation -------------------------------------------------------------------------


@pytest.mark.parametrize("collection", ALL, ids=str)
def test_post_echoes_the_subscription_with_a_server_generated_id(
    stack: LocalStack, rest: httpx.Client, collection: Collection
) -> None:
    url = callback()
    response = rest.post(
        collection.path,
        json={
            "callback": url,
            "consumerSubscriptionId": "smo-42",
            "filter": collection.sample_filter,
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    created = body_of(response)
    subscription_id = created[collection.id_field]
    assert uuid.UUID(subscription_id).version == 4
    assert created == {
        collection.id_field: subscription_id,
        "consumerSubscriptionId": "smo-42",
        "filter": collection.sample_filter,
        "callback": url,
    }
    assert response.headers["location"] == f"{stack.rest_url}{collection.path}/{subscription_id}"


@pytest.mark.parametrize("collection", ALL, ids=str)
def test_optional_fields_without_a_value_are_left_out(
    rest: httpx.Client, collection: Collection
) -> None:
    created = create(rest, collection)
    assert "consumerSubscriptionId" not in created
    assert "filter" not in created
    got = rest.get(f"{collection.path}/{created[collection.id_field]}").json()
    assert "consumerSubscriptionId" not in got
    assert "filter" not in got


@pytest.mark.parametrize("collection", ALL, ids=str)
def test_post_answers_201_created(rest: httpx.Client, collection: Collection) -> None:
    response = rest.post(collection.path, json={"callback": callback()})
    assert response.status_code == 201, response.text
    assert response.headers["location"].endswith(body_of(response)[collection.id_field])
    # The core's status marker is for the edge only.
    assert not any(name.startswith(("x-o2ims-", "x-http-status")) for name in response.headers)


def test_the_major_a_subscription_was_created_through_is_stored(
    stack: LocalStack, rest: httpx.Client
) -> None:
    through_v1 = create(rest, INVENTORY_V1)["subscriptionId"]
    through_v2 = create(rest, INVENTORY_V2)["subscriptionId"]
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        assert client.hget(f"subscription:{through_v1}", "apiVersion") == "v1"
        assert client.hget(f"subscription:{through_v2}", "apiVersion") == "v2"
    finally:
        client.close()


# --- S3: client-supplied id ----------------------------------------------------------------


@pytest.mark.parametrize("collection", ALL, ids=str)
def test_client_supplied_id_is_rejected(rest: httpx.Client, collection: Collection) -> None:
    problem = assert_problem(
        rest.post(
            collection.path,
            json={"callback": callback(), collection.id_field: str(uuid.uuid4())},
        ),
        400,
    )
    assert collection.id_field in problem["detail"]


# --- S4: duplicates -----------------------------------------------------------------------


@pytest.mark.parametrize("collection", ALL, ids=str)
def test_identical_repost_is_400(rest: httpx.Client, collection: Collection) -> None:
    body = {
        "callback": callback(),
        "consumerSubscriptionId": "dup",
        "filter": collection.sample_filter,
    }
    first = rest.post(collection.path, json=body)
    assert first.status_code == 201, first.text
    problem = assert_problem(rest.post(collection.path, json=body), 400)
    assert body_of(first)[collection.id_field] in problem["detail"]


def test_a_duplicate_across_inventory_majors_is_400(rest: httpx.Client) -> None:
    # One collection serves both majors, so the same subscription through /v2 duplicates.
    body = {"callback": callback()}
    assert rest.post(INVENTORY_V1.path, json=body).status_code == 201
    assert_problem(rest.post(INVENTORY_V2.path, json=body), 400)


# --- S5 and S6: list and read -------------------------------------------------------------


@pytest.mark.parametrize("collection", ALL, ids=str)
def test_list_is_a_bare_array_including_the_new_subscription(
    rest: httpx.Client, collection: Collection
) -> None:
    created = create(rest, collection, consumerSubscriptionId="listed")
    response = rest.get(collection.path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    listed = body_of(response)
    assert isinstance(listed, list)
    assert created in listed
    ids = [item[collection.id_field] for item in listed]
    assert len(ids) == len(set(ids)), "unique"


@pytest.mark.parametrize("collection", BOTH_KINDS, ids=str)
def test_list_filter_by_consumer_subscription_id(
    rest: httpx.Client, collection: Collection
) -> None:
    marker = str(uuid.uuid4())
    created = create(rest, collection, consumerSubscriptionId=marker)
    response = rest.get(collection.path, params={"filter": f"(eq,consumerSubscriptionId,{marker})"})
    assert response.status_code == 200
    assert body_of(response) == [created]


@pytest.mark.parametrize("collection", ALL, ids=str)
def test_get_by_id_and_unknown_id(rest: httpx.Client, collection: Collection) -> None:
    created = create(rest, collection)
    response = rest.get(f"{collection.path}/{created[collection.id_field]}")
    assert response.status_code == 200
    assert body_of(response) == created
    assert_problem(rest.get(f"{collection.path}/{uuid.uuid4()}"), 404)
    assert_problem(rest.get(f"{collection.path}/not-a-uuid"), 404)


def test_a_subscription_is_readable_through_either_inventory_major(rest: httpx.Client) -> None:
    created = create(rest, INVENTORY_V1)
    response = rest.get(f"{INVENTORY_V2.path}/{created['subscriptionId']}")
    assert response.status_code == 200
    assert body_of(response) == created


def test_an_unserved_major_is_404(rest: httpx.Client) -> None:
    assert_problem(rest.get(f"{INVENTORY}/v3/subscriptions"), 404)
    assert_problem(rest.post(f"{INVENTORY}/v3/subscriptions", json={"callback": callback()}), 404)
    assert_problem(rest.get(f"{MONITORING}/v2/alarmSubscriptions"), 404)


# --- S7 / CONF 7.3.12: delete ---------------------------------------------------------------


@pytest.mark.parametrize("collection", ALL, ids=str)
def test_delete_is_200_then_get_is_404(rest: httpx.Client, collection: Collection) -> None:
    created = create(rest, collection)
    location = f"{collection.path}/{created[collection.id_field]}"
    response = rest.delete(location)
    assert response.status_code == 200, response.text
    assert response.content in (b"", b"{}"), response.content
    assert_problem(rest.get(location), 404)
    assert created not in body_of(rest.get(collection.path))
    # The same subscription may be created again once deleted.
    again = rest.post(collection.path, json={"callback": created["callback"]})
    assert again.status_code == 201, again.text


@pytest.mark.parametrize("collection", ALL, ids=str)
def test_delete_unknown_is_404(rest: httpx.Client, collection: Collection) -> None:
    problem = assert_problem(rest.delete(f"{collection.path}/{uuid.uuid4()}"), 404)
    assert "not found" in problem["detail"]


# --- CONF 7.3.11: bodies that are not JSON ----------------------------------------------------


@pytest.mark.parametrize("collection", BOTH_KINDS, ids=str)
@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"callback": "https://smo.example.net/x",', "application/json"),
        (b"this is not json", "application/json"),
        (
            b'<?xml version="1.0"?><subscription><callback>https://smo.example.net/x'
            b"</callback></subscription>",
            "application/xml",
        ),
    ],
    ids=["truncated-json", "junk", "xml"],
)
def test_a_body_that_is_not_json_is_400(
    rest: httpx.Client, collection: Collection, content: bytes, content_type: str
) -> None:
    response = rest.post(collection.path, content=content, headers={"content-type": content_type})
    assert_problem(response, 400)


# --- CONF 7.3.6: methods the API does not define -------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", INVENTORY_V1.path),
        ("PATCH", ALARM_V1.path),
        ("POST", f"{MONITORING}/v1/alarms"),
        ("PUT", f"{INVENTORY_V1.path}/0b7a3c52-3c2e-4f4e-9a51-6a2d1d0c9f11"),
    ],
)
def test_an_undefined_method_is_405(rest: httpx.Client, method: str, path: str) -> None:
    assert_problem(rest.request(method, path, json={}), 405)


# --- Monitoring: api_versions and alarms ----------------------------------------------------


def test_monitoring_api_versions(stack: LocalStack, rest: httpx.Client) -> None:
    everything = rest.get(f"{MONITORING}/api_versions")
    assert everything.status_code == 200
    assert body_of(everything) == {
        "uriPrefix": f"{stack.rest_url}{MONITORING}",
        "apiVersions": [{"version": "1.1.0"}],
    }
    major = rest.get(f"{MONITORING}/v1/api_versions")
    assert major.status_code == 200
    assert body_of(major)["uriPrefix"] == f"{stack.rest_url}{MONITORING}/v1"


def test_alarm_list_is_a_bare_array_and_an_unknown_alarm_is_404(rest: httpx.Client) -> None:
    response = rest.get(f"{MONITORING}/v1/alarms")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    listed = body_of(response)
    # The example inventory's declared alarms (tests/e2e/test_alarm_sources.py has more).
    assert isinstance(listed, list) and {type(a) for a in listed} <= {dict}
    assert_problem(rest.get(f"{MONITORING}/v1/alarms/{uuid.uuid4()}"), 404)


def test_grpc_reflection_lists_the_new_services(stack: LocalStack) -> None:
    listed = subprocess.run(
        [GRPCURL, "-plaintext", stack.grpc_address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert "o2ims.subscriptions.v1.SubscriptionService" in listed
    assert "o2ims.monitoring.v1.MonitoringService" in listed
