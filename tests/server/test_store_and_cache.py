"""The Redis store's compare-and-write script and the cache that tails its events."""

from __future__ import annotations

import gc
import threading
from typing import Any

from google.protobuf import json_format
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import serialize
from devstack.processes import wait_until
from devstack.redis_server import command_calls
from server.cache import InventoryCache
from server.store import EVENTS_KEY, Change, InventoryStore, connect
from server.sync import EventTailer
from server.wire.v1 import MODEL as V1

POOL_ID = "7d1d5a2a-5a47-4c8e-9f0b-8d5a3e3f1c11"
OTHER_POOL_ID = "0b3f9a51-1f27-4d7e-8c1e-6a0d2c4b9e22"
RESOURCE_ID = "f6a1b0c2-3d4e-4f50-8a6b-7c8d9e0f1a2b"


def _pool(pool_id: str, name: str) -> bytes:
    return serialize(
        domain_pb2.InventoryObject(
            resource_pool=domain_pb2.ResourcePool(resource_pool_id=pool_id, name=name)
        )
    )


def _resource(resource_id: str, pool_id: str, description: str) -> bytes:
    return serialize(
        domain_pb2.InventoryObject(
            resource=domain_pb2.Resource(
                resource_id=resource_id,
                resource_pool_id=pool_id,
                description=description,
                elements=[domain_pb2.Resource(resource_id="e1", description="NIC")],
            )
        )
    )


def _pools(cache: InventoryCache) -> list[Any]:
    return [pool for _, pool in cache.iter_wire(V1, "resource_pool", cache.ids("resource_pool"))]


def _pool_resources(cache: InventoryCache, pool_id: str) -> list[Any] | None:
    """What ListResources pages over: the pool's ids from the index, then the wire objects."""
    ids = cache.resource_ids(pool_id)
    return None if ids is None else [wire for _, wire in cache.iter_wire(V1, "resource", ids)]


def test_apply_is_idempotent_and_emits_one_event_per_real_change(redis_url: str) -> None:
    store = InventoryStore(connect(redis_url))
    assert store.apply("static", [Change("resource_pool", POOL_ID, _pool(POOL_ID, "edge"))]) == 1
    # Same state again (a resync, a second replica): nothing changes, no event.
    assert store.apply("static", [Change("resource_pool", POOL_ID, _pool(POOL_ID, "edge"))]) == 0
    assert store.apply("static", [Change("resource_pool", POOL_ID, _pool(POOL_ID, "dc"))]) == 1
    assert store.apply("static", [Change("resource_pool", POOL_ID, None)]) == 1
    assert store.apply("static", [Change("resource_pool", POOL_ID, None)]) == 0

    events = store.read_events("0-0", block_ms=0)
    assert [e.event for e in events] == ["create", "modify", "delete"]
    assert [e.version for e in events] == [1, 2, 3]
    assert events[1].prior == _pool(POOL_ID, "edge")
    assert events[1].post == _pool(POOL_ID, "dc")
    assert events[2].post == b""
    assert store.client.xlen(EVENTS_KEY) == 3


def test_owner_is_tracked_per_adapter(redis_url: str) -> None:
    store = InventoryStore(connect(redis_url))
    store.apply("static", [Change("resource_pool", POOL_ID, _pool(POOL_ID, "edge"))])
    store.apply("k8s", [Change("resource_pool", OTHER_POOL_ID, _pool(OTHER_POOL_ID, "dc"))])
    assert store.owned_by("static") == {("resource_pool", POOL_ID)}
    assert store.owned_by("k8s") == {("resource_pool", OTHER_POOL_ID)}
    store.apply("static", [Change("resource_pool", POOL_ID, None)])
    assert store.owned_by("static") == set()


def test_cache_follows_events_and_builds_v1_wire_objects(redis_url: str) -> None:
    store = InventoryStore(connect(redis_url))
    cache = InventoryCache("https://gw.example:8443")
    cache.load(store.snapshot())
    assert cache.loaded and _pools(cache) == []

    store.apply(
        "static",
        [
            Change("resource_pool", POOL_ID, _pool(POOL_ID, "edge")),
            Change("resource", RESOURCE_ID, _resource(RESOURCE_ID, POOL_ID, "server")),
        ],
    )
    for event in store.read_events(cache.last_event_id, block_ms=0):
        assert cache.apply(event)
    pools = _pools(cache)
    assert [p.name for p in pools] == ["edge"]
    resources = _pool_resources(cache, POOL_ID)
    assert resources is not None and len(resources) == 1
    wire = json_format.MessageToDict(resources[0])
    assert wire["resourceId"] == RESOURCE_ID
    assert wire["elements"][0]["description"] == "NIC"
    assert _pool_resources(cache, OTHER_POOL_ID) is None

    # Moving the resource to another pool re-indexes it.
    store.apply(
        "static",
        [
            Change("resource_pool", OTHER_POOL_ID, _pool(OTHER_POOL_ID, "dc")),
            Change("resource", RESOURCE_ID, _resource(RESOURCE_ID, OTHER_POOL_ID, "moved")),
        ],
    )
    for event in store.read_events(cache.last_event_id, block_ms=0):
        assert cache.apply(event)
    assert _pool_resources(cache, POOL_ID) == []
    moved = _pool_resources(cache, OTHER_POOL_ID)
    assert moved is not None and moved[0].description == "moved"


def test_cache_reports_a_gap_instead_of_applying_out_of_order(redis_url: str) -> None:
    store = InventoryStore(connect(redis_url))
    cache = InventoryCache("https://gw")
    cache.load(store.snapshot())
    store.apply("static", [Change("resource_pool", POOL_ID, _pool(POOL_ID, "a"))])
    store.apply("static", [Change("resource_pool", POOL_ID, _pool(POOL_ID, "b"))])
    events = store.read_events("0-0", block_ms=0)
    assert not cache.apply(events[1])  # version 2 before version 1: a gap
    assert cache.apply(events[0]) and cache.apply(events[1])
    pool = cache.get(V1, "resource_pool", POOL_ID)
    assert pool is not None and pool.name == "b"


def test_snapshot_reload_matches_incremental_view(redis_url: str) -> None:
    store = InventoryStore(connect(redis_url))
    store.apply(
        "static",
        [
            Change("resource_pool", f"pool-{i:03d}", _pool(f"pool-{i:03d}", str(i)))
            for i in range(50)
        ],
    )
    cache = InventoryCache("https://gw")
    cache.load(store.snapshot())
    assert cache.version == 50
    assert [p.resource_pool_id for p in _pools(cache)] == [f"pool-{i:03d}" for i in range(50)]


def test_a_change_set_is_one_script_call_whose_events_keep_their_order(redis_url: str) -> None:
    store = InventoryStore(connect(redis_url))
    store.apply("static", [Change("resource_pool", POOL_ID, _pool(POOL_ID, "edge"))])
    resource_ids = [f"r-{n:02d}" for n in range(22)]
    change_set = [Change("resource_pool", POOL_ID, _pool(POOL_ID, "renamed"))] + [
        Change("resource", resource_id, _resource(resource_id, POOL_ID, "server"))
        for resource_id in resource_ids
    ]
    store.client.config_resetstat()

    assert store.apply("static", change_set, chunk=None) == 23

    calls = command_calls(store.client)
    # One EVALSHA, so Redis ran the 23 writes and their events with nothing in between.
    assert calls.get("evalsha") == 1 and "eval" not in calls, calls
    assert calls.get("xadd") == 23
    events = store.read_events("0-0", block_ms=0)[1:]
    assert [(e.kind, e.object_id, e.event) for e in events] == [
        ("resource_pool", POOL_ID, "modify"),
        *(("resource", resource_id, "create") for resource_id in resource_ids),
    ]
    assert [e.version for e in events] == list(range(2, 25))
    assert store.owned_by("static") == {("resource_pool", POOL_ID)} | {
        ("resource", resource_id) for resource_id in resource_ids
    }


def test_a_batch_mixing_deletes_and_unchanged_objects_emits_only_real_changes(
    redis_url: str,
) -> None:
    store = InventoryStore(connect(redis_url))
    store.apply(
        "static",
        [
            Change("resource_pool", POOL_ID, _pool(POOL_ID, "edge")),
            Change("resource", RESOURCE_ID, _resource(RESOURCE_ID, POOL_ID, "server")),
        ],
    )
    applied = store.apply(
        "k8s",
        [
            Change("resource_pool", POOL_ID, _pool(POOL_ID, "edge")),  # same bytes: owner only
            Change("resource", RESOURCE_ID, None),
            Change("resource", "never-stored", None),
        ],
        chunk=None,
    )
    assert applied == 1
    assert [e.event for e in store.read_events("0-0", block_ms=0)] == [
        "create",
        "create",
        "delete",
    ]
    assert store.owned_by("k8s") == {("resource_pool", POOL_ID)}
    assert store.read_objects([("resource", RESOURCE_ID)]) == {}


def test_the_tailer_takes_what_a_load_leaves_alive_out_of_the_collector(redis_url: str) -> None:
    """After each load the tailer freezes what is alive (gc.freeze): a full collection no
    longer walks the inventory (a pause of every call in flight at 100,000 resources)."""
    store = InventoryStore(connect(redis_url))
    store.apply("static", [Change("resource_pool", POOL_ID, _pool(POOL_ID, "frozen"))])
    cache = InventoryCache("https://gw")
    stop = threading.Event()
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tailer = EventTailer(store, cache, stop)
    tailer.start()
    try:
        wait_until(lambda: cache.loaded, 10, "the tailer's first load")
        wait_until(lambda: gc.get_freeze_count() > 0, 10, "the load's objects frozen")
        # The loaded view is not among the objects the collector walks.
        assert not any(obj is cache._objects for obj in gc.get_objects())
        assert [pool.name for pool in _pools(cache)] == ["frozen"]
    finally:
        stop.set()
        tailer.join(5)
        gc.unfreeze()
