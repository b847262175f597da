"""Assemble one notifier process: the matcher, the scheduler with its delivery workers,
the optional O-Cloud registration and the ops endpoint (/healthz, /readyz, /metrics)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, cast

import redis
import structlog
from prometheus_client.core import GaugeMetricFamily

from server.notifier import keys
from server.notifier.config import NotifierConfig
from server.notifier.deadletters import DeadLetters
from server.notifier.delivery import DeliveryWorker
from server.notifier.http import (
    TokenSource,
    WebhookClient,
    callback_ca_bundle,
    reloading_tls_context,
)
from server.notifier.matching import Matcher
from server.notifier.metrics import NotifierMetrics, matcher_lag
from server.notifier.pool import DeliveryPool
from server.notifier.registration import TRUSTED, Registration
from server.notifier.scheduler import Scheduler
from server.ops import OpsServer, readiness_status, redis_check
from server.store import connect
from server.subscriptions.callbacks import describe
from server.subscriptions.store import SubscriptionKind

log = structlog.get_logger()


def consumer_name() -> str:
    """Unique per process start: a restarted notifier is a new consumer, and reclaims the
    old one's pending entries like anybody else's."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Notifier:
    def __init__(self, config: NotifierConfig) -> None:
        # The policy names the CA bundle in force, so failures name it too.
        trusted = replace(config.callback_policy, ca_bundle=callback_ca_bundle(config))
        self.config = config = replace(config, callback_policy=trusted)
        self.consumer = consumer_name()
        self._stop = threading.Event()
        self.metrics = NotifierMetrics()
        # Blocking reads (XREADGROUP BLOCK <= 1 s) need a socket timeout above the block.
        self._state = connect(config.redis_url, socket_timeout=5.0)
        self._probe = connect(config.redis_url, socket_timeout=0.5)
        # Rebuilt when the client certificate is renewed (no restart).
        self._tls = reloading_tls_context(config)
        self._tokens = TokenSource(config.oauth)
        self.dead_letters = DeadLetters(self._state, config.dead_letter_max_len)
        self.matcher = Matcher(
            connect(config.redis_url, socket_timeout=5.0),
            self.consumer,
            lease_ms=config.lease_ms,
            filter_mode=config.filter_mode,
            service_uri=config.service_uri,
            metrics=self.metrics,
            stop=self._stop,
        )
        # Every worker's Redis commands (none blocks) share this client's connections.
        self._deliveries = connect(config.redis_url, socket_timeout=5.0)
        self.pool = DeliveryPool(config.delivery_workers, self._new_webhooks)
        self.scheduler = Scheduler(
            self._state,
            self.consumer,
            config.lease_ms,
            self._new_worker,
            self._stop,
            wakeups=connect(config.redis_url, socket_timeout=5.0),
            # On SIGTERM, a delivery in flight gets its whole request timeout to finish.
            shutdown_timeout_s=config.request_timeout_s + 2.0,
        )
        self.registration = (
            Registration(
                config.smo_registration_url,
                config.service_uri,
                self._state,
                WebhookClient(
                    config.webhook_secret,
                    replace(TRUSTED, ca_bundle=trusted.ca_bundle),
                    timeout_s=config.request_timeout_s,
                    tls=self._tls,
                    tokens=self._tokens,
                ),
                self._stop,
            )
            if config.smo_registration_url
            else None
        )
        self.metrics.add_state(self._state_metrics)
        self.metrics.add_operator_state(
            self._probe,
            {"webhook_client": config.tls_cert, "callback_ca": trusted.ca_bundle},
        )
        self.ops = OpsServer(
            config.ops_host, config.ops_port, self.readiness, self.metrics.registry
        )
        self._threads: list[threading.Thread] = []

    def _new_worker(self, subscription_id: str, kind: SubscriptionKind) -> DeliveryWorker:
        return DeliveryWorker(
            subscription_id,
            kind=kind,
            client=self._deliveries,
            pool=self.pool,
            consumer=self.consumer,
            schedule=self.config.retry,
            lease_ms=self.config.lease_ms,
            dead_letters=self.dead_letters,
            metrics=self.metrics,
        )

    def _new_webhooks(self) -> WebhookClient:
        """A delivery thread's client (its kept-alive connections)."""
        return WebhookClient(
            self.config.webhook_secret,
            self.config.callback_policy,
            timeout_s=self.config.request_timeout_s,
            tls=self._tls,
            tokens=self._tokens,
        )

    def start(self) -> None:
        self.ops.start()
        self.pool.start()
        roles: list[tuple[str, Any]] = [
            ("matcher", self.matcher.run),
            ("scheduler", self.scheduler.run),
            ("wakeups", self.scheduler.watch),
        ]
        if self.registration is not None:
            roles.append(("registration", self.registration.run))
        for name, target in roles:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "notifier_started",
            consumer=self.consumer,
            ops_port=self.ops.port,
            filter_mode=self.config.filter_mode,
            callback_policy=describe(self.config.callback_policy),
            registration=bool(self.registration),
            delivery_workers=self.pool.size,
            oauth=self._tokens.enabled,
            client_certificate=bool(self.config.tls_cert),
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming work and finish: every delivery in flight completes (or times out,
        NETWEAVE_NOTIFY_TIMEOUT_S) and is acknowledged, what was read but not delivered is
        handed back for the other notifiers at once, then the leases are released."""
        if timeout is None:
            timeout = self.config.request_timeout_s + 5.0
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self.pool.close()
        self.ops.stop()

    # --- readiness and metrics -------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {"redis": redis_check(self._probe)}
        checks["matcher"] = _check(
            self.matcher.redis_ok, "the matcher cannot reach Redis", leader=self.matcher.leader
        )
        checks["deliveries"] = _check(
            self.scheduler.redis_ok,
            "the delivery scheduler cannot reach Redis",
            subscriptions=len(self.scheduler.workers),
        )
        if checks["redis"]["ok"]:
            # The event streams the matcher follows: what it has yet to read (an alert's
            # matter, not readiness: another replica may be the matcher at work).
            with contextlib.suppress(redis.RedisError):
                checks["events"] = {"ok": True, "matcher_lag": matcher_lag(self._probe)}
        if self.registration is not None:
            checks["registration"] = {"ok": True, "accepted": self.registration.accepted}
        ready = bool(checks["redis"]["ok"])
        body: dict[str, Any] = {"status": readiness_status(ready, checks), "checks": checks}
        if not ready:
            body["failing"] = ["redis"]
        return ready, body

    def _state_metrics(self) -> Iterator[GaugeMetricFamily]:
        queue = GaugeMetricFamily(
            "o2ims_webhook_queue_depth", "Notifications queued for delivery, all subscriptions."
        )
        deepest = GaugeMetricFamily(
            "o2ims_webhook_queue_depth_max",
            "Notifications waiting in the deepest subscription's queue (which one: "
            "the dlq CLI and notifier:queue:<subId> lengths).",
        )
        dead = GaugeMetricFamily(
            "o2ims_webhook_dead_letters", "Notifications in the dead-letter stream."
        )
        try:
            ids = [
                member.decode()
                for kind in keys.SUBSCRIPTION_KINDS
                for member in cast(set[bytes], self._probe.smembers(kind.index_key))
            ]
            pipe = self._probe.pipeline(transaction=False)
            for subscription_id in ids:
                pipe.xlen(keys.queue_key(subscription_id))
            pipe.xlen(keys.DEAD_LETTERS_KEY)
            *lengths, dead_letters = pipe.execute()
            queue.add_metric([], float(sum(lengths)))
            deepest.add_metric([], float(max(lengths, default=0)))
            dead.add_metric([], float(dead_letters))
            yield queue
            yield deepest
            yield dead
        except redis.RedisError:
            pass  # unknown: better no sample than a wrong one
        owned = GaugeMetricFamily(
            "o2ims_notifier_subscriptions_owned", "Subscriptions this process delivers."
        )
        owned.add_metric([], float(len(self.scheduler.workers)))
        yield owned
        leader = GaugeMetricFamily(
            "o2ims_notifier_matcher_leader", "1 if this process is the matcher at work."
        )
        leader.add_metric([], 1.0 if self.matcher.leader else 0.0)
        yield leader
        redis_up = GaugeMetricFamily("o2ims_redis_up", "1 if the last Redis operation succeeded.")
        redis_up.add_metric([], 1.0 if self.matcher.redis_ok and self.scheduler.redis_ok else 0.0)
        yield redis_up


def _check(ok: bool, reason: str, **details: Any) -> dict[str, Any]:
    """A readiness check entry: `ok`, `reason` when not ok, and what else it reports."""
    return {"ok": ok, **({} if ok else {"reason": reason}), **details}
