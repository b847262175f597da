"""Attribute paths resolved against protobuf message descriptors by JSON name.

Both the filter and the attribute selectors name attributes the way REST clients see
them: the fields' JSON names, `/` between nesting levels. This module is the one place
that knows how such a path maps onto a descriptor, so `filter` and `fields` accept and
reject exactly the same attributes.
"""

from __future__ import annotations

import difflib
import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from server.query.errors import echo

STRUCT = "google.protobuf.Struct"
VALUE = "google.protobuf.Value"
LIST_VALUE = "google.protobuf.ListValue"
TIMESTAMP = "google.protobuf.Timestamp"
# Free-form JSON: any sub-path below these is allowed and resolved at evaluation time.
DYNAMIC_TYPES = frozenset({STRUCT, VALUE, LIST_VALUE})
# Well-known message types that JSON renders as a scalar, so they are neither objects to
# navigate nor "complex" attributes for the selectors.
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String")
)
JSON_SCALAR_MESSAGES = _WRAPPERS | {TIMESTAMP, "google.protobuf.Duration"}


class Leaf(enum.Enum):
    """What a resolved path ends on, as far as comparisons are concerned."""

    STRING = "a string"
    BOOL = "a boolean"
    INT = "an integer"
    FLOAT = "a number"
    ENUM = "an enumeration"
    TIMESTAMP = "a timestamp"
    DYNAMIC = "a free-form value"  # inside a Struct/Value: the JSON type is known per object
    OBJECT = "an object"  # a nested message or Struct: only its sub-attributes compare
    UNSUPPORTED = "not comparable"  # bytes, Duration: not filterable


_SCALAR_LEAVES = {
    FieldDescriptor.CPPTYPE_STRING: Leaf.STRING,
    FieldDescriptor.CPPTYPE_BOOL: Leaf.BOOL,
    FieldDescriptor.CPPTYPE_INT32: Leaf.INT,
    FieldDescriptor.CPPTYPE_INT64: Leaf.INT,
    FieldDescriptor.CPPTYPE_UINT32: Leaf.INT,
    FieldDescriptor.CPPTYPE_UINT64: Leaf.INT,
    FieldDescriptor.CPPTYPE_FLOAT: Leaf.FLOAT,
    FieldDescriptor.CPPTYPE_DOUBLE: Leaf.FLOAT,
    FieldDescriptor.CPPTYPE_ENUM: Leaf.ENUM,
}


class PathError(Exception):
    """Why a path does not resolve; `segment` is the 0-based index of the bad segment."""

    def __init__(self, message: str, segment: int) -> None:
        super().__init__(message)
        self.message = message
        self.segment = segment


@dataclass(frozen=True)
class Hop:
    """One navigation step: a message field, or a key into free-form JSON."""

    field: FieldDescriptor | None = None
    key: str | None = None


@dataclass(frozen=True)
class ResolvedPath:
    """A path bound to a descriptor: how to walk it and what it ends on."""

    hops: tuple[Hop, ...]
    leaf: Leaf
    # The path in canonical spelling (JSON names after aliases; free-form keys as given).
    canonical: tuple[str, ...]
    # The last message field on the path (carries enum values, wrapper type, ...).
    last_field: FieldDescriptor | None


@functools.cache
def json_fields(descriptor: Descriptor) -> Mapping[str, FieldDescriptor]:
    """The fields of a message type by JSON name."""
    return {field.json_name: field for field in descriptor.fields}


def is_map(field: FieldDescriptor) -> bool:
    """True for map<K, V> fields (repeated entry messages in the descriptor)."""
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


def leaf_of(field: FieldDescriptor) -> Leaf:
    """The comparison type of a field that a path ends on."""
    message = field.message_type
    if message is None:
        return _SCALAR_LEAVES.get(field.cpp_type, Leaf.UNSUPPORTED)
    if message.full_name == TIMESTAMP:
        return Leaf.TIMESTAMP
    if message.full_name in _WRAPPERS:
        return leaf_of(message.fields_by_name["value"])
    if message.full_name in {VALUE, LIST_VALUE}:
        return Leaf.DYNAMIC
    if message.full_name in JSON_SCALAR_MESSAGES:
        return Leaf.UNSUPPORTED
    return Leaf.OBJECT


def _unknown(name: str, choices: Mapping[str, FieldDescriptor], parent: str) -> str:
    where = f" in '{parent}'" if parent else ""
    message = f"unknown attribute {echo(name)}{where}"
    # Suggest only public JSON names: never internal (proto) spellings.
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"{message} (did you mean '{close[0]}'?)" if close else message


def resolve_path(
    descriptor: Descriptor,
    segments: tuple[str, ...],
    aliases: Mapping[str, str] | None = None,
) -> ResolvedPath:
    """Resolve `segments` (JSON names; free-form keys below a Struct) against a message.

    `aliases` maps alternate attribute spellings to JSON names; a real JSON name always
    wins over an alias. Raises PathError for unknown attributes and for sub-paths of
    scalars.
    """
    aliases = aliases or {}
    if not segments:
        raise PathError("empty attribute path", 0)
    hops: list[Hop] = []
    canonical: list[str] = []
    message = descriptor
    last_field: FieldDescriptor | None = None
    leaf = Leaf.OBJECT
    for index, segment in enumerate(segments):
        if message.full_name in DYNAMIC_TYPES:
            # Below free-form JSON every key is allowed; it may be absent per object.
            hops.append(Hop(key=segment))
            canonical.append(segment)
            leaf = Leaf.DYNAMIC
            continue
        fields = json_fields(message)
        field = fields.get(segment)
        if field is None and segment in aliases:
            field = fields.get(aliases[segment])
        if field is None:
            raise PathError(_unknown(segment, fields, "/".join(canonical)), index)
        if is_map(field):
            raise PathError(f"map attribute '{field.json_name}' cannot be queried", index)
        hops.append(Hop(field=field))
        canonical.append(field.json_name)
        last_field = field
        leaf = leaf_of(field)
        if field.message_type is not None and leaf in (Leaf.OBJECT, Leaf.DYNAMIC):
            message = field.message_type
        elif index + 1 < len(segments):
            raise PathError(
                f"attribute '{'/'.join(canonical)}' is {leaf.value}, it has no "
                f"attribute {echo(segments[index + 1])}",
                index + 1,
            )
    return ResolvedPath(tuple(hops), leaf, tuple(canonical), last_field)
