"""Run a service until SIGTERM or SIGINT, the same way in every netweave process."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any


class ShutdownSignals:
    """SIGTERM and SIGINT, counted: the first sets `stopping` (logging `<name>_stopping`),
    any later one sets `hurry` too (logging `<name>_hurried`), which cuts a drain short.
    Build it before anything slow, so an early signal still ends in an orderly exit."""

    def __init__(self, log: Any | None = None, name: str = "") -> None:
        self.stopping = threading.Event()
        self.hurry = threading.Event()
        self._log = log
        self._name = name
        signal.signal(signal.SIGTERM, self._received)
        signal.signal(signal.SIGINT, self._received)

    def _received(self, signum: int, _frame: object) -> None:
        again = self.stopping.is_set()
        if self._log is not None:
            event = f"{self._name}_hurried" if again else f"{self._name}_stopping"
            self._log.info(event, signal=signal.Signals(signum).name)
        if again:
            self.hurry.set()
        self.stopping.set()


def stop_requested(log: Any | None = None, name: str = "") -> threading.Event:
    """An event set by SIGTERM or SIGINT (logging `<name>_stopping` when `log` is given).
    Call it before anything slow, so an early signal still ends in an orderly exit."""
    return ShutdownSignals(log, name).stopping


def wait_for(stopping: threading.Event, timeout: float | None = None) -> bool:
    """Block until `stopping` is set (True) or `timeout` seconds have passed (False); the
    timed waits keep the main thread responsive to signals on every platform."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if remaining <= 0:
            return stopping.is_set()
        if stopping.wait(remaining):
            return True


def run_until_signalled(
    log: Any,
    name: str,
    start: Callable[[], Any],
    stop: Callable[[], Any],
    *,
    drain: Callable[[], Any] | None = None,
    drain_s: float = 0.0,
) -> None:
    """start(), wait for SIGTERM/SIGINT (logging `<name>_stopping`), then stop().

    With `drain`: on the signal, drain() (the process says it is going: health
    NOT_SERVING, readiness failing) and keep serving for `drain_s` seconds, so load
    balancers stop sending before stop() refuses new calls; a second signal ends the
    drain at once."""
    signals = ShutdownSignals(log, name)
    start()
    wait_for(signals.stopping)
    if drain is not None and not signals.hurry.is_set():
        drain()
        if drain_s > 0:
            wait_for(signals.hurry, drain_s)
    stop()
