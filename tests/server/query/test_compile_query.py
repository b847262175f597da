"""The facade the servicers use: one compiled query filters, pages and selects, with
the marker compatibility rule and one error type for every bad parameter."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from o2ims.inventory.v1 import inventory_pb2 as inv

from server.query import (
    CompiledQuery,
    CursorQueryMismatch,
    ListQuery,
    QueryError,
    UnrecognizedCursor,
    compile_query,
    index_key,
    seek,
)

SECRET = b"k" * 32
DESCRIPTOR = inv.ResourceInfo.DESCRIPTOR
POOLS = ["0b4a1f3e-5c2d-4e6f-8a9b-0c1d2e3f4a5b", "1c4a1f3e-5c2d-4e6f-8a9b-0c1d2e3f4a5b"]
RESOURCES = {
    f"r{n:03d}": inv.ResourceInfo(
        resource_id=f"r{n:03d}",
        resource_pool_id=POOLS[n % 2],
        name="even" if n % 2 == 0 else "odd",
    )
    for n in range(40)
}
IDS = sorted(RESOURCES)
for resource in RESOURCES.values():
    resource.extensions.update({"rack": "R1"})


def source(after: str | None) -> Iterable[tuple[str, inv.ResourceInfo]]:
    return ((key, RESOURCES[key]) for key in IDS[seek(IDS, after) :])


def compiled(scope: str = "v1/resources", **parameters: Any) -> CompiledQuery:
    return compile_query(ListQuery(**parameters), DESCRIPTOR, secret=SECRET, scope=scope)


def walk(**parameters: Any) -> list[list[inv.ResourceInfo]]:
    pages, marker = [], None
    while True:
        page = compiled(marker=marker, **parameters).page(source)
        pages.append(page.items)
        if not page.next_page_token:
            return pages
        marker = page.next_page_token


def test_a_walk_filters_pages_and_selects() -> None:
    pages = walk(filters=["(eq,name,even)"], exclude_default="", page_size=7)
    assert [len(p) for p in pages] == [7, 7, 6]
    items = [item for page in pages for item in page]
    assert [i.resource_id for i in items] == IDS[::2]
    assert not any(i.HasField("extensions") for i in items)
    assert all(RESOURCES[i.resource_id].HasField("extensions") for i in items)


def test_without_a_page_size_paging_is_off() -> None:
    (page,) = walk()
    assert len(page) == 40


def test_max_page_size_caps_the_request() -> None:
    query = compile_query(
        ListQuery(page_size=1000), DESCRIPTOR, secret=SECRET, scope="s", max_page_size=5
    )
    assert len(query.page(source).items) == 5


def test_unusable_marker_is_ignored_when_everything_fits_in_one_page() -> None:
    # ITT 7.3.5: nextpage_opaque_marker=2 must answer 200 with the items.
    assert len(compiled(marker="2").page(source).items) == 40
    assert len(compiled(marker="2", page_size=50).page(source).items) == 40


def test_unusable_marker_is_an_error_when_paging_matters() -> None:
    with pytest.raises(UnrecognizedCursor):
        compiled(marker="2", page_size=10).page(source)


def test_a_marker_cannot_be_replayed_on_another_query_or_collection() -> None:
    marker = compiled(filters=["(eq,name,even)"], page_size=5).page(source).next_page_token
    for other in (
        compiled(filters=["(eq,name,odd)"], marker=marker, page_size=5),
        compiled(filters=["(eq,name,even)"], marker=marker, page_size=5, fields="extensions"),
        compiled("v1/resources@pool", filters=["(eq,name,even)"], marker=marker, page_size=5),
    ):
        with pytest.raises(CursorQueryMismatch):
            other.page(source)


def test_equivalent_spellings_share_a_fingerprint() -> None:
    one = compiled(filters=["(eq,name,'even')", "(eq,resourcePoolId,x)"], fields="extensions")
    two = compiled(filters=["(eq,name,even);(eq,resourcePoolId,x)"], fields=" extensions")
    assert one.fingerprint == two.fingerprint


def test_equality_candidates_let_an_index_replace_the_scan() -> None:
    index: dict[str, list[str]] = {}
    for key in IDS:
        index.setdefault(index_key(RESOURCES[key].resource_pool_id), []).append(key)
    query = compiled(filters=[f"(eq,resourcePoolId,{POOLS[1].upper()})"])
    candidates = query.equality_candidates("resourcePoolId")
    assert candidates is not None
    ids = sorted(key for value in candidates for key in index.get(value, []))
    page = query.page(lambda after: ((k, RESOURCES[k]) for k in ids[seek(ids, after) :]))
    assert [i.resource_id for i in page.items] == IDS[1::2]


@pytest.mark.parametrize(
    ("parameters", "violation"),
    [
        (
            {"filters": ["(eq,WrongAttrName,anyvalue)"]},
            ("filter", "term 1 at position 5: unknown attribute 'WrongAttrName'"),
        ),
        (
            {"fields": "(xId,WrongAttrName)"},
            ("fields", "at position 1: unknown attribute '(xId'"),
        ),
        ({"page_size": -1}, ("page_size", "must be positive, got -1")),
    ],
)
def test_bad_parameters_raise_one_query_error_naming_the_parameter(
    parameters: dict[str, Any], violation: tuple[str, str]
) -> None:
    with pytest.raises(QueryError) as caught:
        compiled(**parameters)
    assert caught.value.violation() == violation
