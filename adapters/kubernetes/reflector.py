"""List and watch the cluster's nodes as Kubernetes controllers do (client-go's reflector).

- List in pages (`limit`, `continue`), then watch from the list's resourceVersion with
  bookmarks and a jittered server-side timeout, keeping the resourceVersion of every
  event (bookmarks included), so a re-watch resumes exactly where the last one stopped.
- A watch that ends (server timeout) is re-opened at once; one that is cut, or cannot
  be opened, is re-opened from the last resourceVersion after a jittered backoff
  (netweave.backoff).
- 410 Gone (an ERROR event, or a list/continue refused) means the history is gone:
  list again, and the sink reconciles the full list against what it has.
- 401/403 and an unusable configuration are retried slowly (`auth_retry_interval`),
  re-reading the kubeconfig each time so a rotated credential is picked up.
- Every problem goes to `report_problem` (the publisher's source problem: the core's
  /readyz shows it), "" once a request succeeds again; each transition is logged once.

Responses are parsed from raw JSON (`_preload_content=False`, the watch read line by
line as chunks arrive): the client's model deserialization is far too slow for
thousands of nodes.
"""

from __future__ import annotations

import gc
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import structlog
import urllib3
from kubernetes.client.exceptions import ApiException

from adapters.kubernetes.cluster import (
    REQUEST_TIMEOUT,
    Connection,
    KubeConfigError,
    cluster_uid_and_version,
    get,
    read_json,
)
from netweave.backoff import Backoff

DEFAULT_PAGE_SIZE: Final = 500
DEFAULT_WATCH_TIMEOUT: Final = (300.0, 600.0)  # seconds, drawn at random per watch
DEFAULT_AUTH_RETRY_INTERVAL: Final = 30.0
# A watch is given up as dead after this much silence beyond its server-side timeout.
WATCH_READ_MARGIN: Final = 30.0
LIST_READ_TIMEOUT: Final = 60.0
NODES_PATH: Final = "/api/v1/nodes"
_CHUNK: Final = 64 * 1024


class NodeSink(Protocol):
    """Where the reflector delivers what it reads, in order, from one thread."""

    def listed(
        self, connection: Connection, uid: str, version: str, nodes: list[dict[str, Any]]
    ) -> None:
        """The complete set of nodes at one resourceVersion."""

    def identified(self, connection: Connection, uid: str, version: str) -> None:
        """The same cluster, read again after a failure (its version may have changed)."""

    def event(self, kind: str, node: dict[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED or DELETED."""


class _Expired(Exception):
    """The watch's resourceVersion is too old: list again."""


class _StreamCut(Exception):
    def __init__(self, resource_version: str, progressed: bool, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.resource_version = resource_version
        self.progressed = progressed


class _StatusError(Exception):
    """A watch ERROR event other than 410."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.status = code


class _GcPause:
    """The cyclic garbage collector off while any thread is inside; back on (if it was)
    when the last one leaves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._was_enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._inside == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0 and self._was_enabled:
                    gc.enable()


# For parsing a node list and building its objects: millions of containers, none in a
# cycle, that every automatic full collection would traverse (a third of a second for a
# list of 5,000 nodes). Reference counting frees them all the same.
paused_gc: Final = _GcPause()


def watch_lines(response: Any) -> Iterator[bytes]:
    """The lines of a streamed response as they arrive (a line may span many chunks)."""
    if response.chunked and response.supports_chunked_reads():
        chunks: Iterator[bytes] = response.read_chunked(decode_content=True)
    else:
        chunks = iter(lambda: bytes(response.read1(_CHUNK)), b"")
    partial: list[bytes] = []
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if start < len(chunk):
                    partial.append(chunk[start:])
                break
            if partial:
                partial.append(chunk[start:end])
                line = b"".join(partial)
                partial = []
            else:
                line = chunk[start:end]
            if line.strip():
                yield line
            start = end + 1
    rest = b"".join(partial)
    if rest.strip():
        yield rest


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}".strip()
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        return str(error.reason)
    return str(error) or type(error).__name__


@dataclass
class _Position:
    """Where the reflector stands: its client, the resourceVersion to resume from, and
    whether the next pass must list again or re-read the cluster's identity."""

    connection: Connection | None = None
    resource_version: str = ""
    relist: bool = True
    identify: bool = False


class NodeReflector:
    """Follows the nodes of one cluster in a background thread (start/stop)."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        sink: NodeSink,
        report_problem: Callable[[str], None],
        logger: structlog.stdlib.BoundLogger | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        watch_timeout: tuple[float, float] = DEFAULT_WATCH_TIMEOUT,
        auth_retry_interval: float = DEFAULT_AUTH_RETRY_INTERVAL,
        backoff: Backoff | None = None,
        on_request_duration: Callable[[float], None] | None = None,
    ) -> None:
        # Seconds each list page and each watch connect took (answered or failed):
        # o2ims_adapter_backend_request_duration_seconds.
        self._on_request_duration = on_request_duration
        self._connect = connect
        self._sink = sink
        self._report_problem = report_problem
        self._log: structlog.stdlib.BoundLogger = logger or structlog.get_logger()
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._auth_retry_interval = auth_retry_interval
        self._backoff = backoff or Backoff(initial=0.2, maximum=10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response_lock = threading.Lock()
        self._response: Any = None
        self._state = "starting"
        self._failing_since: datetime | None = None
        self._cluster_uid = ""

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="node-reflector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._response_lock:
            response = self._response
        if response is not None:
            # Wakes the thread blocked reading the watch (urllib3 >= 2.3).
            shutdown = getattr(response, "shutdown", None)
            try:
                (shutdown or response.close)()
            except Exception:  # a response being torn down may complain; it is gone either way
                self._log.debug("watch_shutdown_failed", exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # --- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        position = _Position()
        while not self._stop.is_set():
            try:
                self._follow(position)
                delay = 0.0
            except Exception as error:  # every failure is reported and retried, never fatal
                delay = self._failed(error, position)
            if delay:
                self._stop.wait(delay)

    def _follow(self, position: _Position) -> None:
        """One pass: (re)connect, list or re-identify when needed, then one watch."""
        if position.connection is None:
            position.connection = self._connect()
        api = position.connection.api
        if position.relist:
            if self._cluster_uid:
                self._set_state("relisting", "relisting nodes: the watch history expired")
            self._relist(position, position.connection)
        elif position.identify:
            # After a failure: the API server may have been upgraded, or be another cluster.
            uid, version = cluster_uid_and_version(api)
            if uid != self._cluster_uid:
                self._log.warning("cluster_identity_changed", old=self._cluster_uid, new=uid)
                position.relist = True
                return
            self._sink.identified(position.connection, uid, version)
            position.identify = False
        position.resource_version = self._watch(api, position.resource_version)

    def _relist(self, position: _Position, connection: Connection) -> None:
        """List every node and hand the list to the sink. A method of its own so that
        the parsed list is released before the watch (which runs for minutes) begins."""
        uid, version = cluster_uid_and_version(connection.api)
        with paused_gc():
            nodes, position.resource_version = self._list(connection.api)
            self._sink.listed(connection, uid, version, nodes)
        self._cluster_uid = uid
        position.relist = position.identify = False
        self._healthy(nodes=len(nodes), resource_version=position.resource_version)
        self._backoff.reset()

    def _failed(self, error: Exception, position: _Position) -> float:
        """Report `error`, set what the next pass must redo; the delay before it."""
        if isinstance(error, _Expired):
            self._log.info("watch_expired", reason=str(error))
            position.relist = True
            return 0.0
        if isinstance(error, _StreamCut):
            position.resource_version = error.resource_version
            if error.progressed:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            self._log.info("watch_cut", error=str(error), retry_in=round(delay, 3))
            return delay
        position.identify = True
        if isinstance(error, KubeConfigError):
            position.connection = None
            delay = self._auth_retry_interval
            self._set_state("configuration", f"{error}; retrying every {delay:g} s")
            return delay
        status = int(error.status or 0) if isinstance(error, ApiException | _StatusError) else 0
        if status == 410:  # a list's continue token expired
            position.relist = True
            return self._backoff.next_delay()
        if status in (401, 403):
            position.connection = None  # re-read the kubeconfig: the credential may be rotated
            delay = self._auth_retry_interval
            self._set_state(
                "credentials",
                f"the Kubernetes API rejected the adapter's credentials "
                f"({_describe(error)}); retrying every {delay:g} s",
            )
            return delay
        if status:
            self._set_state("http-error", f"the Kubernetes API answered {_describe(error)}")
            return self._backoff.next_delay()
        if not isinstance(
            error, urllib3.exceptions.HTTPError | OSError | ValueError | ApiException
        ):
            self._log.exception("reflector_failed")  # unexpected: keep the traceback
        return self._unreachable(error, position.connection)

    def _unreachable(self, error: BaseException, connection: Connection | None) -> float:
        delay = self._backoff.next_delay()
        since = self._failing_since or datetime.now(UTC)
        where = connection.api_url if connection is not None else "the Kubernetes API"
        self._set_state(
            "unreachable",
            f"{where} unreachable since {since.isoformat(timespec='seconds')}: "
            f"{_describe(error)}; serving the last inventory",
        )
        return delay

    def _set_state(self, state: str, problem: str) -> None:
        if self._failing_since is None:
            self._failing_since = datetime.now(UTC)
        self._report_problem(problem)
        if state != self._state:
            self._log.warning("kubernetes_source_problem", state=state, problem=problem)
            self._state = state

    def _healthy(self, **details: Any) -> None:
        if self._state != "ok":
            self._log.info("kubernetes_source_ok", previous=self._state, **details)
            self._state = "ok"
            self._report_problem("")
        self._failing_since = None

    # --- requests ------------------------------------------------------------------------

    def _list(self, api: Any) -> tuple[list[dict[str, Any]], str]:
        """Every node, in pages of one consistent snapshot, and its resourceVersion."""
        nodes: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [] if token is None else [("continue", token)]
            query.append(("limit", self._page_size))
            body = read_json(
                self._timed(
                    get, api, NODES_PATH, query, timeout=(REQUEST_TIMEOUT[0], LIST_READ_TIMEOUT)
                )
            )
            nodes.extend(body.get("items") or ())
            metadata = body.get("metadata") or {}
            token = metadata.get("continue") or None
            if token is None:
                return nodes, str(metadata.get("resourceVersion") or "")
            if self._stop.is_set():
                raise _StreamCut("", False, RuntimeError("stopping"))

    def _timed(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`call(*args, **kwargs)`, its duration reported (to the response's headers: a
        watch's stream is not the request's latency)."""
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            if self._on_request_duration is not None:
                self._on_request_duration(time.perf_counter() - started)

    def _watch(self, api: Any, resource_version: str) -> str:
        """Follow one watch until it ends; the resourceVersion to resume from."""
        timeout = random.uniform(*self._watch_timeout)
        response: Any = self._timed(
            get,
            api,
            NODES_PATH,
            [
                ("allowWatchBookmarks", True),
                ("resourceVersion", resource_version),
                ("timeoutSeconds", max(1, int(timeout))),
                ("watch", True),
            ],
            timeout=(REQUEST_TIMEOUT[0], timeout + WATCH_READ_MARGIN),
        )
        with self._response_lock:
            self._response = response
        self._healthy()
        progressed = False
        try:
            for line in watch_lines(response):
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    if code == 410:
                        raise _Expired(str(obj.get("message") or "410 Gone"))
                    raise _StatusError(code, str(obj.get("message") or obj))
                latest = (obj.get("metadata") or {}).get("resourceVersion")
                if latest:
                    resource_version = str(latest)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._sink.event(kind, obj)
                progressed = True
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            if self._stop.is_set():
                return resource_version
            raise _StreamCut(resource_version, progressed, error) from error
        finally:
            with self._response_lock:
                self._response = None
            response.close()  # a watch's connection is not worth reusing: one per watch
        return resource_version
