"""Subscriptions belong to their client, end to end: real Envoy, real client certificates,
the example access policy (examples/access-policy.yaml: `smo-*` certificates subscribe, the
dev client is o2ims-admin), for inventory and alarm subscriptions. Two subscribers, north
and south, and the admin: a subscriber lists, reads and deletes only its own (another's id
is answered exactly like an unknown one); the admin sees and deletes all; subscriptions
from before owners were recorded are the admin's alone."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from devstack.pki import client_uri, issue_client_certificate
from devstack.processes import wait_until
from devstack.stack import LocalStack
from server.subscriptions.store import GENERATION_KEY

from .conftest import rest_client, start_stack

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Collection:
    path: str
    id_field: str
    # The Redis key prefix of its subscriptions (server/subscriptions/store.py).
    redis_prefix: str

    def __str__(self) -> str:  # readable test ids
        return self.path


INVENTORY = Collection(
    "/o2ims-infrastructureInventory/v1/subscriptions", "subscriptionId", "subscription"
)
ALARMS = Collection(
    "/o2ims-infrastructureMonitoring/v1/alarmSubscriptions",
    "alarmSubscriptionId",
    "alarm_subscription",
)
BOTH_KINDS = [INVENTORY, ALARMS]


@dataclass
class Clients:
    """REST clients holding each party's certificate, and a raw client of the stack's Redis
    (ground truth: who owns what)."""

    north: httpx.Client
    south: httpx.Client
    admin: httpx.Client
    redis: redis.Redis

    def owner_of(self, collection: Collection, subscription_id: str) -> str | None:
        owner = self.redis.hget(f"{collection.redis_prefix}:{subscription_id}", "owner")
        return None if owner is None else str(owner)


def owner_of_cert(name: str) -> str:
    """The owner the core records for a client certificate: its URI SAN, in the namespace of
    certificate identities (server/auth/identity.py, Identity.owner)."""
    return f"cert-uri:{client_uri(name)}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory)  # the example access policy
    yield running
    running.stop()


@pytest.fixture(scope="module")
def clients(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    out = tmp_path_factory.mktemp("clients")
    parties = Clients(
        north=rest_client(stack, issue_client_certificate(stack.pki.directory, "smo-north", out)),
        south=rest_client(stack, issue_client_certificate(stack.pki.directory, "smo-south", out)),
        admin=rest_client(stack, stack.pki.client),
        redis=redis.Redis.from_url(stack.redis_url, decode_responses=True),
    )
    yield parties
    for http in (parties.north, parties.south, parties.admin):
        http.close()
    parties.redis.close()


def create(http: httpx.Client, collection: Collection, **fields: str) -> dict[str, Any]:
    body = {"callback": f"http://127.0.0.1:9/{uuid.uuid4()}", **fields}
    response = http.post(collection.path, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def listed_ids(http: httpx.Client, collection: Collection) -> list[str]:
    response = http.get(collection.path)
    assert response.status_code == 200, response.text
    return [item[collection.id_field] for item in response.json()]


def assert_answered_like_an_unknown_id(
    http: httpx.Client, method: str, collection: Collection, hidden_id: str
) -> None:
    """`method` on another client's subscription gets exactly the 404 an id that does not
    exist gets: status, content type, header names and ProblemDetails (ids aside)."""
    unknown_id = str(uuid.uuid4())
    hidden = http.request(method, f"{collection.path}/{hidden_id}")
    unknown = http.request(method, f"{collection.path}/{unknown_id}")
    assert hidden.status_code == unknown.status_code == 404, hidden.text
    assert hidden.headers["content-type"] == unknown.headers["content-type"]
    assert hidden.headers["content-type"] == "application/problem+json"
    assert set(hidden.headers) == set(unknown.headers)
    neutral = hidden.text.replace(hidden_id, unknown_id)
    assert json.loads(neutral) == unknown.json()


@pytest.mark.parametrize("collection", BOTH_KINDS, ids=str)
def test_each_subscriber_lists_reads_and_deletes_only_its_own(
    clients: Clients, collection: Collection
) -> None:
    north = create(clients.north, collection)
    south = create(clients.south, collection)
    north_id, south_id = north[collection.id_field], south[collection.id_field]

    # Lists: each subscriber only what it owns (ground truth from Redis), the admin all.
    for http, name, own, other in (
        (clients.north, "smo-north", north_id, south_id),
        (clients.south, "smo-south", south_id, north_id),
    ):
        ids = listed_ids(http, collection)
        assert own in ids and other not in ids
        for subscription_id in ids:
            assert clients.owner_of(collection, subscription_id) == owner_of_cert(name)
    everything = listed_ids(clients.admin, collection)
    assert north_id in everything and south_id in everything

    # Reads: its own 200; the other's as unknown.
    assert clients.north.get(f"{collection.path}/{north_id}").json() == north
    assert_answered_like_an_unknown_id(clients.south, "GET", collection, north_id)
    assert_answered_like_an_unknown_id(clients.north, "GET", collection, south_id)

    # Deletes: the other's refused as unknown, and left exactly as it was.
    assert_answered_like_an_unknown_id(clients.south, "DELETE", collection, north_id)
    assert clients.admin.get(f"{collection.path}/{north_id}").json() == north
    assert clients.north.get(f"{collection.path}/{north_id}").json() == north
    assert north_id in listed_ids(clients.north, collection)

    # Its own: deleted.
    assert clients.north.delete(f"{collection.path}/{north_id}").status_code == 200
    assert_answered_like_an_unknown_id(clients.north, "GET", collection, north_id)
    assert north_id not in listed_ids(clients.admin, collection)
    assert south_id in listed_ids(clients.south, collection)


@pytest.mark.parametrize("collection", BOTH_KINDS, ids=str)
def test_the_admin_reads_and_deletes_anyones(clients: Clients, collection: Collection) -> None:
    north = create(clients.north, collection)
    south = create(clients.south, collection)
    for created in (north, south):
        location = f"{collection.path}/{created[collection.id_field]}"
        assert clients.admin.get(location).json() == created
        assert clients.admin.delete(location).status_code == 200
    assert_answered_like_an_unknown_id(clients.north, "GET", collection, north[collection.id_field])
    assert_answered_like_an_unknown_id(clients.south, "GET", collection, south[collection.id_field])


@pytest.mark.parametrize("collection", BOTH_KINDS, ids=str)
def test_identical_subscriptions_of_two_clients_both_succeed(
    clients: Clients, collection: Collection
) -> None:
    body = {"callback": f"http://127.0.0.1:9/{uuid.uuid4()}", "consumerSubscriptionId": "same"}
    north = clients.north.post(collection.path, json=body)
    south = clients.south.post(collection.path, json=body)
    assert (north.status_code, south.status_code) == (201, 201), (north.text, south.text)
    north_id = north.json()[collection.id_field]
    south_id = south.json()[collection.id_field]
    assert north_id != south_id

    # The same client again: a duplicate, naming its own subscription and never the other's.
    for http, own, other in (
        (clients.north, north_id, south_id),
        (clients.south, south_id, north_id),
    ):
        again = http.post(collection.path, json=body)
        assert again.status_code == 400, again.text
        assert again.headers["content-type"] == "application/problem+json"
        assert own in again.text
        assert other not in again.text


@pytest.mark.parametrize("collection", BOTH_KINDS, ids=str)
def test_a_subscription_from_before_owners_is_the_admins_alone(
    clients: Clients, collection: Collection
) -> None:
    created = create(clients.north, collection)
    legacy_id = created[collection.id_field]
    # What a subscription written before this change looks like: no owner field. A core of
    # that release wrote no change entry, only the generation: the cores' views load again.
    assert clients.redis.hdel(f"{collection.redis_prefix}:{legacy_id}", "owner") == 1
    clients.redis.incr(GENERATION_KEY)
    wait_until(
        lambda: legacy_id not in listed_ids(clients.north, collection), 5, "the views to reload"
    )

    for http in (clients.north, clients.south):
        assert legacy_id not in listed_ids(http, collection)
        assert_answered_like_an_unknown_id(http, "GET", collection, legacy_id)
        assert_answered_like_an_unknown_id(http, "DELETE", collection, legacy_id)
    assert legacy_id in listed_ids(clients.admin, collection)
    assert clients.admin.get(f"{collection.path}/{legacy_id}").json() == created
    assert clients.admin.delete(f"{collection.path}/{legacy_id}").status_code == 200
    assert clients.owner_of(collection, legacy_id) is None
    assert not clients.redis.exists(f"{collection.redis_prefix}:{legacy_id}")
