"""Every alarm event record in memory, kept equal to Redis by following the alarm streams.

Lists of alarms are served from here: a list of 100,000 records must not cost 100,000
hash reads per request. The view loads every record once, then applies each entry of
`alarms:events` (which carries the record after the change) and of `alarms:purged`. The
events' `revision` fields count up by one (server/alarms/store.py), so a gap (a trimmed
stream, a Redis restored or flushed) is seen and answered by loading again; while Redis
is away the view serves what it has.

Single records are served from here too (GetAlarm, through AlarmStore.get_with_etag): the
view keeps each record with the revision that wrote it, which is its ETag. A record is
replaced only by a change of a higher revision, so the view never goes back to an older
state once it knows a newer one, and the ETag it gives is the one a write's If-Match
check (a script in Redis) compares against that state. A change another replica makes
reaches the view as soon as its XREAD returns the event (about a millisecond); this
replica's own acknowledgements and clears are handed over by the store before the call
answers. A record the view holds without its revision (its last event was unreadable) or
does not hold at all is read from Redis. Every write still goes to Redis.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, cast

import redis
import structlog
from o2ims.monitoring.v1 import monitoring_pb2 as pb

from server.alarms.store import (
    EVENTS_KEY,
    PURGED_KEY,
    AlarmStore,
    UnreadableAlarm,
    etag_of,
    parse_record_json,
)
from server.following import FollowingThread

log = structlog.get_logger()

READ_BLOCK_MS: Final = 500
READ_COUNT: Final = 2000
SEVERITY_NAMES: Final = {0: "CRITICAL", 1: "MAJOR", 2: "MINOR", 3: "WARNING", 4: "INDETERMINATE"}


def _last_id(client: redis.Redis, stream: str) -> str:
    entries = cast(list[tuple[bytes, Any]], client.xrevrange(stream, count=1))
    return entries[0][0].decode() if entries else "0-0"


class AlarmView(FollowingThread):
    def __init__(
        self,
        client: redis.Redis,
        stop: threading.Event,
        *,
        read_block_ms: int = READ_BLOCK_MS,
        on_read: Callable[[str], None] = lambda result: None,
    ) -> None:
        super().__init__("alarm-view", stop)
        # Called with "hit" or "miss" for every single-record read (the cache metric).
        self.on_read = on_read
        self._client = client
        self._store = AlarmStore(client)
        self._read_block_ms = read_block_ms
        self._lock = threading.Lock()
        self._records: dict[str, pb.AlarmEventRecord] = {}
        # id -> the revision (ETag) of the record held; None: not known (read Redis).
        self._revisions: dict[str, int | None] = {}
        self._ids: list[str] | None = None
        self._revision = 0
        self._positions = {EVENTS_KEY: "0-0", PURGED_KEY: "0-0"}
        self.reloads = 0

    # --- reading ---------------------------------------------------------------------

    @property
    def records(self) -> Mapping[str, pb.AlarmEventRecord]:
        """id -> record. Records are replaced, never mutated: a reader may keep one."""
        return self._records

    def ids(self) -> list[str]:
        """Every record id, sorted; the list is replaced, not changed, when ids come or go."""
        with self._lock:
            if self._ids is None:
                self._ids = sorted(self._records)
            return self._ids

    def counts(self) -> Counter[tuple[str, str, bool]]:
        """(severity name, state "active"/"cleared", acknowledged) -> records."""
        counted: Counter[tuple[str, str, bool]] = Counter()
        for record in list(self._records.values()):
            severity = record.perceived_severity
            if severity == 5:
                counted[("CLEARED", "cleared", record.alarm_acknowledged)] += 1
            else:
                name = SEVERITY_NAMES.get(severity, "INDETERMINATE")
                counted[(name, "active", record.alarm_acknowledged)] += 1
        return counted

    def fetch(self, ids: Sequence[str]) -> Iterator[tuple[str, pb.AlarmEventRecord]]:
        """(id, record) of each of `ids` still in the view, in order (a listing's Fetch)."""
        records = self._records
        for record_id in ids:
            record = records.get(record_id)
            if record is not None:
                yield record_id, record

    def with_etag(self, record_id: str) -> tuple[pb.AlarmEventRecord, str] | None:
        """(record, ETag) when the view holds the record with its revision; else None."""
        with self._lock:
            record = self._records.get(record_id)
            revision = self._revisions.get(record_id)
        if record is None or revision is None or not self.loaded:
            return None
        return record, etag_of(revision)

    def put(self, record: pb.AlarmEventRecord, revision: int) -> None:
        """A record this replica just wrote, with the revision that wrote it
        (read-your-writes before its event arrives; AlarmStore hands it over)."""
        with self._lock:
            self._set(record, revision)

    # --- following -------------------------------------------------------------------

    def load(self) -> None:
        positions = {stream: _last_id(self._client, stream) for stream in self._positions}
        revision = self._store.revision()
        loaded = self._store.list_with_revisions()
        records = {record.alarm_event_record_id: record for record, _ in loaded}
        revisions: dict[str, int | None] = {
            record.alarm_event_record_id: record_revision for record, record_revision in loaded
        }
        with self._lock:
            self._records = records
            self._revisions = revisions
            self._ids = None
            self._revision = revision
            self._positions = positions
            self.loaded = True
        self.reloads += 1
        log.info("alarm_view_loaded", records=len(records), revision=revision)

    def step(self) -> None:
        """Apply the entries after the positions, waiting up to the read block for some."""
        reply = cast(
            list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
            self._client.xread(
                cast(Any, dict(self._positions)), count=READ_COUNT, block=self._read_block_ms
            ),
        )
        if not reply:
            # Every change takes a revision in the script that adds its event, so a counter
            # that moved while no event came means the data changed behind the streams (a
            # restore) or went back (a Redis flushed or restarted empty): load again. A
            # change landing between the read and this check costs one spurious load.
            revision = self._store.revision()
            if revision != self._revision:
                log.warning("alarm_view_store_moved", revision=revision, held=self._revision)
                self.load()
            return
        for stream_raw, entries in sorted(reply, key=lambda item: item[0] != EVENTS_KEY.encode()):
            stream = stream_raw.decode()
            for entry_id, fields in entries:
                self._positions[stream] = entry_id.decode()
                if stream == PURGED_KEY:
                    self._drop(fields[b"alarmEventRecordId"].decode())
                elif not self._apply_event(fields):
                    self.load()
                    return

    def _apply_event(self, fields: dict[bytes, bytes]) -> bool:
        revision = int(fields.get(b"revision", b"0"))
        if revision > self._revision + 1:
            log.warning("alarm_view_gap", expected=self._revision + 1, got=revision)
            return False
        self._revision = max(self._revision, revision)
        record_id = fields[b"alarmEventRecordId"].decode()
        try:
            record = parse_record_json(record_id, fields[b"record"])
        except UnreadableAlarm as error:
            log.error("alarm_event_unreadable", alarm_event_record_id=record_id, error=str(error))
            with self._lock:
                if record_id in self._revisions:
                    # Changed since, to what is unknown: its ETag is read from Redis.
                    self._revisions[record_id] = None
            return True
        with self._lock:
            self._set(record, revision)
        return True

    def _set(self, record: pb.AlarmEventRecord, revision: int | None) -> None:
        """With the lock held. A record the view holds at a higher revision stays."""
        record_id = record.alarm_event_record_id
        held = self._revisions.get(record_id)
        if held is not None and revision is not None and revision <= held:
            return
        if record_id not in self._records:
            self._ids = None
        self._records[record_id] = record
        self._revisions[record_id] = revision

    def _drop(self, record_id: str) -> None:
        with self._lock:
            self._revisions.pop(record_id, None)
            if self._records.pop(record_id, None) is not None:
                self._ids = None
