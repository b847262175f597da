"""A small Kubernetes API server simulator for Nodes, speaking the real JSON wire protocol.

No kube-apiserver can run on a developer machine or in CI here, so this serves what a
node-watching client (the official `kubernetes` Python client, our adapter) uses, over
HTTPS with its own CA and bearer tokens, with the shapes and status codes of a real server.

Reproduced:
- `GET /version`, `GET /api`, `GET /api/v1` (discovery, nodes and namespaces only),
  `GET /api/v1/namespaces/kube-system` (metadata.uid is the cluster identity; other
  namespaces 404), `GET /api/v1/nodes/{name}`, `GET /api/v1/nodes`.
- A cluster-wide integer resourceVersion bumped on every change (like the etcd revision);
  a no-op update does not bump it.
- Lists: `limit`/`continue` paging from one consistent snapshot (every page of a list has
  the list's RV: pages are rebuilt from the event history when not cached), opaque
  continue tokens in the real form, `remainingItemCount` (only without selectors, as the
  real server), `resourceVersion` ("0", absent or N: served at the latest RV, i.e.
  NotOlderThan semantics; `resourceVersionMatch=Exact` serves the snapshot at N),
  410 Expired for a continue token older than the last compaction.
- `labelSelector` (=, ==, !=, in, notin, exists, !exists) and `fieldSelector`
  (metadata.name, spec.unschedulable; other fields 400) on lists and watches; a watched
  object that stops/starts matching is sent as DELETED/ADDED, as the watch cache does.
- Watches: HTTP/1.1 200 chunked, one JSON WatchEvent per line; replay of the history
  after the given RV, then live events; no RV or RV "0" first sends a synthetic ADDED for
  every current node; BOOKMARK events every `bookmark_interval` s when
  allowWatchBookmarks; an RV older than the history window gets one ERROR event with a
  410 Expired Status "too old resource version: X (Y)" and the stream ends;
  timeoutSeconds ends the stream cleanly (default 1800 s); a watcher that falls more
  than max(history_limit, 100000) events behind is ended cleanly, as the cacher does.
- Statuses: 401 Unauthorized (unknown/expired token), 403 Forbidden with the real RBAC
  message form (forbidden token; no token = system:anonymous, allowed /version only),
  404 NotFound, 405 MethodNotAllowed (every write: this server is read-only over HTTP;
  tests change state through the Python API), 400 BadRequest for bad parameters.
- Faults: `compact()`, `cut_watches()` (connections dropped without the terminating
  chunk), `stop()`/`restart()` on the same port with the same state, token states.

Not reproduced: protobuf or YAML content types, Table output, gzip, HTTP/2, writes over
HTTP (create/update/patch/delete, server-side apply, field managers beyond what objects
carry), other resources, namespaces other than kube-system, watch-cache consistent reads
and the "Too large resource version" wait, sendInitialEvents/WatchList, limit being
ignored for RV=0 lists by older servers, priority & fairness, audit, admission, client
certificates, the deprecated /api/v1/watch/ paths, `resourceVersionMatch=NotOlderThan`
waits, graceful termination of watches on shutdown (stop() drops them abruptly).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import collections
import contextlib
import copy
import hashlib
import json
import logging
import math
import re
import socket
import socketserver
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import yaml

from devstack.kubesim.nodes import rfc3339
from devstack.kubesim.selectors import SelectorError, combine, field_selector, label_selector
from devstack.kubesim.tls import ensure_pki
from devstack.processes import free_port

_log = logging.getLogger("devstack.kubesim")

TokenState = Literal["valid", "expired", "forbidden"]

DEFAULT_WATCH_TIMEOUT = 1800.0
_CONTINUE_EXPIRED_MESSAGE = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token in "
    "this response to retrieve the remainder of the results. Continuing with the provided "
    "token results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list."
)
_SNAPSHOT_CACHE = 16


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _item_bytes(node: Mapping[str, Any]) -> bytes:
    """A node as a list item: the real server drops kind/apiVersion in list items."""
    return _dumps({key: value for key, value in node.items() if key not in ("kind", "apiVersion")})


def _full_bytes(item: bytes) -> bytes:
    return b'{"kind":"Node","apiVersion":"v1",' + item[1:] if item != b"{}" else item


def _event_line(kind: str, obj: bytes) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":' + obj + b"}\n"


def status_body(
    code: int,
    reason: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A metav1.Status as the API server sends it for a failure."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": dict(metadata or {}),
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = dict(details)
    body["code"] = code
    return body


_RV_FIELD = re.compile(rb'"resourceVersion":"[0-9]*"')
_HEARTBEAT_FIELD = re.compile(rb'"lastHeartbeatTime":"[^"\\]*"')


def _splice_heartbeat(item: bytes, conditions: int, stamp: str, rv: int) -> bytes | None:
    """`item` with every lastHeartbeatTime := stamp and resourceVersion := rv, without
    re-serializing (a heartbeat of 5,000 nodes must be cheap); None when the bytes do not
    have exactly one resourceVersion and one heartbeat per condition (then re-serialize)."""
    spliced, count = _HEARTBEAT_FIELD.subn(b'"lastHeartbeatTime":"' + stamp.encode() + b'"', item)
    if count != conditions:
        return None
    spliced, count = _RV_FIELD.subn(b'"resourceVersion":"%d"' % rv, spliced)
    return spliced if count == 1 else None


def _with_rv(node: Mapping[str, Any], rv: int) -> dict[str, Any]:
    """A shallow copy of `node` carrying resourceVersion `rv` (stored objects are never mutated)."""
    fresh = dict(node)
    metadata = dict(node.get("metadata") or {})
    metadata["resourceVersion"] = str(rv)
    fresh["metadata"] = metadata
    return fresh


@dataclass(frozen=True, slots=True)
class _Stored:
    obj: dict[str, Any]
    item: bytes


@dataclass(frozen=True, slots=True)
class _Event:
    rv: int
    kind: str
    name: str
    obj: dict[str, Any]  # the state the event carries (for DELETED: the last state, new RV)
    line: bytes
    prev: _Stored | None  # the state before (None for ADDED)


@dataclass(slots=True)
class _Snapshot:
    rv: int
    names: list[str]
    nodes: dict[str, _Stored]


@dataclass(eq=False)
class _Watcher:
    predicate: Callable[[Mapping[str, Any]], bool] | None
    rv: int
    connection: socket.socket | None
    cap: int
    cond: threading.Condition = field(default_factory=threading.Condition)
    lines: list[bytes] = field(default_factory=list)
    closed: bool = False  # the server ends the stream (cleanly unless `cut`)
    cut: bool = False

    def offer(self, events: Sequence[_Event]) -> None:
        """Queue the lines this watcher is to see; called under the store lock, in RV order."""
        if not events:
            return
        if self.predicate is None:
            lines = [event.line for event in events]
            last = events[-1].rv
        else:
            lines = []
            last = self.rv
            for event in events:
                last = event.rv
                line = _filtered_line(event, self.predicate)
                if line is not None:
                    lines.append(line)
        with self.cond:
            if self.closed:
                return
            self.rv = max(self.rv, last)
            if lines:
                self.lines.extend(lines)
                if len(self.lines) > self.cap:
                    self.closed = True
                self.cond.notify_all()

    def close(self, *, cut: bool) -> None:
        with self.cond:
            self.closed = True
            self.cut = self.cut or cut
            self.cond.notify_all()
        if cut and self.connection is not None:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


def _filtered_line(event: _Event, predicate: Callable[[Mapping[str, Any]], bool]) -> bytes | None:
    matches = predicate(event.obj)
    if event.kind != "MODIFIED" or event.prev is None:
        return event.line if matches else None
    matched = predicate(event.prev.obj)
    if matches and matched:
        return event.line
    if matches:
        return _event_line("ADDED", _full_bytes(_item_bytes(event.obj)))
    if matched:
        return _event_line("DELETED", _full_bytes(_item_bytes(_with_rv(event.prev.obj, event.rv))))
    return None


def encode_continue(rv: int, last_name: str) -> str:
    """The continue token in the real server's form: base64url(JSON{v, rv, start})."""
    token = {"v": "meta.k8s.io/v1", "rv": rv, "start": last_name + "\x00"}
    return (
        base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode())
        .decode()
        .rstrip("=")
    )


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = json.loads(raw)
        if decoded.get("v") != "meta.k8s.io/v1":
            raise ValueError("unsupported continue version")
        return int(decoded["rv"]), str(decoded["start"])
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"continue key is not valid: {error}") from error


class _BadRequest(Exception):
    pass


class _TlsHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, port: int, sim: KubeApiSimulator, context: ssl.SSLContext) -> None:
        self.sim = sim
        self.ssl_context = context
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn): skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the connection's own thread.
        request.settimeout(10)
        try:
            connection = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        connection.settimeout(None)
        self.sim._track(connection, add=True)
        try:
            _Handler(connection, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.sim._track(connection, add=False)
            with contextlib.suppress(OSError):
                connection.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TlsHttpServer
    timeout = 300  # idle keep-alive connections and stuck writes

    def send_response(self, code: int, message: str | None = None) -> None:
        # Like the API server: no Server header.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self.server.sim._serve(self, "GET")

    def _write_method(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.sim._serve(self, self.command)

    def do_POST(self) -> None:
        self._write_method()

    def do_PUT(self) -> None:
        self._write_method()

    def do_PATCH(self) -> None:
        self._write_method()

    def do_DELETE(self) -> None:
        self._write_method()


class KubeApiSimulator:
    """An HTTPS Kubernetes API server for Nodes on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        state_dir: Path,
        nodes: Iterable[Mapping[str, Any]] = (),
        *,
        cluster_uid: str | None = None,
        git_version: str = "v1.31.4",
        bookmark_interval: float = 1.0,
        history_limit: int = 10_000,
        token: str = "sim-token",
        user: str = "system:serviceaccount:netweave:o2ims-adapter",
    ) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be >= 1")
        self.state_dir = Path(state_dir)
        self._pki = ensure_pki(self.state_dir)
        self.cluster_uid = cluster_uid or str(uuid.uuid4())
        self.git_version = git_version
        self.bookmark_interval = bookmark_interval
        self.history_limit = history_limit
        self._default_token = token
        self._tokens: dict[str, tuple[TokenState, str]] = {token: ("valid", user)}
        self._created = datetime.now(UTC)

        self._lock = threading.Lock()
        self._rv = 0
        self._floor = 0  # a watch from RV >= floor can be served from the history
        self._nodes: dict[str, _Stored] = {}
        self._names: list[str] = []
        self._history: collections.deque[_Event] = collections.deque(maxlen=history_limit)
        self._snapshots: collections.OrderedDict[int, _Snapshot] = collections.OrderedDict()
        self._watchers: set[_Watcher] = set()

        self._counter_lock = threading.Lock()
        self.requests: collections.Counter[str] = collections.Counter()

        self._lifecycle = threading.RLock()
        self._server: _TlsHttpServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        for node in nodes:
            self._insert(node)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> KubeApiSimulator:
        with self._lifecycle:
            if self._server is not None:
                return self
            if self._port is None:
                self._port = free_port()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self._pki.server_cert, self._pki.server_key)
            server = _TlsHttpServer(self._port, self, context)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"kubesim-{self._port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
            _log.info("kube API simulator listening on %s", self.url)
            return self

    def stop(self) -> None:
        """Stop listening and drop every connection (watches included, without a final chunk)."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            if server is None:
                return
            self._server = self._thread = None
            server.shutdown()
            server.server_close()
            if thread is not None:
                thread.join(timeout=5)
            with self._lock:
                watchers = list(self._watchers)
            for watcher in watchers:
                watcher.close(cut=True)
            with self._connections_lock:
                connections = list(self._connections)
            for connection in connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with self._connections_lock:
                    if not self._connections:
                        break
                time.sleep(0.01)

    def restart(self, down_for: float = 0.0) -> KubeApiSimulator:
        """stop(), stay down for `down_for` seconds, start() again on the same port."""
        self.stop()
        if down_for > 0:
            time.sleep(down_for)
        return self.start()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> KubeApiSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator was never started")
        return self._port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        return self._pki.ca_pem

    @property
    def ca_file(self) -> Path:
        return self._pki.ca_cert

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    # ---------------------------------------------------------------- kubeconfig

    def write_kubeconfig(
        self,
        path: Path,
        *,
        context: str = "sim",
        token: str | None = None,
        cluster_name: str | None = None,
        merge: bool = False,
        current: bool | None = None,
    ) -> Path:
        """Write a kubeconfig for this simulator (bearer token, CA data, server URL).

        merge=True adds/replaces this context, its cluster and its user in an existing
        file, so several simulators can share one kubeconfig. The context becomes the
        current-context when `current` is True, or when None and there is none yet.
        """
        path = Path(path)
        cluster = cluster_name or context
        user = f"{context}-user"
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [],
            "users": [],
            "contexts": [],
        }
        if merge and path.exists():
            loaded = yaml.safe_load(path.read_text()) or {}
            if isinstance(loaded, dict):
                config.update(loaded)

        def put(section: str, entry: dict[str, Any]) -> None:
            entries = [e for e in config.get(section) or [] if e.get("name") != entry["name"]]
            config[section] = [*entries, entry]

        put(
            "clusters",
            {
                "name": cluster,
                "cluster": {
                    "server": self.url,
                    "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                },
            },
        )
        put("users", {"name": user, "user": {"token": token or self._default_token}})
        put("contexts", {"name": context, "context": {"cluster": cluster, "user": user}})
        if current or (current is None and not config.get("current-context")):
            config["current-context"] = context
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    # ---------------------------------------------------------------- tokens

    def set_token(
        self, token: str, state: TokenState = "valid", *, user: str | None = None
    ) -> None:
        """Accept `token` as valid, expired (401) or forbidden (403); several may coexist."""
        if state not in ("valid", "expired", "forbidden"):
            raise ValueError(f"unknown token state {state!r}")
        with self._lock:
            old_user = self._tokens.get(token, (state, "system:serviceaccount:netweave:client"))[1]
            self._tokens[token] = (state, user or old_user)

    def revoke_token(self, token: str) -> None:
        """Forget `token`: requests carrying it get 401."""
        with self._lock:
            self._tokens.pop(token, None)

    # ---------------------------------------------------------------- state

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Deep copies of the stored nodes by name (the truth for tests)."""
        with self._lock:
            stored = dict(self._nodes)
        return {name: json.loads(_full_bytes(entry.item)) for name, entry in stored.items()}

    def node(self, name: str) -> dict[str, Any]:
        with self._lock:
            entry = self._nodes[name]
        result: dict[str, Any] = json.loads(_full_bytes(entry.item))
        return result

    def add_node(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """Create a node (ADDED) and return it as stored. Raises ValueError if the name exists.

        A missing metadata.uid or creationTimestamp is filled in; resourceVersion is the
        server's. The node must be JSON (it is copied through JSON).
        """
        name = self._insert(node)
        return self.node(name)

    def _insert(self, node: Mapping[str, Any]) -> str:
        given = json.loads(_dumps(node))  # a deep copy that also proves it is JSON
        fresh: dict[str, Any] = {"kind": "Node", "apiVersion": "v1"}
        fresh.update((key, value) for key, value in given.items() if key not in fresh)
        metadata = fresh.setdefault("metadata", {})
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("a node needs metadata.name")
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata.setdefault("creationTimestamp", rfc3339(datetime.now(UTC)))
        fresh.setdefault("spec", {})
        fresh.setdefault("status", {})
        with self._lock:
            if name in self._nodes:
                raise ValueError(f'nodes "{name}" already exists')
            event = self._record("ADDED", name, fresh)
            self._publish([event])
        return name

    def update_node(self, name: str, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply `mutate` to a deep copy of the node (under the store lock) and store it (MODIFIED).

        A mutation that changes nothing does not bump the resourceVersion, as on a real
        server. Raises KeyError for an unknown node, ValueError for a rename or uid change.
        """
        with self._lock:
            current = self._nodes[name]
            fresh: dict[str, Any] = json.loads(_full_bytes(current.item))
            mutate(fresh)
            metadata = fresh.get("metadata") or {}
            if (
                metadata.get("name") != name
                or metadata.get("uid") != current.obj["metadata"]["uid"]
            ):
                raise ValueError("update_node must not change metadata.name or metadata.uid")
            metadata["resourceVersion"] = current.obj["metadata"]["resourceVersion"]
            if fresh == current.obj:
                return fresh
            event = self._record("MODIFIED", name, fresh)
            self._publish([event])
            result: dict[str, Any] = json.loads(_full_bytes(self._nodes[name].item))
        return result

    def delete_node(self, name: str) -> dict[str, Any]:
        """Delete a node; the DELETED event carries its last state with a new RV."""
        with self._lock:
            if name not in self._nodes:
                raise KeyError(name)
            event = self._record("DELETED", name, None)
            self._publish([event])
        return copy.deepcopy(event.obj)

    def heartbeat(self, names: Iterable[str] | None = None, at: datetime | None = None) -> int:
        """A kubelet status update: every condition's lastHeartbeatTime := `at` (default now).

        One MODIFIED event and RV bump per node whose heartbeat time changed; returns how
        many changed (a node already at `at`, to the second, is a no-op as on a real server).
        """
        stamp = rfc3339(at or datetime.now(UTC))
        with self._lock:
            targets = list(self._names) if names is None else list(names)
            events: list[_Event] = []
            for name in targets:
                stored = self._nodes[name]
                current = stored.obj
                status = current.get("status") or {}
                conditions = status.get("conditions") or []
                if all(c.get("lastHeartbeatTime") == stamp for c in conditions):
                    continue
                fresh = dict(current)
                fresh_status = dict(status)
                fresh_status["conditions"] = [
                    {**condition, "lastHeartbeatTime": stamp} for condition in conditions
                ]
                fresh["status"] = fresh_status
                item = _splice_heartbeat(stored.item, len(conditions), stamp, self._rv + 1)
                events.append(self._record("MODIFIED", name, fresh, item))
            self._publish(events)
        return len(events)

    def _record(
        self, kind: str, name: str, obj: dict[str, Any] | None, item: bytes | None = None
    ) -> _Event:
        """Store a change at the next RV and append it to the history (lock held).

        `item` is the new state already serialized (as a list item, at the next RV), if known.
        """
        self._rv += 1
        rv = self._rv
        previous = self._nodes.get(name)
        if obj is None:  # DELETED
            assert previous is not None
            carried = _with_rv(previous.obj, rv)
            del self._nodes[name]
            index = bisect.bisect_left(self._names, name)
            del self._names[index]
            line = _event_line(kind, _full_bytes(_item_bytes(carried)))
        else:
            carried = _with_rv(obj, rv)
            item = item or _item_bytes(carried)
            self._nodes[name] = _Stored(carried, item)
            if previous is None:
                bisect.insort(self._names, name)
            line = _event_line(kind, _full_bytes(item))
        event = _Event(rv, kind, name, carried, line, previous)
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0].rv
        self._history.append(event)
        return event

    def _publish(self, events: list[_Event]) -> None:
        if not events:
            return
        for watcher in list(self._watchers):
            watcher.offer(events)

    # ---------------------------------------------------------------- faults

    def compact(self) -> None:
        """Forget the history: watches from older RVs get 410, older continue tokens 410."""
        with self._lock:
            self._floor = self._rv
            self._history.clear()
            self._snapshots.clear()

    def cut_watches(self) -> int:
        """Drop every open watch connection mid-stream (no terminating chunk); returns how many."""
        with self._lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.close(cut=True)
        return len(watchers)

    # ---------------------------------------------------------------- counters

    def _count(self, key: str) -> None:
        with self._counter_lock:
            self.requests[key] += 1
            self.requests["total"] += 1

    @property
    def list_calls(self) -> int:
        return self.requests["list"]

    @property
    def watch_calls(self) -> int:
        return self.requests["watch"]

    @property
    def open_watches(self) -> int:
        with self._lock:
            return len(self._watchers)

    # ---------------------------------------------------------------- HTTP

    def _reply(
        self,
        handler: _Handler,
        code: int,
        body: bytes,
        content_type: str = "application/json",
    ) -> None:
        handler.send_response(code)
        handler.send_header("Audit-Id", str(uuid.uuid4()))
        handler.send_header("Cache-Control", "no-cache, private")
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def _status(self, handler: _Handler, body: dict[str, Any]) -> None:
        self._count(str(body["code"]))
        self._reply(handler, int(body["code"]), _dumps(body))

    def _serve(self, handler: _Handler, method: str) -> None:
        parts = urlsplit(handler.path)
        path = parts.path.rstrip("/") or "/"
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self._count("requests")

        identity = self._authenticate(handler)
        if identity is None:
            self._status(handler, status_body(401, "Unauthorized", "Unauthorized"))
            return
        user, allowed = identity
        try:
            self._route(handler, method, path, query, user=user, allowed=allowed)
        except _BadRequest as error:
            self._status(handler, status_body(400, "BadRequest", str(error)))

    def _authenticate(self, handler: _Handler) -> tuple[str, bool] | None:
        """(user, allowed to read nodes) or None for 401; no token is system:anonymous."""
        header = handler.headers.get("Authorization") or ""
        if not header:
            return "system:anonymous", False
        scheme, _, presented = header.partition(" ")
        with self._lock:
            state = self._tokens.get(presented.strip()) if scheme.lower() == "bearer" else None
        if state is None or state[0] == "expired":
            return None
        return state[1], state[0] == "valid"

    def _route(
        self,
        handler: _Handler,
        method: str,
        path: str,
        query: Mapping[str, str],
        *,
        user: str,
        allowed: bool,
    ) -> None:
        public = path in ("/version", "/healthz", "/livez", "/readyz")  # public-info-viewer
        discovery = path in ("/api", "/api/v1")

        segments = [segment for segment in path.split("/") if segment]
        if public:
            if method != "GET":
                self._method_not_allowed(handler)
            elif path == "/version":
                self._count("version")
                self._reply(handler, 200, _dumps(self._version()))
            else:
                self._reply(handler, 200, b"ok", "text/plain; charset=utf-8")
            return
        if discovery:
            if user == "system:anonymous":
                self._forbidden_path(handler, user, path)
            elif method != "GET":
                self._method_not_allowed(handler)
            else:
                self._count("discovery")
                self._reply(handler, 200, _dumps(self._discovery(path)))
            return
        if segments[:3] == ["api", "v1", "namespaces"] and len(segments) == 4:
            namespace = segments[3]
            if not allowed:
                self._forbidden(
                    handler,
                    user=user,
                    verb="get",
                    resource="namespaces",
                    name=namespace,
                    namespace=namespace,
                )
            elif method != "GET":
                self._method_not_allowed(handler)
            else:
                self._get_namespace(handler, namespace)
            return
        if segments[:3] == ["api", "v1", "nodes"] and len(segments) in (3, 4):
            name = segments[3] if len(segments) == 4 else None
            watching = query.get("watch", "").lower() in ("true", "1")
            verb = "get" if name else ("watch" if watching else "list")
            if not allowed:
                self._forbidden(
                    handler, user=user, verb=verb, resource="nodes", name=name, namespace=None
                )
            elif method != "GET":
                self._method_not_allowed(handler)
            elif name is not None:
                self._get_node(handler, name)
            elif watching:
                self._watch(handler, query)
            else:
                self._list(handler, query)
            return
        if not allowed:
            self._forbidden_path(handler, user, path)
            return
        self._status(
            handler,
            status_body(404, "NotFound", "the server could not find the requested resource", {}),
        )

    def _method_not_allowed(self, handler: _Handler) -> None:
        message = "the server does not allow this method on the requested resource"
        self._status(handler, status_body(405, "MethodNotAllowed", message, {}))

    def _forbidden(
        self,
        handler: _Handler,
        *,
        user: str,
        verb: str,
        resource: str,
        name: str | None,
        namespace: str | None,
    ) -> None:
        subject = f'{resource} "{name}"' if name else resource
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        message = (
            f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "" {scope}'
        )
        details: dict[str, Any] = {"name": name, "kind": resource} if name else {"kind": resource}
        self._status(handler, status_body(403, "Forbidden", message, details))

    def _forbidden_path(self, handler: _Handler, user: str, path: str) -> None:
        message = f'forbidden: User "{user}" cannot get path "{path}"'
        self._status(handler, status_body(403, "Forbidden", message, {}))

    def _version(self) -> dict[str, Any]:
        major, minor = self.git_version.lstrip("v").split(".")[:2]
        commit = hashlib.sha1(self.git_version.encode(), usedforsecurity=False).hexdigest()
        return {
            "major": major,
            "minor": minor,
            "gitVersion": self.git_version,
            "gitCommit": commit,
            "gitTreeState": "clean",
            "buildDate": "2024-12-10T11:36:04Z",
            "goVersion": "go1.22.9",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _discovery(self, path: str) -> dict[str, Any]:
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                ],
            }

        def resource(name: str, kind: str, short: list[str], namespaced: bool) -> dict[str, Any]:
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            return {
                "name": name,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": verbs,
                "shortNames": short,
                "storageVersionHash": base64.b64encode(hashlib.sha256(kind.encode()).digest()[:8])
                .decode()
                .rstrip("="),
            }

        return {
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                resource("namespaces", "Namespace", ["ns"], False),
                resource("nodes", "Node", ["no"], False),
            ],
        }

    def _get_namespace(self, handler: _Handler, name: str) -> None:
        self._count("get_namespace")
        if name != "kube-system":
            message = f'namespaces "{name}" not found'
            self._status(
                handler, status_body(404, "NotFound", message, {"name": name, "kind": "namespaces"})
            )
            return
        created = rfc3339(self._created)
        namespace = {
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {
                "name": "kube-system",
                "uid": self.cluster_uid,
                "resourceVersion": "4",
                "creationTimestamp": created,
                "labels": {"kubernetes.io/metadata.name": "kube-system"},
                "managedFields": [
                    {
                        "manager": "kube-apiserver",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "time": created,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {
                            "f:metadata": {
                                "f:labels": {".": {}, "f:kubernetes.io/metadata.name": {}}
                            }
                        },
                    }
                ],
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        self._reply(handler, 200, _dumps(namespace))

    def _get_node(self, handler: _Handler, name: str) -> None:
        self._count("get_node")
        with self._lock:
            stored = self._nodes.get(name)
        if stored is None:
            message = f'nodes "{name}" not found'
            self._status(
                handler, status_body(404, "NotFound", message, {"name": name, "kind": "nodes"})
            )
            return
        self._reply(handler, 200, _full_bytes(stored.item))

    @staticmethod
    def _predicate(query: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool] | None:
        try:
            return combine(
                label_selector(query.get("labelSelector", "")),
                field_selector(query.get("fieldSelector", "")),
            )
        except SelectorError as error:
            raise _BadRequest(str(error)) from error

    @staticmethod
    def _int_param(query: Mapping[str, str], key: str) -> int | None:
        raw = query.get(key)
        if raw in (None, ""):
            return None
        try:
            value = int(raw)
        except ValueError:
            raise _BadRequest(f"{key}: Invalid value: {raw!r}: must be an integer") from None
        if value < 0:
            raise _BadRequest(f"{key}: Invalid value: {value}: must be greater than or equal to 0")
        return value

    def _snapshot_at(self, rv: int) -> _Snapshot | None:
        """The list state at `rv`, from the cache or rebuilt from the history (lock held)."""
        if rv < self._floor or rv > self._rv:
            return None
        cached = self._snapshots.get(rv)
        if cached is not None:
            self._snapshots.move_to_end(rv)
            return cached
        nodes = dict(self._nodes)
        for event in reversed(self._history):
            if event.rv <= rv:
                break
            if event.prev is None:
                nodes.pop(event.name, None)
            else:
                nodes[event.name] = event.prev
        snapshot = _Snapshot(rv, sorted(nodes), nodes)
        self._snapshots[rv] = snapshot
        while len(self._snapshots) > _SNAPSHOT_CACHE:
            self._snapshots.popitem(last=False)
        return snapshot

    def _list(self, handler: _Handler, query: Mapping[str, str]) -> None:
        self._count("list")
        predicate = self._predicate(query)
        limit = self._int_param(query, "limit") or 0
        token = query.get("continue", "")
        start = ""
        with self._lock:
            if token:
                try:
                    rv, start = decode_continue(token)
                except ValueError as error:
                    raise _BadRequest(str(error)) from error
                if rv < self._floor:
                    self._expired_continue(handler, start)
                    return
                snapshot = self._snapshot_at(rv)
                if snapshot is None:
                    raise _BadRequest("continue key is not valid: resource version in the future")
                names, nodes = snapshot.names, snapshot.nodes
            elif query.get("resourceVersionMatch") == "Exact":
                rv = self._int_param(query, "resourceVersion") or 0
                snapshot = self._snapshot_at(rv)
                if snapshot is None:
                    if rv < self._floor:
                        message = f"too old resource version: {rv} ({self._floor})"
                        self._status(handler, status_body(410, "Expired", message))
                        return
                    raise _BadRequest(f"resourceVersion {rv} is in the future")
                names, nodes = snapshot.names, snapshot.nodes
            else:
                rv, names, nodes = self._rv, self._names, self._nodes
            index = bisect.bisect_left(names, start) if start else 0
            items: list[bytes] = []
            last_name = ""
            while index < len(names) and (not limit or len(items) < limit):
                stored = nodes[names[index]]
                index += 1
                if predicate is None or predicate(stored.obj):
                    items.append(stored.item)
                    last_name = stored.obj["metadata"]["name"]
            remaining = len(names) - index
            if remaining and limit and rv == self._rv and not token and rv not in self._snapshots:
                # Keep the first page's state for its continuation pages.
                self._snapshots[rv] = _Snapshot(rv, list(names), dict(nodes))
                while len(self._snapshots) > _SNAPSHOT_CACHE:
                    self._snapshots.popitem(last=False)
        metadata: dict[str, Any] = {"resourceVersion": str(rv)}
        if remaining and limit:
            metadata["continue"] = encode_continue(rv, last_name or start.rstrip("\x00"))
            if predicate is None:
                metadata["remainingItemCount"] = remaining
        body = (
            b'{"kind":"NodeList","apiVersion":"v1","metadata":'
            + _dumps(metadata)
            + b',"items":['
            + b",".join(items)
            + b"]}"
        )
        self._reply(handler, 200, body)

    def _expired_continue(self, handler: _Handler, start: str) -> None:
        """410 for a continue token older than the compaction (lock held)."""
        inconsistent = encode_continue(self._rv, start.rstrip("\x00"))
        body = status_body(
            410, "Expired", _CONTINUE_EXPIRED_MESSAGE, metadata={"continue": inconsistent}
        )
        self._status(handler, body)

    def _watch(self, handler: _Handler, query: Mapping[str, str]) -> None:
        self._count("watch")
        predicate = self._predicate(query)
        timeout = self._int_param(query, "timeoutSeconds")
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        raw_rv = query.get("resourceVersion", "")
        since = self._int_param(query, "resourceVersion") if raw_rv not in ("", "0") else None
        cap = max(self.history_limit, 100_000)
        expired: bytes | None = None
        with self._lock:
            if since is not None and since < self._floor:
                message = f"too old resource version: {since} ({self._floor})"
                expired = _event_line("ERROR", _dumps(status_body(410, "Expired", message)))
            else:
                watcher = _Watcher(predicate, self._rv, handler.connection, cap)
                if since is None:
                    for name in self._names:
                        stored = self._nodes[name]
                        if predicate is None or predicate(stored.obj):
                            watcher.lines.append(_event_line("ADDED", _full_bytes(stored.item)))
                else:
                    replay: list[_Event] = []
                    for event in reversed(self._history):
                        if event.rv <= since:
                            break
                        replay.append(event)
                    replay.reverse()
                    watcher.offer(replay)
                    watcher.rv = max(self._rv, since)
                self._watchers.add(watcher)
        self._start_stream(handler)
        if expired is not None:
            self._count("410")
            self._chunk(handler, expired)
            self._chunk(handler, b"")
            return
        try:
            self._stream(
                handler, watcher, DEFAULT_WATCH_TIMEOUT if timeout is None else timeout, bookmarks
            )
        except (OSError, ssl.SSLError):
            handler.close_connection = True
        finally:
            with self._lock:
                self._watchers.discard(watcher)

    def _start_stream(self, handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Audit-Id", str(uuid.uuid4()))
        handler.send_header("Cache-Control", "no-cache, private")
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

    @staticmethod
    def _chunk(handler: _Handler, data: bytes) -> None:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _stream(
        self, handler: _Handler, watcher: _Watcher, timeout: float, bookmarks: bool
    ) -> None:
        deadline = time.monotonic() + timeout
        interval = self.bookmark_interval
        next_bookmark = time.monotonic() + interval if bookmarks and interval > 0 else math.inf
        while True:
            with watcher.cond:
                while not watcher.lines and not watcher.closed:
                    now = time.monotonic()
                    if now >= deadline or now >= next_bookmark:
                        break
                    watcher.cond.wait(min(deadline, next_bookmark) - now)
                batch, watcher.lines = watcher.lines, []
                closed, cut, rv = watcher.closed, watcher.cut, watcher.rv
            if cut:
                handler.close_connection = True
                return
            now = time.monotonic()
            if not batch and not closed and now >= next_bookmark and now < deadline:
                bookmark = {
                    "kind": "Node",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(rv), "creationTimestamp": None},
                }
                batch = [_event_line("BOOKMARK", _dumps(bookmark))]
                next_bookmark = now + interval
            if batch:
                self._chunk(handler, b"".join(batch))
            if closed or now >= deadline:
                self._chunk(handler, b"")
                return

    def iter_events(self) -> Iterator[tuple[int, str, str]]:
        """(rv, type, name) of the events still in the history, oldest first."""
        with self._lock:
            history = list(self._history)
        for event in history:
            yield event.rv, event.kind, event.name
