"""The thread of an in-process view of Redis state (the alarm view, the subscription view):
load everything once, then apply what the streams bring, step by step, loading again when a
step finds it cannot follow (a gap, an unreadable entry, a counter that moved without one);
while Redis fails, the view keeps serving what it holds and tries again with backoff."""

from __future__ import annotations

import threading

import redis
import structlog

from netweave.backoff import Backoff

log = structlog.get_logger()


class FollowingThread(threading.Thread):
    """Subclasses load() (and set `loaded`) and step() (one blocking read of the streams)."""

    def __init__(self, name: str, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._stopping = stop
        self._backoff = Backoff()
        # Until the first load the view serves nothing: its store reads Redis.
        self.loaded = False

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self.loaded:
                    self.load()
                self.step()
                self._backoff.reset()
            except redis.RedisError as error:
                log.warning("view_redis_failed", view=self.name, error=str(error))
                self._stopping.wait(self._backoff.next_delay())

    def load(self) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError
