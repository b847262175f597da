"""A real HTTP reverse proxy in front of moto that can make one region fail.

The region comes from the SigV4 credential scope every boto3 request carries
(`Credential=KEY/DATE/REGION/SERVICE/aws4_request`), so one endpoint serves every region
and the test decides per region: forward, drop the connection (the region is unreachable),
or answer RequestLimitExceeded/ThrottlingException (AWS throttling)."""

from __future__ import annotations

import http.client
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

_SCOPE: Final = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
)
FORWARD: Final = "forward"
DROP: Final = "drop"
THROTTLE: Final = "throttle"

_EC2_THROTTLE: Final = (
    b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
    b"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    b"</Error></Errors><RequestID>netweave-test</RequestID></Response>"
)


class RegionProxy:
    """Forwards to `upstream_port` on 127.0.0.1; `modes[region]` picks what a region gets.
    In THROTTLE mode every `throttle_every`-th request of the region is refused."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.modes: dict[str, str] = {}
        self.throttle_every = 2
        self.requests: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                match = _SCOPE.search(self.headers.get("Authorization", ""))
                region, service = match.groups() if match else ("", "")
                with proxy._lock:
                    proxy.requests[region] += 1
                    mode = proxy.modes.get(region, FORWARD)
                    throttled = (
                        mode == THROTTLE and proxy.requests[region] % proxy.throttle_every == 0
                    )
                    if mode == DROP or throttled:
                        proxy.refused[region] += 1
                if mode == DROP:
                    self.close_connection = True
                    self.connection.close()
                    return
                if throttled:
                    self._throttle(service)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    headers = {
                        key: value
                        for key, value in self.headers.items()
                        if key.lower() not in _HOP_BY_HOP
                    }
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                    self.send_response(reply.status)
                    for key, value in reply.getheaders():
                        if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    upstream.close()

            def _throttle(self, service: str) -> None:
                if service == "ec2":
                    body, status, kind = _EC2_THROTTLE, 503, "text/xml"
                else:
                    body, status, kind = b'{"message":"Rate exceeded"}', 429, "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("x-amzn-ErrorType", "ThrottlingException")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, region: str, mode: str) -> None:
        with self._lock:
            self.modes[region] = mode

    def start(self) -> RegionProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
