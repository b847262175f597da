"""The Kubernetes adapter at work: the reflector's nodes, mapped, into the publisher.

Two threads. The reflector reads the API server and, on its own thread, reduces each node
to its NodeView and compares it with the last one it saw: a heartbeat-only event ends
there, having cost a JSON parse and a comparison. A changed view is queued; the applier
takes whatever has queued within `batch_window` of the first item, builds the changed
objects, and hands the publisher one change set for the whole batch (a relist, or a burst
of node changes, is one revision).
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog
from o2ims.adapter.v1 import adapter_pb2

from adapters.kubernetes.cluster import Connection
from adapters.kubernetes.inventory import Inventory
from adapters.kubernetes.mapping import ClusterIdentity, NodeView, node_view
from adapters.kubernetes.mapping_file import MappingConfig
from adapters.kubernetes.reflector import NodeReflector, paused_gc
from adapters.publisher import ObjectSetPublisher

DEFAULT_BATCH_WINDOW: Final = 0.05


@dataclass(frozen=True)
class _Listed:
    identity: ClusterIdentity
    views: list[NodeView]


@dataclass(frozen=True)
class _Identified:
    identity: ClusterIdentity


@dataclass(frozen=True)
class _Changed:
    name: str
    view: NodeView | None  # None: deleted


_Item = _Listed | _Identified | _Changed | None  # None: wake up (to stop)


class KubernetesAdapter:
    """Publishes one cluster's nodes (and what derives from them) through `publisher`."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        mapping: MappingConfig,
        publisher: ObjectSetPublisher,
        adapter_name: str,
        *,
        admin: dict[str, str] | None = None,
        logger: structlog.stdlib.BoundLogger | None = None,
        batch_window: float = DEFAULT_BATCH_WINDOW,
        reflector_options: dict[str, Any] | None = None,
    ) -> None:
        self._mapping = mapping
        self._publisher = publisher
        self._admin = admin
        self._log: structlog.stdlib.BoundLogger = logger or structlog.get_logger()
        self._batch_window = batch_window
        self._inventory = Inventory(mapping, adapter_name)
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._synced = threading.Event()
        # The reflector thread's own: the last view seen of each node, and the cluster name.
        self._seen: dict[str, NodeView] = {}
        self._cluster_name = ""
        self._reflector = NodeReflector(
            connect, self, publisher.set_source_problem, self._log, **(reflector_options or {})
        )

    @property
    def synced(self) -> threading.Event:
        """Set once the first complete list is published."""
        return self._synced

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._apply_loop, name="node-applier", daemon=True)
        self._thread.start()
        self._reflector.start()

    def stop(self) -> None:
        self._reflector.stop()
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # --- NodeSink: called on the reflector's thread -------------------------------------

    def _identity(self, connection: Connection, uid: str, version: str) -> ClusterIdentity:
        return ClusterIdentity(
            uid=uid,
            name=self._mapping.cluster_name or connection.cluster_name,
            version=version,
            api_url=connection.api_url,
            ca_cert=connection.ca_cert,
            admin=self._admin,
        )

    def listed(
        self, connection: Connection, uid: str, version: str, nodes: list[dict[str, Any]]
    ) -> None:
        identity = self._identity(connection, uid, version)
        self._cluster_name = identity.name
        views = [node_view(node, self._mapping, identity.name) for node in nodes]
        self._seen = {view.name: view for view in views}
        self._queue.put(_Listed(identity, views))

    def identified(self, connection: Connection, uid: str, version: str) -> None:
        self._queue.put(_Identified(self._identity(connection, uid, version)))

    def event(self, kind: str, node: dict[str, Any]) -> None:
        name = (node.get("metadata") or {}).get("name")
        if not name:
            return
        if kind == "DELETED":
            if self._seen.pop(name, None) is not None:
                self._queue.put(_Changed(name, None))
            return
        view = node_view(node, self._mapping, self._cluster_name)
        if self._seen.get(name) == view:
            return  # a heartbeat: nothing O2ims shows has changed
        self._seen[name] = view
        self._queue.put(_Changed(name, view))

    # --- the applier ---------------------------------------------------------------------

    def _apply_loop(self) -> None:
        while not self._stop.is_set():
            first = self._queue.get()
            if first is None:
                continue
            batch: list[_Item] = [first]
            deadline = time.monotonic() + self._batch_window
            while True:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else None
                except queue.Empty:
                    break
                if item is None:
                    break
                batch.append(item)
            try:
                with paused_gc():
                    self._apply(batch)
            except Exception:  # one bad batch must not end the adapter; the next list heals
                self._log.exception("inventory_apply_failed", items=len(batch))

    def _apply(self, batch: list[_Item]) -> None:
        inventory = self._inventory
        changes: dict[str, NodeView | None] = {}
        identity: ClusterIdentity | None = None
        whole = False  # a first list, or another cluster: the set is replaced whole
        for item in batch:
            if isinstance(item, _Listed):
                identity = item.identity
                if inventory.identity is None or inventory.identity.uid != identity.uid:
                    inventory.reset(identity)
                    whole = True
                # The list is the whole truth: what it lacks is gone, whatever came before.
                changes = dict.fromkeys(inventory.views)
                changes.update((view.name, view) for view in item.views)
            elif isinstance(item, _Identified):
                identity = item.identity
            elif isinstance(item, _Changed):
                changes[item.name] = item.view
        if inventory.identity is None:
            return
        upserts, deletions = inventory.apply(changes, identity)
        if whole:
            events = self._publisher.replace(upserts)
        elif upserts or deletions:
            events = self._publisher.update(upserts, deletions)
        else:
            return
        self._report(events, whole)

    def _report(self, events: list[adapter_pb2.WatchObjectsResponse], whole: bool) -> None:
        for refused in self._publisher.refused:
            self._log.error("object_refused", kind=refused.kind, id=refused.object_id)
        if whole and not self._synced.is_set():
            # What is alive now lives as long as the process (views, published objects):
            # out of the collector's generations, later collections skip it.
            gc.freeze()
            self._synced.set()
            self._log.info(
                "inventory_synced",
                nodes=len(self._inventory.views),
                seconds=round(time.monotonic() - self._started, 3),
                revision=self._publisher.revision,
            )
        if events:
            counts = Counter(event.type for event in events)
            self._log.info(
                "inventory_changed",
                nodes=len(self._inventory.views),
                added=counts[adapter_pb2.EVENT_TYPE_ADDED],
                modified=counts[adapter_pb2.EVENT_TYPE_MODIFIED],
                deleted=counts[adapter_pb2.EVENT_TYPE_DELETED],
                revision=events[0].revision,
            )
