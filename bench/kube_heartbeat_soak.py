"""Heartbeats in real time reach no subscriber: a simulated cluster whose kubelets post every
node's status every 10 s, for ten minutes, through the whole stack (adapter process with the
real `kubernetes` client, core, notifier, Envoy, Redis) and a subscriber of everything.

Run: .venv/bin/python bench/kube_heartbeat_soak.py [--minutes 10] [--nodes 50]

Prints the heartbeats sent, the inventory events stored and the notifications received
during the soak (both must be 0), then proves the path was live all along: one real change
after the soak must arrive as exactly one event and one notification.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devstack.kubesim import KubeApiSimulator, simulated_cluster  # noqa: E402
from devstack.processes import wait_until  # noqa: E402
from devstack.stack import LocalStack, StackConfig, kube_clusters  # noqa: E402
from server.store import EVENTS_KEY, InventoryStore, connect  # noqa: E402
from tests.notifier.receiver import Receiver  # noqa: E402

INV = "/o2ims-infrastructureInventory"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=10.0, help="heartbeat period, s")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kube-soak-") as scratch:
        root = Path(scratch)
        simulator = KubeApiSimulator(
            root / "sim", simulated_cluster(nodes=args.nodes, zones=3, seed=7)
        ).start()
        kubeconfig = root / "kubeconfig"
        simulator.write_kubeconfig(kubeconfig, context="soak")
        (cluster,) = kube_clusters([kubeconfig], ["soak"], 0)
        (root / "stack").mkdir()
        stack = LocalStack(StackConfig.ephemeral(root / "stack", kube_clusters=(cluster,)))
        receiver = Receiver().start()
        try:
            stack.start()
            store = InventoryStore(connect(stack.redis_url))
            wait_until(
                lambda: len(store.owners().get(cluster.name, ())) > args.nodes,
                60,
                "the cluster served",
            )
            with httpx.Client(
                base_url=stack.rest_url, verify=stack.client_tls(), timeout=10
            ) as rest:
                created = rest.post(
                    f"{INV}/v1/subscriptions", json={"callback": receiver.url + "/soak"}
                )
                assert created.status_code == 201, created.text
            time.sleep(2.0)
            events_before = int(store.client.xlen(EVENTS_KEY))
            received_before = len(receiver.notifications("/soak"))
            deadline = time.monotonic() + args.minutes * 60
            heartbeats = 0
            while time.monotonic() < deadline:
                tick = time.monotonic()
                heartbeats += simulator.heartbeat()
                time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
            time.sleep(2.0)
            events = int(store.client.xlen(EVENTS_KEY)) - events_before
            notifications = len(receiver.notifications("/soak")) - received_before
            print(f"soak: {args.minutes:g} min, {args.nodes} nodes every {args.interval:g} s")
            print(f"heartbeats sent:          {heartbeats}")
            print(f"inventory events stored:  {events}")
            print(f"notifications received:   {notifications}")
            # The path was live: one real change arrives once.
            name = sorted(simulator.nodes())[0]
            simulator.update_node(
                name, lambda node: node["metadata"]["labels"].update({"soak": "done"})
            )
            wait_until(
                lambda: len(receiver.notifications("/soak")) > received_before + notifications,
                30,
                "the change after the soak",
            )
            time.sleep(1.0)
            after = len(receiver.notifications("/soak")) - received_before - notifications
            print(f"a real change afterwards: {after} notification(s)")
            return 0 if events == 0 and notifications == 0 and after == 1 else 1
        finally:
            receiver.stop()
            stack.stop()
            simulator.stop()


if __name__ == "__main__":
    raise SystemExit(main())
