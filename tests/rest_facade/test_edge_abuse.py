"""The edge under connection abuse, in real Envoy (loopback only, bounded in time and count):
a flood of idle connections that never start TLS from one source leaves other clients
served at their usual latency (the per-source cap), silent connections are closed by the
TLS handshake and request-header timeouts (sooner when connections run high), and CONNECT
is refused at once. rest_facade/edge_limits.py has the design."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import statistics
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.pki import DevPki
from devstack.processes import wait_until
from rest_facade import envoy_modules
from rest_facade.edge_limits import MAX_PER_SOURCE, ConnectionLimits
from rest_facade.envoy_config import (
    REST_METADATA_NAMESPACE,
    render,
    request_context_settings,
    write,
)
from rest_facade.envoy_process import RunningEnvoy, validate

from .support import (
    PROBLEM,
    EnvoyFactory,
    FakeCore,
    FakeInventory,
    envoy_config,
    raw_https_request,
    tls_context,
)

POOLS = "/o2ims-infrastructureInventory/v1/resourcePools"
# Flood sockets come from another loopback address than the legitimate client (127.0.0.1):
# on Linux the whole of 127/8 is loopback.
FLOOD_SOURCE = "127.0.0.2"
SAMPLES = 30


def stat(envoy: RunningEnvoy, name: str) -> int:
    """An Envoy counter or gauge, read over the admin socket (0 if not yet created)."""
    query = urllib.parse.quote(f"^{re.escape(name)}$")
    for line in envoy.admin_get(f"/stats?filter={query}").splitlines():
        stat_name, _, value = line.partition(": ")
        if stat_name == name:
            return int(value)
    return 0


def wait_for_stat(envoy: RunningEnvoy, name: str, value: int, timeout: float = 10.0) -> None:
    wait_until(lambda: stat(envoy, name) >= value, timeout, f"{name} to reach {value}")


@contextlib.contextmanager
def idle_connections(port: int, count: int, source: str) -> Iterator[list[socket.socket]]:
    """`count` TCP connections from `source` that never send a byte (no TLS ClientHello)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) this connection, without blocking."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def seconds_until_closed(sock: socket.socket, timeout: float) -> float:
    start = time.monotonic()
    sock.settimeout(timeout)
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(1) == b"", "the server sent bytes on a connection that said nothing"
    return time.monotonic() - start


def request_latency(envoy: RunningEnvoy, context: ssl.SSLContext) -> float:
    """One REST call on a NEW TLS connection from 127.0.0.1 (what a locked-out client needs):
    TCP connect, TLS handshake, request, the whole response."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", envoy.listener_port), timeout=5) as tcp:
        # Without it Nagle holds the request behind the handshake's last record until a
        # delayed ACK (40 ms): that, not Envoy, would be the measured latency.
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(tcp, server_hostname="localhost") as tls:
            tls.sendall(f"GET {POOLS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = b""
            while not complete_response(received):
                chunk = tls.recv(65536)
                assert chunk, f"connection closed mid-response: {received[:200]!r}"
                received += chunk
    elapsed = time.perf_counter() - start
    assert received.startswith(b"HTTP/1.1 200 "), received[:200]
    return elapsed


def complete_response(received: bytes) -> bool:
    head, separator, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return bool(separator) and length is not None and len(body) >= int(length.group(1))


def client_context(pki: DevPki) -> ssl.SSLContext:
    context = tls_context(pki)
    context.set_alpn_protocols(["http/1.1"])
    return context


def p50_latency(envoy: RunningEnvoy, context: ssl.SSLContext) -> float:
    return statistics.median(request_latency(envoy, context) for _ in range(SAMPLES))


# --- the rendered configuration -------------------------------------------------------


def listener_config(rendered: dict[str, Any]) -> dict[str, Any]:
    listener: dict[str, Any] = rendered["static_resources"]["listeners"][0]
    return listener


def test_limits_are_rendered_and_pass_envoy_validate(
    pki: DevPki, descriptor: Path, tmp_path: Path
) -> None:
    limits = ConnectionLimits(
        max_connections=500,
        max_connections_per_source=50,
        tls_handshake_timeout_s=2.5,
        request_headers_timeout_s=3,
        request_timeout_s=20,
        stream_idle_timeout_s=15,
        idle_timeout_s=60,
        max_connection_duration_s=600,
    )
    config = envoy_config(pki, 50051, connection_limits=limits)
    validate(write(config, tmp_path / "envoy.yaml"))

    rendered = yaml.safe_load(render(config))
    monitors = rendered["overload_manager"]["resource_monitors"]
    assert monitors[0]["typed_config"]["max_active_downstream_connections"] == 500
    chain = listener_config(rendered)["filter_chains"][0]
    assert chain["transport_socket_connect_timeout"] == "2.5s"
    source_limit, manager = chain["filters"]
    assert source_limit["name"] == "netweave.source_limit"
    assert source_limit["typed_config"]["filter_config"]["value"] == "50"
    hcm = manager["typed_config"]
    assert (hcm["request_headers_timeout"], hcm["request_timeout"]) == ("3s", "20s")
    assert hcm["stream_idle_timeout"] == "15s"
    protocol = hcm["common_http_protocol_options"]
    assert (protocol["idle_timeout"], protocol["max_connection_duration"]) == ("60s", "600s")


def test_without_a_per_source_cap_there_is_no_source_filter(pki: DevPki, descriptor: Path) -> None:
    config = envoy_config(
        pki, 50051, connection_limits=ConnectionLimits(max_connections_per_source=None)
    )

    filters = listener_config(yaml.safe_load(render(config)))["filter_chains"][0]["filters"]

    assert [item["name"] for item in filters] == ["envoy.filters.network.http_connection_manager"]


def test_impossible_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_connections_per_source"):
        ConnectionLimits(max_connections_per_source=0)
    with pytest.raises(ValueError, match="tls_handshake_timeout_s"):
        ConnectionLimits(tls_handshake_timeout_s=0)


# --- connection floods ------------------------------------------------------------------


@pytest.mark.parametrize("per_source", [200, 2000])
def test_an_idle_connection_flood_from_one_source_leaves_other_clients_served(
    *,
    envoy_factory: EnvoyFactory,
    core: FakeCore,
    pki: DevPki,
    inventory: FakeInventory,
    per_source: int,
) -> None:
    # The global cap is a quarter above the per-source cap: without the latter this flood
    # would fill it, and lock every new client out until the pressure-scaled handshake
    # timeout (1 s at a full cap) evicted it; a flooder that keeps reconnecting would keep
    # them out. A long handshake timeout, as the flood at 80% of the global cap makes the
    # overload manager shorten it by 75% (to ~76 s): the flood stays for the whole test,
    # even on a loaded machine.
    running = envoy_factory(
        core.port,
        connection_limits=ConnectionLimits(
            max_connections=per_source * 5 // 4,
            max_connections_per_source=per_source,
            tls_handshake_timeout_s=300,
        ),
    )
    context = client_context(pki)
    baseline = p50_latency(running, context)

    with idle_connections(running.listener_port, per_source + 1, FLOOD_SOURCE) as flood:
        # One over the cap: closed at accept, before any TLS.
        wait_for_stat(running, "netweave.source_limit_refused", 1)
        refused = [index for index, sock in enumerate(flood) if closed_by_peer(sock)]
        assert refused == [per_source], "exactly the connection over the cap is closed"

        latencies: list[float] = []
        for _ in range(SAMPLES):
            latencies.append(request_latency(running, context))  # raises on any failure
        under_flood = statistics.median(latencies)
        assert not any(closed_by_peer(sock) for sock in flood[:per_source])

    print(
        f"\nflood of {per_source + 1} idle connections from {FLOOD_SOURCE}: p50 of a new "
        f"TLS request from 127.0.0.1 {baseline * 1000:.1f} ms before, "
        f"{under_flood * 1000:.1f} ms during ({SAMPLES} requests each, 0 failures)"
    )
    assert under_flood < max(5 * baseline, baseline + 0.05)


def test_a_connection_that_never_starts_tls_is_closed_after_the_handshake_timeout(
    envoy_factory: EnvoyFactory, core: FakeCore
) -> None:
    running = envoy_factory(
        core.port, connection_limits=ConnectionLimits(tls_handshake_timeout_s=1)
    )

    with idle_connections(running.listener_port, 1, FLOOD_SOURCE) as (idle,):
        waited = seconds_until_closed(idle, timeout=10)

    assert 0.8 < waited < 3


def test_handshake_timeouts_shrink_when_connections_run_high(
    envoy_factory: EnvoyFactory, core: FakeCore
) -> None:
    """30 of 40 connections (75%): the overload manager scales the 10 s handshake timeout
    down by 62% (linearly from 50% to 90% of the cap), to about 4.4 s."""
    running = envoy_factory(
        core.port,
        connection_limits=ConnectionLimits(
            max_connections=40, max_connections_per_source=40, tls_handshake_timeout_s=10
        ),
    )

    with idle_connections(running.listener_port, 30, FLOOD_SOURCE) as flood:
        start = time.monotonic()
        for sock in flood:
            seconds_until_closed(sock, timeout=15)
        waited = time.monotonic() - start

    assert stat(running, "overload.envoy.overload_actions.reduce_timeouts.scale_percent") > 0
    assert waited < 8, f"idle connections held {waited:.1f}s at 75% of the cap"


# --- slow and unwanted requests ---------------------------------------------------------


def test_slow_headers_get_408_after_the_request_headers_timeout(
    envoy_factory: EnvoyFactory, core: FakeCore, pki: DevPki
) -> None:
    running = envoy_factory(
        core.port, connection_limits=ConnectionLimits(request_headers_timeout_s=1)
    )
    context = tls_context(pki)
    context.set_alpn_protocols(["http/1.1"])

    with (
        socket.create_connection(("127.0.0.1", running.listener_port), timeout=10) as tcp,
        context.wrap_socket(tcp, server_hostname="localhost") as tls,
    ):
        start = time.monotonic()
        tls.sendall(f"GET {POOLS} HTTP/1.1\r\nHost: x\r\n".encode())  # no blank line: ever
        first = tls.recv(65536)
        waited = time.monotonic() - start
        received = first
        while chunk := tls.recv(65536):
            received += chunk
        closed = time.monotonic() - start

    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:200]
    assert f"content-type: {PROBLEM}".encode() in head
    assert b"did not arrive in time" in body
    assert 0.8 < waited < 3
    assert closed < 5, "the connection stays open after the 408"


def test_connect_is_refused_at_once(
    envoy_factory: EnvoyFactory, core: FakeCore, pki: DevPki
) -> None:
    running = envoy_factory(core.port)

    start = time.monotonic()
    status, headers, body = raw_https_request(
        running, pki, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443"
    )

    assert time.monotonic() - start < 1
    assert status == 405
    assert headers["content-type"] == PROBLEM
    assert headers["allow"] == ""
    assert b"not a proxy" in body


def test_the_per_source_bound_is_the_modules() -> None:
    source = (envoy_modules.SOURCE_DIR / f"{envoy_modules.SOURCE_LIMIT}.c").read_text()
    match = re.search(r"^#define MAX_LIMIT (\d+)UL$", source, re.MULTILINE)
    assert match is not None
    assert int(match.group(1)) == MAX_PER_SOURCE


def test_the_request_guard_marks_replies_as_the_shaper_does() -> None:
    settings = dict(line.split("=", 1) for line in request_context_settings().splitlines())
    assert settings["rest_namespace"] == REST_METADATA_NAMESPACE
