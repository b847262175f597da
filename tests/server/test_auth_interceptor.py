"""The access control interceptor remembers what a caller's credentials decide (issue 18)
without changing a decision: the same credentials are parsed once per method and peer,
other credentials get their own identity, the peer is checked on every call, refusals keep
their precise status, and the internal listener refuses identity headers on every call."""

from __future__ import annotations

import base64
import collections
import contextlib
import json
from pathlib import Path
from typing import Any
from unittest import mock

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from netweave.headers import IGNORED_QUERY_HEADER
from server.auth import AccessPolicy, AuditLog, AuthInterceptor
from server.auth.caller import Caller, current_caller
from server.auth.identity import Channel
from server.auth.identity import identify as identify_caller
from server.auth.interceptor import BODY_CACHE_MAX_BYTES, _cached_body
from server.metrics import GatewayMetrics
from tests.core_process import json_lines

EDGE_URI = "spiffe://netweave.local/edge"
METHOD = "/o2ims.inventory.v1.InventoryService/GetResourcePool"
CallDetails = collections.namedtuple("CallDetails", ["method", "invocation_metadata"])
Metadatum = collections.namedtuple("Metadatum", ["key", "value"])
POLICY = AccessPolicy.from_mapping(
    {
        "clients": [{"match": "sub:reader", "roles": ["o2ims-reader"]}],
        "direct_calls": ["o2ims-admin"],
    }
)


class Refused(Exception):
    pass


class FakeContext:
    def __init__(self, metadata: dict[str, str], peer_uri: str = EDGE_URI) -> None:
        self.metadata = tuple(Metadatum(key, value) for key, value in metadata.items())
        self.peer_uri = peer_uri
        self.status: Any = None
        self.trailing: tuple[Any, ...] = ()

    def invocation_metadata(self) -> tuple[Any, ...]:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"peer_uri": [self.peer_uri.encode()]} if self.peer_uri else {}

    def set_trailing_metadata(self, trailing: tuple[Any, ...]) -> None:
        self.trailing = trailing

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self.trailing

    def code(self) -> Any:
        return self.status.code if self.status is not None else None

    def abort_with_status(self, status: Any) -> None:
        self.status = status
        raise Refused


def claims(subject: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"sub": subject}).encode()).decode().rstrip("=")


def call(
    interceptor: AuthInterceptor, metadata: dict[str, str], peer_uri: str = EDGE_URI
) -> tuple[Caller | None, FakeContext]:
    """(the caller the servicer saw, or None when refused; the context)."""
    seen: list[Caller] = []

    def servicer(_request: Any, _context: Any) -> bytes:
        seen.append(current_caller())
        return b""

    handler = grpc.unary_unary_rpc_method_handler(servicer)
    context = FakeContext(metadata, peer_uri)
    wrapped = interceptor.intercept_service(
        lambda _details: handler, CallDetails(METHOD, context.metadata)
    )
    try:
        wrapped.unary_unary(b"", context)
    except Refused:
        return None, context
    return seen[0], context


def reason(context: FakeContext) -> tuple[grpc.StatusCode, str]:
    status = status_pb2.Status.FromString(
        dict(context.status.trailing_metadata)["grpc-status-details-bin"]
    )
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return context.status.code, info.reason


@pytest.fixture
def edge() -> AuthInterceptor:
    return AuthInterceptor(POLICY, None, GatewayMetrics(), Channel.EDGE, EDGE_URI)


def test_the_same_credentials_are_identified_once_and_others_apart(edge: AuthInterceptor) -> None:
    with mock.patch("server.auth.interceptor.identify", wraps=identify_caller) as identify:
        first, _ = call(edge, {"x-jwt-payload": claims("reader")})
        again, _ = call(edge, {"x-jwt-payload": claims("reader")})
        other, context = call(edge, {"x-jwt-payload": claims("stranger")})
    assert first == again == Caller(owner="token:reader", roles=("o2ims-reader",))
    assert other is None  # no role: refused, not served the reader's admission
    assert reason(context) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert identify.call_count == 2


def test_a_remembered_refusal_keeps_its_status_on_every_call(edge: AuthInterceptor) -> None:
    for _ in range(3):
        caller, context = call(edge, {"x-jwt-payload": claims("stranger")})
        assert caller is None
        assert reason(context) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    _, context = call(edge, {})
    assert reason(context) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


def test_the_peer_is_checked_on_every_call(edge: AuthInterceptor) -> None:
    metadata = {"x-jwt-payload": claims("reader")}
    assert call(edge, metadata)[0] is not None
    caller, context = call(edge, metadata, peer_uri="spiffe://netweave.local/impostor")
    assert caller is None
    assert reason(context) == (grpc.StatusCode.UNAUTHENTICATED, "NOT_THE_EDGE")


def test_identity_headers_on_the_internal_listener_are_refused_on_every_call() -> None:
    internal = AuthInterceptor(POLICY, None, GatewayMetrics(), Channel.INTERNAL)
    assert call(internal, {}, peer_uri="")[0] == Caller(
        owner="internal", sees_all=True, roles=("o2ims-admin",)
    )
    for _ in range(2):
        caller, context = call(internal, {"x-jwt-payload": claims("reader")}, peer_uri="")
        assert caller is None
        assert reason(context) == (grpc.StatusCode.UNAUTHENTICATED, "IDENTITY_HEADERS_OUTSIDE_EDGE")
    assert call(internal, {}, peer_uri="")[0] is not None


def audited_call(
    interceptor: AuthInterceptor, request: Any, metadata: dict[str, str] | None = None
) -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda _request, _context: b"")
    context = FakeContext(metadata or {}, peer_uri="")
    wrapped = interceptor.intercept_service(
        lambda _details: handler, CallDetails(METHOD, context.metadata)
    )
    wrapped.unary_unary(request, context)


def audit_records(audit: AuditLog, path: Path) -> list[dict[str, Any]]:
    audit.close()
    return json_lines(path)


def test_grpc_calls_are_audited_with_their_redacted_body_every_time(tmp_path: Path) -> None:
    """Every gRPC call is recorded as a POST with its body (remembered per request bytes
    since issue 18): the same request gives the same record fields each time, credentials
    stay redacted, and another request gets its own body."""
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    internal = AuthInterceptor(POLICY, audit, GatewayMetrics(), Channel.INTERNAL)
    secret = struct_pb2.Struct()
    secret.update({"callback": "https://smo:hunter2@smo.example/cb?token=abc", "password": "pw"})
    other = struct_pb2.Struct()
    other.update({"name": "pool-2"})
    for request in (secret, secret, other):
        audited_call(internal, request, {"x-request-id": "0123456789abcdef"})
    first, second, third = audit_records(audit, path)
    expected_body = {
        "callback": "https://[redacted]@smo.example/cb?token=[redacted]",
        "password": "[redacted]",
    }
    assert first["body"] == second["body"] == expected_body
    assert third["body"] == {"name": "pool-2"}
    for record in (first, second, third):
        assert list(record) == [
            "ts", "audit", "source", "request_id", "correlation_id", "client", "via",
            "certificate_subject", "certificate_uri", "token_subject", "roles", "role",
            "operation", "method", "path", "permission", "decision", "grpc_code", "status",
            "duration_ms", "body",
        ]  # fmt: skip
        assert (record["method"], record["path"], record["grpc_code"], record["status"]) == (
            "POST",
            METHOD,
            "OK",
            200,
        )
        assert record["request_id"] == "0123456789abcdef"
        # The caller's well-formed request id is the call's correlation id.
        assert record["correlation_id"] == "0123456789abcdef"


def test_a_large_body_is_recorded_whole_without_being_remembered(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    internal = AuthInterceptor(POLICY, audit, GatewayMetrics(), Channel.INTERNAL)
    large = struct_pb2.Struct()
    large.update({"description": "x" * (2 * BODY_CACHE_MAX_BYTES), "secret": "s"})
    before = _cached_body.cache_info().currsize
    audited_call(internal, large)
    [record] = audit_records(audit, path)
    assert record["body"] == {
        "description": "x" * (2 * BODY_CACHE_MAX_BYTES),
        "secret": "[redacted]",
    }
    assert _cached_body.cache_info().currsize == before


def test_rest_calls_keep_their_method_path_and_create_status(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    edge = AuthInterceptor(POLICY, audit, GatewayMetrics(), Channel.EDGE, EDGE_URI)
    body = struct_pb2.Struct()
    body.update({"callback": "https://smo.example/cb"})
    forwarded = {"x-jwt-payload": claims("reader")}
    rest = "/o2ims-infrastructureInventory/v1/resourcePools/p-1"
    handler = grpc.unary_unary_rpc_method_handler(lambda _request, _context: b"")
    for method in ("GET", "POST"):
        metadata = {
            **forwarded,
            "x-envoy-original-method": method,
            "x-envoy-original-path": rest,
        }
        context = FakeContext(metadata)
        edge.intercept_service(
            lambda _details: handler, CallDetails(METHOD, context.metadata)
        ).unary_unary(body, context)
    read, create = audit_records(audit, path)
    assert (read["method"], read["path"], read["status"], "body" in read) == (
        "GET",
        rest,
        200,
        False,
    )
    assert (create["method"], create["path"], create["status"], create["body"]) == (
        "POST",
        rest,
        201,
        {"callback": "https://smo.example/cb"},
    )


def test_percent_signs_in_what_is_recorded_are_kept_as_sent(tmp_path: Path) -> None:
    """The record's fixed part is a template filled per call: a `%` in the caller's
    subject, the REST path or the ids is data, never a placeholder."""
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    edge = AuthInterceptor(POLICY, audit, GatewayMetrics(), Channel.EDGE, EDGE_URI)
    handler = grpc.unary_unary_rpc_method_handler(lambda _request, _context: b"")
    rest = "/o2ims-infrastructureInventory/v1/resourcePools/100%25%s"
    for subject, original_path in (("reader%s%%", rest), ("reader%d", None)):
        metadata = {"x-jwt-payload": claims(subject), "x-request-id": "id-%s-0001"}
        if original_path is not None:
            metadata |= {"x-envoy-original-method": "GET", "x-envoy-original-path": original_path}
        context = FakeContext(metadata)
        with contextlib.suppress(Refused):  # no role for these subjects: recorded denials
            edge.intercept_service(
                lambda _details: handler, CallDetails(METHOD, context.metadata)
            ).unary_unary(b"", context)
    rest_call, grpc_call = audit_records(audit, path)
    assert rest_call["decision"] == grpc_call["decision"] == "deny"
    assert (rest_call["token_subject"], rest_call["path"], rest_call["request_id"]) == (
        "reader%s%%",
        rest,
        "id-%s-0001",
    )
    assert (grpc_call["token_subject"], grpc_call["path"], grpc_call["method"]) == (
        "reader%d",
        METHOD,
        "POST",
    )


def test_the_guard_counts_and_times_every_call_refused_ones_included() -> None:
    """The guard counts each call it wraps once (server/metrics.py MethodCounts): its code
    and duration (a refused call's too), and an admitted call's cache read and the query
    parameters the edge dropped."""
    metrics = GatewayMetrics()
    edge = AuthInterceptor(POLICY, None, metrics, Channel.EDGE, EDGE_URI)
    reader = {"x-jwt-payload": claims("reader")}

    def sample(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    for _ in range(3):
        assert call(edge, reader)[0] is not None
    assert call(edge, {**reader, IGNORED_QUERY_HEADER: "2"})[0] is not None
    assert call(edge, {})[0] is None  # no identity: UNAUTHENTICATED
    assert call(edge, {"x-jwt-payload": claims("stranger")})[0] is None  # no role
    assert call(edge, reader, peer_uri="spiffe://netweave.local/other")[0] is None
    assert sample("o2ims_grpc_requests_total", method=METHOD, code="OK") == 4
    assert sample("o2ims_grpc_requests_total", method=METHOD, code="UNAUTHENTICATED") == 2
    assert sample("o2ims_grpc_requests_total", method=METHOD, code="PERMISSION_DENIED") == 1
    assert sample("o2ims_grpc_request_duration_seconds_count", method=METHOD) == 7
    # Reads and dropped parameters: of admitted calls.
    assert sample("o2ims_cache_reads_total", api="inventory", result="hit") == 4
    assert sample("o2ims_ignored_query_parameters_total", method=METHOD) == 2

    # A handler that fails: its code (an abort's, else UNKNOWN).
    def failing(_request: Any, context: Any) -> bytes:
        raise ValueError("broken")

    context = FakeContext(reader)
    wrapped = edge.intercept_service(
        lambda _details: grpc.unary_unary_rpc_method_handler(failing),
        CallDetails(METHOD, context.metadata),
    )
    with pytest.raises(ValueError):
        wrapped.unary_unary(b"", context)
    assert sample("o2ims_grpc_requests_total", method=METHOD, code="UNKNOWN") == 1

    # A health check is not guarded, but counted.
    health = "/grpc.health.v1.Health/Check"
    context = FakeContext({})
    wrapped = edge.intercept_service(
        lambda _details: grpc.unary_unary_rpc_method_handler(lambda _r, _c: b""),
        CallDetails(health, context.metadata),
    )
    wrapped.unary_unary(b"", context)
    assert sample("o2ims_grpc_requests_total", method=health, code="OK") == 1
    assert context.trailing == ()  # not guarded: no correlation id, no identity
