"""Run a simulated Kubernetes API server with a deterministic cluster of Nodes.

    python -m devstack.kubesim --nodes 50 --zones 3 --state-dir .netweave/kubesim \\
        --kubeconfig .netweave/kubesim/kubeconfig [--context sim] [--heartbeat-interval 10]

Writes a kubeconfig (merged into an existing file: several simulators may share one),
heartbeats every node like kubelets do, and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from devstack.kubesim.nodes import simulated_cluster
from devstack.kubesim.server import KubeApiSimulator


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return value


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m devstack.kubesim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument("--nodes", type=_non_negative_int, default=50)
    cli.add_argument("--zones", type=_positive_int, default=3)
    cli.add_argument("--region", default="region-1")
    cli.add_argument("--gpu-every", type=_non_negative_int, default=5, help="0 = no GPU nodes")
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--state-dir", type=Path, required=True, help="CA and server key material")
    cli.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig file to write")
    cli.add_argument("--context", default="sim")
    cli.add_argument("--token", default="sim-token")
    cli.add_argument(
        "--heartbeat-interval", type=_non_negative_float, default=10.0, help="seconds; 0 = none"
    )
    cli.add_argument("--bookmark-interval", type=_non_negative_float, default=60.0)
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.context.strip():
        parser().error("--context must not be empty")
    try:
        from netweave.logs import configure_logging

        configure_logging("kubesim")
    except Exception:  # logging is a convenience here, never a reason not to run
        pass
    nodes = simulated_cluster(
        nodes=args.nodes,
        zones=args.zones,
        region=args.region,
        gpu_every=args.gpu_every,
        seed=args.seed,
    )
    # The same seed and context give the same cluster identity on every run, so the ids of
    # everything the adapter derives from it stay the same across restarts of the demo.
    cluster_uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kubesim/{args.seed}/{args.context}"))
    simulator = KubeApiSimulator(
        args.state_dir,
        nodes,
        cluster_uid=cluster_uid,
        token=args.token,
        bookmark_interval=args.bookmark_interval,
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    simulator.start()
    try:
        kubeconfig = simulator.write_kubeconfig(args.kubeconfig, context=args.context, merge=True)
        print(
            f"kube API simulator: {simulator.url} ({args.nodes} nodes, cluster uid "
            f"{simulator.cluster_uid})\n"
            f"  kubeconfig {kubeconfig} (context {args.context})\n"
            f"  use it:    NETWEAVE_KUBECONFIG={kubeconfig} make run\n"
            f"  or:        kubectl --kubeconfig {kubeconfig} --context {args.context} get nodes",
            flush=True,
        )
        interval = args.heartbeat_interval
        while not stopping.wait(interval if interval > 0 else None):
            simulator.heartbeat()
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
