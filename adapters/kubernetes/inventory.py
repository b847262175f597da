"""The adapter's objects as a function of the nodes, maintained change by change.

Inventory keeps one NodeView per node and running aggregates over them (how many nodes
of each type, pool, region; allocatable sums; the runtimes, architectures, CNIs seen), so
a changed node costs its own Resource plus the few derived objects (types, pools, sites,
locations, the deployment manager), never a pass over every node. A node whose view did
not change (a heartbeat) costs nothing at all.

A changed node's alarms (alarms.py: one per abnormal condition) are rebuilt with its
Resource, and the ones it no longer has withdrawn; the publisher drops those whose state
did not change, so only a raised, changed or cleared alarm becomes an event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Final

from o2ims.adapter.v1 import domain_pb2

from adapters.contract import ALARM_KIND, ObjectKey, object_key
from adapters.kubernetes.alarms import alarm_dictionary, node_alarms
from adapters.kubernetes.mapping import (
    ClusterIdentity,
    ClusterTotals,
    NodeView,
    alarm_dictionary_id,
    deployment_manager,
    element_model,
    element_resources,
    element_type,
    location,
    location_id,
    node_resource,
    node_type,
    pool_objects,
    quantity_units,
    resource_id,
)
from adapters.kubernetes.mapping_file import MappingConfig

Changes = Mapping[str, NodeView | None]  # node name -> its new view, None when deleted
Update = tuple[list[domain_pb2.InventoryObject], list[ObjectKey]]  # upserts, deletions

_SUMMED: Final = ("nodes", "ready", "schedulable")


class Inventory:
    """Node views in, object changes out. Not thread-safe: one thread drives it."""

    def __init__(self, config: MappingConfig, adapter_name: str) -> None:
        self.config = config
        self.adapter_name = adapter_name
        self.identity: ClusterIdentity | None = None
        self.views: dict[str, NodeView] = {}
        self._alarm_ids: dict[str, tuple[str, ...]] = {}  # node name -> its alarms' ids
        self._reset_aggregates()
        self._must_derive = False

    def _reset_aggregates(self) -> None:
        self._types: Counter[tuple[tuple[str, str], ...]] = Counter()
        self._element_types: Counter[tuple[str, str]] = Counter()
        self._pool_regions: dict[str, Counter[str]] = {}
        self._regions: Counter[str] = Counter()
        self._allocatable: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._seen: dict[str, Counter[str]] = {
            name: Counter()
            for name in ("runtimes", "architectures", "systems", "kubelets", "cnis", "extended")
        }
        self._derived: dict[ObjectKey, domain_pb2.InventoryObject] = {}

    def reset(self, identity: ClusterIdentity) -> None:
        """Forget every node: the next apply() starts a whole new set (for a first list,
        or a different cluster behind the same configuration)."""
        self.identity = identity
        self.views = {}
        self._alarm_ids = {}
        self._reset_aggregates()
        self._must_derive = True  # even with no node: the deployment manager exists

    def apply(self, changes: Changes, identity: ClusterIdentity | None = None) -> Update:
        """The objects to upsert and the keys to delete for `changes` (and a new version,
        endpoint or credential of the same cluster in `identity`); nothing when no
        node's view changed and the identity is the same."""
        if identity is not None and identity != self.identity:
            if self.identity is None or identity.uid != self.identity.uid:
                raise ValueError("a different cluster needs reset(), not apply()")
            self.identity = identity
            identity_changed = True
        else:
            identity_changed = False
        current = self._require_identity()
        upserts: list[domain_pb2.InventoryObject] = []
        deletions: list[ObjectKey] = []
        rebuilt: set[str] = set()
        for name, view in changes.items():
            old = self.views.get(name)
            if view == old:
                continue
            if old is not None:
                self._account(old, -1)
                if view is None or view.uid != old.uid:
                    deletions.append(("resource", resource_id(current.uid, old.uid)))
            old_alarm_ids = self._alarm_ids.pop(name, ())
            if view is None:
                del self.views[name]
                deletions.extend((ALARM_KIND, alarm_id) for alarm_id in old_alarm_ids)
                continue
            self.views[name] = view
            self._account(view, +1)
            upserts.append(node_resource(view, current, self.config))
            self._rebuild_alarms(name, view, old_alarm_ids, upserts, deletions)
            rebuilt.add(name)
        if identity_changed:  # the cluster's name is in every alarm's extensions
            for name in [name for name in self._alarm_ids if name not in rebuilt]:
                self._rebuild_alarms(name, self.views[name], (), upserts, deletions)
        if not upserts and not deletions and not identity_changed and not self._must_derive:
            return [], []
        self._must_derive = False
        return self._derive(upserts, deletions)

    def objects(self) -> list[domain_pb2.InventoryObject]:
        """Every object, built from scratch (for checks; the adapter never needs it)."""
        identity = self._require_identity()
        nodes = [node_resource(view, identity, self.config) for view in self.views.values()]
        alarms = [
            alarm
            for view in self.views.values()
            for alarm in node_alarms(view, identity, self.config)
        ]
        return nodes + list(self._derived.values()) + alarms

    def _rebuild_alarms(
        self,
        name: str,
        view: NodeView,
        old_alarm_ids: tuple[str, ...],
        upserts: list[domain_pb2.InventoryObject],
        deletions: list[ObjectKey],
    ) -> None:
        """Upsert the node's alarms and withdraw those of `old_alarm_ids` it no longer has."""
        alarms = node_alarms(view, self._require_identity(), self.config)
        alarm_ids = tuple(alarm.alarm.alarm_id for alarm in alarms)
        deletions.extend(
            (ALARM_KIND, alarm_id) for alarm_id in old_alarm_ids if alarm_id not in alarm_ids
        )
        upserts.extend(alarms)
        if alarm_ids:
            self._alarm_ids[name] = alarm_ids

    def _require_identity(self) -> ClusterIdentity:
        if self.identity is None:
            raise RuntimeError("the cluster's identity is not known yet")
        return self.identity

    def _account(self, view: NodeView, sign: int) -> None:
        self._types[view.type_identity] += sign
        for resource in element_resources(view):
            self._element_types[resource, element_model(view, resource)] += sign
        self._pool_regions.setdefault(view.pool, Counter())[view.region] += sign
        self._regions[view.region] += sign
        for resource, amount in view.allocatable.items():
            self._allocatable[resource] += sign * quantity_units(amount, resource)
        self._counts["nodes"] += sign
        self._counts["ready"] += sign * view.ready
        self._counts["schedulable"] += sign * (not view.unschedulable)
        info = view.node_info
        seen = self._seen
        seen["runtimes"][info.get("containerRuntimeVersion", "")] += sign
        seen["architectures"][info.get("architecture", "")] += sign
        seen["systems"][info.get("operatingSystem", "")] += sign
        seen["kubelets"][info.get("kubeletVersion", "")] += sign
        for cni in view.cnis:
            seen["cnis"][cni] += sign
        for resource, amount in view.capacity.items():
            if "/" in resource and quantity_units(amount, resource) > 0:
                seen["extended"][resource] += sign

    @staticmethod
    def _present(counter: Counter[str]) -> tuple[str, ...]:
        return tuple(sorted(value for value, count in counter.items() if count > 0 and value))

    def _derive(
        self, upserts: list[domain_pb2.InventoryObject], deletions: list[ObjectKey]
    ) -> Update:
        """Add the derived objects (all of them: the publisher drops unchanged ones; the
        alarm dictionary only when new) to `upserts` and the ones no longer derived to
        `deletions`."""
        identity = self._require_identity()
        config, name = self.config, self.adapter_name
        derived: list[domain_pb2.InventoryObject] = []
        regions = sorted(region for region, count in self._regions.items() if count > 0)
        for region in regions:
            region_location = location(region, name, identity, config)
            if region_location is not None:
                derived.append(region_location)
        for pool, pool_regions in sorted(self._pool_regions.items()):
            live = [(count, region) for region, count in pool_regions.items() if count > 0]
            if not live:
                continue
            # Its most common region (then the first by name), should the labels disagree.
            region = min(live, key=lambda item: (-item[0], item[1]))[1]
            derived.extend(pool_objects(pool, location_id(config, name, region), identity, config))
        for type_identity, count in sorted(self._types.items()):
            if count > 0:
                derived.append(node_type(type_identity, identity, config))
        for (resource, model), count in sorted(self._element_types.items()):
            if count > 0:
                derived.append(element_type(resource, model, identity, config))
        totals = ClusterTotals(
            allocatable=dict(self._allocatable),
            nodes=self._counts["nodes"],
            ready=self._counts["ready"],
            schedulable=self._counts["schedulable"],
            runtimes=self._present(self._seen["runtimes"]),
            architectures=self._present(self._seen["architectures"]),
            operating_systems=self._present(self._seen["systems"]),
            kubelet_versions=self._present(self._seen["kubelets"]),
            cnis=self._present(self._seen["cnis"]),
            extended_resources=self._present(self._seen["extended"]),
        )
        location_ids = [location_id(config, name, region) for region in regions]
        derived.append(deployment_manager(identity, config, totals, location_ids))
        current = {object_key(obj): obj for obj in derived}
        # The dictionary depends on the cluster's uid alone: built once per cluster.
        dictionary_key = ("alarm_dictionary", alarm_dictionary_id(identity.uid))
        dictionary = self._derived.get(dictionary_key)
        if dictionary is None:
            dictionary = alarm_dictionary(identity)
            upserts.append(dictionary)
        current[dictionary_key] = dictionary
        deletions.extend(key for key in self._derived if key not in current)
        upserts.extend(derived)
        self._derived = current
        self._prune()
        return upserts, deletions

    def _prune(self) -> None:
        """Drop aggregate entries that reached zero, so churn does not grow them."""
        self._types = +self._types
        self._element_types = +self._element_types
        self._regions = +self._regions
        self._seen = {name: +counter for name, counter in self._seen.items()}
        self._pool_regions = {
            pool: +counts for pool, counts in self._pool_regions.items() if +counts
        }


def views_by_name(views: Iterable[NodeView]) -> dict[str, NodeView]:
    return {view.name: view for view in views}
