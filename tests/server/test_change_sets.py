"""Change sets end to end: a real adapter server, the core's watcher and writer, a real
Redis. A set is applied whole at its COMMIT or not at all; an adapter that does not
commit its sets keeps the per-event apply."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from o2ims.adapter.v1 import adapter_pb2, domain_pb2
from structlog.testing import capture_logs

from adapters.contract import ObjectKey, object_key, serialize
from adapters.publisher import AdapterServicer, ObjectSetPublisher, create_adapter_server
from devstack.processes import wait_until
from server.store import EVENTS_KEY, InventoryStore, StoredEvent, connect, decode_event
from server.sync import AdapterWatcher, StoreWriter

POOL_ID = "7d1d5a2a-5a47-4c8e-9f0b-8d5a3e3f1c11"
CUT_AFTER = 11


def _resource(number: int, description: str = "v1") -> domain_pb2.InventoryObject:
    return domain_pb2.InventoryObject(
        resource=domain_pb2.Resource(
            resource_id=f"f6a1b0c2-3d4e-4f50-8a6b-{number:012d}",
            resource_pool_id=POOL_ID,
            description=description,
        )
    )


def _before() -> list[domain_pb2.InventoryObject]:
    """A pool and resources 1 to 13: 14 objects."""
    pool = domain_pb2.ResourcePool(resource_pool_id=POOL_ID, name="edge")
    return [domain_pb2.InventoryObject(resource_pool=pool)] + [_resource(n) for n in range(1, 14)]


def _after() -> list[domain_pb2.InventoryObject]:
    """From _before(), one edit of 23 objects: 1-10 modified, 14-23 added, 11-13 deleted."""
    return [
        _before()[0],
        *(_resource(n, "v2") for n in range(1, 11)),
        *(_resource(n) for n in range(14, 24)),
    ]


def _by_key(objects: list[domain_pb2.InventoryObject]) -> dict[ObjectKey, bytes]:
    return {object_key(obj): serialize(obj) for obj in objects}


class _TestAdapter(AdapterServicer):
    """An adapter that can die in the middle of a change set, stay away until told to
    come back, and pretend to be an adapter from before change sets (`legacy`)."""

    def __init__(self, publisher: ObjectSetPublisher, legacy: bool) -> None:
        super().__init__("lab", "static", "test", publisher, liveness_check_interval=0.2)
        self.legacy = legacy
        self.watches_open = threading.Event()
        self.watches_open.set()
        # Cut the stream after this many events of a live change set (None: never),
        # and refuse new watches until watches_open is set again.
        self.cut_after: int | None = None

    def WatchObjects(
        self, request: adapter_pb2.WatchObjectsRequest, context: grpc.ServicerContext
    ) -> Iterator[adapter_pb2.WatchObjectsResponse]:
        if not self.watches_open.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "test: the adapter is away")
        # Its subscription is closed by the RPC's end, however the stream ends.
        events = super().WatchObjects(request, context)
        synced = False
        in_set = 0
        for event in events:
            if event.type == adapter_pb2.EVENT_TYPE_SYNCED:
                synced = True
                if self.legacy:
                    event = adapter_pb2.WatchObjectsResponse(  # noqa: PLW2901
                        type=event.type, revision=event.revision
                    )
            elif event.type == adapter_pb2.EVENT_TYPE_COMMIT:
                in_set = 0
                if self.legacy:
                    continue
            elif synced:
                if self.cut_after is not None and in_set == self.cut_after:
                    self.watches_open.clear()
                    context.abort(grpc.StatusCode.UNAVAILABLE, "test: died in a change set")
                in_set += 1
            yield event


@contextmanager
def _running(
    redis_url: str, publisher: ObjectSetPublisher, *, legacy: bool = False, **watcher_options: int
) -> Iterator[tuple[_TestAdapter, AdapterWatcher, InventoryStore]]:
    adapter = _TestAdapter(publisher, legacy)
    server, port = create_adapter_server(adapter)
    stop = threading.Event()
    store = InventoryStore(connect(redis_url))
    writer = StoreWriter(store, stop)
    watcher = AdapterWatcher(
        f"127.0.0.1:{port}", writer, stop, probe_interval=0.5, **watcher_options
    )
    writer.start()
    watcher.start()
    try:
        wait_until(
            lambda: store.client.xlen(EVENTS_KEY) == len(publisher.snapshot()[1]),
            timeout=15,
            what="the initial set in the store",
        )
        yield adapter, watcher, store
    finally:
        stop.set()
        watcher.cancel()
        server.stop(grace=None)


def _stored(store: InventoryStore) -> dict[ObjectKey, bytes]:
    return store.read_objects(store.owned_by("lab"))


def _last_event_id(store: InventoryStore) -> str:
    return store.snapshot().last_event_id


def _events_after(store: InventoryStore, event_id: str) -> list[StoredEvent]:
    """Without waiting (read_events with block_ms=0 would wait for ever for none)."""
    entries: Any = store.client.xrange(EVENTS_KEY, min=f"({event_id}")
    return [decode_event(entry_id, fields) for entry_id, fields in entries]


@pytest.fixture
def publisher() -> ObjectSetPublisher:
    published = ObjectSetPublisher()
    published.replace(_before())
    return published


def test_a_change_set_cut_in_the_middle_leaves_nothing_then_lands_once_on_reconnect(
    redis_url: str, publisher: ObjectSetPublisher
) -> None:
    with (
        _running(redis_url, publisher) as (adapter, watcher, store),
        capture_logs() as logs,
    ):
        before_id = _last_event_id(store)
        adapter.cut_after = CUT_AFTER
        assert len(publisher.replace(_after())) == 23

        wait_until(
            lambda: not adapter.watches_open.is_set() and not watcher.status.connected,
            timeout=10,
            what="the stream cut",
        )
        time.sleep(0.5)  # what the watcher received before the cut had time to land
        [discarded] = [log for log in logs if log["event"] == "adapter_change_set_discarded"]
        assert discarded["objects"] == CUT_AFTER
        assert _events_after(store, before_id) == []
        assert _stored(store) == _by_key(_before())

        adapter.cut_after = None
        adapter.watches_open.set()
        wait_until(lambda: watcher.status.connected, timeout=15, what="the watch back")
        wait_until(lambda: _stored(store) == _by_key(_after()), timeout=10, what="the set applied")
        time.sleep(0.3)  # room for a duplicate to show up
        events = _events_after(store, before_id)
    assert len(events) == 23
    assert len({(event.kind, event.object_id) for event in events}) == 23
    assert (
        sorted(event.event for event in events)
        == ["create"] * 10 + ["delete"] * 3 + ["modify"] * 10
    )


def test_a_change_set_of_23_objects_appears_in_one_step_in_order(
    redis_url: str, publisher: ObjectSetPublisher
) -> None:
    with _running(redis_url, publisher) as (_, _watcher, store):
        reader = connect(redis_url)
        base = reader.xlen(EVENTS_KEY)
        before_id = _last_event_id(store)
        lengths = [base]
        done = threading.Event()

        def poll() -> None:
            deadline = time.monotonic() + 10
            while not done.is_set() and time.monotonic() < deadline:
                length = reader.xlen(EVENTS_KEY)
                if length != lengths[-1]:
                    lengths.append(length)

        poller = threading.Thread(target=poll)
        poller.start()
        store.client.config_resetstat()
        published = publisher.replace(_after())
        wait_until(lambda: _stored(store) == _by_key(_after()), timeout=10, what="the set applied")
        done.set()
        poller.join()
        stats = store.client.info("commandstats")
        events = _events_after(store, before_id)
    assert lengths == [base, base + 23]  # never a length in between
    assert stats["cmdstat_evalsha"]["calls"] == 1  # by construction: one script call
    assert [(event.kind, event.object_id) for event in events] == [
        object_key(event.object) for event in published
    ]


def test_a_change_set_over_the_limit_is_dropped_with_the_reason_then_resynced(
    redis_url: str, publisher: ObjectSetPublisher
) -> None:
    with (
        _running(redis_url, publisher, max_change_set_objects=5) as (adapter, watcher, store),
        capture_logs() as logs,
    ):
        before_id = _last_event_id(store)
        adapter.watches_open.clear()  # hold the reconnect, to look at the state between
        publisher.replace(_after())

        wait_until(lambda: not watcher.status.connected, timeout=10, what="the watch dropped")
        [dropped] = [log for log in logs if log["event"] == "adapter_disconnected"]
        assert dropped["error"].startswith("a change set outgrew the core's limit of 5 objects")
        assert _events_after(store, before_id) == []

        adapter.watches_open.set()
        wait_until(
            lambda: _stored(store) == _by_key(_after()), timeout=15, what="the set via replay"
        )
        wait_until(lambda: watcher.status.reasons() == [], timeout=5, what="the reason cleared")
        assert len(_events_after(store, before_id)) == 23


def test_an_adapter_that_does_not_commit_its_sets_is_applied_event_by_event(
    redis_url: str, publisher: ObjectSetPublisher
) -> None:
    with _running(redis_url, publisher, legacy=True) as (adapter, _watcher, store):
        before_id = _last_event_id(store)
        adapter.cut_after = CUT_AFTER
        publisher.replace(_after())

        # As before change sets: what arrived before the cut is applied.
        wait_until(
            lambda: len(_events_after(store, before_id)) == CUT_AFTER,
            timeout=10,
            what="the events before the cut applied",
        )
        adapter.cut_after = None
        adapter.watches_open.set()
        wait_until(
            lambda: _stored(store) == _by_key(_after()), timeout=15, what="the rest via replay"
        )
        assert len(_events_after(store, before_id)) == 23
