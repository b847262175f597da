"""Serve an inventory file and follow its edits."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Final

import structlog
from o2ims.adapter.v1 import adapter_pb2, domain_pb2

from adapters.publisher import ObjectSetPublisher
from adapters.static.loader import InventoryFileError, parse_inventory

DEFAULT_POLL_INTERVAL: Final = 0.25

_RACY_WINDOW_SECONDS: Final = 2.0

_FileSignature = tuple[int, int, int, int]


def _signature(stat: os.stat_result) -> _FileSignature:
    # The inode catches editors that save by writing a temp file and renaming it.
    return stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_dev


class StaticAdapter:
    """Publishes the objects of one inventory file, re-reading it when it changes.

    Polling (not inotify) keeps it portable and survives the file being replaced by
    rename. A bad edit is logged once and the last good inventory stays in service.
    """

    def __init__(
        self,
        inventory_path: Path,
        publisher: ObjectSetPublisher,
        logger: structlog.stdlib.BoundLogger | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.inventory_path = inventory_path
        self._publisher = publisher
        self._log: structlog.stdlib.BoundLogger = logger or structlog.get_logger()
        self._poll_interval = poll_interval
        # Set only when stat alone can prove the file unchanged (see _remember).
        self._trusted_signature: _FileSignature | None = None
        self._digest: bytes | None = None
        self._unreadable: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> list[domain_pb2.InventoryObject]:
        """Read and publish the file now; raises InventoryFileError if it is invalid."""
        try:
            signature, data = self._read_settled()
        except OSError as error:
            raise InventoryFileError(
                self.inventory_path, None, f"cannot read: {error.strerror or error}"
            ) from error
        objects = parse_inventory(data, self.inventory_path)
        self._remember(signature, data)
        self._publisher.replace(objects)
        return objects

    def check_for_changes(self) -> None:
        """One poll: apply the file if its content changed since it was last read."""
        try:
            if self._unchanged():
                return
            read = self._read_once()
        except OSError as error:
            self._report_unreadable(error)
            return
        self._unreadable = None
        if read is None:
            return  # being written right now; the next poll sees the finished file
        signature, data = read
        if not self._remember(signature, data):
            return  # touched or saved without a change
        self._apply(data)

    def start(self) -> None:
        """Poll in a background thread until stop()."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="inventory-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_interval):
            try:
                self.check_for_changes()
            except Exception:  # keep following the file whatever one poll hit
                self._log.exception("inventory_poll_failed", file=str(self.inventory_path))

    def _unchanged(self) -> bool:
        """Whether the stat alone proves the file is the one last read."""
        return (
            self._trusted_signature is not None
            and _signature(os.stat(self.inventory_path)) == self._trusted_signature
        )

    def _read_once(self) -> tuple[_FileSignature, bytes] | None:
        """The bytes and their stat signature; None if the file changed while reading."""
        before = _signature(os.stat(self.inventory_path))
        data = self.inventory_path.read_bytes()
        if _signature(os.stat(self.inventory_path)) != before:
            return None
        return before, data

    def _read_settled(self) -> tuple[_FileSignature, bytes]:
        for _ in range(20):
            read = self._read_once()
            if read is not None:
                return read
            time.sleep(0.05)
        data = self.inventory_path.read_bytes()  # still changing: take what is there
        return _signature(os.stat(self.inventory_path)), data

    def _remember(self, signature: _FileSignature, data: bytes) -> bool:
        """Record what was read; True when the content differs from the last read."""
        mtime_seconds = signature[0] / 1e9
        # A file modified this recently may change again within the same mtime tick
        # without its stat changing ("racy git"): keep hashing it until it is older.
        fresh = time.time() - mtime_seconds < _RACY_WINDOW_SECONDS
        self._trusted_signature = None if fresh else signature
        digest = hashlib.sha256(data).digest()
        changed = digest != self._digest
        self._digest = digest
        return changed

    def _apply(self, data: bytes) -> None:
        file = str(self.inventory_path)
        try:
            objects = parse_inventory(data, self.inventory_path)
        except InventoryFileError as error:
            self._log.error(
                "inventory_rejected",
                file=file,
                line=error.line,
                problem=error.problem,
                error=str(error),
            )
            return
        events = self._publisher.replace(objects)
        counts = Counter(event.type for event in events)
        self._log.info(
            "inventory_applied",
            file=file,
            objects=len(objects),
            added=counts[adapter_pb2.EVENT_TYPE_ADDED],
            modified=counts[adapter_pb2.EVENT_TYPE_MODIFIED],
            deleted=counts[adapter_pb2.EVENT_TYPE_DELETED],
            revision=events[0].revision if events else self._publisher.revision,
        )

    def _report_unreadable(self, error: OSError) -> None:
        problem = f"cannot read: {error.strerror or error}"
        if problem != self._unreadable:  # once per distinct problem, not once per poll
            self._log.warning(
                "inventory_unreadable", file=str(self.inventory_path), problem=problem
            )
        self._unreadable = problem
