"""The HTTP endpoint Alertmanager's `webhook_config` posts to.

    POST /webhook     a version 4 webhook payload, with `Authorization: Bearer <token>`
    GET  /metrics     Prometheus metrics (counts only; no token asked)
    GET  /healthz     200 while the receiver runs
    GET  /readyz      200 once its state is restored (before it listens): ready while it runs

Fails closed: it does not start without a token, compares tokens in constant time and answers
every refusal with an RFC 7807 problem body: 401 (no or a wrong token), 400 (not JSON, not
version "4", a field missing or of the wrong type, named), 411 (no Content-Length), 413 (over
the body limit; never read), 503 (the state file cannot be written: Alertmanager retries),
405 and 404 for other methods and paths. TLS is optional; with a client CA, client
certificates are required. Neither the token nor the Authorization header is ever logged.
"""

from __future__ import annotations

import hmac
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapters.alertmanager import metrics as outcomes
from adapters.alertmanager.alarms import AlarmBook, StateFileError
from adapters.alertmanager.metrics import AlertmanagerMetrics
from adapters.alertmanager.payload import PayloadError, parse_notification
from netweave.ops import OK, health_identity

WEBHOOK_PATH: Final = "/webhook"
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
# Alertmanager's request is small and quick; a client slower than this is cut off.
DEFAULT_IO_TIMEOUT_S: Final = 10.0
# Connections served at once; more are closed at accept (bounds the threads).
DEFAULT_MAX_CONNECTIONS: Final = 64
MAX_TOKEN_BYTES: Final = 4096
_REALM: Final = 'Bearer realm="netweave-alertmanager"'


class ReceiverConfigError(Exception):
    """The receiver cannot start as configured (no token, unusable TLS files)."""


def read_token(path: Path | None) -> str:
    """The bearer token in `path` (surrounding whitespace dropped); ReceiverConfigError if
    there is none: the receiver never runs unauthenticated."""
    if path is None:
        raise ReceiverConfigError(
            "no bearer token file (NETWEAVE_ALERTMANAGER_TOKEN_FILE, --token-file): "
            "the receiver does not run unauthenticated"
        )
    try:
        with path.open("rb") as file:
            data = file.read(MAX_TOKEN_BYTES + 1)
    except OSError as error:
        raise ReceiverConfigError(
            f"token file {path}: cannot read: {error.strerror or error}"
        ) from error
    if len(data) > MAX_TOKEN_BYTES:
        raise ReceiverConfigError(f"token file {path}: larger than {MAX_TOKEN_BYTES} bytes")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ReceiverConfigError(f"token file {path}: not ASCII text") from None
    if not token or any(char.isspace() for char in token) or not token.isprintable():
        raise ReceiverConfigError(
            f"token file {path}: must hold one token (printable, no whitespace)"
        )
    return token


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None


def server_tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2+ with the receiver's certificate; client certificates required by a CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(tls.cert), str(tls.key))
        if tls.client_ca is not None:
            context.load_verify_locations(cafile=str(tls.client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise ReceiverConfigError(f"TLS files: {error}") from error
    return context


def _problem(status: HTTPStatus, detail: str) -> bytes:
    body = {"type": "about:blank", "title": status.phrase, "status": int(status), "detail": detail}
    return json.dumps(body).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.receiver._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.receiver._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.receiver._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed TLS handshake, a client gone mid-request: nothing for the operator.
        self.receiver._log.debug("webhook_connection_failed", client=str(client_address[0]))


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "netweave-alertmanager"
    sys_version = ""

    def setup(self) -> None:
        receiver = self.server.receiver
        self.request.settimeout(receiver.io_timeout)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # here, on this connection's thread, not at accept
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the receiver logs its own structured lines (never headers)."""

    # --- dispatch ---------------------------------------------------------------------------

    def do_POST(self) -> None:
        if self._path() != WEBHOOK_PATH:
            self._reply_problem(HTTPStatus.NOT_FOUND, f"no such path; POST to {WEBHOOK_PATH}")
            return
        self.server.receiver._webhook(self)

    def do_GET(self) -> None:
        path = self._path()
        if path == "/metrics":
            body = generate_latest(self.server.receiver.metrics.registry)
            self._reply(HTTPStatus.OK, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            health = {**health_identity(self.server.receiver.started, OK), "checks": {}}
            self._reply(HTTPStatus.OK, json.dumps(health).encode(), "application/json")
        elif path == "/readyz":
            # Ready while it answers: its state was restored before it started listening,
            # and it depends on nothing else (the core reports its gRPC side as an adapter).
            checks = {"webhook": {"ok": True}, "state": {"ok": True}}
            ready = {**health_identity(self.server.receiver.started, OK), "checks": checks}
            self._reply(HTTPStatus.OK, json.dumps(ready).encode(), "application/json")
        else:
            self._other()

    def do_HEAD(self) -> None:
        self._other()

    def _other(self) -> None:
        if self._path() == WEBHOOK_PATH:
            self._reply_problem(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{self.command} is not allowed on {WEBHOOK_PATH}; use POST",
                {"Allow": "POST"},
            )
        else:
            self._reply_problem(HTTPStatus.NOT_FOUND, "no such path")

    def do_PUT(self) -> None:
        self._other()

    def do_DELETE(self) -> None:
        self._other()

    def do_PATCH(self) -> None:
        self._other()

    def do_OPTIONS(self) -> None:
        self._other()

    # --- replies ---------------------------------------------------------------------------

    def _path(self) -> str:
        return urlsplit(self.path).path

    def _reply(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not (self.command == "GET" or (self.command == "POST" and status == HTTPStatus.OK)):
            # A request body left unread would be taken for the next request: close instead.
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reply_problem(
        self, status: HTTPStatus, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        self._reply(status, _problem(status, detail), "application/problem+json", headers)

    def _reply_json(self, status: HTTPStatus, document: dict[str, Any]) -> None:
        self._reply(status, json.dumps(document).encode(), "application/json")


class WebhookReceiver:
    """The HTTP(S) server feeding one AlarmBook. start() binds and serves on a thread."""

    def __init__(
        self,
        book: AlarmBook,
        token: str,
        *,
        metrics: AlertmanagerMetrics,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        io_timeout: float = DEFAULT_IO_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        logger: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        if not token:
            raise ReceiverConfigError("an empty token would let anyone in")
        self._book = book
        self._token = token.encode()
        self.metrics = metrics
        self.started = time.monotonic()  # the health bodies' uptime counts from here
        self._host = host
        self._port = port
        self._tls = tls
        self.max_body_bytes = max_body_bytes
        self.io_timeout = io_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._log: structlog.stdlib.BoundLogger = logger or structlog.get_logger()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}{WEBHOOK_PATH}"

    def start(self) -> int:
        """Bind and serve; the bound port. OSError if the address cannot be bound."""
        server_class = _Server6 if ":" in self._host else _Server
        server = server_class((self._host, self._port), _Handler)
        server.receiver = self
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="webhook-receiver"
        )
        self._thread.daemon = True
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    # --- one webhook -------------------------------------------------------------------------

    def _authorized(self, handler: _Handler) -> bool:
        values = handler.headers.get_all("Authorization") or []
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), self._token)

    def _webhook(self, handler: _Handler) -> None:
        client = str(handler.client_address[0])
        if not self._authorized(handler):
            self._count(outcomes.UNAUTHORIZED, client)
            handler._reply_problem(
                HTTPStatus.UNAUTHORIZED,
                "a valid bearer token is required (Authorization: Bearer <token>)",
                {"WWW-Authenticate": _REALM},
            )
            return
        length_header = handler.headers.get("Content-Length")
        if handler.headers.get("Transfer-Encoding") or length_header is None:
            self._count(outcomes.MALFORMED, client)
            handler._reply_problem(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
            return
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self._count(outcomes.MALFORMED, client)
            handler._reply_problem(HTTPStatus.BAD_REQUEST, "Content-Length: not a length")
            return
        if length > self.max_body_bytes:
            self._count(outcomes.TOO_LARGE, client, length=length)
            handler._reply_problem(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body is {length} bytes, over the {self.max_body_bytes}-byte limit",
            )
            return
        body = handler.rfile.read(length)
        if len(body) < length:
            handler.close_connection = True
            return  # the client went away mid-body
        try:
            notification = parse_notification(body)
        except PayloadError as error:
            self._count(outcomes.MALFORMED, client, error=str(error)[:300])
            handler._reply_problem(HTTPStatus.BAD_REQUEST, str(error))
            return
        try:
            result = self._book.apply(notification)
        except StateFileError as error:
            self._count(outcomes.STATE_ERROR, client, error=str(error))
            handler._reply_problem(
                HTTPStatus.SERVICE_UNAVAILABLE, "the adapter cannot record alarms right now"
            )
            return
        self._count(
            outcomes.ACCEPTED,
            client,
            receiver=notification.receiver,
            status=notification.status,
            alerts=len(notification.alerts),
            truncated=notification.truncated_alerts,
        )
        if notification.truncated_alerts:
            self._log.warning(
                "webhook_alerts_truncated",
                truncated=notification.truncated_alerts,
                hint="raise max_alerts in the webhook_config: truncated alerts are not seen",
            )
        handler._reply_json(
            HTTPStatus.OK, {**result.as_json(), "active": self._book.active_count()}
        )

    def _count(self, outcome: str, client: str, **fields: Any) -> None:
        self.metrics.webhooks.labels(outcome).inc()
        log = self._log.info if outcome == outcomes.ACCEPTED else self._log.warning
        log("webhook_received", outcome=outcome, client=client, **fields)
