"""Ids of the AWS adapter's objects: UUIDv5 over the backend identity (ARNs, and a kind
prefix so that objects of different kinds never share an id), so they are stable across
restarts and polls and unique across adapters and accounts."""

from __future__ import annotations

import uuid
from typing import Final

NAMESPACE: Final = uuid.UUID("3d4a8e2c-7b61-4f0e-9c55-1a2b3c4d5e6f")


def object_id(kind: str, *identity: str) -> str:
    """The id of an object of `kind` ("resource", "resource_type", "alarm", ...) whose AWS
    identity is `identity` (its ARN, or the ARN and a qualifier)."""
    return str(uuid.uuid5(NAMESPACE, "/".join(("aws", kind, *identity))))
