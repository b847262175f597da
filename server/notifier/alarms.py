"""Alarm events -> AlarmEventNotification bodies (spec §3.11, Monitoring 1.x form): the
matcher's alarm half.

Every change of an alarm record is one `alarms:events` entry (server/alarms/store.py):
`alarmEventRecordId`, `event` (NEW | CHANGE | CLEAR | ACKNOWLEDGE) and `record`, the record
after the change in its Monitoring 1.x wire form. The notification carries that record as
a GET of the alarm shows it (printed from the wire message, as notifications.py prints
inventory states), plus:
  notificationId          uuid5 of (subscription, entry): the same when an entry is read
                          again after a crash, as for inventory notifications
  globalCloudID           the O-Cloud's globalCloudId (left out until the inventory names
                          an O-Cloud)
  consumerSubscriptionId  left out when the subscription has none (never "")
  notificationEventType   0 NEW, 1 CHANGE, 2 CLEAR, 3 ACKNOWLEDGE
  objectRef               /o2ims-infrastructureMonitoring/v1/alarms/<alarmEventRecordId>
alarmClearedTime and alarmAcknowledgeTime are present when set; extensions is always an
object ({} when the record has none).

Filter semantics (checklist S12; server/subscriptions/filters.py): an event type matches
the notifications of that type; an expression is evaluated on the record after the change.
Include mode sends on a match, exclude mode on no match (feeds.wanted).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from google.protobuf import json_format
from o2ims.monitoring.v1 import monitoring_pb2 as pb

from server.alarms.store import EVENTS_KEY
from server.notifier.config import FilterMode
from server.notifier.feeds import Feed, MatchingSubscription, Notification, wanted
from server.notifier.notifications import DomainView, encode, envelope
from server.subscriptions.filters import ALARM_EVENT_TYPES, AlarmSubscriptionFilter
from server.subscriptions.store import ALARM_SUBSCRIPTIONS
from server.wire.printing import as_json

API_NAME: Final = "o2ims-infrastructureMonitoring"

log = structlog.get_logger()


def alarm_ref(alarm_event_record_id: str) -> str:
    """The relative API path of an alarm (Monitoring 1.x)."""
    return f"/{API_NAME}/v1/alarms/{alarm_event_record_id}"


@dataclass
class AlarmEvent:
    """One `alarms:events` entry."""

    event_type: str  # NEW | CHANGE | CLEAR | ACKNOWLEDGE
    record: pb.AlarmEventRecord
    # The API call that made the change (acknowledge, clear); "" for a source's change.
    correlation_id: str = ""
    # That call's trace (netweave/tracing.py), "" if it was not traced.
    traceparent: str = ""
    _printed: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def printed(self) -> dict[str, Any]:
        """The record's attributes as the notification carries them (module docstring)."""
        if self._printed is None:
            printed = as_json(self.record)
            printed.setdefault("extensions", {})
            self._printed = printed
        return self._printed

    def body(
        self,
        subscription_id: str,
        consumer_subscription_id: str,
        entry_id: str,
        global_cloud_id: str,
    ) -> tuple[str, bytes]:
        """(notificationId, the JSON body) of this event for one subscription."""
        identifier, notification = envelope(subscription_id, consumer_subscription_id, entry_id)
        if global_cloud_id:
            notification["globalCloudID"] = global_cloud_id
        notification["notificationEventType"] = ALARM_EVENT_TYPES.index(self.event_type)
        notification["objectRef"] = alarm_ref(self.record.alarm_event_record_id)
        notification.update(self.printed)
        return identifier, encode(notification)


def decode_alarm_event(fields: dict[bytes, bytes]) -> AlarmEvent:
    """Raises ValueError (KeyError, json or protobuf parse errors) for an unreadable entry."""
    event_type = fields[b"event"].decode()
    if event_type not in ALARM_EVENT_TYPES:
        raise ValueError(f"unknown alarm event {event_type!r}")
    document = json.loads(fields[b"record"])
    if not isinstance(document, dict):
        raise ValueError("record is not a JSON object")
    document["alarmEventRecordId"] = fields[b"alarmEventRecordId"].decode()
    record = json_format.ParseDict(document, pb.AlarmEventRecord(), ignore_unknown_fields=True)
    return AlarmEvent(
        event_type,
        record,
        (fields.get(b"correlationId") or b"").decode(),
        (fields.get(b"traceparent") or b"").decode(errors="replace"),
    )


class AlarmFeed(Feed[AlarmEvent, AlarmSubscriptionFilter]):
    """`alarms:events` -> AlarmEventNotifications for the alarm subscriptions."""

    api = "alarm"
    stream = EVENTS_KEY
    kind = ALARM_SUBSCRIPTIONS

    def __init__(self, view: DomainView) -> None:
        # The inventory feed keeps it current; alarms need only the O-Cloud's id from it.
        self._view = view

    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> AlarmEvent | None:
        try:
            return decode_alarm_event(fields)
        except (KeyError, ValueError, json_format.ParseError) as error:
            log.error("alarm_event_unreadable", entry=entry_id, error=str(error))
            return None

    def compile_filter(self, expression: str, major: str) -> AlarmSubscriptionFilter:
        return AlarmSubscriptionFilter.compile(expression)

    def notifications(
        self,
        event: AlarmEvent,
        entry_id: str,
        subscriptions: Sequence[MatchingSubscription[AlarmSubscriptionFilter]],
        mode: FilterMode,
    ) -> Iterator[Notification]:
        global_cloud_id = self._view.global_cloud_id()
        for subscription in subscriptions:
            if not wanted(subscription, mode, lambda f: f.matches(event.event_type, event.record)):
                continue
            identifier, body = event.body(
                subscription.subscription_id,
                subscription.consumer_subscription_id,
                entry_id,
                global_cloud_id,
            )
            yield Notification(
                subscription.subscription_id,
                identifier,
                body,
                event.correlation_id,
                event.traceparent,
            )
