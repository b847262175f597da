"""Error conventions shared by every netweave gRPC service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

# google.rpc.ErrorInfo.domain of every error netweave raises.
ERROR_DOMAIN: Final = "o2ims.netweave.io"


def error_status(code: int, message: str, details: Iterable[Message]) -> Any:
    """A grpc.Status for context.abort_with_status(): google.rpc `code` with `details`
    (ErrorInfo first, by convention) packed as google.rpc.Status details."""
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))


def error_reason(error: Any) -> str:
    """The google.rpc.ErrorInfo reason a failed call carries ("" when it has none)."""
    try:
        status = rpc_status.from_call(error)
    except (AttributeError, ValueError):
        return ""
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""
