"""TLS material that follows its files: a renewal is used from the next check on, and a
half-written or mismatched one never replaces a working one."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from devstack.pki import DevPki, ensure_dev_pki, reissue, renew, write_atomically
from netweave.grpc_server import ReloadingServerCredentials, new_server
from netweave.tls_files import Reloading, read_identity


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki")


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def identity(pki: DevPki) -> Reloading[tuple[bytes, bytes, bytes | None]]:
    cert, key = str(pki.server_cert), str(pki.server_key)
    return Reloading("test", [cert, key], lambda: read_identity(cert, key))


def test_a_renewal_is_read_once_and_an_unchanged_pair_is_not_read_again(pki: DevPki) -> None:
    files = identity(pki)
    assert files.refresh() is None

    renewed = reissue(pki.server, pki.ca)

    new = files.refresh()
    assert new is not None and serial_of(new[0]) == renewed
    assert files.refresh() is None
    assert files.reloads == 1


def test_half_a_renewal_keeps_the_working_pair_until_the_rest_arrives(pki: DevPki) -> None:
    files = identity(pki)
    working = files.value
    renewed = renew(pki.server, pki.ca)

    write_atomically(pki.server_key, renewed.key_pem, mode=0o600)  # the key alone, so far

    assert files.refresh() is None
    assert files.current() is working
    write_atomically(pki.server_cert, renewed.cert_pem, mode=0o644)
    assert serial_of(files.current()[0]) == renewed.serial


def test_a_missing_file_keeps_the_working_pair(pki: DevPki) -> None:
    files = identity(pki)
    working = files.value
    pki.server_cert.rename(pki.server_cert.with_suffix(".away"))

    assert files.current() is working


def test_files_are_looked_at_no_more_often_than_asked(pki: DevPki) -> None:
    cert, key = str(pki.server_cert), str(pki.server_key)
    files = Reloading("test", [cert, key], lambda: read_identity(cert, key), min_interval_s=60)
    working = files.value

    reissue(pki.server, pki.ca)

    assert files.current() is working


def test_a_process_does_not_start_with_a_mismatched_pair(pki: DevPki) -> None:
    write_atomically(pki.server_key, renew(pki.server, pki.ca).key_pem, mode=0o600)

    with pytest.raises(ValueError, match="does not match"):
        identity(pki)


def served_serial(port: int, pki: DevPki) -> int:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True) or b""
    return x509.load_der_x509_certificate(der).serial_number


def test_grpc_server_serves_a_renewal_from_the_next_handshake_never_half_of_one(
    pki: DevPki,
) -> None:
    server = new_server(max_workers=2)
    credentials = ReloadingServerCredentials(
        str(pki.server_cert), str(pki.server_key), client_ca=None
    )
    port = server.add_secure_port("127.0.0.1:0", credentials.credentials)
    server.start()
    try:
        original = serial_of(pki.server_cert.read_bytes())
        assert served_serial(port, pki) == original
        renewed = renew(pki.server, pki.ca)

        write_atomically(pki.server_key, renewed.key_pem, mode=0o600)
        assert served_serial(port, pki) == original  # half a renewal: the old pair

        write_atomically(pki.server_cert, renewed.cert_pem, mode=0o644)
        assert served_serial(port, pki) == renewed.serial
    finally:
        server.stop(grace=None).wait()
