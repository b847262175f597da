"""The core's SERVER span per call (server/tracing.py): its wrapper is built once per
method (issue 18), yet every call's span is the child of that call's own `traceparent`,
carries the RPC attributes, the call's status code and its correlation id."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from netweave import tracing
from netweave.headers import CORRELATION_ID_HEADER
from server.tracing import TracingInterceptor

METHOD = "/o2ims.inventory.v1.InventoryService/GetResourcePool"
CallDetails = collections.namedtuple("CallDetails", ["method", "invocation_metadata"])
Metadatum = collections.namedtuple("Metadatum", ["key", "value"])


class FakeContext:
    def __init__(self, metadata: dict[str, str], code: grpc.StatusCode | None = None) -> None:
        self.metadata = tuple(Metadatum(key, value) for key, value in metadata.items())
        self._code = code

    def invocation_metadata(self) -> tuple[Any, ...]:
        return self.metadata

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((CORRELATION_ID_HEADER, "c" * 32),)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing._PROCESS.state = tracing._State(provider, provider.get_tracer("test"))
    try:
        yield exporter
    finally:
        tracing.shutdown()


def parent(trace_digit: str) -> str:
    return f"00-{trace_digit * 32}-{'b' * 16}-01"


def test_each_call_is_the_child_of_its_own_traceparent(spans: InMemorySpanExporter) -> None:
    interceptor = TracingInterceptor()
    handler = grpc.unary_unary_rpc_method_handler(lambda _request, _context: b"ok")
    wrappers = []
    for metadata, code in (
        ({"traceparent": parent("1")}, None),
        ({"traceparent": parent("2")}, grpc.StatusCode.NOT_FOUND),
        ({}, None),
    ):
        context = FakeContext(metadata, code)
        wrapped = interceptor.intercept_service(
            lambda _details: handler, CallDetails(METHOD, context.metadata)
        )
        wrappers.append(wrapped)
        assert wrapped.unary_unary(b"", context) == b"ok"
    assert wrappers[0] is wrappers[1] is wrappers[2]  # built once for the method
    first, second, third = spans.get_finished_spans()
    assert first.context.trace_id == int("1" * 32, 16)
    assert second.context.trace_id == int("2" * 32, 16)
    assert third.parent is None and third.context.trace_id not in (
        int("1" * 32, 16),
        int("2" * 32, 16),
    )
    assert first.parent is not None and first.parent.span_id == int("b" * 16, 16)
    for span, code in ((first, 0), (second, grpc.StatusCode.NOT_FOUND.value[0]), (third, 0)):
        assert span.name == METHOD.lstrip("/")
        assert dict(span.attributes or {}) == {
            "rpc.system": "grpc",
            "rpc.service": "o2ims.inventory.v1.InventoryService",
            "rpc.method": "GetResourcePool",
            "rpc.grpc.status_code": code,
            tracing.CORRELATION_ID: "c" * 32,
        }


def test_a_new_handler_from_the_chain_gets_a_new_wrapper(spans: InMemorySpanExporter) -> None:
    interceptor = TracingInterceptor()
    details = CallDetails(METHOD, ())
    first = grpc.unary_unary_rpc_method_handler(lambda _request, _context: b"first")
    second = grpc.unary_unary_rpc_method_handler(lambda _request, _context: b"second")
    assert (
        interceptor.intercept_service(lambda _d: first, details).unary_unary(b"", FakeContext({}))
        == b"first"
    )
    assert (
        interceptor.intercept_service(lambda _d: second, details).unary_unary(b"", FakeContext({}))
        == b"second"
    )
    assert len(spans.get_finished_spans()) == 2


def test_health_checks_get_no_span(spans: InMemorySpanExporter) -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda _request, _context: b"")
    details = CallDetails("/grpc.health.v1.Health/Check", ())
    assert TracingInterceptor().intercept_service(lambda _d: handler, details) is handler
