"""A Redis server that answers in place of the one written to (a restart without
persistence, a replica promoted by Sentinel that lacked the last writes) gets the adapters'
whole state again, with events, even while the core has nothing to write: the writer would
otherwise never notice, and the store would stay without what the previous server lost."""

from __future__ import annotations

from pathlib import Path

from devstack.processes import wait_until
from devstack.redis_server import RedisServer
from server.store import EVENTS_KEY, InventoryStore, connect
from tests.server.test_adapter_removal import _adapter, _core


def test_an_idle_writer_refills_a_redis_server_that_lost_its_writes(tmp_path: Path) -> None:
    first = RedisServer(tmp_path / "first").start()
    store = InventoryStore(connect(first.url))
    try:
        with _adapter("lab", 1) as lab, _core(first.url, [lab]) as [watcher]:
            wait_until(lambda: len(store.owned_by("lab")) == 4, 15, "the adapter's 4 objects")
            stored = store.read_objects(store.owned_by("lab"))
            # Another server answers on the same address, without what the first held.
            first.kill()
            second = RedisServer(tmp_path / "second", first.port).start()
            try:
                wait_until(
                    lambda: store.read_objects(store.owned_by("lab")) == stored,
                    15,
                    "the adapter's objects written again into the new server",
                )
                # Written as changes: subscribers hear of every object again.
                assert store.client.xlen(EVENTS_KEY) == 4
                assert watcher.status.connected  # the adapter stream was never cut
            finally:
                second.stop()
    finally:
        first.stop()
