"""`make run`: start the whole gateway locally and print how to call it; Ctrl-C stops it."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from devstack.stack import REPO, LocalStack, StackConfig


def _short(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def _banner(stack: LocalStack) -> str:
    ca = _short(stack.pki.ca_cert)
    cert, key = _short(stack.pki.client_cert), _short(stack.pki.client_key)
    tls = f"--cacert {ca} --cert {cert} --key {key}"
    base = f"{stack.rest_url}/o2ims-infrastructureInventory/v1"
    grpc = stack.grpc_address
    required = "required" if stack.config.require_token else "optional"
    secret_file = _short(stack.webhook_secret_path)
    return f"""
netweave is running (inventory: {stack.config.inventory})

  REST + gRPC (Envoy)  {stack.rest_url}  (mTLS: client certificate required; token {required})
  gRPC core            {grpc}  (internal listener: plaintext, loopback, reflection on; admin)
  core edge listener   127.0.0.1:{stack.config.edge_port}  (mutual TLS, Envoy's certificate only)
  operations           {stack.ops_url}/healthz  {stack.ops_url}/readyz  {stack.ops_url}/metrics
  notifier             {stack.notifier_ops_url}/metrics  (webhook secret: {secret_file})
  Envoy admin          {_short(stack.envoy_admin_socket)}  (Unix socket, 0600, root only)
  logs                 {stack.logs}/  (audit trail: audit.log, audit-edge.log)
  access policy        {stack.config.auth_policy}

Try (the dev client certificate is an admin):
  curl {tls} {base}
  curl {tls} {base}/resourcePools
  curl {tls} {base}/resourceTypes
  curl {tls} {base}/deploymentManagers
  curl {tls} {base}/resourcePools/<resourcePoolId>/resources
  make client-cert NAME=smo-north          # another client (smo-* may read and subscribe)
  curl {tls} -H "Authorization: Bearer $(make -s token NAME=smo-north ROLE=o2ims-reader)" {base}
  .venv/bin/grpcurl -plaintext {grpc} list
  .venv/bin/grpcurl -plaintext {grpc} describe o2ims.inventory.v1.InventoryService
  .venv/bin/grpcurl -plaintext {grpc} o2ims.inventory.v1.InventoryService/ListResourcePools

Edit {stack.config.inventory} and the API follows within a second. Ctrl-C stops everything.
"""


def main() -> int:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stack = LocalStack(StackConfig.from_env())
    print("starting Redis, the static adapter, the core, the notifier and Envoy ...", flush=True)
    try:
        stack.start()
    except Exception as exc:
        print(f"netweave failed to start: {exc}", file=sys.stderr)
        return 1
    print(_banner(stack), flush=True)
    code = 0
    while not stop.wait(1.0):
        dead = [name for name, alive in stack.processes() if not alive]
        if dead:
            print(f"stopping: {', '.join(dead)} exited; see {stack.logs}/", file=sys.stderr)
            code = 1
            break
    print("stopping ...", flush=True)
    stack.stop()
    print("stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
