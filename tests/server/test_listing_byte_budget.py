"""A list page is bounded in serialized bytes as well as in items: it ends before the
object that would take it past the budget, the marker continues after the last object
returned, and a walk returns every object exactly once, an oversized one alone."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from o2ims.inventory.v1 import inventory_pb2 as inv

from server.listing import NEXT_PAGE_HEADER, Lister, ListingSettings
from server.query import framed_size, paginate

POOL = "0b4a1f3e-5c2d-4e6f-8a9b-0c1d2e3f4a5b"


class RecordingContext:
    """The part of grpc.ServicerContext a successful list uses."""

    def __init__(self) -> None:
        self.initial_metadata: tuple[tuple[str, str], ...] = ()

    def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.initial_metadata = metadata


def resource(number: int, description_bytes: int) -> inv.ResourceInfo:
    return inv.ResourceInfo(
        resource_id=f"r{number:04d}",
        resource_pool_id=POOL,
        name=f"host-{number}",
        description="d" * description_bytes,
    )


def list_page(
    lister: Lister, objects: dict[str, inv.ResourceInfo], marker: str = "", **query: Any
) -> tuple[inv.ListResourcesResponse, RecordingContext]:
    context = RecordingContext()
    request = inv.ListResourcesRequest(
        resource_pool_id=POOL, nextpage_opaque_marker=marker, **query
    )
    response = lister.respond_in_memory(
        context,
        request,
        inv.ListResourcesResponse,
        "resources",
        scope="test/resources",
        objects=objects,
    )
    return response, context


def walk(
    lister: Lister, objects: dict[str, inv.ResourceInfo], **query: Any
) -> list[inv.ListResourcesResponse]:
    pages, marker = [], ""
    while True:
        response, context = list_page(lister, objects, marker, **query)
        pages.append(response)
        # The REST Link header and the gRPC field carry the same marker.
        assert dict(context.initial_metadata).get(NEXT_PAGE_HEADER, "") == (
            response.next_page_token
        )
        if not response.next_page_token:
            return pages
        marker = response.next_page_token
        assert len(pages) <= len(objects), "the walk does not end"


def ids(pages: list[inv.ListResourcesResponse]) -> list[list[str]]:
    return [[r.resource_id for r in page.resources] for page in pages]


def test_a_byte_budget_ends_pages_before_the_object_that_would_exceed_it() -> None:
    objects = {r.resource_id: r for r in (resource(n, 1000) for n in range(10))}
    item_bytes = framed_size(objects["r0000"])
    # Room for three objects and most of a fourth.
    lister = Lister(ListingSettings(secret=b"k", page_size=100, page_max_bytes=4 * item_bytes - 1))

    pages = walk(lister, objects)

    assert ids(pages) == [
        ["r0000", "r0001", "r0002"],
        ["r0003", "r0004", "r0005"],
        ["r0006", "r0007", "r0008"],
        ["r0009"],
    ]
    for page in pages:
        assert sum(framed_size(r) for r in page.resources) <= lister.settings.page_max_bytes


def test_a_budget_exactly_met_still_takes_the_object() -> None:
    objects = {r.resource_id: r for r in (resource(n, 500) for n in range(4))}
    budget = 2 * framed_size(objects["r0000"])
    lister = Lister(ListingSettings(secret=b"k", page_size=100, page_max_bytes=budget))

    assert ids(walk(lister, objects)) == [["r0000", "r0001"], ["r0002", "r0003"]]


def test_the_item_count_still_bounds_pages_of_small_objects() -> None:
    objects = {r.resource_id: r for r in (resource(n, 10) for n in range(7))}
    lister = Lister(ListingSettings(secret=b"k", page_size=3, page_max_bytes=2**20))

    assert [len(page) for page in ids(walk(lister, objects))] == [3, 3, 1]


def test_an_object_larger_than_the_budget_comes_alone_and_the_walk_goes_on() -> None:
    sizes = [100, 100, 50_000, 100, 100]
    objects = {r.resource_id: r for r in (resource(n, size) for n, size in enumerate(sizes))}
    lister = Lister(ListingSettings(secret=b"k", page_size=100, page_max_bytes=10_000))

    assert ids(walk(lister, objects)) == [["r0000", "r0001"], ["r0002"], ["r0003", "r0004"]]


def test_an_oversized_first_object_comes_alone() -> None:
    objects = {r.resource_id: r for r in (resource(n, 50_000 if n == 0 else 10) for n in range(3))}
    lister = Lister(ListingSettings(secret=b"k", page_size=100, page_max_bytes=10_000))

    assert ids(walk(lister, objects)) == [["r0000"], ["r0001", "r0002"]]


def test_the_budget_counts_the_selected_objects_not_the_stored_ones() -> None:
    objects = {r.resource_id: r for r in (resource(n, 5000) for n in range(20))}
    for stored in objects.values():
        stored.extensions.update({"blob": "x" * 5000})
    # Either part alone fills half the budget: whole objects come two to a page.
    lister = Lister(ListingSettings(secret=b"k", page_size=100, page_max_bytes=21_000))

    assert [len(page) for page in ids(walk(lister, objects))] == [2] * 10
    # Without the complex `extensions`, four fit.
    assert [len(page) for page in ids(walk(lister, objects, exclude_default=True))] == [4] * 5


@pytest.mark.parametrize("seed", range(5))
def test_a_walk_under_a_byte_budget_returns_every_object_exactly_once(seed: int) -> None:
    rng = random.Random(seed)
    objects = {
        r.resource_id: r
        for r in (resource(n, rng.choice([10, 300, 3000, 30_000])) for n in range(200))
    }
    budget = rng.randint(2_000, 60_000)
    lister = Lister(ListingSettings(secret=b"k", page_size=25, page_max_bytes=budget))

    pages = walk(lister, objects)

    walked = [object_id for page in ids(pages) for object_id in page]
    assert walked == sorted(objects)
    for page in pages:
        sizes = [framed_size(r) for r in page.resources]
        assert len(sizes) <= 25
        assert len(sizes) == 1 or sum(sizes) <= budget
    # Pages end early only because the next object did not fit.
    for page, following in itertools.pairwise(pages):
        used = sum(framed_size(r) for r in page.resources)
        assert len(page.resources) == 25 or used + framed_size(following.resources[0]) > budget


def test_the_serialized_response_stays_within_the_budget_plus_its_envelope() -> None:
    objects = {r.resource_id: r for r in (resource(n, 40_000) for n in range(100))}
    lister = Lister(ListingSettings(secret=b"k", page_size=1000, page_max_bytes=1_000_000))

    pages = walk(lister, objects)

    assert len(pages) > 1
    for page in pages:
        # The envelope is the marker: a few hundred bytes.
        assert page.ByteSize() <= 1_000_000 + 500


def test_paginate_reads_one_object_past_a_page_ended_by_bytes() -> None:
    consumed: list[str] = []

    def items() -> Any:
        for n in range(100):
            consumed.append(f"k{n:03d}")
            yield f"k{n:03d}", n

    page, next_key = paginate(items(), None, 50, max_bytes=30, size=lambda _: 10)

    assert (page, next_key, consumed[-1]) == ([0, 1, 2], "k002", "k003")


def test_paging_settings_must_be_positive() -> None:
    with pytest.raises(ValueError, match="NETWEAVE_PAGE_MAX_BYTES"):
        ListingSettings(secret=b"k", page_max_bytes=0)
