"""How every netweave process stops (netweave/lifecycle.py): on SIGTERM or SIGINT, a drain
period (when the process has one) while still serving, cut short by a second signal, then
the stop. Real signals, sent to this process."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from netweave.lifecycle import run_until_signalled


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


@pytest.fixture(autouse=True)
def _restore_handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def send_later(signum: signal.Signals, delay_s: float) -> None:
    threading.Timer(delay_s, os.kill, (os.getpid(), signum)).start()


def test_sigterm_drains_for_the_drain_period_then_stops() -> None:
    log = RecordingLog()
    steps: list[tuple[str, float]] = []
    began = time.monotonic()

    run_until_signalled(
        log,
        "gateway",
        lambda: send_later(signal.SIGTERM, 0.1),
        lambda: steps.append(("stop", time.monotonic() - began)),
        drain=lambda: steps.append(("drain", time.monotonic() - began)),
        drain_s=0.8,
    )

    assert [name for name, _ in steps] == ["drain", "stop"]
    (_, drained), (_, stopped) = steps
    assert stopped - drained >= 0.8
    assert log.events == [("gateway_stopping", {"signal": "SIGTERM"})]


def test_a_second_signal_cuts_the_drain_short() -> None:
    log = RecordingLog()
    steps: list[str] = []
    began = time.monotonic()

    def drain() -> None:
        steps.append("drain")
        send_later(signal.SIGINT, 0.2)

    run_until_signalled(
        log,
        "gateway",
        lambda: send_later(signal.SIGTERM, 0.1),
        lambda: steps.append("stop"),
        drain=drain,
        drain_s=60,
    )

    assert steps == ["drain", "stop"]
    assert time.monotonic() - began < 5
    assert [event for event, _ in log.events] == ["gateway_stopping", "gateway_hurried"]
    assert log.events[1][1] == {"signal": "SIGINT"}


def test_without_a_drain_the_stop_follows_the_signal() -> None:
    steps: list[str] = []

    run_until_signalled(
        None, "notifier", lambda: send_later(signal.SIGTERM, 0.1), lambda: steps.append("stop")
    )

    assert steps == ["stop"]
