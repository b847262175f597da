"""Filter terms compiled to plain functions over protobuf messages.

Evaluating on the wire message itself (getattr chains, Struct navigation by key) costs
about 1 us per object for a top-level attribute, most of it the protobuf attribute read;
converting each object with MessageToDict first would cost tens of microseconds.

Semantics (one place, documented once):
- A path yields zero or more leaf values. Repeated fields and JSON arrays contribute
  every element; unset message fields, unset `optional` scalars, absent Struct keys and
  JSON nulls contribute nothing ("missing"). Plain proto3 scalars are always present:
  "" and 0 are values.
- eq, gt, gte, lt, lte, cont and in match when ANY leaf value matches; neq, ncont and nin
  are their exact negations (no leaf value matches), so a missing attribute gives
  eq false / neq true, and `(neq,tags,x)` means "not tagged x".
- eq/in compare after coercing the filter value to the attribute's type; strings that
  both look like UUIDs (8-4-4-4-12 hex) compare case-insensitively.
- gt/gte/lt/lte compare numbers numerically and strings (and enum names) lexicographically.
- Inside free-form JSON (extensions) the type comes from each object's value: a filter
  value compares as a number against JSON numbers, as true/false against JSON booleans,
  as a string against strings; a JSON object never matches.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from server.query.errors import echo
from server.query.schema import STRUCT, Hop, Leaf, PathError, resolve_path

OPERATORS: Final = ("eq", "neq", "gt", "lt", "gte", "lte", "cont", "ncont", "in", "nin")
SINGLE_VALUE_OPERATORS: Final = frozenset({"eq", "neq", "gt", "lt", "gte", "lte"})
# Negated operator -> the positive operator it negates.
_NEGATIONS: Final = {"neq": "eq", "ncont": "cont", "nin": "in"}
_ORDER: Final = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}

UUID_PATTERN: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

Predicate = Callable[[Any], bool]
Step = Callable[[Any, list[Any]], None]


class TermError(Exception):
    """Why a term cannot be bound; `value_index` points at the offending value, if any."""

    def __init__(self, message: str, *, value_index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.value_index = value_index


def fold_uuid(text: str) -> str:
    """`text` lower-cased if it looks like a UUID, else unchanged."""
    return text.lower() if UUID_PATTERN.fullmatch(text) else text


def index_key(value: object) -> str:
    """The key under which an index stores an attribute value read from a message
    (e.g. `getattr(info, "resource_pool_id")`); equality_candidates returns the same keys."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return fold_uuid(value)
    return repr(value)


def json_key(value: object) -> str:
    """The key under which an index of free-form JSON (extensions) stores a scalar leaf
    value read from an object (see json_getter): the JSON type and the exact value, so
    json_value(json_key(v)) == v and a filter predicate can run on the decoded value."""
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float):
        return "n" + repr(float(value))
    raise TypeError(f"not a JSON scalar: {value!r}")


def json_value(key: str) -> str | float | bool:
    """The value json_key encoded."""
    tag = key[:1]
    if tag == "s":
        return key[1:]
    if tag == "n":
        return float(key[1:])
    return tag == "t"


def parse_number(text: str) -> float | None:
    """`text` as a JSON-style number, or None."""
    return float(text) if _NUMBER.fullmatch(text) else None


def parse_bool(text: str) -> bool | None:
    """`true` / `false` (exactly), or None."""
    return {"true": True, "false": False}.get(text)


# --- accessors ------------------------------------------------------------------------


def _field_step(field: FieldDescriptor) -> Step:
    name = field.name
    if field.is_repeated:

        def repeated(obj: Any, out: list[Any]) -> None:
            out.extend(getattr(obj, name))

        return repeated
    if field.has_presence:

        def optional(obj: Any, out: list[Any]) -> None:
            if obj.HasField(name):
                out.append(getattr(obj, name))

        return optional

    def always(obj: Any, out: list[Any]) -> None:
        out.append(getattr(obj, name))

    return always


def _key_step(key: str) -> Step:
    def step(obj: Any, out: list[Any]) -> None:
        if isinstance(obj, struct_pb2.Struct):
            # .get, never [key]: indexing a message map inserts the missing key.
            found = obj.fields.get(key)
            if found is not None:
                out.append(found)
        elif isinstance(obj, struct_pb2.Value):
            kind = obj.WhichOneof("kind")
            if kind == "struct_value":
                step(obj.struct_value, out)
            elif kind == "list_value":
                step(obj.list_value, out)
        elif isinstance(obj, struct_pb2.ListValue):
            for element in obj.values:
                step(element, out)

    return step


def _json_scalars(obj: Any, out: list[Any]) -> None:
    """The leaf values of free-form JSON: arrays flattened; nulls and objects contribute
    nothing (an object equals no scalar, and under any/none semantics an element that
    never matches is the same as no element)."""
    if isinstance(obj, struct_pb2.ListValue):
        for element in obj.values:
            _json_scalars(element, out)
        return
    if isinstance(obj, struct_pb2.Struct):
        return
    kind = obj.WhichOneof("kind")
    if kind == "string_value":
        out.append(obj.string_value)
    elif kind == "number_value":
        out.append(obj.number_value)
    elif kind == "bool_value":
        out.append(obj.bool_value)
    elif kind == "list_value":
        _json_scalars(obj.list_value, out)


def _timestamp_key(obj: Any, out: list[Any]) -> None:
    out.append((obj.seconds, obj.nanos))


def _wrapped(obj: Any, out: list[Any]) -> None:
    out.append(obj.value)


def _getter(hops: Sequence[Hop], leaf: Leaf, last: FieldDescriptor | None) -> Callable[[Any], Any]:
    """A function from a message to its list of leaf values (see module docstring)."""
    steps = [_field_step(h.field) if h.field is not None else _key_step(h.key or "") for h in hops]
    if leaf is Leaf.DYNAMIC:
        steps.append(_json_scalars)
    elif leaf is Leaf.TIMESTAMP:
        steps.append(_timestamp_key)
    elif last is not None and last.message_type is not None:
        steps.append(_wrapped)  # google.protobuf.*Value wrappers

    def get(message: Any) -> list[Any]:
        objects = [message]
        for step in steps:
            found: list[Any] = []
            for obj in objects:
                step(obj, found)
            if not found:
                return found
            objects = found
        return objects

    return get


# --- predicates ------------------------------------------------------------------------


def _string_equals(values: Sequence[str]) -> Predicate:
    exact = frozenset(values)
    folded = frozenset(v.lower() for v in values if UUID_PATTERN.fullmatch(v))
    if not folded:
        if len(exact) == 1:
            (only,) = exact
            return only.__eq__
        return exact.__contains__

    def equals(a: str) -> bool:
        # a.lower() in folded (all UUID-shaped) and ASCII implies a is UUID-shaped too.
        return a in exact or (len(a) == 36 and a.isascii() and a.lower() in folded)

    return equals


def _contains(needles: Sequence[str]) -> Predicate:
    if len(needles) == 1:
        needle = needles[0]
        return lambda a: needle in a
    return lambda a: any(n in a for n in needles)


def _coerce(
    values: Sequence[str], parse: Callable[[str], Any], what: str, attribute: str
) -> list[Any]:
    coerced = []
    for index, value in enumerate(values):
        result = parse(value)
        if result is None:
            raise TermError(
                f"type mismatch: {echo(value)} is not {what}, as attribute '{attribute}' needs",
                value_index=index,
            )
        coerced.append(result)
    return coerced


def _parse_timestamp(text: str) -> tuple[int, int] | None:
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromJsonString(text)
    except (ValueError, TypeError, OverflowError):
        return None
    return (stamp.seconds, stamp.nanos)


def _parse_int(text: str) -> int | None:
    if not _INTEGER.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        return None


_STATIC_PARSERS: Final[dict[Leaf, tuple[Callable[[str], Any], str]]] = {
    Leaf.BOOL: (parse_bool, "true or false"),
    Leaf.INT: (_parse_int, "an integer"),
    Leaf.FLOAT: (parse_number, "a number"),
    Leaf.TIMESTAMP: (_parse_timestamp, "an RFC 3339 timestamp"),
}


# The numbers and the booleans among a term's values.
Scalars = tuple[frozenset[float], frozenset[bool]]


def _numbers_and_bools(values: Sequence[str]) -> Scalars:
    """The numbers and the booleans among a term's values (what eq/in on free-form JSON
    also matches besides the strings): one reading for every use of them."""
    numbers = frozenset(n for n in map(parse_number, values) if n is not None)
    bools = frozenset(b for b in map(parse_bool, values) if b is not None)
    return numbers, bools


def _dynamic_predicate(op: str, values: Sequence[str]) -> Predicate:
    strings = _string_equals(values) if op in {"in", "eq"} else None
    numbers, bools = _numbers_and_bools(values)
    if strings is not None:

        def equals(a: Any) -> bool:
            kind = type(a)
            if kind is str:
                return strings(a)
            if kind is bool:
                return a in bools
            return kind is float and a in numbers

        return equals
    if op == "cont":
        contains = _contains(values)
        return lambda a: type(a) is str and contains(a)
    compare, value = _ORDER[op], values[0]
    number = parse_number(value)

    def ordered(a: Any) -> bool:
        kind = type(a)
        if kind is str:
            return bool(compare(a, value))
        return kind is float and number is not None and bool(compare(a, number))

    return ordered


def _never(_: Any) -> bool:
    return False


# A dynamic predicate split by JSON type: (on strings, on numbers, on booleans).
TypedPredicates = tuple[Predicate, Predicate, Predicate]


def _dynamic_typed(op: str, values: Sequence[str], scalars: Scalars) -> TypedPredicates:
    """_dynamic_predicate for a value whose JSON type the caller already knows (it read
    the Value's kind), so no per-value type dispatch; the same results by construction
    of each branch (tests/server/query/test_nested_fast_path.py checks it)."""
    if op in {"in", "eq"}:
        numbers, bools = scalars
        return _string_equals(values), numbers.__contains__, bools.__contains__
    if op == "cont":
        return _contains(values), _never, _never
    compare, value = _ORDER[op], values[0]
    number = parse_number(value)
    on_number = _never if number is None else (lambda a: bool(compare(a, number)))
    return (lambda a: bool(compare(a, value))), on_number, _never


def _struct_test(
    name: str,
    keys: Sequence[str],
    typed: TypedPredicates,
    *,
    predicate: Predicate,
    negated: bool,
    general: Callable[[Any], list[Any]],
) -> Predicate:
    """The test of a DYNAMIC term on `<Struct field>/<keys...>` (e.g. extensions/rack),
    the same answers as `any(map(predicate, general(message)))`, in about a third of
    the time: no HasField (an unset Struct has no keys), no type dispatch while the path
    runs through JSON objects, a membership test before each lookup (indexing a message
    map inserts the missing key), and one JSON scalar (the usual case) tested straight
    from the Value by its kind. A JSON array anywhere goes through `general`."""
    on_str, on_number, on_bool = typed
    first, rest = keys[0], tuple(keys[1:])

    def test(message: Any) -> bool:
        fields = getattr(message, name).fields
        if first not in fields:
            return negated
        value = fields[first]
        for key in rest:
            if value.WhichOneof("kind") != "struct_value":
                return any(map(predicate, general(message))) is not negated
            fields = value.struct_value.fields
            if key not in fields:
                return negated
            value = fields[key]
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            return on_str(value.string_value) is not negated
        if kind == "number_value":
            return on_number(value.number_value) is not negated
        if kind == "bool_value":
            return on_bool(value.bool_value) is not negated
        if kind == "list_value":
            return any(map(predicate, general(message))) is not negated
        return negated  # null or a JSON object: no value

    return test


def _predicate(
    leaf: Leaf, op: str, values: Sequence[str], last: FieldDescriptor | None, attribute: str
) -> tuple[Predicate, frozenset[str] | None]:
    """The positive predicate for one leaf value, and the index keys of eq/in terms."""
    equality = op in {"eq", "in"}
    if leaf is Leaf.DYNAMIC:
        return _dynamic_predicate(op, values), None
    if leaf is Leaf.STRING:
        if equality:
            return _string_equals(values), frozenset(map(fold_uuid, values))
        if op == "cont":
            return _contains(values), None
        compare, value = _ORDER[op], values[0]
        return (lambda a: bool(compare(a, value))), None
    if leaf is Leaf.ENUM:
        assert last is not None and last.enum_type is not None
        names = {v.number: v.name for v in last.enum_type.values}
        if equality:
            by_name = {name: number for number, name in names.items()}
            numbers = _coerce(values, by_name.get, f"one of {', '.join(by_name)}", attribute)
            return frozenset(numbers).__contains__, frozenset(map(index_key, numbers))
        if op == "cont":
            contains = _contains(values)
            return (lambda a: contains(names.get(a, ""))), None
        compare, value = _ORDER[op], values[0]
        return (lambda a: bool(compare(names.get(a, ""), value))), None
    if op == "cont":
        raise TermError(f"cont and ncont need a string attribute; '{attribute}' is {leaf.value}")
    if leaf is Leaf.BOOL and not equality:
        raise TermError(f"{op} does not apply to '{attribute}', a boolean attribute")
    parse, what = _STATIC_PARSERS[leaf]
    coerced = _coerce(values, parse, what, attribute)
    keys = None if leaf is Leaf.TIMESTAMP else frozenset(map(index_key, coerced))
    if equality:
        return frozenset(coerced).__contains__, keys
    compare, value = _ORDER[op], coerced[0]
    return (lambda a: bool(compare(a, value))), None


@dataclass(frozen=True)
class JsonPrefilter:
    """What an index of a free-form path's values (json_key -> object ids) may use to
    pre-select the objects a positive term can match. `passes` is the term's predicate on
    one scalar leaf value: an object can match only if one of its leaf values passes.
    For eq/in the passing values are known up front: `keys` holds their json_keys, so an
    index is looked up rather than walked, and `folded` the lower-cased json_keys of the
    UUID-shaped strings among them (a stored string passes in any case that lower-cases
    to one of those). `keys` None: walk the index with `passes`."""

    passes: Predicate
    keys: frozenset[str] | None = None
    folded: frozenset[str] = frozenset()
    # For cont: the strings one of which a passing value contains (exact case).
    substrings: frozenset[str] = frozenset()
    # For gt/gte/lt/lte: (the path's last JSON key, the operator, its bound as written).
    order: tuple[str, str, str] | None = None


def _json_prefilter(
    op: str, values: Sequence[str], passes: Predicate, scalars: Scalars, last_key: str
) -> JsonPrefilter:
    """The JsonPrefilter of a positive DYNAMIC term on a path ending in the JSON key
    `last_key`; the keys of eq/in are exactly the values _dynamic_predicate accepts, as
    json_key writes them."""
    if op == "cont":
        return JsonPrefilter(passes, substrings=frozenset(values))
    if op in _ORDER:
        return JsonPrefilter(passes, order=(last_key, op, values[0]))
    numbers, bools = scalars  # eq, in: the positive operators left
    keys = {json_key(value) for value in values}
    for number in numbers:
        keys.add(json_key(number))
        if number == 0:  # 0.0 == -0.0, but their keys differ
            keys.add(json_key(-number))
    keys.update(json_key(b) for b in bools)
    folded = frozenset(json_key(v.lower()) for v in values if UUID_PATTERN.fullmatch(v))
    return JsonPrefilter(passes, frozenset(keys), folded)


@dataclass(frozen=True)
class CompiledTerm:
    """One bound term: `test(message)` and what an index may use."""

    test: Callable[[Any], bool]
    canonical: tuple[str, ...]
    # For eq/in on a typed attribute: the index keys the term restricts the attribute to.
    index_keys: frozenset[str] | None
    # For a positive term on free-form JSON: what an index of the path's values
    # (json_key) may pre-select candidates with.
    json_prefilter: JsonPrefilter | None = None


def compile_term(
    descriptor: Descriptor,
    op: str,
    path: tuple[str, ...],
    values: tuple[str, ...],
    aliases: Mapping[str, str] | None = None,
) -> CompiledTerm:
    """Bind one term to a message type. Raises PathError or TermError."""
    if op in SINGLE_VALUE_OPERATORS and len(values) != 1:
        raise TermError(f"{op} takes exactly 1 value, got {len(values)}", value_index=1)
    resolved = resolve_path(descriptor, path, aliases)
    leaf, name = resolved.leaf, "/".join(resolved.canonical)
    if leaf is Leaf.OBJECT:
        raise PathError(
            f"attribute '{name}' is an object; compare one of its attributes ({name}/...)",
            len(path) - 1,
        )
    if leaf is Leaf.UNSUPPORTED:
        raise PathError(f"attribute '{name}' cannot be filtered on", len(path) - 1)
    negated = op in _NEGATIONS
    positive = _NEGATIONS.get(op, op)
    predicate, keys = _predicate(leaf, positive, values, resolved.last_field, name)
    hops = resolved.hops
    field = hops[0].field
    if len(hops) == 1 and field is not None and not field.is_repeated and not field.has_presence:
        # The hot path: one always-present scalar, read straight off the message.
        read = operator.attrgetter(field.name)
        if leaf is Leaf.STRING and op == "cont" and len(values) == 1:
            test = _substring_test(read, values[0])
        else:
            test = _scalar_test(read, predicate, negated)
        return CompiledTerm(test, resolved.canonical, None if negated else keys)
    if (
        leaf is Leaf.DYNAMIC
        and len(hops) > 1
        and field is not None
        and not field.is_repeated
        and field.message_type is not None
        and field.message_type.full_name == STRUCT
        and all(h.field is None for h in hops[1:])
    ):
        # extensions/<key>/...: the nested filters SMOs use on big inventories.
        struct_keys = [h.key or "" for h in hops[1:]]
        scalars = _numbers_and_bools(values)
        typed = _dynamic_typed(positive, values, scalars)
        general = _getter(hops, leaf, resolved.last_field)
        test = _struct_test(
            field.name, struct_keys, typed, predicate=predicate, negated=negated, general=general
        )
        prefilter = (
            None
            if negated
            else _json_prefilter(positive, values, predicate, scalars, struct_keys[-1])
        )
        return CompiledTerm(test, resolved.canonical, None, prefilter)
    get = _getter(hops, leaf, resolved.last_field)

    def test_values(message: Any) -> bool:
        return any(map(predicate, get(message))) is not negated

    return CompiledTerm(test_values, resolved.canonical, None if negated else keys)


def json_getter(descriptor: Descriptor, path: Sequence[str]) -> Callable[[Any], list[Any]]:
    """A function from a message of type `descriptor` to the JSON scalar leaf values at
    the free-form `path` (e.g. ("extensions", "rack")): the values a filter term on that
    path tests, for an index to key with json_key. Raises PathError, or TermError
    if the path does not end inside free-form JSON."""
    resolved = resolve_path(descriptor, tuple(path))
    if resolved.leaf is not Leaf.DYNAMIC:
        raise TermError(f"'{'/'.join(resolved.canonical)}' is not inside free-form JSON")
    return _getter(resolved.hops, resolved.leaf, resolved.last_field)


# Scans call these once per object: every Python-level call saved is ~5% of a scan.


def _scalar_test(read: Callable[[Any], Any], predicate: Predicate, negated: bool) -> Predicate:
    if negated:
        return lambda message: not predicate(read(message))
    return lambda message: predicate(read(message))


def _substring_test(read: Callable[[Any], Any], needle: str) -> Predicate:
    return lambda message: needle in read(message)
