"""An OpenAPI-driven fuzz run (schemathesis, every check) against a dev stack: whatever the
served document calls valid is accepted, whatever it calls invalid is refused, and every
answer matches it. Bounded: a fixed seed and a few examples per operation.

The run reads schemathesis.toml at the repository root (the one documented exclusion:
QUERY as an undeclared method, which Envoy refuses before any route).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import LocalStack
from tests.e2e.conftest import start_stack

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # Loopback http callbacks, so generated subscriptions can be created; a duplicate
    # subscription answers 409 (a conflict with the state), not 400 (a bad request).
    environment = {
        "NETWEAVE_CALLBACK_ALLOW_HTTP": "1",
        "NETWEAVE_CALLBACK_ALLOWED_CIDRS": "127.0.0.0/8",
        "NETWEAVE_DUPLICATE_SUBSCRIPTION_STATUS": "409",
    }
    stack = start_stack(tmp_path_factory, core_env=environment)
    try:
        yield stack
    finally:
        stack.stop()


def test_openapi_fuzz_run_finds_no_failures(fuzz_stack: LocalStack, tmp_path: Path) -> None:
    pki = fuzz_stack.pki
    command = [
        str(SCHEMATHESIS),
        f"--config-file={REPO_ROOT / 'schemathesis.toml'}",
        "run",
        f"{fuzz_stack.rest_url}/openapi.json",
        "--checks=all",
        "--max-examples=5",
        "--seed=1",
        "--no-color",
        f"--tls-verify={pki.ca_cert}",
        f"--request-cert={pki.client_cert}",
        f"--request-cert-key={pki.client_key}",
    ]
    # Run elsewhere: schemathesis keeps a cache of failures in its working directory.
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
