"""The core's span per call (netweave/tracing.py), installed only when tracing is on.

The first interceptor of each listener, so the span covers everything the core does for a
call, access control included, and is current while the servicer runs: an event the call
writes stores this trace's `traceparent`. It is a child of the caller's `traceparent`
(gRPC metadata; Envoy's span for a REST call) when that is well formed. Attributes: the
RPC semantic conventions (`rpc.system`, `rpc.service`, `rpc.method`,
`rpc.grpc.status_code`) and `netweave.correlation_id`, read back from the trailing
metadata the access control interceptor sets (it decides the id, server/auth/interceptor.py).
Health checks get no span (Envoy probes every few seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import grpc

from netweave import tracing
from netweave.grpc_server import UnaryWrappers
from netweave.headers import CORRELATION_ID_HEADER
from server.auth.policy import PUBLIC, required_permission

# The codes that are the server's fault (OpenTelemetry's RPC conventions): the span's status
# is ERROR for these only; a NOT_FOUND or a refusal is the caller's business.
SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TracingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """A SERVER span per unary call (see the module docstring).

    The wrapper of a method is built once (per handler the rest of the chain returns), not
    per call: the caller's `traceparent` is read from the call's metadata when it runs, in
    the worker thread, and nothing is built on gRPC's polling thread per call."""

    unary_by_method = True  # UnaryWrappers (InterceptorChain)

    def __init__(self) -> None:
        self._unary = UnaryWrappers(_traced)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        method: str = details.method
        if handler is None or handler.unary_unary is None or required_permission(method) == PUBLIC:
            return handler
        return self._unary.of(handler, method)


def _traced(inner: Callable[[Any, Any], Any], method: str) -> Callable[[Any, Any], Any]:
    name = method.lstrip("/")
    service, _, rpc = name.partition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}

    def traced(request: Any, context: Any) -> Any:
        parent = ""
        for key, value in context.invocation_metadata() or ():
            if key == tracing.TRACEPARENT:
                parent = value
                break
        with tracing.span(name, kind="SERVER", parent=parent, attributes=attributes) as span:
            code = grpc.StatusCode.OK
            try:
                response = inner(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                if span is not None:
                    _finish(span, context, code)

    return traced


def _finish(span: Any, context: Any, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    for key, value in context.trailing_metadata() or ():
        if key == CORRELATION_ID_HEADER:
            span.set_attribute(tracing.CORRELATION_ID, value)
            break
    if code in SERVER_ERRORS:
        tracing.set_error(span, code.name)
