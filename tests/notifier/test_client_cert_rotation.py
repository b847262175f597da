"""The webhook client certificate (NETWEAVE_NOTIFY_TLS_CERT/_KEY) follows its files: a
renewal (a Kubernetes Secret's `..data` swap) is presented by the next delivery: the
kept-alive connection of the old certificate is replaced by a new one."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from devstack.pki import (
    DevPki,
    ensure_dev_pki,
    issue_client_certificate,
    publish_secret,
    renew,
)
from server.notifier.config import NotifierConfig
from server.notifier.http import WebhookClient, reloading_tls_context
from server.subscriptions.callbacks import CallbackPolicy, parse_cidrs
from tests.notifier.receiver import Receiver


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki")


@pytest.fixture
def mtls_receiver(pki: DevPki) -> Iterator[Receiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    started = Receiver(tls=context).start()
    yield started
    started.stop()


def peer_serial(receiver: Receiver) -> int:
    return x509.load_der_x509_certificate(receiver.requests[-1].peer_certificate).serial_number


def test_the_next_delivery_after_a_renewal_presents_the_renewed_certificate(
    pki: DevPki, mtls_receiver: Receiver, tmp_path: Path
) -> None:
    issued = issue_client_certificate(pki.directory, "notifier", tmp_path / "issued")
    secret_dir = tmp_path / "webhook-tls"
    publish_secret(
        secret_dir, {"tls.crt": issued.cert.read_bytes(), "tls.key": issued.key.read_bytes()}
    )
    config = NotifierConfig(
        webhook_secret=b"k" * 32,
        tls_ca=str(pki.ca_cert),
        tls_cert=str(secret_dir / "tls.crt"),
        tls_key=str(secret_dir / "tls.key"),
        tls_check_s=0.0,
    )
    tls = reloading_tls_context(config)
    policy = CallbackPolicy(allowed_networks=parse_cidrs("127.0.0.0/8"))
    client = WebhookClient(b"k" * 32, policy, timeout_s=5.0, tls=tls)
    url = mtls_receiver.url + "/hook"
    try:
        for number in range(2):
            assert client.post(url, f"m{number}", b"{}").ok
        original = x509.load_pem_x509_certificate(issued.cert.read_bytes()).serial_number
        assert peer_serial(mtls_receiver) == original
        kept = tls.value

        renewed = renew(issued, pki.ca)
        publish_secret(secret_dir, {"tls.crt": renewed.cert_pem, "tls.key": renewed.key_pem})

        assert client.post(url, "m2", b"{}").ok
        assert peer_serial(mtls_receiver) == renewed.serial
        assert tls.value is not kept
    finally:
        client.close()
