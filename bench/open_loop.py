"""An open-loop HTTP/2 load generator: GETs sent on a fixed schedule over one TLS connection,
each latency measured from the time the request was *scheduled*, not sent (free of
coordinated omission: a stalled server cannot slow the offered rate nor hide the wait).

h2load cannot present a client certificate, and its `--rps` sends in bursts on a 10 ms timer
and measures from the send, so the full stack's latency is measured with this instead.

Why HTTP/2 by hand: the generator shares a small machine with the gateway, so its own CPU is
taken from the stack it measures and its own lateness is inside every latency figure. With
asyncio and the `h2` library it cost 650-800 us of CPU per request (h2's state machine,
HPACK, asyncio); this one thread speaks just the frames a GET needs with `struct`:

- the request's header block is encoded once (literal fields without indexing, no Huffman),
  so every request is one HEADERS frame (END_STREAM|END_HEADERS) with a new odd stream id;
- we send SETTINGS ENABLE_PUSH 0, INITIAL_WINDOW_SIZE 2**31-1 (no stream ever waits for a
  WINDOW_UPDATE) and HEADER_TABLE_SIZE 0, and open the connection window to its maximum
  (topped up after every ~1 GiB received); we ACK the server's SETTINGS and PINGs and honour
  its SETTINGS_MAX_CONCURRENT_STREAMS (requests beyond it wait in a backlog, counted in
  `queued`, still measured from their scheduled time);
- every response header block (CONTINUATION frames joined) goes through one `hpack` Decoder
  in connection order, which keeps the HPACK state exact. The one shortcut: once the server
  has applied our HEADER_TABLE_SIZE 0 after our SETTINGS were ACKed (the decoder's table is
  at size 0 and may not grow), no block can change the decoder's state, so a block is only
  read as far as its :status (the first field, RFC 9113 8.3) when that is a static-table
  index (0x88-0x8e: 200, 204, 206, 304, 400, 404, 500); any other block is fully decoded;
  trailers and blocks of streams given up on are then not decoded at all (no status needed).

TLS is a non-blocking `ssl.SSLSocket`: per request one write, per wake-up one read (OpenSSL
reads no further than the record it returns, so select(2) sees whatever is left). On the
2-CPU dev VM this costs ~110-160 us of CPU per request, nearly all of it the kernel's: two
select sleeps and wake-ups per request (one for the schedule, one for the response; ~23 us
of CPU each there) and the loopback TCP work of the write and the reads. The Python work per
request is ~3 us when measured in a hot loop.

A stream ends at END_STREAM on DATA or HEADERS (trailers); its latency is the time that frame
was read minus its scheduled time, for 2xx responses. RST_STREAM, a GOAWAY's unprocessed
streams (above its last stream id) and streams unanswered when the connection closes or the
drain time runs out count as errors. GOAWAY ends the run: nothing more is sent. 1xx
responses are skipped (the final status counts).

Not supported (not needed for a GET load): request bodies, header blocks over 16 KiB (would
need CONTINUATION on send), server push (refused by our SETTINGS), more than 2**30 requests
on one connection, validation of response header blocks once the fast path applies.

The loop runs on select(2), whose timeout has microsecond resolution (epoll's is a
millisecond, which would add up to 1 ms of the generator's own lateness to every figure).
How late the generator sent is reported (`send_lag_*`): if it is large, the generator, not
the gateway, was short of CPU.
"""

from __future__ import annotations

import math
import select
import socket
import ssl
import struct
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import hpack
import hpack.exceptions

from devstack.load import percentile

READ_SIZE = 256 * 1024
CONNECT_TIMEOUT_S = 10.0

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types (RFC 9113 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
CONTINUATION = 9
# Flags.
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Settings.
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
# Top the connection window up once this much has been received since the last update.
WINDOW_TOP_UP = 2**30
# The smallest SETTINGS_MAX_FRAME_SIZE a server may have: our one HEADERS frame must fit.
MIN_MAX_FRAME_SIZE = 16_384
UNLIMITED_STREAMS = 2**31

# length (24 bits as 8 + 16), type, flags, stream id.
FRAME_HEADER = struct.Struct(">BHBBL")
SETTING = struct.Struct(">HL")
# A whole header block read only as far as an indexed :status of the static table.
STATIC_STATUS = {0x88: 200, 0x89: 204, 0x8A: 206, 0x8B: 304, 0x8C: 400, 0x8D: 404, 0x8E: 500}
# A dynamic table size update to 0 (001 prefix, 5-bit integer 0).
TABLE_SIZE_ZERO = 0x20


@dataclass
class OpenLoopResult:
    """What one rate's measured period got back (the warm-up excluded)."""

    rate: float
    duration_s: float
    sent: int = 0
    # From the scheduled time to the end of the response, of every 2xx response.
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    # Streams reset, or unanswered when the connection closed or the wait ran out.
    errors: int = 0
    # How late the generator got to each request against its schedule (its own lateness:
    # large values mean it was short of CPU).
    send_lags_s: list[float] = field(default_factory=list)
    # Requests that had to wait for a free stream (the server's concurrent-stream cap).
    queued: int = 0

    @property
    def failed(self) -> int:
        """Non-2xx responses and errors."""
        bad = sum(count for status, count in self.statuses.items() if not 200 <= status < 300)
        return bad + self.errors

    def latency_ms(self, fraction: float) -> float:
        return percentile(self.latencies_s, fraction) * 1000

    @property
    def max_ms(self) -> float:
        return max(self.latencies_s, default=math.nan) * 1000


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    length = len(payload)
    return FRAME_HEADER.pack(length >> 16, length & 0xFFFF, frame_type, flags, stream_id) + payload


def _hpack_integer(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) in a `prefix_bits` prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    encoded = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 0x80:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def encode_header_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """`headers` as literal fields without indexing with literal names, no Huffman: a block
    that needs no encoder state, so one encoding serves every request."""
    block = bytearray()
    for name, value in headers:
        block.append(0x00)
        block += _hpack_integer(len(name), 7) + name
        block += _hpack_integer(len(value), 7) + value
    return bytes(block)


@dataclass(slots=True)
class _Stream:
    scheduled: float
    # The rate whose measured period sent it (None in a warm-up).
    result: OpenLoopResult | None
    # The final status (0 until its response headers arrive).
    status: int = 0


class _Connection:
    """One HTTP/2 connection over a non-blocking TLS socket: requests written by `submit`,
    everything the server sends read by `poll`."""

    def __init__(self, sock: ssl.SSLSocket, request_block: bytes) -> None:
        if len(request_block) > MIN_MAX_FRAME_SIZE:
            raise ValueError("the request's header block does not fit one frame")
        self.sock = sock
        self.fd = sock.fileno()
        settings = b"".join(
            SETTING.pack(ident, value)
            for ident, value in (
                (SETTINGS_ENABLE_PUSH, 0),
                (SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW),
                (SETTINGS_HEADER_TABLE_SIZE, 0),
            )
        )
        self.outgoing = bytearray(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))
        )
        # Bytes that one send could not take: a TLS write must be retried with the same bytes.
        self.unsent = b""
        self.incoming = b""
        # One buffer for every read: a fresh 256 KiB object per read costs more than the read.
        self.read_buffer = bytearray(READ_SIZE)
        self.read_view = memoryview(self.read_buffer)
        # The HEADERS frame header without its stream id.
        self.request_head = frame(HEADERS, END_STREAM | END_HEADERS, 0, request_block)[:5]
        self.request_block = request_block
        self.next_stream_id = 1
        self.decoder = hpack.Decoder()
        # True once no header block can change the decoder's state (see the module docstring).
        self.table_closed = False
        self.received_since_window_update = 0
        self.max_streams = UNLIMITED_STREAMS
        self.streams: dict[int, _Stream] = {}
        # Streams given up on (counted as errors) that the server may still hold open: they
        # still count against its concurrent-stream cap until they end.
        self.abandoned: set[int] = set()
        self.backlog: deque[_Stream] = deque()
        # A header block awaiting CONTINUATION frames: stream id (0 for a push promise),
        # END_STREAM, fragments.
        self.continued: tuple[int, bool, bytearray] | None = None
        self.open = True
        self.going_away = False
        self.flush()

    @property
    def accepting(self) -> bool:
        """Whether new requests may still be sent."""
        return self.open and not self.going_away

    def submit(self, scheduled: float, result: OpenLoopResult | None, now: float) -> None:
        """Send now, or as soon as a stream is free: the server caps the streams open at once
        (SETTINGS_MAX_CONCURRENT_STREAMS), and a request waiting for one is still measured
        from its scheduled time."""
        stream = _Stream(scheduled, result)
        if result is not None:
            result.sent += 1
            result.send_lags_s.append(now - scheduled)
        if self.backlog or len(self.streams) + len(self.abandoned) >= self.max_streams:
            self.backlog.append(stream)
            if result is not None:
                result.queued += 1
            return
        self._start(stream)
        self.flush()

    def _start(self, stream: _Stream) -> None:
        stream_id = self.next_stream_id
        self.next_stream_id += 2
        self.outgoing += self.request_head
        self.outgoing += stream_id.to_bytes(4, "big")
        self.outgoing += self.request_block
        self.streams[stream_id] = stream

    def _pump(self) -> None:
        while self.backlog and len(self.streams) + len(self.abandoned) < self.max_streams:
            self._start(self.backlog.popleft())

    def flush(self) -> None:
        """Write what is pending, as far as the socket takes it."""
        while self.open:
            if not self.unsent:
                if not self.outgoing:
                    return
                self.unsent = bytes(self.outgoing)
                self.outgoing.clear()
            try:
                written = self.sock.send(self.unsent)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except OSError:
                self.open = False
                return
            self.unsent = self.unsent[written:]

    def poll(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the socket, then read and write what it allows."""
        writing = [self.fd] if self.unsent or self.outgoing else []
        readable, writable, _ = select.select([self.fd], writing, [], max(0.0, timeout_s))
        if readable:
            self.receive()
        if writable or self.outgoing:
            self.flush()

    def receive(self) -> None:
        """Read everything that arrived and act on every complete frame."""
        chunks: list[bytes] = []
        while True:
            try:
                size = self.sock.recv_into(self.read_buffer)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError:
                self.open = False
                break
            if not size:
                self.open = False
                break
            chunks.append(self.read_view[:size].tobytes())
            # OpenSSL reads no further than the record it returns (no read-ahead): with
            # nothing decrypted left, the rest is still in the socket and select sees it.
            if size < READ_SIZE and not self.sock.pending():
                break
        if chunks:
            received = b"".join(chunks) if len(chunks) > 1 else chunks[0]
            self._on_bytes(self.incoming + received if self.incoming else received)

    def _on_bytes(self, buffer: bytes) -> None:
        now = time.monotonic()
        offset = 0
        end = len(buffer)
        unpack = FRAME_HEADER.unpack_from
        while end - offset >= 9:
            length_high, length_low, frame_type, flags, stream_id = unpack(buffer, offset)
            payload_end = offset + 9 + (length_high << 16 | length_low)
            if payload_end > end:
                break
            if self.continued is not None and frame_type != CONTINUATION:
                self._fail()  # RFC 9113 6.10: nothing may come between
                return
            stream_id &= 0x7FFFFFFF
            if frame_type == DATA:
                # Only its length matters (flow control): the body is not copied out.
                self._on_data(flags, stream_id, payload_end - offset - 9, now)
                offset = payload_end
                continue
            payload = buffer[offset + 9 : payload_end]
            offset = payload_end
            if frame_type == HEADERS:
                self._on_headers(flags, stream_id, payload, now)
            elif frame_type == CONTINUATION:
                self._on_continuation(flags, payload, now)
            elif frame_type == RST_STREAM:
                self._on_reset(stream_id)
            elif frame_type == SETTINGS:
                self._on_settings(flags, payload)
            elif frame_type == PING:
                if not flags & ACK:
                    self.outgoing += frame(PING, ACK, 0, payload)
            elif frame_type == GOAWAY:
                self._on_goaway(payload)
            elif frame_type == PUSH_PROMISE:
                self._on_push_promise(flags, payload)
            if not self.open:
                return
        self.incoming = buffer[offset:]
        self._pump()

    def _on_data(self, flags: int, stream_id: int, length: int, now: float) -> None:
        self.received_since_window_update += length
        if self.received_since_window_update > WINDOW_TOP_UP:
            increment = self.received_since_window_update
            self.outgoing += frame(WINDOW_UPDATE, 0, 0, increment.to_bytes(4, "big"))
            self.received_since_window_update = 0
        if flags & END_STREAM:
            self._end(stream_id, now)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, now: float) -> None:
        start, padding = 0, 0
        if flags & PADDED:
            start, padding = 1, payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        fragment = payload[start : len(payload) - padding]
        if flags & END_HEADERS:
            self._on_header_block(stream_id, bool(flags & END_STREAM), fragment, now)
        else:
            self.continued = (stream_id, bool(flags & END_STREAM), bytearray(fragment))

    def _on_continuation(self, flags: int, payload: bytes, now: float) -> None:
        if self.continued is None:
            self._fail()
            return
        stream_id, end_stream, fragments = self.continued
        fragments += payload
        if flags & END_HEADERS:
            self.continued = None
            if stream_id:
                self._on_header_block(stream_id, end_stream, bytes(fragments), now)
            else:
                self._decode(bytes(fragments))

    def _on_push_promise(self, flags: int, payload: bytes) -> None:
        # Refused by our SETTINGS; its header block is still decoded: the HPACK state is the
        # connection's.
        start, padding = 4, 0
        if flags & PADDED:
            start, padding = 5, payload[0]
        fragment = payload[start : len(payload) - padding]
        if flags & END_HEADERS:
            self._decode(fragment)
        else:
            self.continued = (0, False, bytearray(fragment))

    def _on_header_block(self, stream_id: int, end_stream: bool, block: bytes, now: float) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.status:
            status = self._status(block)
            if not 100 <= status < 200:
                stream.status = status
        elif not self.table_closed:
            self._decode(block)
        if end_stream:
            self._end(stream_id, now)

    def _status(self, block: bytes) -> int:
        """The block's :status (0 if it has none), the decoder's state kept exact."""
        if self.table_closed:
            index = 0
            while index < len(block) and block[index] == TABLE_SIZE_ZERO:
                index += 1
            if index < len(block) and (status := STATIC_STATUS.get(block[index])):
                return status
        for name, value in self._decode(block):
            if name == b":status":
                return int(value)
        return 0

    def _decode(self, block: bytes) -> Iterable[tuple[bytes | str, bytes | str]]:
        try:
            headers = self.decoder.decode(block, raw=True)
        except hpack.exceptions.HPACKError:
            self._fail()
            return ()
        # The table can only grow back by a size update above the maximum we allow, which
        # the decoder rejects.
        self.table_closed = (
            self.decoder.max_allowed_table_size == 0 and self.decoder.header_table_size == 0
        )
        return headers

    def _end(self, stream_id: int, now: float) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            self.abandoned.discard(stream_id)
            return
        result = stream.result
        if result is not None:
            result.statuses[stream.status] += 1
            if 200 <= stream.status < 300:
                result.latencies_s.append(now - stream.scheduled)

    def _on_reset(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            self.abandoned.discard(stream_id)
        elif stream.result is not None:
            stream.result.errors += 1

    def _on_settings(self, flags: int, payload: bytes) -> None:
        if flags & ACK:
            # Our HEADER_TABLE_SIZE 0 binds the server's encoder from now on.
            self.decoder.max_allowed_table_size = 0
            return
        for offset in range(0, len(payload) - 5, 6):
            ident, value = SETTING.unpack_from(payload, offset)
            if ident == SETTINGS_MAX_CONCURRENT_STREAMS:
                self.max_streams = value
        self.outgoing += frame(SETTINGS, ACK, 0)

    def _on_goaway(self, payload: bytes) -> None:
        last_stream_id = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        self.going_away = True
        # Streams above the last one will never be processed.
        for stream_id in [stream_id for stream_id in self.streams if stream_id > last_stream_id]:
            self._on_reset(stream_id)
        self.abandoned = {stream_id for stream_id in self.abandoned if stream_id <= last_stream_id}
        self.give_up_backlog()

    def _fail(self) -> None:
        """A connection error (bad framing, undecodable headers): stop using the connection."""
        self.open = False

    def give_up_backlog(self) -> None:
        """Count every request still waiting for a stream as an error and drop it."""
        for stream in self.backlog:
            if stream.result is not None:
                stream.result.errors += 1
        self.backlog.clear()

    def give_up(self) -> None:
        """Count everything unanswered as an error (of the rate that sent it), keeping the
        open streams' ids so that they still count against the server's stream cap."""
        for stream in self.streams.values():
            if stream.result is not None:
                stream.result.errors += 1
        self.abandoned.update(self.streams)
        self.streams.clear()
        self.give_up_backlog()

    def close(self) -> None:
        if self.open:
            last_stream_id = 0
            self.outgoing += frame(GOAWAY, 0, 0, last_stream_id.to_bytes(4, "big") + bytes(4))
            self.flush()
        self.sock.close()

    def run_rate(
        self, rate: float, duration_s: float, warmup_s: float, drain_s: float
    ) -> OpenLoopResult:
        """Send at `rate` for the warm-up and the measured period, then wait up to `drain_s`
        for the answers."""
        result = OpenLoopResult(rate, duration_s)
        warmup = int(rate * warmup_s)
        total = warmup + max(1, int(rate * duration_s))
        start = time.monotonic() + 0.01
        for index in range(total):
            scheduled = start + index / rate
            now = time.monotonic()
            while now < scheduled and self.accepting:
                self.poll(scheduled - now)
                now = time.monotonic()
            if not self.accepting:
                break
            self.submit(scheduled, result if index >= warmup else None, now)
        deadline = time.monotonic() + drain_s
        while (self.streams or self.backlog) and self.open:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.poll(remaining)
        # Whatever is still unanswered is an error of this rate, not the next one's.
        self.give_up()
        return result


def _connect(host: str, port: int, tls: ssl.SSLContext, server_name: str) -> ssl.SSLSocket:
    tls.set_alpn_protocols(["h2"])
    raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    # One small frame per request: never held back waiting for an ACK (Nagle).
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock = tls.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise
    if sock.selected_alpn_protocol() != "h2":
        sock.close()
        raise ConnectionError(f"{host}:{port} did not negotiate HTTP/2 (ALPN h2)")
    sock.setblocking(False)
    return sock


def run_open_loop(
    host: str,
    port: int,
    tls: ssl.SSLContext,
    *,
    server_name: str,
    path: str,
    rates: list[float],
    duration_s: float,
    warmup_s: float = 1.0,
    drain_s: float = 5.0,
    extra_headers: dict[str, str] | None = None,
) -> list[OpenLoopResult]:
    """GET `path` at each of `rates` requests/s in turn, each for `warmup_s` (discarded) and
    then `duration_s` seconds, over one HTTP/2 connection (kept between rates)."""
    headers = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", f"{server_name}:{port}".encode()),
        (b":path", path.encode()),
        (b"accept", b"application/json"),
        *((name.lower().encode(), value.encode()) for name, value in (extra_headers or {}).items()),
    ]
    connection = _Connection(_connect(host, port, tls, server_name), encode_header_block(headers))
    try:
        return [connection.run_rate(rate, duration_s, warmup_s, drain_s) for rate in rates]
    finally:
        connection.close()
