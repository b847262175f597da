"""A webhook receiver for trying notifications locally: prints every notification it gets
and whether its Standard Webhooks signature verifies with the dev secret.

    python -m devstack.receiver [--port 9999] [--secret-file .netweave/webhook-secret]

Subscribe with callback http://127.0.0.1:9999/notify, then edit the inventory file.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.receiver", description=__doc__)
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--secret-file", type=Path, default=Path(".netweave/webhook-secret"))
    args = parser.parse_args(argv)
    secret = decode_secret(args.secret_file.read_text()) if args.secret_file.exists() else b""

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
            try:
                shown = json.dumps(json.loads(body), indent=2)
            except ValueError:
                shown = body.decode(errors="replace")
            print(f"--- POST {self.path} ({verdict})\n{shown}", flush=True)
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # the optional reachability probe
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on http://127.0.0.1:{args.port}/ (Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
