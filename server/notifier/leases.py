"""Leases in Redis: who does a piece of work that must be done by one process at a time
(the matcher; each subscription's queue). A lease is a key holding the owner's consumer
name with a PX expiry; the owner renews it, and when it stops (killed, cut off from
Redis) the lease expires and another process takes over. The subscriptions' leases are
MemberLeases: they lapse with their holder's membership instead, so that renewing thousands
costs one command."""

from __future__ import annotations

import time
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


_TAKE_FROM_THE_DEAD: Final = """
-- KEYS: members zset, then lease keys; ARGV: owner, now ms, ttl ms. Returns 1/0 per lease
-- key: held by us now or not. A lease is free if nobody holds it, or if its holder is no
-- live member (its entry in the members zset is missing or expired).
local held = {}
for i = 2, #KEYS do
  local owner = redis.call('GET', KEYS[i])
  local free = owner == false or owner == ARGV[1]
  if not free then
    local expires = redis.call('ZSCORE', KEYS[1], owner)
    free = expires == false or tonumber(expires) < tonumber(ARGV[2])
  end
  if free then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[3])
    held[i - 1] = 1
  else
    held[i - 1] = 0
  end
end
return held
"""

# How long a member lease key lives without being renewed: a safety net against keys
# nobody releases (their holder lives as long as it is a member); renewed every third.
MEMBER_LEASE_TTL_MS: Final = 24 * 3600 * 1000


class MemberLeases:
    """Leases that live as long as their holder is a live member of `members` (a sorted
    set scored by expiry, which each member renews): renewing every lease held is one
    ZADD, whatever their number. A member whose entry lapsed (cut off from Redis, paused)
    must `hold` its leases again before trusting them: any may have been taken."""

    def __init__(self, client: redis.Redis, owner: str, members: str) -> None:
        self._client = client
        self.owner = owner
        self._members = members
        self._take = client.register_script(_TAKE_FROM_THE_DEAD)
        self._release = client.register_script(_RELEASE)

    def hold(self, keys: Sequence[str]) -> list[bool]:
        """Take (from nobody, or from a member that is no more) or keep each lease; True
        where it is ours now."""
        if not keys:
            return []
        now_ms = int(time.time() * 1000)
        reply: Any = self._take(
            keys=[self._members, *keys], args=[self.owner, now_ms, MEMBER_LEASE_TTL_MS]
        )
        return [bool(held) for held in reply]

    def release(self, key: str) -> None:
        self._release(keys=[key], args=[self.owner])
