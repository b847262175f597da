"""`python -m server`: run the core until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import sys
import threading

from netweave.logs import configure_logging
from server.app import create_server
from server.config import GatewayConfig


def main() -> int:
    log = configure_logging("core")
    try:
        config = GatewayConfig.from_env()
    except ValueError as exc:
        print(f"netweave core: {exc}", file=sys.stderr)
        return 2
    gateway, port = create_server(config)
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("gateway_stopping", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    gateway.start()
    stopping.wait()
    gateway.stop(grace=2.0).wait(5.0)
    log.info("gateway_stopped", grpc_port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
