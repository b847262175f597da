"""`make run`'s banner shows a redis-cli line that works for the Redis it was given."""

from __future__ import annotations

from devstack.__main__ import _redis_cli


def test_a_plain_url_is_given_to_redis_cli() -> None:
    assert _redis_cli("redis://127.0.0.1:6380/0") == (
        "redis-cli -u redis://127.0.0.1:6380/0 XLEN inventory:events"
    )


def test_a_sentinel_url_asks_the_first_sentinel_for_the_primary() -> None:
    line = _redis_cli("redis+sentinel://s1:26380,s2:26379/netweave/0")
    assert line.startswith("redis-cli -h s1 -p 26380 SENTINEL get-master-addr-by-name netweave")
    assert "-u redis+sentinel" not in line  # redis-cli does not know that scheme
