"""labelSelector and fieldSelector for Nodes, as the API server parses and applies them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_FORM = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQUALITY_FORM = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_FORM = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")

# Field labels the API server supports for nodes (besides the generic metadata ones).
_NODE_FIELDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "metadata.name": lambda node: str(node["metadata"]["name"]),
    "spec.unschedulable": lambda node: (
        "true" if node.get("spec", {}).get("unschedulable") else "false"
    ),
}


class SelectorError(ValueError):
    """The selector does not parse (the API server answers 400 BadRequest)."""


def _split_requirements(selector: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def _labels(node: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = node.get("metadata", {}).get("labels") or {}
    return labels


def _label_requirement(text: str) -> Predicate:
    if match := _SET_FORM.match(text):
        key, operator, raw_values = match.groups()
        values = {value.strip() for value in raw_values.split(",") if value.strip()}
        if operator == "in":
            return lambda node: _labels(node).get(key) in values
        return lambda node: _labels(node).get(key) not in values
    if match := _EQUALITY_FORM.match(text):
        key, operator, value = match.groups()
        if operator == "!=":
            return lambda node: _labels(node).get(key) != value
        return lambda node: _labels(node).get(key) == value
    if match := _EXISTS_FORM.match(text):
        negate, key = match.groups()
        if negate:
            return lambda node: key not in _labels(node)
        return lambda node: key in _labels(node)
    raise SelectorError(f"unable to parse requirement: {text.strip()!r}")


def label_selector(selector: str) -> Predicate | None:
    """A predicate for a labelSelector (equality, set and exists forms), None when empty."""
    requirements = [_label_requirement(part) for part in _split_requirements(selector)]
    if not requirements:
        return None
    return lambda node: all(requirement(node) for requirement in requirements)


def _field_requirement(text: str) -> Predicate:
    for operator in ("==", "!=", "="):
        if operator in text:
            field, value = (part.strip() for part in text.split(operator, 1))
            break
    else:
        raise SelectorError(f"invalid selector: '{text}'; can't understand '{text}'")
    getter = _NODE_FIELDS.get(field)
    if getter is None:
        raise SelectorError(f"field label not supported: {field}")
    if operator == "!=":
        return lambda node: getter(node) != value
    return lambda node: getter(node) == value


def field_selector(selector: str) -> Predicate | None:
    """A predicate for a node fieldSelector (metadata.name, spec.unschedulable), None when empty."""
    requirements = [_field_requirement(part) for part in selector.split(",") if part.strip()]
    if not requirements:
        return None
    return lambda node: all(requirement(node) for requirement in requirements)


def combine(*predicates: Predicate | None) -> Predicate | None:
    present = [predicate for predicate in predicates if predicate is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return lambda node: all(predicate(node) for predicate in present)
