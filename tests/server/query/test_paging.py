"""Signed keyset page markers: forgery, tampering, expiry and replay are refused, and a
walk through pages stays exact while objects come and go between requests."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest

from server.query import (
    CursorQueryMismatch,
    ExpiredCursor,
    InvalidCursor,
    PageCursor,
    QueryError,
    UnrecognizedCursor,
    decode_cursor,
    encode_cursor,
    paginate,
    query_fingerprint,
    seek,
)

SECRET = b"s" * 32
QUERY = query_fingerprint("v1/resources", "(eq,name,x)", "")
NOW = 1_700_000_000.0


def token(after_key: str = "id-0042", secret: bytes = SECRET, now: float = NOW) -> str:
    return encode_cursor(after_key, QUERY, secret, now=now)


def decode(marker: str, now: float = NOW) -> PageCursor:
    return decode_cursor(marker, SECRET, QUERY, 3600, now=now)


def test_a_marker_round_trips() -> None:
    cursor = decode_cursor(token(), SECRET, QUERY, 3600, now=NOW + 10)
    assert (cursor.after_key, cursor.fingerprint, cursor.issued_at) == ("id-0042", QUERY, NOW)


def test_markers_are_url_and_link_header_safe() -> None:
    for key in ("", "id", 'ü/[x]"', "k" * 100):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token(key))


@pytest.mark.parametrize(
    "marker",
    ["2", "", "not a marker", "AAAA", "=" * 8, "x" * 5000, "[]", token()[:-1], token()[1:]],
)
def test_foreign_or_malformed_markers_are_unrecognized(marker: str) -> None:
    with pytest.raises(UnrecognizedCursor) as caught:
        decode(marker)
    assert caught.value.violation() == (
        "nextpage_opaque_marker",
        "not a page marker issued by this server",
    )


def test_every_single_character_change_is_detected() -> None:
    genuine = token()
    alphabet = "AQgw_-"
    for index in range(len(genuine)):
        for replacement in alphabet:
            if replacement == genuine[index]:
                continue
            forged = genuine[:index] + replacement + genuine[index + 1 :]
            with pytest.raises(UnrecognizedCursor):
                decode(forged)


def test_a_marker_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(UnrecognizedCursor):
        decode(token(secret=b"other"))


def test_previous_secrets_keep_walks_alive_across_rotation() -> None:
    old = token(secret=b"old")
    cursor = decode_cursor(old, SECRET, QUERY, 3600, previous_secrets=[b"old"], now=NOW)
    assert cursor.after_key == "id-0042"


def test_a_marker_for_another_query_is_refused() -> None:
    other = query_fingerprint("v1/resources", "(eq,name,y)", "")
    with pytest.raises(CursorQueryMismatch, match="another query"):
        decode_cursor(token(), SECRET, other, 3600, now=NOW)


def test_old_markers_expire() -> None:
    decode(token(), now=NOW + 3600)
    with pytest.raises(ExpiredCursor, match="expired"):
        decode(token(), now=NOW + 3601)


def test_markers_from_the_future_beyond_clock_skew_are_refused() -> None:
    decode(token(now=NOW + 30))
    with pytest.raises(ExpiredCursor):
        decode(token(now=NOW + 3600))


def test_every_marker_failure_is_a_query_error() -> None:
    for kind in (UnrecognizedCursor, CursorQueryMismatch, ExpiredCursor):
        assert issubclass(kind, InvalidCursor) and issubclass(kind, QueryError)


# --- paginate ---------------------------------------------------------------------------


def test_pages_cover_the_items_in_key_order() -> None:
    items = [(f"k{n:02d}", n) for n in range(10)]
    assert paginate(items, None, 4) == ([0, 1, 2, 3], "k03")
    assert paginate(items, "k03", 4) == ([4, 5, 6, 7], "k07")
    assert paginate(items, "k07", 4) == ([8, 9], None)


def test_an_exactly_full_last_page_has_no_next_key() -> None:
    items = [(f"k{n}", n) for n in range(4)]
    assert paginate(items, None, 4) == ([0, 1, 2, 3], None)
    assert paginate([], None, 4) == ([], None)


def test_paginate_reads_at_most_one_item_past_the_page() -> None:
    consumed = []

    def items() -> Iterator[tuple[str, int]]:
        for n in range(1000):
            consumed.append(n)
            yield f"k{n:04d}", n

    paginate(items(), None, 10)
    assert len(consumed) == 11


def test_seek_starts_strictly_after_the_key() -> None:
    keys = ["a", "c", "e"]
    assert [seek(keys, k) for k in (None, "a", "b", "e", "z")] == [0, 1, 1, 3, 3]


@pytest.mark.parametrize("seed", range(20))
def test_walking_while_objects_come_and_go_returns_survivors_exactly_once(seed: int) -> None:
    rng = random.Random(seed)
    live = {f"id-{rng.randrange(10**6):06d}" for _ in range(rng.randrange(0, 120))}
    initial = set(live)
    deleted: set[str] = set()
    served: list[str] = []
    marker: str | None = None
    page_size = rng.randrange(1, 15)
    for _ in range(1000):
        after = None if marker is None else decode_cursor(marker, SECRET, QUERY, 60).after_key
        keys = sorted(live)
        page, next_key = paginate(((k, k) for k in keys[seek(keys, after) :]), after, page_size)
        assert all(key in live for key in page)
        served.extend(page)
        if next_key is None:
            break
        marker = encode_cursor(next_key, QUERY, SECRET)
        # Between two requests: some objects appear, some disappear.
        for _ in range(rng.randrange(0, 6)):
            live.add(f"id-{rng.randrange(10**6):06d}")
        for key in rng.sample(sorted(live), min(len(live), rng.randrange(0, 4))):
            live.discard(key)
            deleted.add(key)
    assert len(served) == len(set(served)), "no duplicates"
    assert served == sorted(served)
    survivors = initial - deleted
    assert survivors <= set(served), "every object present throughout is served"
