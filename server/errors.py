"""API errors: one exception type per failure kind, mapped once to a gRPC status with
google.rpc details (the REST edge maps the same status to ProblemDetails)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar, cast

import grpc
from google.rpc import code_pb2, error_details_pb2

from netweave.errors import ERROR_DOMAIN, error_status


class ApiError(Exception):
    """An error with a stable reason that callers can act on."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    rpc_code: int = code_pb2.INTERNAL

    def __init__(self, reason: str, message: str, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = metadata or {}

    def details(self) -> list[Any]:
        return [
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
            )
        ]

    def to_status(self) -> Any:
        return error_status(self.rpc_code, self.message, self.details())


class PermissionDenied(ApiError):
    """The caller may not do this (PERMISSION_DENIED, REST 403)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    rpc_code = code_pb2.PERMISSION_DENIED


class Unauthenticated(ApiError):
    """The caller could not be identified safely (UNAUTHENTICATED, REST 401)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    rpc_code = code_pb2.UNAUTHENTICATED


class NotFound(ApiError):
    """An object that does not exist (NOT_FOUND, REST 404)."""

    code = grpc.StatusCode.NOT_FOUND
    rpc_code = code_pb2.NOT_FOUND

    def __init__(self, object_type: str, id_field: str, object_id: str, reason: str) -> None:
        super().__init__(
            reason,
            f"{object_type} '{object_id}' not found",
            {id_field: object_id},
        )
        self.object_type = object_type
        self.object_id = object_id

    def details(self) -> list[Any]:
        return [
            *super().details(),
            error_details_pb2.ResourceInfo(
                resource_type=self.object_type, resource_name=self.object_id
            ),
        ]


class Unavailable(ApiError):
    """The gateway cannot answer yet (UNAVAILABLE, REST 503)."""

    code = grpc.StatusCode.UNAVAILABLE
    rpc_code = code_pb2.UNAVAILABLE


class FailedPrecondition(ApiError):
    """The request is valid but the stored state refuses it (FAILED_PRECONDITION). The
    transcoder would make that a 400; the REST shaper (envoy/modules/shaper.c) answers 409
    or 412 for the ErrorInfo reasons it lists."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    rpc_code = code_pb2.FAILED_PRECONDITION


class InvalidArgument(ApiError):
    """The request itself is wrong, whatever the stored state (INVALID_ARGUMENT, REST 400).

    `violations` are (field, description) pairs, sent as google.rpc.BadRequest field
    violations; the message (the REST ProblemDetails `detail`) lists them all, so a REST
    client learns every problem at once, not one per attempt.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT
    rpc_code = code_pb2.INVALID_ARGUMENT

    def __init__(self, reason: str, violations: Sequence[tuple[str, str]]) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one field violation")
        super().__init__(
            reason, "; ".join(f"{field}: {description}" for field, description in violations)
        )
        self.violations = tuple(violations)

    def details(self) -> list[Any]:
        return [
            *super().details(),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=text)
                    for field, text in self.violations
                ]
            ),
        ]


class AlreadyExists(ApiError):
    """The object to create duplicates an existing one.

    O2ims deployments disagree on the HTTP status of a duplicate (the conformance tests
    want 400, other SMOs 409), so the status is chosen per error: 409 is ALREADY_EXISTS;
    400 is FAILED_PRECONDITION, the code the transcoder maps to 400 whose meaning ("not
    allowed in the current state") fits a duplicate, unlike INVALID_ARGUMENT ("wrong
    whatever the state"). The reason and details are the same either way.
    """

    def __init__(
        self,
        object_type: str,
        id_field: str,
        existing_id: str,
        reason: str,
        message: str,
        *,
        http_status: int = 409,
    ) -> None:
        if http_status not in DUPLICATE_HTTP_STATUSES:
            raise ValueError(f"a duplicate answers 400 or 409, not {http_status}")
        super().__init__(reason, message, {id_field: existing_id})
        self.code, self.rpc_code = DUPLICATE_HTTP_STATUSES[http_status]
        self.object_type = object_type
        self.existing_id = existing_id

    def details(self) -> list[Any]:
        return [
            *super().details(),
            error_details_pb2.ResourceInfo(
                resource_type=self.object_type,
                resource_name=self.existing_id,
                description="the existing object this request duplicates",
            ),
        ]


# HTTP status of a duplicate -> the gRPC code Envoy's transcoder maps to it.
DUPLICATE_HTTP_STATUSES: Final[dict[int, tuple[grpc.StatusCode, int]]] = {
    400: (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    409: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
}


Handler = TypeVar("Handler", bound=Callable[..., Any])


def grpc_errors(method: Handler) -> Handler:
    """Turn ApiError raised by a servicer method into its gRPC status with details."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except ApiError as error:
            context.abort_with_status(error.to_status())

    return cast(Handler, wrapper)
