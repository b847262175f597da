"""The development PKI: chains, SANs and EKUs as TLS peers check them; reuse; extra clients."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from devstack.pki import (
    DEV_CLIENT_NAME,
    DevPki,
    client_uri,
    ensure_dev_pki,
    issue_client_certificate,
    main,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def store(pki: DevPki) -> Store:
    return Store([load(pki.ca_cert)])


def snapshot(pki: DevPki) -> dict[str, tuple[bytes, int]]:
    files = [
        pki.ca_cert,
        pki.ca_key,
        pki.server_cert,
        pki.server_key,
        pki.client_cert,
        pki.client_key,
    ]
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in files}


def extended_key_usage(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki")


@pytest.mark.parametrize(
    "subject",
    [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ],
)
def test_server_certificate_chains_to_the_ca_for_localhost_and_loopback(
    pki: DevPki, subject: x509.DNSName | x509.IPAddress
) -> None:
    server = load(pki.server_cert)
    # A full RFC 5280 / CA-B Forum path validation, as a TLS client would do it.
    verifier = PolicyBuilder().store(store(pki)).build_server_verifier(subject)

    chain = verifier.verify(server, [])

    assert chain[-1] == load(pki.ca_cert)
    assert extended_key_usage(server) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_certificate_carries_the_dev_client_identity(pki: DevPki) -> None:
    client = load(pki.client_cert)
    verifier = PolicyBuilder().store(store(pki)).build_client_verifier()

    verified = verifier.verify(client, [])

    assert verified.chain[-1] == load(pki.ca_cert)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEV_CLIENT_NAME
    san = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://netweave.local/client/netweave-dev-client"
    ]
    assert extended_key_usage(client) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_keys_are_p256_and_readable_by_the_owner_only(pki: DevPki) -> None:
    for key_path in (pki.ca_key, pki.server_key, pki.client_key):
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"


def test_second_call_reuses_the_files_unchanged(pki: DevPki) -> None:
    before = snapshot(pki)

    again = ensure_dev_pki(pki.directory)

    assert again == pki
    assert snapshot(again) == before


def test_expired_leaf_is_reissued_under_the_same_ca(pki: DevPki) -> None:
    ca_before = pki.ca_cert.read_bytes()
    # Overwrite client.crt/.key with an expired certificate from the same CA.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    issue_client_certificate(
        pki.directory,
        "client",
        pki.directory,
        not_before=past,
        not_after=past + dt.timedelta(days=1),
    )

    ensure_dev_pki(pki.directory)

    assert pki.ca_cert.read_bytes() == ca_before
    client = load(pki.client_cert)
    assert client.not_valid_after_utc > dt.datetime.now(dt.UTC)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEV_CLIENT_NAME


def test_unusable_ca_replaces_the_whole_pki(pki: DevPki) -> None:
    old_server = pki.server_cert.read_bytes()
    pki.ca_cert.write_text("not a certificate")

    ensure_dev_pki(pki.directory)

    assert pki.server_cert.read_bytes() != old_server
    PolicyBuilder().store(store(pki)).build_server_verifier(x509.DNSName("localhost")).verify(
        load(pki.server_cert), []
    )


def test_issue_client_certificate_mints_a_verifiable_identity(pki: DevPki, tmp_path: Path) -> None:
    issued = issue_client_certificate(pki.directory, "smo-east", tmp_path / "clients", days=3)

    cert = load(issued.cert)
    verified = PolicyBuilder().store(store(pki)).build_client_verifier().verify(cert, [])
    assert verified.subjects is not None
    assert x509.UniformResourceIdentifier(client_uri("smo-east")) in verified.subjects
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < dt.timedelta(days=3, minutes=10)
    assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600


def test_an_expired_client_certificate_can_be_minted(pki: DevPki, tmp_path: Path) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    issued = issue_client_certificate(
        pki.directory, "expired", tmp_path, not_before=past, not_after=past + dt.timedelta(days=1)
    )

    with pytest.raises(VerificationError, match=r"expired|validity"):
        PolicyBuilder().store(store(pki)).build_client_verifier().verify(load(issued.cert), [])


@pytest.mark.parametrize("name", ["", "../escape", "has space", "x" * 64])
def test_unsafe_client_names_are_refused(pki: DevPki, tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="client name"):
        issue_client_certificate(pki.directory, name, tmp_path)


def test_command_line_creates_the_pki_and_issues_a_client(tmp_path: Path) -> None:
    directory = tmp_path / "cli-pki"

    assert main(["--dir", str(directory)]) == 0
    assert main(["--dir", str(directory), "issue-client", "smo-west", "--days", "2"]) == 0

    assert (directory / "ca.crt").is_file()
    assert (directory / "clients" / "smo-west.crt").is_file()
    assert (directory / "clients" / "smo-west.key").is_file()
