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
                                    form); trimmed to about EVENTS_MAX_LEN entries; a purge
                                    does not touch it
  alarms:config               hash  the AlarmServiceConfiguration: retentionPeriod (days),
                                    extensions (a JSON object); absent: the defaults
  alarms:purge_lock           string  held (SET NX PX) by the replica that purges this round

Every write is one Lua script (or one WATCHed transaction), so concurrent writers on any
replica serialize in Redis: of two acknowledgements of one alarm exactly one wins.
"""

from __future__ import annotations

import builtins
import datetime as dt
import enum
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

import redis
import structlog
from google.protobuf import json_format
from o2ims.monitoring.v1 import monitoring_pb2 as pb

ALARM_KEY_PREFIX: Final = "alarm:"
ALARMS_INDEX_KEY: Final = "alarms"
REVISION_KEY: Final = "alarms:revision"
CLEARED_KEY: Final = "alarms:cleared"
EVENTS_KEY: Final = "alarms:events"
CONFIG_KEY: Final = "alarms:config"
PURGE_LOCK_KEY: Final = "alarms:purge_lock"
# The stored field that is the record's ETag, not an O2ims attribute.
REVISION_FIELD: Final = "revision"
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


class UnreadableAlarm(ValueError):
    """A stored alarm record that does not parse as an AlarmEventRecord."""


def etag_of(revision: int | str) -> str:
    """The strong ETag of a record revision, quoted as HTTP sends it."""
    return f'"{revision}"'


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
    if name ~= 'revision' and value ~= '' then
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

# KEYS: record, revision counter, events stream. ARGV: id, If-Match revisions, now, maxlen.
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
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'alarmEventRecordId', ARGV[1],
  'event', 'ACKNOWLEDGE', 'record', record)
return {'OK', new, record}
"""
)

# KEYS: record, revision counter, events stream, cleared zset. ARGV: id, If-Match
# revisions, now, maxlen, now (Unix seconds), the alarmDefinitionID the caller checked,
# "1" if that definition allows a manual clear.
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
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'alarmEventRecordId', ARGV[1],
  'event', 'CLEAR', 'record', record)
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
  'event', event, 'record', record)
return {event, new}
"""
)

# KEYS: cleared zset, index set. ARGV: cutoff (Unix seconds), batch size, record key prefix.
# Deletes up to a batch of records cleared at or before the cutoff; returns how many.
_PURGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local purged = 0
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  redis.call('ZREM', KEYS[1], id)
  -- Re-raised since (severity no longer CLEARED): not purged.
  if redis.call('HGET', key, 'perceivedSeverity') == '5' then
    redis.call('DEL', key)
    redis.call('SREM', KEYS[2], id)
    purged = purged + 1
  end
end
return {purged, #ids}
"""


class AlarmStore:
    """Reads and writes alarm state; raises redis.RedisError when Redis is away."""

    def __init__(self, client: redis.Redis, events_max_len: int = EVENTS_MAX_LEN) -> None:
        self._client = client
        self._events_max_len = events_max_len
        self._acknowledge = client.register_script(_ACKNOWLEDGE)
        self._clear = client.register_script(_CLEAR)
        self._put = client.register_script(_PUT)
        self._purge = client.register_script(_PURGE)

    # --- records ------------------------------------------------------------------------

    def get(self, alarm_id: str) -> pb.AlarmEventRecord | None:
        found = self.get_with_etag(alarm_id)
        return found[0] if found else None

    def get_with_etag(self, alarm_id: str) -> tuple[pb.AlarmEventRecord, str] | None:
        stored = cast(dict[bytes, bytes], self._client.hgetall(ALARM_KEY_PREFIX + alarm_id))
        if not stored:
            return None
        revision = stored.get(REVISION_FIELD.encode(), b"0").decode()
        return decode_alarm(alarm_id, stored), etag_of(revision)

    def list(self) -> list[pb.AlarmEventRecord]:
        """Every readable record, oldest raised first; unreadable ones are logged and left
        out, so one bad record cannot hide every other alarm."""
        members = cast(set[bytes], self._client.smembers(ALARMS_INDEX_KEY))
        ids = sorted(member.decode() for member in members)
        pipe = self._client.pipeline(transaction=False)
        for alarm_id in ids:
            pipe.hgetall(ALARM_KEY_PREFIX + alarm_id)
        records: list[pb.AlarmEventRecord] = []
        for alarm_id, stored in zip(ids, pipe.execute(), strict=True):
            if not stored:
                continue
            try:
                records.append(decode_alarm(alarm_id, stored))
            except UnreadableAlarm as error:
                log.error(
                    "alarm_record_unreadable", alarm_event_record_id=alarm_id, error=str(error)
                )
        return sorted(
            records,
            key=lambda r: (r.alarm_raised_time.ToNanoseconds(), r.alarm_event_record_id),
        )

    def acknowledge(
        self, alarm_id: str, expected_etag: str | None = None, *, now: dt.datetime | None = None
    ) -> Result:
        """Acknowledge the record if it exists, `expected_etag` (an If-Match value: tags,
        `*` or None for no condition) matches, and it is not acknowledged yet."""
        reply = self._acknowledge(
            keys=[ALARM_KEY_PREFIX + alarm_id, REVISION_KEY, EVENTS_KEY],
            args=[
                alarm_id,
                if_match_revisions(expected_etag),
                rfc3339(now or _now()),
                self._events_max_len,
            ],
        )
        return _result(alarm_id, reply)

    def clear(
        self,
        alarm_id: str,
        expected_etag: str | None = None,
        *,
        definition_id: str,
        manual: bool = True,
        now: dt.datetime | None = None,
    ) -> Result:
        """Clear the record manually (perceivedSeverity 5, alarmClearedTime and
        alarmChangedTime now) if it exists, `expected_etag` matches, it is not cleared
        yet, and its alarmDefinitionID is still `definition_id` (the definition whose
        clearingType the caller checked; else DEFINITION_CHANGED). `manual` False (that
        definition does not allow a manual clear): NOT_CLEARABLE once every other check
        passed, so a stale ETag or a cleared alarm is reported first."""
        moment = now or _now()
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
            ],
        )
        return _result(alarm_id, reply)

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
                    keys=[CLEARED_KEY, ALARMS_INDEX_KEY],
                    args=[f"{older_than.timestamp():.6f}", PURGE_BATCH, ALARM_KEY_PREFIX],
                ),
            )
            total += int(purged)
            if int(seen) < PURGE_BATCH:
                return total

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
    document: dict[str, Any] = {k: v for k, v in fields.items() if v != "" and k != REVISION_FIELD}
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


def _parse_record(alarm_id: str, document: dict[str, Any]) -> pb.AlarmEventRecord:
    document["alarmEventRecordId"] = alarm_id
    try:
        # Unknown fields are skipped: the writer may store attributes of a newer model.
        return json_format.ParseDict(document, pb.AlarmEventRecord(), ignore_unknown_fields=True)
    except (ValueError, json_format.ParseError) as error:
        raise UnreadableAlarm(f"alarm:{alarm_id}: {error}") from error
