"""Correlation ids and JSON logs through the whole stack (issue 16, acceptance): one REST call
with `x-correlation-id: X` creates a subscription, an adapter's inventory edit notifies it,
and `grep X` across the stack's logs tells the call's story (Envoy's access line, the core's
line, the audit record, the notifier taking the subscription on) while the notification is
told by its own id (the notifier's lines, the webhook's X-Correlation-ID). A notification a
call caused (an alarm acknowledged with `x-correlation-id: Y`) reaches its subscriber with
`X-Correlation-ID: Y`. Envoy's access log records every request here
(NETWEAVE_ENVOY_ACCESS_LOG=all; by default it records the failures only). A malformed id is
replaced and logged nowhere; every line of every log is one JSON object; SIGUSR1 / SIGUSR2
change the core's level while it runs."""

from __future__ import annotations

import json
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devstack.processes import wait_until
from devstack.stack import LocalStack
from netweave import correlation
from netweave.headers import CORRELATION_ID_HEADER, CORRELATION_ID_PATTERN
from netweave.version import version
from server.store import connect
from server.subscriptions.store import INVENTORY_SUBSCRIPTIONS
from tests.core_process import complete_lines
from tests.notifier.receiver import Received, Receiver

from .conftest import start_stack

pytestmark = pytest.mark.e2e

INVENTORY = "/o2ims-infrastructureInventory/v1"
POOLS = f"{INVENTORY}/resourcePools"
SUBSCRIPTIONS = f"{INVENTORY}/subscriptions"
MONITORING = "/o2ims-infrastructureMonitoring/v1"
ALARMS = f"{MONITORING}/alarms"
ALARM_SUBSCRIPTIONS = f"{MONITORING}/alarmSubscriptions"
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
# Envoy flushes its access log once a second; deliveries follow the adapter's poll.
LOG_WAIT_S = 10.0
DELIVERY_WAIT_S = 20.0
# Every log file a default ephemeral stack writes under stack.logs.
EXPECTED_LOGS = {
    "core.log",
    "notifier.log",
    "adapter-static.log",
    "envoy.log",
    "audit.log",
    "audit-edge.log",
}
AUDIT_LOGS = {"audit.log", "audit-edge.log"}
APPLICATION_FIELDS = ("ts", "level", "component", "version")
ACCESS_FIELDS = ("ts", "component", "correlation_id", "request_id", "method", "path", "status")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory, envoy_access_log="all")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rest(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=10) as client:
        yield client


def new_id(prefix: str) -> str:
    """A well-formed correlation id no other run or test uses."""
    return f"{prefix}-{uuid.uuid4().hex}"


def parsed(path: Path) -> list[dict[str, Any]]:
    """Every line of `path` as a JSON object; fails naming the file and line of the first one
    that is not."""
    records = []
    for number, line in enumerate(complete_lines(path.read_text(errors="replace")), 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name}:{number} is not JSON: {line!r}") from None
        assert isinstance(record, dict), f"{path.name}:{number} is not a JSON object: {line!r}"
        records.append(record)
    return records


def records_where(path: Path, **fields: Any) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [r for r in parsed(path) if all(r.get(k) == v for k, v in fields.items())]


def wait_for_records(
    path: Path, timeout: float = LOG_WAIT_S, **fields: Any
) -> list[dict[str, Any]]:
    """The records of `path` with `fields`, once there is at least one."""
    return wait_until(
        lambda: records_where(path, **fields), timeout, f"a line with {fields} in {path.name}"
    )


def access_line(stack: LocalStack, correlation_id: str) -> dict[str, Any]:
    """Envoy's access log record of the request with `correlation_id` (the access log shares
    envoy.log with Envoy's application log: access records have a status)."""
    records = [
        r
        for r in wait_for_records(stack.logs / "envoy.log", correlation_id=correlation_id)
        if "status" in r
    ]
    assert len(records) == 1, records
    return records[0]


def grep(stack: LocalStack, text: str) -> dict[str, list[str]]:
    """`grep -r text stack.logs`: the lines holding `text`, by log file name."""
    found: dict[str, list[str]] = {}
    for path in sorted(stack.logs.glob("*.log")):
        lines = [line for line in path.read_text(errors="replace").splitlines() if text in line]
        if lines:
            found[path.name] = lines
    return found


def first_notification(received: list[Received], **fields: Any) -> Received:
    matching = [r for r in received if all(r.json().get(k) == v for k, v in fields.items())]
    assert matching, [r.json() for r in received]
    return matching[0]


def test_a_calls_id_and_its_notifications_id_tell_their_story_in_every_log(
    stack: LocalStack, rest: httpx.Client, receiver: Receiver, inventory_file: Path
) -> None:
    call_id = new_id("smo-create")
    callback_path = f"/{call_id}/inventory"
    created = rest.post(
        SUBSCRIPTIONS,
        json={"callback": receiver.url + callback_path},
        headers={CORRELATION_ID_HEADER: call_id},
    )
    assert created.status_code == 201, created.text
    assert created.headers[CORRELATION_ID_HEADER] == call_id
    subscription_id = created.json()["subscriptionId"]

    access = access_line(stack, call_id)
    assert (access["method"], access["route"], access["status"]) == ("POST", SUBSCRIPTIONS, 201)
    core_lines = wait_for_records(stack.logs / "core.log", correlation_id=call_id)
    assert any(
        line["event"] == "subscription_created" and line["subscription_id"] == subscription_id
        for line in core_lines
    ), core_lines
    [audit] = wait_for_records(stack.audit_log, correlation_id=call_id)
    assert (audit["source"], audit["method"], audit["path"]) == ("core", "POST", SUBSCRIPTIONS)
    assert (audit["decision"], audit["status"]) == ("allow", 201)
    # An admitted call: the edge's audit trail is of the calls Envoy refused itself.
    assert not records_where(stack.edge_audit_log, correlation_id=call_id)
    client = connect(stack.redis_url)
    try:
        stored = client.hget(INVENTORY_SUBSCRIPTIONS.key(subscription_id), correlation.STORED_FIELD)
    finally:
        client.close()
    assert stored == call_id.encode()
    [started] = wait_for_records(
        stack.logs / "notifier.log", event="delivery_worker_started", correlation_id=call_id
    )
    assert started["subscription_id"] == subscription_id

    # An adapter's change: no call caused it, so its notification is its own correlation id.
    document = yaml.safe_load(inventory_file.read_text())
    document["resourcePools"][0]["description"] = f"edited by {call_id}"
    edited = inventory_file.with_suffix(".edit")
    edited.write_text(yaml.safe_dump(document, sort_keys=False))
    edited.replace(inventory_file)
    webhook = first_notification(
        receiver.wait_for(callback_path, 1, timeout=DELIVERY_WAIT_S), notificationEventType=1
    )
    notification_id = webhook.json()["notificationId"]
    assert webhook.json()["postObjectState"]["description"] == f"edited by {call_id}"
    assert webhook.headers["x-correlation-id"] == notification_id
    assert webhook.headers["webhook-id"] == notification_id
    [delivered] = wait_for_records(
        stack.logs / "notifier.log", event="delivery_succeeded", notification_id=notification_id
    )
    assert delivered["correlation_id"] == notification_id
    assert delivered["subscription_id"] == subscription_id
    assert delivered["status"] == 204

    # grep <id> across the stack's logs: the call's story, then the notification's.
    story = grep(stack, call_id)
    assert {"envoy.log", "core.log", "audit.log", "notifier.log"} <= story.keys(), story
    assert "notifier.log" in grep(stack, notification_id)


def test_an_alarm_acknowledged_in_a_call_reaches_its_subscriber_with_the_calls_id(
    stack: LocalStack, rest: httpx.Client, receiver: Receiver
) -> None:
    subscribe_id = new_id("smo-alarm-sub")
    callback_path = f"/{subscribe_id}/alarms"
    subscribed = rest.post(
        ALARM_SUBSCRIPTIONS,
        json={"callback": receiver.url + callback_path},
        headers={CORRELATION_ID_HEADER: subscribe_id},
    )
    assert subscribed.status_code == 201, subscribed.text
    subscription_id = subscribed.json()["alarmSubscriptionId"]
    # The notifier delivers the subscription before the acknowledge is made.
    wait_for_records(
        stack.logs / "notifier.log", event="delivery_worker_started", correlation_id=subscribe_id
    )
    # One of the example inventory's active alarms.
    active = [a for a in rest.get(ALARMS).json() if not a["alarmAcknowledged"]]
    assert active, "the example inventory has unacknowledged alarms"
    alarm_id = active[0]["alarmEventRecordId"]

    call_id = new_id("smo-ack")
    acknowledged = rest.patch(
        f"{ALARMS}/{alarm_id}",
        json={"alarmAcknowledged": True},
        headers={**MERGE_PATCH, CORRELATION_ID_HEADER: call_id},
    )
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.headers[CORRELATION_ID_HEADER] == call_id

    webhook = first_notification(
        receiver.wait_for(callback_path, 1, timeout=DELIVERY_WAIT_S),
        notificationEventType=3,
        alarmEventRecordId=alarm_id,
    )
    notification_id = webhook.json()["notificationId"]
    assert webhook.headers["x-correlation-id"] == call_id
    assert webhook.headers["webhook-id"] == notification_id

    access = access_line(stack, call_id)
    assert (access["method"], access["status"]) == ("PATCH", 200)
    [audit] = wait_for_records(stack.audit_log, correlation_id=call_id)
    assert (audit["method"], audit["path"], audit["status"]) == (
        "PATCH",
        f"{ALARMS}/{alarm_id}",
        200,
    )
    notifier = stack.logs / "notifier.log"
    [matched] = wait_for_records(notifier, event="event_matched", correlation_id=call_id)
    assert matched["api"] == "alarm" and notification_id in matched["notification_ids"]
    [delivered] = wait_for_records(
        notifier, event="delivery_succeeded", notification_id=notification_id
    )
    assert delivered["correlation_id"] == call_id
    assert delivered["subscription_id"] == subscription_id
    story = grep(stack, call_id)
    assert {"envoy.log", "audit.log", "notifier.log"} <= story.keys(), story


@pytest.mark.parametrize(
    "malformed",
    [f"bad id {uuid.uuid4().hex}", (uuid.uuid4().hex * 7)[:200]],
    ids=["spaces", "200-chars"],
)
def test_a_malformed_id_is_replaced_and_written_to_no_log(
    stack: LocalStack, rest: httpx.Client, malformed: str
) -> None:
    response = rest.get(POOLS, headers={CORRELATION_ID_HEADER: malformed})
    assert response.status_code == 200
    generated = response.headers[CORRELATION_ID_HEADER]
    assert re.fullmatch(CORRELATION_ID_PATTERN, generated) and generated != malformed
    # The call was logged (under the generated id) before the logs are searched.
    assert access_line(stack, generated)["status"] == 200
    wait_for_records(stack.audit_log, correlation_id=generated)
    # Neither the value nor a cut-down version of it (its first 128 characters, its
    # well-formed tail) went anywhere.
    for fragment in (malformed, malformed[:128], malformed.rsplit(maxsplit=1)[-1]):
        assert not grep(stack, fragment), fragment


def test_calls_refused_at_the_edge_or_in_the_core_are_logged_under_their_ids(
    stack: LocalStack, rest: httpx.Client
) -> None:
    bad_token = new_id("smo-401")
    unknown_path = new_id("smo-404-edge")
    unknown_pool = new_id("smo-404-core")
    responses = {
        bad_token: rest.get(
            POOLS, headers={CORRELATION_ID_HEADER: bad_token, "authorization": "Bearer x"}
        ),
        unknown_path: rest.get("/nowhere", headers={CORRELATION_ID_HEADER: unknown_path}),
        unknown_pool: rest.get(
            f"{POOLS}/{uuid.uuid4()}", headers={CORRELATION_ID_HEADER: unknown_pool}
        ),
    }
    statuses = {bad_token: 401, unknown_path: 404, unknown_pool: 404}
    for call_id, response in responses.items():
        assert response.status_code == statuses[call_id], response.text
        assert response.headers[CORRELATION_ID_HEADER] == call_id
        assert access_line(stack, call_id)["status"] == statuses[call_id]
    [refused] = wait_for_records(stack.edge_audit_log, correlation_id=bad_token)
    assert (refused["source"], refused["decision"], refused["status"]) == ("edge", "deny", 401)
    [missing] = wait_for_records(stack.audit_log, correlation_id=unknown_pool)
    assert (missing["source"], missing["status"]) == ("core", 404)


def test_sigusr1_and_sigusr2_change_the_cores_level_while_it_runs(
    stack: LocalStack, rest: httpx.Client, receiver: Receiver
) -> None:
    assert stack.core is not None
    core = stack.core
    core_log = stack.logs / "core.log"

    def level_changes() -> list[tuple[str, str]]:
        return [
            (r["level_from"], r["level_to"])
            for r in records_where(core_log, event="log_level_changed")
        ]

    def step(sig: signal.Signals, expected: tuple[str, str]) -> None:
        before = len(level_changes())
        core.signal(sig)
        wait_until(lambda: len(level_changes()) > before, 5, f"the core's {sig.name} line")
        assert level_changes()[before:] == [expected]

    def create_subscription() -> str:
        assert core.alive()
        call_id = new_id("smo-level")
        response = rest.post(
            SUBSCRIPTIONS,
            json={"callback": f"{receiver.url}/{call_id}"},
            headers={CORRELATION_ID_HEADER: call_id},
        )
        assert response.status_code == 201, response.text
        # The call is over (audited) before its log line is looked for.
        wait_for_records(stack.audit_log, correlation_id=call_id)
        return call_id

    step(signal.SIGUSR1, ("info", "debug"))
    at_debug = create_subscription()
    assert wait_for_records(core_log, event="subscription_created", correlation_id=at_debug)
    step(signal.SIGUSR2, ("debug", "info"))
    step(signal.SIGUSR2, ("info", "warning"))
    at_warning = create_subscription()
    step(signal.SIGUSR1, ("warning", "info"))
    at_info = create_subscription()
    assert wait_for_records(core_log, event="subscription_created", correlation_id=at_info)
    # At warning the create's info line was not written; the audit record was.
    assert not records_where(core_log, correlation_id=at_warning)
    assert records_where(stack.audit_log, correlation_id=at_warning)
    [changed] = records_where(core_log, event="log_level_changed", level_to="warning")
    assert {field: changed[field] for field in APPLICATION_FIELDS[2:]} == {
        "component": "core",
        "version": version(),
    }


def test_every_line_of_every_log_in_the_stack_is_one_json_object(
    stack: LocalStack, rest: httpx.Client
) -> None:
    """Runs last, after the module's traffic, refused calls and level changes, and stops the
    stack: what the processes write as they stop is checked too (Envoy, at its `warn` level,
    writes its first application line then). Redis's own log (stack.config.state_dir /
    "redis") is not netweave's and not checked."""
    assert rest.get(POOLS).status_code == 200
    stack.stop()
    logs = {path.name: path for path in stack.logs.glob("*.log")}
    assert logs.keys() >= EXPECTED_LOGS, sorted(logs)
    envoy_application = records_where(stack.logs / "envoy.log", component="envoy", level="warning")
    assert envoy_application, "Envoy's application log was not checked: it wrote no line"
    for name, path in sorted(logs.items()):
        records = parsed(path)
        assert records, f"{name} is empty"
        for number, record in enumerate(records, 1):
            where = f"{name}:{number}: {record}"
            if name in AUDIT_LOGS:
                assert record["audit"] == "o2ims", where
                assert {"ts", "source", "correlation_id", "status"} <= record.keys(), where
            elif name == "envoy.log" and "level" not in record:  # an access log record
                assert set(ACCESS_FIELDS) <= record.keys(), where
                assert record["component"] == "envoy", where
                assert re.fullmatch(CORRELATION_ID_PATTERN, record["correlation_id"]), where
            else:  # an application log line
                assert set(APPLICATION_FIELDS) <= record.keys(), where
                assert record["component"] == name.removesuffix(".log"), where
                assert record["version"] == version(), where
                assert record["level"] in {"debug", "info", "warning", "error", "critical"}
                assert "event" in record or "message" in record, where
