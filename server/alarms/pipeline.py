"""The alarm pipeline: the sources' active alarms -> alarm event records.

Adapters publish the alarms active in their source as `alarm` objects (ActiveAlarm in
o2ims.adapter.v1), level-triggered, and the core stores them with the rest of the
adapters' objects: every raise, change and clear is an entry of `inventory:events` (a
create, a modify, a delete of an alarm object), and what is active now is the store's
`alarm` objects. The pipeline follows that stream and applies each alarm entry to the
records (server/alarms/store.py):
- create or modify -> raise_from_source: a NEW record, a CHANGE of the active record when
  an attribute differs, or, when the source's last record was cleared less than the flap
  window ago, the same record re-raised (CHANGE): a flapping source does not make a new
  record per flap;
- delete -> withdraw_from_source: the record is CLEARED.

Exactly once, in order: each application moves the pipeline's position
(`alarms:pipeline`) in the same Lua script, and refuses an entry at or before it, so an
entry applied by a replica that then died is not applied again by the next. One replica
applies at a time (the holder of `alarms:pipeline:lease`); the others stand by.

Nothing lost: when the pipeline cannot follow the stream exactly (first start, a gap in
the versions because the stream was trimmed while it was away, a Redis restored or
flushed), it reconciles instead: every stored alarm object is raised (a no-op when its
record is current), every active record whose source alarm is gone is cleared, and it
goes on from the stream's end. It clears only once the store holds every adapter's state
(`inventory_complete`): after a restore the records are back before the inventory (a
backup leaves it out), and an alarm not written yet is not a cleared one; until then it
only raises, and reconciles again when the store is complete.

A source that names its resource by `resource_name` gets it resolved here, against the
core's inventory view at the event's version: the resource of that name gives
resourceID and resourceTypeID. An alarm whose resource cannot be resolved is still raised
(with an empty resourceID and the name in extensions.resourceName), so a mis-labelled
alert is visible, not dropped.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis
import structlog
from google.protobuf import json_format
from o2ims.adapter.v1 import domain_pb2

from adapters.contract import ALARM_KIND
from netweave.backoff import Backoff
from server.alarms.store import AlarmStore, Event, Position, SourceAlarm
from server.cache import InventoryCache
from server.store import InventoryStore, StoredEvent

log = structlog.get_logger()

LEASE_SECONDS: Final = 5.0
READ_BLOCK_MS: Final = 500
READ_COUNT: Final = 500
# How long an alarm entry waits for the inventory view to reach the entry's version before
# its resource is resolved against what the view has.
RESOLVE_WAIT_S: Final = 2.0
INDETERMINATE: Final = 4


def source_alarm(alarm: domain_pb2.ActiveAlarm, cache: InventoryCache | None) -> SourceAlarm:
    """An ActiveAlarm in record terms, its resource resolved against `cache`."""
    extensions: dict[str, Any] = (
        json_format.MessageToDict(alarm.extensions) if alarm.HasField("extensions") else {}
    )
    resource_id, resource_type_id = alarm.resource_id, alarm.resource_type_id
    if not resource_id and alarm.resource_name:
        found = cache.resources_named(alarm.resource_name) if cache else []
        if len(found) == 1:
            resource_id = found[0].resource_id
            resource_type_id = resource_type_id or found[0].resource_type_id
        else:
            extensions["resourceName"] = alarm.resource_name
            if len(found) > 1:
                extensions["resourceCandidates"] = sorted(r.resource_id for r in found)
    elif resource_id and not resource_type_id and cache is not None:
        resource = cache.domain("resource", resource_id)
        if resource is not None:
            resource_type_id = resource.resource_type_id
    severity = int(alarm.perceived_severity)
    return SourceAlarm(
        source_id=alarm.alarm_id,
        resource_type_id=resource_type_id,
        resource_id=resource_id,
        alarm_definition_id=alarm.alarm_definition_id,
        probable_cause_id=alarm.probable_cause_id or alarm.alarm_definition_id,
        perceived_severity=severity - 1 if severity else INDETERMINATE,
        raised_time=alarm.raised_time,
        extensions=extensions,
    )


def _alarm_of(payload: bytes) -> domain_pb2.ActiveAlarm:
    return domain_pb2.InventoryObject.FromString(payload).alarm


@dataclass
class PipelineStatus:
    leader: bool = False
    redis_ok: bool = False
    last_error: str = ""
    # The inventory version the pipeline has applied up to, and the store's latest.
    applied_version: int = 0
    store_version: int = 0
    reconciles: int = 0
    unresolved: int = 0

    @property
    def lag(self) -> int:
        return max(0, self.store_version - self.applied_version) if self.leader else 0


class AlarmPipeline(threading.Thread):
    def __init__(
        self,
        inventory: InventoryStore,
        alarms: AlarmStore,
        cache: InventoryCache | None,
        stop: threading.Event,
        *,
        flap_window: float,
        on_event: Callable[[Event], None] = lambda event: None,
        inventory_complete: Callable[[], bool] = lambda: True,
        read_block_ms: int = READ_BLOCK_MS,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        super().__init__(name="alarm-pipeline", daemon=True)
        self._inventory = inventory
        self._alarms = alarms
        self._cache = cache
        self._stopping = stop
        self._flap_window = flap_window
        self._on_event = on_event
        self._read_block_ms = read_block_ms
        self._lease_seconds = lease_seconds
        self._token = secrets.token_hex(8)
        self._backoff = Backoff()
        self._position: Position | None = None
        self._inventory_complete = inventory_complete
        # A reconcile ran before the store was complete: it cleared nothing, so run another.
        self._clears_deferred = False
        self.status = PipelineStatus()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self._alarms.hold_pipeline_lease(self._token, self._lease_seconds):
                    self._lost_lease()
                    self._healthy()
                    self._stopping.wait(self._lease_seconds / 5)
                    continue
                if not self.status.leader:
                    # Another replica may have moved on while we stood by.
                    self._position = self._alarms.pipeline_position()
                    self.status.leader = True
                    log.info("alarm_pipeline_leading")
                self.step()
                self._healthy()
            except redis.RedisError as error:
                if self.status.redis_ok:
                    log.error("alarm_pipeline_redis_failed", error=str(error))
                self.status.redis_ok = False
                self.status.last_error = str(error)
                # Trust nothing remembered: re-read the position once Redis answers.
                self._lost_lease()
                self._stopping.wait(self._backoff.next_delay())
        self._lost_lease()

    def _healthy(self) -> None:
        if not self.status.redis_ok:
            self._backoff.reset()
        self.status.redis_ok = True
        self.status.last_error = ""

    def _lost_lease(self) -> None:
        if self.status.leader:
            log.info("alarm_pipeline_standing_by")
        self.status.leader = False
        self._position = None

    def step(self) -> int:
        """Apply what the stream holds after the position (waiting up to READ_BLOCK_MS for
        it), or reconcile when the position cannot be followed; returns how many alarm
        entries were applied. Public for the tests."""
        store_version = self._inventory.version()
        self.status.store_version = store_version
        if (
            self._position is None
            or store_version < self._position.version
            or (self._clears_deferred and self._inventory_complete())
        ):
            self.reconcile()
            return 0
        events = self._inventory.read_events(
            self._position.entry, block_ms=self._read_block_ms, count=READ_COUNT
        )
        applied = 0
        for event in events:
            if event.version <= self._position.version:
                continue
            if event.version != self._position.version + 1:
                log.warning(
                    "alarm_pipeline_gap", expected=self._position.version + 1, got=event.version
                )
                self.reconcile()
                return applied
            applied += self._apply(event)
        if events and self._position is not None:
            # Entries of other kinds move the position in one write per batch.
            self._alarms.advance_pipeline(self._position)
        return applied

    def _apply(self, event: StoredEvent) -> int:
        position = Position(event.stream_id, event.version)
        self._position = position
        self.status.applied_version = event.version
        if event.kind != ALARM_KIND:
            return 0
        if event.event == "delete":
            self._withdraw(event.object_id, position)
        else:
            alarm = _alarm_of(event.post)
            if alarm.resource_name or not alarm.resource_type_id:
                # Resolved against the view: wait for it to hold this change set.
                self._wait_for_view(event.version)
            self._raise(alarm, position)
        return 1

    def _raise(self, active: domain_pb2.ActiveAlarm, position: Position | None) -> bool:
        alarm = source_alarm(active, self._cache)
        outcome = self._alarms.raise_from_source(
            alarm, flap_window=self._flap_window, position=position
        )
        if outcome.event is None:
            return False
        self._notify(outcome.event, outcome.record_id, alarm.source_id)
        if not alarm.resource_id:
            self.status.unresolved += 1
            log.warning(
                "alarm_resource_unresolved",
                source_alarm_id=alarm.source_id,
                resource_name=alarm.extensions.get("resourceName", ""),
            )
        return True

    def _withdraw(self, source_id: str, position: Position | None) -> bool:
        outcome = self._alarms.withdraw_from_source(source_id, position=position)
        if outcome.event is None:
            return False
        self._notify(outcome.event, outcome.record_id, source_id)
        return True

    def _notify(self, event: Event, record_id: str, source_id: str) -> None:
        self._on_event(event)
        log.info(
            "alarm_" + event.value.lower(),
            alarm_event_record_id=record_id,
            source_alarm_id=source_id,
        )

    def _wait_for_view(self, version: int) -> None:
        cache = self._cache
        if cache is None:
            return
        deadline = time.monotonic() + RESOLVE_WAIT_S
        while cache.version < version and time.monotonic() < deadline:
            if self._stopping.wait(0.005):
                return

    def reconcile(self) -> None:
        """Make the records agree with the stored alarm objects, then follow the stream from
        its end."""
        # Asked before the snapshot is read: complete then, the snapshot holds everything.
        complete = self._inventory_complete()
        snapshot = self._inventory.snapshot(kinds=(ALARM_KIND,))
        if self._cache is not None:
            self._wait_for_view(snapshot.version)
        stored = snapshot.objects[ALARM_KIND]
        raised = sum(self._raise(_alarm_of(payload), None) for _, payload in sorted(stored.items()))
        gone = sorted(self._alarms.active_sources().keys() - stored.keys()) if complete else []
        cleared = sum(self._withdraw(source_id, None) for source_id in gone)
        self._clears_deferred = not complete
        position = Position(snapshot.last_event_id, snapshot.version)
        self._alarms.reset_pipeline(position)
        self._position = position
        self.status.applied_version = snapshot.version
        self.status.reconciles += 1
        log.info(
            "alarm_pipeline_reconciled",
            active=len(stored),
            changed=raised,
            cleared=cleared,
            clears_deferred=not complete,
            inventory_version=snapshot.version,
        )
