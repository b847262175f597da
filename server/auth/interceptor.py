"""The core's access control: identify the caller, decide, audit, count.

One gRPC server interceptor for every service, so no servicer can forget it. Denied calls
end with PERMISSION_DENIED (REST 403), calls from the edge without any identity with
UNAUTHENTICATED (REST 401), both with a google.rpc.ErrorInfo saying why.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import grpc
import structlog
from google.protobuf import json_format
from google.rpc import code_pb2

from server.auth.audit import AuditLog, redact
from server.auth.identity import Identity, identify
from server.auth.policy import PUBLIC, AccessPolicy, Decision, required_permission
from server.errors import ApiError
from server.metrics import GatewayMetrics

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


class PermissionDenied(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED
    rpc_code = code_pb2.PERMISSION_DENIED


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED
    rpc_code = code_pb2.UNAUTHENTICATED


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        policy: AccessPolicy,
        audit: AuditLog | None,
        metrics: GatewayMetrics,
        edge_secret: str = "",
    ) -> None:
        self._policy = policy
        self._audit = audit
        self._metrics = metrics
        self._edge_secret = edge_secret

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        if required_permission(method) == PUBLIC:
            return handler  # health checks: neither identified, counted nor audited
        metadata = {item.key.lower(): item.value for item in details.invocation_metadata or ()}
        identity = identify(metadata, self._edge_secret)
        decision = self._policy.decide(method, self._policy.roles_of(identity))
        refusal = self._refusal(identity, decision, method)
        self._count(identity, decision, refusal)
        record = functools.partial(
            self._record,
            metadata,
            method=method,
            identity=identity,
            decision=decision,
            refusal=refusal,
        )
        if handler.unary_unary is None:
            # Streaming (reflection): decided here, audited without an outcome.
            record(request=None, code=None, duration_s=0.0)
            if refusal is not None:
                return _refusing_handler(handler, refusal)
            return handler
        inner = handler.unary_unary

        def guarded(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            code: grpc.StatusCode | None = None
            try:
                if refusal is not None:
                    code = refusal.code
                    context.abort_with_status(refusal.to_status())
                response = inner(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except Exception:
                code = code or context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                record(
                    request=request,
                    code=code,
                    duration_s=time.perf_counter() - start,
                    peer=context.peer(),
                )

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
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

    def _count(self, identity: Identity, decision: Decision, refusal: ApiError | None) -> None:
        result = "failure" if not identity.authenticated else "success"
        self._metrics.auth.labels(result, identity.via).inc()
        if identity.authenticated:
            role = decision.granted_by or (decision.roles[0] if decision.roles else "none")
            self._metrics.authz.labels("allowed" if refusal is None else "denied", role).inc()

    def _record(
        self,
        metadata: Mapping[str, str],
        *,
        method: str,
        identity: Identity,
        decision: Decision,
        refusal: ApiError | None,
        request: Any,
        code: grpc.StatusCode | None,
        duration_s: float,
        peer: str = "",
    ) -> None:
        if peer and identity.via == "internal":
            # Who called the core's port directly: its address is all there is to record.
            identity = dataclasses.replace(identity, peer=peer)
        if self._audit is None:
            return
        http_method = metadata.get("x-envoy-original-method", "POST").upper()
        path = metadata.get("x-envoy-original-path", method)
        status = HTTP_STATUS.get(code, 500) if code is not None else None
        if status == 200 and http_method == "POST" and "x-envoy-original-path" in metadata:
            status = 201  # a REST create (the core asked the edge for 201)
        record: dict[str, Any] = {
            "request_id": metadata.get("x-request-id", ""),
            "client": identity.client,
            "via": identity.via,
            "certificate_subject": identity.certificate_subject,
            "certificate_uri": identity.certificate_uri,
            "token_subject": identity.token_subject,
            "roles": list(decision.roles),
            "role": decision.granted_by,
            "operation": method,
            "method": http_method,
            "path": path,
            "permission": decision.permission,
            "decision": "deny" if refusal is not None else "allow",
            "grpc_code": code.name if code is not None else None,
            "status": status,
            "duration_ms": round(duration_s * 1000, 3),
        }
        if http_method in WRITE_METHODS and request is not None:
            try:
                record["body"] = redact(json_format.MessageToDict(request))
            except Exception as exc:
                record["body"] = f"[unrecordable: {type(exc).__name__}]"
        try:
            self._audit.write(record)
        except OSError as exc:
            log.error("audit_write_failed", error=str(exc))


def _refusing_handler(handler: Any, refusal: ApiError) -> Any:
    def refuse(_request: Any, context: Any) -> Any:
        context.abort_with_status(refusal.to_status())

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
