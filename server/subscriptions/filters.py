"""Inventory subscription filters: SOL013 expressions evaluated on notification states.

One subscription hears about every kind of inventory object, while a SOL013 filter names
attributes of one message type. So a filter is bound once per object kind of the
subscription's API major, lazily, and *applies* to a kind only when every attribute it
names exists there: `(eq,resourcePoolId,X)` speaks about resources and pools, not about
resource types. At creation it must apply to at least one kind, else it is a 400 naming
the problem (an unknown attribute, bad syntax, a wrong arity or type), so a subscription
can never hold a filter that silently matches nothing.

What a match means is the notifier's business (server/notifier/matching.py): by default a
notification is sent when the filter matches ("include"), or, in the spec-literal
"exclude" mode, when it does not.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf.descriptor import Descriptor

from server.query import BoundFilter, Filter, QueryError, parse_filter
from server.wire import WireModel
from server.wire.v1 import MODEL as V1
from server.wire.v2 import MODEL as V2

WIRE_MODELS: Final[dict[str, WireModel]] = {V1.major: V1, V2.major: V2}

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
