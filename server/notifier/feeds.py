"""What the matcher needs to know of each event stream it follows: a Feed.

The matcher (matching.py) owns everything the streams share: the lease, the consumer
group, reclaiming a killed matcher's pending entries, the subscriptions' creation
positions (`eventsAfter`), the enqueue script with its per-subscription cursor, and the
XACK in the same pipeline. A Feed owns what differs: which stream and subscription kind,
how an entry decodes, how a subscription's filter compiles, and which notification body
each subscription gets. Two feeds exist: inventory (notifications.py) and alarms
(alarms.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from server.notifier.config import FilterMode
from server.subscriptions.store import Subscription, SubscriptionKind


class CompiledFilter(Protocol):
    @property
    def empty(self) -> bool: ...


EventT = TypeVar("EventT")
FilterT = TypeVar("FilterT", bound=CompiledFilter)


@dataclass
class MatchingSubscription(Generic[FilterT]):
    subscription_id: str
    consumer_subscription_id: str
    major: str
    events_after: tuple[int, int]
    filter: FilterT | None  # None: unusable stored filter (matches nothing)


@dataclass(frozen=True)
class Notification:
    """One notification for one subscription, ready to queue."""

    subscription_id: str
    notification_id: str
    body: bytes
    # The correlation id of the call that caused the event ("" if none did: an adapter's
    # change); the delivery sends it as X-Correlation-ID, else the notification id.
    correlation_id: str = ""
    # The trace of that call (netweave/tracing.py; "" if untraced): the delivery's span
    # continues it.
    traceparent: str = ""


def wanted(
    subscription: MatchingSubscription[FilterT], mode: FilterMode, test: Callable[[FilterT], bool]
) -> bool:
    """Whether the subscription is notified, `test` telling whether its (non-empty) filter
    matches: include mode sends on a match, exclude mode on no match; a subscription
    without a filter hears about everything, one with an unusable filter about nothing."""
    compiled = subscription.filter
    if compiled is None:
        return False
    if compiled.empty:
        return True
    matched = test(compiled)
    return matched if mode == "include" else not matched


class Feed(ABC, Generic[EventT, FilterT]):
    """One event stream and the notifications its entries become."""

    # The API the notifications belong to: the `api` label of the matcher's metrics.
    api: str
    # The stream followed, and the kind of subscription its entries are matched against.
    stream: str
    kind: SubscriptionKind

    def start(self) -> None:
        """Called when the matcher takes the lead, before any entry is processed."""

    @abstractmethod
    def decode(self, entry_id: str, fields: dict[bytes, bytes]) -> EventT | None:
        """The event of one stream entry; None if it is unreadable (logged and skipped)."""

    def major(self, stored: Subscription) -> str:
        """The API major whose model the subscription's notifications use."""
        return "v1"

    @abstractmethod
    def compile_filter(self, expression: str, major: str) -> FilterT:
        """The subscription's filter; raises ValueError if it is unusable."""

    @abstractmethod
    def notifications(
        self,
        event: EventT,
        entry_id: str,
        subscriptions: Sequence[MatchingSubscription[FilterT]],
        mode: FilterMode,
    ) -> Iterator[Notification]:
        """The notifications of one event for the subscriptions created before it."""

    def applied(self, event: EventT) -> None:
        """Called after the event's notifications are built."""


AnyFeed = Feed[Any, Any]
