"""The correlation id of the request (or notification) being handled, for this thread or
task: what every log line, audit record, Redis event and webhook of it carries.

The edge decides the id of a REST request and forwards it as `x-correlation-id`
(netweave/headers.py); the core takes it from there (or from `x-request-id`) when it is
well formed, else makes its own. `bound(id)` makes it the current one for a block: every log
line gets it as `correlation_id` (a processor of netweave/logs.py reads `current()`), and
code that writes an event into Redis reads it with `current()` too. One ContextVar, set and
reset once per call (~0.3 us; structlog's bind_contextvars costs ~7 us a call).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import Final

from netweave.headers import CORRELATION_ID_HEADER, CORRELATION_ID_PATTERN, REQUEST_ID_HEADER

_WELL_FORMED: Final = re.compile(CORRELATION_ID_PATTERN)
# The current id. `bound` sets it for a block; the core's auth interceptor sets it directly
# (its guard runs on every call).
CURRENT: Final[ContextVar[str]] = ContextVar("netweave_correlation_id", default="")
# The structlog contextvar key that puts it on log lines.
LOG_FIELD: Final = "correlation_id"
# The field name events, subscriptions and dead letters store it under in Redis.
STORED_FIELD: Final = "correlationId"


def well_formed(value: str | None) -> bool:
    # fullmatch: `$` alone would accept a trailing newline.
    return bool(value) and _WELL_FORMED.fullmatch(value or "") is not None


def new_id() -> str:
    """32 hex digits. Not a secret (it is logged and returned), only unique: random bits
    without uuid4's system call per id."""
    return f"{random.getrandbits(128):032x}"


def from_metadata(metadata: Iterable[tuple[str, str]] | dict[str, str]) -> tuple[str, bool]:
    """(the id, whether the caller sent it) from a call's metadata: its well-formed
    `x-correlation-id`, else its well-formed `x-request-id`, else a new one."""
    found = dict(metadata) if not isinstance(metadata, dict) else metadata
    for header in (CORRELATION_ID_HEADER, REQUEST_ID_HEADER):
        offered = found.get(header)
        if offered is not None and well_formed(offered):
            return offered, True
    return new_id(), False


def current() -> str:
    """The id of what this thread or task is handling ("" outside any)."""
    return CURRENT.get()


class bound:  # noqa: N801 - used like a function: `with bound(id):`
    """Make `correlation_id` current (and on every log line) for the block. A class, not a
    @contextmanager generator: it runs once per gRPC call and per delivery."""

    __slots__ = ("_correlation_id", "_token")

    def __init__(self, correlation_id: str) -> None:
        self._correlation_id = correlation_id
        self._token: Token[str] | None = None

    def __enter__(self) -> str:
        self._token = CURRENT.set(self._correlation_id)
        return self._correlation_id

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            CURRENT.reset(self._token)
            self._token = None
