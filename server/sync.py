"""Mirror the adapters' objects into the Redis store, and the store into the cache.

- One AdapterWatcher thread per adapter holds a WatchObjects stream. Each (re)connect
  replays the adapter's whole set, so the watcher always knows the adapter's current
  objects (its desired state) and reconnects never need a separate List. From an
  adapter that commits its change sets (its SYNCED says so), the watcher holds each
  set's events until the set's COMMIT and hands the set over whole; a stream that
  breaks before the COMMIT leaves nothing of the set (the reconnect's replay brings
  it). Other adapters' events are handed over one by one, as they come.
- One StoreWriter thread owns every write. It applies a change set as one store
  operation, so its objects and events appear together or not at all; when Redis
  fails it keeps nothing half-done but remembers that the store may lag, and on
  recovery reconciles every adapter's desired state against what Redis holds. The
  store's compare-and-write script makes that idempotent: an outage loses nothing
  and duplicates nothing.
- One EventTailer thread follows inventory:events into the cache (reloading the
  whole snapshot after a gap or a Redis reconnect).
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis
import structlog
from o2ims.adapter.v1 import adapter_pb2, adapter_pb2_grpc

from adapters.contract import KINDS, ObjectKey, object_key, serialize
from adapters.publisher import NOT_SYNCED_REASON, PROBLEMS_METADATA_KEY, decode_problems
from netweave.backoff import Backoff
from netweave.errors import error_reason
from netweave.grpc_server import CLIENT_OPTIONS
from server.cache import InventoryCache
from server.store import Change, InventoryStore

log = structlog.get_logger()


def _children_first(key: ObjectKey) -> tuple[int, str]:
    return -KINDS.index(key[0]) if key[0] in KINDS else 0, key[1]


@dataclass
class _Snapshot:
    adapter: str
    objects: dict[ObjectKey, bytes]


@dataclass
class _ChangeSet:
    adapter: str
    changes: list[Change]
    # Applied as one store operation; a lone event from an adapter that does not
    # commit its change sets is not, and is batched with its neighbours instead.
    atomic: bool


@dataclass
class WriterStatus:
    redis_ok: bool = False
    last_error: str = ""
    # Redis holds every configured adapter's current state (each written since this process
    # started, none waiting to be written again): before that, an object missing from the
    # store may only not be written yet (a restored or flushed Redis).
    complete: bool = False


# How often an idle writer asks which Redis server answers (StoreWriter._check_server).
SERVER_CHECK_INTERVAL_S = 1.0


class StoreWriter(threading.Thread):
    """The single writer of the inventory snapshot."""

    def __init__(
        self, store: InventoryStore, stop: threading.Event, expected_adapters: int | None = None
    ) -> None:
        super().__init__(name="store-writer", daemon=True)
        self._store = store
        self._stopping = stop
        # How many adapters are configured. Once that many have each delivered a snapshot
        # (so every configured adapter's name is known), objects owned by any other name
        # belong to an adapter removed from the configuration and are deleted. None: never.
        self._expected_adapters = expected_adapters
        self._orphans_checked = expected_adapters is None
        self._queue: queue.Queue[_Snapshot | _ChangeSet] = queue.Queue()
        # adapter -> key -> canonical bytes: what each adapter currently serves.
        self._desired: dict[str, dict[ObjectKey, bytes]] = {}
        # Adapters whose desired state Redis may not reflect yet.
        self._unreconciled: set[str] = set()
        self._backoff = Backoff()
        self.status = WriterStatus()
        # The Redis server last written to (InventoryStore.server_identity), checked while
        # idle: another one (restarted, or promoted by Sentinel) may lack what we wrote.
        self._server = ""
        self._server_checked = 0.0

    def submit_snapshot(self, adapter: str, objects: dict[ObjectKey, bytes]) -> None:
        self._queue.put(_Snapshot(adapter, objects))

    def submit_event(self, adapter: str, key: ObjectKey, payload: bytes | None) -> None:
        """One change that stands alone (from an adapter that does not commit sets)."""
        self._queue.put(_ChangeSet(adapter, [Change(key[0], key[1], payload)], atomic=False))

    def submit_change_set(self, adapter: str, changes: list[Change]) -> None:
        """A committed change set, to apply in order as one store operation."""
        self._queue.put(_ChangeSet(adapter, changes, atomic=True))

    def run(self) -> None:
        while not self._stopping.is_set():
            items = self._drain(timeout=0.2)
            change_sets: dict[str, list[_ChangeSet]] = {}
            for item in items:
                if isinstance(item, _Snapshot):
                    self._desired[item.adapter] = item.objects
                    self._unreconciled.add(item.adapter)
                    change_sets.pop(item.adapter, None)  # the snapshot supersedes them
                    continue
                desired = self._desired.setdefault(item.adapter, {})
                for change in item.changes:
                    if change.payload is None:
                        desired.pop((change.kind, change.object_id), None)
                    else:
                        desired[(change.kind, change.object_id)] = change.payload
                queued = change_sets.setdefault(item.adapter, [])
                if queued and not item.atomic and not queued[-1].atomic:
                    queued[-1].changes.extend(item.changes)
                else:
                    queued.append(item)
            try:
                if not items or not self._server:
                    self._check_server()
                self._write(change_sets)
                self._mark(ok=True)
            except redis.RedisError as exc:
                # Everything not confirmed is recovered from the desired state.
                self._unreconciled.update(self._desired)
                self.status.complete = False
                self._mark(ok=False, error=exc)
                self._stopping.wait(self._backoff.next_delay())
            finally:
                for _ in items:
                    self._queue.task_done()

    def _check_server(self) -> None:
        """While idle, at most every SERVER_CHECK_INTERVAL_S: if another Redis server now
        answers than the one written to, reconcile every adapter's state into it. A write
        confirmed by a primary that died before replicating it is otherwise lost until
        the object changes again: no command of ours fails on an idle connection."""
        now = time.monotonic()
        if now - self._server_checked < SERVER_CHECK_INTERVAL_S:
            return
        self._server_checked = now
        server = self._store.server_identity()
        if self._server and server != self._server:
            log.warning("redis_server_changed", previous=self._server, current=server)
            self._unreconciled.update(self._desired)
        self._server = server

    def _drain(self, timeout: float) -> list[_Snapshot | _ChangeSet]:
        items: list[_Snapshot | _ChangeSet] = []
        try:
            items.append(self._queue.get(timeout=timeout))
            while len(items) < 2000:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return items

    def _write(self, change_sets: dict[str, list[_ChangeSet]]) -> None:
        for adapter in sorted(self._unreconciled):
            self._reconcile(adapter)
            self._unreconciled.discard(adapter)
            change_sets.pop(adapter, None)
        for adapter, queued in change_sets.items():
            for change_set in queued:
                if change_set.atomic:
                    self._store.apply(adapter, change_set.changes, chunk=None)
                else:
                    self._store.apply(adapter, change_set.changes)
        every_adapter = len(self._desired) >= (self._expected_adapters or 0)
        if not self._orphans_checked and every_adapter:
            self._remove_orphans()
        self.status.complete = every_adapter and not self._unreconciled
        if not self.status.redis_ok:
            self._store.ping()  # prove recovery before reporting it

    def _remove_orphans(self) -> None:
        """Delete what adapters no longer configured left in the store (each deletion is an
        event, so subscribers hear of it). Runs once per process, when every configured
        adapter has synced: an adapter that is merely away keeps its objects served."""
        for owner, keys in sorted(self._store.owners().items()):
            if owner in self._desired:
                continue
            removed = self._store.apply(
                owner, [Change(kind, oid, None) for kind, oid in sorted(keys, key=_children_first)]
            )
            log.warning("adapter_removed", adapter=owner, objects=len(keys), deleted=removed)
        self._orphans_checked = True

    def _reconcile(self, adapter: str) -> None:
        desired = self._desired.get(adapter, {})
        owned = self._store.owned_by(adapter)
        stored = self._store.read_objects(desired.keys())
        changes = [
            Change(kind, object_id, payload)
            for (kind, object_id), payload in desired.items()
            if stored.get((kind, object_id)) != payload
        ]
        changes += [Change(kind, oid, None) for kind, oid in sorted(owned - desired.keys())]
        # Objects that are unchanged but not yet recorded as ours (first sync after
        # another adapter owned them) only need their owner set; apply() does that.
        changes += [
            Change(kind, oid, desired[(kind, oid)])
            for kind, oid in desired.keys() - owned
            if stored.get((kind, oid)) == desired[(kind, oid)]
        ]
        applied = self._store.apply(adapter, changes)
        log.info("adapter_reconciled", adapter=adapter, objects=len(desired), changed=applied)

    def _mark(self, ok: bool, error: Exception | None = None) -> None:
        if ok and not self.status.redis_ok:
            log.info("redis_writes_resumed")
            self._backoff.reset()
        if not ok and self.status.redis_ok:
            log.error("redis_write_failed", error=str(error))
        self.status.redis_ok = ok
        self.status.last_error = "" if ok else str(error)


# This many watches in a row that reach the adapter but fail before (re)syncing make a
# stuck stream: something in the adapter's set breaks every replay (an object over the
# message limit, one the core cannot apply), so waiting will not fix it.
STUCK_AFTER_FAILURES = 3
# How soon a watcher asks again an adapter that refused because it has not read its source.
NOT_SYNCED_RETRY_S = 0.25
# How often a connected watcher asks the adapter for its problems (GetAdapterInfo).
DEFAULT_PROBE_INTERVAL = 2.0
# The most a watcher holds of one change set before its COMMIT. A larger set is
# treated as a broken stream: dropped, and brought by the reconnect's replay instead
# (one store operation per set also holds Redis for as long as it runs).
DEFAULT_MAX_CHANGE_SET_OBJECTS = 10_000
DEFAULT_MAX_CHANGE_SET_BYTES = 64 * 1024 * 1024


@dataclass
class WatcherStatus:
    address: str
    name: str = ""
    connected: bool = False
    synced_once: bool = False
    last_error: str = ""
    objects: int = 0
    # What the adapter says it refuses to serve, and why (its GetAdapterInfo trailer).
    problems: tuple[str, ...] = ()
    # Watches in a row that reached the adapter and failed without syncing again.
    failures: int = 0
    # The last object received before the stream last failed, "kind 'id'".
    failed_after: str = ""
    # When (time.monotonic()) the watch stream last told us the adapter's set is current:
    # its SYNCED, a change after it, or a probe answered while the synced stream is open.
    # o2ims_adapter_sync_lag_seconds is the time since; it starts counting at start-up.
    current_at: float = field(default_factory=time.monotonic)

    def heard_current(self) -> None:
        self.current_at = time.monotonic()

    def sync_lag(self) -> float:
        """Seconds since the adapter was last known current (0 right after)."""
        return max(0.0, time.monotonic() - self.current_at)

    @property
    def stuck(self) -> bool:
        return self.failures >= STUCK_AFTER_FAILURES

    def reasons(self) -> list[str]:
        """Why this adapter's objects may not be current, for /readyz; [] when they are."""
        label = self.name or self.address
        reasons = [f"adapter {label}: {problem}" for problem in self.problems]
        if self.stuck:
            after = f", after {self.failed_after}" if self.failed_after else ""
            reasons.append(
                f"adapter {label}: watch stream stuck, failed {self.failures} times in a row "
                f"({self.last_error}{after}); serving its last synced objects"
            )
        elif not self.connected:
            reasons.append(f"adapter {label}: disconnected ({self.last_error or 'connecting'})")
        return reasons


class _StreamEnded(Exception):
    """The adapter closed the stream without an error status."""


class _ChangeSetTooLarge(Exception):
    """A change set outgrew the watcher's buffer before its COMMIT."""


class _ChangeSetBuffer:
    """The events of the change set being received, held until its COMMIT."""

    def __init__(self, max_objects: int, max_bytes: int) -> None:
        self._max_objects = max_objects
        self._max_bytes = max_bytes
        self.changes: list[Change] = []
        self.size = 0

    def add(self, change: Change, size: int) -> None:
        self.changes.append(change)
        self.size += size
        if len(self.changes) > self._max_objects or self.size > self._max_bytes:
            raise _ChangeSetTooLarge(
                f"a change set outgrew the core's limit of {self._max_objects} objects or "
                f"{self._max_bytes} bytes ({len(self.changes)} objects, {self.size} bytes "
                "before its COMMIT); dropped it to re-sync from the replay"
            )

    def take(self) -> list[Change]:
        changes, self.changes, self.size = self.changes, [], 0
        return changes


class AdapterWatcher(threading.Thread):
    """Follows one adapter's WatchObjects stream, reconnecting forever with backoff."""

    def __init__(
        self,
        address: str,
        writer: StoreWriter,
        stop: threading.Event,
        *,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        max_change_set_objects: int = DEFAULT_MAX_CHANGE_SET_OBJECTS,
        max_change_set_bytes: int = DEFAULT_MAX_CHANGE_SET_BYTES,
    ) -> None:
        super().__init__(name=f"adapter-watch-{address}", daemon=True)
        self._address = address
        self._probe_interval = probe_interval
        self._max_change_set_objects = max_change_set_objects
        self._max_change_set_bytes = max_change_set_bytes
        self._reached = False
        self._writer = writer
        self._stopping = stop
        self._call: Any = None
        self._backoff = Backoff(initial=0.2, maximum=5.0)
        self.status = WatcherStatus(address=address)

    def cancel(self) -> None:
        call = self._call
        if call is not None:
            call.cancel()

    def run(self) -> None:
        while not self._stopping.is_set():
            self._reached = False
            delay: float | None = None
            try:
                with grpc.insecure_channel(self._address, options=CLIENT_OPTIONS) as channel:
                    self._follow(adapter_pb2_grpc.AdapterServiceStub(channel))
            except grpc.RpcError as exc:
                if self._stopping.is_set():
                    return
                code = exc.code() if isinstance(exc, grpc.Call) else None
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                # Not synced yet: the adapter is waiting for its source, nothing is wrong
                # with the stream (and its problems say why it waits).
                waiting = error_reason(exc) == NOT_SYNCED_REASON
                self._disconnected(f"{code.name if code else 'ERROR'}: {details}", waiting)
                if waiting:
                    # Up and about to publish: ask again soon (a call it answers at once)
                    # rather than let the backoff grow and serve its set seconds late.
                    delay = NOT_SYNCED_RETRY_S
            except (_StreamEnded, _ChangeSetTooLarge) as exc:
                self._disconnected(str(exc))
            except Exception as exc:  # keep the thread alive whatever the adapter sends
                log.exception("adapter_watch_crashed", adapter=self.status.name)
                self._disconnected(repr(exc))
            self._stopping.wait(self._backoff.next_delay() if delay is None else delay)

    def _disconnected(self, error: str, waiting: bool = False) -> None:
        if self.status.connected:
            log.warning("adapter_disconnected", adapter=self.status.name, error=error)
        self.status.connected = False
        self.status.last_error = error
        if self._reached and not waiting:
            self.status.failures += 1
            if self.status.failures == STUCK_AFTER_FAILURES:
                log.error(
                    "adapter_stream_stuck",
                    adapter=self.status.name,
                    failures=self.status.failures,
                    error=error,
                    failed_after=self.status.failed_after,
                )

    def _read_problems(self, stub: adapter_pb2_grpc.AdapterServiceStub) -> str:
        """Ask the adapter who it is and what it refuses; returns its name."""
        info, call = stub.GetAdapterInfo.with_call(adapter_pb2.GetAdapterInfoRequest(), timeout=5)
        problems: tuple[str, ...] = ()
        for key, value in call.trailing_metadata() or ():
            if key == PROBLEMS_METADATA_KEY:
                problems = tuple(decode_problems(value))
        if problems != self.status.problems:
            log.warning("adapter_problems", adapter=info.name, problems=list(problems))
        self.status.problems = problems
        return str(info.name)

    def _probe(self, stub: adapter_pb2_grpc.AdapterServiceStub, done: threading.Event) -> None:
        """Keep status.problems current while a watch is open: problems that change
        nothing in the object set (an invalid file kept at its last good state) send no
        event down the stream."""
        while not done.wait(self._probe_interval):
            # An adapter that went away is reported by the watch itself.
            with contextlib.suppress(grpc.RpcError):
                self._read_problems(stub)
                if self.status.connected:  # synced, and the stream is still open
                    self.status.heard_current()

    def _follow(self, stub: adapter_pb2_grpc.AdapterServiceStub) -> None:
        name = self._read_problems(stub) or self._address
        self._reached = True
        self.status.name = name
        call = stub.WatchObjects(adapter_pb2.WatchObjectsRequest(send_initial_objects=True))
        self._call = call
        done = threading.Event()
        prober = threading.Thread(
            target=self._probe, args=(stub, done), name=f"adapter-probe-{name}", daemon=True
        )
        prober.start()
        try:
            self._consume(name, call)
        finally:
            done.set()

    def _consume(self, name: str, call: Any) -> None:
        change_set = _ChangeSetBuffer(self._max_change_set_objects, self._max_change_set_bytes)
        try:
            self._consume_into(name, call, change_set)
        finally:
            # Whatever ended the stream, a set without its COMMIT is not applied: the
            # next watch's replay reconciles the store with the adapter's whole set.
            if change_set.changes:
                log.warning(
                    "adapter_change_set_discarded",
                    adapter=name,
                    objects=len(change_set.changes),
                    bytes=change_set.size,
                )

    def _consume_into(self, name: str, call: Any, change_set: _ChangeSetBuffer) -> None:
        initial: dict[ObjectKey, bytes] | None = {}
        commits = False
        for event in call:
            if initial is None:
                self.status.heard_current()
            if event.type == adapter_pb2.EVENT_TYPE_COMMIT:
                if commits and initial is None and change_set.changes:
                    self._writer.submit_change_set(name, change_set.take())
                continue
            if event.type == adapter_pb2.EVENT_TYPE_SYNCED and initial is not None:
                commits = event.commits_change_sets
                self._writer.submit_snapshot(name, initial)
                self.status.objects = len(initial)
                initial = None
                self.status.connected = True
                self.status.synced_once = True
                self.status.heard_current()
                self.status.last_error = ""
                self.status.failures = 0
                self.status.failed_after = ""
                self._backoff.reset()
                log.info(
                    "adapter_synced",
                    adapter=name,
                    objects=self.status.objects,
                    commits_change_sets=commits,
                )
                continue
            if not event.HasField("object"):
                continue
            key, payload = object_key(event.object), serialize(event.object)
            self.status.failed_after = f"{key[0]} '{key[1]}'"
            deleted = event.type == adapter_pb2.EVENT_TYPE_DELETED
            if initial is not None:
                if not deleted:
                    initial[key] = payload
                continue
            if commits:
                change_set.add(Change(key[0], key[1], None if deleted else payload), len(payload))
            else:
                self._writer.submit_event(name, key, None if deleted else payload)
        raise _StreamEnded("the adapter ended the watch stream")


@dataclass
class TailerStatus:
    redis_ok: bool = False
    last_error: str = ""


class EventTailer(threading.Thread):
    """Keeps the cache equal to the store: snapshot once, then follow the event stream."""

    def __init__(self, store: InventoryStore, cache: InventoryCache, stop: threading.Event) -> None:
        super().__init__(name="event-tailer", daemon=True)
        self._store = store
        self._cache = cache
        self._stopping = stop
        self._backoff = Backoff()
        self._needs_reload = True
        self.status = TailerStatus()

    def run(self) -> None:
        while not self._stopping.is_set():
            self._reached = False
            try:
                if self._needs_reload:
                    self._reload()
                events = self._store.read_events(self._cache.last_event_id, block_ms=500)
                if not self.status.redis_ok:
                    log.info("redis_reads_resumed")
                self.status.redis_ok = True
                self.status.last_error = ""
                self._backoff.reset()
                for event in events:
                    if not self._cache.apply(event):
                        log.warning("inventory_event_gap", inventory_version=event.version)
                        self._needs_reload = True
                        break
            except redis.RedisError as exc:
                if self.status.redis_ok:
                    log.error("redis_read_failed", error=str(exc))
                self.status.redis_ok = False
                self.status.last_error = str(exc)
                # Redis may come back empty or from a backup: trust nothing we tailed.
                self._needs_reload = True
                self._stopping.wait(self._backoff.next_delay())

    def _reload(self) -> None:
        snapshot = self._store.snapshot()
        self._cache.load(snapshot)
        # What is alive now (the inventory just loaded, the modules, gRPC's objects) is out
        # of the cyclic collector's reach from here on: a full collection walked all of it
        # (~25 ms at 100,000 resources, a pause for every call in flight). Refcounting still
        # frees what a later load drops; only a cycle among these objects would stay.
        gc.freeze()
        self._needs_reload = False
        log.info("inventory_loaded", inventory_version=snapshot.version, **self._cache.counts())
