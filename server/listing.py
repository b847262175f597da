"""Every list RPC runs its SOL013 query (filter, selectors, paging) through here.

The query engine (server.query) works on wire messages; this module adapts it to RPCs:
the request's query fields become a ListQuery, a QueryError becomes INVALID_ARGUMENT
with a google.rpc.BadRequest violation (REST 400), and the page token travels both in the
response message (gRPC) and in a response header the REST shaper turns into
`Link: <...>; rel="next"`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

import grpc
import structlog
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from netweave.protowire import tag, varint
from server.errors import InvalidArgument
from server.query import (
    CompiledQuery,
    ListQuery,
    Page,
    QueryError,
    compile_query,
    framed_size,
    parse_selection,
    seek,
)

log = structlog.get_logger()

# Internal response headers (stripped from REST responses by the shaper).
COLLECTION_HEADER: Final = "x-o2ims-collection"
NEXT_PAGE_HEADER: Final = "x-o2ims-next-page-token"

Response = TypeVar("Response")
Selected = TypeVar("Selected", bound=Message)
# Given ids in order, yields (id, object) for those that exist, in the same order.
Fetch = Callable[[Sequence[str]], Iterable[tuple[str, Any]]]


def from_mapping(objects: Mapping[str, Any]) -> Fetch:
    """A Fetch over objects already in memory."""

    def fetch(ids: Sequence[str]) -> Iterator[tuple[str, Any]]:
        return ((oid, objects[oid]) for oid in ids if oid in objects)

    return fetch


@dataclass(frozen=True)
class ListingSettings:
    """Paging configuration shared by every list."""

    # Signs page markers; every replica must use the same one.
    secret: bytes
    # Large enough that an ordinary inventory fits in one page.
    page_size: int = 1000
    # A page also ends before the object that would take its serialized (protobuf) size
    # past this, so a page of large objects still fits Envoy's transcoding buffer
    # (`max_response_body_size`: 4 MiB, of the proto in and of the JSON out) and gRPC
    # clients' default 4 MiB receive limit. Envoy's JSON measured 1.003x the proto bytes
    # for a page of 45 KB text descriptions and ~1.5x for small objects; strings escape
    # to 2x (quotes, backslashes, U+2028) and 6x (`<`, `>`, control characters, each
    # \u00XX). 2 MiB fits any page averaging up to 2x; content that escapes more needs a
    # lower NETWEAVE_PAGE_MAX_BYTES (680 KiB fits text that all escapes 6x). One object
    # over the budget still makes a page of its own (see Lister.page).
    page_max_bytes: int = 2 * 1024 * 1024
    marker_max_age_s: float = 3600.0
    previous_secrets: tuple[bytes, ...] = field(default_factory=tuple)
    # Answer lists with SerializedList, not a response message: the servicers must be
    # registered with netweave.grpc_server.add_servicer (the core's are).
    serialized_lists: bool = False

    def __post_init__(self) -> None:
        if self.page_size < 1 or self.page_max_bytes < 1:
            raise ValueError(
                "NETWEAVE_PAGE_SIZE and NETWEAVE_PAGE_MAX_BYTES must be positive, got "
                f"{self.page_size} and {self.page_max_bytes}"
            )


def list_query(request: Any) -> ListQuery:
    """The SOL013 parameters of a List request (absent parameters as None)."""
    return ListQuery(
        filters=tuple(request.filter),
        all_fields=True if request.all_fields else None,
        fields=request.fields or None,
        exclude_fields=request.exclude_fields or None,
        exclude_default=True if request.exclude_default else None,
        marker=request.nextpage_opaque_marker or None,
    )


def invalid_query(error: QueryError) -> InvalidArgument:
    return InvalidArgument(error.reason, [error.violation()])


def select(request: Any, message: Selected) -> Selected:
    """`message` as the SOL013 attribute selectors of a Get `request` ask for."""
    if not (
        request.all_fields or request.fields or request.exclude_fields or request.exclude_default
    ):
        return message  # no selector (nearly every read): the whole object, as parsed below
    try:
        selection = parse_selection(
            True if request.all_fields else None,
            request.fields or None,
            request.exclude_fields or None,
            True if request.exclude_default else None,
            cast(Descriptor, message.DESCRIPTOR),
        )
    except QueryError as error:
        raise invalid_query(error) from error
    return selection.apply(message)


class Lister:
    """Compiles and runs list queries with one ListingSettings."""

    def __init__(self, settings: ListingSettings) -> None:
        self.settings = settings

    def compile(
        self,
        request: Any,
        descriptor: Descriptor,
        scope: str,
        aliases: Mapping[str, str] | None = None,
    ) -> CompiledQuery:
        try:
            return compile_query(
                list_query(request),
                descriptor,
                aliases,
                secret=self.settings.secret,
                scope=scope,
                default_page_size=self.settings.page_size,
                max_page_size=self.settings.page_size,
                max_page_bytes=self.settings.page_max_bytes,
                marker_max_age_s=self.settings.marker_max_age_s,
                previous_secrets=self.settings.previous_secrets,
            )
        except QueryError as error:
            raise invalid_query(error) from error

    def page(self, query: CompiledQuery, ordered_ids: Sequence[str], fetch: Fetch) -> Page:
        """Run `query` over the objects whose ids are `ordered_ids` (sorted)."""

        def source(after_key: str | None) -> Iterable[tuple[str, Any]]:
            return fetch(ordered_ids[seek(ordered_ids, after_key) :])

        try:
            page = query.page(source)
        except QueryError as error:
            raise invalid_query(error) from error
        if len(page.items) == 1:
            # An object over the budget is still served, alone (a walk never stalls); but
            # REST fails (Envoy 500) once its JSON passes Envoy's 4 MiB buffer, and gRPC
            # clients need a larger receive limit past 4 MiB. Worth an operator's look.
            size = framed_size(page.items[0])
            if size > self.settings.page_max_bytes:
                log.warning(
                    "list_object_over_page_budget",
                    bytes=size,
                    page_max_bytes=self.settings.page_max_bytes,
                )
        return page

    def respond(
        self,
        context: grpc.ServicerContext,
        request: Any,
        response_type: type[Response],
        field: str,
        *,
        scope: str,
        ids: Sequence[str] | Callable[[CompiledQuery], Sequence[str]],
        fetch: Fetch,
        aliases: Mapping[str, str] | None = None,
    ) -> Response:
        """The whole list RPC: compile the request's query against the type of the
        collection `field` of `response_type`, page it over `ids` (sorted; or a function
        of the compiled query, for index lookups), and build the response."""
        collection = cast(Any, response_type).DESCRIPTOR.fields_by_name[field]
        query = self.compile(request, collection.message_type, scope, aliases)
        ordered = ids(query) if callable(ids) else ids
        page = self.page(query, ordered, fetch)
        send_list_headers(context, collection.json_name, page)
        if self.settings.serialized_lists:
            # In the message's place: gRPC only serializes it, and the generated servicer
            # signatures the List methods implement name the message.
            return cast(Response, SerializedList.of(response_type, collection, page))
        return response_type(next_page_token=page.next_page_token, **{field: page.items})  # type: ignore[call-arg]

    def respond_in_memory(
        self,
        context: grpc.ServicerContext,
        request: Any,
        response_type: type[Response],
        field: str,
        *,
        scope: str,
        objects: Mapping[str, Any],
        aliases: Mapping[str, str] | None = None,
    ) -> Response:
        """`respond` over a collection already in memory, paged in its keys' order."""
        return self.respond(
            context,
            request,
            response_type,
            field,
            scope=scope,
            ids=sorted(objects),
            fetch=from_mapping(objects),
            aliases=aliases,
        )


class SerializedList:
    """A list response as the bytes protobuf writes for it (its fields in number order:
    the page token, then the items; map entries in the order each item's own serialization
    gives, which protobuf leaves open), written from the page's messages without copying
    them into a response message first: building and serializing a page of 1,000 memoized
    resources took 3.4 ms as a message (2.3 of them copying), 1.9 written
    (docs/performance.md "List responses written, not copied").
    gRPC sends SerializeToString(), through netweave.grpc_server.serialize_response."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    @classmethod
    def of(
        cls, response_type: type[Any], collection: FieldDescriptor, page: Page
    ) -> SerializedList:
        token_field = response_type.DESCRIPTOR.fields_by_name["next_page_token"]
        token = page.next_page_token.encode()
        token_part = tag(token_field.number) + varint(len(token)) + token if token else b""
        item_tag = tag(collection.number)
        parts = [token_part] if token_field.number < collection.number else []
        for item in page.items:
            data = item.SerializeToString()
            parts += (item_tag, varint(len(data)), data)
        if token_field.number > collection.number:
            parts.append(token_part)
        return cls(b"".join(parts))

    def SerializeToString(self) -> bytes:  # protobuf's name: what gRPC's serializer calls
        return self._data


def send_list_headers(context: grpc.ServicerContext, collection: str, page: Page) -> None:
    """Initial metadata of a list response: the collection (for the REST shaper's bare
    array) and the next page's marker (for its Link header)."""
    metadata = [(COLLECTION_HEADER, collection)]
    if page.next_page_token:
        metadata.append((NEXT_PAGE_HEADER, page.next_page_token))
    context.send_initial_metadata(tuple(metadata))
