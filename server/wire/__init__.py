"""Domain model -> O2ims wire models.

One domain model (o2ims.adapter.v1) feeds every served major version. A WireModel
names a version's proto module and its builders: one function per object kind that
turns a domain object into that version's wire message. Builders that are the same in
every version live in server.wire.common and take the version's proto module, so the
versions differ only where the O2ims models differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from o2ims.adapter.v1 import domain_pb2


@dataclass(frozen=True)
class BuildContext:
    """What a builder may read besides the object itself: the whole (read-only) domain
    view, for the attributes O2ims copies or derives from related objects."""

    objects: Mapping[str, Mapping[str, Any]]
    o_cloud_id: str
    service_uri: str


Builder = Callable[[Any, BuildContext], Message]


@dataclass(frozen=True)
class WireModel:
    """One served major version of the Inventory API."""

    major: str  # "v1"
    version: str  # the minor implemented, e.g. "1.2.0"
    pb: ModuleType  # the generated *_pb2 module of that version
    builders: Mapping[str, Builder]

    @cached_property
    def resource_parses_from_domain(self) -> bool:
        """True when this version's ResourceInfo is the domain Resource field for field
        (same_shape): a stored resource's bytes then parse straight into its wire message,
        which is what the builder makes once extensions are present (server.cache)."""
        return same_shape(domain_pb2.Resource.DESCRIPTOR, self.pb.ResourceInfo.DESCRIPTOR)


def same_shape(domain: Descriptor, wire: Descriptor) -> bool:
    """Whether `domain`'s bytes parse as `wire`: the same field numbers, names, types and
    cardinality, no enums (the builders map those) and no oneofs, and message fields of the
    same shape (a message that holds itself, as a resource its elements, must hold the
    other) or the same well-known message (Struct). Presence may differ: a wire `optional`
    field parsed from domain bytes is set exactly when the domain value is not the default.
    server.cache relies on it for resources, whose builders set `optional` strings so
    (tests/server/test_wire_bytes.py proves the two equal)."""
    return _same_shape(domain, wire, {})


def _real_oneofs(message: Descriptor) -> list[Any]:
    # proto3 `optional` fields each sit in a synthetic oneof named after them.
    return [
        oneof
        for oneof in message.oneofs
        if not (len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name)
    ]


def _same_shape(domain: Descriptor, wire: Descriptor, seen: dict[str, str]) -> bool:
    if domain.full_name in seen:
        return seen[domain.full_name] == wire.full_name
    seen[domain.full_name] = wire.full_name
    if domain.full_name.startswith("google.protobuf.") or wire.full_name.startswith(
        "google.protobuf."
    ):
        return domain.full_name == wire.full_name
    if len(domain.fields) != len(wire.fields) or _real_oneofs(domain) or _real_oneofs(wire):
        return False
    for field in domain.fields:
        other = wire.fields_by_number.get(field.number)
        if (
            other is None
            or other.name != field.name
            or other.type != field.type
            or other.is_repeated != field.is_repeated
            or field.type == FieldDescriptor.TYPE_ENUM
        ):
            return False
        if field.message_type is not None and (
            other.message_type is None
            or not _same_shape(field.message_type, other.message_type, seen)
        ):
            return False
    return True
