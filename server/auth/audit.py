"""The audit trail: one JSON line per API call, on its own stream.

Records go to NETWEAVE_AUDIT_LOG: a file path (appended to; rotate it with copytruncate or
ship it with a sidecar) or `-` for standard output (the application log is on standard
error, so the two streams stay apart). Retention is the shipper's job.

Fields: ts (UTC), audit ("o2ims"), source ("core"; Envoy writes "edge" records of the
calls it refuses itself in the same fields), request_id, correlation_id (the call's: the
same as on the edge's records, in the log lines of the core and the notifier, in the event
the call wrote), client, via, certificate_subject,
certificate_uri, token_subject, roles, role, operation (the gRPC method), method and path
(what the client sent: REST method and path, or POST and the gRPC path), permission,
decision (allow/deny), grpc_code, status (the HTTP status a REST client saw), duration_ms,
and for POST/PUT/PATCH/DELETE the request body (the gRPC request as O2ims JSON) with any
field that looks like a credential replaced by "[redacted]", as are the userinfo and
credential parameters of any URL in it (a callback's). Tokens never reach the core
(Envoy forwards only their verified claims), so none can be logged.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from netweave.redaction import REDACTED, redact_text

_SECRET_FIELD: Final = re.compile(r"(?i)(token|secret|password|authorization|credential|apikey)")


class AuditLog:
    def __init__(self, target: str = "-") -> None:
        self._lock = threading.Lock()
        self._stream: IO[str]
        if target == "-":
            self._stream = sys.stdout
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(
            {"ts": _now(), "audit": "o2ims", "source": "core", **record},
            separators=(",", ":"),
            default=str,
        )
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()


def redact(value: Any) -> Any:
    """`value` with credential-looking fields masked, and the credentials of every URL in
    it (netweave/redaction.py)."""
    if isinstance(value, dict):
        return {
            key: REDACTED if _SECRET_FIELD.search(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        # A callback (or any URL in the text): userinfo and credential parameters masked.
        return redact_text(value)
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
