"""REDIS_URL taken apart (netweave/redis_url.py): every scheme, and the exact message a
process stops with, naming REDIS_URL, for a URL it cannot use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netweave import settings
from netweave.redis_url import RedisTarget, parse_redis_url, redis_endpoints
from server.config import GatewayConfig
from server.notifier.config import NotifierConfig
from server.store import connect

SECRET = "s3cret"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/2", RedisTarget("redis", (("127.0.0.1", 6380),), db=2)),
        ("redis://redis", RedisTarget("redis", (("redis", 6379),))),
        ("redis://redis/", RedisTarget("redis", (("redis", 6379),))),
        (
            "redis://:p%40ss@[::1]:7000/1",
            RedisTarget("redis", (("::1", 7000),), db=1, password="p@ss"),
        ),
        (
            "rediss://app:pw@redis:6380/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required",
            RedisTarget(
                "rediss",
                (("redis", 6380),),
                username="app",
                password="pw",
                tls_options={"ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "required"},
            ),
        ),
        ("unix:///run/redis.sock?db=3", RedisTarget("unix", socket_path="/run/redis.sock", db=3)),
        (
            "redis+sentinel://s1:26379,s2:26380,s3/netweave/4",
            RedisTarget(
                "redis+sentinel",
                (("s1", 26379), ("s2", 26380), ("s3", 26379)),
                master_name="netweave",
                db=4,
            ),
        ),
        (
            "redis+sentinel://:pw@s1:26379/netweave?sentinel_password=spw",
            RedisTarget(
                "redis+sentinel",
                (("s1", 26379),),
                master_name="netweave",
                password="pw",
                sentinel_password="spw",
            ),
        ),
        (
            "rediss+sentinel://u:pw@[fd00::1]:26379,s2:26379/netweave/0"
            "?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_check_hostname=false",
            RedisTarget(
                "rediss+sentinel",
                (("fd00::1", 26379), ("s2", 26379)),
                master_name="netweave",
                username="u",
                password="pw",
                tls_options={
                    "ssl_ca_certs": "/ca.pem",
                    "ssl_certfile": "/c.pem",
                    "ssl_keyfile": "/k.pem",
                    "ssl_check_hostname": False,
                },
            ),
        ),
    ],
)
def test_valid_urls_parse(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected


def test_tls_and_credentials_reach_sentinels_and_data_nodes_as_configured() -> None:
    target = parse_redis_url(
        "rediss+sentinel://app:pw@s1:26379/netweave/0?ssl_ca_certs=/ca.pem&sentinel_password=spw"
    )
    assert target.node_options() == {
        "db": 0,
        "username": "app",
        "password": "pw",
        "ssl": True,
        "ssl_ca_certs": "/ca.pem",
    }
    assert target.sentinel_options() == {
        "username": None,
        "password": "spw",
        "ssl": True,
        "ssl_ca_certs": "/ca.pem",
    }


FORM = "redis+sentinel://[[user]:password@]host:port[,host:port...]/master_name[/db]"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://redis:6379",
            "REDIS_URL must start with redis://, rediss://, unix://, redis+sentinel:// or "
            "rediss+sentinel://, got 'http://redis:6379'",
        ),
        (
            "redis-sentinel://s1:26379/netweave",
            "REDIS_URL must start with redis://, rediss://, unix://, redis+sentinel:// or "
            "rediss+sentinel://, got 'redis-sentinel://s1:26379/netweave'",
        ),
        (
            f"redis+sentinel://:{SECRET}@s1:26379,s2:26379",
            f"REDIS_URL must name the master after the sentinels ({FORM}), "
            "got 'redis+sentinel://[redacted]@s1:26379,s2:26379'",
        ),
        (
            "redis+sentinel:///netweave",
            f"REDIS_URL must name at least one sentinel ({FORM}), got 'redis+sentinel:///netweave'",
        ),
        (
            "redis+sentinel://s1:26379/netweave/zero",
            "REDIS_URL must have a database number (0, 1, ...), not 'zero', "
            "got 'redis+sentinel://s1:26379/netweave/zero'",
        ),
        (
            "redis+sentinel://s1:26379/netweave/0/1",
            "REDIS_URL must have at most /master_name/db as path, "
            "got 'redis+sentinel://s1:26379/netweave/0/1'",
        ),
        (
            "redis+sentinel://s1:70000/netweave",
            "REDIS_URL must have a port from 1 to 65535 in 's1:70000', "
            "got 'redis+sentinel://s1:70000/netweave'",
        ),
        (
            "redis+sentinel://s1:26379/netweave?ssl_ca_certs=/ca.pem",
            "REDIS_URL must use rediss:// or rediss+sentinel:// for the TLS parameter "
            "'ssl_ca_certs', got 'redis+sentinel://s1:26379/netweave?ssl_ca_certs=/ca.pem'",
        ),
        (
            f"redis+sentinel://s1:26379/netweave?sentinel_pasword={SECRET}",
            "REDIS_URL must not have the parameter 'sentinel_pasword' (known for "
            "redis+sentinel://: db, sentinel_username, sentinel_password), "
            "got 'redis+sentinel://s1:26379/netweave?sentinel_pasword=[redacted]'",
        ),
        (
            "redis://s1:26379,s2:26379/0",
            f"REDIS_URL must name one host; several sentinels need {FORM}, "
            "got 'redis://s1:26379,s2:26379/0'",
        ),
        ("redis:///0", "REDIS_URL must name a host (redis://host[:port][/db]), got 'redis:///0'"),
        (
            "redis://::1:6379/0",
            "REDIS_URL must put an IPv6 address in brackets ([::1]:6379), got 'redis://::1:6379/0'",
        ),
        (
            "rediss://redis/0?ssl_cert_reqs=maybe",
            "REDIS_URL must have ssl_cert_reqs none, optional or required, got 'maybe'",
        ),
        (
            "unix://",
            "REDIS_URL must name a socket path (unix:///path/to/redis.sock), got 'unix://'",
        ),
    ],
)
def test_a_bad_url_stops_the_process_naming_redis_url(url: str, message: str) -> None:
    for read in (GatewayConfig.from_env, NotifierConfig.from_env):
        with pytest.raises(ValueError) as raised:
            read({"REDIS_URL": url, "NETWEAVE_WEBHOOK_SECRET": "whsec_" + "A" * 44})
        assert str(raised.value) == message
        assert SECRET not in str(raised.value)
    with pytest.raises(ValueError) as direct:
        connect(url)  # the backup CLI's --redis-url, and any other direct caller
    assert str(direct.value) == "Redis URL " + message.removeprefix("REDIS_URL ")


def test_make_run_checks_its_redis_url_too() -> None:
    with pytest.raises(ValueError, match=r"^REDIS_URL must name the master"):
        settings.STACK_REDIS_URL.read({"REDIS_URL": "redis+sentinel://s1:26379"})


def test_callbacks_are_kept_off_every_sentinel() -> None:
    assert redis_endpoints("redis+sentinel://:pw@10.0.0.1:26379,[fd00::2]:26380/netweave") == [
        ("10.0.0.1", 26379),
        ("fd00::2", 26380),
    ]
    assert redis_endpoints("unix:///run/redis.sock") == []
    assert redis_endpoints("not a url") == []


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (
            [
                "server.backup",
                "backup",
                "--redis-url",
                f"redis+sentinel://:{SECRET}@s1",
                "--out",
                "x",
            ],
            {},
        ),
        (["server.notifier", "dlq", "list"], {"REDIS_URL": f"redis+sentinel://:{SECRET}@s1"}),
    ],
    ids=["backup", "dlq"],
)
def test_the_command_line_tools_refuse_a_bad_url_as_a_usage_error(
    argv: list[str], environ: dict[str, str], tmp_path: Path
) -> None:
    argv = [str(tmp_path / "x") if arg == "OUT" else arg for arg in argv]
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "must name the master after the sentinels" in done.stderr
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr
    assert not (tmp_path / "x").exists()
