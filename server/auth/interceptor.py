"""The core's access control: identify the caller, decide, audit, count; and the call's
correlation id.

One gRPC server interceptor for every service, so no servicer can forget it. Denied calls
end with PERMISSION_DENIED (REST 403), calls from the edge without any identity with
UNAUTHENTICATED (REST 401), both with a google.rpc.ErrorInfo saying why.

The per-call work is small (issue 18; bench/instrumentation_bench.py measures it): the
outcome of a caller's credentials for a method is computed once and remembered (see
AuthInterceptor), the wrapper of each method is built once, and the audit record is queued
as what it is made of (_CallRecord) for a writer thread (server/auth/audit.py), which
encodes it, reusing what repeats from call to call (the request body as JSON, a gRPC call's
method and path, the outcome) encoded once.

Every audited call gets its correlation id here, once: the caller's well-formed
`x-correlation-id` (the edge always forwards one), else its `x-request-id`, else a new one
(netweave/correlation.py). It is current for the whole call (every core log line of it
carries `correlation_id`; the subscription or alarm event the call writes stores it), goes
into the audit record, and comes back to the caller as trailing metadata
`x-correlation-id`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc
import structlog
from google.protobuf import json_format

from netweave import correlation
from netweave.grpc_server import UnaryWrappers
from netweave.headers import (
    CLIENT_CERT_HEADER,
    CORRELATION_ID_HEADER,
    IDENTITY_HEADERS,
    JWT_PAYLOAD_HEADER,
)
from server.auth.audit import (
    AuditLog,
    Deferred,
    EncodedFields,
    encode_fields,
    encode_string,
    redact,
)
from server.auth.caller import CURRENT_CALLER, Caller
from server.auth.identity import Channel, Identity, IdentityRefused, identify
from server.auth.policy import PUBLIC, AccessPolicy, Decision, required_permission
from server.errors import ApiError, PermissionDenied, Unauthenticated
from server.metrics import GatewayMetrics, counted

log = structlog.get_logger()

# HTTP status a REST client sees for each gRPC code (the transcoder's mapping, with the
# REST shaper's changes: UNIMPLEMENTED is a 404 there).
HTTP_STATUS: Final[Mapping[grpc.StatusCode, int]] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_IDENTITY_HEADERS: Final = frozenset(IDENTITY_HEADERS)


# Admissions remembered per listener (credentials x method x Envoy connection): an SMO
# presents the same certificate and token on every call, so each is parsed and decided once.
# Bounded, least recently used out (a stream of new tokens cannot grow it): at most ~2.5 MB
# of keys (a forwarded certificate is ~2 KB).
ADMISSION_CACHE: Final = 1024


@dataclass(frozen=True, slots=True)
class Admission:
    """What a call's credentials decide for its method: the same for every call that
    presents the same credentials on the same listener, so it is computed once (see
    AuthInterceptor). `caller_fields` and `decision_fields` are the audit record's fields
    that follow from it, encoded once."""

    identity: Identity
    decision: Decision
    refusal: ApiError | None
    caller: Caller
    counters: tuple[Any, ...]
    caller_fields: EncodedFields
    decision_fields: EncodedFields


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Access control for one listener of the core. `channel` says which: on the edge
    listener (mutual TLS) the peer must be the edge (`edge_peer_uri`, its certificate's
    URI SAN) and the identity Envoy forwarded is believed; on the internal listener the
    caller gets the policy's `direct_calls` roles and identity headers are refused.

    The peer is checked on every call (its TLS identity is the connection's). What follows
    from the credentials is remembered (ADMISSION_CACHE), keyed by the exact values of the
    forwarded certificate and token claims with the method and the peer address, so a
    cached admission is only ever reused for the same bytes from the same connection
    address; a new policy means a new interceptor (the policy is read at start) and so an
    empty cache."""

    # A unary method's guard is built once (UnaryWrappers) and decides per call inside it,
    # so the chain may keep it by method (InterceptorChain).
    unary_by_method = True

    def __init__(
        self,
        policy: AccessPolicy,
        audit: AuditLog | None,
        metrics: GatewayMetrics,
        channel: Channel,
        edge_peer_uri: str = "",
    ) -> None:
        if channel is Channel.EDGE and not edge_peer_uri:
            raise ValueError("the edge listener needs the edge's identity (edge_peer_uri)")
        self._policy = policy
        self._audit = audit
        self._metrics = metrics
        self._channel = channel
        self._edge_peer_uri = edge_peer_uri.encode()
        self._admission = functools.lru_cache(maxsize=ADMISSION_CACHE)(self._decide)
        self._unary = UnaryWrappers(self._guard_unary)
        self._counted = UnaryWrappers(counted(metrics))

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        if required_permission(method) == PUBLIC:
            # Health checks: neither identified, authorized nor audited; counted.
            if handler.unary_unary is None:
                return handler
            return self._counted.of(handler, method)
        if handler.unary_unary is None:
            return self._guard_stream(handler, method, details.invocation_metadata)
        return self._unary.of(handler, method)

    def _guard_unary(self, inner: Callable[[Any, Any], Any], method: str) -> Any:
        # Everything a call uses, bound once: the guard runs on every call, where each
        # Python frame and attribute lookup costs several times what it does in a loop
        # ("Fourth pass" in docs/performance.md). The correlation id and the caller are set
        # on their context variables directly rather than through their context managers
        # (netweave/correlation.py `bound`, server/auth/caller.py `acting_as`), same effect.
        audit = self._audit
        admit = self._admit
        counts = self._metrics.counts_of(method)
        started, finished = counts.started, counts.finished
        perf_counter = time.perf_counter
        from_metadata = correlation.from_metadata
        current_correlation = correlation.CURRENT
        current_caller = CURRENT_CALLER
        ok = grpc.StatusCode.OK

        def guarded(request: Any, context: Any) -> Any:
            start = perf_counter()
            metadata = dict(context.invocation_metadata() or ())
            correlation_id = from_metadata(metadata)[0]
            correlation_token = current_correlation.set(correlation_id)
            code: grpc.StatusCode | None = None
            admission: Admission | None = None
            try:
                context.set_trailing_metadata(((CORRELATION_ID_HEADER, correlation_id),))
                admission = admit(method, metadata, context)
                refusal = admission.refusal
                if refusal is not None:
                    code = refusal.code
                    context.abort_with_status(refusal.to_status())
                started(metadata)  # an admitted call's read and dropped parameters
                caller_token = current_caller.set(admission.caller)
                try:
                    response = inner(request, context)
                finally:
                    current_caller.reset(caller_token)
                code = context.code() or ok
                return response
            except Exception:
                if code is None and context.code() is None:
                    # Not an abort: grpc logs it too, but after the call, without the id.
                    log.exception("rpc_failed", method=method)
                code = code or context.code() or grpc.StatusCode.UNKNOWN
                _keep_correlation_trailer(context, correlation_id)
                raise
            finally:
                duration_s = perf_counter() - start
                finished("UNKNOWN" if code is None else code.name, duration_s)
                if audit is not None and admission is not None:
                    audit.write(
                        _CallRecord(
                            metadata,
                            admission,
                            method=method,
                            request=request,
                            code=code,
                            duration_s=duration_s,
                            correlation_id=correlation_id,
                        )
                    )
                current_correlation.reset(correlation_token)

        return guarded

    def _guard_stream(self, handler: Any, method: str, invocation_metadata: Any) -> Any:
        """Streaming calls (reflection): decided when the call starts, audited without an
        outcome."""
        metadata = dict(invocation_metadata or ())
        correlation_id, _ = correlation.from_metadata(metadata)

        def admit(context: Any) -> None:
            with correlation.bound(correlation_id):
                admission = self._open(method, metadata, context, correlation_id)
                if self._audit is not None:
                    self._audit.write(
                        _CallRecord(
                            metadata,
                            admission,
                            method=method,
                            request=None,
                            code=None,
                            duration_s=0.0,
                            correlation_id=correlation_id,
                        )
                    )
                if admission.refusal is not None:
                    try:
                        context.abort_with_status(admission.refusal.to_status())
                    finally:
                        _keep_correlation_trailer(context, correlation_id)

        return _stream_handler(handler, admit)

    def _open(
        self, method: str, metadata: Mapping[str, str], context: Any, correlation_id: str
    ) -> Admission:
        """The start of every call: its correlation id on the response, then `_admit`."""
        context.set_trailing_metadata(((CORRELATION_ID_HEADER, correlation_id),))
        return self._admit(method, metadata, context)

    def _admit(self, method: str, metadata: Mapping[str, str], context: Any) -> Admission:
        """Who is calling, what the policy decides, and the refusal if any (counted)."""
        peer = context.peer()
        if self._channel is Channel.EDGE:
            try:
                self._check_peer(context)
            except IdentityRefused as refused:
                admission = self._refused(method, peer, refused)
            else:
                admission = self._admission(
                    method,
                    peer,
                    metadata.get(CLIENT_CERT_HEADER, ""),
                    metadata.get(JWT_PAYLOAD_HEADER, ""),
                )
        elif _IDENTITY_HEADERS.isdisjoint(metadata):
            admission = self._admission(method, peer, "", "")
        else:
            admission = self._decide(method, peer, metadata=metadata)  # refused: rare
        for counter in admission.counters:
            counter.inc()
        return admission

    def _decide(
        self,
        method: str,
        peer: str,
        certificate: str = "",
        claims: str = "",
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> Admission:
        """The admission of a call of `method` from `peer` presenting `certificate` and
        `claims` (the forwarded headers' values; the whole metadata on the internal
        listener, where presenting any is refused)."""
        if metadata is None:
            metadata = {}
            if certificate:
                metadata[CLIENT_CERT_HEADER] = certificate
            if claims:
                metadata[JWT_PAYLOAD_HEADER] = claims
        try:
            identity = identify(metadata, self._channel, peer)
        except IdentityRefused as refused:
            return self._refused(method, peer, refused)
        decision = self._policy.decide(method, self._policy.roles_of(identity))
        refusal = self._refusal(identity, decision, method)
        return self._admission_of(method, identity, decision, refusal)

    def _refused(self, method: str, peer: str, refused: IdentityRefused) -> Admission:
        identity = Identity(via="none", peer=peer)
        decision = self._policy.decide(method, self._policy.roles_of(identity))
        refusal = Unauthenticated(refused.reason, str(refused), {"method": method})
        return self._admission_of(method, identity, decision, refusal)

    def _admission_of(
        self, method: str, identity: Identity, decision: Decision, refusal: ApiError | None
    ) -> Admission:
        caller = Caller(
            owner=identity.owner,
            sees_all=self._policy.sees_all(decision.roles),
            roles=decision.roles,
        )
        return Admission(
            identity=identity,
            decision=decision,
            refusal=refusal,
            caller=caller,
            counters=self._counters(identity, decision, refusal),
            caller_fields=encode_fields(
                {
                    "client": identity.client,
                    "via": identity.via,
                    "certificate_subject": identity.certificate_subject,
                    "certificate_uri": identity.certificate_uri,
                    "token_subject": identity.token_subject,
                    "roles": list(decision.roles),
                    "role": decision.granted_by,
                    "operation": method,
                }
            ),
            decision_fields=encode_fields(
                {
                    "permission": decision.permission,
                    "decision": "deny" if refusal is not None else "allow",
                }
            ),
        )

    def _check_peer(self, context: Any) -> None:
        """(Calls on the edge listener.) The TLS layer verified the certificate against the
        edge CA; its URI SAN says whether it is the edge's own (another service's certificate
        of the same CA is not)."""
        presented = context.auth_context().get("peer_uri", [])
        if presented != [self._edge_peer_uri]:
            raise IdentityRefused(
                "NOT_THE_EDGE",
                "calls on the edge listener must come from the edge (its certificate "
                "identity does not match)",
            )

    def _refusal(self, identity: Identity, decision: Decision, method: str) -> ApiError | None:
        if decision.allowed:
            return None
        if not identity.authenticated:
            return Unauthenticated(
                "UNAUTHENTICATED",
                "the caller presented neither a client certificate nor a bearer token",
                {"method": method},
            )
        return PermissionDenied(
            "PERMISSION_DENIED",
            f"'{identity.client}' may not call this ({decision.permission} is needed; "
            f"roles held: {', '.join(decision.roles) or 'none'})",
            {"permission": decision.permission, "roles": ",".join(decision.roles)},
        )

    def _counters(
        self, identity: Identity, decision: Decision, refusal: ApiError | None
    ) -> tuple[Any, ...]:
        """The o2ims_auth (and, for an identified caller, o2ims_authz) children a call
        with this outcome counts in."""
        result = "failure" if not identity.authenticated else "success"
        counters = [self._metrics.auth.labels(result, identity.via)]
        if identity.authenticated:
            role = decision.granted_by or (decision.roles[0] if decision.roles else "none")
            verdict = "allowed" if refusal is None else "denied"
            counters.append(self._metrics.authz.labels(verdict, role))
        return tuple(counters)


class _CallRecord(Deferred):
    """A call's audit record, kept as what it is made of and encoded by the audit writer
    (audit.py): the call's thread only queues it. Its metadata (a dict of this call's own)
    and its request (gRPC's message for this call, read by nothing once the handler has
    returned) do not change after the call."""

    __slots__ = (
        "admission",
        "code",
        "correlation_id",
        "duration_s",
        "metadata",
        "method",
        "request",
    )

    def __init__(
        self,
        metadata: Mapping[str, str],
        admission: Admission,
        *,
        method: str,
        request: Any,
        code: grpc.StatusCode | None,
        duration_s: float,
        correlation_id: str,
    ) -> None:
        self.metadata = metadata
        self.admission = admission
        self.method = method
        self.request = request
        self.code = code
        self.duration_s = duration_s
        self.correlation_id = correlation_id

    def members(self) -> str:
        """The fields in the order they have always had (the module docstring of audit.py);
        those that repeat from call to call (a gRPC call's method and path, the outcome,
        a small request's body) are encoded once and reused."""
        metadata = self.metadata
        http_method = metadata.get("x-envoy-original-method", "POST").upper()
        rest_path = metadata.get("x-envoy-original-path")
        parts = [
            f'"request_id":{encode_string(metadata.get("x-request-id", ""))},'
            f'"correlation_id":{encode_string(self.correlation_id)}',
            self.admission.caller_fields,
        ]
        if rest_path is None:
            parts.append(_shared_fields(("method", http_method), ("path", self.method)))
        else:
            parts.append(_shared_fields(("method", http_method)))
            parts.append(f'"path":{encode_string(rest_path)}')
        parts += [
            self.admission.decision_fields,
            _outcome_fields(self.code, http_method == "POST" and rest_path is not None),
            # A finite float: Python's own text for it, what json writes.
            f'"duration_ms":{float.__repr__(round(self.duration_s * 1000, 3))}',
        ]
        if http_method in WRITE_METHODS and self.request is not None:
            parts.append(_body_field(self.request))
        return ",".join(parts)


# Request bodies remembered, encoded (`_body_field`): a client that polls sends the same
# request over and over (every gRPC call is recorded as a POST with its body). Bounded,
# least recently used out: at most this many bodies of BODY_CACHE_MAX_BYTES each (a few MB
# with their JSON at worst); a larger body is converted on every call, as before.
BODY_CACHE: Final = 512
BODY_CACHE_MAX_BYTES: Final = 4096


def _body_field(request: Any) -> EncodedFields:
    """The audit record's `body` member for `request`: the message as O2ims JSON,
    credentials redacted. The same bytes of the same message type always give the same
    member, so a small request's is computed once."""
    try:
        if request.ByteSize() > BODY_CACHE_MAX_BYTES:
            return _encode_body(request)  # never remembered: not serialized to key it
        serialized = request.SerializeToString(deterministic=True)
    except Exception as exc:  # not a message: recorded as such, the call is not failed
        return encode_fields({"body": f"[unrecordable: {type(exc).__name__}]"})
    message_type: Any = type(request)
    return _cached_body(message_type, serialized)


@functools.lru_cache(maxsize=BODY_CACHE)
def _cached_body(message_type: Any, serialized: bytes) -> EncodedFields:
    return _encode_body(message_type.FromString(serialized))


def _encode_body(request: Any) -> EncodedFields:
    try:
        body: Any = redact(json_format.MessageToDict(request))
    except Exception as exc:
        body = f"[unrecordable: {type(exc).__name__}]"
    return encode_fields({"body": body})


@functools.lru_cache(maxsize=256)
def _shared_fields(*fields: tuple[str, Any]) -> EncodedFields:
    """`fields` encoded, once per distinct set: few (methods x HTTP methods of gRPC calls;
    REST paths, which carry ids, are not passed here)."""
    return encode_fields(dict(fields))


@functools.lru_cache(maxsize=64)
def _outcome_fields(code: grpc.StatusCode | None, rest_create: bool) -> EncodedFields:
    """`grpc_code` and `status` (the HTTP status a REST client saw) of an outcome."""
    status = HTTP_STATUS.get(code, 500) if code is not None else None
    if status == 200 and rest_create:
        status = 201  # a REST create (the core asked the edge for 201)
    return encode_fields({"grpc_code": code.name if code is not None else None, "status": status})


def _keep_correlation_trailer(context: Any, correlation_id: str) -> None:
    """An abort replaces the call's trailing metadata (with the error's details): add the
    correlation id back."""
    trailing = tuple(context.trailing_metadata() or ())
    if not any(key == CORRELATION_ID_HEADER for key, _ in trailing):
        context.set_trailing_metadata((*trailing, (CORRELATION_ID_HEADER, correlation_id)))


def _stream_handler(handler: Any, admit: Callable[[Any], None]) -> Any:
    """`handler` (a streaming one) with `admit(context)` run before it; `admit` aborts
    the call to refuse it."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        def serve_unary_stream(request: Any, context: Any) -> Any:
            admit(context)
            yield from unary_stream(request, context)

        return grpc.unary_stream_rpc_method_handler(serve_unary_stream, **kwargs)
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        def serve_stream_unary(requests: Any, context: Any) -> Any:
            admit(context)
            return stream_unary(requests, context)

        return grpc.stream_unary_rpc_method_handler(serve_stream_unary, **kwargs)
    stream_stream = handler.stream_stream

    def serve_stream_stream(requests: Any, context: Any) -> Any:
        admit(context)
        yield from stream_stream(requests, context)

    return grpc.stream_stream_rpc_method_handler(serve_stream_stream, **kwargs)
