"""`python -m server`: run the core until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from netweave.lifecycle import run_until_signalled
from netweave.logs import configure_logging
from server.app import create_server
from server.config import GatewayConfig


def main() -> int:
    log = configure_logging("core")
    try:
        config = GatewayConfig.from_env()
    except ValueError as exc:
        log.error("configuration_invalid", error=str(exc))
        return 2
    gateway, port = create_server(config)
    run_until_signalled(log, "gateway", gateway.start, lambda: gateway.stop(grace=2.0).wait(5.0))
    log.info("gateway_stopped", grpc_port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
