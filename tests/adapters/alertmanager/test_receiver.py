"""The webhook receiver over real HTTP, feeding a real AlarmBook and publisher: what
Alertmanager's webhooks do to the published alarms, and what the receiver refuses."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from o2ims.adapter.v1 import domain_pb2

from adapters.alertmanager.alarms import alarm_id, definition_id, dictionary_id
from adapters.alertmanager.mapping import parse_mapping
from adapters.alertmanager.metrics import AlertmanagerMetrics
from adapters.alertmanager.payload import label_fingerprint
from adapters.alertmanager.receiver import (
    ReceiverConfigError,
    TlsFiles,
    WebhookReceiver,
    read_token,
    server_tls_context,
)
from adapters.contract import serialize
from devstack.pki import ensure_dev_pki
from tests.adapters.alertmanager.conftest import (
    Clock,
    Receiving,
    alert,
    notification,
    post,
    start_receiving,
)

LABELS = {"alertname": "NodeDown", "instance": "node-1:9100", "severity": "critical"}
ALARM_ID = alarm_id("alertmanager", label_fingerprint(LABELS))


def published_bytes(receiving: Receiving) -> list[bytes]:
    return [serialize(obj) for obj in receiving.publisher.snapshot()[1]]


def webhook_count(receiving: Receiving, outcome: str) -> float:
    value = receiving.metrics.registry.get_sample_value(
        "netweave_alertmanager_webhooks_total", {"outcome": outcome}
    )
    return value or 0.0


# --- what webhooks do ---------------------------------------------------------------------


def test_a_firing_alert_is_published_as_its_active_alarm(receiving: Receiving) -> None:
    reply = receiving.send(notification(alert()))
    assert reply.status == 200
    assert reply.body == {"raised": 1, "changed": 0, "cleared": 0, "ignored": [], "active": 1}
    alarm = receiving.alarms()[ALARM_ID]
    assert uuid.UUID(alarm.alarm_id).version == 5
    assert alarm.resource_name == "node-1"
    assert alarm.resource_id == ""
    assert alarm.perceived_severity == domain_pb2.ALARM_SEVERITY_CRITICAL
    assert alarm.raised_time == "2026-12-03T10:00:00.123456Z"
    assert alarm.alarm_definition_id == definition_id("alertmanager", "NodeDown")
    assert alarm.probable_cause_id == alarm.alarm_definition_id
    extensions = json_format.MessageToDict(alarm.extensions)
    assert extensions["fingerprint"] == label_fingerprint(LABELS)
    assert extensions["labels"] == LABELS
    assert extensions["summary"] == "NodeDown on node-1"
    assert extensions["description"] == "NodeDown: it broke"
    assert extensions["generatorURL"].startswith("http://prometheus:9090/")
    assert extensions["externalURL"] == "http://alertmanager.example:9093"


def test_the_dictionary_gains_one_definition_per_alert_name(receiving: Receiving) -> None:
    assert list(receiving.dictionary().alarm_definition) == []
    receiving.send(notification(alert(), alert(labels={"instance": "node-2:9100"})))
    receiving.send(notification(alert("DiskFull", annotations={"runbook_url": "http://rb/1"})))
    dictionary = receiving.dictionary()
    assert dictionary.alarm_dictionary_id == dictionary_id("alertmanager")
    assert list(dictionary.management_interface_id) == ["O2IMS"]
    assert list(dictionary.pk_notification_field) == ["alarmDefinitionID", "resourceID"]
    assert dictionary.alarm_dictionary_version == "1.2"
    node_down, disk_full = dictionary.alarm_definition
    assert (node_down.alarm_name, node_down.alarm_description) == ("NodeDown", "NodeDown: it broke")
    assert node_down.alarm_definition_id == definition_id("alertmanager", "NodeDown")
    assert node_down.clearing_type == domain_pb2.CLEARING_TYPE_AUTOMATIC
    assert list(node_down.management_interface_id) == ["O2IMS"]
    assert list(node_down.pk_notification_field) == ["alarmDefinitionID", "resourceID"]
    assert disk_full.proposed_repair_actions == "See the runbook: http://rb/1"
    assert disk_full.alarm_last_change == "1.2"


def test_definitions_named_in_the_mapping_exist_from_the_start(tmp_path: Path) -> None:
    mapping = parse_mapping(
        {"alarms": {"NodeHardwareFault": {"description": "BMC fault", "clearing_type": "MANUAL"}}}
    )
    running = start_receiving(tmp_path / "state.json", mapping=mapping)
    try:
        (definition,) = running.dictionary().alarm_definition
        assert definition.alarm_name == "NodeHardwareFault"
        assert definition.alarm_description == "BMC fault"
        assert definition.clearing_type == domain_pb2.CLEARING_TYPE_MANUAL
    finally:
        running.stop()


def test_a_repeated_firing_webhook_changes_nothing(receiving: Receiving) -> None:
    receiving.send(notification(alert()))
    revision, before = receiving.publisher.revision, published_bytes(receiving)
    # Alertmanager's resend every repeat_interval; a second HA replica's URL too.
    again = notification(alert())
    again["externalURL"] = "http://alertmanager-1.example:9093"
    again["groupKey"] = "other"
    reply = receiving.send(again)
    assert reply.body == {"raised": 0, "changed": 0, "cleared": 0, "ignored": [], "active": 1}
    assert receiving.publisher.revision == revision
    assert published_bytes(receiving) == before


def test_a_changed_annotation_or_severity_changes_the_alarm(receiving: Receiving) -> None:
    receiving.send(notification(alert()))
    reply = receiving.send(notification(alert(annotations={"description": "worse now"})))
    assert (reply.body["raised"], reply.body["changed"]) == (0, 1)
    assert receiving.alarms()[ALARM_ID].extensions["description"] == "worse now"


def test_a_resolved_alert_withdraws_its_alarm(receiving: Receiving) -> None:
    receiving.send(notification(alert(), alert(labels={"instance": "node-2:9100"})))
    reply = receiving.send(notification(alert(status="resolved", ends_at="2026-12-03T11:00:00Z")))
    assert reply.body["cleared"] == 1
    assert ALARM_ID not in receiving.alarms()
    assert len(receiving.alarms()) == 1
    # Resolving what is not active is no change.
    assert receiving.send(notification(alert(status="resolved"))).body["cleared"] == 0


def test_a_firing_alert_whose_ends_at_passes_is_withdrawn(receiving: Receiving) -> None:
    clock = receiving.clock
    ends = clock.now + timedelta(minutes=4)
    receiving.send(notification(alert(ends_at=ends.isoformat())))
    assert receiving.book.expire() == 0
    assert ALARM_ID in receiving.alarms()
    clock.now = ends + timedelta(seconds=1)
    assert receiving.book.expire() == 1
    assert ALARM_ID not in receiving.alarms()
    expired = receiving.metrics.registry.get_sample_value(
        "netweave_alertmanager_alarms_expired_total"
    )
    assert expired == 1


def test_a_resend_pushes_ends_at_back_without_changing_the_alarm(receiving: Receiving) -> None:
    clock = receiving.clock
    receiving.send(notification(alert(ends_at=(clock.now + timedelta(minutes=1)).isoformat())))
    before = published_bytes(receiving)
    receiving.send(notification(alert(ends_at=(clock.now + timedelta(minutes=5)).isoformat())))
    assert published_bytes(receiving) == before
    clock.now += timedelta(minutes=2)
    assert receiving.book.expire() == 0


def test_with_stale_after_an_alert_no_webhook_carries_any_more_is_withdrawn(
    tmp_path: Path,
) -> None:
    running = start_receiving(tmp_path / "state.json", stale_after=timedelta(hours=12))
    try:
        clock = running.clock
        running.send(notification(alert(), alert("DiskFull")))
        clock.now += timedelta(hours=8)
        running.send(notification(alert()))  # the repeat_interval resend of one of them
        clock.now += timedelta(hours=5)
        assert running.book.expire() == 1  # DiskFull: its resolve was lost
        assert list(running.alarms()) == [ALARM_ID]
    finally:
        running.stop()


def test_a_firing_alert_that_already_ended_is_not_raised(receiving: Receiving) -> None:
    past = (receiving.clock.now - timedelta(seconds=1)).isoformat()
    assert receiving.send(notification(alert(ends_at=past))).body["raised"] == 0
    assert receiving.alarms() == {}


def test_an_alert_naming_no_resource_is_ignored_and_said_so(receiving: Receiving) -> None:
    lonely = alert("Watchdog", labels={"instance": ""})
    reply = receiving.send(notification(lonely))
    assert reply.status == 200
    assert reply.body["raised"] == 0
    (why,) = reply.body["ignored"]
    assert why.startswith("Watchdog (") and "no resource label" in why
    assert receiving.alarms() == {}
    ignored = receiving.metrics.registry.get_sample_value(
        "netweave_alertmanager_alerts_total", {"status": "firing", "ignored": "true"}
    )
    assert ignored == 1


# --- restarts and the state file ------------------------------------------------------------


def test_a_restart_publishes_the_same_alarms_again(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = start_receiving(state)
    first.send(notification(alert(), alert("DiskFull")))
    before = published_bytes(first)
    first.stop()
    assert oct(state.stat().st_mode & 0o777) == "0o600"

    second = start_receiving(state, clock=first.clock)
    try:
        assert published_bytes(second) == before
        # ... and the same webhook after the restart changes nothing.
        second.send(notification(alert()))
        assert published_bytes(second) == before
    finally:
        second.stop()


def test_alerts_that_ended_while_stopped_are_not_restored(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = start_receiving(state)
    first.send(notification(alert(ends_at=(first.clock.now + timedelta(minutes=1)).isoformat())))
    first.stop()
    clock = Clock()
    clock.now = first.clock.now + timedelta(minutes=2)
    second = start_receiving(state, clock=clock)
    try:
        assert second.alarms() == {}
    finally:
        second.stop()


def test_an_unwritable_state_file_refuses_the_webhook_and_changes_nothing(
    receiving: Receiving,
) -> None:
    receiving.send(notification(alert()))
    before = published_bytes(receiving)
    # A directory where the file should be: no rename onto it succeeds, even for root.
    receiving.state_file.unlink()
    (receiving.state_file / "blocker").mkdir(parents=True)
    reply = receiving.send(notification(alert("DiskFull")))
    assert reply.status == 503
    assert "cannot record alarms" in reply.body["detail"]
    assert receiving.send(notification(alert())).status == 200  # unchanged set: no write
    assert published_bytes(receiving) == before
    assert webhook_count(receiving, "state_error") == 1


def test_the_state_file_is_replaced_whole(receiving: Receiving) -> None:
    receiving.send(notification(alert()))
    document = json.loads(receiving.state_file.read_text())
    assert [a["fingerprint"] for a in document["alerts"]] == [label_fingerprint(LABELS)]
    assert [p.name for p in receiving.state_file.parent.iterdir()] == ["state.json"]


# --- what the receiver refuses ---------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong", ""], ids=["none", "wrong", "empty"])
def test_without_the_right_token_it_is_401_problem_details(
    receiving: Receiving, token: str | None
) -> None:
    reply = post(receiving.url, notification(alert()), token)
    assert reply.status == 401
    assert reply.body["status"] == 401
    assert reply.body["title"] == "Unauthorized"
    assert "bearer token" in reply.body["detail"]
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert receiving.alarms() == {}
    assert webhook_count(receiving, "unauthorized") == 1


def test_basic_authentication_with_the_token_is_refused(receiving: Receiving) -> None:
    request = urllib.request.Request(
        receiving.url,
        data=json.dumps(notification(alert())).encode(),
        headers={"Authorization": f"Basic {receiving.token}"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{", "the body is not JSON"),
        (json.dumps(notification(alert()) | {"version": "5"}).encode(), "version: unsupported"),
        (
            json.dumps(notification({**alert(), "startsAt": None})).encode(),
            "alerts[0].startsAt",
        ),
        (json.dumps({"version": "4", "status": "firing"}).encode(), "alerts: is required"),
    ],
)
def test_what_is_not_a_v4_payload_is_400_naming_the_field(
    receiving: Receiving, body: bytes, field: str
) -> None:
    reply = receiving.send(body)
    assert reply.status == 400
    assert field in reply.body["detail"]
    assert reply.body["status"] == 400
    assert receiving.alarms() == {}
    assert webhook_count(receiving, "malformed") == 1


def test_a_body_over_the_limit_is_413_and_not_read(receiving: Receiving) -> None:
    padding = {"padding": "x" * 70_000}
    reply = receiving.send(notification(alert(annotations=padding)))
    assert reply.status == 413
    assert "limit" in reply.body["detail"]
    assert receiving.alarms() == {}
    assert webhook_count(receiving, "too_large") == 1


def _raw(receiving: Receiving, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", receiving.receiver.port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {receiving.token}"}
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response
    finally:
        connection.close()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_the_webhook_are_405(receiving: Receiving, method: str) -> None:
    status, response = _raw(receiving, method, "/webhook")
    assert status == 405
    assert response.getheader("Allow") == "POST"


@pytest.mark.parametrize(("method", "path"), [("POST", "/"), ("POST", "/alerts"), ("GET", "/x")])
def test_other_paths_are_404(receiving: Receiving, method: str, path: str) -> None:
    status, _ = _raw(receiving, method, path, json.dumps(notification(alert())).encode())
    assert status == 404


def test_metrics_count_webhooks_by_outcome_and_active_alarms(receiving: Receiving) -> None:
    receiving.send(notification(alert(), alert("DiskFull")))
    post(receiving.url, notification(alert()), "wrong")
    with urllib.request.urlopen(receiving.url.replace("/webhook", "/metrics"), timeout=5) as r:
        text = r.read().decode()
    assert 'netweave_alertmanager_webhooks_total{outcome="accepted"} 1.0' in text
    assert 'netweave_alertmanager_webhooks_total{outcome="unauthorized"} 1.0' in text
    assert "netweave_alertmanager_active_alarms 2.0" in text


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_bodies_name_the_build_and_need_no_token(receiving: Receiving, path: str) -> None:
    with urllib.request.urlopen(receiving.url.replace("/webhook", path), timeout=5) as r:
        assert r.status == 200
        body = json.loads(r.read())
    assert body["status"] == "ok"
    assert {"timestamp", "version", "commit", "uptime", "checks"} <= set(body)


# --- start-up: no token, TLS --------------------------------------------------------------------


def test_there_is_no_receiver_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(ReceiverConfigError, match="does not run unauthenticated"):
        read_token(None)
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ReceiverConfigError, match="must hold one token"):
        read_token(empty)
    with pytest.raises(ReceiverConfigError, match="cannot read"):
        read_token(tmp_path / "missing")
    empty.write_text(" s3cret-token \n")
    assert read_token(empty) == "s3cret-token"
    running = start_receiving(tmp_path / "state.json")
    try:
        with pytest.raises(ReceiverConfigError):
            WebhookReceiver(running.book, "", metrics=AlertmanagerMetrics())
    finally:
        running.stop()


def test_with_a_client_ca_the_receiver_requires_client_certificates(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path / "pki")
    running = start_receiving(tmp_path / "state.json")
    tls = server_tls_context(TlsFiles(pki.server_cert, pki.server_key, pki.ca_cert))
    receiver = WebhookReceiver(running.book, running.token, metrics=running.metrics, tls=tls)
    receiver.start()
    try:
        assert receiver.url.startswith("https://127.0.0.1:")
        body = json.dumps(notification(alert())).encode()
        headers = {"Authorization": f"Bearer {running.token}"}
        anonymous = ssl.create_default_context(cafile=str(pki.ca_cert))
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            request = urllib.request.Request(receiver.url, data=body, headers=headers)
            urllib.request.urlopen(request, context=anonymous, timeout=5)
        assert running.alarms() == {}
        client = ssl.create_default_context(cafile=str(pki.ca_cert))
        client.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        request = urllib.request.Request(receiver.url, data=body, headers=headers)
        with urllib.request.urlopen(request, context=client, timeout=5) as reply:
            assert reply.status == 200
        assert ALARM_ID in running.alarms()
    finally:
        receiver.stop()
        running.stop()
