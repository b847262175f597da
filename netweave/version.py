"""What build this process is: the version and commit every log line, health body and
`o2ims_build_info` carry. One home, read once per process."""

from __future__ import annotations

import functools
from importlib import metadata
from pathlib import Path
from typing import Final

_ROOT: Final = Path(__file__).resolve().parent.parent
_FALLBACK_VERSION: Final = "0.1.0"


@functools.cache
def version() -> str:
    """The installed distribution's version, else the source tree's (pyproject)."""
    try:
        return metadata.version("netweave")
    except metadata.PackageNotFoundError:
        return _FALLBACK_VERSION


@functools.cache
def commit() -> str:
    """The source commit: `COMMIT` beside the package (written into images), else the git
    checkout's HEAD, else "unknown".

    Read from the files, never by running git: a fork in a process whose gRPC threads are
    idle runs gRPC's fork handlers, and a poller thread of the parent then aborted the
    process ("epoll_wait error: Bad file descriptor", seen in a notifier with tracing on at
    its first /readyz)."""
    stamped = _ROOT / "COMMIT"
    if stamped.is_file():
        return stamped.read_text(encoding="utf-8").strip() or "unknown"
    try:
        return _git_head(_ROOT / ".git") or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"


def _git_head(git: Path) -> str | None:
    """HEAD's commit, 12 hex digits, from a checkout's git directory (or a worktree's
    `.git` file pointing at one); None when it names none."""
    shared = git
    if git.is_file():  # a worktree: "gitdir: <path>"; its refs live in the main checkout's
        pointer = git.read_text(encoding="utf-8").strip()
        if not pointer.startswith("gitdir:"):
            return None
        git = shared = (git.parent / pointer.removeprefix("gitdir:").strip()).resolve()
        commondir = git / "commondir"
        if commondir.is_file():
            shared = (git / commondir.read_text(encoding="utf-8").strip()).resolve()
    head = (git / "HEAD").read_text(encoding="utf-8").strip()
    if head.startswith("ref:"):
        ref = head.removeprefix("ref:").strip()
        for directory in (git, shared):
            loose = directory / ref
            if loose.is_file():
                return _short(loose.read_text(encoding="utf-8").strip())
        packed = shared / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name == ref:
                    return _short(sha)
        return None
    return _short(head)


def _short(sha: str) -> str | None:
    if len(sha) >= 12 and all(c in "0123456789abcdef" for c in sha.lower()):
        return sha[:12]
    return None
