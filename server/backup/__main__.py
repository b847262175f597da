"""`python -m server.backup`: back up, restore and check the gateway's state in Redis.

  backup  --redis-url URL --out FILE             save the state (docs/operations.md, "Backup
                                                 and restore"), not the inventory
  restore --redis-url URL --in FILE [--replace]  put it back; refuses existing keys unless
                                                 --replace, and another major data version
  verify  --in FILE                              check the file alone (checksum, format)

--redis-url is required; a URL the gateway would refuse is a usage error (exit 2). Exit
codes: 0 done, 1 Redis failed (unreachable, refused a command), 2 bad input (unreadable or
corrupted file, incompatible data version, keys in the way, a bad URL); the message on stderr
names the problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import redis

from netweave.redaction import redact_url
from netweave.redis_url import checked_redis_url
from server.backup.archive import Backup, BadBackup, read, write
from server.backup.state import RestoreRefused, check_restorable, restore, take
from server.data_version import DATA_VERSION, compatible
from server.store import connect

OK, REDIS_FAILED, BAD_INPUT = 0, 1, 2
# DUMP and RESTORE of a large key take longer than a request does.
_SOCKET_TIMEOUT = 60.0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "verify":
            return _verify(args.input)
        client = connect(args.redis_url, socket_timeout=_SOCKET_TIMEOUT)
        try:
            if args.command == "backup":
                return _backup(client, args.output)
            return _restore(client, args.input, replace=args.replace)
        finally:
            client.close()
    except (BadBackup, RestoreRefused) as exc:
        return _fail(BAD_INPUT, str(exc))
    except redis.RedisError as exc:
        return _fail(REDIS_FAILED, f"Redis at {redact_url(args.redis_url)}: {exc}")


def _backup(client: redis.Redis, output: Path) -> int:
    backup = take(client)
    try:
        write(backup, output)
    except OSError as exc:
        return _fail(BAD_INPUT, f"cannot write {output}: {exc.strerror or exc}")
    _report(f"backed up {len(backup.records)} keys to {output}", backup, backup.counts())
    return OK


def _restore(client: redis.Redis, input_: Path, *, replace: bool) -> int:
    backup = read(input_)
    counts = restore(client, backup, replace=replace)
    _report(f"restored {len(backup.records)} keys from {input_}", backup, counts)
    return OK


def _verify(input_: Path) -> int:
    backup = read(input_)
    _report(f"{input_}: checksum and format good, {len(backup.records)} keys", backup)
    if compatible(backup.data_version):
        print(f"restorable by this gateway (data version {DATA_VERSION})")
    else:
        try:
            check_restorable(backup)
        except RestoreRefused as exc:
            print(f"not restorable here: {exc}")
    return OK


def _report(title: str, backup: Backup, counts: dict[str, int] | None = None) -> None:
    print(
        f"{title} (data version {backup.data_version}, taken {backup.created_at} "
        f"from Redis {backup.redis_version})"
    )
    for kind, count in (counts if counts is not None else backup.counts()).items():
        print(f"  {kind}: {count}")


def _fail(code: int, message: str) -> int:
    print(f"python -m server.backup: error: {message}", file=sys.stderr)
    return code


def _redis_url(raw: str) -> str:
    """A URL the gateway's processes accept (netweave/redis_url.py), else a usage error
    (exit 2) that says what is wrong with it."""
    try:
        return checked_redis_url(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"Redis URL {exc}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server.backup", description="Back up and restore the gateway's state."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    redis_url = {
        "required": True,
        "type": _redis_url,
        "help": "the gateway's Redis (redis://host:port/db, redis+sentinel://..., as REDIS_URL)",
    }
    backup = commands.add_parser("backup", help="save the state to a file")
    backup.add_argument("--redis-url", **redis_url)  # type: ignore[arg-type]
    backup.add_argument("--out", dest="output", type=Path, required=True)
    restore_ = commands.add_parser("restore", help="put a backup into Redis")
    restore_.add_argument("--redis-url", **redis_url)  # type: ignore[arg-type]
    restore_.add_argument("--in", dest="input", type=Path, required=True)
    restore_.add_argument(
        "--replace", action="store_true", help="overwrite keys that exist already"
    )
    verify = commands.add_parser("verify", help="check a backup file without Redis")
    verify.add_argument("--in", dest="input", type=Path, required=True)
    return parser


if __name__ == "__main__":
    sys.exit(main())
