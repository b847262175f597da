"""Notification delivery end to end: the real notifier process (`python -m server.notifier`)
on a real redis-server, changes written through InventoryStore.apply (the Lua path the
core uses), signed webhooks received by real HTTP servers in separate processes.

Run: .venv/bin/python bench/notify_bench.py [--rate 200] [--seconds 10] [--backlog 20000]

Prints, each beside the baseline measured in the same run (a bare keep-alive POST loop from
this process to the same receiver: what the receiver and the loopback cost by themselves):
- end-to-end latency, inventory change -> notification received, p50/p99 at --rate
  changes/s for one subscription (target: p99 < 50 ms);
- signed deliveries/s one notifier process sustains over a backlog spread over
  several subscriptions (target: >= 2,000/s).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from o2ims.adapter.v1 import domain_pb2

from adapters.contract import serialize
from devstack.load import percentile
from devstack.processes import free_port, wait_until
from devstack.redis_server import RedisServer
from server.store import Change, InventoryStore, connect
from server.subscriptions.store import (
    INVENTORY_SUBSCRIPTIONS,
    SubscriptionStore,
)

# The bench/ scripts import their siblings as top-level modules (bench/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_cpu import cpu_seconds

REPO = Path(__file__).resolve().parent.parent
POOL = "9a6a0d5e-0000-4000-8000-000000000001"

SECRET_KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(SECRET_KEY).decode()


@dataclass
class Arrivals:
    """What a receiver process has seen since the last GET."""

    seen: list[tuple[str, float]] = field(default_factory=list)
    bad_signatures: int = 0


class _ReceiverProtocol(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection of the bench receiver. POST: check the Standard
    Webhooks signature, remember (resourceId, arrival time) and answer 204; GET: answer
    the remembered arrivals as JSON and forget them. Deliberately minimal (no chunked
    bodies, no pipelining limits): it serves only the notifier and this bench, and costs
    a small fraction of what the process under test spends per request, so the bench
    measures the notifier rather than its receiver."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            if lines[0].startswith("GET "):
                payload = json.dumps(
                    {"seen": self.arrivals.seen, "bad": self.arrivals.bad_signatures}
                ).encode()
                self.arrivals.seen = []
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
                )
                continue
            now = time.time()
            if not lines[0].startswith("POST /baseline ") and not _signed(headers, body):
                self.arrivals.bad_signatures += 1
            notification = json.loads(body)
            # An inventory notification's object, or an alarm notification's resource.
            state = notification.get("postObjectState") or {}
            key = state.get("resourceId") or notification.get("resourceID", "")
            self.arrivals.seen.append((key, now))
            self.transport.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")


def _signed(headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, independent of the notifier's code."""
    if "webhook-id" not in headers or "webhook-timestamp" not in headers:
        return False
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(SECRET_KEY, signed, hashlib.sha256).digest()).decode()
    offered = [part.split(",", 1)[-1] for part in headers.get("webhook-signature", "").split()]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def serve_receiver(port: int) -> None:
    arrivals = Arrivals()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: _ReceiverProtocol(arrivals), "127.0.0.1", port
        )
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def resource_change(resource_id: str, generation: int) -> Change:
    return Change(
        "resource",
        resource_id,
        serialize(
            domain_pb2.InventoryObject(
                resource=domain_pb2.Resource(
                    resource_id=resource_id,
                    resource_pool_id=POOL,
                    name=f"host-{resource_id[:8]}",
                    description=f"generation {generation}",
                )
            )
        ),
    )


class ReceiverProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-receiver", str(self.port)]
        )
        self.bad_signatures = 0
        wait_until(self._up, 10, "the receiver")

    def _up(self) -> bool:
        self.dump()
        return True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def dump(self) -> list[tuple[str, float]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.request("GET", "/dump")
        answer = json.loads(connection.getresponse().read())
        connection.close()
        self.bad_signatures = int(answer["bad"])
        return [(resource_id, at) for resource_id, at in answer["seen"]]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


def baseline(receiver: ReceiverProcess, count: int) -> tuple[float, float, float]:
    """A bare keep-alive POST loop: (p50 s, p99 s, posts/s)."""
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    body = json.dumps({"postObjectState": {"resourceId": "baseline"}}).encode()
    times = []
    started = time.perf_counter()
    for _ in range(count):
        begin = time.perf_counter()
        connection.request(
            "POST", "/baseline", body=body, headers={"Content-Type": "application/json"}
        )
        connection.getresponse().read()
        times.append(time.perf_counter() - begin)
    elapsed = time.perf_counter() - started
    connection.close()
    receiver.dump()
    return statistics.median(times), percentile(times, 0.99), count / elapsed


def start_notifier(
    redis_url: str, log: Path, *, ops: int | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A real `python -m server.notifier`, once its /readyz answers (on `ops`, a free port
    unless given)."""
    ops = ops or free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "NETWEAVE_WEBHOOK_SECRET": SECRET,
        "NETWEAVE_NOTIFIER_OPS_PORT": str(ops),
        "NETWEAVE_CALLBACK_ALLOW_HTTP": "1",
        "NETWEAVE_CALLBACK_ALLOWED_CIDRS": "127.0.0.0/8",
        "NETWEAVE_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "server.notifier"],
        cwd=REPO,
        env=env,
        stderr=log.open("ab"),
    )
    wait_until(lambda: _get(f"http://127.0.0.1:{ops}/readyz") == 200, 15, "the notifier's /readyz")
    return process


def _get(url: str) -> int:
    host, _, port = url.removeprefix("http://").split("/")[0].partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=2)
    connection.request("GET", "/" + url.split("/", 3)[3])
    status = connection.getresponse().status
    connection.close()
    return status


def subscribe(redis_url: str, callback: str) -> str:
    return subscribe_many(redis_url, [callback])[0]


def subscribe_many(redis_url: str, callbacks: list[str]) -> list[str]:
    """Subscriptions (no filter), one per callback, created through the core's subscription
    store (~0.1 ms each: 10,000 in about a second)."""
    client = connect(redis_url)
    store = SubscriptionStore(client)
    created = [
        store.create(
            INVENTORY_SUBSCRIPTIONS,
            str(uuid.uuid4()),
            callback=callback,
            filter_="",
            consumer_subscription_id=str(uuid.uuid4()),
            api_version="v1",
        ).subscription_id
        for callback in callbacks
    ]
    client.close()
    return created


def unsubscribe(redis_url: str, subscription_id: str) -> None:
    client = connect(redis_url)
    SubscriptionStore(client).delete(INVENTORY_SUBSCRIPTIONS, subscription_id)
    client.close()


def wait_count(
    receivers: list[ReceiverProcess], seen: list[list[tuple[str, float]]], want: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while sum(len(s) for s in seen) < want and time.monotonic() < deadline:
        time.sleep(0.2)
        for index, receiver in enumerate(receivers):
            seen[index].extend(receiver.dump())


def latency_run(
    redis_url: str, rate: int, seconds: float, receiver: ReceiverProcess
) -> list[float]:
    subscription_id = subscribe(redis_url, receiver.url + "/latency")
    # Steady state: a notifier has taken the subscription (within a scheduler tick).
    time.sleep(1.0)
    store = InventoryStore(connect(redis_url))
    ids = [str(uuid.uuid4()) for _ in range(int(rate * seconds))]
    changed_at: dict[str, float] = {}
    started = time.perf_counter()
    for index, resource_id in enumerate(ids):
        target = started + index / rate
        pause = target - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        changed_at[resource_id] = time.time()
        store.apply("bench", [resource_change(resource_id, 0)])
    seen: list[list[tuple[str, float]]] = [[]]
    wait_count([receiver], seen, len(ids), 60)
    unsubscribe(redis_url, subscription_id)
    return [arrived - changed_at[rid] for rid, arrived in seen[0] if rid in changed_at]


def throughput_run(
    redis_url: str, backlog: int, receivers: list[ReceiverProcess], subscriptions: int
) -> tuple[int, float]:
    for index in range(subscriptions):
        subscribe(redis_url, f"{receivers[index % len(receivers)].url}/t{index}")
    store = InventoryStore(connect(redis_url))
    changes = backlog // subscriptions
    store.apply("bench", [resource_change(str(uuid.uuid4()), 1) for _ in range(changes)])
    seen: list[list[tuple[str, float]]] = [[] for _ in receivers]
    wait_count(receivers, seen, changes * subscriptions, 180)
    arrivals = sorted(at for found in seen for _, at in found)
    # From the first delivery to the last: the steady rate, start-up excluded.
    return len(arrivals), arrivals[-1] - arrivals[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--subscriptions", type=int, default=8)
    parser.add_argument("--serve-receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver(args.serve_receiver)
        return

    with tempfile.TemporaryDirectory() as scratch:
        redis_server = RedisServer(Path(scratch) / "redis").start()
        receivers = [ReceiverProcess(), ReceiverProcess()]
        notifier: subprocess.Popen[bytes] | None = None
        try:
            base_p50, base_p99, base_rate = baseline(receivers[0], 3000)
            notifier = start_notifier(redis_server.url, Path(scratch) / "notifier.log")
            latencies = latency_run(redis_server.url, args.rate, args.seconds, receivers[0])
            cpu_before = cpu_seconds(notifier.pid)
            delivered, elapsed = throughput_run(
                redis_server.url, args.backlog, receivers, args.subscriptions
            )
            notifier_cpu = cpu_seconds(notifier.pid) - cpu_before
            bad_signatures = sum(receiver.bad_signatures for receiver in receivers)
        finally:
            if notifier is not None:
                notifier.terminate()
                notifier.wait(10)
            for receiver in receivers:
                receiver.stop()
            redis_server.stop()

    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    rate = delivered / elapsed if elapsed > 0 else float("nan")
    report: dict[str, Any] = {
        "baseline_post_p50_ms": round(base_p50 * 1000, 3),
        "baseline_post_p99_ms": round(base_p99 * 1000, 3),
        "baseline_posts_per_s": round(base_rate),
        "latency_changes": len(latencies),
        "latency_rate_per_s": args.rate,
        "latency_p50_ms": round(p50 * 1000, 2),
        "latency_p99_ms": round(p99 * 1000, 2),
        "latency_p99_vs_baseline_p99": round(p99 / base_p99, 1),
        "throughput_deliveries": delivered,
        "throughput_subscriptions": args.subscriptions,
        "throughput_deliveries_per_s": round(rate),
        "throughput_vs_baseline": round(rate / base_rate, 2),
        # Matching included: the notifier turns the changes into notifications meanwhile.
        "throughput_notifier_cpu_us_per_delivery": round(notifier_cpu / delivered * 1e6),
        "bad_signatures": bad_signatures,
    }
    print(json.dumps(report, indent=2))
    print(
        f"latency p99 {p99 * 1000:.1f} ms (target < 50 ms): "
        f"{'OK' if p99 < 0.05 else 'MISSED'}; "
        f"{rate:.0f} signed deliveries/s (target >= 2000): "
        f"{'OK' if rate >= 2000 else 'MISSED'}"
        + (f"; {bad_signatures} BAD SIGNATURES" if bad_signatures else "")
    )


if __name__ == "__main__":
    main()
