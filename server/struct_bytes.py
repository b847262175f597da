"""What free-form JSON (a google.protobuf.Struct: resource extensions) looks like
serialized, for searching many resources' serialized extensions at once (server/cache.py
_ExtensionsBytes) instead of parsing each.

protobuf's canonical encoding, as this process serializes a Struct:
  Struct      one map entry per key: 0x0a <entry length> 0x0a <key length> <key UTF-8>
              0x12 <value length> <Value>; a map entry writes its key and its value
              always, an empty key or a zero value included
  Value       number_value 0x11 <8 bytes: the IEEE 754 double, little-endian>;
              string_value 0x1a <length> <UTF-8>; bool_value 0x20 <0|1>;
              list_value 0x32 <length> <ListValue>; struct_value 0x2a ...
  lengths     varints, 7 bits a byte, least significant first, the last byte below 0x80

A search here is a pre-selection: it may find bytes that only look like a value (inside
a longer string, or straddling two resources) and the filter then decides; it must never
miss a resource that holds a passing value.
"""

from __future__ import annotations

import functools
import re
import struct
from typing import Final

from netweave.protowire import varint
from server.query import json_value
from server.query.evaluate import parse_number

# The tags of google.protobuf.Value's scalar members as serialized: number_value (2, 64-bit),
# string_value (3, length-delimited), bool_value (4, varint).
_NUMBER_TAG: Final = b"\x11"
_STRING_TAG: Final = b"\x1a"
_BOOL_TAGS: Final = {"t": b"\x20\x01", "f": b"\x20\x00"}
# A map entry's key (field 1) and value (field 2) tags; a Value's list_value (field 6).
_ENTRY_KEY_TAG: Final = b"\x0a"
_ENTRY_VALUE_TAG: Final = b"\x12"
_LIST_TAG: Final = b"\x32"

# Any varint: continuation bytes, then a last byte below 0x80.
_ANY_VARINT: Final = rb"[\x80-\xff]*[\x00-\x7f]"
# A string bound's bytes compared exactly, at most: beyond, a value sharing them is a
# candidate (the pattern stays small whatever the filter's text).
ORDER_PREFIX: Final = 64


def value_bytes(key: str) -> bytes | None:
    """How a google.protobuf.Value holding json_value(`key`) is serialized (protobuf's
    canonical encoding: the member's tag, then a minimal length or the fixed 8 bytes of a
    double); None for a string no protobuf can hold (not UTF-8)."""
    tag = key[:1]
    if tag == "s":
        try:
            text = key[1:].encode()
        except UnicodeEncodeError:
            return None
        return _STRING_TAG + varint(len(text)) + text
    if tag == "n":
        return _NUMBER_TAG + struct.pack("<d", float(json_value(key)))
    return _BOOL_TAGS[tag]


@functools.lru_cache(maxsize=256)
def order_pattern(key: str, op: str, text: str) -> re.Pattern[bytes] | None:
    """A pattern found in serialized Structs wherever a map entry of `key` holds a value
    an order term (`op` gt/gte/lt/lte, bound `text`) can pass on a JSON path ending in
    `key`: a number beyond the number `text` is (if it is one), a string beyond `text`
    (code point order, which UTF-8 bytes keep), or an array (its elements are tested).
    Matched in C: no Python step per resource that holds the key with another value.
    None for a key no protobuf string holds."""
    try:
        key_bytes = key.encode()
    except UnicodeEncodeError:
        return None
    greater, inclusive = op in {"gt", "gte"}, op in {"gte", "lte"}
    members = []
    number = parse_number(text)
    if number is not None:
        numbers = _number_patterns(number, greater=greater, inclusive=inclusive)
        if numbers:  # first: a number's Value length is a literal, quickly refused
            members.append(b"\x09" + re.escape(_NUMBER_TAG) + _either(numbers))
    # Python orders strings by code point, as their UTF-8 bytes order; a lone surrogate
    # (no stored string holds one) keeps its place with surrogatepass.
    strings = _string_patterns(
        text.encode("utf-8", "surrogatepass"), greater=greater, inclusive=inclusive
    )
    others = [re.escape(_LIST_TAG)]
    if strings:
        others.append(re.escape(_STRING_TAG) + _either(strings))
    members.append(_ANY_VARINT + _either(others))
    entry = re.escape(_ENTRY_KEY_TAG + varint(len(key_bytes)) + key_bytes + _ENTRY_VALUE_TAG)
    return re.compile(entry + _either(members), re.DOTALL)


# --- numbers: 8 little-endian bytes ------------------------------------------------------

# The top byte's range of each sign (its top bit is the double's sign).
_POSITIVE: Final = (0x00, 0x7F)
_NEGATIVE: Final = (0x80, 0xFF)
_EVERY_NON_NEGATIVE: Final = rb".{7}[\x00-\x7f]"
_EVERY_NEGATIVE: Final = rb".{7}[\x80-\xff]"


def _number_patterns(bound: float, *, greater: bool, inclusive: bool) -> list[bytes]:
    """Patterns of 8 bytes together matching every double x with x > bound (>=, <, <=),
    and NaNs (which pass nothing). A non-negative double's bit pattern, read as an
    unsigned integer, grows with it; a negative one's grows with its magnitude."""
    bound += 0.0  # -0.0 becomes 0.0: the two are equal
    (bits,) = struct.unpack("<Q", struct.pack("<d", bound))
    found: list[bytes | None]
    if bound >= 0:
        if greater:
            found = [_beyond(bits, above=True, inclusive=inclusive, top=_POSITIVE)]
            if bound == 0 and inclusive:
                found.append(re.escape(struct.pack("<d", -0.0)))
        else:
            below = _beyond(bits, above=False, inclusive=inclusive, top=_POSITIVE)
            found = [_EVERY_NEGATIVE, below]
    elif greater:
        # x > a negative bound: every non-negative x, and negatives of a smaller magnitude.
        smaller = _beyond(bits, above=False, inclusive=inclusive, top=_NEGATIVE)
        found = [_EVERY_NON_NEGATIVE, smaller]
    else:
        found = [_beyond(bits, above=True, inclusive=inclusive, top=_NEGATIVE)]
    return [pattern for pattern in found if pattern is not None]


def _beyond(bits: int, *, above: bool, inclusive: bool, top: tuple[int, int]) -> bytes | None:
    """8 bytes (little-endian) read as an unsigned integer above `bits` (below; or equal
    when `inclusive`) with a top byte within `top`; None if none can be. The two top bytes
    are consumed first (they decide for all but values close to the bound); the others
    are checked behind, only where the top two equal the bound's."""
    low = bits.to_bytes(8, "little")

    def beyond(index: int, lowest: int = 0x00, highest: int = 0xFF) -> bytes | None:
        if above:
            return _byte_class(low[index] + 1, highest)
        return _byte_class(lowest, low[index] - 1)

    top_byte = beyond(7, *top)
    second = beyond(6)
    branches = []
    if top_byte is not None:
        branches.append(b"." + top_byte)
    if second is not None:
        branches.append(second + re.escape(low[7:]))
    # Equal top two bytes: the first byte of the lower six, from the top, that differs.
    behind = []
    for index in range(5, -1, -1):
        differs = beyond(index)
        if differs is not None:
            behind.append(b".{%d}" % index + differs + re.escape(low[index + 1 : 6]) + b"..")
    if inclusive:
        behind.append(re.escape(low[:6]) + b"..")
    if behind:
        branches.append(re.escape(low[6:]) + b"(?<=" + b"|".join(behind) + b")")
    if not branches:
        return None
    return rb".{6}" + _either(branches)


def _byte_class(lowest: int, highest: int) -> bytes | None:
    if lowest > highest:
        return None
    if lowest == highest:
        return re.escape(bytes([lowest]))
    return b"[" + re.escape(bytes([lowest])) + b"-" + re.escape(bytes([highest])) + b"]"


# --- strings: a length, then UTF-8 ---------------------------------------------------------


def _string_patterns(bound: bytes, *, greater: bool, inclusive: bool) -> list[bytes]:
    """Patterns of a string's length and bytes together matching every string s with
    s > bound (>=, <, <=) bytewise. A string beyond the bound either differs from it first
    at some byte, beyond the bound's there, or (greater) extends it or (less) is one of
    its prefixes. Past ORDER_PREFIX bytes, strings sharing the bound's first ORDER_PREFIX
    bytes are all candidates."""
    compared = bound[:ORDER_PREFIX]
    truncated = len(compared) < len(bound)
    found: list[bytes] = []
    differs = _differs(compared, above=greater)
    if differs is not None:
        found.append(_ANY_VARINT + differs)
    if truncated:
        found.append(_ANY_VARINT + re.escape(compared))
    if greater:
        if not truncated:
            found.append(_longer_than(len(bound)) + re.escape(bound))
    else:
        found.extend(re.escape(varint(size) + compared[:size]) for size in range(len(compared)))
    if inclusive and not truncated:
        found.append(re.escape(varint(len(bound)) + bound))
    return found


def _differs(bound: bytes, *, above: bool) -> bytes | None:
    """Bytes that follow `bound` for a while, then hold a byte above (below) its byte
    there: one nested pattern, so a candidate costs a step per byte it shares."""
    pattern: bytes | None = None
    for index in range(len(bound) - 1, -1, -1):
        byte = bound[index]
        beyond = _byte_class(byte + 1, 0xFF) if above else _byte_class(0x00, byte - 1)
        follows = None if pattern is None else re.escape(bytes([byte])) + pattern
        options = [option for option in (follows, beyond) if option is not None]
        pattern = _either(options) if options else None
    return pattern


def _longer_than(size: int) -> bytes:
    """A varint above `size` (any varint, past one byte: a superset)."""
    if size >= 0x7F:
        return _ANY_VARINT
    one_byte = _byte_class(size + 1, 0x7F)
    assert one_byte is not None
    # A varint of two bytes or more is 128 or more.
    return _either([one_byte, rb"[\x80-\xff]+[\x00-\x7f]"])


def _either(patterns: list[bytes]) -> bytes:
    return patterns[0] if len(patterns) == 1 else b"(?:" + b"|".join(patterns) + b")"
