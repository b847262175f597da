"""gRPC response metadata that the REST edge (envoy/modules/shaper.c) turns into HTTP."""

from __future__ import annotations

from typing import Final

import grpc

# Initial metadata carrying the HTTP status a REST caller must see (the transcoder answers
# every success with 200); the shaper sets :status from it and, like every x-o2ims-*
# header, never forwards it. Must match the name envoy/modules/shaper.c reads (a test
# keeps the two in step).
HTTP_STATUS_HEADER: Final = "x-o2ims-http-status"
LOCATION_HEADER: Final = "location"


def mark_created(context: grpc.ServicerContext, location: str) -> None:
    """REST: 201 Created with `Location`. Send only once the object exists: initial
    metadata cannot be taken back if the call fails afterwards."""
    context.send_initial_metadata(((HTTP_STATUS_HEADER, "201"), (LOCATION_HEADER, location)))
