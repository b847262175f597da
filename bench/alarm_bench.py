"""Alarms end to end, on a real redis-server.

Run: .venv/bin/python bench/alarm_bench.py [--records 100000] [--rate 100] [--seconds 10]

1. List: --records alarm event records in Redis, loaded into the core's AlarmView and served
   by the real MonitoringService over a real gRPC channel, pages of 1,000 (query engine,
   filters, serialization, the client's parsing included). Baseline in the same run: reading
   every record from Redis for one request (AlarmStore.list(), what a list cost before the
   view). Target: < 50 ms per page of 1,000 in the core.
2. Latency: source event -> SMO notified. The real core process (`python -m server`, its
   alarm pipeline) and the real notifier process (`python -m server.notifier`); alarm
   objects written to the inventory store through InventoryStore.apply (the Lua path the
   core's store writer takes for every adapter change) at --rate changes/s; an alarm
   subscription's signed AlarmEventNotifications received by a real HTTP server in another
   process. Baseline in the same run: an inventory change -> inventory notification through
   the same notifier and receiver (the path without the alarm pipeline). Target: p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import redis
from o2ims.adapter.v1 import domain_pb2
from o2ims.monitoring.v1 import monitoring_pb2 as mon
from o2ims.monitoring.v1 import monitoring_pb2_grpc as mon_grpc

from adapters.contract import object_key, serialize
from devstack.load import percentile
from devstack.processes import free_port, wait_until
from devstack.redis_server import RedisServer
from netweave.grpc_server import new_server
from server.alarms.store import ALARM_KEY_PREFIX, ALARMS_INDEX_KEY, AlarmStore
from server.alarms.view import AlarmView
from server.listing import Lister, ListingSettings
from server.monitoring_v1 import MonitoringV1Servicer
from server.store import Change, InventoryStore, connect
from server.subscriptions import SubscriptionStore
from server.subscriptions.store import (
    ALARM_SUBSCRIPTIONS,
    INVENTORY_SUBSCRIPTIONS,
    SubscriptionKind,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from notify_bench import (  # noqa: E402  (the notification bench's receiver and notifier)
    ReceiverProcess,
    _get,
    baseline,
    resource_change,
    start_notifier,
    wait_count,
)


def seed_records(client: redis.Redis, count: int) -> list[str]:
    """`count` records in the documented layout, written in pipelined batches."""
    types = [str(uuid.uuid4()) for _ in range(20)]
    ids = []
    for start in range(0, count, 5000):
        pipe = client.pipeline(transaction=False)
        for index in range(start, min(count, start + 5000)):
            record_id = str(uuid.uuid4())
            ids.append(record_id)
            pipe.hset(
                ALARM_KEY_PREFIX + record_id,
                mapping={
                    "resourceTypeID": types[index % 20],
                    "resourceID": str(uuid.uuid4()),
                    "alarmDefinitionID": str(uuid.uuid4()),
                    "probableCauseID": str(uuid.uuid4()),
                    "alarmRaisedTime": "2026-12-01T10:00:00.000000Z",
                    "alarmChangedTime": "2026-12-01T10:00:00.000000Z",
                    "alarmAcknowledged": "true" if index % 3 == 0 else "false",
                    "perceivedSeverity": str(index % 6),
                    "extensions": json.dumps({"node": f"node-{index % 500}"}),
                    "revision": "1",
                },
            )
            pipe.sadd(ALARMS_INDEX_KEY, record_id)
        pipe.execute()
    return types


def median_ms(call: Callable[[], int], repeat: int) -> tuple[float, int]:
    call()
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        size = call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), size


def list_bench(redis_url: str, records: int, repeat: int) -> None:
    client = connect(redis_url, socket_timeout=30.0)
    started = time.perf_counter()
    types = seed_records(client, records)
    print(f"List: {records} alarm records seeded in {time.perf_counter() - started:.1f} s")
    stop = threading.Event()
    view = AlarmView(connect(redis_url, socket_timeout=30.0), stop)
    started = time.perf_counter()
    view.load()
    print(f"  the view loaded them in {time.perf_counter() - started:.1f} s")
    view.start()
    server = new_server(4)
    lister = Lister(ListingSettings(secret=b"bench", page_size=1000))
    store = AlarmStore(client, view=view)
    mon_grpc.add_MonitoringServiceServicer_to_server(
        MonitoringV1Servicer(
            SubscriptionStore(client), store, "https://bench", 400, lister, view=view
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 * 2**20)]
    )
    stub = mon_grpc.MonitoringServiceStub(channel)

    def page(**query: object) -> int:
        request = mon.ListAlarmsRequest(**query)  # type: ignore[arg-type]
        return len(stub.ListAlarms(request, timeout=60).alarms)

    baseline_ms, baseline_size = median_ms(lambda: len(store.list()), max(3, repeat // 2))
    print(
        f"  {'baseline: every record read from Redis (one request, before the view)':<62} "
        f"{baseline_ms:8.1f} ms  x 1.00  items={baseline_size}"
    )
    cases: list[tuple[str, Callable[[], int]]] = [
        ("first page of 1,000, no filter", page),
        ("filter (eq,perceivedSeverity,0)", lambda: page(filter=["(eq,perceivedSeverity,0)"])),
        (
            "filter (eq,resourceTypeID,X);(eq,alarmAcknowledged,false)",
            lambda: page(filter=[f"(eq,resourceTypeID,{types[4]});(eq,alarmAcknowledged,false)"]),
        ),
        (
            "filter (eq,extensions/node,node-7) (1/500)",
            lambda: page(filter=["(eq,extensions/node,node-7)"]),
        ),
        ("exclude_default", lambda: page(exclude_default=True)),
    ]
    for label, call in cases:
        ms, size = median_ms(call, repeat)
        print(
            f"  {label:<62} {ms:8.1f} ms  x{ms / baseline_ms:5.2f}  items={size} (target < 50 ms)"
        )
    channel.close()
    server.stop(None)
    stop.set()
    client.flushall()


def alarm_change(source_id: str, severity: int) -> Change:
    """An adapter's ActiveAlarm as the core's store writer writes it. Its resource id is the
    source id, so the notification names the change it reports."""
    alarm = domain_pb2.ActiveAlarm(
        alarm_id=source_id,
        resource_id=source_id,
        resource_type_id="rt-bench",
        alarm_definition_id="ad-bench",
        perceived_severity=severity,  # type: ignore[arg-type]
    )
    obj = domain_pb2.InventoryObject(alarm=alarm)
    kind, object_id = object_key(obj)
    return Change(kind, object_id, serialize(obj))


WARMUP_CHANGES = 50


def start_core(redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    """The core process (its alarm pipeline is what is measured), with no adapter."""
    ops = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "server"],
        cwd=REPO,
        env={
            **os.environ,
            "REDIS_URL": redis_url,
            "NETWEAVE_GRPC_PORT": str(free_port()),
            "NETWEAVE_OPS_PORT": str(ops),
            "NETWEAVE_ADAPTERS": "",
            "NETWEAVE_LOG_LEVEL": "WARNING",
        },
        stderr=log.open("ab"),
    )
    wait_until(lambda: _get(f"http://127.0.0.1:{ops}/readyz") == 200, 30, "the core's /readyz")
    return process


def timed_run(
    redis_url: str,
    receiver: ReceiverProcess,
    kind: SubscriptionKind,
    make: Callable[[str, int], Change],
    *,
    rate: float,
    seconds: float,
) -> list[float]:
    """Changes at `rate`/s for `seconds` to one subscription of `kind`: the latency of each,
    from the change written to its notification received."""
    client = connect(redis_url)
    subscriptions = SubscriptionStore(client)
    created = subscriptions.create(
        kind,
        str(uuid.uuid4()),
        callback=f"{receiver.url}/{kind.name}",
        filter_="",
        consumer_subscription_id="bench",
        api_version="v1",
    )
    time.sleep(1.0)  # a notifier has taken the subscription (within a scheduler tick)
    store = InventoryStore(client)
    # Warm-up, not measured: the subscription's first deliveries open its connection and
    # fill the processes' caches (~100 ms for the first one on this machine); the figures
    # are the steady state an SMO sees.
    warmup = [str(uuid.uuid4()) for _ in range(WARMUP_CHANGES)]
    for object_id in warmup:
        store.apply("bench", [make(object_id, 1)])
        time.sleep(1.0 / rate)
    wait_count([receiver], [[]], len(warmup), 30)
    ids = [str(uuid.uuid4()) for _ in range(int(rate * seconds))]
    changed_at: dict[str, float] = {}
    started = time.perf_counter()
    for index, object_id in enumerate(ids):
        pause = started + index / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        changed_at[object_id] = time.time()
        store.apply("bench", [make(object_id, 1 + index % 5)])
    seen: list[list[tuple[str, float]]] = [[]]
    wait_count([receiver], seen, len(ids), 60)
    subscriptions.delete(kind, created.subscription_id)
    client.close()
    return [arrived - changed_at[key] for key, arrived in seen[0] if key in changed_at]


def latency_bench(redis_url: str, rate: float, seconds: float, workdir: Path) -> None:
    receiver = ReceiverProcess()
    core = notifier = None
    try:
        base_p50, base_p99, _ = baseline(receiver, 2000)
        core = start_core(redis_url, workdir / "core.log")
        notifier = start_notifier(redis_url, workdir / "notifier.log")
        runs = {
            "inventory change -> inventory notification (baseline)": timed_run(
                redis_url,
                receiver,
                INVENTORY_SUBSCRIPTIONS,
                resource_change,
                rate=rate,
                seconds=seconds,
            ),
            "alarm source change -> alarm notification": timed_run(
                redis_url, receiver, ALARM_SUBSCRIPTIONS, alarm_change, rate=rate, seconds=seconds
            ),
        }
        bad = receiver.bad_signatures
    finally:
        for process in (core, notifier):
            if process is not None:
                process.terminate()
                process.wait(10)
        receiver.stop()
    print(f"Latency at {rate:.0f} changes/s for {seconds:.0f} s, one subscription each")
    print(
        f"  {'a bare POST to the same receiver':<55} p50 {base_p50 * 1000:6.2f} ms  "
        f"p99 {base_p99 * 1000:6.2f} ms"
    )
    inventory_p50 = statistics.median(next(iter(runs.values())))
    for label, latencies in runs.items():
        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        target = "  (target p99 < 50 ms)" if "alarm" in label else ""
        print(
            f"  {label:<55} p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms  "
            f"max {max(latencies) * 1000:6.1f} ms  n={len(latencies)}  "
            f"p50 x{p50 / inventory_p50:4.2f}{target}"
        )
    if bad:
        print(f"  {bad} BAD SIGNATURES")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-list", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            if not args.skip_list:
                list_bench(server.url, args.records, args.repeat)
            if not args.skip_latency:
                latency_bench(server.url, args.rate, args.seconds, Path(tmp))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
