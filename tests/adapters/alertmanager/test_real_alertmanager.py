"""The real Alertmanager (Debian's prometheus-alertmanager) in front of the real adapter
process: alerts POSTed to Alertmanager's API reach the adapter through its webhook_config
(bearer token from credentials_file) and the adapter's published set follows them: raised
while firing, withdrawn once resolved. What Alertmanager really sent is checked to parse,
and its fingerprints to be the ones the adapter computes from the labels."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from o2ims.adapter.v1 import domain_pb2

from adapters.alertmanager.alarms import alarm_id, definition_id
from adapters.alertmanager.payload import label_fingerprint
from devstack.processes import ManagedProcess, free_port, port_open, wait_until
from tests.adapters.alertmanager.conftest import AdapterProcess, Watch

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"

pytestmark = pytest.mark.skipif(
    not Path(BINARY).exists(),
    reason="prometheus-alertmanager is not installed (make system-deps)",
)


class Alertmanager:
    """prometheus-alertmanager on a free loopback port, clustering off, posting every
    notification to `webhook_url` within about a second."""

    def __init__(self, workdir: Path, webhook_url: str, token_file: Path) -> None:
        self.port = free_port()
        config = {
            "global": {"resolve_timeout": "5s"},
            "route": {
                "receiver": "netweave",
                "group_by": ["alertname", "instance"],
                "group_wait": "200ms",
                "group_interval": "1s",
                "repeat_interval": "2s",
            },
            "receivers": [
                {
                    "name": "netweave",
                    "webhook_configs": [
                        {
                            "url": webhook_url,
                            "send_resolved": True,
                            "http_config": {
                                "authorization": {
                                    "type": "Bearer",
                                    "credentials_file": str(token_file),
                                }
                            },
                        }
                    ],
                }
            ],
        }
        config_file = workdir / "alertmanager.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.process = ManagedProcess(
            "alertmanager",
            [
                BINARY,
                f"--config.file={config_file}",
                f"--storage.path={workdir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
            workdir / "alertmanager.log",
        )

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2"

    def start(self) -> Alertmanager:
        self.process.start()
        wait_until(
            lambda: port_open(self.port) and self._ready(),
            30,
            "Alertmanager",
            require=self.process.require_alive,
        )
        return self

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
            return bool(r.status == 200)

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            f"{self.api}/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert reply.status == 200

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.api}/alerts", timeout=5) as reply:
            found: list[dict[str, Any]] = json.loads(reply.read())
            return found

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[AdapterProcess, Alertmanager, Watch]]:
    adapter = AdapterProcess(tmp_path).start()
    alertmanager = Alertmanager(tmp_path, adapter.url, adapter.token_file)
    watch: Watch | None = None
    try:
        alertmanager.start()
        watch = Watch(adapter.grpc_port)
        yield adapter, alertmanager, watch
    finally:
        if watch is not None:
            watch.close()
        alertmanager.stop()
        adapter.stop()


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


LABELS = {
    "alertname": "NodeFilesystemAlmostFull",
    "instance": "worker-7.example:9100",
    "severity": "major",
    "mountpoint": "/var",
}
OTHER = {
    "alertname": "NodeDown",
    "o2ims_resource_id": "9f1c0d2e-0000-4000-8000-000000000001",
    "severity": "critical",
}


def test_real_alertmanager_raises_then_withdraws_through_the_webhook(
    stack: tuple[AdapterProcess, Alertmanager, Watch],
) -> None:
    adapter, alertmanager, watch = stack
    started = datetime.now(UTC) - timedelta(minutes=5)
    annotations = {"summary": "/var is 93% full", "description": "Filesystem /var on worker-7"}
    alertmanager.post_alerts(
        [
            {
                "labels": LABELS,
                "annotations": annotations,
                "startsAt": _iso(started),
                "generatorURL": "http://prometheus.example/graph",
            },
            {"labels": OTHER, "annotations": {"summary": "down"}, "startsAt": _iso(started)},
        ]
    )
    first = alarm_id("alertmanager", label_fingerprint(LABELS))
    second = alarm_id("alertmanager", label_fingerprint(OTHER))
    wait_until(lambda: {first, second} <= watch.alarms().keys(), 30, "both alarms raised")

    # Alertmanager's own fingerprints are the ones the adapter computed from the labels.
    sent = {a["labels"]["alertname"]: a["fingerprint"] for a in alertmanager.alerts()}
    assert sent == {
        "NodeFilesystemAlmostFull": label_fingerprint(LABELS),
        "NodeDown": label_fingerprint(OTHER),
    }
    alarm = watch.alarms()[first]
    assert alarm.resource_name == "worker-7.example"  # instance, its port stripped
    assert alarm.resource_id == ""
    assert alarm.perceived_severity == domain_pb2.ALARM_SEVERITY_MAJOR
    assert alarm.alarm_definition_id == definition_id("alertmanager", LABELS["alertname"])
    assert alarm.probable_cause_id == alarm.alarm_definition_id
    assert datetime.fromisoformat(alarm.raised_time) == started
    extensions = json_format.MessageToDict(alarm.extensions)
    assert extensions["fingerprint"] == label_fingerprint(LABELS)
    assert extensions["summary"] == "/var is 93% full"
    assert extensions["generatorURL"] == "http://prometheus.example/graph"
    assert str(extensions["externalURL"]).startswith("http")
    assert watch.alarms()[second].resource_id == OTHER["o2ims_resource_id"]
    (dictionary,) = watch.dictionaries()
    assert {d.alarm_name for d in dictionary.alarm_definition} == {
        "NodeFilesystemAlmostFull",
        "NodeDown",
    }

    # Alertmanager resends every repeat_interval (2 s here): nothing changes.
    events_before = len(watch.alarm_events())
    wait_until(
        lambda: adapter.log().count('"outcome": "accepted"') >= 4, 30, "repeated notifications"
    )
    assert len(watch.alarm_events()) == events_before

    # Resolved: an endsAt in the past.
    ended = datetime.now(UTC) - timedelta(seconds=1)
    alertmanager.post_alerts(
        [
            {
                "labels": LABELS,
                "annotations": annotations,
                "startsAt": _iso(started),
                "endsAt": _iso(ended),
            }
        ]
    )
    wait_until(lambda: first not in watch.alarms(), 30, "the resolved alarm withdrawn")
    assert second in watch.alarms()
    log = adapter.log()
    assert "malformed" not in log
    # Every webhook Alertmanager sent parsed, and carried the fingerprints computed here.
    assert "fingerprint_mismatch" not in log
