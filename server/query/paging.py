"""Keyset paging with opaque, signed page markers (SOL013 `nextpage_opaque_marker`).

A page marker carries the key of the last item served (lists are ordered by a stable
key, the object id), a fingerprint of the query it belongs to and its issue time. It is
HMAC-SHA256 signed with a server secret and base64url encoded (no padding, so no "=",
and never "[", "]" or '"', which would need escaping in a Link header).

Keyset rather than offset paging: the next page starts strictly after the last key
served, so objects created or deleted between two requests never cause a duplicate,
and every object present throughout the walk is returned exactly once.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import re
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from google.protobuf.message import Message

from server.query.errors import CursorQueryMismatch, ExpiredCursor, UnrecognizedCursor

Item = TypeVar("Item")

MARKER_PARAMETER: Final = "nextpage_opaque_marker"
_VERSION: Final = 1
# version, issue time (Unix seconds), query fingerprint; the item key follows.
_HEADER: Final = struct.Struct(">BQ16s")
_TAG_SIZE: Final = 32
FINGERPRINT_SIZE: Final = 16
# Anything longer was not issued by us (keys are ids); refuse before doing any work.
_MAX_TOKEN_LENGTH: Final = 1024
# Replicas' clocks may disagree a little; a marker from a few seconds "in the future"
# is still genuine.
_CLOCK_SKEW_S: Final = 60
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class PageCursor:
    """The decoded content of a page marker."""

    after_key: str
    fingerprint: bytes
    issued_at: int


def query_fingerprint(*parts: str) -> bytes:
    """A fixed-size digest of the query text parts (scope, filter, selection, ...)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return digest[:FINGERPRINT_SIZE]


def _tag(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


def encode_cursor(
    after_key: str, fingerprint: bytes, secret: bytes, *, now: float | None = None
) -> str:
    """A signed marker for the page after `after_key` of the query `fingerprint`."""
    if len(fingerprint) != FINGERPRINT_SIZE:
        raise ValueError(f"a fingerprint has {FINGERPRINT_SIZE} bytes")
    issued = int(time.time() if now is None else now)
    payload = _HEADER.pack(_VERSION, issued, fingerprint) + after_key.encode()
    token = payload + _tag(secret, payload)
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")


def decode_cursor(
    token: str,
    secret: bytes,
    fingerprint: bytes,
    max_age_s: float,
    *,
    previous_secrets: Sequence[bytes] = (),
    now: float | None = None,
    parameter: str = MARKER_PARAMETER,
) -> PageCursor:
    """Verify and decode a marker issued by encode_cursor.

    Raises UnrecognizedCursor (malformed, forged or signed with an unknown secret),
    CursorQueryMismatch (issued for another query) or ExpiredCursor (older than
    `max_age_s`); all are InvalidCursor, a QueryError. `previous_secrets` are still
    accepted, so the signing secret can be rotated without breaking walks in progress.
    """
    unrecognized = UnrecognizedCursor(parameter, "not a page marker issued by this server")
    if len(token) > _MAX_TOKEN_LENGTH or not _BASE64URL.fullmatch(token) or len(token) % 4 == 1:
        raise unrecognized
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    # One token per marker: reject spellings that differ only in unused trailing bits.
    canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if canonical != token or len(raw) < _HEADER.size + _TAG_SIZE:
        raise unrecognized
    payload, tag = raw[:-_TAG_SIZE], raw[-_TAG_SIZE:]
    if not any(hmac.compare_digest(tag, _tag(key, payload)) for key in (secret, *previous_secrets)):
        raise unrecognized
    version, issued, marked_query = _HEADER.unpack_from(payload)
    try:
        after_key = payload[_HEADER.size :].decode()
    except UnicodeDecodeError:
        raise unrecognized from None
    if version != _VERSION:
        raise unrecognized
    if not hmac.compare_digest(marked_query, fingerprint):
        raise CursorQueryMismatch(
            parameter,
            "the marker belongs to another query: repeat the filter and selectors of the "
            "request that returned it",
        )
    age = (time.time() if now is None else now) - issued
    if age > max_age_s or age < -_CLOCK_SKEW_S:
        raise ExpiredCursor(parameter, "the marker has expired: start again from the first page")
    return PageCursor(after_key, marked_query, issued)


def seek(sorted_keys: Sequence[str], after_key: str | None) -> int:
    """The index of the first key strictly after `after_key` (0 for None)."""
    return 0 if after_key is None else bisect.bisect_right(sorted_keys, after_key)


def framed_size(message: Message) -> int:
    """The bytes `message` adds to a repeated field of a serialized response: a one-byte
    tag (field numbers below 16, as every list response's collection is), its length as
    a varint, and the message itself. Costs one ByteSize(), about 0.4 us for a typical
    resource."""
    size = message.ByteSize()
    return 1 + max(1, (size.bit_length() + 6) // 7) + size


def paginate(
    items: Iterable[tuple[str, Item]],
    after_key: str | None,
    page_size: int,
    *,
    max_bytes: int | None = None,
    size: Callable[[Item], int] | None = None,
) -> tuple[list[Item], str | None]:
    """One page of `items` ((key, item) pairs in ascending key order): up to
    `page_size` items with a key after `after_key`, and the key to continue after, or
    None when nothing follows. Consumes at most one item past the page, so a lazily
    filtered iterable is scanned only as far as needed.

    With `max_bytes`, the page also ends before the item that would take the total
    `size` of its items past `max_bytes`; the first item is always taken, so one item
    larger than the budget makes a page of its own and a walk never stalls. The key to
    continue after is the last one returned, exactly as for a page ended by count.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    if (max_bytes is None) != (size is None):
        raise ValueError("max_bytes and size go together")
    page: list[Item] = []
    last_key: str | None = None
    total = 0
    for key, item in items:
        if after_key is not None and key <= after_key:
            continue
        if len(page) == page_size:
            return page, last_key
        if max_bytes is not None and size is not None:
            total += size(item)
            if total > max_bytes and page:
                return page, last_key
        page.append(item)
        last_key = key
    return page, None
