"""Typed environment variables: a Setting names one variable, its Kind (how its text becomes a
value), its default, what it means and which processes read it. The variables themselves are
defined in netweave/settings.py; this module is the only one that reads the environment.

An unset or blank variable means the default (unless the Setting says an empty value is a
value); a value that does not parse is a ValueError naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Generic, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")

_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")


def _integer(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"must be an integer, got {raw!r}") from None


def _number(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None


def _flag(raw: str) -> bool:
    word = raw.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ValueError(f"must be true or false (1/0, yes/no, on/off), got {word!r}")
    return word in _TRUE


def _text(raw: str) -> str:
    # As given: a secret's surrounding whitespace is part of it.
    return raw


def _comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Kind(Generic[T_co]):
    """How a variable's text becomes a value: `parse` raises ValueError("must be ...")."""

    name: str
    parse: Callable[[str], T_co]


INTEGER: Final = Kind("integer", _integer)
NUMBER: Final = Kind("number", _number)
FLAG: Final = Kind("flag", _flag)
TEXT: Final = Kind("text", _text)
PATH: Final = Kind("path", _text)
FILE_PATH: Final = Kind("path", Path)
URL: Final = Kind("URL", _text)
HOST: Final = Kind("host", _text)
HOST_PORT: Final = Kind("host:port", _text)
HOST_PORT_LIST: Final = Kind("host:port list", _comma_list)


def choice(*options: str) -> Kind[str]:
    """One of `options`, case-insensitive."""

    def parse(raw: str) -> str:
        word = raw.strip().lower()
        if word not in options:
            raise ValueError(f"must be {' or '.join(options)}, got {word!r}")
        return word

    return Kind(" | ".join(options), parse)


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable as one group of processes reads it. A variable that means
    different things to different readers (REDIS_URL: the Redis to use, or for `make run`
    the Redis to use instead of starting one) has one Setting per meaning."""

    name: str
    kind: Kind[T]
    default: T
    readers: tuple[str, ...]
    meaning: str
    # How README shows the default when the value itself would not say it well.
    shown_default: str = ""
    # A blank value is a value (e.g. "no audit log"), not the default.
    empty_is_value: bool = False

    def read(self, environ: Mapping[str, str] | None = None) -> T:
        """The value in `environ` (default: the process environment)."""
        raw = (os.environ if environ is None else environ).get(self.name)
        if raw is None or (not raw.strip() and not self.empty_is_value):
            return self.default
        try:
            return self.kind.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{self.name} {exc}") from exc

    def read_as(self, convert: Callable[[T], U], environ: Mapping[str, str] | None = None) -> U:
        """`convert` of the value; a ValueError it raises is re-raised naming the variable."""
        value = self.read(environ)
        try:
            return convert(value)
        except ValueError as exc:
            if self.name in str(exc):
                raise
            raise ValueError(f"{self.name}: {exc}") from exc
