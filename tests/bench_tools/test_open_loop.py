"""The open-loop generator (bench/open_loop.py) against a real HTTP/2 peer: a server built on
the `h2` library, over TLS that requires our client certificate, in a thread. Each test tells
it how to answer: statuses in every HPACK form, trailers, a header block split over
CONTINUATION frames, resets, a stream cap, a late SETTINGS ACK, a GOAWAY."""

from __future__ import annotations

import select
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hpack
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hyperframe.frame import Frame, SettingsFrame

from devstack.pki import DevPki, ensure_dev_pki

# The bench/ scripts import their siblings as top-level modules (bench/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from open_loop import OpenLoopResult, run_open_loop

PATH = "/o2ims-infrastructureInventory/v1/resourcePools/pool-1"
BODY = b'{"resourcePoolId": "pool-1"}'


@dataclass(frozen=True)
class Reply:
    """How the server answers one request."""

    status: int = 200
    delay_s: float = 0.0
    reset: bool = False
    huffman: bool = True
    never_indexed: bool = False
    trailers: bool = False
    # A header block larger than one frame: HEADERS then CONTINUATION.
    big_header: bool = False
    # Answer, then GOAWAY naming this stream the last processed, then stop answering.
    goaway: bool = False


class _SwitchableEncoder(hpack.Encoder):
    """The server's encoder, with Huffman coding switched per response."""

    huffman_on = True

    def encode(
        self,
        headers: Iterable[
            HeaderTuple
            | tuple[bytes | str, bytes | str]
            | tuple[bytes | str, bytes | str, bool | None]
        ]
        | dict[bytes | str, bytes | str],
        huffman: bool = True,
    ) -> bytes:
        return super().encode(headers, huffman=self.huffman_on)


class _LateAckConnection(h2.connection.H2Connection):
    """Holds the client's first SETTINGS unapplied and unacknowledged until `release`: until
    then its encoder keeps the 4096-byte dynamic table that the client is about to forbid."""

    held: SettingsFrame | None = None
    released = False

    def _receive_settings_frame(self, frame: SettingsFrame) -> tuple[list[Frame], list[object]]:  # type: ignore[override]
        if "ACK" not in frame.flags and not self.released:
            self.held = frame
            return [], []
        return super()._receive_settings_frame(frame)  # type: ignore[return-value]

    def release(self) -> None:
        self.released = True
        if self.held is not None:
            frames, _ = super()._receive_settings_frame(self.held)
            self._prepare_for_sending(frames)


class H2Server:
    """A TLS + HTTP/2 server on a free port answering the n-th request with `answer(n)`."""

    def __init__(
        self,
        pki: DevPki,
        answer: Callable[[int], Reply],
        *,
        max_concurrent_streams: int | None = None,
        ack_settings_after: int | None = None,
        ping: bool = False,
    ) -> None:
        self.answer = answer
        self.max_concurrent_streams = max_concurrent_streams
        self.ack_settings_after = ack_settings_after
        self.ping = ping
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(pki.server_cert, pki.server_key)
        self.tls.load_verify_locations(pki.ca_cert)
        self.tls.verify_mode = ssl.CERT_REQUIRED
        self.tls.set_alpn_protocols(["h2"])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.error: BaseException | None = None
        # What the server saw and did.
        self.connections = 0
        self.client_certificates: list[object] = []
        self.requests: list[list[tuple[bytes, bytes]]] = []
        self.statuses_sent: Counter[int] = Counter()
        self.resets = 0
        self.most_open_streams = 0
        self.ping_acked = False
        self.dynamic_table_used = False

    def __enter__(self) -> H2Server:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.listener.close()
        if self.error is not None:
            raise self.error

    def _serve(self) -> None:
        try:
            while not self.stopping.is_set():
                if select.select([self.listener], [], [], 0.05)[0]:
                    raw, _ = self.listener.accept()
                    self.connections += 1
                    with self.tls.wrap_socket(raw, server_side=True) as conn:
                        self._handle(conn)
        except BaseException as error:
            self.error = error

    def _handle(self, sock: ssl.SSLSocket) -> None:
        self.client_certificates.append(sock.getpeercert())
        sock.settimeout(5)
        late = self.ack_settings_after is not None
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        conn = (_LateAckConnection if late else h2.connection.H2Connection)(config=config)
        encoder = _SwitchableEncoder()
        conn.encoder = encoder
        if self.max_concurrent_streams is not None:
            conn.local_settings = h2.settings.Settings(
                client=False,
                initial_values={
                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams
                },
            )
        conn.initiate_connection()
        if self.ping:
            conn.ping(b"pingpong")
        sock.sendall(conn.data_to_send())
        pending: list[tuple[float, int, Reply]] = []
        answered = 0
        going_away = False
        while not self.stopping.is_set():
            now = time.monotonic()
            due = min((when for when, _, _ in pending), default=now + 0.05)
            if select.select([sock], [], [], max(0.0, due - now))[0]:
                data = sock.recv(65536)
                while sock.pending():
                    data += sock.recv(65536)
                if not data:
                    return
                if going_away:
                    continue  # read and dropped until the client closes
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.requests.append([(bytes(n), bytes(v)) for n, v in event.headers or []])
                        reply = self.answer(len(self.requests) - 1)
                        pending.append((time.monotonic() + reply.delay_s, event.stream_id, reply))
                        self.most_open_streams = max(
                            self.most_open_streams, conn.open_inbound_streams
                        )
                    elif isinstance(event, h2.events.PingAckReceived):
                        self.ping_acked = True
            now = time.monotonic()
            for item in sorted(item for item in pending if item[0] <= now):
                pending.remove(item)
                _, stream_id, reply = item
                self._reply(conn, encoder, stream_id, reply)
                answered += 1
                if isinstance(conn, _LateAckConnection) and answered == self.ack_settings_after:
                    self.dynamic_table_used = bool(encoder.header_table.dynamic_entries)
                    conn.release()
                if reply.goaway:
                    conn.close_connection(last_stream_id=stream_id)
                    going_away = True
                    pending.clear()
                    break
            sock.sendall(conn.data_to_send())

    def _reply(
        self,
        conn: h2.connection.H2Connection,
        encoder: _SwitchableEncoder,
        stream_id: int,
        reply: Reply,
    ) -> None:
        if reply.reset:
            conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            self.resets += 1
            return
        encoder.huffman_on = reply.huffman
        status = str(reply.status).encode()
        headers: list[tuple[bytes, bytes]] = [
            NeverIndexedHeaderTuple(b":status", status)
            if reply.never_indexed
            else (b":status", status),
            (b"content-type", b"application/json"),
            (b"x-served-by", b"h2-test-server"),
            # A new dynamic-table entry in every response (while the client allows one).
            (b"x-request-id", f"request-{stream_id}".encode()),
        ]
        if reply.big_header:
            headers.append((b"x-big", b"b" * 40_000))
        conn.send_headers(stream_id, headers)
        conn.send_data(stream_id, BODY, end_stream=not reply.trailers)
        if reply.trailers:
            conn.send_headers(stream_id, [(b"x-checksum", b"ok")], end_stream=True)
        self.statuses_sent[reply.status] += 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def client_tls(pki: DevPki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def load(
    server: H2Server,
    tls: ssl.SSLContext,
    rates: list[float],
    *,
    duration_s: float = 0.5,
    warmup_s: float = 0.0,
    extra_headers: dict[str, str] | None = None,
) -> list[OpenLoopResult]:
    return run_open_loop(
        "127.0.0.1",
        server.port,
        tls,
        server_name="localhost",
        path=PATH,
        rates=rates,
        duration_s=duration_s,
        warmup_s=warmup_s,
        drain_s=5.0,
        extra_headers=extra_headers,
    )


def cycle(replies: list[Reply]) -> Callable[[int], Reply]:
    return lambda index: replies[index % len(replies)]


def test_every_request_gets_its_200_over_one_connection_at_each_rate(
    pki: DevPki, client_tls: ssl.SSLContext
) -> None:
    long_value = "v" * 300  # a length past HPACK's 7-bit prefix
    with H2Server(pki, cycle([Reply()]), ping=True) as server:
        results = load(
            server, client_tls, [100, 200], warmup_s=0.1, extra_headers={"X-Long": long_value}
        )
    assert [result.sent for result in results] == [50, 100]
    for result in results:
        assert result.statuses == Counter({200: result.sent})
        assert result.errors == 0
        assert result.queued == 0
        assert len(result.latencies_s) == len(result.send_lags_s) == result.sent
        assert all(0 < latency < 0.5 for latency in result.latencies_s)
    # The warm-ups (10 and 20 requests) were sent and answered too, just not counted.
    assert len(server.requests) == 10 + 50 + 20 + 100
    assert server.connections == 1
    assert server.client_certificates[0]
    assert server.ping_acked
    assert server.requests[0] == [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", f"localhost:{server.port}".encode()),
        (b":path", PATH.encode()),
        (b"accept", b"application/json"),
        (b"x-long", long_value.encode()),
    ]


def test_statuses_are_read_from_every_hpack_form(pki: DevPki, client_tls: ssl.SSLContext) -> None:
    replies = [
        Reply(200),
        Reply(404),  # an index into the static table
        Reply(503),  # a literal value, Huffman-coded
        Reply(503, huffman=False),
        Reply(502, never_indexed=True, huffman=False),
        Reply(201),
        Reply(204, trailers=True),
        Reply(500, big_header=True),  # HEADERS + CONTINUATION
        Reply(200, big_header=True, trailers=True),
    ]
    with H2Server(pki, cycle(replies)) as server:
        [result] = load(server, client_tls, [180])
    assert result.sent == 90
    assert result.errors == 0
    assert result.statuses == server.statuses_sent
    assert set(result.statuses) == {200, 201, 204, 404, 500, 502, 503}
    assert len(result.latencies_s) == sum(
        count for status, count in result.statuses.items() if 200 <= status < 300
    )


def test_responses_using_the_dynamic_table_before_our_settings_ack_still_decode(
    pki: DevPki, client_tls: ssl.SSLContext
) -> None:
    replies = [
        Reply(503),
        Reply(200),
        Reply(503, huffman=False),
        Reply(404, trailers=True),
        Reply(201),
        Reply(200, trailers=True),
    ]
    with H2Server(pki, cycle(replies), ack_settings_after=12) as server:
        [result] = load(server, client_tls, [100])
    assert server.dynamic_table_used
    assert result.sent == 50
    assert result.errors == 0
    assert result.statuses == server.statuses_sent


def test_a_server_stream_cap_queues_requests_and_every_one_is_answered(
    pki: DevPki, client_tls: ssl.SSLContext
) -> None:
    # 30 ms per response and two streams at a time: 66 req/s served, 100 offered.
    with H2Server(pki, cycle([Reply(delay_s=0.03)]), max_concurrent_streams=2) as server:
        [result] = load(server, client_tls, [100])
    assert server.most_open_streams <= 2
    assert result.queued > 0
    assert result.statuses == Counter({200: result.sent})
    assert result.errors == 0
    # Measured from the scheduled time: the wait for a stream is in the latency.
    assert min(result.latencies_s) >= 0.03
    assert max(result.latencies_s) > 0.1


def test_reset_streams_count_as_errors(pki: DevPki, client_tls: ssl.SSLContext) -> None:
    with H2Server(pki, cycle([Reply(), Reply(), Reply(reset=True)])) as server:
        [result] = load(server, client_tls, [120])
    assert result.sent == 60
    assert server.resets == 20
    assert result.errors == 20
    assert result.statuses == Counter({200: 40})
    assert result.failed == 20


def test_goaway_ends_the_run(pki: DevPki, client_tls: ssl.SSLContext) -> None:
    # The fifth is answered late, with the GOAWAY: requests sent meanwhile are never answered.
    replies = [Reply()] * 4 + [Reply(goaway=True, delay_s=0.05)] + [Reply(delay_s=60)] * 1000
    with H2Server(pki, lambda index: replies[index]) as server:
        first, second = load(server, client_tls, [100, 100])
    assert first.statuses == Counter({200: 5})
    assert first.sent > 5
    assert first.errors == first.sent - 5
    assert second.sent == 0
    assert server.connections == 1
