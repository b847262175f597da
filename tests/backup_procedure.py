"""The operations guide's backup and restore procedure (docs/operations.md, "Backup and
restore"), read from its shell block and run line by line as an operator would: the tests
that prove the procedure (tests/server/test_backup.py against bare redis-servers,
tests/e2e/test_backup_restore_stack.py against a running stack) and the Kubernetes jobs'
check all run these very lines."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPERATIONS = REPO / "docs" / "operations.md"


def documented_procedure() -> dict[str, str]:
    """The lines of the operations guide's "Backup and restore" shell block, by what they do:
    `name` (BACKUP=, the file), `backup`, `verify`, `wipe` (FLUSHALL before a restore),
    `restore` and `restore --replace`."""
    section = OPERATIONS.read_text().split("\n### Backup and restore\n", 1)[1]
    block = section.split("\n## ", 1)[0].split("```sh\n", 1)[1].split("```", 1)[0]
    steps: dict[str, str] = {}
    for line in block.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("BACKUP="):
            step = "name"
        elif line.startswith("redis-cli "):
            assert shlex.split(line)[-1] == "FLUSHALL", line
            step = "wipe"
        else:
            words = shlex.split(line)
            assert words[:3] == ["python", "-m", "server.backup"], line
            step = words[3] + (" --replace" if "--replace" in words else "")
        assert step not in steps, f"two documented lines for {step}"
        steps[step] = line
    assert set(steps) == {"name", "backup", "verify", "wipe", "restore", "restore --replace"}, steps
    return steps


PROCEDURE = documented_procedure()


def documented(
    step: str, redis_url: str, workdir: Path, backup: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run the guide's line for `step` with sh, as an operator would: in `workdir`, with
    REDIS_URL and BACKUP set and this venv's `python` first on PATH."""
    return subprocess.run(
        ["sh", "-c", PROCEDURE[step] + ('\nprintf %s "$BACKUP"' if step == "name" else "")],
        cwd=workdir,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "REDIS_URL": redis_url,
            "BACKUP": backup,
        },
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def documented_backup(redis_url: str, workdir: Path) -> str:
    """The guide's first lines: name a file, back up into it, verify it; the file's name."""
    named = documented("name", redis_url, workdir)
    assert named.returncode == 0 and named.stdout.startswith("netweave-"), named
    made = documented("backup", redis_url, workdir, named.stdout)
    assert made.returncode == 0, made.stderr
    assert (workdir / named.stdout).is_file()
    return named.stdout
