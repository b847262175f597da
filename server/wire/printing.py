"""Wire messages -> JSON values, printed as the REST edge prints them.

Envoy's transcoder prints with the C++ protobuf JSON printer: every field without presence
(always_print_primitive_fields), unset optional fields and messages left out, and doubles
(every number in a Struct is one) in the shortest form, so an integral 1040.0 is `1040`.
Python's json_format keeps such a double a float (`1040.0`). Whatever else renders a wire
message as JSON (notification object states, the embedded 1.x alarm dictionary) goes
through `as_json`, so a notification and a REST read of the same object agree field by field,
types included.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

# The C++ printer writes doubles with 15 significant digits ("%.15g"): integral values
# below 1e15 come out as integer literals, larger ones in exponent form (a JSON float).
_INTEGER_LIMIT = 10**15


def as_json(message: Message) -> dict[str, Any]:
    """The JSON object of `message`, as the transcoder prints it."""
    printed = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return _integral_numbers(printed)  # type: ignore[no-any-return]


def _integral_numbers(value: Any) -> Any:
    """`value` with every integral float the C++ printer writes as an integer made an int."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < _INTEGER_LIMIT else value
    if isinstance(value, dict):
        return {key: _integral_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_numbers(item) for item in value]
    return value
