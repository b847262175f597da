"""`python -m server`: run the core until SIGTERM/SIGINT."""

from __future__ import annotations

import os
import sys

import structlog

from netweave import tracing
from netweave.lifecycle import run_until_signalled
from netweave.logs import configure_logging
from server import workers
from server.app import create_server
from server.config import GatewayConfig


def main() -> int:
    log = configure_logging("core")
    try:
        config = GatewayConfig.from_env()
    except ValueError as exc:
        log.error("configuration_invalid", error=str(exc))
        return 2
    role = workers.WorkerRole.from_arguments(sys.argv[1:])
    if role is None and config.core_processes > 1:
        # A supervisor of fresh worker interpreters; it creates no gRPC object itself.
        return workers.supervise(config, config.core_processes)
    if role is not None:
        cpu = role.cpu
        structlog.contextvars.bind_contextvars(worker=role.index)
        role.watch_supervisor()
        config = config.for_worker(role.index)
    else:
        [cpu] = workers.cpu_placement(config.core_cpu_affinity, 1, os.sched_getaffinity(0))
    if cpu is not None:
        # Before gRPC starts its threads (they inherit it); the ones running move now.
        workers.keep_on_cpu(cpu)
        log.info("core_cpu_affinity", cpu=cpu, mode=config.core_cpu_affinity)
    tracing.configure("core", config.tracing)
    try:
        gateway, port = create_server(config)
    except ValueError as exc:  # e.g. Redis holds data of another layout
        log.error("cannot_start", error=str(exc))
        return 2
    if role is not None:
        role.report_bound(gateway.ops.port)
    drain_s, grace_s = config.shutdown_drain_s, config.shutdown_grace_s
    finished = True

    def stop() -> None:
        # New calls refused at once, the ones in flight get the grace period; the wait is
        # a little longer so the cancelled ones can end too.
        nonlocal finished
        finished = gateway.stop(grace=grace_s).wait(grace_s + 3.0)

    try:
        # SIGTERM: drain (NOT_SERVING, /readyz 503, still serving), then stop (docs/
        # operations.md "Replicas and rolling upgrades"); a second signal cuts the drain.
        run_until_signalled(
            log,
            "gateway",
            gateway.start,
            stop,
            drain=lambda: gateway.drain(drain_s, grace_s),
            drain_s=drain_s,
        )
    finally:
        tracing.shutdown()  # the last spans, flushed
    log.info("gateway_stopped", grpc_port=port, calls_finished=finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
