"""Run a simulated Kubernetes API server with a deterministic cluster of Nodes.

    python -m devstack.kubesim --nodes 50 --zones 3 --state-dir .netweave/kubesim \\
        --kubeconfig .netweave/kubesim/kubeconfig [--context sim] [--heartbeat-interval 10]

Writes a kubeconfig (merged into an existing file: several simulators may share one),
heartbeats every node like kubelets do, and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from devstack.kubesim.nodes import simulated_cluster
from devstack.kubesim.server import KubeApiSimulator
from netweave.lifecycle import stop_requested


def _bounded(convert: Callable[[str], float], minimum: float) -> Callable[[str], Any]:
    """An argparse type: `convert` of the text, at least `minimum`."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}: {value}")
        return value

    return parse


_non_negative_int = _bounded(int, 0)
_positive_int = _bounded(int, 1)
_non_negative_float = _bounded(float, 0)


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
    stopping = stop_requested()
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
