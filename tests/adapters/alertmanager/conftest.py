"""Fixtures of the Alertmanager adapter tests: webhook payloads as Alertmanager writes them,
an in-process receiver on a free port, and the adapter as a real process."""

from __future__ import annotations

import json
import secrets
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc, domain_pb2

from adapters.alertmanager.alarms import AlarmBook
from adapters.alertmanager.mapping import MappingConfig
from adapters.alertmanager.metrics import AlertmanagerMetrics
from adapters.alertmanager.receiver import WebhookReceiver
from adapters.publisher import ObjectSetPublisher
from devstack.processes import ManagedProcess, free_port, port_open, wait_until

REPO = Path(__file__).resolve().parents[3]
ZERO_TIME = "0001-01-01T00:00:00Z"


def alert(
    name: str = "NodeDown",
    status: str = "firing",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    starts_at: str = "2026-12-03T10:00:00.123456789Z",
    ends_at: str = ZERO_TIME,
) -> dict[str, Any]:
    """One alert of a webhook payload, with the keys and formats Alertmanager 0.25 sends."""
    return {
        "status": status,
        "labels": {"alertname": name, "instance": "node-1:9100", "severity": "critical"}
        | (labels or {}),
        "annotations": {"summary": f"{name} on node-1", "description": f"{name}: it broke"}
        | (annotations or {}),
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": "",
    }


def notification(*alerts: dict[str, Any], status: str = "") -> dict[str, Any]:
    """A version 4 webhook payload carrying `alerts`."""
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "receiver": "netweave",
        "status": status or ("firing" if firing else "resolved"),
        "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]} if alerts else {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": '{}:{alertname="NodeDown"}',
        "truncatedAlerts": 0,
    }


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def post(
    url: str, body: bytes | dict[str, Any], token: str | None, method: str = "POST"
) -> Response:
    """One request; errors come back as responses."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return Response(reply.status, json.loads(reply.read() or b"{}"), dict(reply.headers))
    except urllib.error.HTTPError as error:
        raw = error.read()
        return Response(error.code, json.loads(raw) if raw else {}, dict(error.headers))


class Clock:
    """A settable clock for the book (expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Receiving:
    """An AlarmBook fed by a WebhookReceiver on a free port."""

    book: AlarmBook
    publisher: ObjectSetPublisher
    receiver: WebhookReceiver
    metrics: AlertmanagerMetrics
    token: str
    state_file: Path
    clock: Clock

    @property
    def url(self) -> str:
        return self.receiver.url

    def send(self, payload: dict[str, Any] | bytes, token: str | None = "") -> Response:
        return post(self.url, payload, self.token if token == "" else token)

    def alarms(self) -> dict[str, domain_pb2.ActiveAlarm]:
        _, objects = self.publisher.snapshot()
        return {o.alarm.alarm_id: o.alarm for o in objects if o.WhichOneof("kind") == "alarm"}

    def dictionary(self) -> domain_pb2.AlarmDictionary:
        _, objects = self.publisher.snapshot()
        (found,) = [o.alarm_dictionary for o in objects if o.HasField("alarm_dictionary")]
        return found

    def stop(self) -> None:
        self.receiver.stop()


def start_receiving(
    state_file: Path,
    *,
    token: str = "",
    mapping: MappingConfig | None = None,
    clock: Clock | None = None,
    max_body_bytes: int = 64 * 1024,
    stale_after: timedelta | None = None,
) -> Receiving:
    token = token or secrets.token_urlsafe(24)
    clock = clock or Clock()
    metrics = AlertmanagerMetrics()
    publisher = ObjectSetPublisher()
    book = AlarmBook(
        "alertmanager",
        mapping or MappingConfig(),
        publisher,
        state_file,
        metrics=metrics,
        now=clock,
        stale_after=stale_after,
    )
    book.restore()
    receiver = WebhookReceiver(book, token, metrics=metrics, port=0, max_body_bytes=max_body_bytes)
    receiver.start()
    return Receiving(book, publisher, receiver, metrics, token, state_file, clock)


@pytest.fixture
def receiving(tmp_path: Path) -> Iterator[Receiving]:
    running = start_receiving(tmp_path / "state.json")
    yield running
    running.stop()


# --- the adapter as a process --------------------------------------------------------------


class AdapterProcess:
    """`python -m adapters.alertmanager` on free ports."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.workdir = workdir
        self.token = secrets.token_urlsafe(24)
        self.token_file = workdir / "token"
        self.token_file.write_text(self.token + "\n")
        self.state_file = workdir / "state.json"
        self.grpc_port = free_port()
        self.webhook_port = free_port()
        self.extra = extra
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/webhook"

    def start(self) -> AdapterProcess:
        self.process = ManagedProcess(
            "adapter-alertmanager",
            [
                sys.executable,
                "-m",
                "adapters.alertmanager",
                "--port",
                str(self.grpc_port),
                "--webhook-port",
                str(self.webhook_port),
                "--token-file",
                str(self.token_file),
                "--state-file",
                str(self.state_file),
                *self.extra,
            ],
            self.workdir / "adapter.log",
            cwd=REPO,
        ).start()
        process = self.process
        wait_until(
            lambda: port_open(self.grpc_port) and port_open(self.webhook_port),
            30,
            "the Alertmanager adapter",
            require=process.require_alive,
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log(self) -> str:
        return (self.workdir / "adapter.log").read_text(errors="replace")


class Watch:
    """A real gRPC WatchObjects stream, followed on a thread into the current set."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = adapter_pb2_grpc.AdapterServiceStub(self.channel)
        self.objects: dict[tuple[str, str], domain_pb2.InventoryObject] = {}
        self.events: list[adapter_pb2.WatchObjectsResponse] = []
        self.synced = threading.Event()
        self._lock = threading.Lock()
        self._stream = self.stub.WatchObjects(
            adapter_pb2.WatchObjectsRequest(send_initial_objects=True)
        )
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        from adapters.contract import object_key

        try:
            for event in self._stream:
                with self._lock:
                    self.events.append(event)
                    if event.type == adapter_pb2.EVENT_TYPE_SYNCED:
                        self.synced.set()
                    elif event.type == adapter_pb2.EVENT_TYPE_DELETED:
                        self.objects.pop(object_key(event.object), None)
                    elif event.type in (
                        adapter_pb2.EVENT_TYPE_ADDED,
                        adapter_pb2.EVENT_TYPE_MODIFIED,
                    ):
                        self.objects[object_key(event.object)] = event.object
        except grpc.RpcError:
            pass

    def alarms(self) -> dict[str, domain_pb2.ActiveAlarm]:
        with self._lock:
            return {key[1]: obj.alarm for key, obj in self.objects.items() if key[0] == "alarm"}

    def dictionaries(self) -> list[domain_pb2.AlarmDictionary]:
        with self._lock:
            return [
                o.alarm_dictionary for k, o in self.objects.items() if k[0] == "alarm_dictionary"
            ]

    def alarm_events(self) -> list[int]:
        with self._lock:
            return [e.type for e in self.events if e.object.WhichOneof("kind") == "alarm"]

    def close(self) -> None:
        self._stream.cancel()
        self.channel.close()
        self._thread.join(timeout=5)


@pytest.fixture
def adapter_process(tmp_path: Path) -> Iterator[AdapterProcess]:
    adapter = AdapterProcess(tmp_path).start()
    yield adapter
    adapter.stop()
