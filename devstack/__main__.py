"""`make run`: start the whole gateway locally, print how to call it, and supervise it until
Ctrl-C or SIGTERM; `make stop` (`python -m devstack stop`) stops a stack left running.

    python -m devstack [run] [--state-dir DIR]
    python -m devstack stop [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from devstack.processes import StackRecord
from devstack.stack import REPO, LocalStack, StackConfig
from netweave.redis_url import parse_redis_url

# How often the supervisor looks at its children: an exit is reported within this.
CHECK_INTERVAL_S = 0.5


def _short(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


# A resource of the example inventory, so the alarm finds its resource by name.
_EXAMPLE_ALERT = (
    '{"version":"4","status":"firing","alerts":[{"status":"firing",'
    '"labels":{"alertname":"NodeDown","severity":"major","node":"ber-fe01-du01"},'
    '"annotations":{"summary":"ber-fe01-du01 is down"},"startsAt":"2026-01-01T00:00:00Z"}]}'
)


def _alertmanager_lines(stack: LocalStack) -> tuple[str, str]:
    """The banner's Alertmanager adapter line and its "raise an alarm" example ("", "" when
    the adapter does not run)."""
    if not stack.config.alertmanager:
        return "", ""
    url = stack.alertmanager_webhook_url
    token = _short(stack.alertmanager_token_path)
    listing = (
        f"\n  Alertmanager adapter 127.0.0.1:{stack.config.alertmanager_adapter_port}  "
        f"webhook {url}  (bearer token: {token})"
    )
    resolved = _EXAMPLE_ALERT.replace('"firing"', '"resolved"')
    example = f"""
Raise an alarm as Alertmanager would (then clear it with the second one):
  curl -H "Authorization: Bearer $(cat {token})" -H 'Content-Type: application/json' \\
    -d '{_EXAMPLE_ALERT}' {url}
  curl -H "Authorization: Bearer $(cat {token})" -H 'Content-Type: application/json' \\
    -d '{resolved}' {url}
Or point a real Alertmanager at it (alertmanager.yml):
  receivers:
    - name: netweave
      webhook_configs:
        - url: {url}
          http_config: {{authorization: {{credentials_file: {stack.alertmanager_token_path}}}}}
"""
    return listing, example


def _redis_cli(url: str) -> str:
    """A redis-cli line for `url`: through a sentinel, first ask it for the primary."""
    target = parse_redis_url(url)
    if not target.master_name:
        return f"redis-cli -u {url} XLEN inventory:events"
    host, port = target.endpoints[0]
    return (
        f"redis-cli -h {host} -p {port} SENTINEL get-master-addr-by-name {target.master_name}"
        "   # then redis-cli -h/-p of the primary it names"
    )


def _banner(stack: LocalStack) -> str:
    ca = _short(stack.pki.ca_cert)
    cert, key = _short(stack.pki.client_cert), _short(stack.pki.client_key)
    tls = f"--cacert {ca} --cert {cert} --key {key}"
    base = f"{stack.rest_url}/o2ims-infrastructureInventory/v1"
    alarms = f"{stack.rest_url}/o2ims-infrastructureMonitoring/v1"
    grpc = stack.grpc_address
    required = "required" if stack.config.require_token else "optional"
    secret_file = _short(stack.webhook_secret_path)
    redis_url = stack.redis_url
    clusters = "".join(
        f"\n  Kubernetes adapter   127.0.0.1:{cluster.port}  {cluster.name}: "
        f"{_short(cluster.kubeconfig)}"
        + (f" (context {cluster.context})" if cluster.context else "")
        + f"  ops: http://127.0.0.1:{cluster.ops_port}/metrics"
        for cluster in stack.config.kube_clusters
    )
    alertmanager, alarm_example = _alertmanager_lines(stack)
    aws = (
        f"\n  AWS adapter          127.0.0.1:{stack.config.aws_adapter_port}  regions "
        f"{','.join(stack.config.aws_regions)}  (log: {_short(stack.logs)}/adapter-aws.log)"
        + (f"\n  moto (fake AWS)      {stack.moto.url}  (demo account)" if stack.moto else "")
        if stack.config.aws_regions
        else ""
    )
    return f"""
netweave is running (inventory: {stack.config.inventory})

  REST + gRPC (Envoy)  {stack.rest_url}  (mTLS: client certificate required; token {required})
  gRPC core            {grpc}  (internal listener: plaintext, loopback, reflection on; admin)
  core edge listener   127.0.0.1:{stack.config.edge_port}  (mutual TLS, Envoy's certificate only)
  operations           {stack.ops_url}/healthz  {stack.ops_url}/readyz  {stack.ops_url}/metrics
  notifier             {stack.notifier_ops_url}/metrics  (webhook secret: {secret_file})
  static adapter       http://127.0.0.1:{stack.config.adapter_ops_port}/metrics  (+ /readyz)
  Redis                {redis_url}
  Envoy admin          {_short(stack.envoy_admin_socket)}  (Unix socket, 0600, root only)
  Envoy stats          {stack.envoy_stats_url}  (GET /stats/prometheus and /ready only)
  edge telemetry       127.0.0.1:{stack.config.edge_telemetry_port}  (Envoy's access log, mTLS)
  logs                 {stack.logs}/  (audit trail: audit.log, audit-edge.log)
  access policy        {stack.config.auth_policy}{clusters}{alertmanager}{aws}

Try (the dev client certificate is an admin):
  curl {tls} {base}
  curl {tls} {base}/resourcePools
  curl {tls} {base}/resourceTypes
  curl {tls} {base}/deploymentManagers
  curl {tls} {base}/resourcePools/<resourcePoolId>/resources
  curl {tls} {alarms}/alarms               # the example inventory's two active alarms
  make client-cert NAME=smo-north          # another client (smo-* may read and subscribe)
  curl {tls} -H "Authorization: Bearer $(make -s token NAME=smo-north ROLE=o2ims-reader)" {base}
  .venv/bin/grpcurl -plaintext {grpc} list
  .venv/bin/grpcurl -plaintext {grpc} describe o2ims.inventory.v1.InventoryService
  .venv/bin/grpcurl -plaintext {grpc} o2ims.inventory.v1.InventoryService/ListResourcePools
  {_redis_cli(redis_url)}
  REDIS_URL={redis_url} .venv/bin/python -m server.notifier dlq list
{alarm_example}
Edit {stack.config.inventory} and the API follows within a second.
Ctrl-C (or `make stop` from another terminal) stops everything.
"""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(config: StackConfig) -> int:
    # While starting, SIGINT and SIGTERM interrupt the start (LocalStack.start then stops
    # what it started); once running, they end the supervision loop.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    named = ["static"] + (["Alertmanager"] if config.alertmanager else [])
    named += ["AWS"] if config.aws_regions else []
    adapters = (
        f"the {named[0]} adapter"
        if len(named) == 1
        else f"the {', '.join(named[:-1])} and {named[-1]} adapters"
    )
    print(f"starting Redis, {adapters}, the core, the notifier and Envoy ...", flush=True)
    try:
        stack = LocalStack(config).start()
    except KeyboardInterrupt:
        print("interrupted; stopped.", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"netweave failed to start: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(_banner(stack), flush=True)
    code = 0
    while not stop.wait(CHECK_INTERVAL_S):
        try:
            stack.require_alive()
        except RuntimeError as exc:
            print(f"netweave: {exc}\nstopping the rest of the stack", file=sys.stderr)
            code = 1
            break
    print("stopping ...", flush=True)
    stack.stop()
    print("stopped.", flush=True)
    return code


def stop(state_dir: Path) -> int:
    """Stop the stack recorded in `state_dir`: its supervisor, then anything it left."""
    stopped = StackRecord(state_dir).stop()
    if stopped:
        print(f"stopped: {', '.join(stopped)}")
    else:
        print(f"no netweave stack running from {_short(state_dir)}/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", nargs="?", choices=("run", "stop"), default="run")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where the PKI, Redis data, logs and the stack record live [.netweave]",
    )
    args = parser.parse_args(argv)
    config = StackConfig.from_env()
    if args.state_dir is not None:
        config = replace(config, state_dir=args.state_dir.resolve())
    if args.command == "stop":
        return stop(config.state_dir)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
