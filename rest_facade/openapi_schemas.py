"""JSON Schemas (OpenAPI 3.1 dialect, i.e. JSON Schema 2020-12) for protobuf messages, as
the transcoder prints and parses them: proto3 JSON mapping with the json_name of each
field, enums as value names, and every field without presence always printed. The
o2ims.options.v1 field options add what the mapping cannot say: `format` (e.g. uuid),
allowed string values, a `pattern`, request behaviour (required, output only) and Values
that carry one message or null.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from google.protobuf import descriptor, descriptor_pb2
from o2ims.options.v1 import field_pb2 as options

Schema = dict[str, Any]
FieldType = descriptor.FieldDescriptor

# proto3 JSON mapping of the scalar types. 64-bit integers travel as strings.
_SCALARS: dict[int, Schema] = {
    FieldType.TYPE_STRING: {"type": "string"},
    FieldType.TYPE_BOOL: {"type": "boolean"},
    FieldType.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldType.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldType.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldType.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldType.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldType.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldType.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldType.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldType.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldType.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
}

# Well-known types have their own JSON forms (google/protobuf/*.proto, "JSON Mapping").
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},  # any JSON value
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "required": ["@type"],
        "properties": {"@type": {"type": "string"}},
    },
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"]},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "pattern": "^-?[0-9]+$"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "pattern": "^[0-9]+$"},
}

# Suffix of the request-body variant of a message schema (see SchemaSet).
INPUT_SUFFIX = ".Input"


class Comments:
    """Leading comments of messages, fields, enums, services and methods, by full name
    (the descriptor set is built with --include_source_info)."""

    def __init__(self, file_set: descriptor_pb2.FileDescriptorSet) -> None:
        self._by_name: dict[str, str] = {}
        for file in file_set.file:
            by_path = {
                tuple(location.path): location.leading_comments.strip()
                for location in file.source_code_info.location
                if location.leading_comments.strip()
            }
            package = f"{file.package}." if file.package else ""
            for path, name in _named_paths(file, package):
                if path in by_path:
                    self._by_name[name] = _unwrap(by_path[path])

    def get(self, full_name: str) -> str | None:
        return self._by_name.get(full_name)


class SchemaSet:
    """The component schemas an OpenAPI document needs, added as they are referenced.

    Each message gets a response schema, in which every field without presence is required
    (the transcoder always prints those) and nothing else appears, and, if it appears in a
    request body, an input variant (`<name>.Input`) that requires only the fields declared
    REQUIRED (clients send partial objects), leaves out the OUTPUT_ONLY ones and allows
    unknown members (the transcoder ignores them).
    """

    def __init__(self, comments: Comments) -> None:
        self.schemas: dict[str, Schema] = {}
        self._comments = comments

    def ref(self, message: descriptor.Descriptor, *, request: bool = False) -> Schema:
        """A $ref to the schema of `message`, adding it (and what it uses) if new."""
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        name = message.full_name + (INPUT_SUFFIX if request else "")
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursive messages refer to themselves
            self.schemas[name] = self._message(message, request)
        return {"$ref": f"#/components/schemas/{name}"}

    def field(self, field: descriptor.FieldDescriptor, *, request: bool = False) -> Schema:
        """The schema of one field's JSON value (arrays and maps included)."""
        if _is_map(field):
            assert field.message_type is not None
            value_field = field.message_type.fields_by_name["value"]
            return {
                "type": "object",
                "additionalProperties": self._single(value_field, request),
            }
        single = self._single(field, request)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def _single(self, field: descriptor.FieldDescriptor, request: bool) -> Schema:
        field_options = field.GetOptions()
        value_of = field_options.Extensions[options.value_of]
        if value_of:
            assert field.message_type is not None  # a google.protobuf.Value, same pool
            carried = field.message_type.file.pool.FindMessageTypeByName(value_of)
            return {"anyOf": [self.ref(carried, request=request), {"type": "null"}]}
        if field.enum_type is not None:
            names = self._enum(field.enum_type)
            # The parser also takes the value's number.
            return {"anyOf": [names, {"type": "integer"}]} if request else names
        if field.message_type is not None:
            return self.ref(field.message_type, request=request)
        schema = dict(_SCALARS[field.type])
        if field_options.Extensions[options.format]:
            schema["format"] = field_options.Extensions[options.format]
        if field_options.Extensions[options.allowed_values]:
            schema["enum"] = list(field_options.Extensions[options.allowed_values])
        if request and field_options.HasExtension(options.minimum):
            schema["minimum"] = _number(field_options.Extensions[options.minimum])
        if request and field_options.Extensions[options.request_const]:
            schema["enum"] = [json.loads(field_options.Extensions[options.request_const])]
        if request and field_options.Extensions[options.pattern]:
            # What the core checks on input; stored values may predate the pattern.
            schema["pattern"] = field_options.Extensions[options.pattern]
        if request and schema.get("format") in ("int64", "uint64"):
            # The parser takes a number as well as the string the printer writes.
            schema["type"] = ["string", "integer"]
            schema.pop("pattern")
        return schema

    def _enum(self, enum: descriptor.EnumDescriptor) -> Schema:
        # always_print_enums_as_ints is off: enums travel as their value names.
        schema: Schema = {"type": "string", "enum": [value.name for value in enum.values]}
        comment = self._comments.get(enum.full_name)
        if comment:
            schema["description"] = comment
        return schema

    def _message(self, message: descriptor.Descriptor, request: bool) -> Schema:
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field in message.fields:
            behavior = set(field.GetOptions().Extensions[options.behavior])
            output_only = options.FIELD_BEHAVIOR_OUTPUT_ONLY in behavior
            if request and output_only:
                continue  # the server sets it; a request carrying it is refused
            schema = self.field(field, request=request)
            comment = self._comments.get(field.full_name)
            if comment:
                # Next to a $ref, other keywords are allowed in JSON Schema 2020-12.
                schema = {**schema, "description": comment}
            if output_only:
                schema["readOnly"] = True
            if not request and _optional_string(field):
                # Set only with a value: an unset optional attribute is left out, never "".
                schema["minLength"] = 1
            if request and (_optional_scalar(field) or _struct(field)):
                # The parser takes null for "unset", which an optional attribute may be.
                schema = _nullable(schema)
            properties[field.json_name] = schema
            if request:
                if options.FIELD_BEHAVIOR_REQUIRED in behavior:
                    required.append(field.json_name)
                    if field.type == FieldType.TYPE_STRING and not field.is_repeated:
                        # Without presence, "" is the same as left out.
                        schema["minLength"] = 1
            elif not field.has_presence:
                # Unset optional fields are left out, and selectors may leave out messages
                # (a value_of Value among them: it is a complex attribute).
                required.append(field.json_name)
        schema = {"type": "object", "properties": properties}
        if request:
            # Unknown members are ignored, but one with an empty name is refused.
            schema["propertyNames"] = {"minLength": 1}
        else:
            schema["additionalProperties"] = False
        if required:
            schema["required"] = required
        if request and message.GetOptions().Extensions[options.exactly_one]:
            schema["oneOf"] = [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in properties
            ]
        comment = self._comments.get(message.full_name)
        if comment:
            schema["description"] = comment
        return schema


def _number(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def _struct(field: descriptor.FieldDescriptor) -> bool:
    """A google.protobuf.Struct: the parser takes null for it too (an empty object)."""
    return field.message_type is not None and (
        field.message_type.full_name == "google.protobuf.Struct"
    )


def _optional_string(field: descriptor.FieldDescriptor) -> bool:
    """A proto3 `optional string` (explicit presence): printed only when set."""
    return field.type == FieldType.TYPE_STRING and field.has_presence and not field.is_repeated


def _optional_scalar(field: descriptor.FieldDescriptor) -> bool:
    """A proto3 `optional` scalar (explicit presence, not a message)."""
    return field.message_type is None and field.has_presence and not field.is_repeated


def _nullable(schema: Schema) -> Schema:
    """`schema` that also takes null."""
    schema = dict(schema)
    if "enum" in schema:
        schema["enum"] = [*schema["enum"], None]
    if isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    return schema


def _is_map(field: descriptor.FieldDescriptor) -> bool:
    entry = field.message_type
    return field.is_repeated and entry is not None and entry.GetOptions().map_entry


def _named_paths(
    file: descriptor_pb2.FileDescriptorProto, package: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    """(source-info path, full name) of everything in `file` that can carry a comment.
    Field numbers of descriptor.proto: file.message_type=4, .enum_type=5, .service=6;
    message.field=2, .nested_type=3, .enum_type=4; service.method=2."""
    for index, message in enumerate(file.message_type):
        yield from _message_paths(message, (4, index), package + message.name)
    for index, enum in enumerate(file.enum_type):
        yield (5, index), package + enum.name
    for index, service in enumerate(file.service):
        service_name = package + service.name
        yield (6, index), service_name
        for method_index, method in enumerate(service.method):
            yield (6, index, 2, method_index), f"{service_name}.{method.name}"


def _message_paths(
    message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    yield path, name
    for index, field in enumerate(message.field):
        yield (*path, 2, index), f"{name}.{field.name}"
    for index, nested in enumerate(message.nested_type):
        yield from _message_paths(nested, (*path, 3, index), f"{name}.{nested.name}")
    for index, enum in enumerate(message.enum_type):
        yield (*path, 4, index), f"{name}.{enum.name}"


def _unwrap(comment: str) -> str:
    """Proto comments are hard-wrapped at ~100 columns; paragraphs are what matters."""
    paragraphs = [
        " ".join(line.strip() for line in block.splitlines()) for block in comment.split("\n\n")
    ]
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)
