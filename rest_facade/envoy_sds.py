"""Envoy's certificates through file-based SDS, so a renewed certificate is used from the
next handshake on, with no restart and no dropped connection.

Every certificate and CA Envoy uses is an SDS secret in a resource file of its own (in the
"SDS directory", beside the rendered config unless EnvoyConfig.sds_dir says otherwise),
which the config names through `sds_config.path_config_source`. Each secret names its PEM
files by path and carries a `watched_directory`: the directory the certificate file is in,
as configured (a Kubernetes Secret mount, symlinks not resolved). Envoy watches it with
inotify for a file being moved into it (IN_MOVED_TO), then reads the certificate and key
again, together, checked for a consistent read (Envoy 1.40, TlsCertificate
watched_directory). A pair that does not load (a key that does not match) is refused and
the previous one stays in use.

What counts as a change is a rename into that directory:
- kubelet's Secret update (cert-manager's renewal): a new `..<timestamp>` directory, then
  the `..data` symlink swapped by rename: one event, cert and key change together;
- `mv new.crt tls.crt` (a file written aside, then renamed into place).
Writing a certificate file in place (`cp`, `>` redirection) is NOT seen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# The secrets' names (and their resource files, `<name>.yaml`).
SERVER_CERTIFICATE = "edge_server_certificate"
CLIENT_CA = "edge_client_ca"
CORE_CLIENT_CERTIFICATE = "core_client_certificate"
CORE_CA = "core_ca"


@dataclass(frozen=True)
class FileSecret:
    """One SDS secret: a certificate with its key (`key` set), or a CA bundle."""

    name: str
    cert: Path
    key: Path | None = None

    def __post_init__(self) -> None:
        if self.key is not None and _directory(self.key) != _directory(self.cert):
            # One watched directory per secret: a key elsewhere would rotate unseen.
            raise ValueError(
                f"{self.name}: the certificate {self.cert} and its key {self.key} must be in "
                "one directory (as a Kubernetes TLS Secret mounts them)"
            )

    @property
    def file_name(self) -> str:
        return f"{self.name}.yaml"

    def resource(self) -> dict[str, Any]:
        """The Secret resource, as its SDS file holds it."""
        watched = {"path": _directory(self.cert)}
        body: dict[str, Any]
        if self.key is None:
            body = {
                "validation_context": {
                    "trusted_ca": {"filename": _absolute(self.cert)},
                    "watched_directory": watched,
                }
            }
        else:
            body = {
                "tls_certificate": {
                    "certificate_chain": {"filename": _absolute(self.cert)},
                    "private_key": {"filename": _absolute(self.key)},
                    "watched_directory": watched,
                }
            }
        return {"resources": [{"@type": SECRET_TYPE, "name": self.name, **body}]}

    def reference(self, sds_dir: Path) -> dict[str, Any]:
        """The SdsSecretConfig naming this secret in its file under `sds_dir`."""
        directory = os.path.abspath(sds_dir)
        return {
            "name": self.name,
            "sds_config": {
                # `path` alone is deprecated; the file is re-read when renamed into place.
                "path_config_source": {
                    "path": os.path.join(directory, self.file_name),
                    "watched_directory": {"path": directory},
                },
                "resource_api_version": "V3",
            },
        }


def write_resources(secrets: list[FileSecret], sds_dir: Path) -> list[Path]:
    """Write the resource file of each secret into `sds_dir` (created), each replaced by a
    rename so a running Envoy never reads half a file. Returns the paths written."""
    sds_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for secret in secrets:
        path = sds_dir / secret.file_name
        text = yaml.safe_dump(secret.resource(), sort_keys=False, default_flow_style=False)
        if path.exists() and path.read_text() == text:
            written.append(path)
            continue  # unchanged: no reload for Envoy
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        written.append(path)
    return written


def _absolute(path: Path) -> str:
    # Not resolved: Kubernetes mounts Secrets through `..data` symlinks that must be
    # followed again after a rotation.
    return os.path.abspath(path)


def _directory(path: Path) -> str:
    return os.path.dirname(_absolute(path))
