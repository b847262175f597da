"""The caller of the call being served, as the servicers see it.

The auth interceptor (server/auth/interceptor.py) sets it for every call before the
servicer runs, in the thread that runs the servicer; a servicer reads it with
`current_caller()` to record and check ownership (subscriptions belong to their client).
Outside a call (or if the interceptor were missing) the caller owns nothing and sees
nothing: ownership checks fail closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Caller:
    """`owner`: the principal that owns what this caller creates ("" for nobody: such a
    caller can create nothing it could read back). `sees_all`: an administrator, who
    lists, reads and deletes every client's objects. `roles`: the roles the access
    policy gave the caller, for what a servicer decides per response (a deployment
    manager's admin credentials: server/auth/policy.py, may_read_credentials)."""

    owner: str
    sees_all: bool = False
    roles: tuple[str, ...] = ()

    def may_see(self, owner: str) -> bool:
        """Whether an object owned by `owner` exists for this caller ("" = created before
        owners were recorded: administrators only)."""
        return self.sees_all or (bool(owner) and owner == self.owner)


NOBODY: Final = Caller(owner="", sees_all=False)
_current: ContextVar[Caller] = ContextVar("netweave_caller", default=NOBODY)


def current_caller() -> Caller:
    return _current.get()


@contextmanager
def acting_as(caller: Caller) -> Iterator[Caller]:
    """Run the enclosed code (a servicer call) as `caller`."""
    token = _current.set(caller)
    try:
        yield caller
    finally:
        _current.reset(token)
