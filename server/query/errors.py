"""The one failure type of the query engine, carrying what the API edge needs.

A QueryError names the query parameter at fault (`filter`, `fields`,
`nextpage_opaque_marker`, ...) and says what is wrong in words a REST client can act
on. The servicers map it once to INVALID_ARGUMENT with a google.rpc.BadRequest field
violation (`field` = parameter, `description` = detail), which the REST edge turns into
a 400 ProblemDetails.
"""

from __future__ import annotations

from typing import ClassVar

# User input echoed in messages is cut to this many characters, so a huge query string
# cannot blow up the error (and the logs that record it).
_ECHO_LIMIT = 60


def echo(text: str) -> str:
    """`text` quoted for an error message, shortened when long."""
    if len(text) > _ECHO_LIMIT:
        text = text[: _ECHO_LIMIT - 3] + "..."
    return repr(text)


class QueryError(ValueError):
    """A list query parameter that cannot be honoured (INVALID_ARGUMENT, REST 400).

    `position` is the 1-based character offset in the parameter's value and
    `term_index` the 1-based filter term, when they are known.
    """

    # Stable google.rpc.ErrorInfo reason for every query error.
    reason: ClassVar[str] = "INVALID_QUERY_PARAMETER"

    def __init__(
        self,
        parameter: str,
        message: str,
        position: int | None = None,
        term_index: int | None = None,
    ) -> None:
        self.parameter = parameter
        self.message = message
        self.position = position
        self.term_index = term_index
        super().__init__(f"{parameter}: {self.detail}")

    @property
    def detail(self) -> str:
        """The message with its location, e.g. "term 2 at position 17: unknown operator ..."."""
        where = []
        if self.term_index is not None:
            where.append(f"term {self.term_index}")
        if self.position is not None:
            where.append(f"at position {self.position}")
        return f"{' '.join(where)}: {self.message}" if where else self.message

    def violation(self) -> tuple[str, str]:
        """(field, description) for a google.rpc.BadRequest field violation."""
        return (self.parameter, self.detail)


class InvalidCursor(QueryError):
    """A page marker that cannot be used. Subclasses say why, so a caller can apply the
    compatibility rule (ignore an unusable marker when the whole result fits in one page)
    to some kinds and not others."""

    reason: ClassVar[str] = "INVALID_PAGE_MARKER"


class UnrecognizedCursor(InvalidCursor):
    """Not a marker this server issued: malformed, forged or signed with another secret
    (the conformance tests' `nextpage_opaque_marker=2` lands here)."""


class ExpiredCursor(InvalidCursor):
    """A genuine marker, too old (or issued in the future beyond the clock-skew margin)."""


class CursorQueryMismatch(InvalidCursor):
    """A genuine marker issued for another query (filter, selectors or collection)."""
