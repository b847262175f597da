"""Zero-downtime rolling restarts: two cores and two notifiers against one Redis, behind one
Envoy (real processes). Under a steady open-loop load of REST reads and subscription writes,
with inventory changes notifying subscribers, every process is restarted in turn with
SIGTERM: no request fails and no notification is lost.

How it holds (docs/operations.md "Replicas and rolling upgrades"): a core that gets SIGTERM
reports NOT_SERVING and fails /readyz but keeps serving for its drain period, longer than
Envoy's health check takes to notice; only then does it refuse new calls, giving those in
flight a grace period. Envoy retries idempotent reads on the other replica. A notifier that
gets SIGTERM finishes its deliveries in flight, hands back what it read but did not deliver
and releases its subscriptions, which the other notifier takes over at once."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from o2ims.inventory.v1 import inventory_pb2 as v1
from o2ims.inventory.v1 import inventory_pb2_grpc as v1_grpc
from prometheus_client.parser import text_string_to_metric_families

from devstack.load import Call, MixedLoad, Outcome, percentile_ms, subscribe_watchers
from devstack.processes import wait_until
from devstack.stack import LocalStack, StackConfig
from server.app import SERVICE_NAMES
from tests.notifier.receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

INVENTORY = "/o2ims-infrastructureInventory/v1"
# Envoy checks each core every HEALTH_INTERVAL_S and takes it out after two failures (plus
# the check's 1 s timeout: 2 s at most); the cores drain for longer.
HEALTH_INTERVAL_S = 0.5
DRAIN_S = 4.0
RATE = 200  # requests per second offered, open loop
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = StackConfig.ephemeral(
        tmp_path_factory.mktemp("rolling"),
        cores=2,
        notifiers=2,
        core_drain_s=DRAIN_S,
        core_health_interval_s=HEALTH_INTERVAL_S,
        # One client sends everything: the edge's per-client limit must not be what fails.
        rate_limit_rps=20 * RATE,
    )
    running = LocalStack(config).start()
    try:
        wait_until(lambda: all(running.envoy_core_health().values()), 20, "Envoy to see both cores")
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def log_events(path: Path) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            found.append(record)
    return found


def test_a_core_given_sigterm_drains_then_exits(stack: LocalStack) -> None:
    index = 1
    core = stack.cores[index]
    ports = stack.core_ports(index)
    with grpc.insecure_channel(f"127.0.0.1:{ports.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        inventory = v1_grpc.InventoryServiceStub(channel)

        def status(service: str) -> int:
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            return int(reply.status)

        assert status("") == SERVING
        sent = time.monotonic()
        core.signal(signal.SIGTERM)
        wait_until(lambda: status("") == NOT_SERVING, 2, "NOT_SERVING")
        assert {service: status(service) for service in ["", *SERVICE_NAMES]} == dict.fromkeys(
            ["", *SERVICE_NAMES], NOT_SERVING
        )
        code, body = stack.readiness(index)
        assert code == 503
        assert "draining" in body["failing"]  # type: ignore[operator]
        checks: Any = body["checks"]
        assert checks["draining"]["reason"].startswith("draining")
        # Still serving while Envoy and Kubernetes take it out of rotation.
        pools = inventory.ListResourcePools(v1.ListResourcePoolsRequest(), timeout=5)
        assert pools.resource_pools
        assert core.alive()
        assert time.monotonic() - sent < DRAIN_S
        # Envoy sees it going: unhealthy within its detection time.
        wait_until(
            lambda: not stack.envoy_core_health()[ports.edge_port],
            HEALTH_INTERVAL_S * 2 + 1.5,
            "Envoy to take the draining core out",
        )

    wait_until(lambda: not core.alive(), DRAIN_S + 15, "the core to exit")
    assert time.monotonic() - sent >= DRAIN_S
    assert core.proc is not None
    assert core.proc.returncode == 0
    events = [record["event"] for record in log_events(core.log_path)]
    assert "gateway_draining" in events
    assert events.index("gateway_draining") < len(events) - 1 - events[::-1].index(
        "gateway_stopped"
    )
    [draining] = [r for r in log_events(core.log_path) if r["event"] == "gateway_draining"][-1:]
    assert draining["drain_seconds"] == DRAIN_S
    stack.restart_core(index)  # back, and healthy in Envoy, for the next test


# --- the rolling restart ---------------------------------------------------------------------


def add_resources(inventory: Path, pool_id: str, stop: threading.Event, added: list[str]) -> None:
    """Every 0.5 s, a new resource in `pool_id` (a create event for every subscriber), written
    atomically so the adapter never reads half a file."""
    document = yaml.safe_load(inventory.read_text())
    alarmed = {alarm["resourceId"] for alarm in document.get("alarms", [])}
    template = next(
        r
        for r in document["resources"]
        if r["resourcePoolId"] == pool_id and r["resourceId"] not in alarmed
    )
    while not stop.wait(0.5):
        resource = {key: value for key, value in template.items() if key != "elements"}
        resource["resourceId"] = str(uuid.uuid4())
        resource["description"] = "added during the rolling restart"
        document["resources"].append(resource)
        staged = inventory.with_suffix(".staged")
        staged.write_text(yaml.safe_dump(document, sort_keys=False))
        staged.replace(inventory)
        added.append(resource["resourceId"])


def created_ids(receiver: Receiver, path: str) -> set[str]:
    return {
        notification["postObjectState"]["resourceId"]
        for notification in receiver.notifications(path)
        if notification.get("notificationEventType") == 0
        and "resourceId" in notification.get("postObjectState", {})
    }


def mixed_load(
    stack: LocalStack, receiver: Receiver, targets: dict[str, str]
) -> tuple[MixedLoad, Callable[[int], Call]]:
    """The load (run it paced at RATE) and its plan: of every 20 calls, 18 reads of every
    kind, a subscription create and a delete of one it created."""
    load = MixedLoad(
        lambda: httpx.Client(
            base_url=stack.rest_url, verify=stack.client_tls(), timeout=15, trust_env=False
        ),
        callback=f"{receiver.url}/churn",
    )
    pool = f"{INVENTORY}/resourcePools/{targets['pool']}"
    reads = [
        Call("list pools", "GET", f"{INVENTORY}/resourcePools"),
        Call("get pool", "GET", pool),
        Call("list resources", "GET", f"{pool}/resources"),
        Call("get resource", "GET", f"{pool}/resources/{targets['resource']}"),
        Call("list types", "GET", f"{INVENTORY}/resourceTypes"),
        Call("get cloud", "GET", INVENTORY),
        Call("list managers", "GET", f"{INVENTORY}/deploymentManagers"),
        Call("get subscription", "GET", f"{INVENTORY}/subscriptions/{targets['subscription']}"),
    ]

    def plan(index: int) -> Call:
        slot = index % 20
        if slot == 18:
            return load.create_subscription(f"churn-{index}")  # equal ids are duplicates
        if slot == 19 and (delete := load.delete_created()) is not None:
            return delete
        return reads[slot % len(reads)]

    return load, plan


def http_requests_total(stack: LocalStack, index: int) -> float:
    """o2ims_http_requests_total of the `index`-th core (its /metrics), over all labels."""
    url = f"http://127.0.0.1:{stack.core_ports(index).ops_port}/metrics"
    text = httpx.get(url, timeout=5, trust_env=False).raise_for_status().text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "o2ims_http_requests_total"
    )


def restart_first_core(stack: LocalStack, counted: dict[str, list[float]]) -> None:
    """stack.restart_core(0), every core's o2ims_http_requests_total before and after it
    in `counted`."""
    cores = range(len(stack.cores))
    counted["before"] = [http_requests_total(stack, core) for core in cores]
    stack.restart_core(0)
    counted["after"] = [http_requests_total(stack, core) for core in cores]


def check_requests_counted(
    counted: dict[str, list[float]], outcomes: list[Outcome], window: tuple[str, float, float]
) -> None:
    """Envoy's access log records go to every core's telemetry listener, health-checked as
    the cores are: those of the requests made while core 1 restarted (`window`) reach
    core 2, so o2ims_http_requests_total over both grows (core 1's from zero once back)."""
    name, began, end = window
    made = sum(began <= o.sent_at <= end for o in outcomes)
    before, after = counted["before"], counted["after"]
    increase = after[0] + sum(after[1:]) - sum(before[1:])
    print(
        f"edge telemetry: {increase:.0f} REST requests counted by the cores during the "
        f"restart of {name} ({made} made; the other core {before[1]:.0f} -> {after[1]:.0f})"
    )
    assert increase >= 0.5 * made, (before, after, made)


def test_rolling_restart_under_load_fails_no_request_and_loses_no_notification(
    stack: LocalStack, receiver: Receiver
) -> None:
    with httpx.Client(
        base_url=stack.rest_url, verify=stack.client_tls(), timeout=10, trust_env=False
    ) as rest:
        pool = rest.get(f"{INVENTORY}/resourcePools").raise_for_status().json()[0]
        resource = rest.get(f"{INVENTORY}/resourcePools/{pool['resourcePoolId']}/resources")
        watchers = subscribe_watchers(rest, receiver.url, "/watch", 3)
    targets = {
        "pool": pool["resourcePoolId"],
        "resource": resource.raise_for_status().json()[0]["resourceId"],
        "subscription": next(iter(watchers.values())),
    }

    load, plan = mixed_load(stack, receiver, targets)
    added: list[str] = []
    changing = threading.Event()
    threads = [
        threading.Thread(target=load.run_paced, args=(RATE, plan), name="load"),
        threading.Thread(
            target=add_resources,
            args=(stack.config.inventory, targets["pool"], changing, added),
            name="inventory-changes",
        ),
    ]
    windows: list[tuple[str, float, float]] = []
    # o2ims_http_requests_total of both cores, before and after core 1's restart.
    counted: dict[str, list[float]] = {}
    with load:
        for thread in threads:
            thread.start()
        try:
            time.sleep(3.0)  # steady state first
            steps: list[tuple[str, Callable[[], None]]] = [
                ("core 1", lambda: restart_first_core(stack, counted)),
                ("core 2", lambda: stack.restart_core(1)),
                *((f"notifier {i + 1}", lambda i=i: stack.restart_notifier(i)) for i in range(2)),
            ]
            for name, restart in steps:
                began = time.monotonic()
                restart()
                windows.append((name, began, time.monotonic()))
            time.sleep(3.0)  # and after
        finally:
            changing.set()
            load.stop.set()
            for thread in threads:
                thread.join(30)

    # Every change reaches every watcher, at least once.
    def all_delivered() -> bool:
        return all(set(added) <= created_ids(receiver, path) for path in watchers)

    with contextlib.suppress(TimeoutError):  # the assertion below names what is missing
        wait_until(all_delivered, 30, "every notification")
    missing = {path: sorted(set(added) - created_ids(receiver, path)) for path in watchers}

    outcomes = load.outcomes
    failures = [o for o in outcomes if not o.ok]
    during = [
        o.latency_s for o in outcomes if any(began <= o.sent_at <= end for _, began, end in windows)
    ]
    span = max(o.sent_at for o in outcomes) - min(o.sent_at for o in outcomes)
    deliveries = sum(len(receiver.delivered_to(path)) for path in watchers)
    print(
        f"\nrolling restart: {len(outcomes)} requests in {span:.1f} s "
        f"({len(outcomes) / span:.0f}/s), {len(failures)} failed; "
        f"p50 {percentile_ms([o.latency_s for o in outcomes], 0.5):.1f} ms, "
        f"p99 {percentile_ms([o.latency_s for o in outcomes], 0.99):.1f} ms overall, "
        f"p99 {percentile_ms(during, 0.99):.1f} ms during restarts, "
        f"max {max(o.latency_s for o in outcomes) * 1000:.0f} ms; "
        f"restarts: "
        + ", ".join(f"{name} {end - began:.1f} s" for name, began, end in windows)
        + f"; {len(added)} inventory changes x {len(watchers)} subscriptions, "
        f"{deliveries} notifications delivered, "
        f"{sum(len(m) for m in missing.values())} missing"
    )
    assert not failures, failures[:10]
    # The offered rate held, and the load covered every restart, writes included.
    assert len(outcomes) >= 0.9 * RATE * span
    for name, began, end in windows:
        assert sum(began <= o.sent_at <= end for o in outcomes) >= 0.9 * RATE * (end - began), name
    operations = {o.name for o in outcomes}
    assert {"create subscription", "delete subscription", "list pools"} <= operations
    assert added
    assert not any(missing.values()), missing
    check_requests_counted(counted, outcomes, windows[0])
    stack.require_alive()
    assert all(stack.envoy_core_health().values())
