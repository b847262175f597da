"""The retention purge: every `interval` seconds one replica deletes the cleared alarm event
records older than the alarm service configuration's retentionPeriod.

One replica per interval: each tries to take the purge lock (SET NX PX, held for the whole
interval and never released), and only the one that gets it purges. A replica that dies
while holding it costs at most one interval. The purged records leave the alarm event
stream as it is: notifications already written still go out.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import redis
import structlog

from server.alarms.store import AlarmStore

log = structlog.get_logger()

DAY = dt.timedelta(days=1)


class AlarmPurger(threading.Thread):
    def __init__(
        self,
        store: AlarmStore,
        interval: float,
        stop: threading.Event,
        on_purged: Callable[[int], None],
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        super().__init__(name="alarm-purge", daemon=True)
        self._store = store
        self._interval = interval
        self._stopping = stop
        self._on_purged = on_purged
        self._now = now

    def run(self) -> None:
        while True:
            self.purge_once()
            if self._stopping.wait(self._interval):
                return

    def purge_once(self) -> int:
        """One round: purge if this replica gets the lock; returns how many it purged."""
        try:
            if not self._store.try_purge_lock(self._interval):
                return 0
            retention = self._store.config().retention_period
            purged = self._store.purge_cleared(self._now() - retention * DAY)
        except redis.RedisError as error:
            log.warning("alarm_purge_failed", error=str(error))
            return 0
        if purged:
            log.info("alarms_purged", count=purged, retention_days=retention)
            self._on_purged(purged)
        return purged
