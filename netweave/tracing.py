"""Optional OpenTelemetry traces (OTLP/gRPC export), off by default.

`NETWEAVE_OTLP_ENDPOINT` (host:port of an OTLP/gRPC collector) turns them on; each process
calls `configure(...)` once at start-up and `shutdown()` on its way out (the last batch is
flushed). Off, nothing of the OpenTelemetry SDK is imported: the core does not even install
its tracing interceptor, and every helper here is one `is None` test returning a shared
no-op. On:

- the core: one SERVER span per unary call (server/tracing.py), a child of the caller's
  W3C `traceparent` (Envoy's span for a REST call), and a PRODUCER span around a write that
  emits an event, whose `traceparent` the event stores in Redis beside its `correlationId`;
- the notifier: one PRODUCER span per delivery attempt, a child of the event's
  `traceparent`; the webhook carries that span's `traceparent`.

Trace context is untrusted text from a caller or from Redis: only a well-formed version-00
`traceparent` (`well_formed`) is ever followed or forwarded; anything else starts a new
trace. The exporter sends spans in batches (BatchSpanProcessor): a call never waits for the
collector, and spans that do not fit the queue are dropped, not the call.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # the SDK is imported only when tracing is on (configure)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

TRACEPARENT: Final = "traceparent"
# Where events, queue entries and dead letters keep it in Redis (beside `correlationId`).
STORED_FIELD: Final = "traceparent"
# Attribute names every span of netweave uses for its own identifiers.
CORRELATION_ID: Final = "netweave.correlation_id"
NOTIFICATION_ID: Final = "netweave.notification_id"
SUBSCRIPTION_ID: Final = "netweave.subscription_id"

# W3C Trace Context, version 00: trace id and parent id not all zeros, flags two hex digits.
_TRACEPARENT: Final = re.compile(
    r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}", re.ASCII
)
_OFF: Final = contextlib.nullcontext(None)


@dataclass(frozen=True)
class TracingConfig:
    """What `configure` needs; `endpoint` empty: tracing off."""

    endpoint: str = ""
    # Share of new traces recorded (0..1); a trace begun upstream keeps its decision.
    sample_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.endpoint:
            check_endpoint(self.endpoint)
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError(
                f"NETWEAVE_TRACE_SAMPLE_RATIO must be between 0 and 1, got {self.sample_ratio}"
            )

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)


def check_endpoint(endpoint: str) -> tuple[str, int]:
    """(host, port) of a collector address (`host:port`, `[v6]:port`); raises ValueError
    naming the variable otherwise (a URL, a path or a missing port is refused, not guessed
    at)."""
    host, sep, port = endpoint.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    if (
        not sep
        or not bare
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or (":" in bare and not bracketed)
        or any(c in bare for c in "/@ ?#[]")
    ):
        raise ValueError(f"NETWEAVE_OTLP_ENDPOINT must be host:port, got {endpoint!r}")
    return bare, int(port)


class _State:
    __slots__ = ("provider", "tracer")

    def __init__(self, provider: TracerProvider, tracer: Tracer) -> None:
        self.provider = provider
        self.tracer = tracer


class _Process:
    """This process's exporter, if tracing is on (one per process: `configure`)."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: _State | None = None


_PROCESS: Final = _Process()


def configure(component: str, config: TracingConfig) -> bool:
    """Start exporting this process's spans if `config` says so; returns whether it does.
    Called again, it replaces the previous exporter (tests)."""
    shutdown()
    if not config.enabled:
        return False
    # Imported here: a process with tracing off never loads the SDK.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from netweave.version import version

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"netweave-{component}", "service.version": version()}
        ),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
    )
    # Plaintext gRPC to the collector (an agent beside the pod, or the cluster's collector
    # Service): spans carry method names, ids and statuses, never bodies or credentials.
    exporter = OTLPSpanExporter(endpoint=config.endpoint, insecure=True, timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _PROCESS.state = _State(provider, provider.get_tracer("netweave"))
    return True


def shutdown() -> None:
    """Flush and stop the exporter (no-op when off)."""
    state, _PROCESS.state = _PROCESS.state, None
    if state is not None:
        state.provider.shutdown()


def enabled() -> bool:
    return _PROCESS.state is not None


def well_formed(value: str | None) -> bool:
    return bool(value) and _TRACEPARENT.fullmatch(value or "") is not None


def _parent(traceparent: str | None) -> Any:
    """The OpenTelemetry context of a well-formed `traceparent`, else None (a new trace).
    Parsed here, not by the SDK's propagator (a third of a span's cost): the pattern has
    checked every part already."""
    if not traceparent or _TRACEPARENT.fullmatch(traceparent) is None:
        return None
    from opentelemetry.trace import (
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
        set_span_in_context,
    )

    remote = SpanContext(
        int(traceparent[3:35], 16),
        int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(traceparent[53:55], 16)),
    )
    return set_span_in_context(NonRecordingSpan(remote))


def span(
    name: str,
    *,
    kind: str = "INTERNAL",
    parent: str | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span current for the block (None when tracing is off): a child of `parent` (a
    `traceparent`; a malformed one is ignored: a new trace) if given, else of the current
    span. `kind`: SpanKind's name (SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL)."""
    state = _PROCESS.state
    if state is None:
        return _OFF
    from opentelemetry.trace import SpanKind

    started: contextlib.AbstractContextManager[Span] = state.tracer.start_as_current_span(
        name,
        context=_parent(parent) if parent is not None else None,
        kind=SpanKind[kind],
        attributes=attributes,
        # Callers record the outcome themselves (a gRPC code, an HTTP status): an abort is
        # an exception, yet a NOT_FOUND is no failure of the span.
        record_exception=False,
        set_status_on_exception=False,
    )
    return started


def traceparent() -> str:
    """The current span's `traceparent` ("" when off or outside any span): what an event
    written now stores, and what an outgoing request carries."""
    if _PROCESS.state is None:
        return ""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def set_error(current: Span | None, description: str) -> None:
    """Mark `current` failed (no-op for None: tracing off)."""
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode

    current.set_status(Status(StatusCode.ERROR, description))
