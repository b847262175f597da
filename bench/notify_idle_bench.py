"""What an idle notifier costs at many subscriptions, and how fast a burst goes out then.

A real redis-server, a real notifier process (`python -m server.notifier`), N inventory
subscriptions created through the core's subscription store, all to one local receiver
(bench/notify_bench.py's). For each N:
- idle Redis commands/s: the INFO commandstats delta over --idle-s seconds with no
  traffic (the bench's own INFO calls excluded), with the busiest commands;
- the notifier's threads (/proc/PID/status Threads) and RSS (VmRSS), and its CPU while idle;
- delivery latency p50/p99, inventory change -> notification received, of a burst of
  events (each one notifies every subscription: --deliveries in all, at least one event).

Run: .venv/bin/python bench/notify_idle_bench.py [--subscriptions 10,1000,10000]
     [--idle-s 10] [--deliveries 2000]

Targets: idle commands/s independent of N, threads bounded, p99 at 10 subscriptions no
worse than before.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from devstack.load import percentile
from devstack.processes import free_port, metric_sum, wait_until
from devstack.redis_server import RedisServer, command_calls
from server.store import InventoryStore, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

from notify_bench import (  # the notification bench's receiver and helpers
    ReceiverProcess,
    resource_change,
    start_notifier,
    subscribe_many,
    wait_count,
)
from proc_cpu import cpu_seconds, rss_mib, thread_count


def owned(ops: int) -> int:
    """Subscriptions the notifier delivers, from its /metrics."""
    connection = http.client.HTTPConnection("127.0.0.1", ops, timeout=5)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    return int(metric_sum(text, "o2ims_notifier_subscriptions_owned"))


def measure(
    redis_url: str, count: int, receiver: ReceiverProcess, scratch: Path, args: argparse.Namespace
) -> dict[str, Any]:
    client = connect(redis_url)
    client.flushall()
    started = time.monotonic()
    subscribe_many(redis_url, [f"{receiver.url}/s{index}" for index in range(count)])
    created_s = time.monotonic() - started
    ops = free_port()
    notifier = start_notifier(redis_url, scratch / f"notifier-{count}.log", ops=ops)
    try:
        started = time.monotonic()
        wait_until(lambda: owned(ops) == count, 300, f"the notifier owning {count} subscriptions")
        # Workers set up (consumer groups, recovery) after taking their leases: a few
        # commands each, then nothing. Idle once a second passes with few commands.
        settled = command_calls(client)
        for _ in range(300):
            time.sleep(1.0)
            now = command_calls(client)
            if sum(now.values()) - sum(settled.values()) < 200:
                break
            settled = now
        taken_s = time.monotonic() - started
        before, cpu_before = command_calls(client), cpu_seconds(notifier.pid)
        time.sleep(args.idle_s)
        after, cpu_after = command_calls(client), cpu_seconds(notifier.pid)
        threads, rss = thread_count(notifier.pid), rss_mib(notifier.pid)
        delta = {
            name: calls - before.get(name, 0)
            for name, calls in after.items()
            if calls - before.get(name, 0) > 0
        }
        delta["info"] = delta.get("info", 0) - 1  # our own second INFO
        idle_total = sum(delta.values())
        busiest = sorted(delta.items(), key=lambda item: -item[1])[:5]

        store = InventoryStore(connect(redis_url))
        burst_cpu = cpu_seconds(notifier.pid)
        events = max(1, args.deliveries // count)
        changed_at: dict[str, float] = {}
        for _ in range(events):
            resource_id = str(uuid.uuid4())
            changed_at[resource_id] = time.time()
            store.apply("bench", [resource_change(resource_id, 0)])
            time.sleep(0.01)
        seen: list[list[tuple[str, float]]] = [[]]
        wait_count([receiver], seen, events * count, 120)
        latencies = [at - changed_at[rid] for rid, at in seen[0] if rid in changed_at]
        burst_cpu = cpu_seconds(notifier.pid) - burst_cpu
    finally:
        notifier.terminate()
        notifier.wait(30)
        client.close()
    return {
        "subscriptions": count,
        "create_s": round(created_s, 1),
        "take_s": round(taken_s, 1),
        "idle_commands_per_s": round(idle_total / args.idle_s, 1),
        "idle_busiest_per_s": {name: round(calls / args.idle_s, 1) for name, calls in busiest},
        "idle_notifier_cpu_pct": round((cpu_after - cpu_before) / args.idle_s * 100, 1),
        "threads": threads,
        "rss_mib": round(rss, 1),
        "burst_events": events,
        "burst_deliveries": len(latencies),
        "burst_expected": events * count,
        # Matching included: robust to a busy machine, unlike the latencies.
        "burst_notifier_cpu_us_per_delivery": round(burst_cpu / max(1, len(latencies)) * 1e6),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", default="10,1000,10000")
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--deliveries", type=int, default=2000)
    args = parser.parse_args()
    counts = [int(part) for part in args.subscriptions.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        redis_server = RedisServer(Path(scratch) / "redis").start()
        receiver = ReceiverProcess()
        try:
            for count in counts:
                result = measure(redis_server.url, count, receiver, Path(scratch), args)
                print(json.dumps(result), flush=True)
                results.append(result)
        finally:
            receiver.stop()
            redis_server.stop()
    print(
        f"{'subs':>6} {'idle cmd/s':>10} {'threads':>7} {'RSS MiB':>8} "
        f"{'idle CPU%':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/dlv':>10} {'delivered':>10}"
    )
    for result in results:
        print(
            f"{result['subscriptions']:>6} {result['idle_commands_per_s']:>10} "
            f"{result['threads']:>7} {result['rss_mib']:>8} {result['idle_notifier_cpu_pct']:>9} "
            f"{result['latency_p50_ms']!s:>7} {result['latency_p99_ms']!s:>7} "
            f"{result['burst_notifier_cpu_us_per_delivery']:>10} "
            f"{result['burst_deliveries']:>5}/{result['burst_expected']}"
        )


if __name__ == "__main__":
    main()
