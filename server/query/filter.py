"""The SOL013 `filter` query parameter: parse, print, bind to a message type, evaluate.

Grammar (ETSI GS NFV-SOL 013 §5.2 as O2ims and the Red Hat implementation use it):

    filter := term (";" term)*          ; ";" is AND, there is no OR
    term   := "(" op "," path "," value ("," value)* ")"
    op     := eq | neq | gt | lt | gte | lte | cont | ncont | in | nin
    path   := segment ("/" segment)*    ; escapes: ~0 -> "~", ~1 -> "/", ~b -> "@"
    value  := unquoted | "'" (char | "''")* "'"

An unquoted value runs up to the next "," or ")" and is kept verbatim (spaces included;
`(eq,a,)` has one value, the empty string). A quoted value may hold "," ")" and "(";
"''" is a literal quote. Spaces are allowed around ";". An empty (or all-blank) filter
has no terms and matches everything: that is how an empty `filter=` and a subscription
without a filter behave. A raw "@" in a path is reserved (SOL013 gives "@key" a meaning
we do not implement) and rejected; write ~b for a literal "@".

Semantics of the operators are documented in server.query.evaluate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Final, NoReturn

from google.protobuf.descriptor import Descriptor

from server.query.errors import QueryError, echo
from server.query.evaluate import (
    OPERATORS,
    CompiledTerm,
    JsonPrefilter,
    TermError,
    compile_term,
)
from server.query.schema import PathError

# Characters that cannot appear raw in a path segment: the term syntax uses them, or (for
# "@") SOL013 reserves them.
_SEGMENT_FORBIDDEN = frozenset(",()/;'@")
_ESCAPES = {"0": "~", "1": "/", "b": "@"}
# Values containing any of these are printed quoted.
_QUOTE_TRIGGERS = frozenset(",()';")


@dataclass(frozen=True)
class Term:
    """One `(op,path,value...)` term. Positions (1-based, in the parsed text) serve error
    messages only and take no part in equality."""

    op: str
    path: tuple[str, ...]
    values: tuple[str, ...]
    index: int = field(default=0, compare=False)
    position: int | None = field(default=None, compare=False)
    path_position: int | None = field(default=None, compare=False)
    value_positions: tuple[int, ...] = field(default=(), compare=False)
    # Which `filter` parameter (1-based) of the request the term came from.
    occurrence: int = field(default=1, compare=False)

    def __str__(self) -> str:
        path = "/".join(escape_segment(segment) for segment in self.path)
        return f"({self.op},{path},{','.join(map(_print_value, self.values))})"


@dataclass(frozen=True)
class Filter:
    """An AND of terms; no terms matches everything."""

    terms: tuple[Term, ...] = ()

    def __str__(self) -> str:
        """Canonical text: parse_filter(str(f)) == f."""
        return ";".join(map(str, self.terms))

    def __bool__(self) -> bool:
        return bool(self.terms)

    def bind(
        self,
        descriptor: Descriptor,
        aliases: Mapping[str, str] | None = None,
        parameter: str = "filter",
    ) -> BoundFilter:
        """Resolve every path against `descriptor` (JSON names, plus `aliases`: alternate
        spelling -> JSON name), check arity and coerce values. Raises QueryError."""
        compiled = []
        for term in self.terms:
            try:
                compiled.append(compile_term(descriptor, term.op, term.path, term.values, aliases))
            except PathError as error:
                raise _term_error(parameter, term, error.message, term.path_position) from None
            except TermError as error:
                # Point at the offending value if known, else at the operator.
                position = None if term.position is None else term.position + 1
                if error.value_index is not None and error.value_index < len(term.value_positions):
                    position = term.value_positions[error.value_index]
                raise _term_error(parameter, term, error.message, position) from None
        return BoundFilter(self, tuple(compiled))


class BoundFilter:
    """A filter bound to one message type, evaluated directly on its messages.

    `matches(message)` is True if the message satisfies every term. It is the compiled
    function itself rather than a method wrapping it: scans call it once per object.
    """

    matches: Callable[[Any], bool]

    def __init__(self, source: Filter, compiled: tuple[CompiledTerm, ...]) -> None:
        self._compiled = compiled
        # The filter with every path in canonical spelling (aliases resolved).
        self.filter = Filter(
            tuple(
                Term(term.op, bound.canonical, term.values)
                for term, bound in zip(source.terms, compiled, strict=True)
            )
        )
        tests = [bound.test for bound in compiled]
        if not tests:
            self.matches = lambda message: True
        else:
            self.matches = reduce(_both, tests)

    def equality_candidates(self, attribute: str) -> set[str] | None:
        """The index keys (see server.query.index_key) `attribute` is restricted to by eq
        or in terms, intersected over all such terms; None when no term restricts it (the
        caller must scan). `attribute` is a canonical JSON path, e.g. "resourcePoolId".
        Terms on free-form (extensions) values or timestamps never restrict.

        Candidates are a pre-selection, never the answer: an index maps an unset optional
        field and "" alike, so the filter must still run on every candidate (as
        CompiledQuery.page does)."""
        path = tuple(attribute.split("/"))
        candidates: set[str] | None = None
        for bound in self._compiled:
            if bound.canonical == path and bound.index_keys is not None:
                keys = set(bound.index_keys)
                candidates = keys if candidates is None else candidates & keys
        return candidates

    def json_prefilters(self) -> list[tuple[tuple[str, ...], JsonPrefilter]]:
        """(free-form path as segments, JsonPrefilter) of every positive term on a path
        below a Struct attribute (e.g. ("extensions", "rack"); segments, since a JSON key
        may hold a "/"): a message can match only if, for each, one of its leaf values at
        that path passes the prefilter. An index of each path's values
        (server.query.json_key) turns these into candidates, a pre-selection: the filter
        still runs on every candidate."""
        return [
            (b.canonical, b.json_prefilter) for b in self._compiled if b.json_prefilter is not None
        ]

    def __str__(self) -> str:
        return str(self.filter)


def _both(first: Callable[[Any], bool], second: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda message: first(message) and second(message)


def _term_error(parameter: str, term: Term, message: str, position: int | None) -> QueryError:
    return _located(parameter, message, position, term.index, term.occurrence)


def _located(
    parameter: str, message: str, position: int | None, term_index: int, occurrence: int
) -> QueryError:
    """A QueryError that also names the `filter` parameter when the request has several."""
    if occurrence > 1:
        message = f"{message} (in filter parameter {occurrence})"
    return QueryError(parameter, message, position, term_index or None)


def escape_segment(segment: str) -> str:
    """A path segment in filter syntax (~ / @ escaped)."""
    return segment.replace("~", "~0").replace("/", "~1").replace("@", "~b")


def _print_value(value: str) -> str:
    if value and not _QUOTE_TRIGGERS.intersection(value):
        return value
    return "'" + value.replace("'", "''") + "'"


def combine(filters: Iterable[Filter]) -> Filter:
    """The AND of several filters (repeated `filter` parameters)."""
    return Filter(tuple(term for f in filters for term in f.terms))


def parse_filter(text: str, parameter: str = "filter", occurrence: int = 1) -> Filter:
    """Parse SOL013 filter text. Raises QueryError pointing at the first problem.

    Operator arity and attribute names are checked by Filter.bind, not here, so the
    syntax can be tested on its own (`(eq,a,x,y)` parses, and binding rejects it).
    """
    return _Parser(text, parameter, occurrence).parse()


def parse_path(
    text: str,
    start: int,
    error: Callable[[str, int], NoReturn],
    what: str = "attribute path",
    *,
    strict: bool = True,
) -> tuple[str, ...]:
    """Split a path on "/" and unescape its segments; `start` is the 0-based offset of
    `text` in the parameter (for error positions). `error(message, offset)` raises.
    `strict` rejects the characters the filter syntax reserves; the selectors, whose
    lists have no such syntax, pass False so a stray "(" surfaces as an unknown
    attribute name."""
    if not text:
        error(f"missing {what}", start)
    segments = []
    offset = start
    for raw in text.split("/"):
        if not raw:
            error(f"empty segment in {what} {echo(text)}", offset)
        segment = []
        index = 0
        while index < len(raw):
            char = raw[index]
            if char == "~":
                code = raw[index + 1 : index + 2]
                if code not in _ESCAPES:
                    error(
                        f"invalid escape {echo(raw[index : index + 2])} (use ~0, ~1 or ~b)",
                        offset + index,
                    )
                segment.append(_ESCAPES[code])
                index += 2
                continue
            if strict and (char in _SEGMENT_FORBIDDEN or char.isspace()):
                hint = " (write ~b for a literal '@')" if char == "@" else ""
                error(f"invalid character {char!r} in {what}{hint}", offset + index)
            segment.append(char)
            index += 1
        segments.append("".join(segment))
        offset += len(raw) + 1
    return tuple(segments)


# Extensions paths the core indexes at load, at most (NETWEAVE_INDEXED_EXTENSIONS): each
# index costs a few MB and ~0.5 s of CPU per load over 100,000 resources.
MAX_INDEXED_EXTENSIONS: Final = 8


def below_extensions(path: tuple[str, ...]) -> bool:
    """Whether `path` names a key (at any depth) below a resource's free-form `extensions`:
    what an index of values can be kept for (server/cache.py)."""
    return len(path) >= 2 and path[0] == "extensions" and all(path)


def extensions_paths(texts: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """NETWEAVE_INDEXED_EXTENSIONS: each text a path below `extensions` in the filters'
    syntax (`extensions/site/rack`, escapes ~0 ~1 ~b), as the filters name it; duplicates
    once. ValueError names what is wrong."""

    def refuse(message: str, _offset: int) -> NoReturn:
        raise ValueError(message)

    paths: list[tuple[str, ...]] = []
    for text in texts:
        path = parse_path(text, 0, refuse, "extensions path")
        if not below_extensions(path):
            raise ValueError(f"must be paths below extensions (extensions/<key>...), got {text!r}")
        if path not in paths:
            paths.append(path)
    if len(paths) > MAX_INDEXED_EXTENSIONS:
        raise ValueError(f"must name at most {MAX_INDEXED_EXTENSIONS} paths, got {len(paths)}")
    return tuple(paths)


class _Parser:
    def __init__(self, text: str, parameter: str, occurrence: int) -> None:
        self.text = text
        self.parameter = parameter
        self.occurrence = occurrence
        self.pos = 0
        self.term_index = 0

    def fail(self, message: str, offset: int | None = None) -> NoReturn:
        offset = self.pos if offset is None else offset
        raise _located(self.parameter, message, offset + 1, self.term_index, self.occurrence)

    def found(self) -> str:
        if self.pos >= len(self.text):
            return "end of filter"
        return repr(self.text[self.pos])

    def skip_blanks(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def parse(self) -> Filter:
        if not self.text.strip():
            return Filter()
        terms = []
        while True:
            self.skip_blanks()
            self.term_index += 1
            terms.append(self.term())
            self.skip_blanks()
            if self.pos >= len(self.text):
                return Filter(tuple(terms))
            if self.text[self.pos] != ";":
                self.fail(f"expected ';' between terms, found {self.found()}")
            self.pos += 1

    def scan_to(self, stops: str) -> int:
        end = self.pos
        while end < len(self.text) and self.text[end] not in stops:
            end += 1
        return end

    def term(self) -> Term:
        text = self.text
        start = self.pos
        if start >= len(text) or text[start] != "(":
            self.fail(f"expected '(' to start a term, found {self.found()}")
        self.pos += 1
        end = self.scan_to(",)")
        op = text[self.pos : end]
        if op not in OPERATORS:
            detail = "missing operator" if not op else f"unknown operator {echo(op)}"
            self.fail(f"{detail} (expected one of {', '.join(OPERATORS)})")
        self.pos = end
        self.expect_comma(f"after operator '{op}'")
        path_start = self.pos
        end = self.scan_to(",)")
        path = parse_path(text[path_start:end], path_start, self.fail)
        self.pos = end
        self.expect_comma("after the attribute path (every term needs a value)")
        values, positions = [], []
        while True:
            positions.append(self.pos + 1)
            values.append(self.value())
            if self.pos >= len(text):
                self.fail("missing ')' at the end of the term")
            if text[self.pos] == ")":
                self.pos += 1
                break
            self.pos += 1  # the "," before the next value
        return Term(
            op,
            path,
            tuple(values),
            index=self.term_index,
            position=start + 1,
            path_position=path_start + 1,
            value_positions=tuple(positions),
            occurrence=self.occurrence,
        )

    def expect_comma(self, where: str) -> None:
        if self.pos >= len(self.text):
            self.fail(f"unexpected end of filter {where}: missing ')'")
        if self.text[self.pos] != ",":
            self.fail(f"expected ',' {where}, found {self.found()}")
        self.pos += 1

    def value(self) -> str:
        text = self.text
        if self.pos < len(text) and text[self.pos] == "'":
            opening = self.pos
            self.pos += 1
            chars = []
            while True:
                quote = text.find("'", self.pos)
                if quote < 0:
                    self.fail("unterminated quoted value (missing closing quote)", opening)
                chars.append(text[self.pos : quote])
                if text.startswith("''", quote):
                    chars.append("'")
                    self.pos = quote + 2
                    continue
                self.pos = quote + 1
                break
            if self.pos < len(text) and text[self.pos] not in ",)":
                self.fail(f"expected ',' or ')' after a quoted value, found {self.found()}")
            return "".join(chars)
        end = self.scan_to(",)")
        value = text[self.pos : end]
        self.pos = end
        return value
