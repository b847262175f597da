"""The core's and the notifier's operations endpoint: netweave.ops, shared with the
adapters (re-exported here, where the gateway's code has always found it)."""

from netweave.ops import (
    DEFAULT_LIMITS,
    DEGRADED,
    FAILING,
    OK,
    OpsLimits,
    OpsServer,
    ReadinessCheck,
    health_identity,
    readiness_status,
    redis_check,
)

__all__ = [
    "DEFAULT_LIMITS",
    "DEGRADED",
    "FAILING",
    "OK",
    "OpsLimits",
    "OpsServer",
    "ReadinessCheck",
    "health_identity",
    "readiness_status",
    "redis_check",
]
