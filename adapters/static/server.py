"""Serve an inventory file and follow its edits."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog
from o2ims.adapter.v1 import adapter_pb2, domain_pb2

from adapters.publisher import ObjectSetPublisher
from adapters.static.loader import (
    DEFAULT_MAX_FILE_BYTES,
    InventoryFileError,
    check_inventory_stat,
    parse_inventory,
    read_inventory_file,
)
from adapters.static.marked_yaml import YamlLimits

DEFAULT_POLL_INTERVAL: Final = 0.25
# An edit made in place (same inode) is read once the file has been quiet this long:
# editors and scripts that save in several writes would otherwise have their first half
# served (and its missing objects deleted). Replacing the file by rename skips the wait.
DEFAULT_SETTLE_INTERVAL: Final = 1.0
# How long start-up waits for a file that keeps changing before giving up.
STARTUP_SETTLE_TIMEOUT: Final = 30.0

_RACY_WINDOW_SECONDS: Final = 2.0

_FileSignature = tuple[int, int, int, int]


def _signature(stat: os.stat_result) -> _FileSignature:
    # The inode catches editors that save by writing a temp file and renaming it.
    return stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_dev


@dataclass(frozen=True)
class FileLimits:
    """What the adapter will read: file size, and what the YAML may cost to build."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    yaml: YamlLimits = field(default_factory=YamlLimits)


class StaticAdapter:
    """Publishes the objects of one inventory file, re-reading it when it changes.

    Polling (not inotify) keeps it portable and survives the file being replaced by
    rename. Only a stable, complete file is read: a file replaced by rename at once, a
    file edited in place once it has been quiet for `settle_interval`. A bad edit is
    logged once, reported through the publisher's problems, and the last good
    inventory stays in service.
    """

    def __init__(
        self,
        inventory_path: Path,
        publisher: ObjectSetPublisher,
        logger: structlog.stdlib.BoundLogger | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        *,
        settle_interval: float = DEFAULT_SETTLE_INTERVAL,
        limits: FileLimits | None = None,
    ) -> None:
        self.inventory_path = inventory_path
        self._publisher = publisher
        self._log: structlog.stdlib.BoundLogger = logger or structlog.get_logger()
        self._poll_interval = poll_interval
        self._settle_interval = settle_interval
        self._limits = limits or FileLimits()
        # Set only when stat alone can prove the file unchanged (see _remember).
        self._trusted_signature: _FileSignature | None = None
        self._digest: bytes | None = None
        # (inode, device) of the file last read: a different one was put there by rename.
        self._last_file: tuple[int, int] | None = None
        # The signature being watched for quiet, and when it was first seen (monotonic).
        self._quiet_since: tuple[_FileSignature, float] | None = None
        self._refusal: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> list[domain_pb2.InventoryObject]:
        """Read and publish the file now (once it is stable); raises InventoryFileError
        if it is invalid or never stops changing."""
        deadline = time.monotonic() + STARTUP_SETTLE_TIMEOUT
        while True:
            try:
                read = self._read_if_settled()
            except OSError as error:
                raise InventoryFileError(
                    self.inventory_path, None, f"cannot read: {error.strerror or error}"
                ) from error
            if read is not None:
                break
            if time.monotonic() > deadline:
                raise InventoryFileError(
                    self.inventory_path,
                    None,
                    f"still changing after {STARTUP_SETTLE_TIMEOUT:g} s; "
                    "replace it atomically (write a temporary file, then rename it)",
                )
            time.sleep(min(self._poll_interval, self._settle_interval) or 0.05)
        signature, data = read
        objects = parse_inventory(data, self.inventory_path, self._limits.yaml)
        self._remember(signature, data)
        self._publish(objects)
        return objects

    def check_for_changes(self) -> None:
        """One poll: apply the file if its content changed since it was last read."""
        try:
            if self._unchanged():
                return
            read = self._read_if_settled()
        except InventoryFileError as error:
            self._reject(error, unread=True)
            return
        except OSError as error:
            problem = f"cannot read: {error.strerror or error}"
            self._reject(InventoryFileError(self.inventory_path, None, problem), unread=True)
            return
        if read is None:
            return  # being written right now; a later poll sees the finished file
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

    def _settled(self, status: os.stat_result) -> bool:
        """Whether the file is complete enough to read: put there by rename, or not
        modified for the settle interval (by its mtime, or as watched by this poller
        when the mtime cannot be trusted, e.g. set in the future)."""
        signature = _signature(status)
        now = time.monotonic()
        if self._quiet_since is None or self._quiet_since[0] != signature:
            self._quiet_since = (signature, now)
        if self._last_file is not None and (status.st_ino, status.st_dev) != self._last_file:
            return True
        modified_ago = time.time() - status.st_mtime_ns / 1e9
        watched_quiet = now - self._quiet_since[1]
        return max(modified_ago, watched_quiet) >= self._settle_interval

    def _read_if_settled(self) -> tuple[_FileSignature, bytes] | None:
        """The bytes and their stat signature; None while the file is not settled or
        changed during the read. Raises InventoryFileError for files that must not be
        read (not regular, too large)."""
        status = os.stat(self.inventory_path)
        check_inventory_stat(self.inventory_path, status, self._limits.max_file_bytes)
        if not self._settled(status):
            return None
        opened, data = read_inventory_file(self.inventory_path, self._limits.max_file_bytes)
        before = _signature(opened)
        if _signature(os.stat(self.inventory_path)) != before:
            return None
        self._last_file = (opened.st_ino, opened.st_dev)
        return before, data

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
            objects = parse_inventory(data, self.inventory_path, self._limits.yaml)
        except InventoryFileError as error:
            self._refusal = None  # a new content: say why even if the words are the same
            self._reject(error)
            return
        events = self._publish(objects)
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

    def _publish(
        self, objects: list[domain_pb2.InventoryObject]
    ) -> list[adapter_pb2.WatchObjectsResponse]:
        self._refusal = None
        self._publisher.set_source_problem("")
        events = self._publisher.replace(objects)
        for refused in self._publisher.refused:
            self._log.error(
                "inventory_object_refused",
                file=str(self.inventory_path),
                kind=refused.kind,
                id=refused.object_id,
                size=refused.size,
                limit=refused.limit,
                problem=str(refused),
            )
        return events

    def _reject(self, error: InventoryFileError, unread: bool = False) -> None:
        """Keep the last good inventory and say why: in the log once per distinct
        problem (not once per poll), and in the publisher's problems until fixed.

        `unread`: the file itself could not be read, so whatever is read next must be
        applied even if its bytes equal the last ones (that clears the problem).
        """
        problem = str(error)
        if unread:
            self._digest = None
            self._trusted_signature = None
        if problem != self._refusal:
            log = self._log.warning if unread else self._log.error
            log(
                "inventory_unreadable" if unread else "inventory_rejected",
                file=str(self.inventory_path),
                line=error.line,
                problem=error.problem,
                error=problem,
            )
        self._refusal = problem
        self._publisher.set_source_problem(f"{problem} (serving the last good inventory)")
