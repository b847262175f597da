"""What every adapter serves: its current object set, as a snapshot and as a stream of
changes, over o2ims.adapter.v1.AdapterService.

An adapter only has to compute "the objects I see now" and hand them to
ObjectSetPublisher.replace(); the publisher works out what changed, numbers the
change and fans it out to every watcher as one change set: its events, then one
COMMIT (the stream's SYNCED says so with `commits_change_sets`), so the core applies
the set whole or, if the stream breaks before the COMMIT, not at all. An adapter that
knows which objects it touched (a watch-driven one) hands only those to
ObjectSetPublisher.update(), with the same result at a cost that follows the change,
not the size of the set.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.rpc import code_pb2, error_details_pb2
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc, domain_pb2

from adapters.contract import KINDS, ObjectKey, object_key, serialize
from netweave.errors import ERROR_DOMAIN, error_status
from netweave.grpc_server import add_health_and_reflection, new_server, set_serving
from netweave.lifecycle import wait_for

SERVICE_NAME: Final = adapter_pb2.DESCRIPTOR.services_by_name["AdapterService"].full_name
DEFAULT_MAX_PENDING_EVENTS: Final = 10_000
# The core receives every object inside one WatchObjectsResponse, and gRPC refuses
# received messages over 4 MiB by default: an object that does not fit would fail the
# core's watch on every reconnect. The margin leaves room for the event around it.
DEFAULT_MAX_OBJECT_BYTES: Final = 4 * 1024 * 1024 - 64 * 1024
# GetAdapterInfo's trailing metadata: JSON list of the adapter's current problems (what
# it refuses to serve, and why), which the core shows in /readyz. Bounded so it always
# fits gRPC's metadata limits.
PROBLEMS_METADATA_KEY: Final = "netweave-adapter-problems-bin"
MAX_REPORTED_PROBLEMS: Final = 5
# ErrorInfo reason of ListObjects/WatchObjects refused by an adapter that has not read its
# source yet (UNAVAILABLE): the core waits for it instead of counting a failed watch.
NOT_SYNCED_REASON: Final = "ADAPTER_NOT_SYNCED"
MAX_PROBLEM_CHARS: Final = 500

_KIND_ORDER: Final = {kind: index for index, kind in enumerate(KINDS)}


def _order(key: ObjectKey) -> tuple[int, str]:
    return _KIND_ORDER[key[0]], key[1]


def _reverse_order(key: ObjectKey) -> tuple[int, str]:
    return -_KIND_ORDER[key[0]], key[1]


@dataclass(frozen=True)
class RefusedObject:
    """An object the publisher would not send: its serialized size is over the limit."""

    kind: str
    object_id: str
    size: int
    limit: int
    held_previous: bool

    def __str__(self) -> str:
        kept = (
            "its last published state is still served" if self.held_previous else "it is not served"
        )
        return (
            f"{self.kind} '{self.object_id}' is {self.size} bytes serialized, over the "
            f"{self.limit}-byte limit of one object; {kept}"
        )


def encode_problems(problems: Iterable[str]) -> bytes:
    """The PROBLEMS_METADATA_KEY value for `problems` (bounded in number and length)."""
    kept = [problem[:MAX_PROBLEM_CHARS] for problem in list(problems)[:MAX_REPORTED_PROBLEMS]]
    return json.dumps(kept).encode()


def decode_problems(value: bytes | str) -> list[str]:
    """The inverse of encode_problems; anything malformed reads as one problem saying so."""
    try:
        problems = json.loads(value)
    except ValueError:
        return ["the adapter reported problems in an unreadable form"]
    if not isinstance(problems, list):
        return ["the adapter reported problems in an unreadable form"]
    return [str(problem)[:MAX_PROBLEM_CHARS] for problem in problems[:MAX_REPORTED_PROBLEMS]]


class SubscriberLaggedError(Exception):
    """The watcher fell so far behind that its backlog was dropped; it must re-sync."""


class Subscription(Iterator[adapter_pb2.WatchObjectsResponse]):
    """One watcher's view: an optional replay of the current set, then live events.

    Live events wait in a bounded backlog. A watcher that lets it overflow is cut off
    (SubscriberLaggedError) instead of making the adapter hold an ever-growing
    queue; a fresh watch with the initial replay costs it far less than that memory.
    """

    def __init__(
        self,
        publisher: ObjectSetPublisher | None,
        initial: Iterable[domain_pb2.InventoryObject] | None,
        revision: str,
        max_pending: int,
    ) -> None:
        self._publisher = publisher
        self._condition = threading.Condition()
        self._initial: deque[domain_pb2.InventoryObject] = deque(initial or ())
        self._initial_revision = revision
        self._synced_pending = initial is not None
        self._pending: deque[adapter_pb2.WatchObjectsResponse] = deque()
        self._max_pending = max_pending
        self._closed = publisher is None
        self._lagged = False

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __next__(self) -> adapter_pb2.WatchObjectsResponse:
        event = self.next_event(timeout=None)
        if event is None:
            raise StopIteration
        return event

    @property
    def closed(self) -> bool:
        with self._condition:
            return self._closed

    def next_event(self, timeout: float | None = None) -> adapter_pb2.WatchObjectsResponse | None:
        """The next event, waiting up to `timeout` seconds (None: for ever).

        Returns None once the subscription is closed; raises TimeoutError when nothing
        arrived in time and SubscriberLaggedError when the backlog overflowed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while True:
                if self._closed:
                    return None
                if self._lagged:
                    raise SubscriberLaggedError(
                        f"more than {self._max_pending} events were waiting for this watcher"
                    )
                if self._initial:
                    return adapter_pb2.WatchObjectsResponse(
                        type=adapter_pb2.EVENT_TYPE_ADDED,
                        object=self._initial.popleft(),
                        revision=self._initial_revision,
                    )
                if self._synced_pending:
                    self._synced_pending = False
                    return adapter_pb2.WatchObjectsResponse(
                        type=adapter_pb2.EVENT_TYPE_SYNCED,
                        revision=self._initial_revision,
                        commits_change_sets=True,
                    )
                if self._pending:
                    return self._pending.popleft()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("no event arrived in time")
                self._condition.wait(remaining)

    def close(self) -> None:
        """End the subscription; a blocked next_event() returns None. Idempotent."""
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._initial.clear()
            self._pending.clear()
            self._condition.notify_all()
        if self._publisher is not None:
            self._publisher._unsubscribe(self)

    def _offer(self, events: list[adapter_pb2.WatchObjectsResponse]) -> bool:
        """Queue one change set whole (or, if it does not fit, nothing of it and cut the
        watcher off); False when the watcher is gone or has just been cut off."""
        with self._condition:
            if self._closed or self._lagged:
                return False
            if len(self._pending) + len(events) > self._max_pending:
                self._lagged = True
                self._pending.clear()  # the point of cutting it off is to free this
                self._condition.notify_all()
                return False
            self._pending.extend(events)
            self._condition.notify_all()
            return True


class ObjectSetPublisher:
    """Thread-safe holder of an adapter's current objects, keyed by contract.object_key."""

    def __init__(
        self,
        max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    ) -> None:
        self._lock = threading.Lock()
        self._max_object_bytes = max_object_bytes
        self._refused: dict[ObjectKey, RefusedObject] = {}
        self._source_problem = ""
        self._objects: dict[ObjectKey, tuple[domain_pb2.InventoryObject, bytes]] = {}
        self._ordered: list[domain_pb2.InventoryObject] | None = []
        self._revision = 0
        # Whether the adapter has published its set yet (even an empty one).
        self._published = False
        self._subscribers: set[Subscription] = set()
        self._max_pending_events = max_pending_events
        self._closed = False

    @property
    def revision(self) -> str:
        with self._lock:
            return str(self._revision)

    @property
    def published(self) -> bool:
        """True once replace() or update() has been called: before, the publisher holds
        no set at all (which is not the same as an empty one)."""
        with self._lock:
            return self._published

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    @property
    def refused(self) -> list[RefusedObject]:
        """The objects refused as too large to send: by the last replace(), and by the
        update() calls since that last offered them (kind order, then id)."""
        with self._lock:
            return self._refused_in_order()

    @property
    def problems(self) -> list[str]:
        """Why the adapter is not serving what its source says: the source problem
        (set_source_problem) first, then every refused object."""
        with self._lock:
            source = [self._source_problem] if self._source_problem else []
            return source + [str(refused) for refused in self._refused_in_order()]

    def set_source_problem(self, problem: str) -> None:
        """Record (or with "" clear) why the adapter's source cannot be read right now,
        e.g. an invalid file whose last good content is still served."""
        with self._lock:
            self._source_problem = problem

    def replace(
        self, objects: Iterable[domain_pb2.InventoryObject]
    ) -> list[adapter_pb2.WatchObjectsResponse]:
        """Make `objects` the current set; returns (and broadcasts) what changed.

        The objects are copied, so the caller may reuse them; the returned events are
        the ones sent to watchers, so read them only. All events of one call carry the
        same new revision; a call that changes nothing bumps nothing and sends nothing.
        Watchers receive the events as one change set, followed by a COMMIT event of
        that revision (not among the returned events); each watcher's queue takes a
        set whole or not at all.

        An object whose serialized size is over `max_object_bytes` is refused (see
        `refused` and `problems`): it keeps its last published state, or stays
        unpublished if it has none, and everything else is applied as usual.
        """
        incoming, oversized = self._prepare(objects)
        with self._lock:
            self._published = True
            self._refused = {}
            for key, size in oversized.items():
                previous = self._objects.get(key)
                if previous is not None:
                    incoming[key] = previous
                self._refuse(key, size, previous is not None)
            upserts = [
                key
                for key, (_, data) in incoming.items()
                if key not in self._objects or self._objects[key][1] != data
            ]
            deletions = list(self._objects.keys() - incoming.keys())
            events = self._events(incoming, upserts, deletions)
            if events:
                self._objects = incoming
                self._broadcast(events)
            return events

    def update(
        self,
        upserts: Iterable[domain_pb2.InventoryObject],
        deletions: Iterable[ObjectKey] = (),
    ) -> list[adapter_pb2.WatchObjectsResponse]:
        """Add or change `upserts` and remove the objects keyed by `deletions`, leaving
        every other object as it is; returns (and broadcasts) what changed.

        The same as replace() with the current set so edited (diff by canonical bytes,
        one revision and one change set with its COMMIT per call, nothing sent when
        nothing changed, parents before children, oversized objects refused), at a cost
        that follows the size of the call rather than of the set. Deleting a key that
        is not published does nothing but clear a refusal of it; naming a key twice,
        or both upserting and deleting it, is a ValueError.
        """
        incoming, oversized = self._prepare(upserts)
        removed: set[ObjectKey] = set()
        for key in deletions:
            if key in incoming or key in oversized or key in removed:
                raise ValueError(f"the key {key} is named twice")
            removed.add(key)
        with self._lock:
            self._published = True
            for key in removed | incoming.keys():
                self._refused.pop(key, None)
            for key, size in oversized.items():
                self._refuse(key, size, key in self._objects)
            changed = [
                key
                for key, (_, data) in incoming.items()
                if key not in self._objects or self._objects[key][1] != data
            ]
            gone = [key for key in removed if key in self._objects]
            events = self._events(incoming, changed, gone)
            if events:
                for key in changed:
                    self._objects[key] = incoming[key]
                for key in gone:
                    del self._objects[key]
                self._broadcast(events)
            return events

    def _prepare(
        self, objects: Iterable[domain_pb2.InventoryObject]
    ) -> tuple[dict[ObjectKey, tuple[domain_pb2.InventoryObject, bytes]], dict[ObjectKey, int]]:
        """Private copies of `objects` with their canonical bytes, and the size of each
        one over the limit (left out of the copies); a repeated key is a ValueError."""
        incoming: dict[ObjectKey, tuple[domain_pb2.InventoryObject, bytes]] = {}
        oversized: dict[ObjectKey, int] = {}
        for obj in objects:
            key = object_key(obj)
            if key in incoming or key in oversized:
                raise ValueError(f"two objects share the key {key}")
            size = obj.ByteSize()
            if size > self._max_object_bytes:
                oversized[key] = size
                continue
            stored = domain_pb2.InventoryObject()
            stored.CopyFrom(obj)
            incoming[key] = (stored, serialize(stored))
        return incoming, oversized

    def _refuse(self, key: ObjectKey, size: int, held_previous: bool) -> None:
        self._refused[key] = RefusedObject(
            key[0], key[1], size, self._max_object_bytes, held_previous
        )

    def _refused_in_order(self) -> list[RefusedObject]:
        return [self._refused[key] for key in sorted(self._refused, key=_order)]

    def _events(
        self,
        incoming: dict[ObjectKey, tuple[domain_pb2.InventoryObject, bytes]],
        upserts: list[ObjectKey],
        deletions: list[ObjectKey],
    ) -> list[adapter_pb2.WatchObjectsResponse]:
        """The events of one change (under the lock, before the set is changed), under
        a new revision; none, and no new revision, when nothing changes."""
        if not upserts and not deletions:
            return []
        self._revision += 1
        revision = str(self._revision)
        # Parents before children on the way in, children before parents on the way
        # out, so a consumer applying events one by one never sees a dangling reference.
        events = [
            adapter_pb2.WatchObjectsResponse(
                type=(
                    adapter_pb2.EVENT_TYPE_MODIFIED
                    if key in self._objects
                    else adapter_pb2.EVENT_TYPE_ADDED
                ),
                object=incoming[key][0],
                revision=revision,
            )
            for key in sorted(upserts, key=_order)
        ]
        events += [
            adapter_pb2.WatchObjectsResponse(
                type=adapter_pb2.EVENT_TYPE_DELETED,
                object=self._objects[key][0],
                revision=revision,
            )
            for key in sorted(deletions, key=_reverse_order)
        ]
        return events

    def _broadcast(self, events: list[adapter_pb2.WatchObjectsResponse]) -> None:
        """Offer one change set, ended by its COMMIT, to every watcher (under the lock,
        after the set was changed)."""
        self._ordered = None
        change_set = [
            *events,
            adapter_pb2.WatchObjectsResponse(
                type=adapter_pb2.EVENT_TYPE_COMMIT, revision=events[0].revision
            ),
        ]
        for subscription in list(self._subscribers):
            if not subscription._offer(change_set):
                self._subscribers.discard(subscription)

    def snapshot(self) -> tuple[str, list[domain_pb2.InventoryObject]]:
        """The revision and the objects, parents first (contract.KINDS order, then id).

        The objects are shared with the publisher: read them, do not modify them.
        """
        with self._lock:
            return str(self._revision), self._ordered_objects()

    def subscribe(self, send_initial: bool) -> Subscription:
        """Start watching. With `send_initial`, the subscription first yields ADDED for
        every current object and one SYNCED, then the change sets made after that
        snapshot, each ended by a COMMIT.
        """
        with self._lock:
            # Snapshot and registration under one lock: a concurrent replace() lands
            # either wholly in the replay or wholly in the live events, never both or neither.
            if self._closed:
                return Subscription(None, None, str(self._revision), self._max_pending_events)
            subscription = Subscription(
                self,
                self._ordered_objects() if send_initial else None,
                str(self._revision),
                self._max_pending_events,
            )
            self._subscribers.add(subscription)
            return subscription

    def close(self) -> None:
        """End every subscription (for shutdown); later subscriptions start closed."""
        with self._lock:
            self._closed = True
            subscriptions = list(self._subscribers)
        for subscription in subscriptions:
            subscription.close()

    def _ordered_objects(self) -> list[domain_pb2.InventoryObject]:
        if self._ordered is None:
            self._ordered = [self._objects[key][0] for key in sorted(self._objects, key=_order)]
        return list(self._ordered)

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)


def _abort(context: grpc.ServicerContext, code: int, reason: str, message: str) -> None:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
    context.abort_with_status(error_status(code, message, [info]))


class AdapterServicer(adapter_pb2_grpc.AdapterServiceServicer):
    """o2ims.adapter.v1.AdapterService over an ObjectSetPublisher."""

    def __init__(
        self,
        name: str,
        backend: str,
        source: str,
        publisher: ObjectSetPublisher,
        liveness_check_interval: float = 1.0,
    ) -> None:
        self._name = name
        self._backend = backend
        self._source = source
        self._publisher = publisher
        self._liveness_check_interval = liveness_check_interval

    def GetAdapterInfo(
        self, request: adapter_pb2.GetAdapterInfoRequest, context: grpc.ServicerContext
    ) -> adapter_pb2.GetAdapterInfoResponse:
        problems = self._publisher.problems
        if problems:
            context.set_trailing_metadata(((PROBLEMS_METADATA_KEY, encode_problems(problems)),))
        return adapter_pb2.GetAdapterInfoResponse(
            name=self._name,
            backend=self._backend,
            source=self._source,
            revision=self._publisher.revision,
        )

    def _refuse_until_published(self, context: grpc.ServicerContext) -> None:
        """An adapter that has not read its source yet has no set to give: an empty one
        would tell the core that every object it holds from this adapter is gone, so a
        restart would delete and re-add them all, notifications included. Refused, the
        core keeps serving what it has and shows the adapter degraded, with the problems
        GetAdapterInfo (always answered) reports."""
        if self._publisher.published:
            return
        problems = "; ".join(self._publisher.problems) or "reading its source"
        _abort(
            context,
            code_pb2.UNAVAILABLE,
            NOT_SYNCED_REASON,
            f"the adapter has not read its source yet ({problems})",
        )

    def ListObjects(
        self, request: adapter_pb2.ListObjectsRequest, context: grpc.ServicerContext
    ) -> adapter_pb2.ListObjectsResponse:
        self._refuse_until_published(context)
        revision, objects = self._publisher.snapshot()
        return adapter_pb2.ListObjectsResponse(revision=revision, objects=objects)

    def WatchObjects(
        self, request: adapter_pb2.WatchObjectsRequest, context: grpc.ServicerContext
    ) -> Iterator[adapter_pb2.WatchObjectsResponse]:
        self._refuse_until_published(context)
        subscription = self._publisher.subscribe(send_initial=request.send_initial_objects)
        # Wakes the blocked handler thread as soon as the client cancels or disconnects.
        if not context.add_callback(subscription.close):
            subscription.close()
            return
        try:
            while True:
                try:
                    event = subscription.next_event(timeout=self._liveness_check_interval)
                except TimeoutError:
                    # Belt and braces: never hold a server thread for a dead RPC, even if
                    # the termination callback were somehow missed.
                    if not context.is_active():
                        return
                    continue
                except SubscriberLaggedError as error:
                    _abort(
                        context,
                        code_pb2.ABORTED,
                        "WATCH_LAGGED",
                        f"{error}; watch again with send_initial_objects to re-sync",
                    )
                    return
                if event is None:
                    break
                yield event
            if context.is_active():  # closed by the publisher, not by the client
                _abort(context, code_pb2.UNAVAILABLE, "ADAPTER_STOPPING", "the adapter is stopping")
        finally:
            subscription.close()


# How long a stopping adapter lets its calls finish (open watches end at once).
SHUTDOWN_GRACE_SECONDS: Final = 2.0


def serve_until_stopped(
    stopping: threading.Event,
    log: Any,
    server: grpc.Server,
    publisher: ObjectSetPublisher,
    stop_source: Callable[[], None],
) -> None:
    """The rest of an adapter process's life: wait for `stopping`, stop following the
    source, end every watch, then the server."""
    wait_for(stopping)
    log.info("adapter_stopping")
    stop_source()
    publisher.close()  # ends open watches now instead of after the grace period
    server.stop(grace=SHUTDOWN_GRACE_SECONDS).wait()
    log.info("adapter_stopped")


def create_adapter_server(
    servicer: AdapterServicer, host: str = "127.0.0.1", port: int = 0, max_workers: int = 16
) -> tuple[grpc.Server, int]:
    """A started server for `servicer` with health (SERVING) and reflection.

    Port 0 picks a free port; the bound port is returned. Every open watch holds one of
    the `max_workers` threads, so size it for the expected watchers plus a few calls.
    """
    server = new_server(max_workers)
    adapter_pb2_grpc.add_AdapterServiceServicer_to_server(servicer, server)
    health = add_health_and_reflection(server, [SERVICE_NAME])
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound_port = int(server.add_insecure_port(address))
    except RuntimeError as error:
        raise OSError(f"cannot listen on {address}: {error}") from error
    if bound_port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    set_serving(health, [SERVICE_NAME], serving=True)
    return server, bound_port
