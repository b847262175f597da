"""The backup file: JSON lines, readable with `head`, checked before anything is restored.

  line 1      header   {"format": "netweave-backup", "formatVersion": 1, "dataVersion",
                        "createdAt" (RFC 3339 UTC), "redisVersion" (of the Redis backed up:
                        a DUMP payload restores into that version or a newer one), "keyCount"}
  lines 2..   one key  {"key", "kind" (server/backup/selection.py), "type" (as TYPE names it),
                        "pttl" (ms left, -1 for none), "dump" (base64 of DUMP's payload: the
                        exact value, streams with their consumer groups included)}
  last line   trailer  {"checksum": "sha256:<hex>"} of every byte before that line

A file that was cut short, edited or bit-flipped fails the checksum and is refused whole.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

FORMAT: Final = "netweave-backup"
FORMAT_VERSION: Final = 1


class BadBackup(ValueError):
    """The file is not a backup this code can read: the message says why."""


@dataclass(frozen=True)
class KeyRecord:
    key: str
    kind: str
    type: str
    pttl: int
    dump: bytes


@dataclass(frozen=True)
class Backup:
    data_version: str
    created_at: str
    redis_version: str
    records: tuple[KeyRecord, ...]

    def counts(self) -> dict[str, int]:
        """Keys per state kind, in the order they first appear."""
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record.kind] = counts.get(record.kind, 0) + 1
        return counts


def write(backup: Backup, path: Path) -> None:
    """Write `backup` to `path` whole, or leave `path` untouched (written aside, then renamed)."""
    lines = [
        _line(
            {
                "format": FORMAT,
                "formatVersion": FORMAT_VERSION,
                "dataVersion": backup.data_version,
                "createdAt": backup.created_at,
                "redisVersion": backup.redis_version,
                "keyCount": len(backup.records),
            }
        )
    ]
    lines.extend(
        _line(
            {
                "key": record.key,
                "kind": record.kind,
                "type": record.type,
                "pttl": record.pttl,
                "dump": base64.b64encode(record.dump).decode("ascii"),
            }
        )
        for record in backup.records
    )
    body = b"".join(lines)
    trailer = _line({"checksum": "sha256:" + hashlib.sha256(body).hexdigest()})
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(body + trailer)
    partial.replace(path)


def read(path: Path) -> Backup:
    """The backup in `path`; raises BadBackup naming the problem."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise BadBackup(f"cannot read {path}: {exc.strerror or exc}") from exc
    body, trailer = _split_trailer(path, content)
    try:
        checksum = json.loads(trailer)["checksum"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadBackup(f"{path}: the last line is not a checksum trailer") from exc
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    if checksum != actual:
        raise BadBackup(
            f"{path}: checksum mismatch (file says {checksum}, content is {actual}): "
            "the file is corrupted or was cut short"
        )
    lines = body.splitlines()
    header = _parse(path, 1, lines[0]) if lines else {}
    if header.get("format") != FORMAT:
        raise BadBackup(f"{path}: not a netweave backup (no format {FORMAT!r} in line 1)")
    if header.get("formatVersion") != FORMAT_VERSION:
        raise BadBackup(
            f"{path}: backup format version {header.get('formatVersion')!r} is not "
            f"{FORMAT_VERSION}, the one this code reads"
        )
    records = tuple(_record(path, number, line) for number, line in enumerate(lines[1:], 2))
    if header.get("keyCount") != len(records):
        raise BadBackup(
            f"{path}: the header announces {header.get('keyCount')!r} keys, "
            f"the file holds {len(records)}"
        )
    try:
        return Backup(
            data_version=_text(header, "dataVersion"),
            created_at=_text(header, "createdAt"),
            redis_version=_text(header, "redisVersion"),
            records=records,
        )
    except KeyError as exc:
        raise BadBackup(f"{path}: line 1 lacks {exc.args[0]!r}") from exc


def _line(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def _split_trailer(path: Path, content: bytes) -> tuple[bytes, bytes]:
    if not content.endswith(b"\n"):
        raise BadBackup(f"{path}: the file does not end with a newline: it was cut short")
    cut = content.rfind(b"\n", 0, len(content) - 1) + 1
    if cut == 0:
        raise BadBackup(f"{path}: too short to be a backup (no header and trailer)")
    return content[:cut], content[cut:]


def _parse(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        document = json.loads(line)
    except ValueError as exc:
        raise BadBackup(f"{path}:{number}: not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadBackup(f"{path}:{number}: not a JSON object")
    return document


def _record(path: Path, number: int, line: bytes) -> KeyRecord:
    document = _parse(path, number, line)
    try:
        pttl = document["pttl"]
        if not isinstance(pttl, int):
            raise BadBackup(f"{path}:{number}: pttl is not an integer")
        return KeyRecord(
            key=_text(document, "key"),
            kind=_text(document, "kind"),
            type=_text(document, "type"),
            pttl=pttl,
            dump=base64.b64decode(_text(document, "dump"), validate=True),
        )
    except KeyError as exc:
        raise BadBackup(f"{path}:{number}: the key record lacks {exc.args[0]!r}") from exc
    except binascii.Error as exc:
        raise BadBackup(f"{path}:{number}: dump is not base64: {exc}") from exc


def _text(document: dict[str, Any], name: str) -> str:
    value = document[name]
    if not isinstance(value, str):
        raise KeyError(name)
    return value
