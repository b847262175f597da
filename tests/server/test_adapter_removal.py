"""An adapter removed from the core's configuration takes its objects with it (delete
events, so subscribers hear of it); an adapter that is merely away keeps them served.
Real adapter servers, the core's watcher and writer, a real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import ObjectKey
from adapters.publisher import AdapterServicer, ObjectSetPublisher, create_adapter_server
from devstack.processes import wait_until
from server.store import EVENTS_KEY, InventoryStore, connect, decode_event
from server.sync import AdapterWatcher, StoreWriter


def _objects(prefix: int) -> list[domain_pb2.InventoryObject]:
    pool_id = f"7d1d5a2a-5a47-4c8e-9f0b-{prefix:012d}"
    return [
        domain_pb2.InventoryObject(
            resource_pool=domain_pb2.ResourcePool(resource_pool_id=pool_id, name=f"pool{prefix}")
        ),
        *(
            domain_pb2.InventoryObject(
                resource=domain_pb2.Resource(
                    resource_id=f"f6a1b0c2-3d4e-4f50-{prefix:04d}-{n:012d}",
                    resource_pool_id=pool_id,
                )
            )
            for n in range(3)
        ),
    ]


@contextmanager
def _adapter(name: str, prefix: int) -> Iterator[str]:
    publisher = ObjectSetPublisher()
    publisher.replace(_objects(prefix))
    server, port = create_adapter_server(
        AdapterServicer(name, "static", "test", publisher, liveness_check_interval=0.2)
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        publisher.close()
        server.stop(grace=None)


@contextmanager
def _core(redis_url: str, addresses: list[str]) -> Iterator[list[AdapterWatcher]]:
    """The core's sync half, as server/app.py wires it."""
    stop = threading.Event()
    writer = StoreWriter(InventoryStore(connect(redis_url)), stop, len(addresses))
    watchers = [AdapterWatcher(address, writer, stop, probe_interval=0.5) for address in addresses]
    writer.start()
    for watcher in watchers:
        watcher.start()
    try:
        yield watchers
    finally:
        stop.set()
        for watcher in watchers:
            watcher.cancel()
        writer.join(timeout=5)


def _owners(store: InventoryStore) -> dict[str, set[ObjectKey]]:
    return store.owners()


def _events(store: InventoryStore, after: str) -> list[tuple[str, str]]:
    entries: Any = store.client.xrange(EVENTS_KEY, min=f"({after}") if after else []
    return [
        (event.event, event.kind)
        for event in (decode_event(entry_id, fields) for entry_id, fields in entries)
    ]


@pytest.fixture
def store(redis_url: str) -> InventoryStore:
    return InventoryStore(connect(redis_url))


def test_removing_an_adapter_from_the_configuration_deletes_its_objects_once(
    redis_url: str, store: InventoryStore
) -> None:
    with ExitStack() as adapters:
        lab = adapters.enter_context(_adapter("lab", 1))
        edge = adapters.enter_context(_adapter("edge", 2))
        with _core(redis_url, [lab, edge]):
            wait_until(
                lambda: {k: len(v) for k, v in _owners(store).items()} == {"lab": 4, "edge": 4},
                timeout=15,
                what="both adapters stored",
            )
        mark = store.snapshot().last_event_id

        # The core restarts with `edge` no longer configured (it still runs: irrelevant).
        with _core(redis_url, [lab]) as [watcher]:
            wait_until(lambda: "edge" not in _owners(store), timeout=15, what="edge removed")
            assert watcher.status.connected
            time.sleep(0.5)  # room for a duplicate or a spurious event to show up
        assert {owner: len(keys) for owner, keys in _owners(store).items()} == {"lab": 4}
        # Exactly the 4 deletions, children before their pool; nothing of lab's changed.
        assert _events(store, mark) == [("delete", "resource")] * 3 + [("delete", "resource_pool")]


def test_an_adapter_that_is_away_at_start_keeps_its_objects(
    redis_url: str, store: InventoryStore
) -> None:
    with _adapter("lab", 1) as lab:
        with _adapter("edge", 2) as edge, _core(redis_url, [lab, edge]):
            wait_until(lambda: len(_owners(store)) == 2, timeout=15, what="both stored")
        mark = store.snapshot().last_event_id
        # `edge` is still configured but down: nothing of it may go.
        with _core(redis_url, [lab, edge]) as [lab_watcher, edge_watcher]:
            wait_until(lambda: lab_watcher.status.synced_once, timeout=15, what="lab synced")
            time.sleep(1.0)
            assert not edge_watcher.status.connected
            assert {owner: len(keys) for owner, keys in _owners(store).items()} == {
                "lab": 4,
                "edge": 4,
            }
        assert _events(store, mark) == []
