"""Taking the state out of Redis and putting it back, key by key with DUMP and RESTORE.

DUMP carries a key's exact value and type (a stream with its entries, last id and consumer
groups, pending entries included); RESTORE recreates it and is written to the append-only
file like any other write, so a restore into an append-only Redis survives its restart.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import redis

from server.backup.archive import Backup, KeyRecord
from server.backup.selection import kind_of
from server.data_version import DATA_VERSION, DATA_VERSION_KEY, compatible
from server.subscriptions.store import GENERATION_KEY


class RestoreRefused(ValueError):
    """The backup does not go into this Redis as asked: the message says why."""


def take(client: redis.Redis) -> Backup:
    """Every key the backup holds (server/backup/selection.py), as of one moment: the values
    are read in one MULTI/EXEC, so no write lands between two of them."""
    keys = sorted(
        {
            key.decode()
            for key in cast(list[bytes], list(client.scan_iter(count=1000)))
            if kind_of(key.decode()) is not None
        }
    )
    pipe = client.pipeline(transaction=True)
    pipe.get(DATA_VERSION_KEY)
    for key in keys:
        pipe.type(key)
        pipe.pttl(key)
        pipe.dump(key)
    replies = pipe.execute()
    stored_version = cast(bytes | None, replies[0])
    records = []
    for index, key in enumerate(keys):
        type_, pttl, payload = replies[1 + 3 * index : 4 + 3 * index]
        if payload is None:  # deleted between the scan and the transaction
            continue
        records.append(
            KeyRecord(
                key=key,
                kind=cast(str, kind_of(key)),
                type=type_.decode() if isinstance(type_, bytes) else str(type_),
                pttl=int(pttl),
                dump=bytes(payload),
            )
        )
    info = client.info("server")
    return Backup(
        data_version=stored_version.decode() if stored_version else DATA_VERSION,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        redis_version=str(info.get("redis_version", "")),
        records=tuple(records),
    )


def check_restorable(backup: Backup) -> None:
    """Refuse a backup whose data this code cannot read (another major data version)."""
    if not compatible(backup.data_version):
        raise RestoreRefused(
            f"the backup's data version {backup.data_version} is incompatible with this "
            f"gateway's data version {DATA_VERSION} (different major): restore it with a "
            f"gateway release of data version {backup.data_version.partition('.')[0]}.x"
        )


def restore(client: redis.Redis, backup: Backup, *, replace: bool = False) -> dict[str, int]:
    """Put every key of `backup` into Redis, all in one transaction; the keys restored per
    state kind. Without `replace`, refuses if any of its keys exists already (checked under
    WATCH: a key written meanwhile makes it check again instead of being overwritten)."""
    check_restorable(backup)
    keys = [record.key for record in backup.records]

    def apply(pipe: Any) -> None:
        stored_version = cast(bytes | None, pipe.get(DATA_VERSION_KEY))
        if stored_version is not None and not compatible(stored_version.decode()):
            raise RestoreRefused(
                f"this Redis holds data version {stored_version.decode()}, incompatible with "
                f"the backup's {backup.data_version} (different major)"
            )
        if not replace:
            existing = [key for key in keys if pipe.exists(key)]
            if existing:
                shown = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
                raise RestoreRefused(
                    f"{len(existing)} of the backup's keys exist in this Redis already "
                    f"({shown}); restore with --replace to overwrite them"
                )
        pipe.multi()
        for record in backup.records:
            # RESTORE takes a relative TTL in ms, 0 for none.
            pipe.restore(record.key, max(record.pttl, 0), record.dump, replace=replace)
        pipe.set(DATA_VERSION_KEY, backup.data_version, nx=True)
        # Running notifiers reload their subscriptions when the generation moves.
        pipe.incr(GENERATION_KEY)

    # Redis runs it again if a watched key is written between the checks and EXEC.
    client.transaction(apply, DATA_VERSION_KEY, *keys)
    return backup.counts()
