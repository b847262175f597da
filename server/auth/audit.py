"""The audit trail: one JSON line per API call, on its own stream.

Records go to NETWEAVE_AUDIT_LOG: a file path (appended to; rotate it with copytruncate or
ship it with a sidecar) or `-` for standard output (the application log is on standard
error, so the two streams stay apart). Retention is the shipper's job. A writer thread
writes the lines in batches, off the calls' threads, and loses none (AuditLog).

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

import atexit
import collections
import json
import math
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

import structlog

from netweave.redaction import REDACTED, redact_text

log = structlog.get_logger()

_SECRET_FIELD: Final = re.compile(r"(?i)(token|secret|password|authorization|credential|apikey)")
# One encoder for every record: json.dumps with arguments builds a new one per call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=str)
_HEAD: Final = '"audit":"o2ims","source":"core"'


class EncodedFields(str):
    """Record fields already encoded as JSON members (`"a":1,"b":"x"`): the fields many
    records share (who called, what was decided), encoded once (`encode_fields`)."""

    __slots__ = ()


def encode_fields(fields: Mapping[str, Any]) -> EncodedFields:
    return EncodedFields(_ENCODER.encode(dict(fields))[1:-1])


class Deferred:
    """A record encoded by the writer thread rather than by its call: `members()` returns
    its fields after ts/audit/source, encoded as JSON members. The call only keeps what
    the record is made of (the gRPC interceptor's records: server/auth/interceptor.py), and
    the writer encodes a whole batch in one go, off the calls' threads. What `members()`
    reads must not change once the record is written."""

    __slots__ = ()

    def members(self) -> str:
        raise NotImplementedError


# A record: its fields in order, each a (name, value) pair or shared EncodedFields.
Record = Sequence[tuple[str, Any] | EncodedFields]
Entry = Record | dict[str, Any] | Deferred
# Records waiting for the writer. At 1,000 calls/s this is ~10 s of calls (a few MB):
# only a writer stuck on its stream (a full or hung disk) fills it.
QUEUE_LIMIT: Final = 10_000
# How long the writer lets records gather after the first one arrives: one write and one
# flush per batch instead of per record, and no wake-up per call.
LINGER_S: Final = 0.01


class AuditLog:
    """The audit trail's writer: `write` queues the record (with its timestamp) and returns;
    a writer thread turns queued records into lines and writes them in batches.

    Records are never dropped. A full queue (QUEUE_LIMIT records: the stream has stopped
    taking lines) makes `write` wait for room, so a stuck audit stream slows the API down
    as a synchronous write did, instead of losing records or memory. `close()` (the core's
    stop, after its listeners have finished; and at interpreter exit) writes everything
    queued; a record written after that is written at once, in the caller's thread.
    Lines reach the stream within about LINGER_S of their call (a SIGKILL loses at most
    those)."""

    def __init__(self, target: str = "-", *, queue_limit: int = QUEUE_LIMIT) -> None:
        self._stream: IO[str]
        if target == "-":
            self._stream = sys.stdout
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = path.open("a", encoding="utf-8")
        self._limit = queue_limit
        # (time.time(), record). deque.append and popleft are atomic: no lock per call.
        self._pending: collections.deque[tuple[float, Entry]] = collections.deque()
        # One drain at a time, so lines keep the order of their calls.
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._idle = True
        self._full = False
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._writer.start()
        atexit.register(self.close)

    def write(self, record: Entry) -> None:
        """Queue `record` (the fields after ts/audit/source: a mapping, a Record whose
        shared fields are encoded already, or a Deferred the writer encodes) for the
        trail."""
        if len(self._pending) >= self._limit and not self._closed:
            self._wait_for_room()
        self._pending.append((time.time(), record))
        if self._closed:
            self._drain()  # no writer any more: this thread writes it
        elif self._idle:
            self._idle = False
            self._wake.set()

    def _wait_for_room(self) -> None:
        if not self._full:
            self._full = True
            log.warning("audit_queue_full", queued=len(self._pending), limit=self._limit)
        with self._room:
            while len(self._pending) >= self._limit and not self._closed:
                self._wake.set()
                self._room.wait(0.1)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._closed:
                time.sleep(LINGER_S)
            self._wake.clear()
            self._idle = True
            self._drain()
            if self._closed and not self._pending:
                return
            if self._pending:  # queued between the drain and `_idle`: go again
                self._idle = False
                self._wake.set()

    def _drain(self) -> None:
        """Write every queued record, in order (one writer at a time)."""
        pending = self._pending
        with self._write_lock:
            batch: list[tuple[float, Entry]] = []
            while pending:
                batch.append(pending.popleft())
            if not batch:
                return
            if self._full:
                self._full = False
                with self._room:
                    self._room.notify_all()
            lines = "".join(_line(stamp, record) for stamp, record in batch)
            try:
                self._stream.write(lines)
                self._stream.flush()
            except (OSError, ValueError) as exc:  # ValueError: the stream was closed
                log.error("audit_write_failed", error=str(exc), records=len(batch))

    def flush(self) -> None:
        """Write everything queued so far, in this thread."""
        self._drain()

    def close(self) -> None:
        """Write every queued record and stop the writer; a record written later is
        written at once by its caller. The stream stays open for those."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        with self._room:
            self._room.notify_all()
        self._writer.join(timeout=10.0)
        self._drain()  # the writer gave up on a stuck stream, or a record raced `_closed`


def _line(stamp: float, record: Entry) -> str:
    if isinstance(record, Deferred):
        try:
            return f'{{"ts":"{_timestamp(stamp)}",{_HEAD},{record.members()}}}\n'
        except Exception as exc:  # a record that cannot be encoded: say so, keep the rest
            log.exception("audit_record_unencodable")
            record = {"record": f"[unrecordable: {type(exc).__name__}]"}
    members = [f'{{"ts":"{_timestamp(stamp)}",{_HEAD}']
    fields = record.items() if isinstance(record, dict) else record
    for field in fields:
        if isinstance(field, EncodedFields):
            members.append(field)
        else:
            name, value = field
            members.append(f"{_encode(name)}:{_encode(value)}")
    return ",".join(members) + "}\n"


def _encode(value: Any) -> str:
    # The common scalars without the encoder's machinery; the same text as json.dumps.
    if isinstance(value, str):
        return encode_string(value)
    if value is None:
        return "null"
    if type(value) is int:  # not a bool
        return str(value)
    if type(value) is float and math.isfinite(value):  # a duration: json's own float text
        return float.__repr__(value)
    return _ENCODER.encode(value)


encode_string: Final = json.encoder.encode_basestring_ascii
# The last second rendered as the records' `ts` has it, reused by the records of that second.
_second: list[Any] = [None, ""]


def _timestamp(stamp: float) -> str:
    """`stamp` (time.time()) as the records' `ts`: UTC, ISO 8601, milliseconds, Z."""
    seconds, micros = divmod(round(stamp * 1_000_000), 1_000_000)
    if _second[0] != seconds:
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second[0] = seconds
    return f"{_second[1]}.{micros // 1000:03d}Z"


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
