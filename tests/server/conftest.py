"""Fixtures of the core's tests: a real core process on the session's redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core_process import CoreProcess


@pytest.fixture
def core(redis_url: str, tmp_path: Path) -> Iterator[CoreProcess]:
    process = CoreProcess(redis_url, tmp_path).start()
    try:
        yield process
    finally:
        process.stop()
