"""REST over HTTP/2 framings that HTTP/1.1 clients cannot produce, through real Envoy and the
test-only widget API: a body that ends with the headers, with trailers or with empty DATA
frames, a long body without content-length, and the response trailers a REST client gets
(envoy/modules/shaper.c). A raw HTTP/2 client (h2) sends exactly the frames each case needs
and honours flow control, as a real client does."""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from devstack.pki import DevPki
from rest_facade.envoy_config import MAX_REQUEST_BODY_BYTES
from rest_facade.envoy_process import RunningEnvoy

from .support import PROBLEM, tls_context
from .widgets import SETTINGS, WIDGETS, WidgetStore

JSON = [("content-type", "application/json")]
TRAILERS = [("x-checksum", "abc")]


@dataclass
class H2Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] | None = None
    reset: int | None = None

    def problem(self) -> dict[str, object]:
        assert self.headers.get("content-type") == PROBLEM, (self.status, self.headers)
        problem: dict[str, object] = json.loads(self.body)
        assert problem["status"] == self.status
        return problem


class _H2Exchange:
    """One request stream on an HTTP/2 connection over TLS, read into an H2Answer."""

    def __init__(self, tls: ssl.SSLSocket, deadline: float) -> None:
        self.tls = tls
        self.deadline = deadline
        self.connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.connection.initiate_connection()
        self.stream = self.connection.get_next_available_stream_id()
        self.answer = H2Answer()
        self.done = False

    def flush(self) -> None:
        self.tls.sendall(self.connection.data_to_send())

    def receive(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError(f"no answer in time: {self.answer}")
        data = self.tls.recv(65536)
        if not data:
            self.done = True
            return
        for event in self.connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.answer.headers = dict(event.headers)  # type: ignore[arg-type]
                self.answer.status = int(self.answer.headers.pop(":status"))
            elif isinstance(event, h2.events.DataReceived):
                self.answer.body += event.data
                self.connection.acknowledge_received_data(event.flow_controlled_length, self.stream)
            elif isinstance(event, h2.events.TrailersReceived):
                self.answer.trailers = dict(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.StreamEnded):
                self.done = True
            elif isinstance(event, h2.events.StreamReset):
                self.answer.reset = int(event.error_code)
                self.done = True
        self.flush()

    def send_body(self, chunks: list[bytes], end_stream: bool) -> None:
        """Each chunk as DATA frames, within the peer's flow-control window (waiting for its
        WINDOW_UPDATE as a real client does); stops early when the server has answered."""
        pending = [bytes(chunk) for chunk in chunks]
        while pending and not self.done:
            try:
                window = min(self.connection.local_flow_control_window(self.stream), 16384)
            except h2.exceptions.StreamClosedError:
                return  # the server answered (and closed the stream) early
            if window == 0:
                self.receive()
                continue
            chunk, pending[0] = pending[0][:window], pending[0][window:]
            if not pending[0]:
                pending.pop(0)
            try:
                self.connection.send_data(self.stream, chunk, end_stream=end_stream and not pending)
            except h2.exceptions.StreamClosedError:
                return
            self.flush()


def h2_request(
    envoy: RunningEnvoy,
    pki: DevPki,
    method: str,
    path: str,
    *,
    headers: list[tuple[str, str]] = JSON,
    chunks: list[bytes] = (),  # type: ignore[assignment]
    trailers: list[tuple[str, str]] | None = None,
    timeout: float = 10.0,
) -> H2Answer:
    """One request on its own HTTP/2 connection: HEADERS (END_STREAM when there is neither a
    chunk nor trailers), DATA frames for each chunk (an empty chunk: an empty DATA frame),
    then the trailers. Reads until the stream ends or is reset."""
    context = tls_context(pki)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", envoy.listener_port), timeout=timeout) as tcp,
        context.wrap_socket(tcp, server_hostname="localhost") as tls,
    ):
        exchange = _H2Exchange(tls, time.monotonic() + timeout)
        request = [(":method", method), (":path", path), (":scheme", "https")]
        request += [(":authority", "localhost"), *headers]
        exchange.connection.send_headers(
            exchange.stream, request, end_stream=not chunks and trailers is None
        )
        exchange.flush()
        exchange.send_body(chunks, end_stream=trailers is None)
        if trailers is not None and not exchange.done:
            exchange.connection.send_headers(exchange.stream, trailers, end_stream=True)
            exchange.flush()
        while not exchange.done:
            exchange.receive()
    return exchange.answer


# --- a PUT or PATCH that says nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "trailers"),
    [
        ([], None),  # END_STREAM on the HEADERS frame, no content-length
        ([], TRAILERS),  # HEADERS, then trailers: no DATA at all
        ([b""], None),  # one empty DATA frame with END_STREAM
        # An empty DATA frame, then trailers (Envoy closes a connection that sends more than
        # one empty frame in a row: max_consecutive_inbound_frames_with_empty_payload).
        ([b""], TRAILERS),
    ],
    ids=["end-stream-on-headers", "only-trailers", "empty-data", "empty-data-and-trailers"],
)
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_an_empty_body_over_http2_is_400_whatever_the_framing(
    *,
    edge_envoy: RunningEnvoy,
    pki: DevPki,
    widgets: WidgetStore,
    method: str,
    chunks: list[bytes],
    trailers: list[tuple[str, str]] | None,
) -> None:
    widget = widgets.new_widget("kept")
    path = SETTINGS if method == "PUT" else f"{WIDGETS}/{widget.widget_id}"

    answer = h2_request(edge_envoy, pki, method, path, chunks=chunks, trailers=trailers)

    assert answer.status == 400, answer
    assert "needs a JSON body" in str(answer.problem()["detail"])
    assert widgets.requests == [], "an empty PUT/PATCH must never reach the core"


@pytest.mark.parametrize(
    ("chunks", "trailers"),
    [([b"nu", b"ll"], None), ([b"null"], TRAILERS), ([b" null ", b""], None)],
    ids=["two-frames", "with-trailers", "then-empty-data"],
)
def test_a_null_body_of_unknown_length_over_http2_is_400(
    *,
    edge_envoy: RunningEnvoy,
    pki: DevPki,
    widgets: WidgetStore,
    chunks: list[bytes],
    trailers: list[tuple[str, str]] | None,
) -> None:
    widget = widgets.new_widget("kept")

    answer = h2_request(
        edge_envoy, pki, "PATCH", f"{WIDGETS}/{widget.widget_id}", chunks=chunks, trailers=trailers
    )

    assert answer.status == 400, answer
    assert "not null" in str(answer.problem()["detail"])
    assert widgets.requests == []


@pytest.mark.parametrize("trailers", [None, TRAILERS], ids=["data", "trailers"])
def test_a_body_of_unknown_length_over_http2_still_reaches_the_core(
    *,
    edge_envoy: RunningEnvoy,
    pki: DevPki,
    widgets: WidgetStore,
    trailers: list[tuple[str, str]] | None,
) -> None:
    answer = h2_request(
        edge_envoy, pki, "PUT", SETTINGS, chunks=[b'{"retention', b'Days": 3}'], trailers=trailers
    )

    assert answer.status == 200, answer
    assert json.loads(answer.body) == {"retentionDays": 3}


# --- what a REST client gets at the end of a response -----------------------------------------


def test_rest_responses_over_http2_carry_no_grpc_trailers(
    *, edge_envoy: RunningEnvoy, pki: DevPki, widgets: WidgetStore
) -> None:
    widget = widgets.new_widget("w")
    answers = [
        h2_request(edge_envoy, pki, "GET", f"{WIDGETS}/{widget.widget_id}", headers=[]),
        h2_request(edge_envoy, pki, "GET", WIDGETS, headers=[]),
        h2_request(edge_envoy, pki, "POST", WIDGETS, chunks=[b'{"name":"n"}'], trailers=TRAILERS),
        h2_request(edge_envoy, pki, "GET", f"{WIDGETS}/missing", headers=[]),
    ]

    assert [answer.status for answer in answers] == [200, 200, 201, 404]
    for answer in answers:
        names = set(answer.headers) | set(answer.trailers or {})
        leaked = {name for name in names if name.startswith(("grpc-", "x-o2ims-"))}
        assert not leaked, (answer.status, answer.headers, answer.trailers)


# --- a long body without content-length ---------------------------------------------------------


def _widget_body(size: int) -> list[bytes]:
    """A JSON widget of `size` bytes, in 16 KiB chunks."""
    filler = size - len(b'{"name":""}')
    body = b'{"name":"' + b"x" * filler + b'"}'
    return [body[i : i + 16384] for i in range(0, len(body), 16384)]


@pytest.mark.parametrize("size", [200_000, MAX_REQUEST_BODY_BYTES - 100])
def test_a_long_body_of_unknown_length_over_http2_is_accepted(
    *, edge_envoy: RunningEnvoy, pki: DevPki, widgets: WidgetStore, size: int
) -> None:
    answer = h2_request(edge_envoy, pki, "POST", WIDGETS, chunks=_widget_body(size))

    assert answer.status == 201, answer.status
    assert len(json.loads(answer.body)["name"]) == size - len(b'{"name":""}')


@pytest.mark.parametrize("length", [False, True], ids=["unknown-length", "content-length"])
def test_a_body_over_the_limit_over_http2_is_a_prompt_413(
    *, edge_envoy: RunningEnvoy, pki: DevPki, widgets: WidgetStore, length: bool
) -> None:
    size = MAX_REQUEST_BODY_BYTES + 100_000
    headers = [*JSON, ("content-length", str(size))] if length else JSON

    answer = h2_request(
        edge_envoy, pki, "POST", WIDGETS, headers=headers, chunks=_widget_body(size)
    )

    assert answer.status == 413, answer.status
    assert str(MAX_REQUEST_BODY_BYTES) in str(answer.problem()["detail"])
    assert widgets.widgets == {}
