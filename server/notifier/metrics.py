"""Prometheus metrics of the notifier (one registry per instance, so tests can run several
in one process). The names are the ones the operations guide documents."""

from __future__ import annotations

from typing import Final, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram

from netweave.metrics import StateCollector, register_state

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
