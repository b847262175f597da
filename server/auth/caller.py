"""The caller of the call being served, as the servicers see it.

The auth interceptor (server/auth/interceptor.py) sets it for every call before the
servicer runs, in the thread that runs the servicer; a servicer reads it with
`current_caller()` to record and check ownership (subscriptions belong to their client).
Outside a call (or if the interceptor were missing) the caller owns nothing and sees
nothing: ownership checks fail closed.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
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
# The caller of the call being served. The auth interceptor sets it directly (its guard runs
# on every call); everything else uses `acting_as` and `current_caller`.
CURRENT_CALLER: Final[ContextVar[Caller]] = ContextVar("netweave_caller", default=NOBODY)


def current_caller() -> Caller:
    return CURRENT_CALLER.get()


class acting_as:  # noqa: N801 - used like a function: `with acting_as(caller):`
    """Run the enclosed code (a servicer call) as `caller`. A class, not a
    @contextmanager generator: it runs once per call."""

    __slots__ = ("_caller", "_token")

    def __init__(self, caller: Caller) -> None:
        self._caller = caller
        self._token: Token[Caller] | None = None

    def __enter__(self) -> Caller:
        self._token = CURRENT_CALLER.set(self._caller)
        return self._caller

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            CURRENT_CALLER.reset(self._token)
            self._token = None
