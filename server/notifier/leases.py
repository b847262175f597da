"""Leases in Redis: who does a piece of work that must be done by one process at a time
(the matcher; each subscription's queue). A lease is a key holding the owner's consumer
name with a PX expiry; the owner renews it, and when it stops (killed, cut off from
Redis) the lease expires and another process takes over."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import redis

_TAKE_OR_RENEW: Final = """
-- KEYS: lease keys; ARGV: owner, ttl ms. Returns 1/0 per key: held by us now or not.
local held = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == false or owner == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
"""

_RELEASE: Final = """
-- KEYS: lease key; ARGV: owner. Only our own lease.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Leases:
    def __init__(self, client: redis.Redis, owner: str, ttl_ms: int) -> None:
        self._client = client
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._take = client.register_script(_TAKE_OR_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self, keys: Sequence[str]) -> list[bool]:
        """Take or renew each lease; True where it is ours now."""
        if not keys:
            return []
        reply: Any = self._take(keys=list(keys), args=[self.owner, self.ttl_ms])
        return [bool(held) for held in reply]

    def release(self, key: str) -> None:
        self._release(keys=[key], args=[self.owner])
