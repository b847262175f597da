"""The core's adapter watcher against a real adapter server and a real Redis: a stream
that fails on every replay is reported as stuck, and the adapter's own problems reach
the watcher's status."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from o2ims.adapter.v1 import domain_pb2

from adapters.publisher import AdapterServicer, ObjectSetPublisher, create_adapter_server
from devstack.processes import wait_until
from server.store import InventoryStore, connect
from server.sync import AdapterWatcher, StoreWriter

POOL_ID = "7d1d5a2a-5a47-4c8e-9f0b-8d5a3e3f1c11"
RESOURCE_ID = "f6a1b0c2-3d4e-4f50-8a6b-7c8d9e0f1a2b"


def _objects(description: str) -> list[domain_pb2.InventoryObject]:
    return [
        domain_pb2.InventoryObject(resource_pool=domain_pb2.ResourcePool(resource_pool_id=POOL_ID)),
        domain_pb2.InventoryObject(
            resource=domain_pb2.Resource(
                resource_id=RESOURCE_ID, resource_pool_id=POOL_ID, description=description
            )
        ),
    ]


@contextmanager
def _watch(
    redis_url: str, publisher: ObjectSetPublisher
) -> Iterator[tuple[AdapterWatcher, InventoryStore]]:
    server, port = create_adapter_server(AdapterServicer("lab", "static", "test", publisher))
    stop = threading.Event()
    store = InventoryStore(connect(redis_url))
    writer = StoreWriter(store, stop)
    watcher = AdapterWatcher(f"127.0.0.1:{port}", writer, stop, probe_interval=0.1)
    writer.start()
    watcher.start()
    try:
        yield watcher, store
    finally:
        stop.set()
        watcher.cancel()
        server.stop(grace=None)
        # Not joined: these threads keep their stop event in Thread._stop, which join() uses.


@pytest.fixture
def publisher() -> ObjectSetPublisher:
    # No size limit of its own: it sends what the core cannot receive (4 MiB).
    return ObjectSetPublisher(max_object_bytes=64 * 1024 * 1024)


def test_a_stream_failing_on_every_replay_is_reported_stuck(
    redis_url: str, publisher: ObjectSetPublisher
) -> None:
    publisher.replace(_objects("x" * (5 * 1024 * 1024)))
    with _watch(redis_url, publisher) as (watcher, store):
        wait_until(lambda: watcher.status.stuck, timeout=15, what="the watch reported stuck")
        [reason] = watcher.status.reasons()
        assert reason.startswith("adapter lab: watch stream stuck, failed 3 times in a row (")
        assert "RESOURCE_EXHAUSTED" in reason
        assert f"after resource_pool '{POOL_ID}'" in reason
        assert not watcher.status.synced_once
        assert store.owned_by("lab") == set()  # nothing of the failed replay was applied

        publisher.replace(_objects("small again"))
        wait_until(lambda: watcher.status.synced_once, timeout=15, what="the watch synced")
        assert not watcher.status.stuck
        assert watcher.status.reasons() == []


def test_the_adapters_problems_reach_the_watcher_status(
    redis_url: str, publisher: ObjectSetPublisher
) -> None:
    publisher.replace(_objects("fine"))
    with _watch(redis_url, publisher) as (watcher, _):
        wait_until(lambda: watcher.status.synced_once, timeout=15, what="the watch synced")
        assert watcher.status.reasons() == []
        publisher.set_source_problem("inventory.yaml:7: broken (serving the last good inventory)")
        wait_until(
            lambda: (
                watcher.status.reasons()
                == ["adapter lab: inventory.yaml:7: broken (serving the last good inventory)"]
            ),
            timeout=5,
            what="the problem in the watcher's status",
        )
        publisher.set_source_problem("")
        wait_until(lambda: not watcher.status.problems, timeout=5, what="the problem cleared")


def test_an_adapter_that_has_not_read_its_source_is_waited_for_not_stuck(
    redis_url: str, publisher: ObjectSetPublisher
) -> None:
    publisher.set_source_problem("cluster unreachable since 10:00:00")
    with _watch(redis_url, publisher) as (watcher, store):
        # Several refused watches (backoff from 0.2 s): none counts as a failure.
        wait_until(
            lambda: (
                "ADAPTER_NOT_SYNCED" not in watcher.status.last_error
                and "not read its source" in watcher.status.last_error
            ),
            timeout=15,
            what="the refusal seen",
        )
        threading.Event().wait(2.0)
        assert watcher.status.failures == 0 and not watcher.status.stuck
        reasons = watcher.status.reasons()
        assert any("cluster unreachable since 10:00:00" in reason for reason in reasons)
        assert any("disconnected (UNAVAILABLE: the adapter has not read" in r for r in reasons)
        assert store.owned_by("lab") == set()

        publisher.set_source_problem("")
        publisher.replace(_objects("listed"))
        wait_until(lambda: watcher.status.synced_once, timeout=15, what="the watch synced")
        wait_until(lambda: len(store.owned_by("lab")) == 2, timeout=10, what="the set stored")
        # The problems read just before the set was published clear on the next probe.
        wait_until(lambda: watcher.status.reasons() == [], timeout=10, what="no reason left")
