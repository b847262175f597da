"""An open-loop HTTP/2 load generator: GETs sent on a fixed schedule over one TLS connection,
each latency measured from the time the request was *scheduled*, not sent (free of
coordinated omission: a stalled server cannot slow the offered rate nor hide the wait).

h2load cannot present a client certificate, and its `--rps` sends in bursts on a 10 ms timer
and measures from the send, so the full stack's latency is measured with this instead.

The event loop runs on select(2), whose timeout has microsecond resolution (epoll's is a
millisecond, which would add up to 1 ms of the generator's own lateness to every figure).
How late the generator sent is reported (`send_lag_*`): if it is large, the generator, not
the gateway, was short of CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import selectors
import ssl
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

READ_SIZE = 256 * 1024


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


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


@dataclass
class _Stream:
    scheduled: float
    measured: bool
    status: int = 0


class _Client:
    """One HTTP/2 connection: requests written by `send`, responses read by `read_loop`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                # The generator's own CPU competes with the gateway's on a small machine:
                # skip the per-header checks (a profile's top item after select and send).
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.h2.initiate_connection()
        # Large windows: responses never wait for a WINDOW_UPDATE from us.
        self.h2.increment_flow_control_window(2**30)
        self.writer.write(self.h2.data_to_send())
        self.streams: dict[int, _Stream] = {}
        self.backlog: deque[tuple[list[tuple[bytes, bytes]], _Stream]] = deque()
        self.result: OpenLoopResult | None = None
        self.closed = asyncio.Event()

    def send(self, headers: list[tuple[bytes, bytes]], scheduled: float, measured: bool) -> None:
        """Send now, or as soon as a stream is free: the server caps the streams open at once
        (SETTINGS_MAX_CONCURRENT_STREAMS), and a request waiting for one is still measured
        from its scheduled time."""
        if measured and self.result is not None:
            self.result.sent += 1
            self.result.send_lags_s.append(time.monotonic() - scheduled)
        if (
            self.backlog
            or self.h2.open_outbound_streams >= self.h2.remote_settings.max_concurrent_streams
        ):
            self.backlog.append((headers, _Stream(scheduled, measured)))
            if measured and self.result is not None:
                self.result.queued += 1
            return
        self._start(headers, _Stream(scheduled, measured))

    def _start(self, headers: list[tuple[bytes, bytes]], stream: _Stream) -> None:
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, headers, end_stream=True)
        self.writer.write(self.h2.data_to_send())
        self.streams[stream_id] = stream

    def _pump(self) -> None:
        limit = self.h2.remote_settings.max_concurrent_streams
        while self.backlog and self.h2.open_outbound_streams < limit:
            self._start(*self.backlog.popleft())

    async def read_loop(self) -> None:
        try:
            while data := await self.reader.read(READ_SIZE):
                now = time.monotonic()
                for event in self.h2.receive_data(data):
                    self._on_event(event, now)
                self._pump()
                if out := self.h2.data_to_send():
                    self.writer.write(out)
        finally:
            self.closed.set()

    def _on_event(self, event: h2.events.Event, now: float) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                status = dict(event.headers or []).get(b":status", b"0")
                stream.status = int(status)
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(
                event.flow_controlled_length or 0, event.stream_id or 0
            )
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.pop(event.stream_id or 0, None)
            if stream is not None and stream.measured and self.result is not None:
                self.result.statuses[stream.status] += 1
                if 200 <= stream.status < 300:
                    self.result.latencies_s.append(now - stream.scheduled)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id or 0, None)
            if stream is not None and stream.measured and self.result is not None:
                self.result.errors += 1


async def _run(
    address: tuple[str, int],
    tls: ssl.SSLContext,
    server_name: str,
    headers: list[tuple[bytes, bytes]],
    *,
    rates: list[float],
    duration_s: float,
    warmup_s: float,
    drain_s: float,
) -> list[OpenLoopResult]:
    tls.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(
        *address, ssl=tls, server_hostname=server_name, limit=READ_SIZE
    )
    client = _Client(reader, writer)
    reading = asyncio.create_task(client.read_loop())
    results: list[OpenLoopResult] = []
    try:
        for rate in rates:
            result = OpenLoopResult(rate, duration_s)
            client.result = result
            warmup = int(rate * warmup_s)
            total = warmup + max(1, int(rate * duration_s))
            start = time.monotonic() + 0.01
            for index in range(total):
                scheduled = start + index / rate
                delay = scheduled - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if client.closed.is_set():
                    break
                client.send(headers, scheduled, measured=index >= warmup)
            deadline = time.monotonic() + drain_s
            while (
                (client.streams or client.backlog)
                and not client.closed.is_set()
                and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.01)
            # Whatever is still unanswered is an error of this rate, not the next one's.
            unanswered = [*client.streams.values(), *(stream for _, stream in client.backlog)]
            result.errors += sum(1 for stream in unanswered if stream.measured)
            client.streams.clear()
            client.backlog.clear()
            results.append(result)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return results


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
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        return loop.run_until_complete(
            _run(
                (host, port),
                tls,
                server_name,
                headers,
                rates=rates,
                duration_s=duration_s,
                warmup_s=warmup_s,
                drain_s=drain_s,
            )
        )
    finally:
        loop.close()
