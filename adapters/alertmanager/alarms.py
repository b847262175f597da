"""The alerts firing now, as the alarms this adapter publishes.

Level-triggered: the book holds every firing alert Alertmanager told it about (by the alert's
fingerprint, a hash of its labels) and publishes, through the ObjectSetPublisher, one
ActiveAlarm per alert plus the one AlarmDictionary of every alert name seen. A firing webhook
adds or changes an alert, a resolved one removes it, an endsAt that passes without a resend
removes it; a resend of the same state publishes the same bytes, so nothing changes.
Optionally (`stale_after`) an alert no webhook has carried for that long is removed too: a
resolved notification lost while the adapter was down then cannot hold an alarm forever
(Alertmanager resends firing alerts every repeat_interval, so a few of those is safe).

The set is written to the state file (atomically: a temporary file, fsync, rename) before it
is published, and read back at start: a restart of the adapter publishes the same alarms
again instead of clearing them until Alertmanager's next repeat_interval. A state file that
cannot be written refuses the webhook (503: Alertmanager retries) and changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import structlog
from google.protobuf import struct_pb2
from o2ims.adapter.v1 import adapter_pb2, domain_pb2

from adapters.alertmanager.mapping import (
    MappingConfig,
    clearing_type_of,
    resource_of,
    severity_of,
)
from adapters.alertmanager.metrics import AlertmanagerMetrics
from adapters.alertmanager.payload import FIRING, Alert, Notification, format_time
from adapters.contract import ALARM_KIND
from adapters.publisher import ObjectSetPublisher

# Under which every id of this adapter is a UUIDv5 over "<adapter name>/...".
ID_NAMESPACE: Final = uuid.UUID("5d0b8f0e-3c51-4c1e-9d43-6a8a1d2f7b21")
STATE_FORMAT: Final = 1
MANAGEMENT_INTERFACES: Final = ("O2IMS",)
PK_NOTIFICATION_FIELDS: Final = ("alarmDefinitionID", "resourceID")


def _uuid5(adapter_name: str, *parts: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, "/".join((adapter_name, *parts))))


def alarm_id(adapter_name: str, fingerprint: str) -> str:
    """The alarm of one alert: its identity is its fingerprint (a hash of its labels)."""
    return _uuid5(adapter_name, "alert", fingerprint)


def definition_id(adapter_name: str, alert_name: str) -> str:
    return _uuid5(adapter_name, "alarm-definition", alert_name)


def dictionary_id(adapter_name: str) -> str:
    return _uuid5(adapter_name, "alarm-dictionary")


class StateFileError(Exception):
    """The state file cannot be read (at start) or written (on a change)."""


@dataclass(frozen=True)
class ActiveAlert:
    """What the book keeps of one firing alert (and writes to the state file)."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str  # "": no end known
    generator_url: str
    external_url: str
    # When a webhook last carried it firing ("": before this field existed).
    last_seen: str = ""

    @property
    def alert_name(self) -> str:
        return self.labels.get("alertname", "")

    def ended(self, now: datetime, stale_after: timedelta | None = None) -> bool:
        """Whether its endsAt has passed, or (with `stale_after`) no webhook has carried it
        for that long."""
        if self.ends_at and datetime.fromisoformat(self.ends_at) <= now:
            return True
        return (
            stale_after is not None
            and bool(self.last_seen)
            and datetime.fromisoformat(self.last_seen) + stale_after <= now
        )


@dataclass(frozen=True)
class SeenAlarm:
    """An alert name the book has seen, and what its first alert said about it."""

    name: str
    description: str = ""
    proposed_repair_actions: str = ""


@dataclass(frozen=True)
class ApplyResult:
    """What one webhook did."""

    raised: int = 0
    changed: int = 0
    cleared: int = 0
    ignored: list[str] = field(default_factory=list)  # why each ignored alert was

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _State:
    alerts: dict[str, ActiveAlert] = field(default_factory=dict)  # by fingerprint
    seen: dict[str, SeenAlarm] = field(default_factory=dict)  # by name, in order seen

    def copy(self) -> _State:
        return _State(dict(self.alerts), dict(self.seen))

    def to_json(self) -> bytes:
        document = {
            "format": STATE_FORMAT,
            "alerts": [asdict(alert) for alert in self.alerts.values()],
            "alarms": [asdict(seen) for seen in self.seen.values()],
        }
        return json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> _State:
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
            raise ValueError(f"not a format {STATE_FORMAT} state file")
        alerts = [ActiveAlert(**entry) for entry in document.get("alerts", [])]
        seen = [SeenAlarm(**entry) for entry in document.get("alarms", [])]
        for alert in alerts:
            if alert.ends_at:
                datetime.fromisoformat(alert.ends_at)  # a bad one fails here, not later
        return cls({alert.fingerprint: alert for alert in alerts}, {s.name: s for s in seen})


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a reader (or a crash) sees the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _struct(mapping: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(mapping)
    return struct


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AlarmBook:
    """The firing alerts of one adapter, published and kept in its state file. Thread-safe."""

    def __init__(
        self,
        adapter_name: str,
        mapping: MappingConfig,
        publisher: ObjectSetPublisher,
        state_path: Path,
        *,
        metrics: AlertmanagerMetrics | None = None,
        logger: structlog.stdlib.BoundLogger | None = None,
        now: Callable[[], datetime] = _utc_now,
        stale_after: timedelta | None = None,
    ) -> None:
        self._name = adapter_name
        self._stale_after = stale_after
        self._mapping = mapping
        self._publisher = publisher
        self._state_path = state_path
        self._metrics = metrics or AlertmanagerMetrics()
        self._log: structlog.stdlib.BoundLogger = logger or structlog.get_logger()
        self._now = now
        self._lock = threading.Lock()
        self._state = _State()
        self._written: bytes | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._metrics.track_active(self.active_count)

    @property
    def adapter_name(self) -> str:
        return self._name

    def active_count(self) -> int:
        with self._lock:
            return len(self._state.alerts)

    # --- start, expiry ------------------------------------------------------------------------

    def restore(self) -> int:
        """Read the state file (if there is one), drop what ended meanwhile, and publish the
        set (even an empty one: the adapter then serves). Returns the alarms restored;
        StateFileError if the file exists but cannot be read or understood."""
        with self._lock:
            state = _State()
            try:
                data = self._state_path.read_bytes()
            except FileNotFoundError:
                data = None
            except OSError as error:
                raise StateFileError(
                    f"{self._state_path}: cannot read: {error.strerror or error}"
                ) from error
            if data is not None:
                try:
                    state = _State.from_json(data)
                except (ValueError, TypeError) as error:
                    raise StateFileError(
                        f"{self._state_path}: not a state file of this adapter ({error}); "
                        "move it away to start with no active alarms"
                    ) from error
                self._written = data
            now = self._now()
            for fingerprint, alert in list(state.alerts.items()):
                if alert.ended(now, self._stale_after):
                    del state.alerts[fingerprint]
            self._commit(state)
            return len(state.alerts)

    def expire(self) -> int:
        """Withdraw the alerts whose endsAt has passed; the number withdrawn."""
        with self._lock:
            now = self._now()
            ended = [
                fp
                for fp, alert in self._state.alerts.items()
                if alert.ended(now, self._stale_after)
            ]
            if not ended:
                return 0
            state = self._state.copy()
            for fingerprint in ended:
                del state.alerts[fingerprint]
            try:
                self._commit(state)
            except StateFileError as error:
                self._log.error("alertmanager_state_unwritable", error=str(error))
                return 0
        self._metrics.expired.inc(len(ended))
        self._log.info("alarms_expired", count=len(ended))
        return len(ended)

    def start(self, interval: float = 1.0) -> None:
        """Check for ended alerts every `interval` seconds in a background thread."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._expire_loop, args=(interval,), name="alarm-expiry", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _expire_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.expire()
            except Exception:  # keep expiring whatever one pass hit
                self._log.exception("alarm_expiry_failed")

    # --- webhooks -------------------------------------------------------------------------

    def apply(self, notification: Notification) -> ApplyResult:
        """Apply one webhook's alerts; StateFileError (and nothing changed) if the new set
        cannot be written."""
        with self._lock:
            now = self._now()
            state = self._state.copy()
            ignored: list[str] = []
            for alert in notification.alerts:
                fingerprint = alert.fingerprint()
                if alert.sent_fingerprint and alert.sent_fingerprint != fingerprint:
                    self._log.warning(
                        "fingerprint_mismatch", sent=alert.sent_fingerprint, computed=fingerprint
                    )
                firing = alert.status == FIRING and not (
                    alert.ends_at is not None and alert.ends_at <= now
                )
                if not firing:
                    state.alerts.pop(fingerprint, None)
                    self._metrics.alerts.labels(alert.status, "false").inc()
                    continue
                if not resource_of(alert.labels, self._mapping):
                    ignored.append(
                        f"{alert.alert_name} ({fingerprint}): no resource label "
                        f"({', '.join(self._resource_labels())})"
                    )
                    self._metrics.alerts.labels(alert.status, "true").inc()
                    continue
                self._metrics.alerts.labels(alert.status, "false").inc()
                state.alerts[fingerprint] = self._active(
                    alert,
                    fingerprint,
                    notification.external_url,
                    state.alerts.get(fingerprint),
                    format_time(now),
                )
                if alert.alert_name not in state.seen:
                    state.seen[alert.alert_name] = self._seen(alert)
            events = self._commit(state)
        counts = Counter(
            event.type for event in events if event.object.WhichOneof("kind") == ALARM_KIND
        )
        result = ApplyResult(
            raised=counts[adapter_pb2.EVENT_TYPE_ADDED],
            changed=counts[adapter_pb2.EVENT_TYPE_MODIFIED],
            cleared=counts[adapter_pb2.EVENT_TYPE_DELETED],
            ignored=ignored,
        )
        if ignored:
            self._log.warning("alerts_ignored", alerts=ignored)
        if events:
            self._log.info(
                "alarms_changed",
                raised=result.raised,
                changed=result.changed,
                cleared=result.cleared,
                active=len(state.alerts),
                revision=events[0].revision,
            )
        return result

    def _resource_labels(self) -> list[str]:
        mapping = self._mapping
        return [
            label for label in (mapping.resource_id_label, *mapping.resource_name_labels) if label
        ]

    @staticmethod
    def _active(
        alert: Alert,
        fingerprint: str,
        external_url: str,
        previous: ActiveAlert | None,
        seen_at: str,
    ) -> ActiveAlert:
        return ActiveAlert(
            fingerprint=fingerprint,
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            starts_at=format_time(alert.starts_at),
            ends_at=format_time(alert.ends_at) if alert.ends_at else "",
            generator_url=alert.generator_url,
            # Replicas of an HA Alertmanager each send their own URL: the first one stays,
            # so a resend by another replica changes nothing.
            external_url=previous.external_url if previous else external_url,
            last_seen=seen_at,
        )

    @staticmethod
    def _seen(alert: Alert) -> SeenAlarm:
        annotations = alert.annotations
        runbook = annotations.get("runbook_url", "")
        return SeenAlarm(
            name=alert.alert_name,
            description=annotations.get("description") or annotations.get("summary", ""),
            proposed_repair_actions=f"See the runbook: {runbook}" if runbook else "",
        )

    # --- state and objects ------------------------------------------------------------------

    def _commit(self, state: _State) -> list[adapter_pb2.WatchObjectsResponse]:
        """Write `state` (if it differs from the file) then publish it; under the lock."""
        data = state.to_json()
        if data != self._written:
            try:
                write_atomically(self._state_path, data)
            except OSError as error:
                problem = f"cannot write the state file {self._state_path}: {error}"
                self._publisher.set_source_problem(problem)
                raise StateFileError(problem) from error
            self._written = data
        self._publisher.set_source_problem("")
        self._state = state
        return self._publisher.replace(self._objects(state))

    def _objects(self, state: _State) -> list[domain_pb2.InventoryObject]:
        objects = [domain_pb2.InventoryObject(alarm_dictionary=self._dictionary(state))]
        for alert in state.alerts.values():
            alarm = self._alarm(alert)
            if alarm is not None:
                objects.append(domain_pb2.InventoryObject(alarm=alarm))
        return objects

    def _dictionary(self, state: _State) -> domain_pb2.AlarmDictionary:
        mapping = self._mapping
        # Versions count the alert names seen: each one seen adds its definition.
        order = {name: index + 1 for index, name in enumerate(state.seen)}
        names = list(mapping.alarms) + [name for name in state.seen if name not in mapping.alarms]
        definitions = []
        for name in names:
            spec = mapping.alarms.get(name)
            seen = state.seen.get(name, SeenAlarm(name))
            definitions.append(
                domain_pb2.AlarmDefinition(
                    alarm_definition_id=definition_id(self._name, name),
                    alarm_name=name,
                    alarm_last_change=f"1.{order.get(name, 0)}",
                    alarm_change_type=domain_pb2.ALARM_CHANGE_TYPE_ADDED,
                    alarm_description=(spec.description if spec else "")
                    or seen.description
                    or f"Prometheus alert {name}",
                    proposed_repair_actions=(spec.proposed_repair_actions if spec else "")
                    or seen.proposed_repair_actions,
                    clearing_type=clearing_type_of(name, mapping),
                    management_interface_id=MANAGEMENT_INTERFACES,
                    pk_notification_field=PK_NOTIFICATION_FIELDS,
                )
            )
        return domain_pb2.AlarmDictionary(
            alarm_dictionary_id=dictionary_id(self._name),
            alarm_dictionary_version=f"1.{len(state.seen)}",
            alarm_dictionary_schema_version=mapping.schema_version,
            entity_type=mapping.entity_type,
            vendor=mapping.vendor,
            management_interface_id=MANAGEMENT_INTERFACES,
            pk_notification_field=PK_NOTIFICATION_FIELDS,
            alarm_definition=definitions,
        )

    def _alarm(self, alert: ActiveAlert) -> domain_pb2.ActiveAlarm | None:
        resource = resource_of(alert.labels, self._mapping)
        if not resource:
            return None  # restored under a mapping that no longer finds its resource
        annotations = alert.annotations
        extensions: dict[str, Any] = {
            "alertname": alert.alert_name,
            "labels": alert.labels,
            "annotations": annotations,
            "fingerprint": alert.fingerprint,
            "generatorURL": alert.generator_url,
            "externalURL": alert.external_url,
        }
        for key in ("summary", "description"):
            if annotations.get(key):
                extensions[key] = annotations[key]
        definition = definition_id(self._name, alert.alert_name)
        return domain_pb2.ActiveAlarm(
            alarm_id=alarm_id(self._name, alert.fingerprint),
            resource_id=resource.resource_id,
            resource_name=resource.resource_name,
            resource_type_id=resource.resource_type_id,
            alarm_definition_id=definition,
            probable_cause_id=definition,
            perceived_severity=severity_of(alert.labels, self._mapping),
            raised_time=alert.starts_at,
            extensions=_struct(extensions),
        )
