"""The dead-letter stream: notifications that could not be delivered, kept for an operator
to inspect and replay (`python -m server.notifier dlq ...`).

Each entry holds the notification exactly as it was queued (notificationId, body, the
event id, correlationId and traceparent when the event had them) and its subscription
(subscriptionId, subscriptionKind), plus why it died: reason, attempts, lastStatus,
deadAt, callback (its userinfo and credential parameters masked: netweave/redaction.py).
Replaying puts it back at the end of its subscription's queue, with the same
notificationId (so a receiver that did get it after all can deduplicate), if the
subscription still exists.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, cast

import redis

from server.notifier import keys

_REPLAY: Final = """
-- KEYS: dead-letter stream, subscription hash, delivery queue, notifier:ready
-- ARGV: dead-letter id, consumer group, notification id, event id, body, correlation id
--       ('' = none), traceparent ('' = none), subscription id, notifier:ready's length
-- The wake-up is written with the entry: nothing polls the queues, so a replay whose
-- wake-up were lost would wait for the subscription's next notification.
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[3], ARGV[2], '0', 'MKSTREAM')
end
local entry = {'id', ARGV[3], 'event', ARGV[4], 'body', ARGV[5], 'replayed', '1'}
if ARGV[6] ~= '' then
  entry[#entry + 1] = 'correlationId'
  entry[#entry + 1] = ARGV[6]
end
if ARGV[7] ~= '' then
  entry[#entry + 1] = 'traceparent'
  entry[#entry + 1] = ARGV[7]
end
redis.call('XADD', KEYS[3], '*', unpack(entry))
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', 'ids', ARGV[8])
return 1
"""


def _text(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {name.decode(): value.decode(errors="replace") for name, value in fields.items()}


class DeadLetters:
    def __init__(self, client: redis.Redis, max_len: int = 100_000) -> None:
        self._client = client
        self._max_len = max_len
        self._replay = client.register_script(_REPLAY)

    def add(self, pipe: Any, fields: dict[str, str | bytes]) -> None:
        """Queue the XADD on `pipe` (the caller acknowledges the delivery in the same one)."""
        stamped = {"deadAt": datetime.now(UTC).isoformat(timespec="seconds"), **fields}
        pipe.xadd(keys.DEAD_LETTERS_KEY, stamped, maxlen=self._max_len, approximate=True)

    def list(self, count: int = 100) -> list[tuple[str, dict[str, str]]]:
        """The oldest `count` dead letters."""
        entries = cast(list[Any], self._client.xrange(keys.DEAD_LETTERS_KEY, "-", "+", count=count))
        return [(entry_id.decode(), _text(fields)) for entry_id, fields in entries]

    def get(self, entry_id: str) -> dict[str, str] | None:
        entries = cast(list[Any], self._client.xrange(keys.DEAD_LETTERS_KEY, entry_id, entry_id))
        return _text(entries[0][1]) if entries else None

    def replay(self, entry_id: str) -> str:
        """Put one dead letter back on its subscription's queue; returns what happened."""
        letter = self.get(entry_id)
        if letter is None:
            return "not found"
        subscription_id = letter.get("subscriptionId", "")
        replayed = self._replay(
            keys=[
                keys.DEAD_LETTERS_KEY,
                keys.kind_named(letter.get("subscriptionKind", "")).key(subscription_id),
                keys.queue_key(subscription_id),
                keys.READY_KEY,
            ],
            args=[
                entry_id,
                keys.DELIVER_GROUP,
                letter.get("notificationId", ""),
                letter.get("event", ""),
                letter.get("body", ""),
                letter.get("correlationId", ""),
                letter.get("traceparent", ""),
                subscription_id,
                keys.READY_MAX_LEN,
            ],
        )
        return "replayed" if replayed else f"subscription {subscription_id} no longer exists"
