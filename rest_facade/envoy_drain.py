"""`python -m rest_facade.envoy_drain`: drain an Envoy before it is stopped (the gateway pod's
preStop hook of its Envoy container, deployments/kubernetes/base/gateway.yaml).

    python -m rest_facade.envoy_drain --admin-socket /run/netweave/envoy-admin.sock \\
        --delay 5 --drain-seconds 8

Envoy exits at once on SIGTERM, closing every connection with requests in flight. Kubernetes
sends SIGTERM when the preStop hook returns, so the hook drains first:

1. waits `--delay` seconds, serving as usual, while the pod's removal from the Service's
   endpoints reaches kube-proxy and load balancers (it happens in parallel with the hook);
2. POSTs `/drain_listeners?graceful` to the admin API: for Envoy's `--drain-time-s`, every
   response tells the client to go elsewhere (`Connection: close`, HTTP/2 GOAWAY), then the
   listeners close;
3. waits `--drain-seconds` (set it to the `--drain-time-s` Envoy was started with), then
   returns.

It exits 0 even when Envoy's admin API does not answer (an Envoy that is gone needs no
drain): a failing preStop hook only delays the stop by the grace period.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rest_facade.envoy_config import DEFAULT_ADMIN_SOCKET
from rest_facade.envoy_process import admin_post

DRAIN_PATH = "/drain_listeners?graceful"


def drain(
    admin_socket: Path,
    delay_s: float,
    drain_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Steps 1-3 of the module docstring; False if the admin API refused or did not answer."""
    sleep(delay_s)
    try:
        admin_post(admin_socket, DRAIN_PATH)
    except OSError as exc:
        print(f"envoy_drain: {exc}", file=sys.stderr)
        return False
    print(f"envoy_drain: draining listeners for {drain_s:g}s", file=sys.stderr)
    sleep(drain_s)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rest_facade.envoy_drain", description=__doc__)
    parser.add_argument("--admin-socket", type=Path, default=DEFAULT_ADMIN_SOCKET)
    parser.add_argument("--delay", type=float, default=5.0, help="seconds before draining [5]")
    parser.add_argument("--drain-seconds", type=float, required=True, help="Envoy's --drain-time-s")
    args = parser.parse_args(argv)
    drain(args.admin_socket, args.delay, args.drain_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
