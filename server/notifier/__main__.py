"""`python -m server.notifier`: run a notifier until SIGTERM/SIGINT.

`python -m server.notifier dlq list [--count N] [--json]`  the oldest dead letters
`python -m server.notifier dlq show <id>`                  one dead letter, in full (JSON)
`python -m server.notifier dlq replay <id>|--all`          put them back on their queues

The dlq commands need only REDIS_URL.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import redis

from netweave import settings, tracing
from netweave.lifecycle import run_until_signalled
from netweave.logs import configure_logging
from netweave.redaction import redact_url
from server.notifier.config import NotifierConfig
from server.notifier.deadletters import DeadLetters
from server.store import connect


def run() -> int:
    log = configure_logging("notifier")
    try:
        config = NotifierConfig.from_env()
    except ValueError as exc:
        log.error("configuration_invalid", error=str(exc))
        return 2
    from server.notifier.app import Notifier

    tracing.configure("notifier", config.tracing)
    notifier = Notifier(config)
    try:
        run_until_signalled(log, "notifier", notifier.start, notifier.stop)
    finally:
        tracing.shutdown()  # the last spans, flushed
    log.info("notifier_stopped")
    return 0


def dlq(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.notifier dlq")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the oldest dead letters")
    listing.add_argument("--count", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = commands.add_parser("show", help="one dead letter in full")
    show.add_argument("id")
    replay = commands.add_parser("replay", help="put dead letters back on their queues")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?")
    target.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)

    try:
        letters = DeadLetters(connect(settings.REDIS_URL.read()))
    except ValueError as exc:  # REDIS_URL does not parse: say so, as a usage error
        parser.error(str(exc))
    try:
        if args.command == "list":
            for entry_id, fields in letters.list(args.count):
                summary = {
                    "id": entry_id,
                    "deadAt": fields.get("deadAt", ""),
                    "subscriptionId": fields.get("subscriptionId", ""),
                    "notificationId": fields.get("notificationId", ""),
                    "attempts": fields.get("attempts", ""),
                    "reason": fields.get("reason", ""),
                }
                if args.json:
                    print(json.dumps(summary))
                else:
                    print("  ".join(str(value) for value in summary.values()))
            return 0
        if args.command == "show":
            letter = letters.get(args.id)
            if letter is None:
                print(f"no dead letter {args.id}", file=sys.stderr)
                return 1
            body = letter.pop("body", "")
            # Dead letters written before callbacks were redacted on the way in.
            if "callback" in letter:
                letter["callback"] = redact_url(letter["callback"])
            try:
                shown: object = json.loads(body)
            except ValueError:
                shown = body
            print(json.dumps({"id": args.id, **letter, "body": shown}, indent=2))
            return 0
        ids = [entry_id for entry_id, _ in letters.list(10**9)] if args.all else [args.id]
        failed = 0
        for entry_id in ids:
            outcome = letters.replay(entry_id)
            print(f"{entry_id}: {outcome}")
            failed += outcome != "replayed"
        return 1 if failed else 0
    except redis.RedisError as exc:
        print(f"Redis: {exc}", file=sys.stderr)
        return 3


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dlq"]:
        return dlq(argv[1:])
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    return run()


if __name__ == "__main__":
    sys.exit(main())
