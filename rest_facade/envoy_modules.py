"""Native extensions of the Envoy edge (Envoy dynamic modules), built from `envoy/modules/`.

Each `envoy/modules/<name>.c` is one C file against Envoy's dynamic-module ABI (the HTTP
filters include `http_filter.h`, the slice of the ABI they share); it is compiled with the
system C compiler (`cc`, or `$CC`) into `build/envoy-modules/lib<name>.so` the first time a
config needs it, and again whenever the source or a header beside it is newer. Container
images run `python -m rest_facade.envoy_modules` at build time, so Envoy's runtime image
needs no compiler.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = REPO_ROOT / "envoy" / "modules"
BUILD_DIR = REPO_ROOT / "build" / "envoy-modules"
SOURCE_LIMIT = "source_limit"
# The first HTTP filter of the edge: correlation id, route template, request guard.
REQUEST_CONTEXT = "request_context"
# The REST shaper, an HTTP filter (rest_facade/envoy_config.py shaper_filter).
SHAPER = "shaper"
# -fvisibility=hidden: only the hooks Envoy looks up (marked EXPORT) leave the module.
CFLAGS = ("-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-fvisibility=hidden")


class ModuleBuildError(RuntimeError):
    """The C compiler is missing or rejected a module; carries its output."""


def c_compiler() -> list[str]:
    """The C compiler command the modules are built with: `$CC`, else `cc`."""
    return shlex.split(os.environ.get("CC", "cc"))


def module_path(name: str, build_dir: Path = BUILD_DIR) -> Path:
    """The compiled module `name` (lib<name>.so), built first if missing or out of date."""
    source = SOURCE_DIR / f"{name}.c"
    if not source.is_file():
        raise FileNotFoundError(f"no Envoy module source {source}")
    target = build_dir / f"lib{name}.so"
    # The headers beside the sources (the ABI slice the HTTP filters share) count as source.
    newest = max(path.stat().st_mtime for path in (source, *SOURCE_DIR.glob("*.h")))
    if target.is_file() and target.stat().st_mtime >= newest:
        return target
    build_dir.mkdir(parents=True, exist_ok=True)
    compiler = c_compiler()
    # Compile beside the target and rename: parallel test sessions may build at once, and
    # a running Envoy must never see a half-written file.
    with tempfile.NamedTemporaryFile(dir=build_dir, suffix=".so", delete=False) as partial:
        partial_path = Path(partial.name)
    try:
        result = subprocess.run(
            [*compiler, *CFLAGS, "-shared", "-o", str(partial_path), str(source), "-lpthread"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except FileNotFoundError as exc:
        partial_path.unlink(missing_ok=True)
        raise ModuleBuildError(
            f"no C compiler ({compiler[0]}) to build {source}: install one (Debian: gcc), "
            f"or build the module elsewhere with `python -m rest_facade.envoy_modules`"
        ) from exc
    if result.returncode != 0:
        partial_path.unlink(missing_ok=True)
        raise ModuleBuildError(f"{compiler[0]} rejected {source}:\n{result.stderr}")
    partial_path.chmod(0o755)
    partial_path.replace(target)
    return target


def main() -> int:
    """Build every module (for container images: `python -m rest_facade.envoy_modules`)."""
    for source in sorted(SOURCE_DIR.glob("*.c")):
        print(module_path(source.stem))
    return 0


if __name__ == "__main__":
    sys.exit(main())
