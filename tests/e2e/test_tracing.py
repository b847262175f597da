"""OpenTelemetry traces through the whole stack (issue 16, "Tracing"): with
NETWEAVE_OTLP_ENDPOINT set, one REST call that acknowledges an alarm is one trace across
Envoy's span, the core's span (with the call's correlation id), the span of the write that
emitted the alarm event, and the notifier's delivery span, whose `traceparent` the webhook
carries. A client's own `traceparent` is not followed. Off (the default), nothing is
exported and no webhook carries a `traceparent`.

The collector is a real OTLP/gRPC TraceService in the test, on a free loopback port."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

from devstack.processes import free_port, wait_until
from devstack.stack import LocalStack
from server.alarms.store import EVENTS_KEY, AlarmStore
from server.store import connect
from tests.e2e.conftest import start_stack
from tests.e2e.test_alarm_patch import MANUAL, seed
from tests.notifier.receiver import Receiver

pytestmark = pytest.mark.e2e

MONITORING = "/o2ims-infrastructureMonitoring/v1"
ALARM_SUBSCRIPTIONS = f"{MONITORING}/alarmSubscriptions"
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# Envoy flushes its spans every 5 s (or every 5 spans); the SDK's batches every 5 s.
EXPORT_WAIT_S = 15.0


@dataclass(frozen=True)
class CollectedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]


def _value(value: common_pb2.AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which else None


class TraceCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[CollectedSpan] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        CollectedSpan(
                            service=str(resource.get("service.name", "")),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            self.spans.extend(found)
        return trace_service_pb2.ExportTraceServiceResponse()

    def start(self) -> TraceCollector:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0)

    def snapshot(self) -> list[CollectedSpan]:
        with self._lock:
            return list(self.spans)

    def wait_for(self, what: str, check: Any) -> list[CollectedSpan]:
        """The spans matching `check`, once there are some (else the test fails)."""
        wait_until(lambda: any(check(s) for s in self.snapshot()), EXPORT_WAIT_S, what)
        return [span for span in self.snapshot() if check(span)]


@pytest.fixture(scope="module")
def collector() -> Iterator[TraceCollector]:
    started = TraceCollector().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def traced_stack(
    tmp_path_factory: pytest.TempPathFactory, collector: TraceCollector
) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory, otlp_endpoint=collector.address)
    yield running
    running.stop()


def traceparent(request: Any) -> tuple[str, str, bool]:
    """(trace id, parent span id, sampled) of a webhook request's `traceparent`."""
    match = TRACEPARENT.fullmatch(request.headers["traceparent"])
    assert match is not None, request.headers["traceparent"]
    return match.group(1), match.group(2), bool(int(match.group(3), 16) & 1)


def rest_client(stack: LocalStack) -> httpx.Client:
    return httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=10)


def subscribe_and_acknowledge(
    stack: LocalStack, receiver: Receiver, path: str, headers: dict[str, str]
) -> tuple[str, list[Any]]:
    """An alarm subscription to `receiver`'s `path`, an alarm raised by a source, then
    acknowledged over REST with `headers`: (the alarm id, the NEW and ACKNOWLEDGE
    webhook requests)."""
    with rest_client(stack) as rest:
        created = rest.post(
            ALARM_SUBSCRIPTIONS,
            json={"callback": f"{receiver.url}{path}"},
            headers={"x-correlation-id": f"subscribe-{path.strip('/')}"},
        )
        assert created.status_code == 201, created.text
        client = connect(stack.redis_url)
        try:
            alarm_id = seed(AlarmStore(client), MANUAL)
        finally:
            client.close()
        receiver.wait_for(path, 1)
        acknowledged = rest.patch(
            f"{MONITORING}/alarms/{alarm_id}",
            json={"alarmAcknowledged": True},
            headers={**MERGE_PATCH, **headers},
        )
        assert acknowledged.status_code == 200, acknowledged.text
    return alarm_id, receiver.wait_for(path, 2)


def test_one_trace_spans_envoy_the_core_and_the_notifiers_delivery(
    traced_stack: LocalStack, collector: TraceCollector, receiver: Receiver
) -> None:
    correlation_id = f"trace-{uuid.uuid4().hex[:12]}"
    # A client's trace context must not be followed (the edge starts every trace).
    foreign_trace = uuid.uuid4().hex
    _, (new, ack) = subscribe_and_acknowledge(
        traced_stack,
        receiver,
        "/traced",
        {"x-correlation-id": correlation_id, "traceparent": f"00-{foreign_trace}-{'1' * 16}-01"},
    )
    notification_id = ack.json()["notificationId"]
    assert ack.headers["x-correlation-id"] == correlation_id

    [core] = collector.wait_for(
        "the core's span of the PATCH",
        lambda s: (
            s.service == "netweave-core"
            and s.attributes.get("netweave.correlation_id") == correlation_id
        ),
    )
    trace_id = core.trace_id
    assert core.kind == 2  # SERVER
    assert core.name == "o2ims.monitoring.v1.MonitoringService/PatchAlarm"
    assert core.attributes["rpc.system"] == "grpc"
    assert core.attributes["rpc.method"] == "PatchAlarm"
    assert core.attributes["rpc.grpc.status_code"] == 0

    [envoy] = collector.wait_for(
        "Envoy's span of the PATCH",
        lambda s: s.service == "netweave-envoy" and s.trace_id == trace_id,
    )
    assert core.parent_span_id == envoy.span_id, "the core's span is a child of Envoy's"
    assert envoy.attributes.get("netweave.correlation_id") == correlation_id
    assert envoy.attributes.get("netweave.route") == f"{MONITORING}/alarms/{{alarmEventRecordId}}"
    # http.url stops before the path (ids, query strings stay out of the collector).
    assert "alarms" not in str(envoy.attributes.get("http.url", ""))

    [publish] = collector.wait_for(
        "the span of the write that emitted the event",
        lambda s: s.trace_id == trace_id and s.name == f"{EVENTS_KEY} publish",
    )
    assert publish.service == "netweave-core"
    assert publish.parent_span_id == core.span_id

    [delivery] = collector.wait_for(
        "the notifier's delivery span",
        lambda s: s.service == "netweave-notifier" and s.trace_id == trace_id,
    )
    assert delivery.parent_span_id == publish.span_id
    assert delivery.name == "notification deliver"
    assert delivery.attributes["netweave.correlation_id"] == correlation_id
    assert delivery.attributes["netweave.notification_id"] == notification_id
    assert delivery.attributes["http.response.status_code"] == 204

    # The webhook carries the delivery span's context, sampled.
    assert traceparent(ack) == (trace_id, delivery.span_id, True)
    # The NEW notification (raised by a source, no call): a trace of its own.
    assert traceparent(new)[0] != trace_id
    assert all(span.trace_id != foreign_trace for span in collector.snapshot())

    # The subscription's creation: its own trace, Envoy's span and the core's.
    [created] = collector.wait_for(
        "the core's span of the subscription's creation",
        lambda s: (
            s.attributes.get("netweave.correlation_id") == "subscribe-traced"
            and s.service == "netweave-core"
        ),
    )
    assert created.name.endswith("/CreateAlarmSubscription")
    collector.wait_for(
        "Envoy's span of the subscription's creation",
        lambda s: s.service == "netweave-envoy" and s.span_id == created.parent_span_id,
    )


def test_with_tracing_off_nothing_is_exported_and_no_traceparent_is_sent(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> None:
    off_collector = TraceCollector().start()
    # The SDK's standard variables point at a collector: netweave must not read them.
    standard = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{off_collector.address}"}
    stack = start_stack(tmp_path_factory, standard, extra_notifier_env=standard)
    try:
        _, requests = subscribe_and_acknowledge(
            stack, receiver, "/untraced", {"x-correlation-id": "untraced-call"}
        )
        for request in requests:
            assert "traceparent" not in request.headers
        client = connect(stack.redis_url)
        try:
            events: Any = client.xrange(EVENTS_KEY)
        finally:
            client.close()
        acknowledged = [fields for _, fields in events if fields[b"event"] == b"ACKNOWLEDGE"]
        assert acknowledged and all(b"traceparent" not in fields for fields in acknowledged)
        assert all(fields[b"correlationId"] == b"untraced-call" for fields in acknowledged)
    finally:
        stack.stop()  # the processes' exit would flush any span
        off_collector.stop()
    assert off_collector.snapshot() == []
