"""A real webhook receiver for the tests: a threaded HTTP/1.1 server on 127.0.0.1 (HTTPS
with a server TLS context) that records every request and answers as the test tells it
(status, delay, Retry-After), and an independent Standard Webhooks signature check."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devstack.processes import free_port, wait_until
from devstack.receiver import BurstServer


def _peer_certificate(connection: object) -> bytes:
    if isinstance(connection, ssl.SSLSocket):
        return connection.getpeercert(binary_form=True) or b""
    return b""


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived
    # The client certificate the sender presented (DER; HTTPS receivers), else b"".
    peer_certificate: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 204
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """Start with start(); `answer(request) -> Answer` decides each response (default 204).
    Only requests answered 2xx are in `delivered`; every request is in `requests`. With
    `tls` (a server context) it speaks HTTPS."""

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.requests: list[Received] = []
        self.delivered: list[Received] = []
        self.answer: Callable[[Received], Answer] = lambda _request: Answer()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: no request at all
                    self.close_connection = True
                    return
                request = Received(
                    self.command,
                    self.path,
                    {name.lower(): value for name, value in self.headers.items()},
                    body,
                    time.time(),
                    _peer_certificate(self.connection),
                )
                answer = receiver.answer(request)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                with receiver._lock:
                    receiver.requests.append(request)
                    if 200 <= answer.status < 300:
                        receiver.delivered.append(request)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = _handle  # noqa: N815
            do_GET = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = BurstServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def delivered_to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.delivered if r.path == path]

    def notifications(self, path: str) -> list[dict[str, Any]]:
        return [r.json() for r in self.delivered_to(path)]

    def wait_for(self, path: str, count: int, timeout: float = 20.0) -> list[Received]:
        def enough() -> list[Received] | None:
            found = self.delivered_to(path)
            return found if len(found) >= count else None

        return wait_until(enough, timeout, f"{count} notifications to {path}", interval=0.02)


def verify_signature(secret: bytes, request: Received, tolerance_s: float = 300.0) -> bool:
    """Standard Webhooks verification, written from the convention, not from the code
    under test: HMAC-SHA256 over "id.timestamp.body", base64, "v1," prefix; the timestamp
    must be recent."""
    message_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    expected = base64.b64encode(
        hmac.new(
            secret,
            message_id.encode() + b"." + timestamp.encode() + b"." + request.body,
            hashlib.sha256,
        ).digest()
    ).decode()
    offered = [s.split(",", 1)[1] for s in request.headers["webhook-signature"].split()]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)
