"""Helpers over the o2ims.adapter.v1 contract shared by adapters and the core."""

from __future__ import annotations

from typing import Final

from o2ims.adapter.v1 import domain_pb2

# The oneof member of InventoryObject for each kind, and the id field of that message.
ID_FIELDS: Final[dict[str, str]] = {
    "o_cloud": "o_cloud_id",
    "location": "global_location_id",
    "site": "o_cloud_site_id",
    "alarm_dictionary": "alarm_dictionary_id",
    "resource_type": "resource_type_id",
    "resource_pool": "resource_pool_id",
    "resource": "resource_id",
    "deployment_manager": "deployment_manager_id",
    "alarm": "alarm_id",
}
KINDS: Final[tuple[str, ...]] = tuple(ID_FIELDS)
# Active alarms travel with the inventory (published, watched, stored, reconciled the same
# way) but are not inventory: the core's alarm pipeline turns them into alarm records, and
# neither the inventory API nor inventory subscriptions see them.
ALARM_KIND: Final = "alarm"
INVENTORY_KINDS: Final[tuple[str, ...]] = tuple(kind for kind in KINDS if kind != ALARM_KIND)

ObjectKey = tuple[str, str]


def object_kind(obj: domain_pb2.InventoryObject) -> str:
    """The kind of an inventory object (the name of its oneof member)."""
    kind = obj.WhichOneof("kind")
    if kind is None:
        raise ValueError("inventory object carries no object")
    return kind


def object_key(obj: domain_pb2.InventoryObject) -> ObjectKey:
    """The (kind, id) that identifies an object across adapters, the store and the cache."""
    kind = object_kind(obj)
    return kind, str(getattr(getattr(obj, kind), ID_FIELDS[kind]))


def serialize(obj: domain_pb2.InventoryObject) -> bytes:
    """Canonical bytes of an object: equal objects give equal bytes (maps sorted)."""
    return obj.SerializeToString(deterministic=True)
