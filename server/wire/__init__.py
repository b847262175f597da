"""Domain model -> O2ims wire models.

One domain model (o2ims.adapter.v1) feeds every served major version. A WireModel
names a version's proto module and its builders: one function per object kind that
turns a domain object into that version's wire message. Builders that are the same in
every version live in server.wire.common and take the version's proto module, so the
versions differ only where the O2ims models differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from google.protobuf.message import Message


@dataclass(frozen=True)
class BuildContext:
    """What a builder may read besides the object itself: the whole (read-only) domain
    view, for the attributes O2ims copies or derives from related objects."""

    objects: Mapping[str, Mapping[str, Any]]
    o_cloud_id: str
    service_uri: str


Builder = Callable[[Any, BuildContext], Message]


@dataclass(frozen=True)
class WireModel:
    """One served major version of the Inventory API."""

    major: str  # "v1"
    version: str  # the minor implemented, e.g. "1.2.0"
    pb: ModuleType  # the generated *_pb2 module of that version
    builders: Mapping[str, Builder]
