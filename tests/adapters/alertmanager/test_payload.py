"""The webhook payload parser, on version 4 JSON as Alertmanager 0.25 writes it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.alertmanager.payload import (
    PayloadError,
    format_time,
    label_fingerprint,
    parse_notification,
)
from tests.adapters.alertmanager.conftest import alert, notification

# Byte for byte the shape Alertmanager sends (keys in its order, Go's time formats, the zero
# endsAt of a firing alert, the real end of a resolved one).
REAL_V4 = b"""{"receiver":"netweave","status":"firing","alerts":[{"status":"firing","labels":
{"alertname":"NodeDown","instance":"node-1:9100","severity":"critical"},"annotations":
{"description":"node-1 has been unreachable for 5 minutes","summary":"node-1 down"},
"startsAt":"2026-12-03T10:15:02.123456789Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":
"http://prometheus:9090/graph?g0.expr=up+%3D%3D+0\\u0026g0.tab=1","fingerprint":
"b0432fe42350abe5"},{"status":"resolved","labels":{"alertname":"NodeDown","instance":
"node-2:9100","severity":"critical"},"annotations":{"summary":"node-2 down"},"startsAt":
"2026-12-03T09:00:00+01:00","endsAt":"2026-12-03T10:20:00.5Z","generatorURL":"",
"fingerprint":"84692a9e3903c178"}],"groupLabels":{"alertname":"NodeDown"},"commonLabels":
{"alertname":"NodeDown","severity":"critical"},"commonAnnotations":{},"externalURL":
"http://alertmanager:9093","version":"4","groupKey":"{}:{alertname=\\"NodeDown\\"}",
"truncatedAlerts":0}"""


def test_a_real_v4_payload_parses_field_by_field() -> None:
    parsed = parse_notification(REAL_V4)
    assert (parsed.version, parsed.status, parsed.receiver) == ("4", "firing", "netweave")
    assert parsed.group_key == '{}:{alertname="NodeDown"}'
    assert parsed.external_url == "http://alertmanager:9093"
    assert parsed.common_labels == {"alertname": "NodeDown", "severity": "critical"}
    firing, resolved = parsed.alerts
    assert firing.status == "firing"
    assert firing.alert_name == "NodeDown"
    assert firing.starts_at == datetime(2026, 12, 3, 10, 15, 2, 123456, tzinfo=UTC)
    assert firing.ends_at is None  # Alertmanager's zero time: no end known
    assert firing.generator_url.endswith("&g0.tab=1")
    assert firing.sent_fingerprint == firing.fingerprint() == "b0432fe42350abe5"
    assert resolved.status == "resolved"
    assert resolved.starts_at == datetime(2026, 12, 3, 8, 0, tzinfo=UTC)  # to UTC
    assert resolved.ends_at == datetime(2026, 12, 3, 10, 20, 0, 500000, tzinfo=UTC)
    assert resolved.sent_fingerprint == resolved.fingerprint()


def test_the_fingerprint_is_prometheus_label_set_hash() -> None:
    # FNV-1a 64 over sorted names and values; the empty set is the offset basis (Go's
    # emptyLabelSignature). The integration test checks more against the real Alertmanager.
    assert label_fingerprint({}) == "cbf29ce484222325"
    labels = {"severity": "critical", "instance": "node-1:9100", "alertname": "NodeDown"}
    assert label_fingerprint(labels) == "b0432fe42350abe5"  # order of the keys is irrelevant
    assert label_fingerprint(labels | {"severity": "warning"}) != "b0432fe42350abe5"


def test_times_are_written_back_in_utc_with_a_z() -> None:
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"


def _broken(change: Any) -> dict[str, Any]:
    payload = notification(alert())
    change(payload)
    return payload


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", ""),
        (b"[]", "the body"),
        (json.dumps(_broken(lambda p: p.pop("version"))).encode(), "version"),
        (json.dumps(_broken(lambda p: p.update(version="3"))).encode(), "version"),
        (json.dumps(_broken(lambda p: p.pop("alerts"))).encode(), "alerts"),
        (json.dumps(_broken(lambda p: p.update(alerts={}))).encode(), "alerts"),
        (json.dumps(_broken(lambda p: p.pop("status"))).encode(), "status"),
        (json.dumps(_broken(lambda p: p.update(truncatedAlerts="2"))).encode(), "truncatedAlerts"),
        (json.dumps(_broken(lambda p: p["alerts"][0].pop("labels"))).encode(), "alerts[0].labels"),
        (
            json.dumps(_broken(lambda p: p["alerts"][0]["labels"].pop("alertname"))).encode(),
            "alerts[0].labels.alertname",
        ),
        (
            json.dumps(_broken(lambda p: p["alerts"][0]["labels"].update(cpu=3))).encode(),
            "alerts[0].labels.cpu",
        ),
        (
            json.dumps(_broken(lambda p: p["alerts"][0].pop("startsAt"))).encode(),
            "alerts[0].startsAt",
        ),
        (
            json.dumps(_broken(lambda p: p["alerts"][0].update(startsAt="yesterday"))).encode(),
            "alerts[0].startsAt",
        ),
        (
            json.dumps(_broken(lambda p: p["alerts"][0].update(status="pending"))).encode(),
            "alerts[0].status",
        ),
        (
            json.dumps(
                _broken(lambda p: p["alerts"][0].update(endsAt="2026-01-01T00:00:00"))
            ).encode(),
            "alerts[0].endsAt",
        ),
    ],
)
def test_what_is_not_a_v4_payload_is_refused_naming_the_field(body: bytes, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_notification(body)
    assert caught.value.field == field
    if field:
        assert str(caught.value).startswith(f"{field}: ")
