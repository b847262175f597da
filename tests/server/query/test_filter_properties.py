"""Properties of the filter engine, checked on generated inputs:

(a) the fast evaluator (getattr chains on the protobuf message) agrees with a separate,
    deliberately naive reference evaluator over the message's JSON (MessageToDict);
(b) printing is canonical: parse(print(f)) == f;
(c) no input makes the parser, binder, selectors or marker decoder raise anything but
    QueryError.
"""

from __future__ import annotations

import contextlib
import operator
import re
import string
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from o2ims.inventory.v1 import inventory_pb2 as inv
from o2ims.monitoring.v1 import monitoring_pb2 as mon

from server.query import (
    Filter,
    InvalidCursor,
    QueryError,
    Term,
    decode_cursor,
    parse_filter,
    parse_selection,
)

# Bounded and derandomized: the same examples on every run, no example database written.
BOUNDED = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- the reference evaluator: plain Python over the JSON form, written from §4.1 --------

_REF_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_REF_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def ref_uuid_fold(text: str) -> str:
    hyphens = (8, 13, 18, 23)
    shaped = len(text) == 36 and all(
        (c == "-") if i in hyphens else (c in string.hexdigits) for i, c in enumerate(text)
    )
    return text.lower() if shaped else text


def ref_number(text: str) -> float | None:
    return float(text) if _REF_NUMBER.fullmatch(text) else None


def ref_flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in ref_flatten(item)]
    return [] if value is None else [value]


def ref_values(document: dict[str, Any], path: tuple[str, ...]) -> list[Any]:
    current: list[Any] = [document]
    for segment in path:
        current = [
            leaf
            for value in current
            if isinstance(value, dict) and segment in value
            for leaf in ref_flatten(value[segment])
        ]
    return current


def ref_equal(attribute: Any, value: str) -> bool:
    if isinstance(attribute, bool):
        return value in ("true", "false") and attribute == (value == "true")
    if isinstance(attribute, int | float):
        number = ref_number(value)
        return number is not None and float(attribute) == number
    if isinstance(attribute, str):
        return ref_uuid_fold(attribute) == ref_uuid_fold(value)
    return False  # a JSON object equals no scalar


def ref_term(op: str, attribute: Any, values: tuple[str, ...]) -> bool:
    if op in ("eq", "in"):
        return any(ref_equal(attribute, value) for value in values)
    if op == "cont":
        return isinstance(attribute, str) and any(value in attribute for value in values)
    compare, value = _REF_ORDER[op], values[0]
    if isinstance(attribute, str):
        return compare(attribute, value)
    if isinstance(attribute, int | float) and not isinstance(attribute, bool):
        number = ref_number(value)
        return number is not None and compare(attribute, number)
    return False


def reference_matches(text: str, message: Any) -> bool:
    document = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    negations = {"neq": "eq", "ncont": "cont", "nin": "in"}
    for term in parse_filter(text).terms:
        op = negations.get(term.op, term.op)
        hit = any(ref_term(op, a, term.values) for a in ref_values(document, term.path))
        if hit == (term.op in negations):
            return False
    return True


# --- generated messages ------------------------------------------------------------------

UUIDS = [
    "0b4a1f3e-5c2d-4e6f-8a9b-0c1d2e3f4a5b",
    "9f8e7d6c-5b4a-4321-8fed-cba987654321",
    "ABCDEF01-2345-6789-abcd-ef0123456789",
]
WORDS = ["", " ", "a", "ab", "b", "Eth", "node-1", "10", "9", "3", "3.0", "-2", "true", "x,y"]
KEYS = ["a", "b", "x/y", "@k"]


def cased_uuid() -> st.SearchStrategy[str]:
    return st.builds(
        lambda u, upper: u.upper() if upper else u.lower(), st.sampled_from(UUIDS), st.booleans()
    )


texts = st.one_of(st.sampled_from(WORDS), cased_uuid(), st.text(max_size=4))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.floats(-20, 20, allow_nan=False, allow_infinity=False),
    texts,
)
# Mostly scalars, some arrays and objects one level deep: deep nesting would make a
# generated path rarely reach a comparable leaf.
json_values = st.one_of(
    json_scalars,
    json_scalars,
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.sampled_from(KEYS), json_scalars | st.lists(json_scalars, max_size=2)),
)


@st.composite
def resources(draw: st.DrawFn, depth: int = 2) -> inv.ResourceInfo:
    info = inv.ResourceInfo(
        resource_id=draw(st.one_of(cased_uuid(), texts)),
        resource_pool_id=draw(cased_uuid()),
        resource_type_id=draw(cased_uuid()),
        name=draw(texts),
        description=draw(texts),
        tags=draw(st.lists(texts, max_size=3)),
        groups=draw(st.lists(texts, max_size=2)),
    )
    parent = draw(st.none() | texts)
    if parent is not None:
        info.parent_id = parent
    extensions = draw(
        st.none() | st.dictionaries(st.sampled_from(KEYS), json_values, min_size=1, max_size=4)
    )
    if extensions is not None:
        info.extensions.update(extensions)
    if depth > 0:
        # Nested elements: enough to exercise arrays of messages, few enough to stay fast.
        info.elements.extend(draw(st.lists(resources(depth - 1), max_size=depth)))
    return info


TYPED_PATHS = [
    ("resourceId",),
    ("resourcePoolId",),
    ("resourceTypeId",),
    ("name",),
    ("description",),
    ("globalAssetId",),
    ("parentId",),
    ("tags",),
    ("groups",),
    ("elements", "name"),
    ("elements", "tags"),
    ("elements", "resourceId"),
    ("elements", "elements", "name"),
]
paths = st.one_of(
    st.sampled_from(TYPED_PATHS),
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=2).map(lambda k: ("extensions", *k)),
    st.sampled_from(KEYS).map(lambda k: ("elements", "extensions", k)),
)
OPS = ["eq", "neq", "gt", "lt", "gte", "lte", "cont", "ncont", "in", "nin"]


def leaf_paths(document: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every (path, leaf value) of a JSON document, arrays flattened."""
    if isinstance(document, dict):
        return [
            found for key, value in document.items() for found in leaf_paths(value, (*prefix, key))
        ]
    if isinstance(document, list):
        return [found for item in document for found in leaf_paths(item, prefix)]
    return [(prefix, document)]


def spellings(leaf: Any) -> list[str]:
    """Filter values that ought to hit `leaf`, or sit right next to it."""
    if isinstance(leaf, bool):
        return ["true" if leaf else "false"]
    if isinstance(leaf, int | float):
        return [repr(float(leaf)), f"{leaf:g}", f"+{leaf}", repr(float(leaf) + 0.5)]
    if isinstance(leaf, str):
        return [leaf, leaf.upper(), leaf.lower(), leaf[1:], leaf[:-1] + "~"]
    return ["x"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[Filter, list[inv.ResourceInfo]]:
    """Messages, and a filter aimed at them: paths and values mostly taken from what the
    messages hold, so most terms reach a real leaf of every JSON type."""
    messages = draw(st.lists(resources(), min_size=1, max_size=3))
    leaves = [
        found
        for message in messages
        for found in leaf_paths(json_format.MessageToDict(message))
        if found[0][0] in {name for (name, *_) in TYPED_PATHS} | {"extensions", "elements"}
    ]
    generated = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(OPS))
        count = 1 if op in ("eq", "neq", "gt", "lt", "gte", "lte") else draw(st.integers(1, 3))
        # Aim at free-form (extensions) leaves often: they hold every JSON type, while
        # typed attributes are mostly strings.
        free_form = sorted({p for p, _ in leaves if "extensions" in p})
        typed = sorted({p for p, _ in leaves})
        sources = [paths] + [st.sampled_from(c) for c in (free_form, free_form, typed) if c]
        path = draw(st.one_of(sources))
        near = [v for p, leaf in leaves if p == path for v in spellings(leaf)]
        value = st.sampled_from(near) | texts if near else texts
        generated.append(
            Term(op, path, tuple(draw(st.lists(value, min_size=count, max_size=count))))
        )
    return Filter(tuple(generated)), messages


@BOUNDED
@given(cases())
def test_fast_evaluator_agrees_with_the_reference(
    case: tuple[Filter, list[inv.ResourceInfo]],
) -> None:
    generated, messages = case
    # Each term alone (so an AND cannot mask a wrong term), then the whole filter.
    for text in [str(Filter((term,))) for term in generated.terms] + [str(generated)]:
        bound = parse_filter(text).bind(inv.ResourceInfo.DESCRIPTOR)
        for message in messages:
            assert bound.matches(message) == reference_matches(text, message), (text, message)


# --- canonical printing ----------------------------------------------------------------

segment_chars = st.characters(
    exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters=",()';"
).filter(lambda c: not c.isspace())
segments = st.text(segment_chars, min_size=1, max_size=6)
any_terms = st.builds(
    Term,
    st.sampled_from(OPS),
    st.lists(segments, min_size=1, max_size=3).map(tuple),
    st.lists(st.text(max_size=6), min_size=1, max_size=3).map(tuple),
)


@BOUNDED
@given(st.lists(any_terms, max_size=3).map(lambda ts: Filter(tuple(ts))))
def test_printed_filters_parse_back_equal(generated: Filter) -> None:
    assert parse_filter(str(generated)) == generated


# Token soup close to the grammar: mostly errors, sometimes valid filters.
SOUP_TOKENS = [*"(),;'~@ ax1", "''", "eq", "in", "gt", "cont", "name", "~0", "~1", "~b", "tags"]
ALARM_TOKENS = ["perceivedSeverity", "alarmRaisedTime", "alarmAcknowledged", "true", "-9e9"]
soup = st.lists(
    st.sampled_from([*SOUP_TOKENS, *ALARM_TOKENS, "extensions/a", "elements/name", "b/c"]),
    max_size=14,
).map("".join)


@BOUNDED
@given(soup)
def test_reparsing_printed_text_is_stable(text: str) -> None:
    try:
        parsed = parse_filter(text)
    except QueryError:
        return
    assert parse_filter(str(parsed)) == parsed
    assert str(parse_filter(str(parsed))) == str(parsed)


# --- robustness: only QueryError ---------------------------------------------------------


@BOUNDED
@given(st.one_of(st.text(max_size=40), soup))
def test_garbage_raises_only_query_errors(text: str) -> None:
    for message in (inv.ResourceInfo(), mon.AlarmEventRecord()):
        with contextlib.suppress(QueryError):
            parse_filter(text).bind(message.DESCRIPTOR).matches(message)
    for fields, exclude in ((text, None), (None, text)):
        with contextlib.suppress(QueryError):
            parse_selection(text, fields, exclude, text, inv.ResourceInfo.DESCRIPTOR)
    with contextlib.suppress(InvalidCursor):
        decode_cursor(text, b"secret", b"\x00" * 16, 60)
