"""One query engine for every O2ims list: SOL013 filter, attribute selectors, paging.

Objects are protobuf wire messages; attributes are named by their JSON names, exactly
what REST clients see. Typical use in a servicer:

    query = compile_query(ListQuery(filters=..., fields=..., marker=...),
                          ResourceInfo.DESCRIPTOR, secret=key, scope="v1/resources@" + pool)
    page = query.page(lambda after: ((i, get(i)) for i in ids[seek(ids, after):]))

Every failure is a QueryError: map it once with
`InvalidArgument(error.reason, [error.violation()])` (google.rpc.BadRequest `field` =
the query parameter, `description` = what is wrong and where).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message as ProtoMessage

from server.query.errors import (
    CursorQueryMismatch,
    ExpiredCursor,
    InvalidCursor,
    QueryError,
    UnrecognizedCursor,
)
from server.query.evaluate import JsonPrefilter, index_key, json_getter, json_key, json_value
from server.query.filter import BoundFilter, Filter, Term, combine, parse_filter
from server.query.paging import (
    MARKER_PARAMETER,
    PageCursor,
    decode_cursor,
    encode_cursor,
    framed_size,
    paginate,
    query_fingerprint,
    seek,
)
from server.query.selectors import Selection, SelectorSchema, parse_selection

__all__ = [
    "BoundFilter",
    "CompiledQuery",
    "CursorQueryMismatch",
    "ExpiredCursor",
    "Filter",
    "InvalidCursor",
    "JsonPrefilter",
    "ListQuery",
    "Page",
    "PageCursor",
    "QueryError",
    "Selection",
    "SelectorSchema",
    "Term",
    "UnrecognizedCursor",
    "combine",
    "compile_query",
    "decode_cursor",
    "encode_cursor",
    "framed_size",
    "index_key",
    "json_getter",
    "json_key",
    "json_value",
    "paginate",
    "parse_filter",
    "parse_selection",
    "query_fingerprint",
    "seek",
]

Message = TypeVar("Message", bound=ProtoMessage)
# Yields (key, object) in ascending key order, starting strictly after the given key.
Source = Callable[[str | None], Iterable[tuple[str, Any]]]


@dataclass(frozen=True)
class ListQuery:
    """The raw query parameters of one list request (None = parameter absent)."""

    filters: Sequence[str] = ()
    all_fields: bool | str | None = None
    fields: str | None = None
    exclude_fields: str | None = None
    exclude_default: bool | str | None = None
    marker: str | None = None
    # None or 0: the server's default page size.
    page_size: int | None = None


@dataclass(frozen=True)
class Page:
    """One page of selected objects; `next_page_token` is "" on the last page."""

    items: list[Any]
    next_page_token: str


class CompiledQuery:
    """A list query bound to one message type and collection, ready to run."""

    def __init__(
        self,
        *,
        bound_filter: BoundFilter,
        selection: Selection,
        fingerprint: bytes,
        page_size: int | None,
        max_page_bytes: int | None,
        cursor: PageCursor | None,
        marker_error: InvalidCursor | None,
        issue_marker: Callable[[str], str],
    ) -> None:
        self.filter = bound_filter
        # True if a message passes the filter (the compiled function itself).
        self.matches = bound_filter.matches
        self.selection = selection
        self.fingerprint = fingerprint
        self.page_size = page_size
        # Serialized bytes (framed_size) of the selected objects of one page.
        self.max_page_bytes = max_page_bytes
        self.after_key = cursor.after_key if cursor is not None else None
        self.marker_error = marker_error
        self._issue_marker = issue_marker

    def select(self, message: Message) -> Message:
        """`message` as the selectors ask for (the same object if nothing is removed)."""
        return self.selection.apply(message)

    def equality_candidates(self, attribute: str) -> set[str] | None:
        """See BoundFilter.equality_candidates."""
        return self.filter.equality_candidates(attribute)

    def json_prefilters(self) -> list[tuple[tuple[str, ...], JsonPrefilter]]:
        """See BoundFilter.json_prefilters."""
        return self.filter.json_prefilters()

    def page(self, source: Source) -> Page:
        """Filter, page and select. `source(after_key)` yields (key, object) pairs in key
        order after `after_key` (None: from the start).

        Marker compatibility rule: an unusable marker (e.g. the conformance tests'
        `nextpage_opaque_marker=2`) is ignored when the whole result fits in one page, and
        raised (a QueryError, 400) only when it would matter.
        """
        if self.marker_error is not None:
            items, next_key = self._run(source, None)
            if next_key is not None:
                raise self.marker_error
        else:
            items, next_key = self._run(source, self.after_key)
        token = self._issue_marker(next_key) if next_key is not None else ""
        return Page(items, token)

    def _run(self, source: Source, after_key: str | None) -> tuple[list[Any], str | None]:
        match, select = self.matches, self.selection.apply
        # Selected before paging: the byte budget counts what is actually sent.
        selected = ((key, select(item)) for key, item in source(after_key) if match(item))
        if self.page_size is None and self.max_page_bytes is None:
            return [item for _, item in selected], None
        return paginate(
            selected,
            after_key,
            self.page_size or sys.maxsize,
            max_bytes=self.max_page_bytes,
            size=None if self.max_page_bytes is None else framed_size,
        )


def compile_query(
    list_query: ListQuery,
    descriptor: Descriptor,
    aliases: Mapping[str, str] | None = None,
    *,
    secret: bytes,
    scope: str,
    selector_schema: SelectorSchema | None = None,
    default_page_size: int | None = None,
    max_page_size: int | None = None,
    max_page_bytes: int | None = None,
    marker_max_age_s: float = 3600.0,
    previous_secrets: Sequence[bytes] = (),
    clock: Callable[[], float] = time.time,
) -> CompiledQuery:
    """Parse, validate and bind every query parameter. Raises QueryError.

    `scope` names the collection (e.g. "v1/resources@<poolId>") so a marker cannot be
    replayed on another one. `default_page_size` None disables paging (the whole result
    in one response) unless the request sets a page size; `max_page_size` caps it.
    `max_page_bytes` also ends a page early, before the object that would take its
    serialized size past it (always at least one object per page; see paginate).
    """
    parsed = [parse_filter(text, occurrence=n) for n, text in enumerate(list_query.filters, 1)]
    bound = combine(parsed).bind(descriptor, aliases)
    selection = parse_selection(
        list_query.all_fields,
        list_query.fields,
        list_query.exclude_fields,
        list_query.exclude_default,
        selector_schema or descriptor,
        aliases=aliases,
    )
    fingerprint = query_fingerprint(scope, str(bound), selection.canonical)
    page_size = list_query.page_size or default_page_size
    if page_size is not None and page_size < 0:
        raise QueryError("page_size", f"must be positive, got {page_size}")
    if page_size is not None and max_page_size is not None:
        page_size = min(page_size, max_page_size)
    cursor, marker_error = None, None
    if list_query.marker:
        try:
            cursor = decode_cursor(
                list_query.marker,
                secret,
                fingerprint,
                marker_max_age_s,
                previous_secrets=previous_secrets,
                now=clock(),
                parameter=MARKER_PARAMETER,
            )
        except InvalidCursor as error:
            marker_error = error
    return CompiledQuery(
        bound_filter=bound,
        selection=selection,
        fingerprint=fingerprint,
        page_size=page_size,
        max_page_bytes=max_page_bytes,
        cursor=cursor,
        marker_error=marker_error,
        issue_marker=lambda key: encode_cursor(key, fingerprint, secret, now=clock()),
    )
