"""The adapters' strict YAML mapping files: one reader, one error, and the checks that name
the key path of whatever is wrong (`alarms.NodeDown.clearing: unknown key`), so a typo stops
an adapter at start (exit code 2) instead of being silently ignored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml

MAX_MAPPING_FILE_BYTES: Final = 1024 * 1024

Config = TypeVar("Config")


class MappingFileError(Exception):
    """A mapping file that cannot be used; str() names the file and the key path."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class Problem(Exception):
    """What a reader raises, naming the key path; parse() adds the file."""


def load(path: Path, read_config: Callable[[Any], Config]) -> Config:
    """The configuration `read_config` makes of the YAML file at `path`; MappingFileError
    naming the file (and the key) on any problem."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_MAPPING_FILE_BYTES + 1)
    except OSError as error:
        raise MappingFileError(path, f"cannot read: {error.strerror or error}") from error
    if len(data) > MAX_MAPPING_FILE_BYTES:
        raise MappingFileError(path, f"larger than {MAX_MAPPING_FILE_BYTES} bytes")
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as error:
        raise MappingFileError(path, f"not valid YAML: {error}") from error
    return parse(document, path, read_config)


def parse(document: Any, path: str | Path, read_config: Callable[[Any], Config]) -> Config:
    """Like load(), for an already parsed document (an empty file is an empty mapping)."""
    try:
        return read_config({} if document is None else document)
    except Problem as problem:
        raise MappingFileError(path, str(problem)) from None


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def mapping(
    value: Any, where: str, allowed: tuple[str, ...] | None = None, *, optional: bool = False
) -> dict[str, Any]:
    """`value` as a mapping of string keys, each among `allowed` when given; with
    `optional`, None (a key given no value) is an empty mapping."""
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise Problem(f"{where or 'the top level'}: must be a mapping")
    for key in value:
        if not isinstance(key, str):
            raise Problem(f"{where or 'the top level'}: key {key!r} must be a string")
        if allowed is not None and key not in allowed:
            raise Problem(f"{join(where, key)}: unknown key (allowed: {', '.join(allowed)})")
    return value


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise Problem(f"{where}: must be a string")
    return value


def extensions(value: Any, where: str, *, optional: bool = False) -> dict[str, Any]:
    """A mapping that becomes a google.protobuf.Struct: JSON values with string keys only
    (no dates, no binary)."""
    found = mapping(value, where, optional=optional)
    _check_json(found, where)
    return found


def _check_json(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Problem(f"{where}: key {key!r} must be a string")
            _check_json(item, join(where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise Problem(f"{where}: {type(value).__name__} is not a JSON value")


@dataclass(frozen=True)
class NamedSpec:
    """Name, description and extensions the mapping gives an object (a site, a pool, a
    deployment manager); empty: the adapter's own."""

    name: str = ""
    description: str = ""
    extensions: Mapping[str, Any] = field(default_factory=dict)


NAMED_KEYS: Final = ("name", "description", "extensions")


def named(value: Any, where: str, *, optional: bool = False) -> NamedSpec:
    item = mapping(value, where, NAMED_KEYS, optional=optional)
    return NamedSpec(
        name=text(item.get("name", ""), join(where, "name")),
        description=text(item.get("description", ""), join(where, "description")),
        extensions=extensions(
            item.get("extensions", {}), join(where, "extensions"), optional=optional
        ),
    )
