"""The Alertmanager adapter in the whole stack (`make run`'s LocalStack): a webhook becomes
an O2ims alarm record on the REST API, about the resource its `instance` label names, and a
restart of the adapter neither clears nor repeats it."""

from __future__ import annotations

import base64
import json
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.alertmanager.alarms import definition_id
from devstack.processes import metric_sum, port_open, wait_until
from devstack.stack import LocalStack, StackConfig
from tests.adapters.alertmanager.conftest import alert, notification, post
from tests.adapters.alertmanager.test_real_alertmanager import BINARY as ALERTMANAGER_BINARY
from tests.adapters.alertmanager.test_real_alertmanager import Alertmanager, _iso
from tests.notifier.receiver import Receiver, verify_signature

pytestmark = pytest.mark.e2e

# A resource of the example inventory, and its id.
NODE = "ber-fe01-du01"
NODE_ID = "7ccff921-32a0-40f0-ab74-c8caba3777d5"
DEFINITION = definition_id("alertmanager", "NodeDown")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = LocalStack(
        StackConfig.ephemeral(tmp_path_factory.mktemp("stack"), alertmanager=True)
    ).start()
    yield running
    running.stop()


def alarm_records(stack: LocalStack) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{stack.rest_url}/o2ims-infrastructureMonitoring/v1/alarms",
        headers=stack.dev_token_header(),
    )
    with urllib.request.urlopen(request, context=stack.client_tls(), timeout=5) as reply:
        records: list[dict[str, Any]] = json.loads(reply.read())
    return [r for r in records if r["alarmDefinitionID"] == DEFINITION]


def send(stack: LocalStack, payload: dict[str, Any]) -> None:
    token = stack.alertmanager_token_path.read_text().strip()
    assert post(stack.alertmanager_webhook_url, payload, token).status == 200


def test_a_webhook_becomes_an_alarm_record_that_survives_an_adapter_restart(
    stack: LocalStack,
) -> None:
    firing = notification(alert(labels={"instance": f"{NODE}:9100"}))
    send(stack, firing)
    wait_until(lambda: len(alarm_records(stack)) == 1, 20, "the alarm record")
    (record,) = alarm_records(stack)
    assert record["resourceID"] == NODE_ID  # resolved by the core from the name
    assert record["perceivedSeverity"] == 0  # CRITICAL
    assert record["extensions"]["labels"]["instance"] == f"{NODE}:9100"

    process = stack.alertmanager_adapter
    assert process is not None
    process.stop()
    stack.start_alertmanager_adapter()
    port = stack.config.alertmanager_adapter_port
    wait_until(lambda: port_open(port), 20, "the restarted adapter")
    send(stack, firing)  # Alertmanager's resend after the restart
    # A second alert seen through the restarted adapter: the core follows it again.
    send(stack, notification(alert(labels={"instance": f"{NODE}:9100", "device": "sda"})))
    wait_until(lambda: len(alarm_records(stack)) == 2, 20, "the second alarm record")
    assert record in alarm_records(stack)  # the first one untouched: not cleared, not raised again

    send(stack, notification(alert(status="resolved", labels={"instance": f"{NODE}:9100"})))
    wait_until(
        lambda: all(
            r["alarmEventRecordId"] != record["alarmEventRecordId"] or _cleared(r)
            for r in alarm_records(stack)
        ),
        20,
        "the resolved alarm cleared",
    )


def _cleared(record: dict[str, Any]) -> bool:
    return bool(record.get("alarmClearedTime")) or record["perceivedSeverity"] == 5


def test_the_managed_processes_include_the_adapter(stack: LocalStack) -> None:
    names = [name for name, alive in stack.processes() if alive]
    assert "adapter-alertmanager" in names
    assert f"127.0.0.1:{stack.config.alertmanager_adapter_port}" in stack.adapter_addresses


def test_real_alertmanager_to_smo_new_acknowledge_clear_signed_in_order(
    stack: LocalStack, tmp_path: Path
) -> None:
    """The acceptance path: a Prometheus alert in the real Alertmanager -> its webhook ->
    the adapter -> the core's alarm pipeline -> the notifier -> an SMO's alarm subscription:
    NEW, then ACKNOWLEDGE (an operator's PATCH), then CLEAR (the alert resolved), each
    signed, in order; Alertmanager's resends in between create no duplicate."""
    if not Path(ALERTMANAGER_BINARY).exists():
        pytest.skip("prometheus-alertmanager is not installed (make system-deps)")
    receiver = Receiver().start()
    alertmanager = Alertmanager(
        tmp_path, stack.alertmanager_webhook_url, stack.alertmanager_token_path
    )
    rest = httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=5.0)
    resolved = threading.Event()
    labels = {"alertname": "NodeHighLoad", "instance": f"{NODE}:9100", "severity": "major"}
    try:
        created = rest.post(
            "/o2ims-infrastructureMonitoring/v1/alarmSubscriptions",
            json={"callback": f"{receiver.url}/smo", "consumerSubscriptionId": "smo-am"},
        )
        assert created.status_code == 201, created.text
        alertmanager.start()
        started = datetime.now(UTC) - timedelta(minutes=1)

        # As Prometheus does: re-post the firing alert every second (Alertmanager resolves an
        # alert nobody re-posts within its resolve_timeout, 5 s here).
        def prometheus() -> None:
            while not resolved.is_set():
                alertmanager.post_alerts([{"labels": labels, "startsAt": _iso(started)}])
                resolved.wait(1.0)

        poster = threading.Thread(target=prometheus, daemon=True)
        poster.start()
        (new,) = (r.json() for r in receiver.wait_for("/smo", 1, timeout=30))
        assert new["notificationEventType"] == 0
        assert new["resourceID"] == NODE_ID and new["perceivedSeverity"] == 1  # MAJOR
        assert new["alarmDefinitionID"] == definition_id("alertmanager", "NodeHighLoad")
        record_id = new["alarmEventRecordId"]

        # Alertmanager resends the firing alert every repeat_interval (2 s): wait for two
        # resends to be accepted, and nothing new reaches the SMO or the records.
        accepted = _accepted_webhooks(stack)
        wait_until(lambda: _accepted_webhooks(stack) >= accepted + 2, 20, "two resends")
        assert [r.json()["notificationEventType"] for r in receiver.delivered_to("/smo")] == [0]
        ours = [r for r in _all_alarms(rest) if r["alarmDefinitionID"] == new["alarmDefinitionID"]]
        assert [r["alarmEventRecordId"] for r in ours] == [record_id]

        patched = rest.patch(
            f"/o2ims-infrastructureMonitoring/v1/alarms/{record_id}",
            json={"alarmAcknowledged": True},
            headers={"content-type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        receiver.wait_for("/smo", 2, timeout=30)

        resolved.set()
        poster.join(10)
        alertmanager.post_alerts(
            [{"labels": labels, "startsAt": _iso(started), "endsAt": _iso(datetime.now(UTC))}]
        )
        received = receiver.wait_for("/smo", 3, timeout=30)
        bodies = [r.json() for r in received]
        assert [b["notificationEventType"] for b in bodies] == [0, 3, 2]
        assert {b["alarmEventRecordId"] for b in bodies} == {record_id}
        secret = base64.b64decode(stack.webhook_secret.removeprefix("whsec_"))
        assert all(verify_signature(secret, r) for r in received)
        cleared = bodies[2]
        assert cleared["perceivedSeverity"] == 5 and cleared["alarmAcknowledged"] is True
        assert cleared["alarmClearedTime"]
    finally:
        resolved.set()
        rest.close()
        alertmanager.stop()
        receiver.stop()


def _all_alarms(rest: httpx.Client) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = rest.get("/o2ims-infrastructureMonitoring/v1/alarms").json()
    return listed


def _accepted_webhooks(stack: LocalStack) -> float:
    url = f"http://127.0.0.1:{stack.config.alertmanager_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return metric_sum(text, "netweave_alertmanager_webhooks_total", outcome="accepted")
