"""Reading a Redis stream through a consumer group, as the matcher (`inventory:events`,
`alarms:events`) and every delivery worker (its subscription's queue) do: on taking over,
finish what a previous reader read but did not acknowledge, oldest first, before reading
anything new."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

import redis

# (entry id, fields); the fields are empty for an entry deleted from the stream since it
# was read (it is still pending, and only needs acknowledging).
Entry = tuple[bytes, dict[bytes, bytes]]

# How often to look again while a previous reader's entries are not idle long enough yet.
PENDING_POLL_S: Final = 0.1


def entries(reply: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply."""
    return [
        (entry_id, fields or {})
        for _stream, stream_entries in reply or []
        for entry_id, fields in stream_entries
    ]


def entries_by_stream(reply: Any) -> dict[str, list[Entry]]:
    """The entries of an XREADGROUP reply over several streams, by stream name."""
    found: dict[str, list[Entry]] = {}
    for stream, stream_entries in reply or []:
        name = stream.decode() if isinstance(stream, bytes) else str(stream)
        found.setdefault(name, []).extend(
            (entry_id, fields or {}) for entry_id, fields in stream_entries
        )
    return found


def recover_step(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    *,
    min_idle_ms: int,
    count: int,
) -> list[Entry] | None:
    """One pass of recover_pending that never waits: the next batch of entries pending
    to `consumer` (after claiming another consumer's that are idle for `min_idle_ms`);
    [] if only another consumer's remain, not idle long enough yet (look again later);
    None once nothing is pending."""
    cursor = "0-0"
    while True:
        reply: Any = client.xautoclaim(
            stream, group, consumer, min_idle_time=min_idle_ms, start_id=cursor, count=count
        )
        cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if cursor == "0-0":
            break
    own = entries(client.xreadgroup(group, consumer, {stream: "0"}, count=count))
    if own:
        return own
    pending: Any = client.xpending(stream, group)
    if not pending or int(pending.get("pending", 0)) == 0:
        return None
    return []


def recover_pending(
    client: redis.Redis,
    stream: str,
    group: str,
    consumer: str,
    *,
    min_idle_ms: int,
    count: int,
    handle: Callable[[list[Entry]], None],
    stop: threading.Event,
    done: Callable[[], bool] = lambda: False,
) -> None:
    """Pass every entry still pending in `group` to `handle`, a batch at a time, oldest
    first, until none is pending (or `stop` is set, or `done()`). Another consumer's
    entries are claimed (XAUTOCLAIM) only once idle for `min_idle_ms`, so a previous
    reader that is still running is not raced; they are waited for meanwhile."""
    while not stop.is_set() and not done():
        batch = recover_step(client, stream, group, consumer, min_idle_ms=min_idle_ms, count=count)
        if batch is None:
            return
        if batch:
            handle(batch)
        else:
            stop.wait(PENDING_POLL_S)
