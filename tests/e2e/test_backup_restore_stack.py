"""Backup and restore of a running stack, exactly as docs/operations.md ("Backup and restore")
tells an operator: a stack populated through its real interfaces (subscriptions of two SMOs
over REST with their own client certificates, an acknowledged alarm of the static adapter, a
dead letter from a callback that answers 410, a page marker) is backed up with the guide's
lines, its Redis wiped, the cores and notifiers stopped, the backup restored, the gateway
started again; everything works as before, through REST and the dlq command. Then Redis (it
runs append-only) is killed with SIGKILL and started again: the restored state is still there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from devstack.pki import issue_client_certificate
from devstack.processes import wait_until
from devstack.redis_server import RedisServer
from devstack.stack import LocalStack
from tests.backup_procedure import documented, documented_backup
from tests.notifier.receiver import Answer, Received, Receiver

from .conftest import rest_client, start_stack

pytestmark = pytest.mark.e2e

INVENTORY = "/o2ims-infrastructureInventory/v1"
SUBSCRIPTIONS = f"{INVENTORY}/subscriptions"
RESOURCE_TYPES = f"{INVENTORY}/resourceTypes"
ALARMS = "/o2ims-infrastructureMonitoring/v1/alarms"
ALARM_SUBSCRIPTIONS = "/o2ims-infrastructureMonitoring/v1/alarmSubscriptions"
PSU_ALARM_RESOURCE = "7ccff921-32a0-40f0-ab74-c8caba3777d5"  # examples/ocloud.yaml
PAGE_SIZE = 2
GONE = "/gone"  # the receiver answers 410 there: a permanent failure, dead-lettered at once


@dataclass
class Parties:
    """REST clients holding each party's certificate: two SMOs and the admin."""

    north: httpx.Client
    south: httpx.Client
    admin: httpx.Client

    def close(self) -> None:
        for http in (self.north, self.south, self.admin):
            http.close()


@dataclass(frozen=True)
class Subscription:
    path: str  # its collection
    id: str
    owner: str  # "north" or "south"
    body: dict[str, Any]  # as GET answered it before the backup

    @property
    def location(self) -> str:
        return f"{self.path}/{self.id}"


@dataclass(frozen=True)
class Before:
    """What the SMOs and the operator saw before the backup."""

    subscriptions: list[Subscription]
    alarm: httpx.Response  # GET of the acknowledged alarm (body and ETag)
    dead_letters: list[dict[str, str]]  # as `dlq list --json` printed them
    marker: str  # the first page's next-page marker
    second_page: httpx.Response  # what the marker led to


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    started.answer = lambda request: Answer(410 if request.path.startswith(GONE) else 204)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory, {"NETWEAVE_PAGE_SIZE": str(PAGE_SIZE)})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def parties(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parties]:
    out = tmp_path_factory.mktemp("clients")
    made = Parties(
        north=rest_client(stack, issue_client_certificate(stack.pki.directory, "smo-north", out)),
        south=rest_client(stack, issue_client_certificate(stack.pki.directory, "smo-south", out)),
        admin=rest_client(stack, stack.pki.client),
    )
    yield made
    made.close()


def subscribe(
    parties: Parties, owner: str, path: str, id_field: str, body: dict[str, Any]
) -> Subscription:
    http: httpx.Client = getattr(parties, owner)
    created = http.post(path, json=body)
    assert created.status_code == 201, created.text
    subscription_id = created.json()[id_field]
    got = http.get(f"{path}/{subscription_id}")
    assert got.status_code == 200, got.text
    return Subscription(path, subscription_id, owner, got.json())


def edit_inventory(stack: LocalStack, description: str) -> None:
    """Give the first resource pool a new description, atomically (as the README asks)."""
    document = yaml.safe_load(stack.config.inventory.read_text())
    document["resourcePools"][0]["description"] = description
    staged = stack.config.inventory.with_suffix(".edit")
    staged.write_text(yaml.safe_dump(document, sort_keys=False))
    staged.replace(stack.config.inventory)


def notified_of(receiver: Receiver, callback: str, text: str) -> list[Received]:
    """The notifications delivered to `callback` that mention `text`."""
    path = callback.removeprefix(receiver.url)
    return [
        request
        for request in receiver.delivered_to(path)
        if text in request.body.decode(errors="replace")
    ]


def dead_letters(stack: LocalStack) -> list[dict[str, str]]:
    """`python -m server.notifier dlq list --json`, as an operator runs it."""
    listed = subprocess.run(
        [sys.executable, "-m", "server.notifier", "dlq", "list", "--json"],
        env={**os.environ, "REDIS_URL": stack.redis_url},
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]


def next_marker(response: httpx.Response) -> str:
    found = re.search(r"nextpage_opaque_marker=([^&>]+)", response.headers.get("link", ""))
    assert found is not None, response.headers
    return found.group(1)


def psu_alarm(http: httpx.Client) -> dict[str, Any]:
    listed = http.get(ALARMS, params={"filter": f"(eq,resourceID,{PSU_ALARM_RESOURCE})"})
    assert listed.status_code == 200, listed.text
    (alarm,) = listed.json()
    return dict(alarm)


def assert_as_before(parties: Parties, subscriptions: list[Subscription]) -> None:
    """Every subscription is there with the same body; its owner sees and lists it, the
    other SMO gets the 404 of an unknown id."""
    for subscription in subscriptions:
        owner: httpx.Client = getattr(parties, subscription.owner)
        other: httpx.Client = parties.south if subscription.owner == "north" else parties.north
        got = owner.get(subscription.location)
        assert got.status_code == 200, (subscription, got.text)
        assert got.json() == subscription.body
        id_field = next(name for name in got.json() if name.endswith("ubscriptionId"))
        owned = [item[id_field] for item in owner.get(subscription.path).json()]
        assert subscription.id in owned
        assert other.get(subscription.location).status_code == 404
        assert subscription.id not in [
            item[id_field] for item in other.get(subscription.path).json()
        ]


def test_documented_restore_brings_a_wiped_stack_back(
    stack: LocalStack, parties: Parties, receiver: Receiver, tmp_path: Path
) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]

    # Populate through the real interfaces: two SMOs' subscriptions (owners differ).
    subscriptions = [
        subscribe(
            parties,
            "north",
            SUBSCRIPTIONS,
            "subscriptionId",
            {"callback": f"{receiver.url}/north/{run}", "consumerSubscriptionId": "north-1"},
        ),
        subscribe(
            parties,
            "north",
            ALARM_SUBSCRIPTIONS,
            "alarmSubscriptionId",
            {"callback": f"{receiver.url}/north-alarms/{run}", "filter": "NEW"},
        ),
        subscribe(
            parties,
            "south",
            SUBSCRIPTIONS,
            "subscriptionId",
            {
                "callback": f"{receiver.url}{GONE}/{run}",
                "consumerSubscriptionId": "south-1",
                "filter": "(eq,resourceTypeId,x)",
            },
        ),
        subscribe(
            parties,
            "south",
            ALARM_SUBSCRIPTIONS,
            "alarmSubscriptionId",
            {"callback": f"{receiver.url}{GONE}/alarms/{run}"},
        ),
    ]
    # An alarm of the static adapter, acknowledged (the south's alarm callback answers 410
    # to the ACKNOWLEDGE notification: a dead letter).
    wait_until(lambda: psu_alarm(parties.admin) is not None, 15, "the example's PSU alarm")
    alarm = psu_alarm(parties.admin)
    acked = parties.admin.patch(
        f"{ALARMS}/{alarm['alarmEventRecordId']}",
        json={"alarmAcknowledged": True},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert acked.status_code == 200, acked.text
    alarm_before = parties.admin.get(f"{ALARMS}/{alarm['alarmEventRecordId']}")
    assert alarm_before.json()["alarmAcknowledged"] is True
    wait_until(lambda: bool(dead_letters(stack)), 15, "a dead letter")
    letters_before = dead_letters(stack)
    # A page marker, and the page it leads to.
    marker = next_marker(parties.admin.get(RESOURCE_TYPES))
    second_page = parties.admin.get(RESOURCE_TYPES, params={"nextpage_opaque_marker": marker})
    assert second_page.status_code == 200, second_page.text
    timings["populate"] = time.monotonic() - started

    # Back up with the guide's lines, while the gateway runs.
    mark = time.monotonic()
    backup = documented_backup(stack.redis_url, tmp_path)
    verified = documented("verify", stack.redis_url, tmp_path, backup)
    assert verified.returncode == 0, verified.stderr
    timings["backup"] = time.monotonic() - mark

    # Disaster: Redis loses everything while the gateway runs (and writes to it again).
    data = redis.Redis.from_url(stack.redis_url)
    try:
        data.flushall()
    finally:
        data.close()
    # The guide: stop the cores and notifiers, empty Redis, restore, start them again.
    mark = time.monotonic()
    cores, notifiers = len(stack.cores), len(stack.notifiers)
    for process in [*stack.cores, *stack.notifiers]:
        process.stop()
    # Out of the stack's lists: it waits for the ones it starts and requires the rest alive.
    stack.cores.clear()
    stack.notifiers.clear()
    wiped = documented("wipe", stack.redis_url, tmp_path, backup)
    assert wiped.returncode == 0, wiped.stderr
    restored = documented("restore", stack.redis_url, tmp_path, backup)
    assert restored.returncode == 0, restored.stderr
    for index in range(cores):
        stack.start_core(index=index)
    for index in range(notifiers):
        stack.start_notifier(index=index)
    wait_until(lambda: parties.admin.get(INVENTORY).status_code == 200, 30, "REST again")
    timings["restore"] = time.monotonic() - mark

    before = Before(subscriptions, alarm_before, letters_before, marker, second_page)
    assert_restored(stack, parties, receiver, before, f"after-restore {run}")

    # Redis runs append-only: a crash right after the restore loses none of it.
    mark = time.monotonic()
    assert stack.redis is not None
    stack.redis.kill()
    stack.redis = RedisServer(stack.redis.directory, stack.redis.port).start()
    # The core read the page-marker secret at its start: a new start reads it from Redis.
    stack.restart_core(0)
    assert_restored(stack, parties, receiver, before, f"after-crash {run}")
    timings["crash"] = time.monotonic() - mark
    print({name: round(seconds, 2) for name, seconds in timings.items()})


def assert_restored(
    stack: LocalStack, parties: Parties, receiver: Receiver, before: Before, phase: str
) -> None:
    """Everything works as before the backup: subscriptions with their owners, the
    acknowledged alarm unchanged (not even its ETag), the dead letters, the page marker;
    and a new change of the inventory reaches the north's restored subscription."""
    assert_as_before(parties, before.subscriptions)
    alarm = parties.admin.get(before.alarm.request.url.path)
    assert alarm.status_code == 200, alarm.text
    assert alarm.json() == before.alarm.json()
    assert alarm.headers["etag"] == before.alarm.headers["etag"]
    listed = {letter["id"]: letter for letter in dead_letters(stack)}
    for letter in before.dead_letters:
        assert listed.get(letter["id"]) == letter
    # The marker from before the backup continues the listing: the secret is back.
    again = parties.admin.get(RESOURCE_TYPES, params={"nextpage_opaque_marker": before.marker})
    assert again.status_code == 200, again.text
    assert again.json() == before.second_page.json()
    edit_inventory(stack, phase)
    wait_until(
        lambda: bool(notified_of(receiver, before.subscriptions[0].body["callback"], phase)),
        20,
        f"the north's notification of a change {phase}",
    )
