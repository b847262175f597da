"""protobuf's wire format, for the few places that read or write serialized messages by
hand (protobuf's encoding guide: varints, tags, length-delimited fields)."""

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


def read_varint(data: bytes, at: int) -> tuple[int, int] | None:
    """The varint starting at `at` in `data`, and where what follows it starts; None if
    `data` ends inside it or it runs past 64 bits."""
    number = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        at += 1
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return number, at
        shift += 7
    return None
