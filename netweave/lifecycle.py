"""Run a service until SIGTERM or SIGINT, the same way in every netweave process."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


def run_until_signalled(
    log: Any, name: str, start: Callable[[], Any], stop: Callable[[], Any]
) -> None:
    """start(), wait for SIGTERM/SIGINT (logging `<name>_stopping`), then stop()."""
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info(f"{name}_stopping", signal=signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    start()
    stopping.wait()
    stop()
