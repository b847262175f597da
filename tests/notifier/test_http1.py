"""The HTTP/1.1 exchange of a webhook POST (server/notifier/http1.py) against a scripted
socket server: what goes on the wire, every way an answer's body can be delimited, when a
connection may be kept, and what is refused instead of sent."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from server.notifier.http import WebhookClient
from server.notifier.http1 import KeptAliveConnection
from server.subscriptions.callbacks import CallbackPolicy, open_connection

BODY = b'{"notificationId":"n-1"}'


# In a script: close the connection at once, after the answer before it.
CLOSE = b""


class Scripted:
    """A server that, for each request it reads, sends the next scripted answer (bytes),
    or closes the connection without answering when the script says None; CLOSE closes
    it right after the answer before, without waiting for another request."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?x=1"

    def _serve(self) -> None:
        while self.answers:
            try:
                peer, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with peer:
                buffer = b""
                while self.answers:
                    while b"\r\n\r\n" not in buffer:
                        chunk = peer.recv(65536)
                        if not chunk:
                            break
                        buffer += chunk
                    if b"\r\n\r\n" not in buffer:
                        break  # the client closed the connection
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    length = next(
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    while len(rest) < length:
                        rest += peer.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + rest[:length])
                    buffer = rest[length:]
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    peer.sendall(answer)
                    if self.answers and self.answers[0] == CLOSE:
                        self.answers.pop(0)
                        break

    def close(self) -> None:
        self._listener.close()


@contextmanager
def scripted(*answers: bytes | None) -> Iterator[tuple[Scripted, KeptAliveConnection]]:
    server = Scripted(list(answers))
    pinned = open_connection(server.url, CallbackPolicy.development(), timeout=5.0)
    connection = KeptAliveConnection(pinned)
    try:
        yield server, connection
    finally:
        connection.close()
        server.close()


def test_the_request_is_one_post_with_host_length_headers_and_body() -> None:
    with scripted(b"HTTP/1.1 204 No Content\r\n\r\n") as (server, connection):
        answer = connection.post("/hook?x=1", {"webhook-id": "n-1"}, BODY, 1024)
    assert (answer.status, answer.reusable) == (204, True)
    (request,) = server.requests
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hook?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert f"Content-Length: {len(BODY)}" in lines
    assert "webhook-id: n-1" in lines
    assert body == BODY


def test_sized_and_chunked_bodies_are_read_and_the_connection_kept() -> None:
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    )
    with scripted(sized, chunked, b"HTTP/1.1 204 No Content\r\n\r\n") as (server, connection):
        statuses = [connection.post("/hook", {}, BODY, 1024) for _ in range(3)]
    assert [(a.status, a.reusable) for a in statuses] == [(200, True), (202, True), (204, True)]
    assert server.connections == 1, "all three on one kept-alive connection"


def test_interim_answers_are_skipped_and_retry_after_is_read() -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n"
    )
    with scripted(answer) as (_, connection):
        result = connection.post("/hook", {}, BODY, 1024)
    assert (result.status, result.retry_after, result.reusable) == (503, "7", True)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048,  # over the limit
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048,
        b"HTTP/1.1 200 OK\r\n\r\nuntil the close",  # no length: delimited by the close
    ],
    ids=["connection-close", "http-1.0", "too-long", "too-long-chunked", "close-delimited"],
)
def test_an_answer_that_ends_the_connection_is_not_reused(answer: bytes) -> None:
    with scripted(answer, CLOSE) as (_, connection):
        result = connection.post("/hook", {}, BODY, 1024)
    assert 200 <= result.status < 300 and not result.reusable


def test_a_close_without_an_answer_is_remote_disconnected() -> None:
    with (
        scripted(None) as (_, connection),
        pytest.raises(http.client.RemoteDisconnected),
    ):
        connection.post("/hook", {}, BODY, 1024)


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 2x4 What\r\n\r\n", b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"],
)
def test_a_malformed_answer_is_an_http_exception(answer: bytes) -> None:
    with scripted(answer) as (_, connection), pytest.raises(http.client.HTTPException):
        connection.post("/hook", {}, BODY, 1024)


def test_control_characters_in_the_target_or_a_header_are_refused_not_sent() -> None:
    with scripted(b"HTTP/1.1 204 No Content\r\n\r\n") as (server, connection):
        with pytest.raises(http.client.InvalidURL):
            connection.post("/hook\r\nX-Injected: 1", {}, BODY, 1024)
        with pytest.raises(http.client.HTTPException):
            connection.post("/hook", {"Authorization": "Bearer a\r\nX-Injected: 1"}, BODY, 1024)
        assert connection.post("/hook", {}, BODY, 1024).status == 204
    assert len(server.requests) == 1 and b"X-Injected" not in server.requests[0]


def test_the_client_reconnects_once_when_a_kept_alive_connection_was_closed() -> None:
    # The first connection answers once and is then closed by the server (idle timeout).
    server = Scripted([b"HTTP/1.1 204 No Content\r\n\r\n", None, b"HTTP/1.1 200 OK\r\n\r\n"])
    client = WebhookClient(b"secret", CallbackPolicy.development(), timeout_s=5.0)
    try:
        first = client.post(server.url, "n-1", BODY)
        second = client.post(server.url, "n-2", BODY)
    finally:
        client.close()
        server.close()
    assert first.ok and second.ok
    assert server.connections == 2
    assert [r.split(b"\r\n")[0] for r in server.requests] == [b"POST /hook?x=1 HTTP/1.1"] * 3
