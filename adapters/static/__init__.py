"""The static adapter: serves an O-Cloud inventory described in a YAML file and
follows edits to it (`python -m adapters.static --inventory examples/ocloud.yaml`)."""

from adapters.static.loader import InventoryFileError, load_inventory, parse_inventory
from adapters.static.server import StaticAdapter

__all__ = ["InventoryFileError", "StaticAdapter", "load_inventory", "parse_inventory"]
