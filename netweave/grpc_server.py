"""gRPC server construction shared by the core and the adapters: keepalive policy,
standard health service and server reflection, and servicers whose responses may be any
object that serializes itself (add_servicer)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from netweave.tls_files import Reloading, read_identity

# Why each option:
SERVER_OPTIONS: list[tuple[str, int]] = [
    # Envoy (and the core's adapter watchers) ping idle HTTP/2 connections; without
    # these the server answers GOAWAY "too_many_pings" and drops the connection.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    # Find dead peers (a killed watcher) instead of keeping their streams forever.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # A watch stream is long-lived; never cut it for age.
    ("grpc.max_connection_age_ms", 2**31 - 1),
    # Envoy forwards the REST path twice (:path and x-envoy-original-path). gRPC's default
    # soft limit (8 KiB) rejects requests between it and the hard limit (16 KiB) at random;
    # equal limits make it deterministic, and the edge turns the refusal into a 431.
    ("grpc.max_metadata_size", 16 * 1024),
    ("grpc.absolute_max_metadata_size", 16 * 1024),
    # The core's worker processes share the internal (and edge telemetry) port: the kernel
    # spreads connections over them (server/workers.py). gRPC's default on Linux, spelled
    # out because the workers depend on it.
    ("grpc.so_reuseport", 1),
]

# Client side of the same policy, for channels to long-lived watch streams.
CLIENT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


# For servers with no long-lived streams of their own (the core's listeners): a connection
# is closed after this age (GOAWAY, then `grace` for calls in flight), so an idle stream a
# client left open (server reflection) cannot hold a worker thread for ever. Envoy and
# grpcurl reconnect transparently.
BOUNDED_CONNECTION_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
]


def new_server(
    max_workers: int,
    interceptors: Sequence[Any] = (),
    *,
    options: Sequence[tuple[str, int]] = (),
    name: str = "grpc",
    max_concurrent_rpcs: int | None = None,
) -> grpc.Server:
    """A synchronous gRPC server (measured faster than grpc.aio on this grpcio).

    `options` override SERVER_OPTIONS. With `max_concurrent_rpcs`, calls beyond that many
    in progress are answered RESOURCE_EXHAUSTED at once instead of queueing without bound.
    """
    merged = dict(SERVER_OPTIONS)
    merged.update(dict(options))
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name),
        interceptors=[InterceptorChain(interceptors)] if interceptors else [],
        options=list(merged.items()),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )


class ReloadingServerCredentials:
    """TLS server credentials read from PEM files and re-read when they change, so a
    rotated certificate (a renewed Kubernetes Secret) is served from the next handshake on,
    without a restart; open connections keep theirs. With `client_ca`, a client
    certificate of that CA is required (the CA is re-read with the pair).

    gRPC asks before every handshake: a stat() per file, a read only on change. A new set
    that does not load (a key that does not match its certificate, half of a renewal)
    keeps the previous one (netweave/tls_files.py)."""

    def __init__(self, cert: str, key: str, client_ca: str | None) -> None:
        paths = [cert, key, *([client_ca] if client_ca else [])]
        self._files = Reloading(
            f"grpc_server:{cert}", paths, lambda: _server_configuration(cert, key, client_ca)
        )
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._files.value,
            self._files.refresh,
            require_client_authentication=client_ca is not None,
        )


def _server_configuration(cert: str, key: str, client_ca: str | None) -> Any:
    cert_pem, key_pem, ca_pem = read_identity(cert, key, client_ca)
    return grpc.ssl_server_certificate_configuration(
        [(key_pem, cert_pem)], root_certificates=ca_pem
    )


UnaryBehaviour = Callable[[Any, Any], Any]


class UnaryWrappers:
    """The unary handlers an interceptor wraps, built once per method rather than per
    call (on gRPC's polling thread, which holds the server's lock), and again only when
    the rest of the chain returns another handler for the method."""

    def __init__(self, wrap: Callable[[UnaryBehaviour, str], UnaryBehaviour]) -> None:
        """`wrap(behaviour, method)`: the behaviour a call of `method` runs instead."""
        self._wrap = wrap
        # method -> (the handler last wrapped, its wrapped version)
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def of(self, handler: Any, method: str) -> Any:
        """The wrapped version of a unary `handler` of `method`."""
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class InterceptorChain(grpc.ServerInterceptor):  # type: ignore[misc]
    """A server's interceptors run as one (new_server installs it). gRPC runs the chain on
    its polling thread for every call, before handing the call to a worker: that thread is
    the server's one serial step, so what runs there costs every call throughput.

    When every interceptor declares `unary_by_method = True` (its answer for a unary
    handler depends only on the method and the handler the rest of the chain returns:
    each builds its wrapper once per method, UnaryWrappers), a unary method's composed
    handler is built on its first call and looked up afterwards. Streaming calls, and
    every call when an interceptor does not declare it (one that decides per call), go
    through each interceptor every time, as with gRPC's own chaining."""

    def __init__(self, interceptors: Sequence[Any]) -> None:
        self._interceptors = tuple(interceptors)
        self._by_method = all(
            getattr(interceptor, "unary_by_method", False) for interceptor in self._interceptors
        )
        # method -> (the handler the server registered, the chain's handler for it)
        self._unary: dict[str, tuple[Any, Any]] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        if not self._by_method:
            return self._through(0, continuation, details)
        handler = continuation(details)
        if handler is None:
            return None
        if handler.unary_unary is None:
            return self._through(0, lambda _details: handler, details)
        method: str = details.method
        cached = self._unary.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        composed = self._through(0, lambda _details: handler, details)
        self._unary[method] = (handler, composed)
        return composed

    def _through(self, index: int, last: Callable[[Any], Any], details: Any) -> Any:
        if index == len(self._interceptors):
            return last(details)
        return self._interceptors[index].intercept_service(
            lambda next_details: self._through(index + 1, last, next_details), details
        )


class StreamLimiter(grpc.ServerInterceptor):  # type: ignore[misc]
    """Caps the streaming calls (server reflection, health Watch) a server runs at once,
    so idle streams cannot take every worker thread from the unary API calls: a stream
    over the cap ends at once with RESOURCE_EXHAUSTED."""

    # A unary handler passes unchanged (InterceptorChain).
    unary_by_method = True

    def __init__(self, max_streams: int) -> None:
        self._slots = threading.BoundedSemaphore(max_streams)
        self.max_streams = max_streams

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is not None:
            return handler
        slots = self._slots
        limit = self.max_streams
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }

        def admit(context: Any) -> None:
            if not slots.acquire(blocking=False):
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this server runs at most {limit} streaming calls at once",
                )

        def streaming(run: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
            def serve(request: Any, context: Any) -> Any:
                admit(context)
                try:
                    yield from run(request, context)
                finally:
                    slots.release()

            return serve

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kwargs)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kwargs)
        stream_unary = handler.stream_unary

        def serve_stream_unary(requests: Any, context: Any) -> Any:
            admit(context)
            try:
                return stream_unary(requests, context)
            finally:
                slots.release()

        return grpc.stream_unary_rpc_method_handler(serve_stream_unary, **kwargs)


def serialize_response(response: Any) -> bytes:
    """A response's bytes: a message's, or those of any object that serializes itself
    (server.listing.SerializedList, a list response written without a message)."""
    data: bytes = response.SerializeToString()
    return data


def add_servicer(
    add: Callable[[Any, grpc.Server], None], servicer: Any, server: grpc.Server
) -> None:
    """`add(servicer, server)` (a generated add_*Servicer_to_server) with every response
    serializer replaced by serialize_response, so a method may answer with any object
    that serializes itself, not only with its response message (whose own serializer
    refuses anything else)."""
    add(servicer, _SelfSerializing(server))


def _self_serializing(handler: Any) -> Any:
    return handler._replace(response_serializer=serialize_response)


class _SelfSerializing:
    """The two calls a generated add_*Servicer_to_server makes on a server, passed on
    with every handler's response serializer replaced."""

    def __init__(self, server: grpc.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self._server.add_generic_rpc_handlers(tuple(map(_SelfSerializingService, handlers)))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        replaced = {name: _self_serializing(handler) for name, handler in handlers.items()}
        self._server.add_registered_method_handlers(service, replaced)


class _SelfSerializingService(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def service(self, details: Any) -> Any:
        handler = self._inner.service(details)
        return None if handler is None else _self_serializing(handler)


def add_health_and_reflection(
    server: grpc.Server,
    service_names: Iterable[str],
    *,
    health_servicer: health.HealthServicer | None = None,
    with_reflection: bool = True,
) -> health.HealthServicer:
    """Register grpc.health.v1 and (unless `with_reflection` is False) server reflection
    for `service_names`.

    Returns the health servicer so the caller can flip statuses; every listed
    service (and the whole server, "") starts NOT_SERVING. Pass the servicer another server
    got to share one set of statuses between several listeners.
    """
    names = list(service_names)
    if health_servicer is None:
        health_servicer = health.HealthServicer(experimental_non_blocking=True)
        for name in ["", *names]:
            health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if not with_reflection:
        return health_servicer
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return health_servicer


def set_serving(
    health_servicer: health.HealthServicer, names: Iterable[str], serving: bool
) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ["", *names]:
        health_servicer.set(name, status)
