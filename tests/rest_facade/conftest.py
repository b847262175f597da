"""Fixtures for the Envoy edge tests: a dev PKI, a test double of the core, real Envoy.

Two edges: `envoy` serves gen/o2ims.pb (the real protos), `edge_envoy` serves gen/o2ims.pb
plus the test-only widget API (bodies, 201, DELETE, query parameters). Every REST client
checks each response against the OpenAPI document of its edge (tests/openapi_contract.py);
a module's responses must all be as documented or its last test errors at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from devstack.pki import DevPki, ensure_dev_pki
from devstack.tokens import DevIssuer, ensure_dev_issuer
from rest_facade import openapi
from rest_facade.envoy_process import RunningEnvoy
from tests.openapi_contract import ContractRecorder

from .support import (
    DESCRIPTOR,
    EnvoyFactory,
    FakeCore,
    FakeInventory,
    envoy_config,
    launch_envoy,
    rest_client,
    start_fake_core,
)
from .widgets import EdgeCore, WidgetStore, build_edge_descriptor, start_edge_core


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def descriptor() -> Path:
    if not DESCRIPTOR.is_file():
        pytest.fail(f"{DESCRIPTOR} is missing: run `make gen` first")
    return DESCRIPTOR


@pytest.fixture(scope="session")
def edge_descriptor(tmp_path_factory: pytest.TempPathFactory, descriptor: Path) -> Path:
    """gen/o2ims.pb plus the test-only widget API, compiled here with protoc."""
    return build_edge_descriptor(descriptor, tmp_path_factory.mktemp("edge-descriptor"))


@pytest.fixture(scope="session")
def openapi_document(descriptor: Path) -> dict[str, Any]:
    document: dict[str, Any] = openapi.build_document(descriptor)
    return document


@pytest.fixture(scope="session")
def edge_openapi_document(edge_descriptor: Path) -> dict[str, Any]:
    document: dict[str, Any] = openapi.build_document(edge_descriptor)
    return document


@pytest.fixture(scope="module")
def contract(openapi_document: dict[str, Any]) -> Iterator[ContractRecorder]:
    """Checks every response of the module's `rest` clients; fails the module if any broke
    the OpenAPI contract."""
    recorder = ContractRecorder(openapi_document)
    yield recorder
    recorder.assert_all_valid()


@pytest.fixture(scope="module")
def edge_contract(edge_openapi_document: dict[str, Any]) -> Iterator[ContractRecorder]:
    recorder = ContractRecorder(edge_openapi_document)
    yield recorder
    recorder.assert_all_valid()


@pytest.fixture(scope="module")
def core() -> Iterator[FakeCore]:
    fake = start_fake_core()
    yield fake
    fake.stop()


@pytest.fixture
def inventory(core: FakeCore) -> FakeInventory:
    """The shared core's servicer, reset to the sample pools for each test."""
    core.inventory.reset()
    return core.inventory


@pytest.fixture(scope="module")
def envoy(
    tmp_path_factory: pytest.TempPathFactory, pki: DevPki, descriptor: Path, core: FakeCore
) -> Iterator[RunningEnvoy]:
    running = launch_envoy(envoy_config(pki, core.port), tmp_path_factory.mktemp("envoy"))
    yield running
    running.stop()


@pytest.fixture
def rest(envoy: RunningEnvoy, pki: DevPki, contract: ContractRecorder) -> Iterator[httpx.Client]:
    """HTTP/1.1 REST client without a client certificate."""
    with rest_client(envoy, pki, hooks=[contract.record]) as client:
        yield client


@pytest.fixture(scope="module")
def edge_core(edge_descriptor: Path) -> Iterator[EdgeCore]:
    started = start_edge_core(edge_descriptor)
    yield started
    started.core.stop()


@pytest.fixture(scope="module")
def edge_envoy(
    tmp_path_factory: pytest.TempPathFactory,
    pki: DevPki,
    edge_descriptor: Path,
    edge_core: EdgeCore,
) -> Iterator[RunningEnvoy]:
    config = envoy_config(pki, edge_core.core.port, descriptor_path=edge_descriptor)
    running = launch_envoy(config, tmp_path_factory.mktemp("edge-envoy"))
    yield running
    running.stop()


@pytest.fixture
def widgets(edge_core: EdgeCore) -> WidgetStore:
    """The widget double, emptied for each test (the inventory double is reset too)."""
    edge_core.widgets.reset()
    edge_core.core.inventory.reset()
    return edge_core.widgets


@pytest.fixture
def edge(
    edge_envoy: RunningEnvoy, pki: DevPki, edge_contract: ContractRecorder
) -> Iterator[httpx.Client]:
    """REST client of the edge that also serves the widget API."""
    with rest_client(edge_envoy, pki, hooks=[edge_contract.record]) as client:
        yield client


@pytest.fixture
def grpc_channel(envoy: RunningEnvoy, pki: DevPki) -> Iterator[grpc.Channel]:
    """A native gRPC channel through Envoy's TLS listener."""
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    channel = grpc.secure_channel(f"localhost:{envoy.listener_port}", credentials)
    yield channel
    channel.close()


@pytest.fixture
def envoy_factory(tmp_path: Path, pki: DevPki, descriptor: Path) -> Iterator[EnvoyFactory]:
    """Start extra Envoys (other settings, their own core); all stopped at teardown."""
    started: list[RunningEnvoy] = []

    def factory(core_port: int, **overrides: Any) -> RunningEnvoy:
        workdir = tmp_path / f"envoy-{len(started)}"
        running = launch_envoy(envoy_config(pki, core_port, **overrides), workdir)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    """The dev token issuer (a signing key and its JWKS) of the module's edge."""
    return ensure_dev_issuer(tmp_path_factory.mktemp("issuer"))
