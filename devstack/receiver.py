"""A webhook receiver for trying notifications locally: prints every notification it gets,
one line each (compact JSON), with whether its Standard Webhooks signature verifies with the
dev secret.

    python -m devstack.receiver [--port 9999] [--secret-file .netweave/webhook-secret]

Subscribe with callback http://127.0.0.1:9999/notify, then edit the inventory file.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO

from server.notifier.config import decode_webhook_secret
from server.notifier.signing import signature


def signature_ok(secret: bytes, headers: dict[str, str], body: bytes) -> bool:
    """Whether one of the offered signatures is the notifier's (server/notifier/signing.py)."""
    try:
        timestamp = int(headers.get("webhook-timestamp", ""))
    except ValueError:
        return False
    expected = signature(secret, headers.get("webhook-id", ""), timestamp, body)
    offered = headers.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def decode_secret(text: str) -> bytes:
    """The key of a secret file (as the notifier reads NETWEAVE_WEBHOOK_SECRET)."""
    return decode_webhook_secret(text.strip())


def notification_line(path: str, verdict: str, body: bytes) -> str:
    """One line for one notification: the path, the verdict, the body (compact JSON)."""
    try:
        shown = json.dumps(json.loads(body), separators=(",", ":"))
    except ValueError:
        shown = json.dumps(body.decode(errors="replace"))  # quoted: no newline breaks it
    return f"POST {path} ({verdict}) {shown}\n"


class BurstServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of notifiers' connections (several
    # workers, each opening its own) overflows it, and the kernel resets what it cannot queue.
    request_queue_size = 128


class LinePrinter:
    """Writes whole lines from many handler threads: one write and flush per line, under a
    lock, so concurrent notifications never interleave within a line."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.receiver", description=__doc__)
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--secret-file", type=Path, default=Path(".netweave/webhook-secret"))
    args = parser.parse_args(argv)
    secret = decode_secret(args.secret_file.read_text()) if args.secret_file.exists() else b""
    emit = LinePrinter(sys.stdout)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            verdict = (
                "signature ok"
                if secret and signature_ok(secret, headers, body)
                else ("SIGNATURE BAD" if secret else "no secret to check with")
            )
            emit(notification_line(self.path, verdict, body))
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # the optional reachability probe
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = BurstServer(("127.0.0.1", args.port), Handler)
    emit(f"listening on http://127.0.0.1:{args.port}/ (Ctrl-C stops)\n")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
