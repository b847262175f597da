"""Fixtures for the Envoy edge tests: a dev PKI, a test double of the core, real Envoy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from devstack.pki import DevPki, ensure_dev_pki
from rest_facade.envoy_process import RunningEnvoy

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


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def descriptor() -> Path:
    if not DESCRIPTOR.is_file():
        pytest.fail(f"{DESCRIPTOR} is missing: run `make gen` first")
    return DESCRIPTOR


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
def rest(envoy: RunningEnvoy, pki: DevPki) -> Iterator[httpx.Client]:
    """HTTP/1.1 REST client without a client certificate."""
    with rest_client(envoy, pki) as client:
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
