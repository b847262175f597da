"""The in-process inventory view that serves every read.

It is loaded from a Redis snapshot and then kept coherent by applying the
inventory:events stream in version order (see server.store), so a steady SMO poll
never costs a Redis round trip, every replica converges on the same view, and reads
keep working from the last known state while Redis is away.

Wire objects of each served major version are built from the domain objects lazily
and memoized. Resources (the one large collection) embed nothing from other objects,
so a change to a resource drops only its own memos. Every other kind is small, and
some wire objects embed or derive from others (a 1.x resource type embeds its alarm
dictionary, a 2.0 site lists its pools), so a change to any of them drops the memos of
all the small kinds: always correct, and cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from google.protobuf.message import Message
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import KINDS
from server.query import index_key
from server.store import Snapshot, StoredEvent
from server.wire import BuildContext, WireModel

# Resource attributes SMOs filter on with eq/in, indexed so such a filter never scans the
# whole inventory: JSON name -> domain field.
RESOURCE_INDEXES: Final = {
    "resourcePoolId": "resource_pool_id",
    "resourceTypeId": "resource_type_id",
    "resourceId": "resource_id",
    "name": "name",
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
        # attribute -> index_key(value) -> resource ids
        self._resource_index: dict[str, dict[str, set[str]]] = {a: {} for a in RESOURCE_INDEXES}
        self._sorted: dict[str, list[str]] = {}
        # (major, kind) -> id -> wire message
        self._memo: dict[tuple[str, str], dict[str, Message]] = {}
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
        index: dict[str, dict[str, set[str]]] = {a: {} for a in RESOURCE_INDEXES}
        for resource_id, resource in objects["resource"].items():
            for attribute, domain_field in RESOURCE_INDEXES.items():
                key = index_key(getattr(resource, domain_field))
                index[attribute].setdefault(key, set()).add(resource_id)
        with self._lock:
            self._objects = objects
            self._resource_index = index
            self._sorted.clear()
            self._memo.clear()
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
            if (previous is None) != (object_id not in objects):
                self._sorted.pop(kind, None)
            if kind == "resource":
                self._reindex_resource(object_id, previous, objects.get(object_id))
                for (_, memo_kind), memo in self._memo.items():
                    if memo_kind == "resource":
                        memo.pop(object_id, None)
            else:
                for (_, memo_kind), memo in self._memo.items():
                    if memo_kind != "resource":
                        memo.clear()
            self._version = event.version
            self._last_event_id = event.stream_id
            return True

    def _reindex_resource(self, resource_id: str, previous: Any, current: Any) -> None:
        for resource, add in ((previous, False), (current, True)):
            if resource is None:
                continue
            for attribute, domain_field in RESOURCE_INDEXES.items():
                key = index_key(getattr(resource, domain_field))
                members = self._resource_index[attribute].setdefault(key, set())
                if add:
                    members.add(resource_id)
                else:
                    members.discard(resource_id)
            self._sorted.pop("resource@" + resource.resource_pool_id, None)

    # --- reads -------------------------------------------------------------------

    def _ordered_ids(self, kind: str) -> list[str]:
        ids = self._sorted.get(kind)
        if ids is None:
            ids = self._sorted[kind] = sorted(self._objects[kind])
        return ids

    def _o_cloud_id(self) -> str:
        ids = self._ordered_ids("o_cloud")
        return ids[0] if ids else ""

    def _wire(self, model: WireModel, kind: str, object_id: str) -> Message | None:
        memo = self._memo.setdefault((model.major, kind), {})
        wire = memo.get(object_id)
        if wire is None:
            domain = self._objects[kind].get(object_id)
            if domain is None:
                return None
            context = BuildContext(self._objects, self._o_cloud_id(), self._service_uri)
            wire = memo[object_id] = model.builders[kind](domain, context)
        return wire

    def domain(self, kind: str, object_id: str) -> Any | None:
        """The domain object itself (for checks the wire model cannot answer)."""
        with self._lock:
            return self._objects[kind].get(object_id)

    def resources_named(self, name: str) -> list[Any]:
        """Every top-level domain resource with this name (index lookup)."""
        with self._lock:
            ids = self._resource_index["name"].get(index_key(name), set())
            resources = self._objects["resource"]
            return [resources[oid] for oid in sorted(ids) if oid in resources]

    def alarm_clearing_type(self, alarm_definition_id: str) -> int | None:
        """The clearingType (domain ClearingType) of the alarm definition with this id in
        any alarm dictionary of the inventory; None if there is no such definition."""
        with self._lock:
            for dictionary in self._objects["alarm_dictionary"].values():
                for definition in dictionary.alarm_definition:
                    if definition.alarm_definition_id == alarm_definition_id:
                        return int(definition.clearing_type)
        return None

    def cloud_info(self, model: WireModel) -> Any | None:
        """The O-Cloud in `model`'s wire form; None until an adapter provides it."""
        with self._lock:
            o_cloud_id = self._o_cloud_id()
            return self._wire(model, "o_cloud", o_cloud_id) if o_cloud_id else None

    def iter_wire(
        self, model: WireModel, kind: str, ids: Sequence[str], chunk: int = 512
    ) -> Iterator[tuple[str, Any]]:
        """(id, wire object) for each of `ids` that still exists, in order. The lock is
        taken once per chunk, not per object: a full scan of 100,000 resources is
        dominated by per-object overhead otherwise, while other threads still get in."""
        for start in range(0, len(ids), chunk):
            with self._lock:
                memo = self._memo.setdefault((model.major, kind), {})
                found = []
                for object_id in ids[start : start + chunk]:
                    wire = memo.get(object_id)
                    if wire is None:
                        wire = self._wire(model, kind, object_id)
                        if wire is None:
                            continue  # removed since the ids were taken
                    found.append((object_id, wire))
            yield from found

    def get(self, model: WireModel, kind: str, object_id: str) -> Any | None:
        with self._lock:
            return self._wire(model, kind, object_id)

    def ids(self, kind: str) -> list[str]:
        """Every id of a kind, sorted. The list is never mutated afterwards (a change
        replaces it), so callers may keep iterating it without the lock."""
        with self._lock:
            return self._ordered_ids(kind)

    def resource_ids(
        self, pool_id: str, constraints: Mapping[str, set[str]] | None = None
    ) -> list[str] | None:
        """Sorted ids of a pool's resources, narrowed by index constraints (indexed
        attribute -> acceptable index keys); None if the pool is unknown."""
        with self._lock:
            if pool_id not in self._objects["resource_pool"]:
                return None
            cache_key = "resource@" + pool_id
            ids = self._sorted.get(cache_key)
            if ids is None:
                members = self._resource_index["resourcePoolId"].get(index_key(pool_id), set())
                ids = self._sorted[cache_key] = sorted(members)
            if not constraints:
                return ids
            index = self._resource_index
            narrowed = min(
                (
                    set().union(*(index[attribute].get(key, ()) for key in keys))
                    for attribute, keys in constraints.items()
                ),
                key=len,
            )
            narrowed &= index["resourcePoolId"].get(index_key(pool_id), set())
            # Sorting a few candidates beats walking the pool; walking keeps order otherwise.
            if len(narrowed) * 8 < len(ids):
                return sorted(narrowed)
            return [oid for oid in ids if oid in narrowed]
