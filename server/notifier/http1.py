"""The HTTP/1.1 exchange of a webhook POST on one kept-alive connection, written out rather
than through http.client: http.client parses every response's headers with the email
package and assembles a request header by header, ~200 us of CPU per POST, most of what
one delivery costs the notifier. This speaks only what a POST and its answer need:

- request: one write of the request line, Host, Content-Length, the caller's headers and
  the body; a target or header value with control characters is refused, not sent;
- response: the status line (interim 1xx responses skipped), headers (line length and
  count limited as http.client limits them), a body by Content-Length, chunked, or up to
  the close; at most `max_body` bytes are read, and a longer body, a `Connection: close`
  or an HTTP/1.0 answer closes the connection instead of keeping it.

Connecting stays with callbacks.PinnedConnection: the policy-checked address is the one
connected to, with TLS (SNI, verification, the client certificate) as before.
"""

from __future__ import annotations

import http.client
import re
import time
from dataclasses import dataclass
from typing import Final

from netweave.redaction import redact_url
from server.subscriptions.callbacks import PinnedConnection

# http.client's limits.
MAX_LINE: Final = 65536
MAX_HEADERS: Final = 100

# What http.client refuses in a request target (control characters and space) and in a
# header value (CR or LF: header injection).
_BAD_TARGET: Final = re.compile("[\x00-\x20\x7f]")
_BAD_VALUE: Final = re.compile("[\r\n]")


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    # False: the connection must not be used again (the server closes it, or the body
    # was not read to its end).
    reusable: bool
    # Where a 3xx pointed (never followed: the reason of the dead letter names it).
    location: str | None = None


class KeptAliveConnection:
    """One connected HTTP/1.1 connection; used by one thread at a time."""

    def __init__(self, pinned: PinnedConnection) -> None:
        pinned.connect()
        if pinned.sock is None:  # pragma: no cover - connect() sets it or raises
            raise OSError("not connected")
        self._pinned = pinned
        self._sock = pinned.sock
        self._reader = self._sock.makefile("rb")
        self.opened = time.monotonic()
        try:
            host = pinned.host.encode("ascii").decode()
        except UnicodeEncodeError:
            host = pinned.host.encode("idna").decode()
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal
        self._host = host if pinned.port == pinned.default_port else f"{host}:{pinned.port}"

    def close(self) -> None:
        self._reader.close()
        self._pinned.close()

    def post(self, target: str, headers: dict[str, str], body: bytes, max_body: int) -> Answer:
        """Send one POST and read its answer. Raises OSError or http.client.HTTPException
        (RemoteDisconnected when the server closed the connection before answering)."""
        if _BAD_TARGET.search(target):
            raise http.client.InvalidURL(
                f"URL can't contain control characters: {redact_url(target)!r}"
            )
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {self._host}",
            "Accept-Encoding: identity",
            f"Content-Length: {len(body)}",
        ]
        if _BAD_VALUE.search("".join(headers) + "".join(headers.values())):
            raise http.client.HTTPException("a header name or value contains CR or LF")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        lines.append("\r\n")
        self._sock.sendall("\r\n".join(lines).encode("latin-1") + body)
        return self._answer(max_body)

    def _answer(self, max_body: int) -> Answer:
        while True:
            version, status = self._status_line()
            headers = self._headers()
            if not 100 <= status < 200 or status == 101:
                break
            # An interim answer (100 Continue, 103 Early Hints): the final one follows.
        reusable = version == "HTTP/1.1" and "close" not in _tokens(headers.get("connection"))
        retry_after, location = headers.get("retry-after"), headers.get("location")
        if status in (204, 304) or 100 <= status < 200:
            return Answer(status, retry_after, reusable, location)
        if "chunked" in _tokens(headers.get("transfer-encoding")):
            complete = self._chunked(max_body)
        elif "content-length" in headers:
            complete = self._sized(headers["content-length"], max_body)
        else:
            # Delimited by the close: read what we allow, then close in any case.
            self._reader.read(max_body + 1)
            complete = False
        return Answer(status, retry_after, reusable and complete, location)

    def _line(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("response line")
        return line

    def _status_line(self) -> tuple[str, int]:
        line = self._line()
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        parts = line.decode("iso-8859-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise http.client.BadStatusLine(repr(line))
        code = parts[1]
        if len(code) != 3 or not code.isdigit():
            raise http.client.BadStatusLine(repr(line))
        return parts[0], int(code)

    def _headers(self) -> dict[str, str]:
        """The answer's headers, names lower-cased (the last of repeated ones)."""
        headers: dict[str, str] = {}
        last = ""
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return headers
            text = line.decode("iso-8859-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and last:  # obsolete line folding
                headers[last] += " " + text.strip()
                continue
            name, separator, value = text.partition(":")
            if not separator:
                raise http.client.HTTPException(f"malformed header line {text[:100]!r}")
            last = name.strip().lower()
            headers[last] = value.strip()
        raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")

    def _sized(self, declared: str, max_body: int) -> bool:
        if not declared.isdigit():
            raise http.client.HTTPException(f"invalid Content-Length {declared[:40]!r}")
        length = int(declared)
        if length > max_body:
            return False  # not worth reading: close instead
        if length and len(self._reader.read(length)) < length:
            raise http.client.IncompleteRead(b"", length)
        return True

    def _chunked(self, max_body: int) -> bool:
        total = 0
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise http.client.HTTPException("invalid chunk size") from None
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                return True
            total += size
            if total > max_body:
                return False
            if len(self._reader.read(size + 2)) < size + 2:  # the chunk and its CRLF
                raise http.client.IncompleteRead(b"", size)


def _tokens(value: str | None) -> list[str]:
    return [token.strip().lower() for token in value.split(",")] if value else []
