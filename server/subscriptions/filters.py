"""Subscription filters: SOL013 expressions evaluated on notification states (inventory),
and the event-type enum or a SOL013 expression over the alarm record (alarms).

One subscription hears about every kind of inventory object, while a SOL013 filter names
attributes of one message type. So a filter is bound once per object kind of the
subscription's API major, lazily, and *applies* to a kind only when every attribute it
names exists there: `(eq,resourcePoolId,X)` speaks about resources and pools, not about
resource types. At creation it must apply to at least one kind, else it is a 400 naming
the problem (an unknown attribute, bad syntax, a wrong arity or type), so a subscription
can never hold a filter that silently matches nothing.

An alarm subscription's filter (spec §3.10, §8) is either one of the Monitoring 1.x event
types NEW, CHANGE, CLEAR, ACKNOWLEDGE (it matches the notifications of that event type), or
a SOL013 expression over the AlarmEventRecord in its Monitoring 1.x wire form, bound like
the alarm list's filter (both `...ID` and `...Id` spellings), evaluated on the record after
the change. At creation it must be one of the two, else a 400 naming the problem.

What a match means is the notifier's business (server/notifier/matching.py): by default a
notification is sent when the filter matches ("include"), or, in the spec-literal
"exclude" mode, when it does not.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf.descriptor import Descriptor
from o2ims.monitoring.v1 import monitoring_pb2

from server.alarms.store import ALARM_FILTER_ALIASES
from server.alarms.store import Event as AlarmEvent
from server.query import BoundFilter, Filter, QueryError, parse_filter
from server.query.errors import echo
from server.wire import WireModel
from server.wire.v1 import MODEL as V1
from server.wire.v2 import MODEL as V2

WIRE_MODELS: Final[dict[str, WireModel]] = {V1.major: V1, V2.major: V2}

# The alarm event types, in the order of their notificationEventType (0 NEW, 1 CHANGE,
# 2 CLEAR, 3 ACKNOWLEDGE): the events of the alarm store's stream.
ALARM_EVENT_TYPES: Final[tuple[str, ...]] = tuple(event.value for event in AlarmEvent)

# Domain kind -> the wire message it becomes (in every major that serves the kind).
WIRE_MESSAGES: Final[dict[str, str]] = {
    "o_cloud": "OCloudInfo",
    "location": "LocationInfo",
    "site": "OCloudSiteInfo",
    "alarm_dictionary": "AlarmDictionary",
    "resource_type": "ResourceTypeInfo",
    "resource_pool": "ResourcePoolInfo",
    "resource": "ResourceInfo",
    "deployment_manager": "DeploymentManagerInfo",
}


def wire_descriptor(model: WireModel, kind: str) -> Descriptor:
    descriptor: Descriptor = getattr(model.pb, WIRE_MESSAGES[kind]).DESCRIPTOR
    return descriptor


class SubscriptionFilter:
    """A parsed filter, bound per kind of one API major on first use."""

    def __init__(self, parsed: Filter, model: WireModel) -> None:
        self._parsed = parsed
        self._model = model
        self._bound: dict[str, BoundFilter | None] = {}

    @classmethod
    def compile(cls, expression: str, major: str) -> SubscriptionFilter:
        """Raises QueryError (syntax) or ValueError (applies to no kind)."""
        model = WIRE_MODELS.get(major, V1)
        compiled = cls(parse_filter(expression), model)
        if compiled.empty:
            return compiled
        errors: list[str] = []
        for kind in model.builders:
            try:
                compiled._parsed.bind(wire_descriptor(model, kind))
            except QueryError as error:
                errors.append(f"{WIRE_MESSAGES[kind]}: {error.detail}")
                continue
            return compiled
        # The resource is what SMOs filter on most; name its complaint first.
        errors.sort(key=lambda text: not text.startswith("ResourceInfo:"))
        raise ValueError(f"applies to no inventory object of the {model.major} model ({errors[0]})")

    @property
    def empty(self) -> bool:
        return not self._parsed

    def matches(self, kind: str, wire: Any) -> bool:
        """True if `wire` (a `kind` message of this major) satisfies the filter. A filter
        that does not apply to the kind matches nothing of it; an empty one everything."""
        if self.empty:
            return True
        bound = self._bind(kind)
        return bound is not None and bound.matches(wire)

    def _bind(self, kind: str) -> BoundFilter | None:
        if kind not in self._bound:
            try:
                self._bound[kind] = self._parsed.bind(wire_descriptor(self._model, kind))
            except (QueryError, KeyError):
                self._bound[kind] = None
        return self._bound[kind]


def inventory_filter_problem(expression: str, major: str) -> str | None:
    """Why `expression` cannot filter inventory notifications of `major`, or None."""
    try:
        SubscriptionFilter.compile(expression, major)
    except QueryError as error:
        return error.detail
    except ValueError as error:
        return str(error)
    return None


class AlarmSubscriptionFilter:
    """An alarm subscription's filter: an event type, a SOL013 expression bound to the
    Monitoring 1.x AlarmEventRecord, or nothing (empty: every notification)."""

    def __init__(self, event_type: str | None, bound: BoundFilter | None) -> None:
        self.event_type = event_type
        self._bound = bound

    @classmethod
    def compile(cls, expression: str) -> AlarmSubscriptionFilter:
        """Raises QueryError for an expression that is neither an event type nor a valid
        SOL013 expression over AlarmEventRecord."""
        if expression in ALARM_EVENT_TYPES:
            return cls(expression, None)
        # One alias table serves the alarm list's filter and alarm subscriptions', so both
        # accept the same names.
        parsed = parse_filter(expression)
        if not parsed:
            return cls(None, None)
        return cls(
            None, parsed.bind(monitoring_pb2.AlarmEventRecord.DESCRIPTOR, ALARM_FILTER_ALIASES)
        )

    @property
    def empty(self) -> bool:
        return self.event_type is None and self._bound is None

    def matches(self, event_type: str, record: monitoring_pb2.AlarmEventRecord) -> bool:
        """True if the notification of `event_type` about `record` (after the change)
        satisfies the filter; an empty filter matches everything."""
        if self.event_type is not None:
            return event_type == self.event_type
        return self._bound is None or self._bound.matches(record)


def alarm_filter_problem(expression: str) -> str | None:
    """Why `expression` cannot filter alarm notifications, or None."""
    try:
        AlarmSubscriptionFilter.compile(expression)
    except QueryError as error:
        if expression.lstrip().startswith("("):
            return f"is not a valid filter over AlarmEventRecord ({error.detail})"
        return (
            f"must be one of {', '.join(ALARM_EVENT_TYPES)} or a SOL013 expression over "
            f"AlarmEventRecord, got {echo(expression)}"
        )
    return None
