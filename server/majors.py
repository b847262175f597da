"""Which O2ims Inventory API majors this gateway serves (NETWEAVE_SERVED_MAJORS).

An operator whose SMOs speak only 1.x serves only `v1`: every path of a major not served is
a 404 (NOT_FOUND on gRPC), for the inventory and its subscriptions alike, and `api_versions`
lists only what is served. The major-less `GET /o2ims-infrastructureInventory/api_versions`
is an RPC of the v1 service, so it stays whatever is served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

import grpc
from google.rpc import code_pb2

from server.errors import ApiError

INVENTORY_MAJORS: Final = ("v1", "v2")
_SERVICE_PREFIX: Final = "/o2ims.inventory."
# Answers for every major: it is how a client learns which majors there are.
_ALWAYS_SERVED: Final = frozenset({"/o2ims.inventory.v1.InventoryService/GetAllApiVersions"})


class MajorNotServed(ApiError):
    code = grpc.StatusCode.NOT_FOUND
    rpc_code = code_pb2.NOT_FOUND

    def __init__(self, major: str) -> None:
        super().__init__(
            "API_MAJOR_NOT_SERVED",
            f"this gateway does not serve O2ims Inventory {major}",
            {"major": major},
        )


def parse_majors(text: str) -> tuple[str, ...]:
    """`v1,v2` -> ("v1", "v2"); raises ValueError naming NETWEAVE_SERVED_MAJORS."""
    majors = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [major for major in majors if major not in INVENTORY_MAJORS]
    if unknown or not majors:
        raise ValueError(
            f"NETWEAVE_SERVED_MAJORS must list one or more of {', '.join(INVENTORY_MAJORS)}, "
            f"got {text!r}"
        )
    return majors


class MajorGate(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses the calls of an Inventory major that is not served (NOT_FOUND)."""

    # Decided by the method alone (InterceptorChain).
    unary_by_method = True

    def __init__(self, served: Iterable[str]) -> None:
        self._served = frozenset(served)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method: str = details.method
        if not method.startswith(_SERVICE_PREFIX) or method in _ALWAYS_SERVED:
            return continuation(details)
        major = method[len(_SERVICE_PREFIX) :].split(".", 1)[0]
        if major in self._served:
            return continuation(details)
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        refusal = MajorNotServed(major)

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort_with_status(refusal.to_status())

        return grpc.unary_unary_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
