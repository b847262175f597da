"""The operations endpoint of every process: /healthz (liveness), /readyz (dependencies),
/metrics.

Both health bodies carry `status` (`ok`, `degraded`, `failing`), `timestamp` (RFC 3339,
UTC), `version`, `commit` and `uptime` (seconds since the endpoint was built); /readyz adds
the process's `checks` (one entry per dependency: `ok`, and `reason` when not ok) as its
readiness check computes them. /metrics always carries `process_*`, `o2ims_build_info`,
`o2ims_redis_commands_total` and `o2ims_ready` besides the process's own metrics.

Kubelets and Prometheus reach this port, so it has to keep answering however many sockets are
pointed at it. One asyncio loop on one daemon thread owns every connection: an idle or slow
client costs a file descriptor and a few KiB, never a thread, and every phase of an exchange
has a deadline. The only blocking work (the readiness check, rendering the metrics) runs on a
small thread pool that requests wait for only briefly, so a slow Redis cannot hold /healthz up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import redis
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from netweave.metrics import register_process_metrics
from netweave.version import commit, version

log = structlog.get_logger()

# (ready, body) computed per request. The body's `status` is `ok`, `degraded` (ready, but
# something is wrong: see its checks) or `failing` (not ready); its `checks` name each
# dependency. The endpoint adds the process's identity and uptime.
ReadinessCheck = Callable[[], tuple[bool, dict[str, Any]]]

OK = "ok"
DEGRADED = "degraded"
FAILING = "failing"


def redis_check(client: redis.Redis) -> dict[str, Any]:
    """The `redis` entry of a readiness body: one PING on a short-timeout client."""
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis unreachable: {exc}"
        # `error` is the older name of `reason`, kept for scripts that read it.
        return {"ok": False, "reason": reason, "error": reason}
    return {"ok": True}


def readiness_status(ready: bool, checks: dict[str, Any]) -> str:
    """`failing` when not ready, `degraded` when ready with a check not ok (one level of
    nesting: `checks.adapters.<name>`), else `ok`."""
    if not ready:
        return FAILING
    for check in checks.values():
        if not isinstance(check, dict):
            continue
        if "ok" in check:
            if not check["ok"]:
                return DEGRADED
        elif any(isinstance(sub, dict) and not sub.get("ok", True) for sub in check.values()):
            return DEGRADED
    return OK


def health_identity(started: float, status: str) -> dict[str, Any]:
    """The fields both health bodies begin with; `started` is a time.monotonic() value."""
    return {
        "status": status,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "version": version(),
        "commit": commit(),
        "uptime": round(time.monotonic() - started, 3),
    }


@dataclass(frozen=True)
class OpsLimits:
    """What any one client, and all of them together, may hold of the ops endpoint.

    A connection lives at most `request_timeout_s + send_timeout_s` after it is accepted.
    """

    max_connections: int = 1024
    """Connections open at once. A newcomer at the cap makes the server drop the oldest
    connection that is not running on a worker (so idle sockets cannot lock probes out, and
    file descriptors stay bounded); it must exceed `workers`, so there is always one to drop."""

    max_header_bytes: int = 8192
    """Request line and headers together; a longer head is answered 431."""

    header_timeout_s: float = 5.0
    """From accept to the end of the request head; a client still sending it is disconnected."""

    request_timeout_s: float = 10.0
    """From accept to the response being ready; /readyz or /metrics still running then is
    answered 503 (the worker finishes in the background and only then takes new work)."""

    send_timeout_s: float = 5.0
    """For the response to be flushed and the client to close its side; then it is aborted."""

    workers: int = 2
    """Threads for the readiness check and the metrics rendering, which may block."""

    worker_wait_s: float = 1.0
    """How long /readyz or /metrics waits for a free worker before it is answered 503."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.max_connections <= self.workers:
            raise ValueError("max_connections must exceed workers")
        if self.max_header_bytes < 64:
            raise ValueError("max_header_bytes must be at least 64")
        timeouts = (self.header_timeout_s, self.send_timeout_s, self.worker_wait_s)
        if min(timeouts) <= 0:
            raise ValueError("timeouts must be positive")
        if self.request_timeout_s < self.header_timeout_s:
            raise ValueError("request_timeout_s must be at least header_timeout_s")


DEFAULT_LIMITS = OpsLimits()
_ALLOWED_METHODS = ("GET", "HEAD")
_BUSY = "every ops worker is busy"


class OpsServer:
    """The ops HTTP endpoint on its own thread; it never touches the request path of the API.

    The socket is bound by the constructor (so `port` is known at once, also for port 0);
    `start` serves it, `stop` closes it and every connection.
    """

    def __init__(
        self,
        host: str,
        port: int,
        readiness: ReadinessCheck,
        registry: CollectorRegistry,
        *,
        limits: OpsLimits = DEFAULT_LIMITS,
    ) -> None:
        self._readiness = readiness
        self._registry = registry
        self._limits = limits
        self._started = time.monotonic()
        register_process_metrics(registry, lambda: self._readiness()[0])
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family)
        self._port = int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=limits.workers, thread_name_prefix="ops-worker"
        )
        # Both bind to the loop on first use, on the loop's thread.
        self._free_workers = asyncio.Semaphore(limits.workers)
        self._stopping = asyncio.Event()
        # Insertion order is accept order: the first entries are the oldest connections.
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._thread = threading.Thread(
            target=self._run, name=f"ops-http:{self._port}", daemon=True
        )

    @property
    def port(self) -> int:
        return self._port

    @property
    def open_connections(self) -> int:
        """Connections currently held (read from any thread; a snapshot)."""
        return len(self._connections)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening, drop every open connection and join the server thread."""
        if self._thread.ident is None:  # never started: no loop thread to ask
            self._sock.close()
            self._pool.shutdown(wait=False)
            self._loop.close()
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed already
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout_s)

    # --- the loop thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except Exception:
            log.exception("ops_server_failed", port=self._port)
        finally:
            pending = asyncio.all_tasks(self._loop)
            # Left over only if _serve failed, or a connection ignored the stop for a second.
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.wait(pending))
            self._loop.close()
            # A readiness check still running keeps its thread until it returns; stop does
            # not wait for it.
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _serve(self) -> None:
        server = await asyncio.start_server(
            self._accept,
            sock=self._sock,
            limit=self._limits.max_header_bytes,
            # Handshakes waiting for accept(); the kernel caps it at net.core.somaxconn.
            backlog=self._limits.max_connections,
        )
        await self._stopping.wait()
        server.close()
        for task in list(self._connections):
            self._drop(task)
        # Connections accepted in the last moments see _stopping and close themselves; this
        # also lets the aborted transports release their sockets.
        connection_tasks = asyncio.all_tasks() - {asyncio.current_task()}
        if connection_tasks:
            await asyncio.wait(connection_tasks, timeout=1.0)

    def _drop(self, task: asyncio.Task[None]) -> None:
        connection = self._connections.pop(task)
        connection.dropped = True
        connection.transport.abort()
        task.cancel()

    def _make_room(self) -> bool:
        if len(self._connections) < self._limits.max_connections:
            return True
        # The oldest connection is the likeliest to be a slow or idle client; one whose
        # request is running on a worker is spared, as its thread is already spent.
        victim = next((t for t, c in self._connections.items() if not c.on_worker), None)
        if victim is None:
            return False
        self._drop(victim)
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        transport = writer.transport
        if task is None or self._stopping.is_set() or not self._make_room():
            transport.abort()
            return
        connection = self._connections[task] = _Connection(transport)
        try:
            await self._exchange(reader, writer, connection)
        except asyncio.CancelledError:
            if not connection.dropped:
                raise
            # Dropped by _drop: end normally, as Python 3.11's StreamReaderProtocol reports a
            # cancelled connection task as an error.
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away, or was too slow: nothing to tell it
        except Exception:
            log.exception("ops_request_failed")
        finally:
            self._connections.pop(task, None)
            # Unsent bytes mean a client that does not read: do not wait for it.
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.request_timeout_s
        head_only = False
        try:
            async with asyncio.timeout(self._limits.header_timeout_s):
                request = _parse_head(await _read_head(reader, self._limits.max_header_bytes))
        except _BadHead as exc:
            response = exc.response
        else:
            head_only = request.method == "HEAD"
            response = await self._route(request, connection, deadline)
        async with asyncio.timeout(self._limits.send_timeout_s):
            writer.write(response.encode(head_only=head_only))
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            # Read (and drop) whatever the client still sends until it closes: closing with
            # unread bytes would send a reset that can destroy the response in flight.
            while await reader.read(4096):
                pass

    async def _route(
        self, request: _Request, connection: _Connection, deadline: float
    ) -> _Response:
        if request.method not in _ALLOWED_METHODS:
            body = {"status": "method not allowed", "method": request.method}
            allow = ", ".join(_ALLOWED_METHODS)
            return _json(HTTPStatus.METHOD_NOT_ALLOWED, body, headers=(("Allow", allow),))
        if request.path == "/healthz":
            # On the loop: it waits for nothing, and looks at no dependency.
            return _json(HTTPStatus.OK, {**health_identity(self._started, OK), "checks": {}})
        if request.path == "/readyz":
            return await self._on_worker(self._ready_response, connection, deadline)
        if request.path == "/metrics":
            return await self._on_worker(self._metrics_response, connection, deadline)
        return _json(HTTPStatus.NOT_FOUND, {"status": "not found", "path": request.path})

    async def _on_worker(
        self, work: Callable[[], _Response], connection: _Connection, deadline: float
    ) -> _Response:
        """`work` on the pool: 503 if no worker frees up soon, or if it misses the deadline."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(min(self._limits.worker_wait_s, deadline - loop.time())):
                await self._free_workers.acquire()
        except TimeoutError:
            return _json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "busy", "error": _BUSY})
        # The slot is given back when the thread is done, not when we stop waiting for it, so
        # work abandoned at the deadline still counts and the pool's queue stays empty.
        future = self._pool.submit(work)
        future.add_done_callback(self._free_worker)
        connection.on_worker = True
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            error = f"no answer within {self._limits.request_timeout_s} s"
            return _json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "timeout", "error": error})
        except Exception as exc:
            log.exception("ops_handler_failed")
            body = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            return _json(HTTPStatus.INTERNAL_SERVER_ERROR, body)
        finally:
            connection.on_worker = False

    def _free_worker(self, _future: concurrent.futures.Future[_Response]) -> None:
        # Called on the worker thread; a closed loop means nobody waits for a slot any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._free_workers.release)

    # --- on a worker thread ---------------------------------------------------------

    def _ready_response(self) -> _Response:
        ready, body = self._readiness()
        status = body.get("status") or (OK if ready else FAILING)
        # The check's own fields win: its status, checks and reasons are the news.
        full = {**health_identity(self._started, status), **body}
        return _json(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, full)

    def _metrics_response(self) -> _Response:
        return _Response(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self._registry))


@dataclass(eq=False)
class _Connection:
    transport: asyncio.WriteTransport
    on_worker: bool = False
    dropped: bool = False


# --- a minimal HTTP/1.1 request head -------------------------------------------------

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")


@dataclass(frozen=True)
class _Request:
    method: str
    path: str  # without the query string: it plays no part in routing


@dataclass(frozen=True)
class _Response:
    status: HTTPStatus
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, *, head_only: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            # One request per connection: probes and scrapes reconnect anyway.
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def _json(
    status: HTTPStatus, body: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
) -> _Response:
    return _Response(status, "application/json", json.dumps(body).encode(), headers)


class _BadHead(Exception):
    """A request head we will not serve; `response` says why."""

    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.response = _json(status, {"status": status.phrase.lower()})


async def _read_head(reader: asyncio.StreamReader, max_bytes: int) -> list[bytes]:
    """The request line and header lines, without line ends; raises _BadHead (431)."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:  # one line longer than the reader's limit
            raise _BadHead(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from exc
        size += len(line)
        if size > max_bytes:
            raise _BadHead(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        line = line.rstrip(b"\r\n")
        if line:
            lines.append(line)
        elif lines:
            return lines
        # Blank lines before the request line are ignored (RFC 9112, section 2.2).


def _parse_head(lines: list[bytes]) -> _Request:
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not all(_is_header_field(line) for line in lines[1:]):
        raise _BadHead(HTTPStatus.BAD_REQUEST)
    method, target, version = parts
    if not (_TOKEN.fullmatch(method) and target.startswith(b"/") and _VERSION.fullmatch(version)):
        raise _BadHead(HTTPStatus.BAD_REQUEST)
    path = target.split(b"?", 1)[0].decode("latin-1")
    return _Request(method.decode("ascii"), path)


def _is_header_field(line: bytes) -> bool:
    name, colon, _value = line.partition(b":")
    return bool(colon) and _TOKEN.fullmatch(name) is not None
