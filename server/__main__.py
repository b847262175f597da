"""`python -m server`: run the core until SIGTERM/SIGINT."""

from __future__ import annotations

import sys

from netweave import tracing
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
    tracing.configure("core", config.tracing)
    try:
        gateway, port = create_server(config)
    except ValueError as exc:  # e.g. Redis holds data of another layout
        log.error("cannot_start", error=str(exc))
        return 2
    try:
        run_until_signalled(
            log, "gateway", gateway.start, lambda: gateway.stop(grace=2.0).wait(5.0)
        )
    finally:
        tracing.shutdown()  # the last spans, flushed
    log.info("gateway_stopped", grpc_port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
