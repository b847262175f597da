"""The one reconnect backoff every process uses: exponential with jitter, reset on success."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter (a delay drawn from the upper half of the current
    step, so reconnecting clients spread out but never retry at once), reset on success."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._attempt = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * (2**self._attempt))
        self._attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._attempt = 0
