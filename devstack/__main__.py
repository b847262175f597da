"""`make run`: start the whole gateway locally and print how to call it; Ctrl-C stops it."""

from __future__ import annotations

import signal
import sys
import threading

from devstack.stack import REPO, LocalStack, StackConfig


def _banner(stack: LocalStack) -> str:
    ca = (
        stack.pki.ca_cert.relative_to(REPO)
        if stack.pki.ca_cert.is_relative_to(REPO)
        else stack.pki.ca_cert
    )
    base = f"{stack.rest_url}/o2ims-infrastructureInventory/v1"
    grpc = stack.grpc_address
    return f"""
netweave is running (inventory: {stack.config.inventory})

  REST (Envoy, TLS)   {stack.rest_url}
  gRPC core           {grpc}  (plaintext, loopback, reflection on)
  operations          {stack.ops_url}/healthz  {stack.ops_url}/readyz  {stack.ops_url}/metrics
  logs                {stack.logs}/

Try:
  curl --cacert {ca} {base}
  curl --cacert {ca} {base}/resourcePools
  curl --cacert {ca} {base}/resourceTypes
  curl --cacert {ca} {base}/deploymentManagers
  curl --cacert {ca} {base}/resourcePools/<resourcePoolId>/resources
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
    print("starting Redis, the static adapter, the core and Envoy ...", flush=True)
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
