"""An adapter's ops endpoint (/healthz, /readyz, /metrics): netweave's OpsServer, with a
readiness read from the adapter's publisher."""

from __future__ import annotations

import sys
from typing import Any

from prometheus_client import CollectorRegistry

from adapters.publisher import ObjectSetPublisher
from netweave.ops import OpsServer, ReadinessCheck, readiness_status


def publisher_readiness(publisher: ObjectSetPublisher) -> ReadinessCheck:
    """Ready once the adapter has published its set; `degraded` while it reports problems
    (a region that does not answer, objects it refuses): the core serves its last set."""

    def readiness() -> tuple[bool, dict[str, Any]]:
        published = publisher.published
        problems = publisher.problems
        checks: dict[str, Any] = {
            "published": {"ok": published, "revision": publisher.revision},
            "backend": {"ok": not problems},
        }
        if not published:
            checks["published"]["reason"] = "the adapter has not read its backend yet"
        if problems:
            checks["backend"]["reason"] = "; ".join(problems)
        body: dict[str, Any] = {"status": readiness_status(published, checks), "checks": checks}
        if not published:
            body["failing"] = ["published"]
        return published, body

    return readiness


def serve_ops(
    prog: str, host: str, port: int, publisher: ObjectSetPublisher, registry: CollectorRegistry
) -> bool:
    """Start the adapter's ops endpoint on `port` (0: none); False, with the reason on
    stderr, when it cannot be bound (the adapter then exits 1)."""
    if not port:
        return True
    try:
        OpsServer(host, port, publisher_readiness(publisher), registry).start()
    except OSError as error:
        print(
            f"{prog}: cannot serve /metrics, /healthz, /readyz on port {port}: {error}",
            file=sys.stderr,
        )
        return False
    return True
