"""YAML parsing that remembers where every mapping, key and list item came from, so
inventory errors can point at the line to fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# Deep enough for any inventory (resources nest elements, extensions nest JSON), shallow
# enough that building the objects stays far from Python's recursion limit.
DEFAULT_MAX_DEPTH: Final = 64
# Aliases may add this many nodes, or as many as the file itself holds if that is more:
# shared `extensions` blocks fit easily; a 30 KB "billion laughs" does not.
DEFAULT_MAX_ALIAS_NODES: Final = 100_000


@dataclass(frozen=True)
class YamlLimits:
    """What one inventory document may cost to build."""

    max_depth: int = DEFAULT_MAX_DEPTH
    max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES


class LineProblem(Exception):
    """A problem at a 1-based line of the file being read."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


class MarkedDict(dict[str, Any]):
    """A YAML mapping with the line it starts on and the line of each key."""

    line: int
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        """The line of `key`, or of the mapping itself when the key is absent."""
        return self.key_lines.get(key, self.line)


class MarkedList(list[Any]):
    """A YAML sequence with the line it starts on and the line of each item."""

    line: int
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _MarkedLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry their source lines.

    It also refuses duplicate keys: PyYAML would silently keep the last one, and an
    inventory where half an object vanishes without a word is worse than an error.
    And it bounds what a small file can cost: nesting depth (PyYAML composes
    recursively, so a deep file would end in a RecursionError without a line) and the
    nodes that aliases add (a reused anchor is one Python object, but everything that
    walks the inventory walks every reference to it).
    """

    def __init__(self, stream: str, limits: YamlLimits) -> None:
        super().__init__(stream)
        self.limits = limits
        self._depth = 0
        self._composed_nodes = 0
        self._alias_nodes = 0
        # id(node) -> nodes it stands for once aliases are expanded; absent while the
        # node is still being composed, which is how a recursive alias shows itself.
        self._expanded: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = int(event.start_mark.line) + 1
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            size = None if node is None else self._expanded.get(id(node))
            if size is None:
                raise LineProblem(line, f"alias *{event.anchor} refers to itself")
            self._alias_nodes += size
            allowed = max(self.limits.max_alias_nodes, self._composed_nodes)
            if self._alias_nodes > allowed:
                raise LineProblem(
                    line,
                    f"aliases expand the document by more than {allowed} nodes "
                    f"(at alias *{event.anchor}); write the data out or share less of it",
                )
            return node
        if self._depth >= self.limits.max_depth:
            raise LineProblem(line, f"nested deeper than {self.limits.max_depth} levels")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._composed_nodes += 1
            children = _children(node)
            self._expanded[id(node)] = 1 + sum(self._expanded.get(id(c), 1) for c in children)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping, found {node.id}", node.start_mark
            )
        self.flatten_mapping(node)  # resolves `<<` merge keys
        mapping = MarkedDict()
        mapping.line = _line(node)
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"keys must be strings, found {key!r}", key_node.start_mark
                )
            if key in mapping.key_lines:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key}' (first at line {mapping.key_lines[key]})",
                    key_node.start_mark,
                )
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = _line(key_node)
        return mapping

    def construct_sequence(self, node: SequenceNode, deep: bool = False) -> list[Any]:
        if not isinstance(node, SequenceNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a sequence, found {node.id}", node.start_mark
            )
        sequence = MarkedList(self.construct_object(child, deep=True) for child in node.value)
        sequence.line = _line(node)
        sequence.item_lines = [_line(child) for child in node.value]
        return sequence


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _construct_marked_mapping(loader: _MarkedLoader, node: MappingNode) -> dict[Any, Any]:
    return loader.construct_mapping(node, deep=True)


def _construct_marked_sequence(loader: _MarkedLoader, node: SequenceNode) -> list[Any]:
    return loader.construct_sequence(node, deep=True)


def _construct_timestamp_as_text(loader: _MarkedLoader, node: ScalarNode) -> str:
    # Dates such as alarmLastChange are strings in O2ims; PyYAML would turn an
    # unquoted 2024-05-01 into a datetime.date that no string field accepts.
    return loader.construct_scalar(node)


_MarkedLoader.add_constructor("tag:yaml.org,2002:map", _construct_marked_mapping)
_MarkedLoader.add_constructor("tag:yaml.org,2002:seq", _construct_marked_sequence)
_MarkedLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp_as_text)


def parse_marked_yaml(data: bytes, limits: YamlLimits | None = None) -> Any:
    """Parse one YAML document; mappings become MarkedDict, sequences MarkedList.

    Raises LineProblem with the line of the first problem, including a document that
    exceeds `limits` (default: YamlLimits()).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise LineProblem(line, f"not UTF-8 text: {error.reason}") from error
    try:
        # What yaml.load does, with the limits passed in; a SafeLoader: no arbitrary objects.
        loader = _MarkedLoader(text, limits or YamlLimits())
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        problem = f"malformed YAML: {error.problem or error.context}"
        if error.context and error.problem and error.context_mark is not None:
            # Where the unfinished construct began: often the line that needs fixing.
            problem += f" ({error.context} at line {int(error.context_mark.line) + 1})"
        raise LineProblem(line, problem) from error
    except yaml.YAMLError as error:
        raise LineProblem(1, f"malformed YAML: {error}") from error
