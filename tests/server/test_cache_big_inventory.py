"""The inventory cache's big-inventory machinery: resources held as bytes, wire memos in
shared arenas (and their compaction), and the on-demand indexes of extensions paths that
pre-select candidates for filters on them. Every answer is checked against a plain scan
of the wire objects with the same compiled filter."""

from __future__ import annotations

import bisect
import builtins
import random
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from o2ims.adapter.v1 import domain_pb2
from o2ims.inventory.v1 import inventory_pb2 as inv

from adapters.contract import KINDS, serialize
from devstack.processes import wait_until
from server import cache as cache_module
from server.cache import MAX_JSON_INDEXES, InventoryCache
from server.query import ListQuery, compile_query, json_key, json_value
from server.store import Snapshot, StoredEvent
from server.struct_bytes import value_bytes
from server.wire.v1 import MODEL as V1

POOL = "7d1d5a2a-5a47-4c8e-9f0b-8d5a3e3f1c11"
OTHER_POOL = "0b3f9a51-1f27-4d7e-8c1e-6a0d2c4b9e22"
UUID = "F6A1B0C2-3D4E-4F50-8A6B-7C8D9E0F1A2B"
MIXED_CASE_UUID = "f6A1b0C2-3d4E-4f50-8A6b-7c8D9e0F1a2B"
# Leaf values an extension may hold: strings (one UUID in three cases), numbers (-0 and 0
# too), booleans, null, arrays and objects.
VALUES: list[Any] = [
    "R7",
    "R70",
    "r7",
    "7",
    UUID,
    UUID.lower(),
    MIXED_CASE_UUID,
    "true",
    "",
    7,
    7.5,
    0,
    -0.0,
    True,
    False,
    None,
    ["R7", 3],
    [["x", False]],
    {"rack": "R7"},
    [{"rack": "R9"}, {"rack": 7}],
]
FILTERS = [
    "(eq,extensions/rack,R7)",
    "(eq,extensions/rack,7)",
    "(eq,extensions/rack,-0)",
    "(eq,extensions/rack,true)",
    f"(eq,extensions/rack,{UUID.lower()})",
    f"(eq,extensions/rack,{UUID})",
    f"(in,extensions/rack,{MIXED_CASE_UUID},0,x)",
    "(eq,extensions/rack,0)",
    "(in,extensions/rack,R70,7.5,false)",
    "(cont,extensions/rack,7)",
    "(gt,extensions/rack,R)",
    "(gte,extensions/rack,7)",
    "(lt,extensions/rack,1)",
    "(lte,extensions/rack,r)",
    "(lt,extensions/rack,7.5)",
    "(gt,extensions/rack,-0)",
    "(lte,extensions/rack,0)",
    "(gte,extensions/rack,R70)",
    "(lt,extensions/site/rack,R8)",
    "(neq,extensions/rack,R7)",
    "(ncont,extensions/rack,R)",
    "(nin,extensions/rack,R7,7)",
    "(eq,extensions/site/rack,R7)",
    "(eq,extensions/site/rack,7)",
    "(cont,extensions/site/rack,R)",
    "(eq,extensions/rack,R7);(eq,extensions/site/rack,R9)",
    "(eq,extensions/rack,R7);(eq,name,n3)",
]


def _resource(resource_id: str, pool: str, extensions: dict[str, Any]) -> domain_pb2.Resource:
    resource = domain_pb2.Resource(
        resource_id=resource_id,
        resource_pool_id=pool,
        name=f"n{int(resource_id[1:]) % 5}",
        description=f"server {resource_id}",
        elements=[domain_pb2.Resource(resource_id=f"{resource_id}-e", description="NIC")],
    )
    resource.extensions.update(extensions)
    return resource


def _payload(resource: domain_pb2.Resource) -> bytes:
    return serialize(domain_pb2.InventoryObject(resource=resource))


def _random_extensions(rng: random.Random) -> dict[str, Any]:
    extensions: dict[str, Any] = {}
    if rng.random() < 0.8:
        extensions["rack"] = rng.choice(VALUES)
    if rng.random() < 0.5:
        extensions["site"] = rng.choice([{"rack": rng.choice(VALUES)}, rng.choice(VALUES)])
    return extensions


def _snapshot(resources: list[domain_pb2.Resource]) -> Snapshot:
    objects: dict[str, dict[str, bytes]] = {kind: {} for kind in KINDS}
    for pool in (POOL, OTHER_POOL):
        objects["resource_pool"][pool] = serialize(
            domain_pb2.InventoryObject(
                resource_pool=domain_pb2.ResourcePool(resource_pool_id=pool, name="p")
            )
        )
    for resource in resources:
        objects["resource"][resource.resource_id] = _payload(resource)
    return Snapshot(version=1, last_event_id="1-0", objects=objects)


def _event(cache: InventoryCache, resource_id: str, post: bytes | None) -> StoredEvent:
    version = cache.version + 1
    return StoredEvent(
        stream_id=f"{version}-0",
        version=version,
        kind="resource",
        object_id=resource_id,
        event="delete" if post is None else "modify",
        prior=b"",
        post=post or b"",
    )


def _query(text: str) -> Any:
    return compile_query(
        ListQuery(filters=[text]), inv.ResourceInfo.DESCRIPTOR, secret=b"s" * 32, scope="t"
    )


def _scan(cache: InventoryCache, text: str, pool: str = POOL) -> list[str]:
    matches = _query(text).matches
    ids = cache.resource_ids(pool) or []
    return [oid for oid, wire in cache.iter_wire(V1, "resource", ids) if matches(wire)]


def _via_index(cache: InventoryCache, text: str, pool: str = POOL) -> list[str]:
    query = _query(text)
    ids = cache.resource_ids(pool, None, query.json_prefilters()) or []
    return [oid for oid, wire in cache.iter_wire(V1, "resource", ids) if query.matches(wire)]


def _resources() -> list[domain_pb2.Resource]:
    rng = random.Random(5)
    return [
        _resource(f"r{n:03d}", POOL if n % 4 else OTHER_POOL, _random_extensions(rng))
        for n in range(240)
    ]


def _apply_random_change(cache: InventoryCache, rng: random.Random, step: int) -> None:
    """One event on a random resource of r000-r299 (new ones too): every seventh step a
    delete, else a resource in either pool with random extensions."""
    resource_id = f"r{rng.randrange(300):03d}"
    post = None
    if step % 7:
        pool = rng.choice([POOL, OTHER_POOL])
        post = _payload(_resource(resource_id, pool, _random_extensions(rng)))
    assert cache.apply(_event(cache, resource_id, post))


@pytest.fixture
def loaded() -> InventoryCache:
    # Indexes built in the request's thread: deterministic (one test uses the thread).
    cache = InventoryCache("https://t", index_in_background=False)
    cache.load(_snapshot(_resources()))
    return cache


RACK = ("extensions", "rack")
SITE_RACK = ("extensions", "site", "rack")


def test_declared_paths_are_indexed_at_load_and_answer_a_first_use() -> None:
    """NETWEAVE_INDEXED_EXTENSIONS: indexed by every load, before any filter uses them, and
    the first use of a filter on them is answered from the index with what a scan finds."""
    cache = InventoryCache("https://t", index_in_background=False, indexed_paths=[SITE_RACK])
    cache.load(_snapshot(_resources()))
    assert cache.json_indexed_paths() == [SITE_RACK]
    text = "(eq,extensions/site/rack,R7)"
    query = _query(text)
    candidates = cache.resource_ids(POOL, None, query.json_prefilters()) or []
    pool = cache.resource_ids(POOL) or []
    assert 0 < len(candidates) < len(pool)  # narrowed by the index on its first use
    assert _via_index(cache, text) == _scan(cache, text)
    # A path not declared has no index on its first use (the extensions bytes narrow it).
    assert cache.json_indexed_paths() == [SITE_RACK]
    assert _via_index(cache, "(eq,extensions/rack,R7)") == _scan(cache, "(eq,extensions/rack,R7)")
    # A reload (a gap in the events) indexes it again.
    cache.load(_snapshot(_resources()[:100]))
    assert cache.json_indexed_paths() == [SITE_RACK]
    assert _via_index(cache, text) == _scan(cache, text)


def test_a_declared_path_is_never_dropped_for_others() -> None:
    cache = InventoryCache("https://t", index_in_background=False, indexed_paths=[RACK])
    cache.load(_snapshot(_resources()))
    for n in range(MAX_JSON_INDEXES + 3):
        prefilters = _query(f"(eq,extensions/k{n},x)").json_prefilters()
        for _ in range(2):  # the second use builds its index
            cache.resource_ids(POOL, None, prefilters)
    indexed = cache.json_indexed_paths()
    assert RACK in indexed
    assert len(indexed) == MAX_JSON_INDEXES + 1  # the on-demand ones, and the declared one
    assert ("extensions", f"k{MAX_JSON_INDEXES + 2}") in indexed  # the newest kept
    assert ("extensions", "k0") not in indexed  # the oldest on-demand one dropped


@pytest.mark.parametrize("path", [("name",), ("extensions",), ("extensions", "")])
def test_a_declared_path_that_cannot_be_indexed_is_refused(path: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="extensions"):
        InventoryCache("https://t", indexed_paths=[path])


@pytest.mark.parametrize("value", ["R7", "", UUID, 7.0, -0.0, 1e300, True, False])
def test_json_keys_round_trip_with_the_json_type(value: Any) -> None:
    key = json_key(value)
    assert json_value(key) == value and type(json_value(key)) is type(value)
    assert json_key("true") != json_key(True) and json_key("7") != json_key(7.0)


def test_an_extensions_index_selects_exactly_what_a_scan_selects(loaded: InventoryCache) -> None:
    for text in FILTERS:
        expected = _scan(loaded, text)
        assert _via_index(loaded, text) == expected, text  # first use: a scan
        assert _via_index(loaded, text) == expected, text  # second use: indexed
    assert set(loaded.json_indexed_paths()) == {
        ("extensions", "rack"),
        ("extensions", "site", "rack"),
    }
    # The pool scopes the candidates.
    assert _via_index(loaded, FILTERS[0], OTHER_POOL) == _scan(loaded, FILTERS[0], OTHER_POOL)
    assert _scan(loaded, FILTERS[0])  # the data exercises the filters
    assert _scan(loaded, FILTERS[0], OTHER_POOL)


def test_eq_and_in_look_their_values_up_and_find_what_walking_the_index_finds(
    loaded: InventoryCache,
) -> None:
    for text in FILTERS:
        _via_index(loaded, text)
        _via_index(loaded, text)
    looked_up = 0
    for text in FILTERS:
        for path, prefilter in _query(text).json_prefilters():
            index = loaded._json_indexes[path]
            walked = set().union(*index.candidates(replace(prefilter, keys=None)))
            if prefilter.keys is None:
                continue
            calls: list[Any] = []
            counting = replace(prefilter, passes=calls.append)
            assert set().union(*index.candidates(counting)) == walked, text
            assert calls == [], text  # looked up: the predicate never ran
            looked_up += bool(walked)
    assert looked_up >= 8  # the data exercises the lookups


def test_a_uuid_in_another_case_is_found_until_its_last_holder_changes() -> None:
    cache = InventoryCache("https://t", index_in_background=False)
    cache.load(_snapshot([_resource(f"r{n:03d}", POOL, {"rack": f"R{n}"}) for n in range(40)]))
    text = f"(eq,extensions/rack,{UUID.lower()})"
    for resource_id in ("r001", "r002"):
        cache.apply(
            _event(
                cache,
                resource_id,
                _payload(_resource(resource_id, POOL, {"rack": MIXED_CASE_UUID})),
            )
        )
    assert _via_index(cache, text) == _via_index(cache, text) == ["r001", "r002"]
    index = cache._json_indexes[("extensions", "rack")]
    assert index.folded == {"s" + UUID.lower(): {"s" + MIXED_CASE_UUID}}
    cache.apply(_event(cache, "r001", None))
    assert _via_index(cache, text) == ["r002"] and index.folded
    cache.apply(_event(cache, "r002", _payload(_resource("r002", POOL, {"rack": "R2"}))))
    assert _via_index(cache, text) == [] and index.folded == {}


def test_the_indexes_follow_events(loaded: InventoryCache) -> None:
    for text in FILTERS:
        _via_index(loaded, text)
        _via_index(loaded, text)
    rng = random.Random(9)
    for step in range(150):
        _apply_random_change(loaded, rng, step)
        if step % 25 == 0:
            for text in FILTERS:
                assert _via_index(loaded, text) == _scan(loaded, text), (step, text)
    for text in FILTERS:
        assert _via_index(loaded, text) == _scan(loaded, text), text
    # The case-folded UUID keys are those held now, no more (none left behind by changes).
    for index in loaded._json_indexes.values():
        folded: dict[str, set[str]] = {}
        for key in index.ids:
            if key[1:] in (UUID, MIXED_CASE_UUID):
                folded.setdefault(key.lower(), set()).add(key)
        assert index.folded == folded
    assert any(index.folded for index in loaded._json_indexes.values())


def _pool_members(cache: InventoryCache, pool: str) -> list[str]:
    """A pool's resource ids, sorted, from each resource's own pool (not the cache's lists)."""
    members = []
    for oid in cache.ids("resource"):
        resource = cache.domain("resource", oid)
        if resource is not None and resource.resource_pool_id == pool:
            members.append(oid)
    return members


def consistent(held: set[str], toggles: Iterable[tuple[bool, str]]) -> Iterator[tuple[bool, str]]:
    """The toggles that change `held` (an addition of what it lacks, a removal of what it
    holds), applied to it as they are yielded: what a cache sees of members or values."""
    for add, item in toggles:
        if add != (item in held):
            (held.add if add else held.discard)(item)
            yield add, item


def _counting_sorts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every list the cache sorts with sorted() from here on."""
    sorts: list[int] = []

    def counted_sorted(items: Any) -> list[str]:
        listed = builtins.sorted(items)
        sorts.append(len(listed))
        return listed

    monkeypatch.setattr(cache_module, "sorted", counted_sorted, raising=False)
    return sorts


def test_a_pools_sorted_ids_follow_its_members_not_each_modification(
    loaded: InventoryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    sorts = _counting_sorts(monkeypatch)
    # Sorted by the load: the first list sorts nothing.
    pool_ids = loaded.resource_ids(POOL)
    assert pool_ids and sorts == []
    assert pool_ids == _pool_members(loaded, POOL)
    # Modified in place (the same pool, other extensions): the same list, not sorted again.
    first = pool_ids[0]
    assert loaded.apply(_event(loaded, first, _payload(_resource(first, POOL, {"rack": "Z"}))))
    assert loaded.resource_ids(POOL) is pool_ids
    # Moves between the pools, deletes and new resources: always exactly each pool's members.
    rng = random.Random(11)
    for step in range(120):
        _apply_random_change(loaded, rng, step)
        for pool in (POOL, OTHER_POOL):
            assert loaded.resource_ids(pool) == _pool_members(loaded, pool), (step, pool)


def test_a_member_added_or_removed_is_put_in_place_not_sorted_again(
    loaded: InventoryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = loaded.resource_ids(POOL)
    assert before is not None
    kept = list(before)
    every = loaded.ids("resource")
    sorts = _counting_sorts(monkeypatch)
    # A new resource, a deleted one, one moved to the other pool and one moved back.
    moved = before[3]
    for resource_id, post in (
        ("r500", _payload(_resource("r500", POOL, {}))),
        (before[1], None),
        (moved, _payload(_resource(moved, OTHER_POOL, {}))),
        (before[7], _payload(_resource(before[7], OTHER_POOL, {}))),
        (before[7], _payload(_resource(before[7], POOL, {}))),
    ):
        assert loaded.apply(_event(loaded, resource_id, post))
    after = loaded.resource_ids(POOL)
    assert after == _pool_members(loaded, POOL)
    assert loaded.resource_ids(OTHER_POOL) == _pool_members(loaded, OTHER_POOL)
    assert "r500" in after and before[1] not in after and moved not in after
    assert before[7] in after
    assert loaded.ids("resource") == builtins.sorted({*every, "r500"} - {before[1]})
    # Nothing was sorted from scratch, and the list a reader may still walk is unchanged.
    assert sorts == []
    assert before == kept


def test_many_changes_are_merged_and_more_than_a_quarter_sort_again(
    loaded: InventoryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past FEW_MEMBER_CHANGES the changes are merged by one sort of the nearly sorted
    list; past a quarter of the list it is dropped and sorted from the members."""
    members = loaded.resource_ids(POOL)
    assert members is not None and len(members) == 180
    assert len(loaded.ids("resource")) == 240  # the kind's list, sorted by this first read
    sorts = _counting_sorts(monkeypatch)
    monkeypatch.setattr(cache_module, "FEW_MEMBER_CHANGES", 4)
    # 40 changes of 180 members (under a quarter): 20 new, 20 deleted.
    for n in range(20):
        new = f"r{600 + n * 7}"
        assert loaded.apply(_event(loaded, new, _payload(_resource(new, POOL, {})))), n
        assert loaded.apply(_event(loaded, members[n * 5], None))
    assert loaded.resource_ids(POOL) == _pool_members(loaded, POOL)
    # The additions sorted once, for the pool's list and the kind's: no list sorted again.
    assert sorts == [20, 20]
    # 60 more deletions of the 180 (over a quarter): the list is sorted again.
    sorts.clear()
    for resource_id in _pool_members(loaded, POOL)[:60]:
        assert loaded.apply(_event(loaded, resource_id, None))
    assert loaded.resource_ids(POOL) == _pool_members(loaded, POOL)
    assert 120 in sorts and 240 not in sorts  # the pool's list only: 60 of the kind's 240


@settings(max_examples=300, deadline=None)
@given(
    st.sets(st.integers(0, 60)),
    st.lists(st.tuples(st.booleans(), st.integers(0, 80)), max_size=60),
    st.integers(0, 8),
)
def test_member_changes_applied_are_the_members_sorted(
    start: set[int], toggles: list[tuple[bool, int]], few: int
) -> None:
    """Any sequence of consistent additions and removals (an id added only while absent,
    removed only while present), by bisection or by merging, gives the members sorted."""
    ids = builtins.sorted(f"m{n:03d}" for n in start)
    members = set(ids)
    changes = cache_module._MemberChanges()
    for add, member in consistent(members, ((add, f"m{n:03d}") for add, n in toggles)):
        (changes.add if add else changes.remove)(member)
    copy = list(ids)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache_module, "FEW_MEMBER_CHANGES", few)
        assert changes.applied(ids) == builtins.sorted(members)
    assert ids == copy


def test_an_index_built_while_events_arrive_includes_their_changes(
    loaded: InventoryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "(eq,extensions/rack,R7)"
    real_parse = cache_module._parse
    # The index is built outside the lock; the tailer applies events meanwhile.
    posts = [
        ("r001", _payload(_resource("r001", POOL, {"rack": "R7"}))),
        ("r002", _payload(_resource("r002", POOL, {"rack": ["x", "R7"]}))),
        ("r003", None),
        ("r005", _payload(_resource("r005", POOL, {"site": {"rack": "R7"}}))),
    ]
    pending = list(posts)

    def parse_while_events_arrive(kind: str, payload: bytes) -> Any:
        if pending:
            resource_id, post = pending.pop(0)
            assert loaded.apply(_event(loaded, resource_id, post))
        return real_parse(kind, payload)

    for resource_id, _ in posts:  # they do not match before
        assert resource_id not in _scan(loaded, text)
    _via_index(loaded, text)
    monkeypatch.setattr(cache_module, "_parse", parse_while_events_arrive)
    assert _via_index(loaded, text) == _scan(loaded, text)
    assert not pending
    assert loaded.json_indexed_paths() == [("extensions", "rack")]
    monkeypatch.setattr(cache_module, "_parse", real_parse)
    found = _via_index(loaded, text)
    assert found == _scan(loaded, text)
    assert "r001" in found and "r002" in found and "r005" not in found


def _load_at_next_parse(
    monkeypatch: pytest.MonkeyPatch, cache: InventoryCache, after: int = 0
) -> list[bool]:
    """The next resource parsed, once `after` more have been, first loads `cache` with one
    resource, r001 in rack R7: a load meeting a build. The list says it happened."""
    real_parse = cache_module._parse
    reloaded: list[bool] = []
    parsed = [0]

    def parse_while_reloading(kind: str, payload: bytes) -> Any:
        parsed[0] += 1
        if not reloaded and parsed[0] > after:
            reloaded.append(True)
            cache.load(_snapshot([_resource("r001", POOL, {"rack": "R7"})]))
        return real_parse(kind, payload)

    monkeypatch.setattr(cache_module, "_parse", parse_while_reloading)
    return reloaded


def test_an_index_built_across_a_load_is_dropped(
    loaded: InventoryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "(eq,extensions/rack,R7)"
    _via_index(loaded, text)
    _load_at_next_parse(monkeypatch, loaded)
    assert _via_index(loaded, text) == ["r001"]
    assert loaded.json_indexed_paths() == []


def test_a_declared_index_dropped_by_a_load_is_built_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A load while a declared path's index is being built drops that build; the path is
    indexed again from the new resources (the load found the build running)."""
    cache = InventoryCache("https://t", index_in_background=False, indexed_paths=[RACK])
    real_parse = cache_module._parse
    parsed: set[bytes] = set()
    reloaded: list[bool] = []

    def parse_while_reloading(kind: str, payload: bytes) -> Any:
        # The load parses each resource once; a second parse is its index build's.
        if payload in parsed and not reloaded:
            reloaded.append(True)
            cache.load(_snapshot([_resource("r001", POOL, {"rack": "R7"})]))
        parsed.add(payload)
        return real_parse(kind, payload)

    monkeypatch.setattr(cache_module, "_parse", parse_while_reloading)
    cache.load(_snapshot(_resources()))  # its build of RACK meets the load above
    assert reloaded and cache.json_indexes_idle()
    assert cache.json_indexed_paths() == [RACK]
    prefilters = _query("(eq,extensions/rack,R7)").json_prefilters()
    assert cache.resource_ids(POOL, None, prefilters) == ["r001"]


def test_an_index_is_built_in_the_background_while_requests_scan() -> None:
    resources = [_resource(f"r{n:03d}", POOL, {"rack": f"R{n % 7}"}) for n in range(300)]
    cache = InventoryCache("https://t")
    cache.load(_snapshot(resources))
    text = "(eq,extensions/rack,R3)"
    expected = _scan(cache, text)
    assert len(expected) == 43
    assert _via_index(cache, text) == expected
    assert _via_index(cache, text) == expected  # starts the build
    wait_until(cache.json_indexes_idle, 10, "the extensions index")
    assert cache.json_indexed_paths() == [("extensions", "rack")]
    query = _query(text)
    assert cache.resource_ids(POOL, None, query.json_prefilters()) == expected


def test_unselective_prefilters_and_other_paths_fall_back_to_the_pool(
    loaded: InventoryCache,
) -> None:
    everything = loaded.resource_ids(POOL)
    for text in ("(neq,extensions/rack,x)", "(eq,description,x)", "(eq,elements/extensions/a,1)"):
        query = _query(text)
        assert loaded.resource_ids(POOL, None, query.json_prefilters()) == everything
    # Most resources have some rack: gte "" passes every string, so it is scanned.
    query = _query("(gte,extensions/rack,)")
    for _ in range(2):
        assert loaded.resource_ids(POOL, None, query.json_prefilters()) == everything


def test_resources_are_held_as_bytes_and_parsed_on_use(loaded: InventoryCache) -> None:
    domain = loaded.domain("resource", "r001")
    assert isinstance(domain, domain_pb2.Resource) and domain.resource_id == "r001"
    domain.description = "changed by a caller"  # the caller's own copy
    assert loaded.domain("resource", "r001").description == "server r001"  # type: ignore[union-attr]
    assert [r.resource_id for r in loaded.resources_named("n1")] == [
        f"r{n:03d}" for n in range(240) if n % 5 == 1
    ]
    assert loaded.domain("resource", "nope") is None


def test_wire_memos_in_shared_arenas_are_compacted_and_stay_current(
    loaded: InventoryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "CHUNK", 16)
    ids = loaded.ids("resource")
    before = {oid: wire.SerializeToString() for oid, wire in loaded.iter_wire(V1, "resource", ids)}
    memo = loaded._resource_memo["v1"]
    assert len(memo.messages) == len(ids) and len({id(c) for c in memo.chunk_of.values()}) == 15
    first_chunk = memo.chunk_of[ids[0]]
    # Change 9 of the first chunk's 16 resources: fewer than half are left, so the
    # chunk's other memos are dropped too (rebuilt on their next read).
    changed = first_chunk.ids[:9]
    for n, resource_id in enumerate(changed):
        post = _payload(_resource(resource_id, POOL, {"rack": f"new{n}"}))
        assert loaded.apply(_event(loaded, resource_id, post))
    assert not any(oid in memo.messages for oid in first_chunk.ids)
    assert all(memo.chunk_of.get(oid) is not first_chunk for oid in ids)
    after = {oid: wire for oid, wire in loaded.iter_wire(V1, "resource", ids)}
    for oid in ids:
        if oid in changed:
            rack = after[oid].extensions.fields["rack"].string_value
            assert rack == f"new{changed.index(oid)}"
        else:
            assert after[oid].SerializeToString() == before[oid]
    got = loaded.get(V1, "resource", changed[0])
    assert got is not None and got.extensions.fields["rack"].string_value == "new0"
    assert isinstance(got.extensions, struct_pb2.Struct)


def test_a_json_key_holding_a_slash_is_not_a_nested_path() -> None:
    resources = [
        _resource("r001", POOL, {"a/b": "x"}),
        _resource("r002", POOL, {"a": {"b": "x"}}),
        _resource("r003", POOL, {"a/b": "y", "a": {"b": "y"}}),
    ]
    cache = InventoryCache("https://t", index_in_background=False)
    cache.load(_snapshot(resources))
    for text, expected in (
        ("(eq,extensions/a~1b,x)", ["r001"]),
        ("(eq,extensions/a/b,x)", ["r002"]),
        ("(cont,extensions/a~1b,y)", ["r003"]),
    ):
        assert _scan(cache, text) == expected
        for _ in range(2):
            assert _via_index(cache, text) == expected, text
    assert set(cache.json_indexed_paths()) == {("extensions", "a/b"), ("extensions", "a", "b")}


# --- a first use: the extensions bytes ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["R7", "", "é✓", "x" * 127, "x" * 128, "y" * 20_000, 7.0, -0.0, 1e300, 0.1, True, False],
)
def test_a_value_is_searched_for_as_protobuf_serializes_it(value: Any) -> None:
    """The bytes searched for are exactly a google.protobuf.Value's holding it (lengths of
    one, two and three varint bytes included)."""
    held = struct_pb2.Value()
    if isinstance(value, bool):
        held.bool_value = value
    elif isinstance(value, float):
        held.number_value = value
    else:
        held.string_value = value
    assert value_bytes(json_key(value)) == held.SerializeToString()
    assert value_bytes(json_key("\udc80")) is None  # no protobuf string holds it


def _never_indexed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every use a first use: no index is built, the extensions bytes answer."""
    monkeypatch.setattr(cache_module, "INDEX_AFTER_USES", 10**9)


def test_a_first_use_is_narrowed_by_the_extensions_bytes(
    loaded: InventoryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    _never_indexed(monkeypatch)
    pool = loaded.resource_ids(POOL) or []
    narrowed = 0
    for text in FILTERS:
        assert _via_index(loaded, text) == _scan(loaded, text), text
        candidates = loaded.resource_ids(POOL, None, _query(text).json_prefilters()) or []
        narrowed += len(candidates) < len(pool)
    assert loaded.json_indexed_paths() == []
    # The mixed data holds most values under several keys and in lists: 6 of its filters
    # are selective enough to be narrowed (the others are scanned).
    assert narrowed >= 5, narrowed


def test_eq_and_in_on_a_first_use_select_their_holders(monkeypatch: pytest.MonkeyPatch) -> None:
    _never_indexed(monkeypatch)
    resources = [
        _resource(
            f"r{n:03d}",
            POOL,
            {
                "rack": f"R{n % 40}",
                "serial": f"S{n:05d}",
                "cores": 32 + n % 3,
                "spare": n % 50 == 0,
                "site": {"rack": f"Q{n % 10}"},
                "id": UUID if n == 7 else "",
                "temperature": n - 200.5,
            },
        )
        for n in range(400)
    ]
    cache = InventoryCache("https://t", index_in_background=False)
    cache.load(_snapshot(resources))
    pool = cache.resource_ids(POOL) or []
    for text, holders in [
        ("(eq,extensions/rack,R7)", [f"r{n:03d}" for n in range(7, 400, 40)]),
        ("(in,extensions/serial,S00003,S00399,S99999)", ["r003", "r399"]),
        ("(eq,extensions/site/rack,Q3)", [f"r{n:03d}" for n in range(3, 400, 10)]),
        ("(eq,extensions/spare,true)", [f"r{n:03d}" for n in range(0, 400, 50)]),
        (f"(eq,extensions/id,{UUID})", ["r007"]),
        # A UUID-shaped string is compared without case.
        (f"(eq,extensions/id,{UUID.lower()})", ["r007"]),
        (f"(in,extensions/id,{MIXED_CASE_UUID},x)", ["r007"]),
        # cont: the strings' bytes anywhere.
        ("(cont,extensions/serial,S0000)", [f"r{n:03d}" for n in range(10)]),
        ("(cont,extensions/serial,0399,0398)", ["r398", "r399"]),
        # The order operators: a map entry of the path's last key holding a value beyond.
        ("(gt,extensions/serial,S00398)", ["r399"]),
        ("(lte,extensions/serial,S00002)", ["r000", "r001", "r002"]),
        ("(lt,extensions/site/rack,Q1)", [f"r{n:03d}" for n in range(0, 400, 10)]),
        ("(gte,extensions/temperature,196.5)", [f"r{n:03d}" for n in range(397, 400)]),
        ("(lt,extensions/temperature,-197.5)", ["r000", "r001", "r002"]),
        ("(lt,extensions/temperature,-200.5)", []),
        ("(lte,extensions/temperature,-200.5)", ["r000"]),
    ]:
        candidates = cache.resource_ids(POOL, None, _query(text).json_prefilters())
        assert candidates == holders == _scan(cache, text), text
    # An unselective value: looked for, and scanned.
    candidates = cache.resource_ids(
        POOL, None, _query("(eq,extensions/cores,32)").json_prefilters()
    )
    assert candidates == pool  # a third of the pool holds 32: scanned
    # ... found so once the search passes a quarter of the pool, not after finding all.
    searched = cache._extensions_bytes
    assert searched is not None
    [(_, cores)] = _query("(eq,extensions/cores,32)").json_prefilters()
    held = searched.search(cores, len(pool))
    assert held is not None and len(held) == 134  # n % 3 == 0
    assert searched.search(cores, len(pool) // 4) is None
    # An order term or a cont most values pass: scanned.
    for text in (
        "(gt,extensions/serial,S)",
        "(gte,extensions/temperature,-1)",
        "(cont,extensions/serial,S)",
    ):
        assert cache.resource_ids(POOL, None, _query(text).json_prefilters()) == pool, text
        assert _via_index(cache, text) == _scan(cache, text)
    assert cache.json_indexed_paths() == []  # all of them first uses


def test_a_search_gives_up_early_on_a_sample_and_not_on_clustered_holders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A term most resources pass is given up once a sample says so, long before the
    search finds a quarter of the pool; holders all at the start of the bytes (the first
    1,000 of 5,000 serials) are not judged by their start: they are all found."""
    _never_indexed(monkeypatch)
    resources = [
        _resource(f"r{n:04d}", POOL, {"serial": f"S{n:05d}", "cores": 32 + n % 2})
        for n in range(5000)
    ]
    cache = InventoryCache("https://t", index_in_background=False)
    cache.load(_snapshot(resources))
    searched = cache._extensions_bytes
    assert searched is not None
    walked = 0
    real_bisect = bisect.bisect_right

    def counted(*args: Any) -> int:
        nonlocal walked
        walked += 1  # one per resource the search finds
        found: int = real_bisect(*args)
        return found

    monkeypatch.setattr(bisect, "bisect_right", counted)
    limit = len(resources) // cache_module.UNSELECTIVE
    [(_, clustered)] = _query("(lt,extensions/serial,S01000)").json_prefilters()
    found = searched.search(clustered, limit)
    assert found == {f"r{n:04d}" for n in range(1000)}
    for text in ("(gte,extensions/cores,33)", "(eq,extensions/cores,32)"):
        [(_, half)] = _query(text).json_prefilters()
        walked = 0
        assert searched.search(half, limit) is None, text
        # Given up past the checkpoint (64 here), not after finding the limit's 1,250.
        assert walked <= 64 + 2, (text, walked)


def test_the_extensions_bytes_follow_events_and_are_rebuilt(
    loaded: InventoryCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    _never_indexed(monkeypatch)
    monkeypatch.setattr(cache_module, "REBUILD_BYTES_AFTER", 40)
    built = loaded._extensions_bytes
    assert built is not None and not built.changed
    rng = random.Random(11)
    rebuilt = 0
    for step in range(200):
        _apply_random_change(loaded, rng, step)
        current = loaded._extensions_bytes
        assert current is not None
        if current is not built:
            rebuilt += 1
            built = current
            assert len(current.changed) == 0  # built from the resources as they are now
            assert sorted(current.ids) == sorted(loaded.ids("resource"))
        if step % 20 == 0:
            for text in FILTERS:
                assert _via_index(loaded, text) == _scan(loaded, text), (step, text)
    assert rebuilt >= 3  # 200 changes, rebuilt past 40
    for text in FILTERS:
        assert _via_index(loaded, text) == _scan(loaded, text), text
        assert _via_index(loaded, text, OTHER_POOL) == _scan(loaded, text, OTHER_POOL), text


def test_extensions_bytes_rebuilt_across_a_load_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _never_indexed(monkeypatch)
    monkeypatch.setattr(cache_module, "REBUILD_BYTES_AFTER", 0)
    resources = [_resource(f"r{n:03d}", POOL, {"rack": f"R{n}"}) for n in range(8)]
    cache = InventoryCache("https://t", index_in_background=False)
    cache.load(_snapshot(resources))
    loaded_bytes = cache._extensions_bytes
    # One change: a candidate, no rebuild (more than an eighth of 8 resources: two).
    assert cache.apply(_event(cache, "r002", _payload(_resource("r002", POOL, {"rack": "R7"}))))
    assert cache._extensions_bytes is loaded_bytes and loaded_bytes is not None
    assert loaded_bytes.changed == {"r002"}
    # The second starts a rebuild (here, in this thread), which a load meets: after the
    # event's own two parses (the resource before and after), at the rebuild's first.
    reloaded = _load_at_next_parse(monkeypatch, cache, after=2)
    post = _payload(_resource("r003", POOL, {"rack": "R9"}))
    assert cache.apply(_event(cache, "r003", post))
    assert reloaded
    monkeypatch.undo()
    # The load's bytes stay: the rebuild, of the 8 resources before it, is dropped.
    after = cache._extensions_bytes
    assert after is not None and after is not loaded_bytes
    assert after.ids == ["r001"] and not after.changed and cache._bytes_building is None
    _never_indexed(monkeypatch)
    assert _via_index(cache, "(eq,extensions/rack,R7)") == ["r001"]


def test_cont_on_a_path_indexed_with_many_values_searches_the_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cont walks an index's every distinct value; past WALK_INDEX_UP_TO of them the bytes
    are searched instead (and an unselective search falls back to the walk)."""
    monkeypatch.setattr(cache_module, "WALK_INDEX_UP_TO", 50)
    resources = [
        _resource(f"r{n:03d}", POOL, {"serial": f"S{n:05d}", "rack": f"R{n % 10}"})
        for n in range(400)
    ]
    cache = InventoryCache("https://t", index_in_background=False)
    cache.load(_snapshot(resources))
    for text in ("(eq,extensions/serial,x)", "(eq,extensions/rack,x)"):
        _via_index(cache, text)
        _via_index(cache, text)  # the second use indexes the path
    assert set(cache.json_indexed_paths()) == {("extensions", "serial"), ("extensions", "rack")}
    walked: list[str] = []
    real_candidates = cache_module._JsonIndex.candidates

    def counted(index: Any, prefilter: Any) -> Any:
        walked.append("walked")
        return real_candidates(index, prefilter)

    monkeypatch.setattr(cache_module._JsonIndex, "candidates", counted)
    pool = cache.resource_ids(POOL) or []
    serial = _query("(cont,extensions/serial,S0039)")
    assert cache.resource_ids(POOL, None, serial.json_prefilters()) == [
        f"r{n:03d}" for n in range(390, 400)
    ]
    assert walked == []  # 400 distinct serials: searched
    rack = _query("(cont,extensions/rack,R3)")
    assert cache.resource_ids(POOL, None, rack.json_prefilters()) == _scan(
        cache, "(cont,extensions/rack,R3)"
    )
    assert walked == ["walked"]  # 10 distinct racks: walked
    everyone = _query("(cont,extensions/serial,S)")
    assert cache.resource_ids(POOL, None, everyone.json_prefilters()) == pool
    assert walked == ["walked", "walked"]  # the search gave up: the walk decides
