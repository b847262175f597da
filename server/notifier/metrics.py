"""Prometheus metrics of the notifier (one registry per instance, so tests can run several
in one process). The names are the ones the operations guide documents."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, Final, Literal, cast, get_args

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from netweave.cert_metrics import register_certificates
from netweave.metrics import StateCollector, register_state
from server.alarms.store import EVENTS_KEY as ALARM_EVENTS_KEY
from server.notifier import keys

# How a notification ends undelivered (dead-lettered), counted under one of these:
#   dead_lettered  a permanent failure (4xx) or an exhausted retry schedule
#   refused        the callback policy refused the address at delivery
#   redirected     the subscriber answered 3xx (redirects are never followed)
#   tls_error      the subscriber's certificate failed verification (the callback CA bundle)
FinalOutcome = Literal["dead_lettered", "refused", "redirected", "tls_error"]

# Outcomes of o2ims_webhook_delivery_total: the above, and
#   delivered      2xx from the subscriber
#   retried        a transient failure (5xx, 408, 425, 429, connection error); tried again
#   dropped        the subscription was deleted with the notification still queued
OUTCOMES: Final = ("delivered", "retried", *get_args(FinalOutcome), "dropped")

# The `api` label of the matcher's counters: which event stream (feeds.py) they count.
APIS: Final = ("inventory", "alarm")

# The `feed` label of o2ims_notifier_matcher_lag -> the stream the matcher reads.
FEEDS: Final = {"inventory": keys.EVENTS_KEY, "alarms": ALARM_EVENTS_KEY}
# When the matcher's group cannot say its lag (Redis leaves it unset after entries were
# deleted in the unread range), the unread entries are counted, up to this many.
MAX_COUNTED_LAG: Final = 10_000

# The `health` label of o2ims_subscriptions: a subscription is `dead_lettering` if one of
# its notifications went to the dead-letter stream in the last DEAD_LETTERING_WINDOW_S,
# else `retrying` while the head of its queue has failed and waits for another attempt,
# else `ok`. The dead letters looked at are bounded (the newest DEAD_LETTERS_SCANNED).
HEALTHS: Final = ("ok", "retrying", "dead_lettering")
DEAD_LETTERING_WINDOW_S: Final = 15 * 60
DEAD_LETTERS_SCANNED: Final = 1000


def matcher_lag(client: redis.Redis) -> dict[str, int]:
    """feed -> entries of its stream the matcher's consumer group has not read yet
    (XINFO GROUPS `lag`); a stream without the group (no matcher ever ran) counts whole."""
    lags: dict[str, int] = {}
    for feed, stream in FEEDS.items():
        try:
            groups: list[dict[str, Any]] = client.xinfo_groups(stream)
        except redis.ResponseError:  # no such stream: nothing was ever appended
            lags[feed] = 0
            continue
        group = next((g for g in groups if _text(g.get("name")) == keys.MATCH_GROUP), None)
        if group is None:
            lags[feed] = int(client.xlen(stream))
        elif group.get("lag") is not None:
            lags[feed] = int(group["lag"])
        else:
            last = _text(group.get("last-delivered-id")) or "0-0"
            unread = client.xrange(stream, f"({last}", "+", count=MAX_COUNTED_LAG)
            lags[feed] = len(cast(list[Any], unread))
    return lags


def subscription_health(client: redis.Redis) -> dict[str, int]:
    """health -> subscriptions (see HEALTHS): one SMEMBERS per kind, one bounded XREVRANGE
    of the dead letters and one pipelined EXISTS per subscription."""
    ids = [
        _text(member)
        for kind in keys.SUBSCRIPTION_KINDS
        for member in cast(set[Any], client.smembers(kind.index_key))
    ]
    since_ms = int((time.time() - DEAD_LETTERING_WINDOW_S) * 1000)
    recent = cast(
        list[Any],
        client.xrevrange(keys.DEAD_LETTERS_KEY, "+", since_ms, count=DEAD_LETTERS_SCANNED),
    )
    dead_lettering = {
        _text(fields.get(b"subscriptionId", fields.get("subscriptionId", "")))
        for _entry_id, fields in recent
    }
    pipe = client.pipeline(transaction=False)
    for subscription_id in ids:
        pipe.exists(keys.retry_key(subscription_id))
    retrying = pipe.execute() if ids else []
    counts = dict.fromkeys(HEALTHS, 0)
    for subscription_id, has_retry_state in zip(ids, retrying, strict=True):
        if subscription_id in dead_lettering:
            counts["dead_lettering"] += 1
        elif has_retry_state:
            counts["retrying"] += 1
        else:
            counts["ok"] += 1
    return counts


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


class NotifierMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "o2ims_webhook_delivery_total",
            "Webhook delivery attempts by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.deliveries.labels(outcome)
        self.latency = Histogram(
            "o2ims_webhook_delivery_latency_seconds",
            "From the change (its event's stream time) to the subscriber's 2xx.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600),
            registry=self.registry,
        )
        self.events_matched = Counter(
            "o2ims_notifier_events_matched_total",
            "Events (inventory changes, alarm changes) matched against the subscriptions.",
            ["api"],
            registry=self.registry,
        )
        self.notifications_queued = Counter(
            "o2ims_notifier_notifications_queued_total",
            "Notifications put on delivery queues.",
            ["api"],
            registry=self.registry,
        )
        for api in APIS:
            self.events_matched.labels(api)
            self.notifications_queued.labels(api)

    def add_state(self, collect: StateCollector) -> None:
        """Expose gauges computed at scrape time."""
        register_state(self.registry, collect)

    def add_operator_state(self, client: redis.Redis, certificates: Mapping[str, str]) -> None:
        """Scrape-time gauges read through `client` (a short-timeout one):
        `o2ims_notifier_matcher_lag{feed}` and `o2ims_subscriptions{health}`; and
        `o2ims_certificate_expiry_seconds` of `certificates` (role -> PEM path)."""

        def collect() -> Iterator[GaugeMetricFamily]:
            lag = GaugeMetricFamily(
                "o2ims_notifier_matcher_lag",
                "Entries of the event stream (feed: inventory, alarms) the matcher has not "
                "read yet (its consumer group's lag).",
                labels=["feed"],
            )
            health = GaugeMetricFamily(
                "o2ims_subscriptions",
                "Subscriptions (inventory and alarm) by delivery health: ok, retrying (the "
                "head of the queue failed and waits), dead_lettering (a dead letter in the "
                "last 15 minutes).",
                labels=["health"],
            )
            try:
                lags = matcher_lag(client)
                healths = subscription_health(client)
            except redis.RedisError:
                return  # unknown: better no sample than a wrong one (o2ims_redis_up says why)
            for feed, entries in lags.items():
                lag.add_metric([feed], float(entries))
            for name, count in healths.items():
                health.add_metric([name], float(count))
            yield lag
            yield health

        register_state(self.registry, collect)
        register_certificates(self.registry, certificates)
