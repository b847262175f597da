"""Terms on `<Struct attribute>/<keys...>` (extensions/...) take a fast path that reads the
JSON scalar straight from the Value; it must answer exactly as the general walk does
(every leaf value, arrays flattened, any/none semantics) for every operator, and its
free-form prefilter must accept every leaf value that makes an object match."""

from __future__ import annotations

import random
from typing import Any

import pytest
from o2ims.inventory.v1 import inventory_pb2 as inv

from server.query.evaluate import (
    _NEGATIONS,
    OPERATORS,
    _getter,
    _predicate,
    compile_term,
    json_key,
    json_value,
)
from server.query.schema import resolve_path

RESOURCE = inv.ResourceInfo.DESCRIPTOR
UUID = "F6A1B0C2-3D4E-4F50-8A6B-7C8D9E0F1A2B"
SCALARS: list[Any] = ["a", "ab", "B", "7", "7.0", "-0", "true", "", UUID, UUID.lower()]
SCALARS += [7, 7.5, 0, -0.0, -3, 1e21, True, False, None]
FILTER_VALUES = ["a", "b", "7", "7.0", "-0", "0", "true", "false", "", UUID.lower(), "1e21"]
PATHS = [("extensions", "k"), ("extensions", "k", "j"), ("extensions", "k", "j", "i")]


def _json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.2:
        return [_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    if depth < 3 and roll < 0.45:
        return {key: _json(rng, depth + 1) for key in rng.sample(["k", "j", "i", "x"], 2)}
    return rng.choice(SCALARS)


def _messages(count: int) -> list[inv.ResourceInfo]:
    rng = random.Random(11)
    messages = []
    for n in range(count):
        message = inv.ResourceInfo(resource_id=f"r{n}")
        if n % 9:  # every ninth has no extensions at all
            message.extensions.update({"k": _json(rng), "x": 1})
        messages.append(message)
    return messages


MESSAGES = _messages(400)
SERIALIZED = [m.SerializeToString() for m in MESSAGES]


@pytest.mark.parametrize("path", PATHS, ids="/".join)
@pytest.mark.parametrize("op", OPERATORS)
def test_the_fast_path_answers_as_the_general_walk(op: str, path: tuple[str, ...]) -> None:
    resolved = resolve_path(RESOURCE, path)
    general = _getter(resolved.hops, resolved.leaf, resolved.last_field)
    positive = _NEGATIONS.get(op, op)
    negated = op != positive
    single = op in {"eq", "neq", "gt", "gte", "lt", "lte"}
    choices = [(v,) for v in FILTER_VALUES] if single else [("a", "7"), (UUID, "false", "-0")]
    matched = 0
    for values in choices:
        term = compile_term(RESOURCE, op, path, values)
        predicate, _ = _predicate(resolved.leaf, positive, values, resolved.last_field, "")
        for message in MESSAGES:
            leaves = general(message)
            expected = any(map(predicate, leaves)) is not negated
            assert term.test(message) is expected, (op, values, message)
            matched += expected
            if term.json_prefilter is not None and expected:
                # As the cache's index applies it: to each leaf's stored key, read back.
                passes = term.json_prefilter.passes
                assert any(passes(json_value(json_key(leaf))) for leaf in leaves)
        assert (term.json_prefilter is None) is negated
    assert matched > 0  # the data exercises the operator
    # Evaluating never changes a message (indexing a message map inserts missing keys).
    assert [m.SerializeToString() for m in MESSAGES] == SERIALIZED
