"""The whole stack as real processes (redis-server, static adapter, core, Envoy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.pki import IssuedCertificate
from devstack.stack import LocalStack, StackConfig
from tests.notifier.receiver import Receiver
from tests.openapi_contract import ContractRecorder


def start_stack(
    tmp_path_factory: pytest.TempPathFactory,
    core_env: dict[str, str] | None = None,
    **settings: Any,
) -> LocalStack:
    """A whole stack on free ports, over its own copy of the example inventory; `settings`
    override StackConfig fields (edge security, rate limits)."""
    config = StackConfig.ephemeral(
        tmp_path_factory.mktemp("stack"), extra_core_env=core_env or {}, **settings
    )
    return LocalStack(config).start()


def rest_client(stack: LocalStack, cert: IssuedCertificate) -> httpx.Client:
    """A REST client of the stack's Envoy presenting `cert`."""
    return httpx.Client(
        base_url=stack.rest_url, verify=stack.client_tls(cert), timeout=10.0, trust_env=False
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    running = start_stack(tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rest_contract(stack: LocalStack) -> Iterator[ContractRecorder]:
    """Checks every response of the module's `rest` client against the OpenAPI document
    the gateway serves (GET /openapi.json); at teardown the module fails if any response
    was not as documented (status, content type, body schema, required headers)."""
    with httpx.Client(base_url=stack.rest_url, verify=stack.client_tls(), timeout=5.0) as client:
        document = client.get("/openapi.json").raise_for_status().json()
    recorder = ContractRecorder(document)
    yield recorder
    recorder.assert_all_valid()


@pytest.fixture(scope="module")
def rest(stack: LocalStack, rest_contract: ContractRecorder) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.rest_url,
        verify=stack.client_tls(),
        timeout=5.0,
        event_hooks={"response": [rest_contract.record]},
    ) as client:
        yield client


@pytest.fixture
def inventory_file(stack: LocalStack) -> Iterator[Path]:
    """The live inventory file; restored after the test so tests stay independent."""
    original = stack.config.inventory.read_text()
    yield stack.config.inventory
    # Atomically (a new file renamed over it), as the README asks: applied on the adapter's
    # next poll, without the settle wait an in-place write gets, so the next test starts
    # from the original inventory.
    restored = stack.config.inventory.with_suffix(".restore")
    restored.write_text(original)
    restored.replace(stack.config.inventory)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A real webhook receiver (counts, verifies signatures) for the module's stack."""
    started = Receiver().start()
    yield started
    started.stop()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 7807 body of `response`, asserting its status and media type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body
