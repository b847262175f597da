"""TLS on the edge listener: client certificates optional or required, always verified."""

from __future__ import annotations

import datetime as dt
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from devstack.pki import DevPki, IssuedCertificate, ensure_dev_pki, issue_client_certificate
from netweave.headers import CLIENT_CERT_HEADER
from rest_facade.envoy_process import RunningEnvoy

from .support import EnvoyFactory, FakeCore, FakeInventory, rest_client

POOLS = "/o2ims-infrastructureInventory/v1/resourcePools"


@pytest.fixture(scope="module")
def expired_client(pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> IssuedCertificate:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    return issue_client_certificate(
        pki.directory,
        "expired-smo",
        tmp_path_factory.mktemp("expired"),
        not_before=past,
        not_after=past + dt.timedelta(days=1),
    )


@pytest.fixture(scope="module")
def foreign_client(tmp_path_factory: pytest.TempPathFactory) -> IssuedCertificate:
    """A client certificate from some other CA."""
    return ensure_dev_pki(tmp_path_factory.mktemp("foreign-pki")).client


@pytest.fixture
def mtls_only_envoy(envoy_factory: EnvoyFactory, core: FakeCore) -> Iterator[RunningEnvoy]:
    yield envoy_factory(core.port, require_client_certificate=True)


def rejected(envoy: RunningEnvoy, pki: DevPki, client: IssuedCertificate | None) -> bool:
    """Whether the TLS handshake (or the first read after it, with TLS 1.3) fails."""
    try:
        with rest_client(envoy, pki, client) as http:
            http.get(POOLS)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError):
        return True
    return False


def test_optional_mode_serves_callers_without_a_certificate(
    rest: httpx.Client, inventory: FakeInventory
) -> None:
    assert rest.get(POOLS).status_code == 200


def test_optional_mode_still_verifies_a_presented_certificate(
    envoy: RunningEnvoy,
    pki: DevPki,
    expired_client: IssuedCertificate,
    foreign_client: IssuedCertificate,
) -> None:
    assert rejected(envoy, pki, expired_client)
    assert rejected(envoy, pki, foreign_client)
    assert not rejected(envoy, pki, pki.client)


def test_required_mode_refuses_callers_without_a_valid_certificate(
    mtls_only_envoy: RunningEnvoy, pki: DevPki, expired_client: IssuedCertificate
) -> None:
    assert rejected(mtls_only_envoy, pki, None)
    assert rejected(mtls_only_envoy, pki, expired_client)


def test_required_mode_serves_a_valid_client(
    mtls_only_envoy: RunningEnvoy, pki: DevPki, inventory: FakeInventory, tmp_path: Path
) -> None:
    smo = issue_client_certificate(pki.directory, "smo-north", tmp_path)

    with rest_client(mtls_only_envoy, pki, smo) as client:
        assert client.get(POOLS).status_code == 200

    forwarded = urllib.parse.unquote(inventory.last_metadata()[CLIENT_CERT_HEADER])
    assert x509.load_pem_x509_certificate(forwarded.encode()) == x509.load_pem_x509_certificate(
        smo.cert.read_bytes()
    )
