"""The Alertmanager adapter's Prometheus metrics, served on its receiver's GET /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from netweave.metrics import register_process_metrics

# The outcomes of one webhook request (the `outcome` label).
ACCEPTED: Final = "accepted"
UNAUTHORIZED: Final = "unauthorized"
MALFORMED: Final = "malformed"
TOO_LARGE: Final = "too_large"
STATE_ERROR: Final = "state_error"
OUTCOMES: Final = (ACCEPTED, UNAUTHORIZED, MALFORMED, TOO_LARGE, STATE_ERROR)


class AlertmanagerMetrics:
    """One registry per adapter (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Ready while it answers: it restores its state before it listens, and needs
        # nothing else (the core's /readyz reports it as an adapter).
        register_process_metrics(self.registry, lambda: True)
        self.webhooks = Counter(
            "netweave_alertmanager_webhooks",
            "Webhook requests received from Alertmanager, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.webhooks.labels(outcome)
        self.alerts = Counter(
            "netweave_alertmanager_alerts",
            "Alerts received in accepted webhooks, by status (firing, resolved) and whether "
            "they were ignored (no resource)",
            ["status", "ignored"],
            registry=self.registry,
        )
        self.expired = Counter(
            "netweave_alertmanager_alarms_expired",
            "Alarms withdrawn because their endsAt passed without a resend",
            registry=self.registry,
        )
        self.active = Gauge(
            "netweave_alertmanager_active_alarms",
            "Alarms this adapter publishes as active now",
            registry=self.registry,
        )

    def track_active(self, count: Callable[[], int]) -> None:
        self.active.set_function(lambda: float(count()))
