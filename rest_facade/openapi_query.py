"""JSON Schema patterns for the SOL013 query parameters (`filter`, `fields`,
`exclude_fields`) of one object type, so that a schema-valid value is one the core accepts.

The patterns are deliberately narrower than what the core takes (server/query/filter.py,
server/query/selectors.py): a filter names only string attributes, or a key below a
free-form object such as `extensions`, and its values are plain unquoted words, so no value
can fail a type check; a selector names top-level attributes only. Clients may send more
than the pattern allows (quoted values, nested paths, typed comparisons): the pattern
promises acceptance, it does not describe the whole grammar.
"""

from __future__ import annotations

import re

from google.protobuf import descriptor

FieldType = descriptor.FieldDescriptor

# Comparisons taking exactly one value, and the ones taking a list (server/query/evaluate.py).
_SINGLE_VALUE_OPERATORS = ("eq", "neq", "gt", "lt", "gte", "lte")
_LIST_OPERATORS = ("cont", "ncont", "in", "nin")
# An unquoted value with none of the characters the filter syntax reserves.
_VALUE = r"[A-Za-z0-9._:-]*"
# A key below a free-form object (a Struct): any name without filter syntax in it.
_FREE_FORM_KEY = r"[A-Za-z0-9_]+"
# Free-form JSON: any key below these is allowed (server/query/schema.py, DYNAMIC_TYPES).
_FREE_FORM = frozenset({"google.protobuf.Struct"})


def filter_pattern(message: descriptor.Descriptor) -> str | None:
    """A pattern for `filter` on objects of `message`; None when nothing is filterable."""
    attributes = [
        re.escape(field.json_name)
        for field in message.fields
        if field.type == FieldType.TYPE_STRING and not field.is_repeated
    ] + [
        f"{re.escape(field.json_name)}/{_FREE_FORM_KEY}"
        for field in message.fields
        if field.message_type is not None and field.message_type.full_name in _FREE_FORM
    ]
    if not attributes:
        return None
    attribute = _alternatives(attributes)
    term = (
        rf"\((?:{_alternatives(_SINGLE_VALUE_OPERATORS)},{attribute},{_VALUE}"
        rf"|{_alternatives(_LIST_OPERATORS)},{attribute},{_VALUE}(?:,{_VALUE})*)\)"
    )
    # Empty matches everything (no terms); ";" joins terms.
    return rf"^(?:{term}(?:;{term})*)?$"


def selector_pattern(message: descriptor.Descriptor) -> str | None:
    """A pattern for `fields` / `exclude_fields` on objects of `message`: a comma-separated
    list of its top-level attributes (maps cannot be selected), or nothing. None if it has
    no attributes."""
    names = [re.escape(field.json_name) for field in message.fields if not _is_map(field)]
    if not names:
        return None
    name = _alternatives(names)
    # Empty is no selector at all.
    return rf"^(?:{name}(?:,{name})*)?$"


def _alternatives(choices: tuple[str, ...] | list[str]) -> str:
    return "(?:" + "|".join(choices) + ")"


def _is_map(field: descriptor.FieldDescriptor) -> bool:
    entry = field.message_type
    return field.is_repeated and entry is not None and entry.GetOptions().map_entry
