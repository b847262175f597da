"""Structured JSON logging (structlog) for every netweave process."""

from __future__ import annotations

import logging
import sys

import structlog

from netweave import settings


def configure_logging(component: str, level: str | None = None) -> structlog.stdlib.BoundLogger:
    """Send one JSON object per line to stderr, tagged with the component name.

    The level comes from `level`, else NETWEAVE_LOG_LEVEL, else INFO.
    """
    level_name = (level or settings.LOG_LEVEL.read()).upper()
    logging.basicConfig(stream=sys.stderr, format="%(message)s", level=level_name, force=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level_name)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logger: structlog.stdlib.BoundLogger = structlog.get_logger().bind(component=component)
    return logger
