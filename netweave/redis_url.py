"""`REDIS_URL`, taken apart once: which Redis a process uses and how it reaches it.

    redis://[[user]:password@]host[:port][/db]                 one Redis (port 6379, db 0)
    rediss://...                                               the same over TLS
    unix://[[user]:password@]/path/to/redis.sock[?db=N]        a Unix socket
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master_name[/db]
                                                               the primary the sentinels name
                                                               (sentinel port 26379)
    rediss+sentinel://...                                      TLS to sentinels and data nodes

The userinfo is the data nodes' credentials. Sentinels that require a password of their own
(`requirepass` in sentinel.conf) get it from the `sentinel_password` (and `sentinel_username`)
parameters; without them the sentinels are asked without AUTH. TLS URLs take redis-py's
parameters `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs` (none, optional,
required) and `ssl_check_hostname` (true, false), used for sentinels and data nodes alike.
Anything else is refused: a typo must not silently mean "no TLS check" or "database 0".

This module only parses (no redis-py here: settings.py validates REDIS_URL with it);
server/store.py `connect` builds the client.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from netweave.redaction import REDACTED, redact_url

Endpoint = tuple[str, int]

SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
DEFAULT_PORT: Final = 6379
DEFAULT_SENTINEL_PORT: Final = 26379
SENTINEL_FORM: Final = (
    "redis+sentinel://[[user]:password@]host:port[,host:port...]/master_name[/db]"
)
_TLS_PARAMETERS: Final = (
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
_SENTINEL_PARAMETERS: Final = ("sentinel_username", "sentinel_password")
# Parameters whose values a message may show.
_HARMLESS: Final = ("db", "sentinel_username", *_TLS_PARAMETERS)
_CERT_REQS: Final = ("none", "optional", "required")
_BOOLEANS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL. `endpoints` are the data node (redis://, rediss://) or the
    sentinels (…+sentinel://); a unix:// target has `socket_path` instead."""

    scheme: str
    endpoints: tuple[Endpoint, ...] = ()
    socket_path: str = ""
    master_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    # redis-py's ssl_* connection options (only for rediss:// and rediss+sentinel://).
    tls_options: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_sentinel(self) -> bool:
        return self.scheme.endswith("+sentinel")

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")

    def node_options(self) -> dict[str, Any]:
        """redis-py connection options for the data nodes (not where they are)."""
        options: dict[str, Any] = {"db": self.db, "username": self.username}
        options["password"] = self.password
        if self.tls:
            options |= {"ssl": True, **self.tls_options}
        return options

    def sentinel_options(self) -> dict[str, Any]:
        """redis-py connection options for the sentinels (not where they are)."""
        options: dict[str, Any] = {
            "username": self.sentinel_username,
            "password": self.sentinel_password,
        }
        if self.tls:
            options |= {"ssl": True, **self.tls_options}
        return options


def parse_redis_url(url: str) -> RedisTarget:
    """The target `url` names; a ValueError reads well after "REDIS_URL " ("must ..., got
    <the URL, credentials masked>")."""
    shown = repr(_shown(url.strip()))
    scheme, separator, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in SCHEMES:
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+sentinel:// or "
            f"rediss+sentinel://, got {shown}"
        )
    if "#" in rest:
        raise ValueError(f"must not have a fragment (#...), got {shown}")
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    path = slash + path
    userinfo, at, hosts = authority.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    parameters = _parameters(query, scheme, shown)
    tls_options = _tls_options(parameters)
    common: dict[str, Any] = {
        "scheme": scheme,
        "username": username,
        "password": password,
        "tls_options": tls_options,
    }
    if scheme == "unix":
        if hosts:
            raise ValueError(
                "must name a socket path after unix:// (unix:///path/to/redis.sock[?db=N]), "
                f"got {shown}"
            )
        if path in ("", "/"):
            raise ValueError(f"must name a socket path (unix:///path/to/redis.sock), got {shown}")
        db = _db(parameters.get("db", "0"), shown)
        return RedisTarget(socket_path=unquote(path), db=db, **common)
    if scheme in ("redis", "rediss"):
        if not hosts:
            raise ValueError(f"must name a host ({scheme}://host[:port][/db]), got {shown}")
        if "," in hosts:
            raise ValueError(
                f"must name one host; several sentinels need {SENTINEL_FORM}, got {shown}"
            )
        endpoint = _endpoint(hosts, DEFAULT_PORT, shown)
        db_text = path.strip("/") or parameters.get("db", "0")
        if "/" in db_text:
            raise ValueError(f"must have at most a database number as path, got {shown}")
        return RedisTarget(endpoints=(endpoint,), db=_db(db_text, shown), **common)
    sentinels = tuple(
        _endpoint(item, DEFAULT_SENTINEL_PORT, shown) for item in hosts.split(",") if item.strip()
    )
    if not sentinels:
        raise ValueError(f"must name at least one sentinel ({SENTINEL_FORM}), got {shown}")
    segments = path.strip("/").split("/") if path.strip("/") else []
    if not segments:
        raise ValueError(f"must name the master after the sentinels ({SENTINEL_FORM}), got {shown}")
    if len(segments) > 2:
        raise ValueError(f"must have at most /master_name/db as path, got {shown}")
    db_text = segments[1] if len(segments) == 2 else parameters.get("db", "0")
    return RedisTarget(
        endpoints=sentinels,
        master_name=unquote(segments[0]),
        db=_db(db_text, shown),
        sentinel_username=parameters.get("sentinel_username"),
        sentinel_password=parameters.get("sentinel_password"),
        **common,
    )


def checked_redis_url(raw: str) -> str:
    """`raw`, stripped, if it parses (netweave/settings.py's kind of REDIS_URL)."""
    parse_redis_url(raw)
    return raw.strip()


def redis_endpoints(url: str) -> list[Endpoint]:
    """The TCP endpoints `url` connects to first (the data node, or every sentinel; the
    primary a sentinel names is found at run time); [] for a Unix socket or a bad URL."""
    try:
        return list(parse_redis_url(url).endpoints)
    except ValueError:
        return []


def _shown(url: str) -> str:
    """`url` for a message: credentials masked, and the value of every parameter that is
    not known to be harmless (a misspelt `sentinel_pasword` holds a password all the same)."""
    head, question, query = url.partition("?")
    if not question:
        return redact_url(head)
    shown = [
        f"{name}={value if name in _HARMLESS else REDACTED}" if equals else name
        for name, equals, value in (item.partition("=") for item in query.split("&"))
    ]
    return redact_url(head) + "?" + "&".join(shown)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None, unquote(password) if colon else None)


def _parameters(query: str, scheme: str, shown: str) -> dict[str, str]:
    known = ["db"]
    if scheme.startswith("rediss"):
        known += _TLS_PARAMETERS
    if scheme.endswith("+sentinel"):
        known += _SENTINEL_PARAMETERS
    found: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in found:
            raise ValueError(f"must give the parameter {name!r} once, got {shown}")
        if name in _TLS_PARAMETERS and name not in known:
            raise ValueError(
                f"must use rediss:// or rediss+sentinel:// for the TLS parameter {name!r}, "
                f"got {shown}"
            )
        if name not in known:
            raise ValueError(
                f"must not have the parameter {name!r} (known for {scheme}://: "
                f"{', '.join(known)}), got {shown}"
            )
        found[name] = value
    return found


def _tls_options(parameters: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in parameters:
            options[name] = parameters[name]
    if "ssl_cert_reqs" in parameters:
        value = parameters["ssl_cert_reqs"].lower()
        if value not in _CERT_REQS:
            raise ValueError(f"must have ssl_cert_reqs none, optional or required, got {value!r}")
        options["ssl_cert_reqs"] = value
    if "ssl_check_hostname" in parameters:
        flag = parameters["ssl_check_hostname"].lower()
        if flag not in _BOOLEANS:
            raise ValueError(f"must have ssl_check_hostname true or false, got {flag!r}")
        options["ssl_check_hostname"] = _BOOLEANS[flag]
    return options


def _endpoint(text: str, default_port: int, shown: str) -> Endpoint:
    item = text.strip()
    host, port_text = item, ""
    if item.startswith("["):
        host, bracket, tail = item[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"must put an IPv6 address in brackets ([::1]:6379), got {shown}")
        port_text = tail[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"must have a valid IPv6 address in {item!r}, got {shown}") from None
    elif ":" in item:
        host, _, port_text = item.rpartition(":")
        if ":" in host:
            raise ValueError(f"must put an IPv6 address in brackets ([::1]:6379), got {shown}")
    if not host:
        raise ValueError(f"must name a host in {item!r}, got {shown}")
    if not port_text and ":" not in item.rpartition("]")[2]:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"must have a port from 1 to 65535 in {item!r}, got {shown}")
    return host, int(port_text)


def _db(text: str, shown: str) -> int:
    if not text.isdigit():
        raise ValueError(f"must have a database number (0, 1, ...), not {text!r}, got {shown}")
    return int(text)
