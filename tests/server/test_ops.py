"""The ops endpoint against real sockets: it answers probes however many clients hold sockets
open, bounds every connection in time and number, and keeps /healthz off the worker pool."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from devstack.processes import wait_until
from server.ops import OpsLimits, OpsServer, ReadinessCheck

pytestmark = pytest.mark.timeout(60)

READY_BODY = {"status": "ready", "checks": {"redis": {"ok": True}}}
# What the endpoint adds to every health body: who the process is, and for how long.
IDENTITY = ("timestamp", "version", "commit", "uptime")


def own_fields(body: dict[str, Any]) -> dict[str, Any]:
    """A health body without the fields the endpoint adds (the readiness check's own)."""
    return {name: value for name, value in body.items() if name not in IDENTITY}


def always_ready() -> tuple[bool, dict[str, Any]]:
    return True, READY_BODY


class Serve(Protocol):
    def __call__(
        self,
        readiness: ReadinessCheck = ...,
        registry: CollectorRegistry | None = ...,
        **limits: Any,
    ) -> OpsServer: ...


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Starts OpsServers on 127.0.0.1, port 0, and stops them all after the test."""
    servers: list[OpsServer] = []

    def start(
        readiness: ReadinessCheck = always_ready,
        registry: CollectorRegistry | None = None,
        **limits: Any,
    ) -> OpsServer:
        server = OpsServer(
            "127.0.0.1",
            0,
            readiness,
            registry or CollectorRegistry(),
            limits=OpsLimits(**limits),
        )
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


class BlockingReadiness:
    """A readiness check that holds every caller until released, like a hung Redis PING."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.released = threading.Event()

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        self.entered.release()
        self.released.wait(10)
        return True, {"status": "ready", "slow": True}

    def wait_for_callers(self, count: int) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=3), "the readiness check was not called"


@pytest.fixture
def blocking() -> Iterator[BlockingReadiness]:
    readiness = BlockingReadiness()
    yield readiness
    readiness.released.set()


@pytest.fixture
def clients() -> Iterator[ThreadPoolExecutor]:
    """Threads for requests that are expected to wait."""
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-client") as pool:
        yield pool


# --- a raw HTTP client: the point is to control every byte ----------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)


def connect(server: OpsServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def send(server: OpsServer, raw: bytes) -> Reply:
    """Sends `raw`, reads until the server closes, parses the response."""
    with connect(server) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in fields:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split(" ")[1]), headers, body)


def get(server: OpsServer, target: str, method: str = "GET") -> Reply:
    return send(server, f"{method} {target} HTTP/1.1\r\nHost: ops\r\n\r\n".encode())


def timed_get(server: OpsServer, target: str) -> tuple[Reply, float]:
    start = time.monotonic()
    reply = get(server, target)
    return reply, time.monotonic() - start


def seconds_until_closed(sock: socket.socket, within: float) -> float:
    """How long the server took to close `sock` (FIN or reset); fails if it did not."""
    start = time.monotonic()
    sock.settimeout(within)
    try:
        data = sock.recv(1024)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for over {within} s")
    assert data == b"", "the server answered instead of closing"
    return time.monotonic() - start


def is_open(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1024) != b""
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False


@pytest.fixture
def file_descriptors() -> Iterator[None]:
    """Room for a thousand sockets (both ends of 500 connections) in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2048
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit of {hard} file descriptors is too low")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- exhaustion ------------------------------------------------------------------------


@pytest.mark.usefixtures("file_descriptors")
def test_500_idle_connections_cost_no_threads_and_healthz_keeps_answering(
    serve: Serve,
) -> None:
    threads_before = threading.active_count()
    # Long header timeout: the idle sockets must all still be held while /healthz is probed.
    server = serve(header_timeout_s=30.0, request_timeout_s=30.0)
    with contextlib.ExitStack() as sockets:
        for index in range(500):
            sock = sockets.enter_context(connect(server))
            if index % 2:
                sock.sendall(b"GET /heal")  # half a request line, never finished
        wait_until(
            lambda: server.open_connections == 500,
            3.0,
            "server.open_connections == 500",
            interval=0.01,
        )

        for _ in range(20):
            reply, elapsed = timed_get(server, "/healthz")
            assert reply.status == 200
            assert reply.json()["status"] == "ok"
            assert elapsed < 1.0
        assert threading.active_count() - threads_before < 10
        assert server.open_connections >= 500


def test_a_silent_connection_is_closed_after_the_header_timeout(serve: Serve) -> None:
    server = serve(header_timeout_s=0.5, request_timeout_s=0.5)
    with connect(server) as sock:
        assert 0.3 < seconds_until_closed(sock, within=3.0) < 2.0
    wait_until(
        lambda: server.open_connections == 0, 3.0, "server.open_connections == 0", interval=0.01
    )


def test_a_client_dribbling_its_head_is_cut_off_at_the_header_timeout(serve: Serve) -> None:
    server = serve(header_timeout_s=0.5, request_timeout_s=0.5)
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        while is_open(sock):  # a header line per 0.2 s: never idle long, never done
            assert time.monotonic() - start < 3.0, "a dribbling client is never cut off"
            with contextlib.suppress(ConnectionError):
                sock.sendall(b"X-Drip: a\r\n")
        assert 0.3 < time.monotonic() - start < 2.0


def test_at_the_cap_the_oldest_connections_make_room_for_new_ones(serve: Serve) -> None:
    server = serve(max_connections=4, header_timeout_s=30.0, request_timeout_s=30.0)
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(connect(server)) for _ in range(10)]
        for sock in idle[:6]:
            seconds_until_closed(sock, within=3.0)
        wait_until(
            lambda: server.open_connections == 4, 3.0, "server.open_connections == 4", interval=0.01
        )
        assert all(is_open(sock) for sock in idle[6:])

        reply, elapsed = timed_get(server, "/healthz")
        assert reply.status == 200
        assert elapsed < 1.0
        seconds_until_closed(idle[6], within=3.0)  # the oldest one went for it
        assert all(is_open(sock) for sock in idle[7:])
        assert server.open_connections <= 4


def test_at_the_cap_requests_running_on_workers_are_spared(
    serve: Serve, blocking: BlockingReadiness, clients: ThreadPoolExecutor
) -> None:
    server = serve(
        blocking, max_connections=3, workers=2, header_timeout_s=30.0, request_timeout_s=30.0
    )
    waiting = [clients.submit(get, server, "/readyz") for _ in range(2)]
    blocking.wait_for_callers(2)
    with connect(server) as idle:
        wait_until(
            lambda: server.open_connections == 3, 3.0, "server.open_connections == 3", interval=0.01
        )

        assert get(server, "/healthz").status == 200
        seconds_until_closed(idle, within=3.0)

    blocking.released.set()
    for reply in waiting:
        assert own_fields(reply.result(timeout=5).json()) == {"status": "ready", "slow": True}


# --- the worker pool -------------------------------------------------------------------


def test_a_blocked_readiness_check_does_not_delay_healthz(
    serve: Serve, blocking: BlockingReadiness, clients: ThreadPoolExecutor
) -> None:
    server = serve(blocking, workers=2)
    readyz = [clients.submit(get, server, "/readyz") for _ in range(2)]
    blocking.wait_for_callers(2)  # every worker is now stuck

    for _ in range(5):
        reply, elapsed = timed_get(server, "/healthz")
        assert reply.status == 200
        assert elapsed < 0.5
    assert not any(reply.done() for reply in readyz)

    blocking.released.set()
    for pending in readyz:
        reply = pending.result(timeout=5)
        assert reply.status == 200
        assert own_fields(reply.json()) == {"status": "ready", "slow": True}


def test_a_slow_readiness_check_still_answers_with_its_body(serve: Serve) -> None:
    def slow() -> tuple[bool, dict[str, Any]]:
        time.sleep(1.0)
        return True, READY_BODY

    server = serve(slow)
    reply, elapsed = timed_get(server, "/readyz")
    assert reply.status == 200
    assert own_fields(reply.json()) == READY_BODY
    assert elapsed >= 1.0


def test_not_ready_is_503_with_the_readiness_body(serve: Serve) -> None:
    body = {"status": "not ready", "failing": ["redis"]}
    server = serve(lambda: (False, body))
    reply = get(server, "/readyz")
    assert reply.status == 503
    assert own_fields(reply.json()) == body
    assert reply.headers["cache-control"] == "no-store"


def test_readyz_is_503_busy_at_once_when_every_worker_is_taken(
    serve: Serve, blocking: BlockingReadiness, clients: ThreadPoolExecutor
) -> None:
    server = serve(blocking, workers=1, worker_wait_s=0.2)
    first = clients.submit(get, server, "/readyz")
    blocking.wait_for_callers(1)

    reply, elapsed = timed_get(server, "/readyz")
    assert reply.status == 503
    assert reply.json()["status"] == "busy"
    assert elapsed < 1.0
    assert get(server, "/metrics").status == 503  # the same pool

    blocking.released.set()
    assert first.result(timeout=5).status == 200


def test_a_readiness_check_past_the_request_timeout_is_503_and_frees_its_worker_later(
    serve: Serve, blocking: BlockingReadiness
) -> None:
    calls = 0

    def hangs_once() -> tuple[bool, dict[str, Any]]:
        nonlocal calls
        calls += 1
        return blocking() if calls == 1 else (True, READY_BODY)

    server = serve(hangs_once, workers=1, header_timeout_s=0.5, request_timeout_s=0.5)
    reply, elapsed = timed_get(server, "/readyz")
    assert reply.status == 503
    assert reply.json()["status"] == "timeout"
    assert elapsed < 2.0
    # The abandoned check still holds the only worker until it returns.
    assert get(server, "/readyz").json()["status"] == "busy"

    blocking.released.set()
    wait_until(
        lambda: get(server, "/readyz").status == 200,
        3.0,
        'get(server, "/readyz").status == 200',
        interval=0.01,
    )


# --- HTTP ------------------------------------------------------------------------------


def test_healthz_is_ok_json_and_ignores_the_query_string(serve: Serve) -> None:
    server = serve()
    reply = get(server, "/healthz?verbose=1")
    assert reply.status == 200
    body = reply.json()
    assert (body["status"], body["checks"]) == ("ok", {})
    assert set(IDENTITY) <= set(body)
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["connection"] == "close"
    assert reply.headers["content-length"] == str(len(reply.body))


def test_head_has_the_get_headers_and_no_body(serve: Serve) -> None:
    server = serve()
    reply = get(server, "/healthz", method="HEAD")
    assert reply.status == 200
    # The GET body's length, but for the digits of the uptime that differ between the two.
    get_length = len(get(server, "/healthz").body)
    assert abs(int(reply.headers["content-length"]) - get_length) <= 3
    assert reply.body == b""


def test_unknown_path_is_404_json(serve: Serve) -> None:
    reply = get(serve(), "/nope?x=1")
    assert reply.status == 404
    assert reply.json() == {"status": "not found", "path": "/nope"}


def test_post_is_405_with_allow(serve: Serve) -> None:
    reply = send(serve(), b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"
    assert reply.json()["status"] == "method not allowed"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n" + b"X-Small: aaaaaaaaaaaaaaaaaaaaaaaa\r\n" * 400 + b"\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["one-long-header", "many-short-headers", "long-request-line"],
)
def test_a_head_over_8_kib_is_431(serve: Serve, head: bytes) -> None:
    reply = send(serve(), head)
    assert reply.status == 431
    assert reply.json() == {"status": "request header fields too large"}


@pytest.mark.parametrize(
    "head",
    [
        b"garbage\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz SPDY/3\r\n\r\n",
        b"GET  /healthz HTTP/1.1\r\n\r\n",
        b"G(T /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",  # a TLS ClientHello
    ],
)
def test_a_malformed_head_is_400(serve: Serve, head: bytes) -> None:
    reply = send(serve(), head)
    assert reply.status == 400
    assert reply.json() == {"status": "bad request"}


def test_metrics_serves_the_registry(serve: Serve) -> None:
    registry = CollectorRegistry()
    Counter("netweave_ops_test_pokes", "Pokes.", registry=registry).inc(3)
    reply = get(serve(registry=registry), "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"] == CONTENT_TYPE_LATEST
    assert reply.headers["cache-control"] == "no-store"
    assert b"netweave_ops_test_pokes_total 3.0" in reply.body


# --- lifecycle -------------------------------------------------------------------------


def test_stop_closes_the_listener_and_every_connection(serve: Serve) -> None:
    server = serve(header_timeout_s=30.0, request_timeout_s=30.0)
    with connect(server) as idle:
        wait_until(
            lambda: server.open_connections == 1, 3.0, "server.open_connections == 1", interval=0.01
        )
        start = time.monotonic()
        server.stop()
        assert time.monotonic() - start < 2.0
        seconds_until_closed(idle, within=2.0)
    with pytest.raises(ConnectionRefusedError):
        connect(server).close()
    assert f"ops-http:{server.port}" not in {t.name for t in threading.enumerate()}


def test_a_server_never_started_stops_cleanly() -> None:
    server = OpsServer("127.0.0.1", 0, always_ready, CollectorRegistry())
    assert server.port > 0
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


@pytest.mark.parametrize(
    "limits",
    [
        {"workers": 0},
        {"max_connections": 2, "workers": 2},
        {"header_timeout_s": 0},
        {"header_timeout_s": 10.0, "request_timeout_s": 5.0},
    ],
)
def test_inconsistent_limits_are_refused(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        OpsLimits(**limits)
