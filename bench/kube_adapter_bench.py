"""The Kubernetes adapter at scale: a simulated cluster of 5,000 nodes (devstack/kubesim,
the real `kubernetes` client in the adapter), the real core and Redis.

Run: .venv/bin/python bench/kube_adapter_bench.py [--nodes 5000] [--churn-seconds 30]

Prints, each with its ratio to a baseline measured in the same run (the machine is shared
and noisy):
- start-up: from the adapter process's start to the core serving all of its objects
  (target < 10 s), against the bare list of the same nodes with the same client (paged,
  raw JSON) in this process;
- CPU per watch event in the adapter, for events that change what O2ims shows (relabels)
  and for heartbeats (which must change nothing), against parsing the same event's JSON;
- steady CPU of adapter and core under heartbeat churn (every node every 10 s, spread
  evenly), in % of one core;
- resident memory (RSS) of the adapter and the core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proc_cpu import cpu_seconds, rss_mib  # noqa: E402

from devstack.kubesim import KubeApiSimulator, simulated_cluster  # noqa: E402
from devstack.processes import wait_until  # noqa: E402
from devstack.stack import LocalStack, StackConfig, kube_clusters  # noqa: E402

ADAPTER = "kubernetes-bench"


def baseline_list(simulator: KubeApiSimulator, kubeconfig: Path, page: int = 500) -> float:
    """Seconds for the same client to list every node, paged, parsing the raw JSON."""
    from kubernetes import client
    from kubernetes.config import kube_config

    configuration = client.Configuration()
    kube_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), context="bench", client_configuration=configuration
    )
    api = client.CoreV1Api(client.ApiClient(configuration))
    started = time.perf_counter()
    token: str | None = None
    count = 0
    while True:
        response: Any = api.list_node(limit=page, _continue=token, _preload_content=False)
        body = json.loads(response.data)
        count += len(body["items"])
        token = body["metadata"].get("continue")
        if not token:
            break
    assert count == len(simulator.nodes())
    return time.perf_counter() - started


def baseline_parse(simulator: KubeApiSimulator, events: int) -> float:
    """CPU seconds to json.loads one watch event line of a node, `events` times."""
    node = next(iter(simulator.nodes().values()))
    line = json.dumps({"type": "MODIFIED", "object": node}).encode()
    started = time.process_time()
    for _ in range(events):
        json.loads(line)
    return (time.process_time() - started) / events


def inventory_version(stack: LocalStack) -> int:
    """The core's inventory version: one more per stored change."""
    body: Any = stack.readiness()[1]
    return int(body["checks"]["inventory"]["version"])


def served_resources(stack: LocalStack) -> int:
    body: Any = stack.readiness()[1]
    checks: Any = body.get("checks", {})
    adapter = checks.get("adapters", {}).get(ADAPTER, {})
    if not adapter.get("synced"):
        return -1
    return int(checks.get("inventory", {}).get("objects", {}).get("resource", 0))


def row(measure: str, value: float, baseline: float | None = None, note: str = "") -> None:
    ratio = f"{value / baseline:>9.1f}" if baseline else " " * 9
    shown = f"{baseline:>14.3f}" if baseline is not None else " " * 14
    print(f"{measure:<52}{value:>14.3f}{shown}{ratio}   {note}".rstrip(), flush=True)


def per_change_cpu(stack: LocalStack, simulator: KubeApiSimulator, pid: int, count: int) -> float:
    """Adapter CPU seconds per relabel of `count` nodes (each a real change)."""
    version = inventory_version(stack)
    before = cpu_seconds(pid)
    for index, name in enumerate(sorted(simulator.nodes())[:count]):

        def relabel(node: dict[str, Any], index: int = index) -> None:
            node["metadata"]["labels"]["bench.netweave/round"] = str(index)

        simulator.update_node(name, relabel)
    wait_until(lambda: inventory_version(stack) >= version + count, 120, "every relabel served")
    return (cpu_seconds(pid) - before) / count


def per_heartbeat_cpu(
    stack: LocalStack, simulator: KubeApiSimulator, pid: int
) -> tuple[float, int, int]:
    """(adapter CPU seconds per heartbeat event, heartbeats, inventory events) for one
    heartbeat of every node followed by one real change (seen last, so all were seen)."""
    version = inventory_version(stack)
    before = cpu_seconds(pid)
    beats = simulator.heartbeat(at=datetime.now(UTC) + timedelta(seconds=10))
    sentinel = sorted(simulator.nodes())[-1]
    simulator.update_node(sentinel, lambda node: node["metadata"]["labels"].update({"b/s": "1"}))
    wait_until(lambda: inventory_version(stack) >= version + 1, 60, "the heartbeats seen")
    return (cpu_seconds(pid) - before) / beats, beats, inventory_version(stack) - version


def churn(
    stack: LocalStack, simulator: KubeApiSimulator, pids: tuple[int, int], seconds: float
) -> tuple[float, float, float, int]:
    """Every node heartbeating every 10 s (in 100 slices, one every 100 ms) for `seconds`:
    (heartbeats/s, adapter CPU %, core CPU %, inventory events)."""
    names = sorted(simulator.nodes())
    slices = [names[i::100] for i in range(100)]
    stop = threading.Event()
    sent = [0]

    def beat() -> None:
        clock = datetime.now(UTC)
        tick = 0
        while not stop.wait(0.1):
            clock += timedelta(seconds=0.1)
            sent[0] += simulator.heartbeat(slices[tick % 100], at=clock)
            tick += 1

    thread = threading.Thread(target=beat, daemon=True)
    before = [cpu_seconds(pid) for pid in pids]
    version = inventory_version(stack)
    started = time.monotonic()
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    window = time.monotonic() - started
    adapter, core = (
        100 * (cpu_seconds(pid) - b) / window for pid, b in zip(pids, before, strict=True)
    )
    return sent[0] / window, adapter, core, inventory_version(stack) - version


def run(args: argparse.Namespace, state: Path) -> None:
    print(f"building a simulated cluster of {args.nodes} nodes ...", flush=True)
    simulator = KubeApiSimulator(
        state / "sim",
        simulated_cluster(nodes=args.nodes, zones=args.zones, seed=7),
        bookmark_interval=10.0,
        history_limit=max(50_000, 4 * args.nodes),
    ).start()
    kubeconfig = simulator.write_kubeconfig(state / "kubeconfig", context="bench")
    clusters = tuple(
        replace(cluster, name=ADAPTER) for cluster in kube_clusters([kubeconfig], [], 0)
    )
    (state / "stack").mkdir()
    config = StackConfig.ephemeral(
        state / "stack",
        kube_clusters=clusters,
        extra_core_env={"NETWEAVE_LOG_LEVEL": args.core_log_level},
    )
    stack = LocalStack(config)
    try:
        stack.start_redis()
        stack.start_adapter()
        stack.start_core()
        list_s = baseline_list(simulator, kubeconfig)
        started = time.monotonic()
        stack.start_kube_adapters()
        wait_until(lambda: served_resources(stack) >= args.nodes, 120, "the cluster served")
        startup_s = time.monotonic() - started
        [adapter] = stack.kube_adapters
        assert stack.core is not None
        pids = (adapter.pid, stack.core.pid)
        print(f"\n{'measure':<52}{'value':>14}{'baseline':>14}{'ratio':>9}")
        row("start-up to served (s)", startup_s, list_s, "target < 10 s; baseline: bare list")
        parse_s = baseline_parse(simulator, 2000)
        change_s = per_change_cpu(stack, simulator, pids[0], args.changes)
        row(
            "adapter CPU per real change (ms)",
            change_s * 1e3,
            parse_s * 1e3,
            "baseline: json.loads",
        )
        beat_s, beats, events = per_heartbeat_cpu(stack, simulator, pids[0])
        row("adapter CPU per heartbeat event (ms)", beat_s * 1e3, parse_s * 1e3)
        row(f"inventory events from {beats} heartbeats + 1 change", events, note="must be 1")
        rate, adapter_pct, core_pct, churn_events = churn(
            stack, simulator, pids, args.churn_seconds
        )
        row("heartbeats/s offered (every node every 10 s)", rate)
        row("adapter CPU under churn (% of a core)", adapter_pct)
        row("core CPU under churn (% of a core)", core_pct)
        row("inventory events during churn", churn_events, note="must be 0")
        row("adapter RSS (MiB)", rss_mib(pids[0]))
        row("core RSS (MiB)", rss_mib(pids[1]))
    finally:
        stack.stop()
        simulator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--zones", type=int, default=3)
    parser.add_argument("--changes", type=int, default=1000, help="relabels measured")
    parser.add_argument("--churn-seconds", type=float, default=30.0)
    parser.add_argument(
        "--keep-state",
        type=Path,
        default=None,
        help="run in this (new) directory and keep it: logs under <dir>/stack/logs",
    )
    parser.add_argument(
        "--core-log-level",
        default="WARNING",
        help="the core's log level (INFO logs adapter_synced, adapter_reconciled, ...)",
    )
    args = parser.parse_args()
    if args.keep_state is not None:
        args.keep_state.mkdir(parents=True)
        run(args, args.keep_state)
        return 0
    with tempfile.TemporaryDirectory(prefix="kube-bench-") as workdir:
        run(args, Path(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
