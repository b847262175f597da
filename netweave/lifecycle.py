"""Run a service until SIGTERM or SIGINT, the same way in every netweave process."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


def stop_requested(log: Any | None = None, name: str = "") -> threading.Event:
    """An event set by SIGTERM or SIGINT (logging `<name>_stopping` when `log` is given).
    Call it before anything slow, so an early signal still ends in an orderly exit."""
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        if log is not None:
            log.info(f"{name}_stopping", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stopping


def wait_for(stopping: threading.Event) -> None:
    """Block until `stopping` is set; the timed wait keeps the main thread responsive to
    signals on every platform."""
    while not stopping.wait(0.5):
        pass


def run_until_signalled(
    log: Any, name: str, start: Callable[[], Any], stop: Callable[[], Any]
) -> None:
    """start(), wait for SIGTERM/SIGINT (logging `<name>_stopping`), then stop()."""
    stopping = stop_requested(log, name)
    start()
    wait_for(stopping)
    stop()
