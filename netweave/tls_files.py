"""TLS material read from PEM files and built again when the files change, so a renewed
certificate (cert-manager updating a mounted Secret) is used without a restart.

A change is seen by stat(): device, inode, modification time and size of each file,
symlinks followed (a Kubernetes `..data` swap gives every file a new inode). A rebuild
that fails (a certificate and key that do not match, half of a renewal written, a file
missing for a moment) keeps the previous value, is logged once, and is tried again when
the files change again. A rebuild during which the files changed is not trusted either:
the next check reads them again.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = structlog.get_logger()

T = TypeVar("T")

# (st_dev, st_ino, st_mtime_ns, st_size) of each file, in order.
Stamp = tuple[tuple[int, int, int, int], ...]


def stamp(paths: Sequence[str]) -> Stamp:
    """The identity and version of `paths` as stat() sees them. Raises OSError."""
    found = []
    for path in paths:
        status = os.stat(path)
        found.append((status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size))
    return tuple(found)


class Reloading(Generic[T]):
    """A value built from `paths` by `build`, built again when they change.

    `current()` checks the files at most every `min_interval_s` (0: every call, one stat
    per file) and returns the newest good value. The first build happens here and raises
    if it fails: a process must not start with unusable TLS material.
    """

    def __init__(
        self,
        name: str,
        paths: Sequence[str],
        build: Callable[[], T],
        *,
        min_interval_s: float = 0.0,
    ) -> None:
        self.name = name
        self._paths = tuple(paths)
        self._build = build
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._stamp = stamp(self._paths)
        self.value: T = build()
        self._rejected: Stamp | None = None
        self._checked = time.monotonic()
        # How many times the value was built again (tests, logs).
        self.reloads = 0

    def current(self) -> T:
        self.refresh()
        return self.value

    def refresh(self) -> T | None:
        """The new value if the files changed and built well now, else None."""
        now = time.monotonic()
        with self._lock:
            if self._min_interval_s and now - self._checked < self._min_interval_s:
                return None
            self._checked = now
            try:
                before = stamp(self._paths)
            except OSError:
                return None  # a file missing for a moment (mid-rotation): keep the last
            if before in (self._stamp, self._rejected):
                return None
            try:
                value = self._build()
                after = stamp(self._paths)
            except (OSError, ValueError, TypeError, ssl.SSLError) as exc:
                self._rejected = before
                log.warning(
                    "tls_files_not_reloaded",
                    tls=self.name,
                    files=list(self._paths),
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    hint="the previous certificate stays in use until the files change again",
                )
                return None
            if after != before:
                return None  # changed while being read: read again at the next check
            self._stamp, self._rejected = before, None
            self.value = value
            self.reloads += 1
            log.info("tls_files_reloaded", tls=self.name, files=list(self._paths))
            return value


def read_identity(cert: str, key: str, ca: str | None = None) -> tuple[bytes, bytes, bytes | None]:
    """The PEM bytes of a certificate chain, its private key and optionally a CA bundle,
    checked to belong together. Raises ValueError (what is wrong) or OSError."""
    cert_pem = _read(cert)
    key_pem = _read(key)
    ca_pem = _read(ca) if ca else None
    chain = x509.load_pem_x509_certificates(cert_pem)
    private_key = serialization.load_pem_private_key(key_pem, password=None)
    if chain[0].public_key() != private_key.public_key():
        raise ValueError(f"the private key {key} does not match the certificate {cert}")
    if ca_pem is not None:
        x509.load_pem_x509_certificates(ca_pem)  # at least one, or ValueError
    return cert_pem, key_pem, ca_pem


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()
