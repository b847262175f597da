"""The version of the state layout in Redis (docs/operations.md, "State in Redis").

  netweave:data_version  string  "<major>.<minor>" of the layout the keys follow

A core writes it at start when absent (SET NX), so every Redis a gateway has used names the
layout of its data. A minor bump is additive (new keys or fields older code ignores); a
major bump means older code cannot read the data: a backup (server/backup) is restored only
into a layout of the same major.
"""

from __future__ import annotations

from typing import Final

import redis

DATA_VERSION_KEY: Final = "netweave:data_version"
DATA_VERSION: Final = "1.0"


class UnreadableDataVersion(ValueError):
    """A data version that is not `<major>.<minor>`."""


def major_of(version: str) -> int:
    major, dot, minor = version.partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        raise UnreadableDataVersion(f"data version {version!r} is not <major>.<minor>")
    return int(major)


def compatible(version: str, with_version: str = DATA_VERSION) -> bool:
    """Whether data of `version` can be read by code of `with_version` (same major)."""
    return major_of(version) == major_of(with_version)


def ensure_data_version(client: redis.Redis) -> str:
    """The data version stored in Redis, written first if absent."""
    client.set(DATA_VERSION_KEY, DATA_VERSION, nx=True)
    stored = client.get(DATA_VERSION_KEY)
    if isinstance(stored, bytes):
        return stored.decode()
    return str(stored) if stored is not None else DATA_VERSION
