"""Fill a domain message from one YAML mapping, keyed by the O2ims (JSON) attribute
names, with every type problem reported at the line of the offending key."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from o2ims.adapter.v1 import domain_pb2

from adapters.static.marked_yaml import LineProblem, MarkedDict, MarkedList

# O2ims declares these as uuid. globalLocationId is SMO-defined free text,
# managementInterfaceId holds names ("O2IMS") and globalAssetId is a serial number.
UUID_FIELDS: Final = frozenset(
    {
        "oCloudId",
        "globalCloudId",
        "oCloudSiteId",
        "alarmDictionaryId",
        "alarmDefinitionId",
        "resourceTypeId",
        "resourcePoolId",
        "resourceId",
        "parentId",
        "deploymentManagerId",
        "alarmId",
        "probableCauseId",
    }
)
# RFC 3339 date-times, served in one spelling: UTC with a Z.
TIMESTAMP_FIELDS: Final = frozenset({"raisedTime"})

# O2ims wire spellings -> domain enum numbers. Spelled out rather than derived from
# the proto names so that a rename in the domain model cannot change the file format.
ENUM_SPELLINGS: Final[dict[str, dict[str, int]]] = {
    domain_pb2.ResourceKind.DESCRIPTOR.full_name: {
        "PHYSICAL": domain_pb2.RESOURCE_KIND_PHYSICAL,
        "LOGICAL": domain_pb2.RESOURCE_KIND_LOGICAL,
        "UNDEFINED": domain_pb2.RESOURCE_KIND_UNSPECIFIED,
    },
    domain_pb2.ResourceClass.DESCRIPTOR.full_name: {
        "COMPUTE": domain_pb2.RESOURCE_CLASS_COMPUTE,
        "NETWORKING": domain_pb2.RESOURCE_CLASS_NETWORKING,
        "STORAGE": domain_pb2.RESOURCE_CLASS_STORAGE,
        "UNDEFINED": domain_pb2.RESOURCE_CLASS_UNSPECIFIED,
    },
    domain_pb2.AlarmChangeType.DESCRIPTOR.full_name: {
        "ADDED": domain_pb2.ALARM_CHANGE_TYPE_ADDED,
        "DELETED": domain_pb2.ALARM_CHANGE_TYPE_DELETED,
        "MODIFIED": domain_pb2.ALARM_CHANGE_TYPE_MODIFIED,
    },
    domain_pb2.ClearingType.DESCRIPTOR.full_name: {
        "AUTOMATIC": domain_pb2.CLEARING_TYPE_AUTOMATIC,
        "MANUAL": domain_pb2.CLEARING_TYPE_MANUAL,
    },
    # CLEARED is no severity an active alarm can have: removing the alarm clears it.
    domain_pb2.AlarmSeverity.DESCRIPTOR.full_name: {
        "CRITICAL": domain_pb2.ALARM_SEVERITY_CRITICAL,
        "MAJOR": domain_pb2.ALARM_SEVERITY_MAJOR,
        "MINOR": domain_pb2.ALARM_SEVERITY_MINOR,
        "WARNING": domain_pb2.ALARM_SEVERITY_WARNING,
        "INDETERMINATE": domain_pb2.ALARM_SEVERITY_INDETERMINATE,
    },
}
# Enums O2ims also sends as numbers; the file accepts those numbers too.
ENUM_WIRE_NUMBERS: Final[dict[str, dict[int, str]]] = {
    domain_pb2.AlarmSeverity.DESCRIPTOR.full_name: dict(
        enumerate(("CRITICAL", "MAJOR", "MINOR", "WARNING", "INDETERMINATE"))
    ),
}

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# datetime.fromisoformat alone also takes dates without a time or an offset.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_STRUCT: Final = "google.protobuf.Struct"
_INTEGER_TYPES: Final = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
    }
)
_FLOAT_TYPES: Final = frozenset({FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT})


def is_uuid(value: str) -> bool:
    """Canonical lowercase form only, so that one id has one spelling everywhere."""
    return _UUID.fullmatch(value) is not None


def rfc3339_utc(value: str) -> str | None:
    """`value` as UTC with a Z (`2026-01-05T09:00:00Z`); None if it is not RFC 3339."""
    if _RFC3339.fullmatch(value) is None:
        return None
    try:
        moment = datetime.fromisoformat(value.upper())
    except ValueError:  # month 13, hour 25, ...
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fill_message(
    mapping: MarkedDict, message: Message, what: str, skip: Collection[str] = ()
) -> None:
    """Set `message`'s fields from `mapping`; keys in `skip` are left to the caller.

    `what` names the object in error messages ("resource 'a3f...'").
    """
    fields: dict[str, FieldDescriptor] = {
        field.json_name: cast(FieldDescriptor, field) for field in message.DESCRIPTOR.fields
    }
    for key, value in mapping.items():
        if key in skip:
            continue
        line = mapping.line_of(key)
        field = fields.get(key)
        if field is None:
            allowed = ", ".join(fields)
            raise LineProblem(line, f"{what}: unknown key '{key}' (allowed: {allowed})")
        if value is None:  # `key:` with nothing after it leaves the field unset
            continue
        if field.is_repeated:
            if not isinstance(value, MarkedList):
                raise LineProblem(line, f"{what}: '{key}' must be a list")
            for index, item in enumerate(value):
                _set_value(message, field, item, _Where(what, key, value.line_of(index)), True)
        else:
            _set_value(message, field, value, _Where(what, key, line), False)


@dataclass(frozen=True)
class _Where:
    """The object, key and line a value came from, for error messages."""

    what: str
    key: str
    line: int

    def problem(self, text: str) -> LineProblem:
        return LineProblem(self.line, f"{self.what}: {text}")


def _set_value(
    message: Message, field: FieldDescriptor, value: Any, where: _Where, append: bool
) -> None:
    if field.message_type is not None:
        target = getattr(message, field.name).add() if append else getattr(message, field.name)
        if not isinstance(value, MarkedDict):
            raise where.problem(f"'{where.key}' must be a mapping")
        if field.message_type.full_name == _STRUCT:
            try:
                json_format.ParseDict(value, target)
            except json_format.ParseError as error:
                raise where.problem(f"'{where.key}': {error}") from error
        else:
            fill_message(value, target, where.what)
        return
    converted = _scalar(field, value, where)
    try:
        if append:
            getattr(message, field.name).append(converted)
        else:
            setattr(message, field.name, converted)
    except (ValueError, TypeError) as error:  # out of range for the field's width
        raise where.problem(f"'{where.key}': {error}") from error


def _scalar(field: FieldDescriptor, value: Any, where: _Where) -> Any:
    key = where.key
    if field.enum_type is not None:
        return _enum_number(field.enum_type.full_name, value, where)
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        if not isinstance(value, str):
            hint = " (quote it in YAML)" if isinstance(value, int | float | bool) else ""
            raise where.problem(f"'{key}' must be a string, got {value!r}{hint}")
        if key in UUID_FIELDS and value and not is_uuid(value):
            raise where.problem(
                f"{key} '{value}' is not a UUID (expected lowercase 8-4-4-4-12 hex digits)"
            )
        if key in TIMESTAMP_FIELDS and value:
            moment = rfc3339_utc(value)
            if moment is None:
                raise where.problem(
                    f"{key} '{value}' is not an RFC 3339 date-time "
                    "(e.g. 2026-01-05T09:30:00Z or 2026-01-05T10:30:00+01:00)"
                )
            return moment
        return value
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        if isinstance(value, bool):
            return value
        raise where.problem(f"'{key}' must be true or false, got {value!r}")
    # bool is an int in Python, but `yes` where a number belongs is a mistake.
    if not isinstance(value, bool):
        if field.cpp_type in _FLOAT_TYPES and isinstance(value, int | float):
            return float(value)
        if field.cpp_type in _INTEGER_TYPES and isinstance(value, int):
            return value
    kind = "an integer" if field.cpp_type in _INTEGER_TYPES else "a number"
    raise where.problem(f"'{key}' must be {kind}, got {value!r}")


def _enum_number(enum_name: str, value: Any, where: _Where) -> int:
    spellings = ENUM_SPELLINGS[enum_name]
    numbers = ENUM_WIRE_NUMBERS.get(enum_name, {})
    # bool is an int in Python, but `yes` is no severity.
    if isinstance(value, int) and not isinstance(value, bool) and value in numbers:
        return spellings[numbers[value]]
    if isinstance(value, str) and value in spellings:
        return spellings[value]
    allowed = ", ".join(spellings)
    if numbers:
        allowed += f" (or {min(numbers)}-{max(numbers)})"
    raise where.problem(f"{where.key} '{value}' is not one of {allowed}")
