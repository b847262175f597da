"""The patterns that find, in serialized extensions, the resources an order term (gt, gte,
lt, lte) on an extensions path can pass: checked against the filter itself, on values
serialized by protobuf. A pattern may find a few resources the filter then refuses; it
must never miss one the filter passes. Numbers, and strings of the bound's length, are
found exactly."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2
from hypothesis import example, given, settings
from hypothesis import strategies as st
from o2ims.inventory.v1 import inventory_pb2 as inv

from server.query import ListQuery, compile_query
from server.struct_bytes import ORDER_PREFIX, order_pattern

KEY = "cores"
OPERATORS = st.sampled_from(["gt", "gte", "lt", "lte"])
# Any double: the zeros, subnormals, the infinities and NaN included.
DOUBLES = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 5e-324, -5e-324, 1.0, -1.0, 2.0**63, 94.0, 95.0, 93.99999999999999]
)
# Bounds as an SMO writes them: integers, decimals, exponents.
BOUNDS = (
    st.integers(-(2**70), 2**70).map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.sampled_from(["0", "-0", "+0", "-0.0", "94", "1e999", "-1e999", ".5", "5.", "1E3"])
)
# Strings with ASCII, multi-byte and astral characters, and lengths around a varint's
# one-byte limit.
STRINGS = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20) | st.sampled_from(
    ["", "x" * 127, "x" * 128, "x" * 129, "2024-01-01T00:00:00Z", "é", "\U0001f600"]
)


def _serialized(value: Any, *, nested: bool = False, alone: bool = False) -> bytes:
    """Extensions holding `value` under KEY: between other keys, or alone (nothing follows
    its bytes), or one level down."""
    extensions = struct_pb2.Struct()
    held = {KEY: value} if alone else {"a": "before", KEY: value, "zz": 7}
    extensions.update({"site": held} if nested else held)
    return extensions.SerializeToString()


def _quoted(value: str) -> str:
    """A filter value as written when it may hold "," or ")" (filter syntax)."""
    return "'" + value.replace("'", "''") + "'"


def _passes(op: str, bound: str, value: Any, *, nested: bool = False) -> bool:
    """What the filter itself decides, on a wire resource holding the same extensions."""
    path = f"extensions/site/{KEY}" if nested else f"extensions/{KEY}"
    query = compile_query(
        ListQuery(filters=[f"({op},{path},{_quoted(bound)})"]),
        inv.ResourceInfo.DESCRIPTOR,
        secret=b"s" * 32,
        scope="t",
    )
    resource = inv.ResourceInfo()
    resource.extensions.ParseFromString(_serialized(value, nested=nested))
    return query.matches(resource)


def _found(op: str, bound: str, value: Any, *, nested: bool = False) -> bool:
    """Whether the pattern finds `value`, the same between other keys and alone."""
    pattern = order_pattern(KEY, op, bound)
    assert pattern is not None
    found = {
        pattern.search(_serialized(value, nested=nested, alone=alone)) is not None
        for alone in (False, True)
    }
    if len(found) > 1:  # found only where other bytes follow: read past the value
        assert not _passes(op, bound, value, nested=nested), "missed when alone"
        return True
    return found.pop()


@settings(max_examples=800, deadline=None)
@given(op=OPERATORS, bound=BOUNDS, value=DOUBLES, nested=st.booleans())
@example(op="gt", bound="-0", value=0.0, nested=False)
@example(op="gte", bound="0", value=-0.0, nested=False)
@example(op="lte", bound="-0", value=-0.0, nested=False)
@example(op="lt", bound="1e999", value=1.7976931348623157e308, nested=False)
@example(op="gt", bound="-1e999", value=-1.7976931348623157e308, nested=False)
def test_numbers_are_found_exactly(op: str, bound: str, value: float, nested: bool) -> None:
    passes = _passes(op, bound, value, nested=nested)
    found = _found(op, bound, value, nested=nested)
    assert found or not passes  # never missed
    # Exactly, but for NaN (it passes nothing) and -0.0 below a zero bound.
    if not math.isnan(value) and not (value == 0 and float(bound) == 0 and op == "lt"):
        assert found == passes, (op, bound, value)


@settings(max_examples=800, deadline=None)
@given(op=OPERATORS, bound=STRINGS, value=STRINGS)
@example(op="gt", bound="x" * 127, value="x" * 128)
@example(op="lt", bound="x" * 128, value="x" * 127)
@example(op="gte", bound="", value="")
@example(op="lt", bound="", value="")
@example(op="lt", bound="é", value="e")
@example(op="gt", bound="\uffff", value="\U0001f600")
def test_strings_are_never_missed(op: str, bound: str, value: str) -> None:
    passes = _passes(op, bound, value)
    found = _found(op, bound, value)
    assert found or not passes
    if len(value.encode()) == len(bound.encode()) <= ORDER_PREFIX:
        # The same length, all compared: the pattern reads nothing past the string.
        assert found == passes, (op, bound, value)


@settings(max_examples=400, deadline=None)
@given(
    op=OPERATORS,
    bound=st.text(min_size=ORDER_PREFIX - 4, max_size=ORDER_PREFIX + 20),
    cut=st.integers(0, ORDER_PREFIX + 20),
    tail=STRINGS,
)
def test_strings_beyond_the_compared_prefix_are_never_missed(
    op: str, bound: str, cut: int, tail: str
) -> None:
    """A bound longer than ORDER_PREFIX bytes: strings sharing its start are candidates."""
    value = bound[:cut] + tail
    assert _found(op, bound, value) or not _passes(op, bound, value)


@settings(max_examples=300, deadline=None)
@given(op=OPERATORS, bound=BOUNDS | STRINGS, values=st.lists(DOUBLES | STRINGS, max_size=4))
def test_an_array_is_always_a_candidate(op: str, bound: str, values: list[Any]) -> None:
    """A path ending on an array tests its elements: the array is found whatever they are."""
    assert _found(op, bound, values)
    assert _found(op, bound, [values])


def test_the_key_must_be_the_paths_last() -> None:
    """A value beyond the bound under another key is not found, nor a key that only
    ends like the path's (the key's length is part of the pattern)."""
    pattern = order_pattern(KEY, "gt", "10")
    assert pattern is not None
    other = struct_pb2.Struct()
    other.update({"memory": 64, "xcores": 64, KEY: 2})
    assert pattern.search(other.SerializeToString()) is None
    other.update({KEY: 11})
    assert pattern.search(other.SerializeToString()) is not None


def test_a_bound_is_a_number_only_if_it_reads_as_one() -> None:
    """A bound that is not a number (`0x10`) compares strings only: a number is not found."""
    for op in ("gt", "gte", "lt", "lte"):
        assert not _found(op, "0x10", 1e9) and not _found(op, "0x10", -1e9)
        assert not _passes(op, "0x10", 1e9)
