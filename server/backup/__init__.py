"""Backup and restore of the gateway's state in Redis (`python -m server.backup`)."""

from server.backup.archive import Backup, BadBackup, KeyRecord, read, write
from server.backup.selection import STATE_KINDS, kind_of
from server.backup.state import RestoreRefused, check_restorable, restore, take

__all__ = [
    "STATE_KINDS",
    "Backup",
    "BadBackup",
    "KeyRecord",
    "RestoreRefused",
    "check_restorable",
    "kind_of",
    "read",
    "restore",
    "take",
    "write",
]
