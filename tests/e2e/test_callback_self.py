"""Callbacks never reach the gateway's own listeners, in the `make run` posture (http and
loopback receivers allowed): a subscription pointing at any port of the stack (Envoy's REST
listener, and its admin while that is a TCP port; the core, the ops ports, Redis, the
adapter) is a 400 through Envoy, and one that got into Redis anyway is refused at delivery:
nothing is POSTed (an admin /quitquitquit would stop the edge) and every process lives on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from devstack.processes import free_port, wait_until
from devstack.stack import AWS_PORT_FIELDS, PORT_FIELDS, LocalStack
from server.notifier import keys
from server.store import connect
from server.subscriptions.store import INVENTORY_SUBSCRIPTIONS, SubscriptionStore
from tests.e2e.conftest import start_stack
from tests.e2e.test_subscriptions_rest import assert_problem

pytestmark = pytest.mark.e2e

INVENTORY_SUBSCRIPTIONS_PATH = "/o2ims-infrastructureInventory/v1/subscriptions"
ALARM_SUBSCRIPTIONS_PATH = "/o2ims-infrastructureMonitoring/v1/alarmSubscriptions"
OWN = "one of the gateway's own listeners"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Every listener `make run` has, the Alertmanager adapter's two included."""
    running = start_stack(tmp_path_factory, alertmanager=True)
    yield running
    running.stop()


@pytest.fixture
def subscriptions(stack: LocalStack) -> Iterator[SubscriptionStore]:
    client = connect(stack.redis_url)
    yield SubscriptionStore(client)
    client.close()


# Every listener of this stack; the AWS adapter's (it needs an AWS endpoint) is guarded the
# same way: tests/notifier/test_gateway_endpoints.py checks it is among the stack's own.
STACK_PORT_FIELDS = tuple(name for name in PORT_FIELDS if name not in AWS_PORT_FIELDS)


@pytest.mark.parametrize("port_field", STACK_PORT_FIELDS)
def test_a_callback_at_one_of_the_stacks_ports_is_400(
    stack: LocalStack, rest: httpx.Client, port_field: str
) -> None:
    port = getattr(stack.config, port_field)
    response = rest.post(
        INVENTORY_SUBSCRIPTIONS_PATH,
        json={"callback": f"http://127.0.0.1:{port}/quitquitquit", "consumerSubscriptionId": "x"},
    )
    problem = assert_problem(response, 400)
    assert f"resolves to 127.0.0.1:{port}, {OWN}" in problem["detail"], problem


def test_alarm_subscriptions_are_guarded_too(stack: LocalStack, rest: httpx.Client) -> None:
    port = stack.config.rest_port
    response = rest.post(
        ALARM_SUBSCRIPTIONS_PATH, json={"callback": f"http://localhost:{port}/quitquitquit"}
    )
    assert OWN in assert_problem(response, 400)["detail"]


def test_another_loopback_port_is_still_a_receiver(rest: httpx.Client) -> None:
    response = rest.post(
        INVENTORY_SUBSCRIPTIONS_PATH, json={"callback": f"http://127.0.0.1:{free_port()}/n"}
    )
    assert response.status_code == 201, response.text
    rest.delete(f"{INVENTORY_SUBSCRIPTIONS_PATH}/{response.json()['subscriptionId']}")


def all_alive(stack: LocalStack) -> bool:
    return all(alive for _, alive in stack.processes())


def dead_letters(stack: LocalStack) -> dict[str, dict[str, Any]]:
    """The dead letters, by subscription id (the last one of each)."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        entries: Any = client.xrange(keys.DEAD_LETTERS_KEY)
    finally:
        client.close()
    return {fields.get("subscriptionId", ""): fields for _, fields in entries}


def test_stored_subscriptions_at_the_stacks_ports_are_refused_at_delivery(
    stack: LocalStack,
    rest: httpx.Client,
    subscriptions: SubscriptionStore,
    inventory_file: Path,
) -> None:
    # As if the creation check had been passed by (written before it existed, or by hand):
    # one subscription per port of the stack (Envoy's admin among them while it has one).
    ports = {str(uuid.uuid4()): getattr(stack.config, name) for name in STACK_PORT_FIELDS}
    for subscription_id, port in ports.items():
        subscriptions.create(
            INVENTORY_SUBSCRIPTIONS,
            subscription_id,
            callback=f"http://127.0.0.1:{port}/quitquitquit",
            filter_="",
            consumer_subscription_id="self",
            api_version="v1",
        )
    try:
        document = yaml.safe_load(inventory_file.read_text())
        document["resourcePools"][0]["description"] = f"changed {uuid.uuid4()}"
        inventory_file.write_text(yaml.safe_dump(document, sort_keys=False))

        wait_until(
            lambda: set(ports) <= set(dead_letters(stack)) or not all_alive(stack),
            30,
            "every self-callback refused",
            interval=0.1,
        )
        letters = dead_letters(stack)
        time.sleep(0.5)  # what a /quitquitquit would need to take Envoy down

        assert all_alive(stack), stack.processes()
        for subscription_id, port in ports.items():
            reason = letters[subscription_id]["reason"]
            assert reason.startswith("refused by the callback policy: "), reason
            assert f"resolves to 127.0.0.1:{port}, {OWN}" in reason
        assert rest.get("/o2ims-infrastructureInventory/v1").status_code == 200
        metrics = httpx.get(f"{stack.notifier_ops_url}/metrics", timeout=5).text
        refused = 'o2ims_webhook_delivery_total{outcome="refused"} '
        counted = [
            float(line.removeprefix(refused))
            for line in metrics.splitlines()
            if line.startswith(refused)
        ]
        assert counted and counted[0] >= len(ports), counted
    finally:
        for subscription_id in ports:
            subscriptions.delete(INVENTORY_SUBSCRIPTIONS, subscription_id)
