"""protobuf's wire format, for the few places that write serialized messages by hand
(protobuf's encoding guide: varints, tags, length-delimited fields)."""

from __future__ import annotations

from typing import Final

# Wire type of strings, bytes and embedded messages.
LENGTH_DELIMITED: Final = 2


def varint(number: int) -> bytes:
    """A non-negative integer as a varint: 7 bits a byte, least significant first, the
    high bit set on every byte but the last."""
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def tag(field_number: int, wire_type: int = LENGTH_DELIMITED) -> bytes:
    """A field's key: its number and wire type, as a varint."""
    return varint(field_number << 3 | wire_type)
