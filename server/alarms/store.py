"""Every Redis key of alarm state, and the only code that reads or writes them.

  alarm:<alarmEventRecordId>  hash  one alarm event record, one field per Monitoring 1.x
                                    attribute: resourceTypeID, resourceID, alarmDefinitionID,
                                    probableCauseID; alarmRaisedTime, alarmChangedTime,
                                    alarmClearedTime, alarmAcknowledgeTime (RFC 3339, absent
                                    or "" when unset); alarmAcknowledged ("true"/"false");
                                    perceivedSeverity (0-5); extensions (a JSON object);
                                    and `revision`, the record's ETag (see below)
  alarms                      set   the id of every alarm event record
  alarms:revision             string  a counter: every change of any record takes the next
                                    value as that record's `revision`, so an ETag is never
                                    reused, not even after a purge and a new record of the
                                    same id
  alarms:cleared              zset  id -> clearing time (Unix seconds) of every cleared
                                    record: what the retention purge walks
  alarms:events               stream  one entry per change: `alarmEventRecordId`, `event`
                                    (NEW | CHANGE | CLEAR | ACKNOWLEDGE) and `record` (the
                                    record after the change, as a JSON object in its wire
                                    form), `revision`, and `correlationId` when an API call
                                    made the change (acknowledge, clear: the call's id,
                                    netweave/correlation.py), and `traceparent` when the
                                    call was traced (netweave/tracing.py: the span of the
                                    write, so the notifier continues the trace); trimmed to
                                    about EVENTS_MAX_LEN
                                    entries; a purge does not touch it
  alarms:config               hash  the AlarmServiceConfiguration: retentionPeriod (days),
                                    extensions (a JSON object); absent: the defaults
  alarms:purge_lock           string  held (SET NX PX) by the replica that purges this round
  alarms:purged               stream  one entry per purged record (`alarmEventRecordId`),
                                    so every replica's alarm view drops it; trimmed like
                                    alarms:events
  alarms:sources              hash  source alarm id (an adapter's ActiveAlarm.alarm_id) ->
                                    the id of the record it raised last; a record raised by
                                    a source also stores it as its `source` field
  alarms:pipeline             hash  `entry` and `version`: the last inventory:events entry
                                    the alarm pipeline applied (see server/alarms/pipeline.py)
  alarms:pipeline:lease       string  held (SET NX PX, renewed) by the replica whose
                                    pipeline applies the sources' alarms

Every write is one Lua script (or one WATCHed transaction), so concurrent writers on any
replica serialize in Redis: of two acknowledgements of one alarm exactly one wins. Every
write that changes a record takes the next `alarms:revision` and appends its event in the
same script, so the events' `revision` fields count up by one without a gap: a reader that
sees a gap knows it missed events (a trimmed stream, a restored Redis) and reloads.
"""

from __future__ import annotations

import builtins
import datetime as dt
import enum
import json
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

import redis
import structlog
from o2ims.monitoring.v1 import monitoring_pb2 as pb

from netweave import correlation, tracing
from server.store import NO_WAIT, ReplicaWait, is_transient, run_replicated

if TYPE_CHECKING:
    from server.alarms.view import AlarmView

ALARM_KEY_PREFIX: Final = "alarm:"
ALARMS_INDEX_KEY: Final = "alarms"
REVISION_KEY: Final = "alarms:revision"
CLEARED_KEY: Final = "alarms:cleared"
EVENTS_KEY: Final = "alarms:events"
# The attributes of the span around a write that appends to EVENTS_KEY (messaging
# conventions: Redis Streams is the system, the stream the destination).
_PUBLISH: Final = {
    "messaging.system": "redis_streams",
    "messaging.destination.name": EVENTS_KEY,
    "messaging.operation.type": "send",
}
CONFIG_KEY: Final = "alarms:config"
PURGE_LOCK_KEY: Final = "alarms:purge_lock"
PURGED_KEY: Final = "alarms:purged"
SOURCES_KEY: Final = "alarms:sources"
PIPELINE_KEY: Final = "alarms:pipeline"
PIPELINE_LEASE_KEY: Final = "alarms:pipeline:lease"
# The stored field that is the record's ETag, not an O2ims attribute.
REVISION_FIELD: Final = "revision"
# The stored field naming the source alarm that raised the record, not an O2ims attribute.
SOURCE_FIELD: Final = "source"
INTERNAL_FIELDS: Final = frozenset({REVISION_FIELD, SOURCE_FIELD})
EVENTS_MAX_LEN: Final = 100_000
CLEARED_SEVERITY: Final = 5
DEFAULT_RETENTION_DAYS: Final = 14
PURGE_BATCH: Final = 500

# The O2ims attributes a source may set (put_record), stored as documented above.
RECORD_FIELDS: Final = (
    "resourceTypeID",
    "resourceID",
    "alarmDefinitionID",
    "probableCauseID",
    "alarmRaisedTime",
    "alarmChangedTime",
    "alarmClearedTime",
    "alarmAcknowledgeTime",
    "alarmAcknowledged",
    "perceivedSeverity",
    "extensions",
)

# Monitoring 1.x spells these with "ID"; the 2.x spellings are accepted in filters too.
ALARM_FILTER_ALIASES: Final = {
    "resourceTypeId": "resourceTypeID",
    "resourceId": "resourceID",
    "alarmDefinitionId": "alarmDefinitionID",
    "probableCauseId": "probableCauseID",
    "alarmAcknowledgedTime": "alarmAcknowledgeTime",
}

log = structlog.get_logger()


class Event(enum.StrEnum):
    """The alarm event of a change (AlarmEventNotification.notificationEventType)."""

    NEW = "NEW"
    CHANGE = "CHANGE"
    CLEAR = "CLEAR"
    ACKNOWLEDGE = "ACKNOWLEDGE"


class Outcome(enum.StrEnum):
    OK = "OK"
    NOT_FOUND = "NOT_FOUND"
    ETAG_MISMATCH = "ETAG_MISMATCH"
    ALREADY_ACKNOWLEDGED = "ALREADY_ACKNOWLEDGED"
    ALREADY_CLEARED = "ALREADY_CLEARED"
    # clear(): the record's alarmDefinitionID is not the one the caller checked.
    DEFINITION_CHANGED = "DEFINITION_CHANGED"
    # clear(): the caller found its definition not to allow a manual clear.
    NOT_CLEARABLE = "NOT_CLEARABLE"


@dataclass(frozen=True)
class Result:
    """What acknowledge() or clear() did. `etag` is the record's ETag after the call (the
    current one when nothing changed; "" when not found); `record` the new record on OK."""

    outcome: Outcome
    etag: str = ""
    record: pb.AlarmEventRecord | None = None


@dataclass(frozen=True)
class AlarmServiceConfig:
    retention_period: int = DEFAULT_RETENTION_DAYS
    extensions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Position:
    """An entry of inventory:events and its inventory version."""

    entry: str
    version: int


@dataclass(frozen=True)
class SourceAlarm:
    """An alarm active in a source, in Monitoring 1.x terms (see pipeline.py)."""

    source_id: str
    resource_type_id: str
    resource_id: str
    alarm_definition_id: str
    probable_cause_id: str
    perceived_severity: int
    # RFC 3339, or "" for "when first seen".
    raised_time: str = ""
    extensions: Mapping[str, Any] = field(default_factory=dict)

    def attributes(self) -> dict[str, str]:
        """The stored form of every attribute a source sets."""
        return {
            "resourceTypeID": self.resource_type_id,
            "resourceID": self.resource_id,
            "alarmDefinitionID": self.alarm_definition_id,
            "probableCauseID": self.probable_cause_id,
            "perceivedSeverity": str(self.perceived_severity),
            "extensions": json.dumps(dict(self.extensions), separators=(",", ":"), sort_keys=True),
        }


@dataclass(frozen=True)
class SourceOutcome:
    """What raise_from_source() / withdraw_from_source() did: the event, or None for no
    change (SAME) or an inventory event applied already (skipped)."""

    event: Event | None
    record_id: str
    skipped: bool = False


class UnreadableAlarm(ValueError):
    """A stored alarm record that does not parse as an AlarmEventRecord."""


def etag_of(revision: int | str) -> str:
    """The strong ETag of a record revision, quoted as HTTP sends it."""
    return f'"{revision}"'


def revision_of(etag: str) -> int:
    """The revision an ETag of etag_of() quotes."""
    return int(etag.strip('"'))


ANY: Final = "*"


def if_match_revisions(if_match: str | None) -> str:
    """An If-Match header value as the scripts take it: "" (no condition), "*" (any existing
    record), or the comma-joined revisions it lists. Weak tags never match (If-Match
    compares strongly, RFC 9110 13.1.1); a value that lists no strong tag matches nothing."""
    if if_match is None or not if_match.strip():
        return ""
    if if_match.strip() == ANY:
        return ANY
    revisions = []
    for listed in if_match.split(","):
        tag = listed.strip()
        if len(tag) >= 2 and tag.startswith('"') and tag.endswith('"'):
            revisions.append(tag[1:-1])
    # A condition that can never hold (only weak or malformed tags).
    return ",".join(revisions) or ","


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(text: str) -> str:
    """Unix seconds of an RFC 3339 time, as the scripts take it."""
    return f"{dt.datetime.fromisoformat(text.replace('Z', '+00:00')).timestamp():.6f}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# Shared by the scripts: the record hash as the JSON object of its wire form (the event
# stream's `record`), with `id` as its alarmEventRecordId.
_RECORD_JSON = """
local function record_json(key, id)
  local flat = redis.call('HGETALL', key)
  local record = {alarmEventRecordId = id}
  for i = 1, #flat, 2 do
    local name, value = flat[i], flat[i + 1]
    if name ~= 'revision' and name ~= 'source' and value ~= '' then
      if name == 'alarmAcknowledged' then
        record[name] = (value == 'true')
      elseif name == 'perceivedSeverity' then
        record[name] = tonumber(value)
      elseif name == 'extensions' then
        local ok, decoded = pcall(cjson.decode, value)
        record[name] = ok and decoded or value
      else
        record[name] = value
      end
    end
  end
  return cjson.encode(record)
end
-- An event's optional `correlationId` (the API call's; '' = none) and `traceparent` (the
-- call's span; '' = not traced) after its fields.
local function with_correlation(fields, correlation_id, traceparent)
  if correlation_id and correlation_id ~= '' then
    fields[#fields + 1] = 'correlationId'
    fields[#fields + 1] = correlation_id
  end
  if traceparent and traceparent ~= '' then
    fields[#fields + 1] = 'traceparent'
    fields[#fields + 1] = traceparent
  end
  return fields
end
local function etag_matches(expected, revision)
  if expected == '' or expected == '*' then
    return true
  end
  for listed in string.gmatch(expected, '[^,]+') do
    if listed == revision then
      return true
    end
  end
  return false
end
"""

# The start of every operation on an existing record that honours If-Match (ARGV[2]):
# NOT_FOUND, or ETAG_MISMATCH with the current revision; else `revision` is set.
_GUARDED = (
    _RECORD_JSON
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'NOT_FOUND'}
end
local revision = redis.call('HGET', KEYS[1], 'revision') or '0'
if not etag_matches(ARGV[2], revision) then
  return {'ETAG_MISMATCH', revision}
end
"""
)

# KEYS: record, revision counter, events stream. ARGV: id, If-Match revisions, now, maxlen,
# correlation id ('' = none), traceparent ('' = none).
_ACKNOWLEDGE = (
    _GUARDED
    + """
if redis.call('HGET', KEYS[1], 'alarmAcknowledged') == 'true' then
  return {'ALREADY_ACKNOWLEDGED', revision}
end
local new = tostring(redis.call('INCR', KEYS[2]))
redis.call('HSET', KEYS[1], 'alarmAcknowledged', 'true', 'alarmAcknowledgeTime', ARGV[3],
  'revision', new)
local record = record_json(KEYS[1], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(with_correlation(
  {'alarmEventRecordId', ARGV[1], 'event', 'ACKNOWLEDGE', 'record', record, 'revision', new},
  ARGV[5], ARGV[6])))
return {'OK', new, record}
"""
)

# KEYS: record, revision counter, events stream, cleared zset. ARGV: id, If-Match
# revisions, now, maxlen, now (Unix seconds), the alarmDefinitionID the caller checked,
# "1" if that definition allows a manual clear, correlation id ('' = none), traceparent
# ('' = none).
_CLEAR = (
    _GUARDED
    + """
local severity = redis.call('HGET', KEYS[1], 'perceivedSeverity')
local cleared = redis.call('HGET', KEYS[1], 'alarmClearedTime')
if severity == '5' or (cleared and cleared ~= '') then
  return {'ALREADY_CLEARED', revision}
end
if (redis.call('HGET', KEYS[1], 'alarmDefinitionID') or '') ~= ARGV[6] then
  return {'DEFINITION_CHANGED', revision}
end
if ARGV[7] ~= '1' then
  return {'NOT_CLEARABLE', revision}
end
local new = tostring(redis.call('INCR', KEYS[2]))
redis.call('HSET', KEYS[1], 'perceivedSeverity', '5', 'alarmClearedTime', ARGV[3],
  'alarmChangedTime', ARGV[3], 'revision', new)
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
local record = record_json(KEYS[1], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(with_correlation(
  {'alarmEventRecordId', ARGV[1], 'event', 'CLEAR', 'record', record, 'revision', new},
  ARGV[8], ARGV[9])))
return {'OK', new, record}
"""
)

# KEYS: record, revision counter, events stream, cleared zset, index set. ARGV: id, maxlen,
# clearing: "" (severity not given: as it was), "-" (not cleared) or the clearing time (Unix
# seconds); then field/value pairs.
_PUT = (
    _RECORD_JSON
    + """
local existed = redis.call('EXISTS', KEYS[1]) == 1
local was_cleared = existed and redis.call('HGET', KEYS[1], 'perceivedSeverity') == '5'
local new = tostring(redis.call('INCR', KEYS[2]))
local values = {}
for i = 4, #ARGV do
  values[#values + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], 'revision', new, unpack(values))
if not existed then
  redis.call('HSETNX', KEYS[1], 'alarmAcknowledged', 'false')
end
redis.call('SADD', KEYS[5], ARGV[1])
local event = existed and 'CHANGE' or 'NEW'
if ARGV[3] == '-' then
  redis.call('ZREM', KEYS[4], ARGV[1])
elseif ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
  if existed and not was_cleared then
    event = 'CLEAR'
  end
end
local record = record_json(KEYS[1], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'alarmEventRecordId', ARGV[1],
  'event', event, 'record', record, 'revision', new)
return {event, new}
"""
)

# KEYS: cleared zset, index set, sources hash, purged stream. ARGV: cutoff (Unix seconds),
# batch size, record key prefix, maxlen. Deletes up to a batch of records cleared at or
# before the cutoff; returns how many.
_PURGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local purged = 0
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  redis.call('ZREM', KEYS[1], id)
  -- Re-raised since (severity no longer CLEARED): not purged.
  if redis.call('HGET', key, 'perceivedSeverity') == '5' then
    local source = redis.call('HGET', key, 'source')
    if source and redis.call('HGET', KEYS[3], source) == id then
      redis.call('HDEL', KEYS[3], source)
    end
    redis.call('DEL', key)
    redis.call('SREM', KEYS[2], id)
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'alarmEventRecordId', id)
    purged = purged + 1
  end
end
return {purged, #ids}
"""

# Shared by the source scripts: move the pipeline's position (KEYS[6]) to the inventory
# event being applied, or refuse if it was applied already. An empty entry (a reconcile)
# does not check or move the position.
_ADVANCE = """
local function newer(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local function advance(position_key, entry, version)
  if entry == '' then
    return true
  end
  local current = redis.call('HGET', position_key, 'entry')
  if current and not newer(entry, current) then
    return false
  end
  redis.call('HSET', position_key, 'entry', entry, 'version', version)
  return true
end
"""

# KEYS: sources hash, revision counter, events stream, cleared zset, index set, pipeline
# position. ARGV: 1 source id, 2 a fresh record id, 3 now, 4 now (Unix seconds), 5 flap
# window (seconds), 6 maxlen, 7 inventory event entry ('' = none), 8 its version, 9 the
# source's raised time ('' = now), 10 record key prefix, then attribute/value pairs.
# The source's alarm is active: raise a new record (NEW), change the active one (CHANGE,
# only if an attribute differs), or re-raise the one it cleared within the flap window
# (CHANGE). Returns {event | 'SAME' | 'SKIP', record id}.
_RAISE = (
    _RECORD_JSON
    + _ADVANCE
    + """
if not advance(KEYS[6], ARGV[7], ARGV[8]) then
  return {'SKIP', ''}
end
local id = redis.call('HGET', KEYS[1], ARGV[1])
local key = id and (ARGV[10] .. id)
local event = nil
local changed_time = ARGV[3]
if id and redis.call('EXISTS', key) == 1 then
  if redis.call('HGET', key, 'perceivedSeverity') ~= '5' then
    local differs = false
    for i = 11, #ARGV, 2 do
      if (redis.call('HGET', key, ARGV[i]) or '') ~= ARGV[i + 1] then
        differs = true
      end
    end
    if not differs then
      return {'SAME', id}
    end
    event = 'CHANGE'
  else
    local cleared_at = redis.call('ZSCORE', KEYS[4], id)
    if cleared_at and tonumber(cleared_at) >= tonumber(ARGV[4]) - tonumber(ARGV[5]) then
      event = 'CHANGE'
      redis.call('ZREM', KEYS[4], id)
      redis.call('HSET', key, 'alarmClearedTime', '')
    end
  end
end
if event == nil then
  id = ARGV[2]
  key = ARGV[10] .. id
  event = 'NEW'
  if ARGV[9] ~= '' then
    changed_time = ARGV[9]
  end
  redis.call('HSET', key, 'alarmRaisedTime', changed_time, 'alarmAcknowledged', 'false',
    'source', ARGV[1])
  redis.call('HSET', KEYS[1], ARGV[1], id)
  redis.call('SADD', KEYS[5], id)
end
local values = {}
for i = 11, #ARGV do
  values[#values + 1] = ARGV[i]
end
local new = tostring(redis.call('INCR', KEYS[2]))
redis.call('HSET', key, 'alarmChangedTime', changed_time, 'revision', new, unpack(values))
local record = record_json(key, id)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'alarmEventRecordId', id,
  'event', event, 'record', record, 'revision', new)
return {event, id}
"""
)

# KEYS: as _RAISE. ARGV: 1 source id, 2 now, 3 now (Unix seconds), 4 maxlen, 5 inventory
# event entry ('' = none), 6 its version, 7 record key prefix. The source's alarm is gone:
# clear its record if active. Returns {'CLEAR' | 'SAME' | 'SKIP', record id}.
_WITHDRAW = (
    _RECORD_JSON
    + _ADVANCE
    + """
if not advance(KEYS[6], ARGV[5], ARGV[6]) then
  return {'SKIP', ''}
end
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then
  return {'SAME', ''}
end
local key = ARGV[7] .. id
if redis.call('EXISTS', key) == 0 or redis.call('HGET', key, 'perceivedSeverity') == '5' then
  return {'SAME', id}
end
local new = tostring(redis.call('INCR', KEYS[2]))
redis.call('HSET', key, 'perceivedSeverity', '5', 'alarmClearedTime', ARGV[2],
  'alarmChangedTime', ARGV[2], 'revision', new)
redis.call('ZADD', KEYS[4], ARGV[3], id)
local record = record_json(key, id)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'alarmEventRecordId', id,
  'event', 'CLEAR', 'record', record, 'revision', new)
return {'CLEAR', id}
"""
)

# KEYS: pipeline position. ARGV: entry, version. Moves the position forward only.
_ADVANCE_ONLY = (
    _ADVANCE
    + """
return advance(KEYS[1], ARGV[1], ARGV[2]) and 1 or 0
"""
)

# KEYS: lease. ARGV: token, milliseconds. Takes the lease if free, renews it if ours.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class AlarmStore:
    """Reads and writes alarm state; raises redis.RedisError when Redis is away.

    With a `view` (the core's AlarmView, server/alarms/view.py), a record read with its ETag
    (get_with_etag: GetAlarm) is the view's copy when the view holds it with its revision
    (a hit of the cache metric), and every acknowledgement and clear made here is handed to
    the view, with its revision, before returning. Anything else reads Redis (a miss)."""

    def __init__(
        self,
        client: redis.Redis,
        events_max_len: int = EVENTS_MAX_LEN,
        *,
        wait: ReplicaWait = NO_WAIT,
        view: AlarmView | None = None,
    ) -> None:
        self._client = client
        self._events_max_len = events_max_len
        # Acknowledgements wait for replicas (Redis high availability, operations guide).
        self._wait = wait
        self._view = view
        self._acknowledge = client.register_script(_ACKNOWLEDGE)
        self._clear = client.register_script(_CLEAR)
        self._put = client.register_script(_PUT)
        self._purge = client.register_script(_PURGE)
        self._raise = client.register_script(_RAISE)
        self._withdraw = client.register_script(_WITHDRAW)
        self._advance = client.register_script(_ADVANCE_ONLY)
        self._lease = client.register_script(_LEASE)

    # --- records ------------------------------------------------------------------------

    def get(self, alarm_id: str) -> pb.AlarmEventRecord | None:
        """The record as Redis holds it now (what a write decides on: never the view's)."""
        found = self._read(alarm_id)
        return found[0] if found else None

    def get_with_etag(self, alarm_id: str) -> tuple[pb.AlarmEventRecord, str] | None:
        """The record and its ETag: the view's when it holds both, else Redis's. The two
        always belong together (the view keeps each record with the revision that wrote
        it, and never goes back to an older one), so the ETag is the one an If-Match
        against that record's state would match."""
        view = self._view
        if view is None:
            return self._read(alarm_id)
        held = view.with_etag(alarm_id)
        if held is not None:
            view.on_read("hit")
            return held
        view.on_read("miss")
        try:
            return self._read(alarm_id)
        except redis.RedisError as error:
            if view.loaded and alarm_id not in view.records and is_transient(error):
                # Redis is away, so nothing can have raised it meanwhile: the view's answer.
                return None
            raise

    def _read(self, alarm_id: str) -> tuple[pb.AlarmEventRecord, str] | None:
        stored = cast(dict[bytes, bytes], self._client.hgetall(ALARM_KEY_PREFIX + alarm_id))
        if not stored:
            return None
        revision = stored.get(REVISION_FIELD.encode(), b"0").decode()
        return decode_alarm(alarm_id, stored), etag_of(revision)

    def list(self) -> list[pb.AlarmEventRecord]:
        """Every readable record, oldest raised first; unreadable ones are logged and left
        out, so one bad record cannot hide every other alarm."""
        return [record for record, _ in self.list_with_revisions()]

    def list_with_revisions(self) -> builtins.list[tuple[pb.AlarmEventRecord, int]]:
        """(record, its revision) of every readable record, as list() orders them."""
        members = cast(set[bytes], self._client.smembers(ALARMS_INDEX_KEY))
        ids = sorted(member.decode() for member in members)
        pipe = self._client.pipeline(transaction=False)
        for alarm_id in ids:
            pipe.hgetall(ALARM_KEY_PREFIX + alarm_id)
        records: builtins.list[tuple[pb.AlarmEventRecord, int]] = []
        for alarm_id, stored in zip(ids, pipe.execute(), strict=True):
            if not stored:
                continue
            try:
                revision = int(stored.get(REVISION_FIELD.encode(), b"0"))
                records.append((decode_alarm(alarm_id, stored), revision))
            except (UnreadableAlarm, ValueError) as error:
                log.error(
                    "alarm_record_unreadable", alarm_event_record_id=alarm_id, error=str(error)
                )
        return sorted(
            records,
            key=lambda pair: (
                pair[0].alarm_raised_time.ToNanoseconds(),
                pair[0].alarm_event_record_id,
            ),
        )

    def acknowledge(
        self,
        alarm_id: str,
        expected_etag: str | None = None,
        *,
        now: dt.datetime | None = None,
        correlation_id: str | None = None,
    ) -> Result:
        """Acknowledge the record if it exists, `expected_etag` (an If-Match value: tags,
        `*` or None for no condition) matches, and it is not acknowledged yet. The event
        carries `correlation_id` (None: the current call's, netweave/correlation.py) and,
        when traced, the `traceparent` of the write's span."""
        with tracing.span(f"{EVENTS_KEY} publish", kind="PRODUCER", attributes=_PUBLISH):
            reply = run_replicated(
                self._acknowledge,
                self._client,
                self._wait,
                "alarm_acknowledge",
                keys=[ALARM_KEY_PREFIX + alarm_id, REVISION_KEY, EVENTS_KEY],
                args=[
                    alarm_id,
                    if_match_revisions(expected_etag),
                    rfc3339(now or _now()),
                    self._events_max_len,
                    correlation.current() if correlation_id is None else correlation_id,
                    tracing.traceparent(),
                ],
            )
        return self._written(alarm_id, reply)

    def clear(
        self,
        alarm_id: str,
        expected_etag: str | None = None,
        *,
        definition_id: str,
        manual: bool = True,
        now: dt.datetime | None = None,
        correlation_id: str | None = None,
    ) -> Result:
        """Clear the record manually (perceivedSeverity 5, alarmClearedTime and
        alarmChangedTime now) if it exists, `expected_etag` matches, it is not cleared
        yet, and its alarmDefinitionID is still `definition_id` (the definition whose
        clearingType the caller checked; else DEFINITION_CHANGED). `manual` False (that
        definition does not allow a manual clear): NOT_CLEARABLE once every other check
        passed, so a stale ETag or a cleared alarm is reported first. The event carries
        `correlation_id` (None: the current call's, netweave/correlation.py) and, when
        traced, the `traceparent` of the write's span."""
        moment = now or _now()
        with tracing.span(f"{EVENTS_KEY} publish", kind="PRODUCER", attributes=_PUBLISH):
            reply = self._clear(
                keys=[ALARM_KEY_PREFIX + alarm_id, REVISION_KEY, EVENTS_KEY, CLEARED_KEY],
                args=[
                    alarm_id,
                    if_match_revisions(expected_etag),
                    rfc3339(moment),
                    self._events_max_len,
                    _epoch(rfc3339(moment)),
                    definition_id,
                    "1" if manual else "0",
                    correlation.current() if correlation_id is None else correlation_id,
                    tracing.traceparent(),
                ],
            )
        return self._written(alarm_id, reply)

    def _written(self, alarm_id: str, reply: Iterable[bytes]) -> Result:
        result = _result(alarm_id, reply)
        if result.record is not None and self._view is not None:
            # Read-your-writes: this replica's next GET shows the change and its ETag.
            self._view.put(result.record, revision_of(result.etag))
        return result

    def put_record(
        self, alarm_id: str, attributes: Mapping[str, Any], *, now: dt.datetime | None = None
    ) -> tuple[Event, str]:
        """Write a record as a source reports it (raise, change or clear): the given
        attributes (wire names, wire values) replace the stored ones, others are kept.
        Raising needs every mandatory attribute; a perceivedSeverity of 5 clears (and sets
        alarmClearedTime, if not given, to now), any other re-raises. alarmChangedTime is
        set to now unless given. Returns the event and the new ETag."""
        unknown = set(attributes) - set(RECORD_FIELDS)
        if unknown:
            raise ValueError(f"unknown alarm attributes: {sorted(unknown)}")
        moment = now or _now()
        values = {name: _stored(name, value) for name, value in attributes.items()}
        values.setdefault("alarmChangedTime", rfc3339(moment))
        cleared_at = ""
        if values.get("perceivedSeverity") == str(CLEARED_SEVERITY):
            values.setdefault("alarmClearedTime", rfc3339(moment))
            cleared_at = _epoch(values["alarmClearedTime"])
        elif "perceivedSeverity" in values:
            values["alarmClearedTime"] = ""
            cleared_at = "-"
        pairs: list[str] = []
        for name, value in values.items():
            pairs += [name, value]
        reply = cast(
            list[bytes],
            self._put(
                keys=[
                    ALARM_KEY_PREFIX + alarm_id,
                    REVISION_KEY,
                    EVENTS_KEY,
                    CLEARED_KEY,
                    ALARMS_INDEX_KEY,
                ],
                args=[alarm_id, self._events_max_len, cleared_at, *pairs],
            ),
        )
        return Event(reply[0].decode()), etag_of(reply[1].decode())

    def purge_cleared(self, older_than: dt.datetime) -> int:
        """Delete every record cleared before `older_than` (the event stream is left as it
        is); returns how many."""
        total = 0
        while True:
            purged, seen = cast(
                list[int],
                self._purge(
                    keys=[CLEARED_KEY, ALARMS_INDEX_KEY, SOURCES_KEY, PURGED_KEY],
                    args=[
                        f"{older_than.timestamp():.6f}",
                        PURGE_BATCH,
                        ALARM_KEY_PREFIX,
                        self._events_max_len,
                    ],
                ),
            )
            total += int(purged)
            if int(seen) < PURGE_BATCH:
                return total

    # --- sources ------------------------------------------------------------------------

    def _source_keys(self) -> builtins.list[str]:
        return [
            SOURCES_KEY,
            REVISION_KEY,
            EVENTS_KEY,
            CLEARED_KEY,
            ALARMS_INDEX_KEY,
            PIPELINE_KEY,
        ]

    def raise_from_source(
        self,
        alarm: SourceAlarm,
        *,
        flap_window: float,
        position: Position | None = None,
        now: dt.datetime | None = None,
    ) -> SourceOutcome:
        """The source reports `alarm` active: a NEW record, a CHANGE of its active record
        (when an attribute differs), a CHANGE that re-raises the record it cleared less than
        `flap_window` seconds ago, or nothing (SAME). With `position` (the inventory event
        that says so), applied at most once: skipped if the pipeline is past it already."""
        moment = now or _now()
        pairs: list[str] = []
        for name, value in alarm.attributes().items():
            pairs += [name, value]
        reply = self._raise(
            keys=self._source_keys(),
            args=[
                alarm.source_id,
                str(uuid.uuid4()),
                rfc3339(moment),
                f"{moment.timestamp():.6f}",
                f"{flap_window:.3f}",
                self._events_max_len,
                position.entry if position else "",
                position.version if position else 0,
                alarm.raised_time,
                ALARM_KEY_PREFIX,
                *pairs,
            ],
        )
        return _source_outcome(reply)

    def withdraw_from_source(
        self,
        source_id: str,
        *,
        position: Position | None = None,
        now: dt.datetime | None = None,
    ) -> SourceOutcome:
        """The source no longer reports the alarm: CLEAR its record if it is active."""
        moment = now or _now()
        reply = self._withdraw(
            keys=self._source_keys(),
            args=[
                source_id,
                rfc3339(moment),
                f"{moment.timestamp():.6f}",
                self._events_max_len,
                position.entry if position else "",
                position.version if position else 0,
                ALARM_KEY_PREFIX,
            ],
        )
        return _source_outcome(reply)

    def active_sources(self) -> dict[str, str]:
        """source alarm id -> record id, for every record a source raised that is active."""
        stored = cast(dict[bytes, bytes], self._client.hgetall(SOURCES_KEY))
        mapping = {source.decode(): record.decode() for source, record in stored.items()}
        pipe = self._client.pipeline(transaction=False)
        for record_id in mapping.values():
            pipe.hget(ALARM_KEY_PREFIX + record_id, "perceivedSeverity")
        severities = pipe.execute()
        return {
            source: record_id
            for (source, record_id), severity in zip(mapping.items(), severities, strict=True)
            if severity is not None and severity != str(CLEARED_SEVERITY).encode()
        }

    def pipeline_position(self) -> Position | None:
        stored = cast(dict[bytes, bytes], self._client.hgetall(PIPELINE_KEY))
        if b"entry" not in stored:
            return None
        return Position(stored[b"entry"].decode(), int(stored.get(b"version", b"0")))

    def advance_pipeline(self, position: Position) -> bool:
        """Move the pipeline's position forward to `position` (never back)."""
        return bool(self._advance(keys=[PIPELINE_KEY], args=[position.entry, position.version]))

    def reset_pipeline(self, position: Position) -> None:
        """Set the pipeline's position, back too (after a reconcile)."""
        self._client.hset(
            PIPELINE_KEY, mapping={"entry": position.entry, "version": str(position.version)}
        )

    def hold_pipeline_lease(self, token: str, hold_seconds: float) -> bool:
        """Take the pipeline lease, or renew it if `token` holds it; False if another does."""
        return bool(
            self._lease(keys=[PIPELINE_LEASE_KEY], args=[token, max(1, int(hold_seconds * 1000))])
        )

    def revision(self) -> int:
        """The revision of the latest change of any record."""
        return int(cast(bytes | None, self._client.get(REVISION_KEY)) or 0)

    def try_purge_lock(self, hold_seconds: float) -> bool:
        """Take the purge lock for `hold_seconds` unless another replica holds it. It is not
        released: whoever takes it purges for everyone until it expires."""
        token = secrets.token_hex(8)
        return bool(
            self._client.set(PURGE_LOCK_KEY, token, nx=True, px=max(1, int(hold_seconds * 1000)))
        )

    def events(
        self, after: str = "0-0", count: int = 1000
    ) -> builtins.list[tuple[str, dict[str, str]]]:
        """Entries of the event stream after `after` (id, fields): for the notification
        slice and the tests."""
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            self._client.xrange(
                EVENTS_KEY, min=f"({after}" if after != "0-0" else "-", count=count
            ),
        )
        return [
            (entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()})
            for entry_id, fields in entries
        ]

    # --- configuration ------------------------------------------------------------------

    def config(self) -> AlarmServiceConfig:
        stored = cast(dict[bytes, bytes], self._client.hgetall(CONFIG_KEY))
        return _decode_config(stored)

    def put_config(self, config: AlarmServiceConfig) -> AlarmServiceConfig:
        self._client.hset(CONFIG_KEY, mapping=_encode_config(config))
        return config

    def patch_config(
        self, retention_period: int | None, extensions: Mapping[str, Any] | None
    ) -> AlarmServiceConfig:
        """Merge-patch (RFC 7396) the configuration atomically: `extensions` is merged key
        by key, a None value deleting its key."""

        def apply(pipe: Any) -> None:
            current = _decode_config(pipe.hgetall(CONFIG_KEY))
            merged = dict(current.extensions)
            for key, value in (extensions or {}).items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = merge_patch(merged.get(key), value)
            updated = AlarmServiceConfig(
                retention_period if retention_period is not None else current.retention_period,
                merged,
            )
            pipe.multi()
            pipe.hset(CONFIG_KEY, mapping=_encode_config(updated))

        self._client.transaction(apply, CONFIG_KEY)
        return self.config()


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 MergePatch(target, patch)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _decode_config(stored: Mapping[bytes, bytes]) -> AlarmServiceConfig:
    fields = {k.decode(): v.decode() for k, v in stored.items()}
    try:
        retention = int(fields.get("retentionPeriod", DEFAULT_RETENTION_DAYS))
        extensions = json.loads(fields.get("extensions", "{}"))
    except ValueError:
        log.error("alarm_config_unreadable", stored=fields)
        return AlarmServiceConfig()
    return AlarmServiceConfig(retention, extensions if isinstance(extensions, dict) else {})


def _encode_config(config: AlarmServiceConfig) -> dict[Any, Any]:
    return {
        "retentionPeriod": str(config.retention_period),
        "extensions": json.dumps(config.extensions, separators=(",", ":")),
    }


def _stored(name: str, value: Any) -> str:
    if name == "alarmAcknowledged":
        return "true" if value is True or value == "true" else "false"
    if name == "extensions":
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    return "" if value is None else str(value)


def _source_outcome(reply: Any) -> SourceOutcome:
    outcome, record_id = (part.decode() if isinstance(part, bytes) else str(part) for part in reply)
    if outcome == "SKIP":
        return SourceOutcome(None, record_id, skipped=True)
    if outcome == "SAME":
        return SourceOutcome(None, record_id)
    return SourceOutcome(Event(outcome), record_id)


def _result(alarm_id: str, reply: Iterable[bytes]) -> Result:
    parts = [part.decode() if isinstance(part, bytes) else str(part) for part in reply]
    outcome = Outcome(parts[0])
    if outcome is Outcome.NOT_FOUND:
        return Result(outcome)
    if outcome is not Outcome.OK:
        return Result(outcome, etag_of(parts[1]))
    record = json.loads(parts[2])
    return Result(outcome, etag_of(parts[1]), _parse_record(alarm_id, record))


def decode_alarm(alarm_id: str, stored: Mapping[bytes, bytes]) -> pb.AlarmEventRecord:
    fields = {name.decode(): value.decode() for name, value in stored.items()}
    document: dict[str, Any] = {
        k: v for k, v in fields.items() if v != "" and k not in INTERNAL_FIELDS
    }
    try:
        if "alarmAcknowledged" in document:
            document["alarmAcknowledged"] = {"true": True, "false": False}[
                document["alarmAcknowledged"]
            ]
        if "perceivedSeverity" in document:
            document["perceivedSeverity"] = int(document["perceivedSeverity"])
        if "extensions" in document:
            document["extensions"] = json.loads(document["extensions"])
    except (KeyError, ValueError) as error:
        raise UnreadableAlarm(f"alarm:{alarm_id}: {error}") from error
    return _parse_record(alarm_id, document)


_STRING_FIELDS: Final = {
    "resourceTypeID": "resource_type_id",
    "resourceID": "resource_id",
    "alarmDefinitionID": "alarm_definition_id",
    "probableCauseID": "probable_cause_id",
}
_TIME_FIELDS: Final = {
    "alarmRaisedTime": "alarm_raised_time",
    "alarmChangedTime": "alarm_changed_time",
    "alarmClearedTime": "alarm_cleared_time",
    "alarmAcknowledgeTime": "alarm_acknowledge_time",
}


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SUB_MICROSECOND: Final = re.compile(r"\.\d{7}")


def _set_time(timestamp: Any, text: str) -> None:
    """Timestamp.FromJsonString, several times faster for the times we write (RFC 3339 with
    at most microseconds); anything else goes the long way."""
    try:
        if _SUB_MICROSECOND.search(text):
            raise ValueError("more than microseconds")  # fromisoformat would drop them
        moment = dt.datetime.fromisoformat(text)
    except (ValueError, TypeError):
        timestamp.FromJsonString(text)
        return
    if moment.tzinfo is None:
        raise ValueError(f"time without an offset: {text!r}")
    delta = moment - _EPOCH
    timestamp.seconds = delta.days * 86_400 + delta.seconds
    timestamp.nanos = delta.microseconds * 1000


def _parse_record(alarm_id: str, document: Mapping[str, Any]) -> pb.AlarmEventRecord:
    """The record of its wire-form JSON object. Field by field rather than through
    json_format (several times slower): the alarm view loads 100,000 of these at start.
    Unknown attributes are skipped: the writer may store attributes of a newer model."""
    record = pb.AlarmEventRecord(alarm_event_record_id=alarm_id)
    try:
        for name, value in document.items():
            if name in _STRING_FIELDS:
                if not isinstance(value, str):
                    raise ValueError(f"{name} is not a string")
                setattr(record, _STRING_FIELDS[name], value)
            elif name in _TIME_FIELDS:
                _set_time(getattr(record, _TIME_FIELDS[name]), value)
            elif name == "alarmAcknowledged":
                if not isinstance(value, bool):
                    raise ValueError("alarmAcknowledged is not a boolean")
                record.alarm_acknowledged = value
            elif name == "perceivedSeverity":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError("perceivedSeverity is not an integer")
                record.perceived_severity = value
            elif name == "extensions":
                if not isinstance(value, dict):
                    raise ValueError("extensions is not an object")
                record.extensions.update(value)
    except (ValueError, TypeError) as error:
        raise UnreadableAlarm(f"alarm:{alarm_id}: {error}") from error
    return record


def parse_record_json(alarm_id: str, text: str | bytes) -> pb.AlarmEventRecord:
    """A record as an alarms:events entry carries it (its wire-form JSON object)."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise UnreadableAlarm(f"alarm:{alarm_id}: {error}") from error
    if not isinstance(document, dict):
        raise UnreadableAlarm(f"alarm:{alarm_id}: not a JSON object")
    return _parse_record(alarm_id, document)
