"""The in-process inventory view that serves every read.

It is loaded from a Redis snapshot and then kept coherent by applying the
inventory:events stream in version order (see server.store), so a steady SMO poll
never costs a Redis round trip, every replica converges on the same view, and reads
keep working from the last known state while Redis is away.

Wire objects are built from domain objects lazily and memoized; a change to an
object drops its memo, and a change to an object others embed (the O-Cloud, a site,
an alarm dictionary) drops the memos of the kinds that embed it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

from google.protobuf.message import Message
from o2ims.adapter.v1 import domain_pb2
from o2ims.inventory.v1 import inventory_pb2 as v1

from adapters.contract import KINDS
from server import wire_v1
from server.store import Snapshot, StoredEvent

# Which memoized wire kinds embed data of another kind.
_DEPENDENTS: Final[dict[str, tuple[str, ...]]] = {
    "o_cloud": ("resource_pool", "deployment_manager"),
    "site": ("resource_pool",),
    "alarm_dictionary": ("resource_type",),
}


def _parse(kind: str, payload: bytes) -> Any:
    obj = domain_pb2.InventoryObject.FromString(payload)
    return getattr(obj, kind)


class InventoryCache:
    """Thread-safe: one writer (the event tailer), many readers (gRPC handlers)."""

    def __init__(self, service_uri: str) -> None:
        self._service_uri = service_uri
        self._lock = threading.RLock()
        self._objects: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self._pool_resources: dict[str, set[str]] = {}
        self._sorted: dict[str, list[str]] = {}
        self._v1: dict[str, dict[str, Message]] = {kind: {} for kind in KINDS}
        self._version = 0
        self._last_event_id = "0-0"
        self._loaded = False

    # --- state -----------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def version(self) -> int:
        return self._version

    @property
    def last_event_id(self) -> str:
        return self._last_event_id

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {kind: len(objects) for kind, objects in self._objects.items()}

    def load(self, snapshot: Snapshot) -> None:
        """Replace the whole view by a snapshot."""
        objects = {
            kind: {oid: _parse(kind, payload) for oid, payload in snapshot.objects[kind].items()}
            for kind in KINDS
        }
        pool_resources: dict[str, set[str]] = {}
        for resource_id, resource in objects["resource"].items():
            pool_resources.setdefault(resource.resource_pool_id, set()).add(resource_id)
        with self._lock:
            self._objects = objects
            self._pool_resources = pool_resources
            self._sorted.clear()
            self._v1 = {kind: {} for kind in KINDS}
            self._version = snapshot.version
            self._last_event_id = snapshot.last_event_id
            self._loaded = True

    def apply(self, event: StoredEvent) -> bool:
        """Apply the next event. False means a gap (trimmed stream, reset Redis): reload."""
        with self._lock:
            if event.version <= self._version:
                self._last_event_id = event.stream_id
                return True  # already part of the loaded snapshot
            if event.version != self._version + 1:
                return False
            kind, object_id = event.kind, event.object_id
            objects = self._objects[kind]
            previous = objects.get(object_id)
            if event.event == "delete":
                objects.pop(object_id, None)
            else:
                objects[object_id] = _parse(kind, event.post)
            if kind == "resource":
                self._reindex_resource(object_id, previous, objects.get(object_id))
            if (previous is None) != (object_id not in objects):
                self._sorted.pop(kind, None)
            self._v1[kind].pop(object_id, None)
            if kind == "o_cloud":
                self._v1["o_cloud"].clear()
            for dependent in _DEPENDENTS.get(kind, ()):
                self._v1[dependent].clear()
            self._version = event.version
            self._last_event_id = event.stream_id
            return True

    def _reindex_resource(self, resource_id: str, previous: Any, current: Any) -> None:
        for resource, add in ((previous, False), (current, True)):
            if resource is None:
                continue
            pool = resource.resource_pool_id
            members = self._pool_resources.setdefault(pool, set())
            if add:
                members.add(resource_id)
            else:
                members.discard(resource_id)
            self._sorted.pop("resource@" + pool, None)

    # --- v1 reads ----------------------------------------------------------------

    def _ordered_ids(self, kind: str) -> list[str]:
        ids = self._sorted.get(kind)
        if ids is None:
            ids = self._sorted[kind] = sorted(self._objects[kind])
        return ids

    def _wire(self, kind: str, object_id: str, build: Callable[[Any], Message]) -> Message | None:
        memo = self._v1[kind]
        wire = memo.get(object_id)
        if wire is None:
            domain = self._objects[kind].get(object_id)
            if domain is None:
                return None
            wire = memo[object_id] = build(domain)
        return wire

    def _o_cloud(self) -> domain_pb2.OCloud | None:
        ids = self._ordered_ids("o_cloud")
        return self._objects["o_cloud"][ids[0]] if ids else None

    def _builder(self, kind: str) -> Callable[[Any], Message]:
        o_cloud = self._o_cloud()
        o_cloud_id = o_cloud.o_cloud_id if o_cloud is not None else ""
        builders: dict[str, Callable[[Any], Message]] = {
            "resource_type": lambda rt: wire_v1.resource_type_info(
                rt, self._objects["alarm_dictionary"]
            ),
            "resource_pool": lambda pool: wire_v1.resource_pool_info(
                pool, o_cloud_id, self._objects["site"]
            ),
            "resource": wire_v1.resource_info,
            "deployment_manager": lambda dm: wire_v1.deployment_manager_info(dm, o_cloud_id),
        }
        return builders[kind]

    def v1_cloud_info(self) -> v1.OCloudInfo | None:
        with self._lock:
            o_cloud = self._o_cloud()
            if o_cloud is None:
                return None
            wire = self._wire(
                "o_cloud",
                o_cloud.o_cloud_id,
                lambda oc: wire_v1.cloud_info(oc, self._service_uri),
            )
            assert isinstance(wire, v1.OCloudInfo)
            return wire

    def v1_list(self, kind: str) -> list[Any]:
        """Every object of a kind, as v1 wire objects, ordered by id."""
        with self._lock:
            build = self._builder(kind)
            return [self._wire(kind, oid, build) for oid in self._ordered_ids(kind)]

    def v1_get(self, kind: str, object_id: str) -> Any | None:
        with self._lock:
            return self._wire(kind, object_id, self._builder(kind))

    def v1_pool_resources(self, pool_id: str) -> list[Any] | None:
        """The resources of a pool, ordered by id; None if the pool is unknown."""
        with self._lock:
            if pool_id not in self._objects["resource_pool"]:
                return None
            key = "resource@" + pool_id
            ids = self._sorted.get(key)
            if ids is None:
                ids = self._sorted[key] = sorted(self._pool_resources.get(pool_id, ()))
            build = self._builder("resource")
            return [self._wire("resource", oid, build) for oid in ids]
