"""What build this process is: the version and commit every log line, health body and
`o2ims_build_info` carry. One home, read once per process."""

from __future__ import annotations

import functools
import subprocess
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
    """The source commit: `COMMIT` beside the package (written into images), else git, else
    "unknown"."""
    stamped = _ROOT / "COMMIT"
    if stamped.is_file():
        return stamped.read_text(encoding="utf-8").strip() or "unknown"
    try:
        result = subprocess.run(
            ["git", "-C", str(_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"
