"""Steady reads of subscriptions and alarms: Redis round trips and latency per read, before
(every read in Redis) and after (the core's subscription and alarm views), side by side in
one run on a real redis-server.

Run: .venv/bin/python -m bench.subscription_reads_bench [--subscriptions 100] [--reads 2000]

The subscription service and the monitoring service (the real servicers, behind the core's
auth interceptor with the open policy, on a real gRPC server in this process) serve:
  ListSubscriptions (every one of --subscriptions inventory subscriptions), GetSubscription,
  ListAlarmSubscriptions (as many alarm subscriptions), GetAlarm (one record, its ETag)
over a real gRPC channel, --reads calls each, first with stores that read Redis (what
every such read did before issue 18), then with stores over a loaded SubscriptionView and
AlarmView (what a core does now). For each: Redis commands per read (INFO commandstats,
every command Redis executed, the INFO calls themselves left out: background commands of
the views included), the cache metric's hits and misses (the views' on_read), p50/p99
latency of a call seen by the client, and CPU per call of this process (client and server
together: time.process_time). Then the views' idle cost: Redis commands per second with
no reads (their blocking XREADs and generation checks).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import redis
from o2ims.monitoring.v1 import monitoring_pb2 as mon
from o2ims.monitoring.v1 import monitoring_pb2_grpc as mon_grpc
from o2ims.subscriptions.v1 import subscriptions_pb2 as sub
from o2ims.subscriptions.v1 import subscriptions_pb2_grpc as sub_grpc

from devstack.redis_server import RedisServer, command_calls
from netweave.grpc_server import new_server
from server.alarms.store import AlarmStore
from server.alarms.view import AlarmView
from server.auth import AccessPolicy, AuthInterceptor
from server.auth.identity import Channel
from server.listing import Lister, ListingSettings
from server.metrics import GatewayMetrics
from server.monitoring_v1 import MonitoringV1Servicer
from server.store import connect
from server.subscriptions import InventorySubscriptionServicer, SubscriptionStore
from server.subscriptions.store import ALARM_SUBSCRIPTIONS, INVENTORY_SUBSCRIPTIONS
from server.subscriptions.view import SubscriptionView

SERVICE_URI = "https://bench.example.net"
KINDS = (INVENTORY_SUBSCRIPTIONS, ALARM_SUBSCRIPTIONS)


def redis_commands(raw: redis.Redis) -> int:
    """Every command Redis has executed, INFO itself left out."""
    return sum(calls for name, calls in command_calls(raw).items() if name != "info")


def seed(redis_url: str, subscriptions: int) -> str:
    """`subscriptions` of each kind and one alarm record; returns the alarm's id."""
    client = connect(redis_url)
    store = SubscriptionStore(client)
    for kind in KINDS:
        for number in range(subscriptions):
            store.create(
                kind,
                str(uuid.uuid4()),
                callback=f"https://smo.example.net/{kind.name}/{number}",
                filter_="",
                consumer_subscription_id=f"bench-{number}",
                api_version="v1",
                owner="bench",
            )
    alarm_id = str(uuid.uuid4())
    AlarmStore(client).put_record(
        alarm_id,
        {
            "resourceTypeID": "rt-1",
            "resourceID": "r-1",
            "alarmDefinitionID": "ad-1",
            "probableCauseID": "pc-1",
            "alarmRaisedTime": "2025-01-02T03:04:05Z",
            "perceivedSeverity": 1,
        },
    )
    client.close()
    return alarm_id


class Served:
    """The two servicers on a gRPC server, over stores with or without views."""

    def __init__(self, redis_url: str, *, views: bool) -> None:
        self.stop = threading.Event()
        self.reads: Counter[str] = Counter()
        self.subscription_view: SubscriptionView | None = None
        self.alarm_view: AlarmView | None = None
        if views:
            self.subscription_view = SubscriptionView(
                connect(redis_url, socket_timeout=5.0),
                self.stop,
                KINDS,
                on_read=lambda result: self.reads.update(["subscriptions " + result]),
            )
            self.alarm_view = AlarmView(
                connect(redis_url, socket_timeout=5.0),
                self.stop,
                on_read=lambda result: self.reads.update(["alarms " + result]),
            )
            self.subscription_view.load()
            self.alarm_view.load()
            self.subscription_view.start()
            self.alarm_view.start()
        else:
            # The alarm list is the view's in either case; only GetAlarm differs.
            self.alarm_view = None
        self.client = connect(redis_url)
        subscriptions = SubscriptionStore(self.client, view=self.subscription_view)
        alarms = AlarmStore(self.client, view=self.alarm_view)
        listing_view = self.alarm_view or AlarmView(connect(redis_url), self.stop)
        lister = Lister(ListingSettings(secret=b"bench"))
        auth = AuthInterceptor(AccessPolicy.open_policy(), None, GatewayMetrics(), Channel.INTERNAL)
        self.server = new_server(4, [auth])
        sub_grpc.add_SubscriptionServiceServicer_to_server(
            InventorySubscriptionServicer(subscriptions, SERVICE_URI, 400, lister), self.server
        )
        mon_grpc.add_MonitoringServiceServicer_to_server(
            MonitoringV1Servicer(
                subscriptions, alarms, SERVICE_URI, 400, lister, view=listing_view
            ),
            self.server,
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.subscriptions = sub_grpc.SubscriptionServiceStub(self.channel)
        self.monitoring = mon_grpc.MonitoringServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(None).wait()
        self.stop.set()
        for view in (self.subscription_view, self.alarm_view):
            if view is not None:
                view.join(5)
        self.client.close()


def measure(
    raw: redis.Redis, served: Served, call: Callable[[], object], reads: int
) -> dict[str, float]:
    for _ in range(min(100, reads)):
        call()
    served.reads.clear()
    commands = redis_commands(raw)
    cpu = time.process_time()
    latencies = []
    for _ in range(reads):
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    commands = redis_commands(raw) - commands
    latencies.sort()
    hits = sum(n for key, n in served.reads.items() if key.endswith("hit"))
    misses = sum(n for key, n in served.reads.items() if key.endswith("miss"))
    return {
        "commands_per_read": commands / reads,
        "hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99) - 1] * 1e6,
        "cpu_us": cpu / reads * 1e6,
    }


def read_calls(
    served: Served, subscriptions: int, subscription_id: str, alarm_id: str
) -> list[tuple[str, Callable[[], object]]]:
    """(name, one call) of each read measured."""

    def list_subscriptions() -> object:
        return served.subscriptions.ListSubscriptions(sub.ListSubscriptionsRequest())

    def get_subscription() -> object:
        request = sub.GetSubscriptionRequest(subscription_id=subscription_id)
        return served.subscriptions.GetSubscription(request)

    def list_alarm_subscriptions() -> object:
        return served.monitoring.ListAlarmSubscriptions(mon.ListAlarmSubscriptionsRequest())

    def get_alarm() -> object:
        return served.monitoring.GetAlarm(mon.GetAlarmRequest(alarm_event_record_id=alarm_id))

    return [
        (f"ListSubscriptions ({subscriptions})", list_subscriptions),
        ("GetSubscription", get_subscription),
        (f"ListAlarmSubscriptions ({subscriptions})", list_alarm_subscriptions),
        ("GetAlarm (with its ETag)", get_alarm),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=100, help="of each kind")
    parser.add_argument("--reads", type=int, default=2000, help="calls of each read")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle views")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory) / "redis").start()
        try:
            run(server, arguments)
        finally:
            server.stop()


def run(server: RedisServer, arguments: argparse.Namespace) -> None:
    alarm_id = seed(server.url, arguments.subscriptions)
    raw = server.client()
    results: dict[tuple[str, str], dict[str, float]] = {}
    one_subscription = ""
    idle = 0.0
    for label, views in (("before (Redis)", False), ("after (views)", True)):
        served = Served(server.url, views=views)
        listed = served.subscriptions.ListSubscriptions(sub.ListSubscriptionsRequest())
        assert len(listed.subscriptions) == arguments.subscriptions, len(listed.subscriptions)
        one_subscription = listed.subscriptions[0].subscription_id
        reads = read_calls(served, arguments.subscriptions, one_subscription, alarm_id)
        for name, call in reads:
            results[(name, label)] = measure(raw, served, call, arguments.reads)
        if views:
            commands = redis_commands(raw)
            time.sleep(arguments.idle)
            idle = (redis_commands(raw) - commands) / arguments.idle
        served.close()
    raw.close()

    print(
        f"Steady reads, {arguments.reads} calls each, {arguments.subscriptions} subscriptions "
        "of each kind, one alarm record (in-process gRPC server and client)"
    )
    header = (
        f"{'read':<30} {'served from':<15} {'Redis cmds/read':>15} {'hit ratio':>9} "
        f"{'p50 us':>8} {'p99 us':>8} {'CPU us/call':>11}"
    )
    print(header)
    print("-" * len(header))
    for (name, label), figures in results.items():
        print(
            f"{name:<30} {label:<15} {figures['commands_per_read']:>15.2f} "
            f"{figures['hit_ratio']:>9.1%} {figures['p50_us']:>8.0f} {figures['p99_us']:>8.0f} "
            f"{figures['cpu_us']:>11.0f}"
        )
    print(f"views idle: {idle:.1f} Redis commands/s (blocking XREADs and generation checks)")


if __name__ == "__main__":
    main()
