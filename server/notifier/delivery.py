"""Delivering one subscription's queue, in order, one notification at a time.

A DeliveryWorker belongs to the process that holds the subscription's lease (see
scheduler.py): nobody else reads the queue meanwhile, which is what keeps the order. It has
no thread of its own: the process's DeliveryPool (NETWEAVE_NOTIFY_WORKERS threads) runs its
turns, one at a time, when it is woken: by its start, by `notifier:ready` (the matcher names
the subscriptions it queued to), by a retry or poll it set falling due. Between turns it
costs Redis nothing. A subscriber that is slow holds one pool thread for its POST in flight;
one failing or down waits out its backoff holding none: either way only its own queue
waits (a pool of N serves N slow subscribers at once before the others wait). The queue
`notifier:queue:<subId>` is read through its consumer group `notifier:deliver`:

1. Recovery, on taking the lease: entries a previous owner read but did not finish are
   claimed (XAUTOCLAIM, once they have been idle for a lease period, so a still-running
   old owner is not raced; looked at again every PENDING_POLL_S meanwhile) and delivered
   first, oldest first, then
2. new entries (XREADGROUP >, READ_COUNT a turn, without blocking), and after a retryable
   failure or a Redis error, its own pending entries again (XREADGROUP 0) from the head.

Each entry is POSTed until it is delivered (XACK + XDEL), found permanently undeliverable
or out of retries (to the dead-letter stream, XACK + XDEL in the same transaction), or its
subscription is gone (dropped). Retries back off exponentially with full jitter, at least
as long as a Retry-After asks; the head's attempt count and first failure time are kept in
`notifier:retry:<subId>`, so the schedule's deadline survives restarts.

Logs. Every line about one notification carries its `notification_id` and its
`correlation_id`: the event's (the API call that caused it), else the notification id; the
POST sends the same as X-Correlation-ID. A delivery that succeeds is one info line
(`delivery_succeeded`: status, latency_ms of the POST, attempts).

Traces (netweave/tracing.py, when on). Each attempt is a PRODUCER span `notification
deliver`, a child of the event's `traceparent` (the API call that caused it) or the root of
its own trace, with the correlation, notification and subscription ids, the attempt number
and the HTTP status as attributes; the POST carries that span's `traceparent`.

Acknowledging in batches. The POSTs stay strictly one at a time, in order; what is
batched is the Redis work around them. Delivered entries are acknowledged (XACK + XDEL of
all of them, and an EXISTS of the subscription, in one pipeline: a "check") before the
next POST once ACK_EVERY are waiting or ACK_INTERVAL_S has passed since the last check, at
the end of every batch read (so nothing waits while the worker blocks for new entries),
before any retry wait and when the worker stops. A read that returns entries counts as a
check too: deleting a subscription deletes its queue in the same script. The bounds this
sets, each per subscription:
- after a subscription is deleted, at most ACK_EVERY POSTs start, all of them within
  ACK_INTERVAL_S of the deletion (before: only the POST in flight completed);
- after a crash (kill -9), at most ACK_EVERY delivered notifications are delivered again
  (before: at most the one in flight); receivers deduplicate on webhook-id anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Final, Literal, cast

import redis
import structlog
from redis.typing import EncodableT, FieldT

from netweave import correlation, tracing
from netweave.backoff import Backoff
from netweave.redaction import redact_url
from server.notifier import keys, streams
from server.notifier.config import RetrySchedule
from server.notifier.deadletters import DeadLetters
from server.notifier.http import DeliveryResult, WebhookClient
from server.notifier.metrics import NotifierMetrics
from server.notifier.pool import DeliveryPool
from server.subscriptions.store import SubscriptionKind

log = structlog.get_logger()

_ENSURE_GROUP: Final = """
-- KEYS: subscription hash, delivery queue; ARGV: group
-- Only for a live subscription: a deleted one must not get its queue back.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
end
return 1
"""

READ_COUNT: Final = 100
# Acknowledgements are sent together once this many are waiting, or this long after the
# last check: the bounds of the module docstring.
ACK_EVERY: Final = 16
ACK_INTERVAL_S: Final = 0.01
# Entries a stopping worker marks claimable at once (it holds at most a read's worth,
# READ_COUNT, plus what it recovered; any beyond wait the lease period).
HAND_BACK_MAX: Final = 10 * READ_COUNT
# "waiting": a retry is due later (the worker is woken then, see DeliveryPool).
Finished = Literal["delivered", "dead_lettered", "dropped", "stopped", "waiting"]
# How long a recovering worker waits before looking again at a previous owner's entries
# that are not idle for a lease period yet.


def event_time_s(event_id: str) -> float | None:
    """The unix time of an event (inventory or alarm), from its stream entry id."""
    ms, _, _ = event_id.partition("-")
    return int(ms) / 1000.0 if ms.isdigit() else None


class DeliveryWorker:
    """Delivers one subscription's queue until stopped (see the module docstring)."""

    def __init__(
        self,
        subscription_id: str,
        *,
        client: redis.Redis,
        consumer: str,
        schedule: RetrySchedule,
        lease_ms: int,
        dead_letters: DeadLetters,
        metrics: NotifierMetrics,
        kind: SubscriptionKind,
        pool: DeliveryPool,
    ) -> None:
        self.subscription_id = subscription_id
        self.kind = kind
        self._client = client
        self._consumer = consumer
        # The POSTing client of the pool thread running the current turn (see step).
        self._webhooks: WebhookClient | None = None
        self._schedule = schedule
        self._lease_ms = lease_ms
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._queue = keys.queue_key(subscription_id)
        self._retry_key = keys.retry_key(subscription_id)
        self._subscription_key = kind.key(subscription_id)
        self._ensure_group = client.register_script(_ENSURE_GROUP)
        self._stop = threading.Event()
        self._callback = ""
        # Delivered, not acknowledged yet (see "Acknowledging in batches").
        self._acks: list[str] = []
        self._clear_retry = False  # a delivered entry had retry state: delete it
        self._checked = 0.0  # time.monotonic() the subscription was last seen to exist
        self._delivered_total = metrics.deliveries.labels("delivered")
        self.gone = False  # the subscription no longer exists
        self.busy = False  # something is (or was just) queued
        self._pool = pool
        # "recover": a previous owner's entries first; "own": ours read but not finished
        # (after a retryable failure or a Redis error); "new": what was never read.
        self._phase: Literal["recover", "own", "new"] = "recover"
        self._prepared = False  # callback read, consumer group ensured
        self._backoff = Backoff(maximum=2.0)  # after a Redis error
        # time.monotonic() before which a wake-up does nothing (a retry or backoff due).
        self._due = 0.0
        self._finished = threading.Event()
        self._log = log.bind(subscription_id=subscription_id)

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._pool.wake(self)

    def stop(self) -> None:
        """Finish the attempt in flight, then stop (without acknowledging the rest)."""
        self._stop.set()
        self._pool.wake(self)

    def wake(self) -> None:
        """New notifications may be queued: look (on a pool thread, soon)."""
        self._pool.wake(self)

    def alive(self) -> bool:
        return not self._finished.is_set()

    def join(self, timeout: float | None = None) -> None:
        self._finished.wait(timeout)

    def step(self, webhooks: WebhookClient) -> None:
        """One turn on a pool thread (never two at once for one worker), POSTing with that
        thread's `webhooks` (kept-alive connections are per thread and origin, shared by
        the subscriptions it serves): deliver up to a read's worth of the queue, in order,
        then return; the pool runs it again when it is woken (new notifications, a retry
        or a poll due, more already queued)."""
        self._webhooks = webhooks
        if self._finished.is_set():
            return
        if not self._stop.is_set() and time.monotonic() < self._due:
            return  # new notifications wait behind the head's retry: its timer wakes us
        more = False
        try:
            if not self._stop.is_set() and not self.gone:
                more = self._turn()
                self._backoff.reset()
        except redis.RedisError as exc:
            self._log.warning("delivery_redis_error", error=str(exc))
            self._phase = "own" if self._phase == "new" else self._phase
            self._wait(self._backoff.next_delay())
        except Exception:
            self._log.exception("delivery_worker_failed")
            self._finish()
            return
        if self._stop.is_set() or self.gone:
            self._finish()
        elif more:
            self._pool.wake(self)

    def _wait(self, delay_s: float) -> None:
        """Run again in `delay_s`, not before (unless stopped)."""
        self._due = time.monotonic() + delay_s
        self._pool.wake_in(self, delay_s)

    def _finish(self) -> None:
        try:
            if self._acks or self._clear_retry:
                self._check()  # acknowledge what was delivered before stopping
            if self._stop.is_set() and not self.gone and self._prepared:
                self._hand_back()
        except redis.RedisError:
            pass  # delivered again by whoever reads the queue next: at least once
        finally:
            self._finished.set()

    def _hand_back(self) -> None:
        """Stopped (a shutdown, or the subscription handed to another process): make what
        this worker read but did not finish claimable by the next owner at once. Its
        recovery claims only entries idle for a lease period (so a live owner is not
        raced); marking ours that idle saves it the wait, without giving up the order."""
        pending: Any = self._client.xpending_range(
            self._queue,
            keys.DELIVER_GROUP,
            min="-",
            max="+",
            count=HAND_BACK_MAX,
            consumername=self._consumer,
        )
        ids = [entry["message_id"] for entry in pending]
        if ids:
            self._client.xclaim(
                self._queue,
                keys.DELIVER_GROUP,
                self._consumer,
                min_idle_time=0,
                message_ids=ids,
                idle=self._lease_ms,
                justid=True,
            )
            self._log.info("delivery_handed_back", notifications=len(ids))

    # --- the queue -------------------------------------------------------------------

    def _prepare(self) -> None:
        stored, created_by = cast(
            list[bytes | None],
            self._client.hmget(self._subscription_key, ["callback", correlation.STORED_FIELD]),
        )
        if stored is None or not self._ensure_group(
            keys=[self._subscription_key, self._queue], args=[keys.DELIVER_GROUP]
        ):
            self.gone = True
            return
        self._prepared = True
        self._callback = stored.decode()
        # Where notifications go, in every record, minus any credential in the URL.
        self._log = self._log.bind(callback=redact_url(self._callback))
        # With the id of the call that created the subscription: `grep <id>` shows which
        # notifier delivers it.
        self._log.info(
            "delivery_worker_started",
            **({"correlation_id": created_by.decode()} if created_by else {}),
        )

    def _turn(self) -> bool:
        """Deliver one batch; True if more may be waiting at once."""
        if self._acks or self._clear_retry:
            self._check()  # what was delivered before a Redis error: acknowledge it first
        if not self._prepared:
            self._prepare()
            if self.gone:
                return False
        try:
            if self._phase == "recover":
                return self._recover()
            if self._phase == "own":
                reply: Any = self._client.xreadgroup(
                    keys.DELIVER_GROUP, self._consumer, {self._queue: "0"}, count=READ_COUNT
                )
                entries = _decoded(streams.entries(reply))
                if not entries:
                    self._phase = "new"
                    return True
                self.busy = True
                return self._deliver_all(entries, recovering=True)
            reply = self._client.xreadgroup(
                keys.DELIVER_GROUP, self._consumer, {self._queue: ">"}, count=READ_COUNT
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The queue went with its subscription (the delete script), or was removed.
            self._prepared = False
            self.gone = not self._client.exists(self._subscription_key)
            return not self.gone
        entries = _decoded(streams.entries(reply))
        self.busy = bool(entries)
        if not entries:
            return False
        return self._deliver_all(entries, recovering=False) and len(entries) == READ_COUNT

    def _recover(self) -> bool:
        """One pass of recovery (streams.recover_step); True if more is to do at once."""
        found = streams.recover_step(
            self._client,
            self._queue,
            keys.DELIVER_GROUP,
            self._consumer,
            min_idle_ms=self._lease_ms,
            count=READ_COUNT,
        )
        if found is None:  # nothing pending any more
            self._phase = "new"
            return True
        if not found:  # a previous owner's entries, not idle long enough yet
            # _wait, not a bare timer: a wake-up meanwhile (new notifications) must not
            # start another recovery pass, nor another timer.
            self._wait(streams.PENDING_POLL_S)
            return False
        self.busy = True
        return self._deliver_all(_decoded(found), recovering=True)

    def _deliver_all(
        self, entries: list[tuple[str, dict[bytes, bytes]]], *, recovering: bool
    ) -> bool:
        """Deliver a batch read from the queue, in order, then acknowledge it; False if it
        stopped at an entry whose retry is due later (the pool wakes the worker then)."""
        if entries:
            # The read found the queue, so the subscription existed (module docstring).
            self._checked = time.monotonic()
        # Only an entry read again (after a Redis error, a restart or a takeover) can have
        # been attempted before: one read the first time (">") has no retry state.
        retry = self._retry_state() if recovering and entries else None
        for entry_id, fields in entries:
            if self._stop.is_set() or self.gone:
                break
            if not fields:  # trimmed or deleted meanwhile: nothing to deliver
                self._acks.append(entry_id)
                continue
            if len(self._acks) >= ACK_EVERY or (
                self._acks and time.monotonic() - self._checked >= ACK_INTERVAL_S
            ):
                self._check()
                if self.gone:
                    break
            attempts, first_failure_ms = (
                retry[1:] if retry is not None and retry[0] == entry_id else (0, 0)
            )
            if self._deliver(entry_id, fields, attempts, first_failure_ms) == "waiting":
                return False  # its retry acknowledged what was delivered before it
        self._check()
        return True

    def _check(self, retry_state: Mapping[FieldT, EncodableT] | None = None) -> None:
        """Acknowledge the delivered entries and see whether the subscription still
        exists, in one round trip; `retry_state` (of the head, which just failed) is
        written after them."""
        pipe = self._client.pipeline(transaction=False)
        if self._acks:
            # No MULTI needed: XACK alone ends a delivery; XDEL only keeps the stream short.
            pipe.xack(self._queue, keys.DELIVER_GROUP, *self._acks)
            pipe.xdel(self._queue, *self._acks)
        if self._clear_retry:
            pipe.delete(self._retry_key)
        if retry_state is not None:
            pipe.hset(self._retry_key, mapping=retry_state)
        pipe.exists(self._subscription_key)
        still_there = pipe.execute()[-1]
        self._acks.clear()
        self._clear_retry = False
        self._checked = time.monotonic()
        if not still_there:
            self.gone = True

    def _deliver(
        self, entry_id: str, fields: dict[bytes, bytes], attempts: int, first_failure_ms: int
    ) -> Finished:
        notification_id = fields[b"id"].decode()
        with correlation.bound(_correlation_id(fields, notification_id)) as correlation_id:
            return self._attempt(
                entry_id,
                fields,
                notification_id=notification_id,
                correlation_id=correlation_id,
                attempts=attempts,
                first_failure_ms=first_failure_ms,
            )

    def _attempt(
        self,
        entry_id: str,
        fields: dict[bytes, bytes],
        *,
        notification_id: str,
        correlation_id: str,
        attempts: int,
        first_failure_ms: int,
    ) -> Finished:
        body = fields[b"body"]
        parent = fields.get(tracing.STORED_FIELD.encode(), b"").decode(errors="replace")
        if not self._stop.is_set():
            if attempts and not self._client.exists(self._subscription_key):
                return self._drop()
            started = time.perf_counter()
            assert self._webhooks is not None  # set by step()
            if tracing.enabled():
                result = self._traced_post(notification_id, body, correlation_id, parent, attempts)
            else:
                result = self._webhooks.post(self._callback, notification_id, body, correlation_id)
            attempts += 1
            if result.ok:
                self._log.info(
                    "delivery_succeeded",
                    notification_id=notification_id,
                    status=result.status,
                    latency_ms=round((time.perf_counter() - started) * 1000, 3),
                    attempts=attempts,
                )
                return self._delivered(entry_id, fields, attempts)
            now_ms = int(time.time() * 1000)
            first_failure_ms = first_failure_ms or now_ms
            exhausted = (now_ms - first_failure_ms) / 1000 >= self._schedule.deadline_s or (
                self._schedule.max_attempts and attempts >= self._schedule.max_attempts
            )
            if result.permanent or exhausted:
                return self._dead_letter(entry_id, fields, result, attempts, bool(exhausted))
            delay = self._schedule.delay(attempts, result.retry_after_s)
            # Never wait past the deadline: the last attempt is made at it.
            remaining = self._schedule.deadline_s - (now_ms - first_failure_ms) / 1000
            delay = max(0.0, min(delay, remaining))
            self._metrics.deliveries.labels("retried").inc()
            # Acknowledges the entries delivered before this one too: nothing waits out
            # the backoff unacknowledged.
            self._check(
                retry_state={
                    "entry": entry_id,
                    "attempts": attempts,
                    "firstFailureMs": first_failure_ms,
                    "lastError": result.reason,
                }
            )
            if self.gone:
                return self._drop()
            self._log.info(
                "delivery_retry",
                notification_id=notification_id,
                attempts=attempts,
                reason=result.reason,
                delay_s=round(delay, 3),
            )
            # The entry stays pending (ours): read again, with its retry state, when due.
            self._phase = "own"
            self._wait(delay)
            return "waiting"
        return "stopped"

    def _traced_post(
        self, notification_id: str, body: bytes, correlation_id: str, parent: str, attempts: int
    ) -> DeliveryResult:
        """One attempt in its span (module docstring, "Traces")."""
        with tracing.span(
            "notification deliver",
            kind="PRODUCER",
            parent=parent,
            attributes={
                tracing.CORRELATION_ID: correlation_id,
                tracing.NOTIFICATION_ID: notification_id,
                tracing.SUBSCRIPTION_ID: self.subscription_id,
                "messaging.message.id": notification_id,
                "messaging.operation.type": "send",
                "netweave.delivery.attempt": attempts + 1,
            },
        ) as span:
            assert self._webhooks is not None  # set by step()
            result = self._webhooks.post(
                self._callback, notification_id, body, correlation_id, tracing.traceparent()
            )
            if span is not None:
                if result.status:
                    span.set_attribute("http.response.status_code", result.status)
                if not result.ok:
                    tracing.set_error(span, result.reason)
        return result

    def _retry_state(self) -> tuple[str, int, int] | None:
        """(entry id, attempts, first failure ms) of the queue's head, if it has failed."""
        state: Any = self._client.hgetall(self._retry_key)
        if not state or b"entry" not in state:
            return None
        return state[b"entry"].decode(), int(state[b"attempts"]), int(state[b"firstFailureMs"])

    def _delivered(self, entry_id: str, fields: dict[bytes, bytes], attempts: int) -> Finished:
        self._acks.append(entry_id)
        if attempts > 1:
            self._clear_retry = True
        self._delivered_total.inc()
        happened = event_time_s(fields.get(b"event", b"").decode())
        if happened is not None and b"replayed" not in fields:
            self._metrics.latency.observe(max(0.0, time.time() - happened))
        return "delivered"

    def _dead_letter(
        self,
        entry_id: str,
        fields: dict[bytes, bytes],
        result: DeliveryResult,
        attempts: int,
        exhausted: bool,
    ) -> Finished:
        self._check()  # the entries delivered before this one, first
        reason = (
            result.reason
            if not exhausted or result.permanent
            else (f"retries exhausted after {attempts} attempts; last: {result.reason}")
        )
        pipe = self._client.pipeline(transaction=True)
        self._dead_letters.add(
            pipe,
            {
                "subscriptionId": self.subscription_id,
                "subscriptionKind": self.kind.name,
                "notificationId": fields[b"id"].decode(),
                "event": fields.get(b"event", b"").decode(),
                # For the operator: where it was going, without the URL's credentials.
                "callback": redact_url(self._callback),
                "reason": reason,
                "attempts": str(attempts),
                "lastStatus": str(result.status or ""),
                "body": fields[b"body"],
                **{
                    name: fields[name.encode()]
                    for name in (correlation.STORED_FIELD, tracing.STORED_FIELD)
                    if name.encode() in fields
                },
            },
        )
        pipe.xack(self._queue, keys.DELIVER_GROUP, entry_id)
        pipe.xdel(self._queue, entry_id)
        pipe.delete(self._retry_key)
        pipe.execute()
        outcome = result.outcome if result.permanent else "dead_lettered"
        self._metrics.deliveries.labels(outcome).inc()
        self._log.warning(
            "delivery_dead_lettered",
            notification_id=fields[b"id"].decode(),
            attempts=attempts,
            outcome=outcome,
            reason=reason,
        )
        return "dead_lettered"

    def _drop(self) -> Finished:
        self.gone = True
        self._metrics.deliveries.labels("dropped").inc()
        self._log.info("delivery_dropped_subscription_deleted")
        return "dropped"


def _correlation_id(fields: dict[bytes, bytes], notification_id: str) -> str:
    """The event's correlation id if it has a well-formed one (the queue is Redis data: it
    becomes a header), else the notification's id."""
    stored = fields.get(correlation.STORED_FIELD.encode(), b"").decode(errors="replace")
    return stored if correlation.well_formed(stored) else notification_id


def _decoded(found: list[streams.Entry]) -> list[tuple[str, dict[bytes, bytes]]]:
    return [(entry_id.decode(), fields) for entry_id, fields in found]
