"""`o2ims_redis_commands_total{command,outcome}`: every Redis command a process sends.

Counted once, where clients are built: `server.store.connect` makes a `CountingRedis`, whose
plain commands (blocking XREAD/XREADGROUP and EVALSHA of registered scripts included) and
pipelines (each queued command, plus MULTI and EXEC for a transaction) count themselves.
`command` is the lower-case command name (`get`, `evalsha`, `xreadgroup`, `script load`);
`outcome` is `ok`, or `error` for an error reply (WRONGTYPE, NOSCRIPT, ...) and for a
command whose connection failed. The client library's own handshake and health-check PINGs
are not counted: they are not the gateway's commands.

The counter is process-wide, like `process_*`: one process is one set of clients whatever
registry (core, notifier) exposes it. Each (command, outcome) child is resolved once.
"""

from __future__ import annotations

from typing import Any, Final

import redis
from prometheus_client import Counter
from redis.client import Pipeline

REDIS_COMMANDS: Final = Counter(
    "o2ims_redis_commands",
    "Redis commands sent by this process, by command (lower case) and outcome (ok, error: "
    "an error reply or a failed connection). Pipelines count each command.",
    ["command", "outcome"],
    registry=None,
)

UNREPLICATED_WRITES: Final = Counter(
    "o2ims_redis_unreplicated_writes",
    "Writes that must survive a failover (subscription create/delete, alarm acknowledgement) "
    "that fewer replicas than NETWEAVE_REDIS_WAIT_REPLICAS confirmed within "
    "NETWEAVE_REDIS_WAIT_TIMEOUT_MS (applied on the primary; lost if it fails first), by write.",
    ["write"],
    registry=None,
)
# Exposed at 0 from the start, so an alert on increase() has a series to read.
for _write in ("subscription_create", "subscription_delete", "alarm_acknowledge"):
    UNREPLICATED_WRITES.labels(_write)

# command name as sent -> its child; filled on first use (the commands a process sends are
# a small fixed set, so these stay small).
_OK: dict[str, Any] = {}
_ERROR: dict[str, Any] = {}


def _child(children: dict[str, Any], command: Any, outcome: str) -> Any:
    child = children.get(command)
    if child is None:
        name = command.decode() if isinstance(command, bytes) else str(command)
        child = children[command] = REDIS_COMMANDS.labels(name.lower(), outcome)
    return child


def count(command: Any, *, ok: bool) -> None:
    """One `command` sent, answered `ok` or not."""
    if ok:
        _child(_OK, command, "ok").inc()
    else:
        _child(_ERROR, command, "error").inc()


class CountingRedis(redis.Redis):
    """A redis-py client that counts its commands; `from_url` builds one like Redis."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            result = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except redis.RedisError:
            count(args[0], ok=False)
            raise
        count(args[0], ok=True)
        return result

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> CountingPipeline:
        return CountingPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


class CountingPipeline(Pipeline):
    """Counts each command of a pipeline by its own reply, and WATCH-mode commands
    (run at once) like plain ones."""

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            result = super().immediate_execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except redis.RedisError:
            count(args[0], ok=False)
            raise
        count(args[0], ok=True)
        return result

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands = [args for args, _options in self.command_stack]
        names = [args[0] for args in commands]
        if not names:
            return list(super().execute(raise_on_error))
        # Pipeline's `transaction` attribute shadows Redis.transaction(), the method.
        transaction = bool(vars(self)["transaction"] or self.explicit_transaction)
        try:
            # Every reply is needed to count each command: errors come back as values,
            # and are raised below as redis-py would have.
            replies = list(super().execute(raise_on_error=False))
        except redis.RedisError:
            for name in names:
                count(name, ok=False)
            if transaction:
                count("MULTI", ok=False)
                count("EXEC", ok=False)
            raise
        for name, reply in zip(names, replies, strict=False):
            count(name, ok=not isinstance(reply, redis.ResponseError))
        if transaction:
            count("MULTI", ok=True)
            count("EXEC", ok=True)
        if raise_on_error:
            for number, reply in enumerate(replies, start=1):
                if isinstance(reply, redis.ResponseError):
                    if not str(reply.args[0] if reply.args else "").startswith("Command # "):
                        self.annotate_exception(  # type: ignore[no-untyped-call]
                            reply, number, commands[number - 1]
                        )
                    raise reply
        return replies
