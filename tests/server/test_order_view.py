"""An extensions index's values in order (server/cache.py _OrderView): the keys an order term
finds by bisection are exactly those whose values the filter's own predicate passes, as the
index's values change; and the cache answers order terms from it."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from o2ims.inventory.v1 import inventory_pb2 as inv

from server import cache as cache_module
from server.cache import WALK_INDEX_UP_TO, InventoryCache
from server.query import JsonPrefilter, ListQuery, compile_query, json_key, json_value
from tests.server.test_cache_big_inventory import (
    POOL,
    _event,
    _payload,
    _query,
    _resource,
    _scan,
    _snapshot,
    _via_index,
    consistent,
)

ORDER_OPERATORS = ("gt", "gte", "lt", "lte")


def _prefilter(op: str, bound: str) -> JsonPrefilter:
    """The JSON prefilter the filter `(op,extensions/x,bound)` compiles to."""
    quoted = "'" + bound.replace("'", "''") + "'"
    query = compile_query(
        ListQuery(filters=[f"({op},extensions/x,{quoted})"]),
        inv.ResourceInfo.DESCRIPTOR,
        secret=b"s" * 32,
        scope="t",
    )
    [(_, prefilter)] = query.json_prefilters()
    assert prefilter.order == ("x", op, bound)
    return prefilter


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-1000, 1000).map(float),
    st.sampled_from([0.0, -0.0, 1.0, 32.0, 33.0, 1e300, -1e-300]),
)
strings = st.one_of(
    st.text(max_size=6),
    st.text(alphabet="019aAzZ.-_ ", max_size=4),
    st.sampled_from(["", "32", "33", "1e2", "a", "ab", "b", "\u00e9", "\U0001f600"]),
)
values = st.one_of(numbers, strings, st.booleans())
bounds = st.one_of(
    strings,
    numbers.filter(math.isfinite).map(repr),
    st.integers(-1000, 1000).map(str),
    st.sampled_from(["0", "-0", "32", "32.5", "1e2", "-1E-3", "0.0", "a", "", " 32"]),
)


def _passing(view: Any, op: str, bound: str) -> set[str]:
    found = view.passing(op, bound)
    assert len(found) == len(set(found))  # each key once
    assert view.count(op, bound) == len(found)
    return set(found)


@settings(max_examples=400, deadline=None)
@given(st.lists(values, max_size=40), st.sampled_from(ORDER_OPERATORS), bounds)
@example([32.0, 33.0, "32", "33"], "gt", "32")
@example([0.0, -0.0, 1.0], "gte", "0")
@example([0.0, -0.0, -1.0], "lt", "0")
@example([math.nan, 1.0, math.inf, -math.inf], "lte", "1")
@example(["a", "ab", "b", ""], "lt", "ab")
@example(["\u00e9", "e", "\U0001f600"], "gt", "f")
def test_the_passing_keys_are_those_the_filter_passes(held: list[Any], op: str, bound: str) -> None:
    keys = {json_key(value) for value in held}
    passes = _prefilter(op, bound).passes
    expected = {key for key in keys if passes(json_value(key))}
    assert _passing(cache_module._OrderView(keys), op, bound) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(values, max_size=20),
    st.lists(st.tuples(st.booleans(), values), max_size=40),
    st.sampled_from(ORDER_OPERATORS),
    bounds,
)
def test_the_view_follows_keys_added_and_removed(
    start: list[Any], changes: list[tuple[bool, Any]], op: str, bound: str
) -> None:
    """Keys added to and removed from the index (add: new keys only, remove: held ones,
    as _JsonIndex calls them) leave the view as one built from the keys held."""
    held = {json_key(value) for value in start}
    view = cache_module._OrderView(held)
    for add, key in consistent(held, ((add, json_key(value)) for add, value in changes)):
        (view.add if add else view.remove)(key)
    rebuilt = cache_module._OrderView(held)
    assert view.strings == rebuilt.strings
    assert view.numbers == rebuilt.numbers
    # (0.0 and -0.0 are one value: their two keys may come in either order.)
    assert sorted(view.number_keys) == sorted(rebuilt.number_keys)
    assert [float(key[1:]) for key in view.number_keys] == view.numbers
    passes = _prefilter(op, bound).passes
    assert _passing(view, op, bound) == {key for key in held if passes(json_value(key))}


SERIAL = ("extensions", "serial")
COUNT = 3 * WALK_INDEX_UP_TO


def _serial(n: int) -> str | float:
    """Distinct values, strings and numbers mixed: more than WALK_INDEX_UP_TO of them."""
    return f"S{n:05d}" if n % 3 else float(n)


@pytest.fixture
def ordered() -> InventoryCache:
    cache = InventoryCache("https://t", index_in_background=False, indexed_paths=[SERIAL])
    cache.load(
        _snapshot([_resource(f"r{n:05d}", POOL, {"serial": _serial(n)}) for n in range(COUNT)])
    )
    return cache


@pytest.mark.parametrize(
    "text",
    [
        "(gt,extensions/serial,S03000)",
        "(lte,extensions/serial,S00010)",
        "(lt,extensions/serial,30)",
        "(gte,extensions/serial,3060)",
        "(lt,extensions/serial,-1)",
    ],
)
def test_selective_order_terms_are_answered_from_the_ordered_values(
    ordered: InventoryCache, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    index = ordered._json_indexes[SERIAL]
    assert index.order is not None  # many values: kept in order from the build
    # Neither the extensions bytes nor the predicate on every value.
    monkeypatch.setattr(ordered, "_extensions_bytes", None)
    calls: list[Any] = []
    [(path, prefilter)] = _query(text).json_prefilters()

    def counted(value: Any) -> bool:
        calls.append(value)
        return True

    counting = replace(prefilter, passes=counted)
    candidates = ordered.resource_ids(POOL, None, [(path, counting)])
    assert calls == []
    found = _via_index(ordered, text)
    assert found == _scan(ordered, text)
    assert candidates is not None and set(found) <= set(candidates)


def test_the_ordered_values_follow_events(ordered: InventoryCache) -> None:
    """New values, changed ones and deleted holders: order terms still find exactly what a
    scan finds."""
    changes: list[tuple[str, dict[str, Any] | None]] = [
        ("r00001", {"serial": "S99999"}),
        ("r00002", {"serial": -5.0}),
        ("r00003", None),
        ("r00004", {"serial": ["S00000", 7.5]}),
        ("r90000", {"serial": "A"}),
        ("r90001", {"serial": -0.0}),
    ]
    for resource_id, extensions in changes:
        post = None if extensions is None else _payload(_resource(resource_id, POOL, extensions))
        assert ordered.apply(_event(ordered, resource_id, post))
    index = ordered._json_indexes[SERIAL]
    assert index.order is not None
    rebuilt = cache_module._OrderView(index.ids)
    assert index.order.strings == rebuilt.strings and index.order.numbers == rebuilt.numbers
    for text in (
        "(gt,extensions/serial,S99998)",
        "(lt,extensions/serial,0)",
        "(lte,extensions/serial,0)",
        "(gte,extensions/serial,7.5)",
        "(lt,extensions/serial,B)",
    ):
        found = _via_index(ordered, text)
        assert found == _scan(ordered, text), text
        assert found, text  # the changes are what these find


def test_few_values_are_not_kept_in_order() -> None:
    """WALK_INDEX_UP_TO values or fewer: the predicate on each is cheap, nothing is kept."""
    cache = InventoryCache("https://t", index_in_background=False, indexed_paths=[SERIAL])
    cache.load(_snapshot([_resource(f"r{n:03d}", POOL, {"serial": float(n)}) for n in range(100)]))
    assert cache._json_indexes[SERIAL].order is None
    assert _via_index(cache, "(gt,extensions/serial,90)") == _scan(
        cache, "(gt,extensions/serial,90)"
    )


@pytest.mark.parametrize(
    "text",
    ["(gte,extensions/serial,S)", "(lt,extensions/serial,S02000)", "(gt,extensions/serial,-1)"],
)
def test_an_unselective_order_term_is_told_by_counting(
    ordered: InventoryCache, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """More than a quarter of the pool passes: the pool is walked (the filter decides), and
    the passing values are counted by bisection, never gathered."""
    assert ordered._json_indexes[SERIAL].order is not None

    def gathered(self: Any, prefilter: JsonPrefilter) -> list[Any]:
        raise AssertionError("the candidates of an unselective term were gathered")

    monkeypatch.setattr(cache_module._JsonIndex, "candidates", gathered)
    monkeypatch.setattr(ordered, "_extensions_bytes", None)
    query = _query(text)
    everything = ordered.resource_ids(POOL)
    assert ordered.resource_ids(POOL, None, query.json_prefilters()) == everything
    monkeypatch.undo()
    assert _via_index(ordered, text) == _scan(ordered, text)
