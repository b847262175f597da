"""`o2ims_certificate_expiry_seconds{certificate}`: seconds until each certificate a process
holds or trusts expires, read from its PEM file at scrape time.

A file is parsed again only when its inode, modification time or size changes (certificates
are rotated by replacing the file, or by Kubernetes swapping the `..data` symlink of a
mounted Secret: the path is followed, so the renewed file is read), so a scrape costs one
stat() per file. A bundle (a CA file
with several certificates) is reported by its soonest notAfter: that is the one to act on.
The `certificate` label is the role (`edge_server`, `webhook_client`, ...), never a
subject or a path, so it stays a handful of series whatever is rotated.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import structlog
from cryptography import x509
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = structlog.get_logger()


@dataclass(frozen=True)
class _Read:
    stamp: tuple[int, int, int, int]  # (st_dev, st_ino, st_mtime_ns, st_size) of the file read
    not_after: float | None  # Unix time; None: no certificate could be read from it


def soonest_not_after(pem: bytes) -> float | None:
    """The earliest notAfter (Unix time) of the PEM certificates in `pem`, None if none."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return None
    if not certificates:
        return None
    return min(c.not_valid_after_utc.timestamp() for c in certificates)


class CertificateExpiry(Collector):
    """Collects the gauge for `files` (role -> PEM path; empty paths are skipped)."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self._files = {role: path for role, path in files.items() if path}
        self._reads: dict[str, _Read] = {}
        self._lock = threading.Lock()

    def expiries(self) -> dict[str, float]:
        """role -> seconds until the soonest notAfter (negative once expired)."""
        now = time.time()
        found: dict[str, float] = {}
        with self._lock:
            for role, path in self._files.items():
                not_after = self._not_after(path)
                if not_after is not None:
                    found[role] = not_after - now
        return found

    def _not_after(self, path: str) -> float | None:
        try:
            status = os.stat(path)
        except OSError:
            return None  # gone for now: no sample beats a stale one
        stamp = (status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)
        cached = self._reads.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached.not_after
        try:
            with open(path, "rb") as pem:
                not_after = soonest_not_after(pem.read())
        except OSError:
            return None
        if not_after is None:
            log.warning("certificate_unreadable", path=path)
        self._reads[path] = _Read(stamp, not_after)
        return not_after

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "o2ims_certificate_expiry_seconds",
            "Seconds until the certificate expires (the soonest of a bundle), by the role "
            "it plays for this process; negative once expired.",
            labels=["certificate"],
        )
        for role, seconds in sorted(self.expiries().items()):
            gauge.add_metric([role], seconds)
        yield gauge


def register_certificates(registry: CollectorRegistry, files: Mapping[str, str]) -> None:
    """Expose the expiry of `files` (role -> PEM path) on `registry`."""
    registry.register(CertificateExpiry(files))
